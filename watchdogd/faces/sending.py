"""Big replies written to a client a piece at a time: shared by the HTTP server and the control socket.

asyncio's transport copies what the socket does not take at once into a
buffer of its own (Python 3.11: ``data[n:]``, then ``bytearray.extend``),
so a reply handed over whole was alive two or three times while a client
read it: ``status`` at 1,000 rules is 0.5-0.8 MB, and the transport held
0.75 MB of a 0.8 MB reply besides the reply itself (tests/unit/test_sending);
a /metrics page for a client without gzip is 2.3 MB (issue 17, stop 38).
Written in views of ``PIECE`` bytes, waiting for each to reach the kernel,
the transport never holds more than one piece.
"""

from __future__ import annotations

import asyncio

PIECE = 64 * 1024


async def write_in_pieces(writer: asyncio.StreamWriter, data: bytes | bytearray, piece: int = PIECE) -> None:
    """Write ``data`` a ``piece`` at a time, each drained before the next; the caller bounds it in time."""
    with memoryview(data) as view:
        for start in range(0, len(view), piece):
            writer.write(view[start:start + piece])
            await writer.drain()
