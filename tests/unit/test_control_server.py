"""The control socket itself: permissions, hostile clients, stale sockets, and the client's error messages."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_control import FakeDaemon
from watchdogd.cli import Unreachable, call
from watchdogd.control import MAX_REQUEST, ControlError, ControlServer


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Unix socket paths are limited to 107 bytes: pytest's tmp_path can be longer."""
    path = Path(tempfile.mkdtemp(prefix="wdc-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server(short_dir: Path) -> Iterator[ControlServer]:
    srv = ControlServer(short_dir / "control.sock", None, FakeDaemon().handlers(), request_timeout=0.5, max_clients=3)
    srv.start()
    try:
        yield srv
    finally:
        srv.close()


def raw_exchange(path: Path, payload: bytes, *, half_close: bool = True, timeout: float = 5.0) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        try:
            sock.sendall(payload)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may stop reading an oversized request; its reply is still there
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    return reply


def assert_alive(path: Path) -> None:
    assert call(str(path), "version", timeout=5)["protocol"] == 1


def test_socket_mode_is_0660(server: ControlServer) -> None:
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o660
    assert stat.S_ISSOCK(os.stat(server.path).st_mode)


def test_group_by_name(short_dir: Path) -> None:
    srv = ControlServer(short_dir / "g.sock", "daemon", FakeDaemon().handlers())
    try:
        assert os.stat(srv.path).st_gid == 1  # Debian's "daemon" group
    finally:
        srv.close()


def test_unknown_group_is_a_clear_error_and_leaves_nothing_behind(short_dir: Path) -> None:
    with pytest.raises(ControlError, match="control_group: no group named 'no-such-group'"):
        ControlServer(short_dir / "g.sock", "no-such-group", FakeDaemon().handlers())
    assert list(short_dir.iterdir()) == []


def test_garbage_oversized_half_closed_and_slow_clients_get_errors_and_the_server_stays_up(
    server: ControlServer,
) -> None:
    assert raw_exchange(server.path, b"\x00\x01garbage\n")["error"]["code"] == "bad_request"
    assert_alive(server.path)
    big = raw_exchange(server.path, b"{" + b"x" * (MAX_REQUEST + 10))
    assert big["error"]["code"] == "too_large"
    assert_alive(server.path)
    # Half-closed: no newline, the client just shuts down its sending side.
    assert raw_exchange(server.path, b'{"v": 1, "cmd": "version"}')["ok"] is True
    assert raw_exchange(server.path, b"")["error"]["code"] == "bad_request"
    # Slow loris: one byte, then silence; the per-request deadline ends it.
    started = time.monotonic()
    slow = raw_exchange(server.path, b"{", half_close=False)
    assert slow["error"]["code"] == "timeout" and time.monotonic() - started < 3
    assert_alive(server.path)


def test_slow_loris_trickle_cannot_extend_the_deadline(server: ControlServer) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(server.path))
        sock.settimeout(0.1)
        started = time.monotonic()
        reply = b""
        while time.monotonic() - started < 5 and not reply:
            try:
                sock.sendall(b" ")
            except OSError:
                pass
            try:
                reply = sock.recv(65536)
            except TimeoutError:
                continue
        assert json.loads(reply)["error"]["code"] == "timeout"
        assert time.monotonic() - started < 2


def test_clients_over_the_cap_wait_for_a_slot_instead_of_failing(server: ControlServer) -> None:
    holders = []
    try:
        for _ in range(3):  # max_clients=3, each silent until the 0.5 s request deadline
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(server.path))
            holders.append(sock)
        started = time.monotonic()
        assert call(str(server.path), "version", timeout=5)["protocol"] == 1
        waited = time.monotonic() - started
        assert 0.2 < waited < 3, waited
    finally:
        for sock in holders:
            sock.close()


def test_concurrent_clients_are_all_answered(server: ControlServer) -> None:
    results: list[Any] = []

    def worker() -> None:
        for _ in range(5):
            try:
                results.append(call(str(server.path), "status", timeout=5)["schema"])
            except Exception as exc:
                results.append(repr(exc))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [1] * 30


def test_stale_socket_is_replaced_but_a_live_one_or_a_file_is_not(short_dir: Path) -> None:
    path = short_dir / "c.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # bound, never listening: connect is refused, like after a kill -9
    srv = ControlServer(path, None, FakeDaemon().handlers())
    srv.start()
    try:
        assert_alive(path)
        with pytest.raises(ControlError, match="another process is listening"):
            ControlServer(path, None, FakeDaemon().handlers())
        assert_alive(path)
    finally:
        srv.close()
    assert not path.exists()
    path.write_text("not a socket")
    with pytest.raises(ControlError, match="exists and is not a socket"):
        ControlServer(path, None, FakeDaemon().handlers())
    assert path.read_text() == "not a socket"


def test_too_long_path_is_a_clear_error(short_dir: Path) -> None:
    with pytest.raises(ControlError, match="path too long"):
        ControlServer(short_dir / ("x" * 120), None, FakeDaemon().handlers())


def test_client_names_missing_and_refused_sockets(short_dir: Path) -> None:
    missing = short_dir / "missing.sock"
    with pytest.raises(Unreachable) as caught:
        call(str(missing), "status")
    assert caught.value.reason == "missing" and str(missing) in caught.value.message
    refused = short_dir / "refused.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(refused))
    sock.close()
    with pytest.raises(Unreachable) as caught:
        call(str(refused), "status")
    assert caught.value.reason == "refused" and "refused" in caught.value.message


def test_client_names_a_forbidden_socket(server: ControlServer) -> None:
    """Root ignores file modes, so the client runs in a child that dropped to nobody."""
    server.path.parent.chmod(0o755)  # only the socket's own mode may stand in the way
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no pytest machinery from here on
        try:
            os.setgid(65534)
            os.setgroups([])
            os.setuid(65534)
            try:
                call(str(server.path), "status", timeout=5)
                outcome = {"reason": "connected"}
            except Unreachable as exc:
                outcome = {"reason": exc.reason, "message": exc.message}
            os.write(writer, json.dumps(outcome).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        outcome = json.loads(pipe.read() or b"{}")
    os.waitpid(pid, 0)
    assert outcome.get("reason") == "forbidden", outcome
    assert str(server.path) in outcome["message"] and "permission denied" in outcome["message"]
    # No control_group: root's socket. Say "run as root, or set control_group", never "join group 'root'".
    assert "group 'root'" not in outcome["message"] and "set control_group" in outcome["message"]


def test_close_leaves_a_socket_that_another_server_took_over(short_dir: Path) -> None:
    path = short_dir / "c.sock"
    first = ControlServer(path, None, FakeDaemon().handlers())
    first._sock.close()  # first dies without cleaning up...
    second = ControlServer(path, None, FakeDaemon().handlers())  # ...and a new one takes the path
    second.start()
    try:
        first.close()
        assert path.exists()
        assert_alive(path)
    finally:
        second.close()
