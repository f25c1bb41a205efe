"""write_in_pieces on a real socket pair: the whole reply arrives, and the transport never holds more than a piece."""

from __future__ import annotations

import asyncio
import socket

from watchdogd.faces.sending import PIECE, write_in_pieces


class _Watched:
    """The real writer, and the transport's buffer size after each write (what the daemon keeps alive)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self.buffered: list[int] = []

    def write(self, data: memoryview) -> None:
        self._writer.write(data)
        self.buffered.append(self._writer.transport.get_write_buffer_size())

    async def drain(self) -> None:
        await self._writer.drain()


async def _send_to_a_slow_reader(data: bytearray) -> tuple[bytes, list[int]]:
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)  # the kernel takes little at a time
    theirs.setblocking(False)
    _, writer = await asyncio.open_connection(sock=ours)
    writer.transport.set_write_buffer_limits(high=0)  # as the control socket sets it
    watched = _Watched(writer)
    loop = asyncio.get_running_loop()
    received = bytearray()

    async def read() -> None:
        while len(received) < len(data):
            await asyncio.sleep(0)  # lags behind the writer, a little each time
            received.extend(await loop.sock_recv(theirs, 4096))

    reading = asyncio.ensure_future(read())
    await write_in_pieces(watched, data)  # type: ignore[arg-type]
    await reading
    writer.close()
    theirs.close()
    return bytes(received), watched.buffered


def test_a_big_reply_arrives_whole_and_the_transport_holds_at_most_a_piece() -> None:
    data = bytearray(bytes(range(256)) * (4 * PIECE // 256 * 3 + 7))  # 12 pieces and a bit
    received, buffered = asyncio.run(_send_to_a_slow_reader(data))
    assert received == data
    assert len(buffered) == -(-len(data) // PIECE)
    assert max(buffered) <= PIECE and max(buffered) > 0  # the reader lagged, yet never more than a piece waited


def test_an_empty_reply_writes_nothing() -> None:
    received, buffered = asyncio.run(_send_to_a_slow_reader(bytearray()))
    assert received == b"" and buffered == []
