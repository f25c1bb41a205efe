"""Services of the test's own that can be killed, hung and brought back by a command watchdogd runs.

Each wraps an existing test helper (``pgenv.Cluster``, ``RedisServer``,
``dockertest.Containers``) and adds what an outage test needs on top: the
argv a runbook (watchdogd's ``exec``) would use to start it again, a way to
kill or freeze it, a cheap "does it answer?" check, and a cleanup that also
covers the process watchdogd started. Nothing here touches the shared
PostgreSQL on 5432, the shared Redis on 6379, or any container it did not
create.

Also used by ``bench/bench_outage.py``.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import psycopg

from tests.helpers import wait_until
from tests.integration.postgres.pgenv import PG_BIN, Cluster
from tests.integration.redis.server import RedisServer

RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"
TOUCH = shutil.which("touch") or "/usr/bin/touch"
KILL = shutil.which("kill") or "/bin/kill"
TRUE = shutil.which("true") or "/bin/true"


def _alive(pid: int) -> bool:
    """Whether ``pid`` still exists, zombies included.

    A killed server is only really gone once its parent reaped it: until
    then PostgreSQL's lock file check (``kill(pid, 0)``) still sees it and
    refuses to start. Orphans are reaped by PID 1, which on some hosts (a
    microVM's init) takes about a second.
    """
    return Path(f"/proc/{pid}").exists()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# --------------------------------------------------------------------------- PostgreSQL


class OwnCluster(Cluster):
    """A throwaway PostgreSQL (``pgenv.Cluster``) that watchdogd's ``exec`` can start again after a crash.

    ``start_argv()`` is exactly what ``Cluster.start`` runs (``runuser -u
    postgres -- pg_ctl ... -w start``), as the absolute argv list the
    ``exec`` action takes. pg_ctl puts the postmaster in its own session
    with its output in the cluster's log, so the action returns as soon as
    the server accepts connections.
    """

    def start_argv(self) -> list[str]:
        opts = " ".join(f"-c {key}={value}" for key, value in self.options.items())
        return [RUNUSER, "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(self.data),
                "-l", str(self.base / "log"), "-o", f"-p {self.port} {opts}", "-w", "-t", "30", "start"]

    def stop_immediate(self) -> None:
        """``pg_ctl stop -m immediate`` without waiting for the server to go.

        watchdogd may start it again before a waiting pg_ctl looks, and that
        pg_ctl would then report "server does not shut down".
        """
        self._as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-W", "stop"])

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def kill_postmaster(self) -> int:
        """SIGKILL the postmaster, as the OOM killer would; its children notice and exit by themselves."""
        pid = self.postmaster_pid()
        assert pid is not None and _alive(pid), "the cluster is not running"
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not _alive(pid), 10, "the postmaster to die and be reaped")
        return pid

    def accepting(self) -> bool:
        """A new connection and ``SELECT 1`` work (what an application needs)."""
        try:
            with psycopg.connect(self.dsn(), connect_timeout=1) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join((self.base / "log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# --------------------------------------------------------------------------- Redis


class OwnRedis(RedisServer):
    """A private redis-server (``RedisServer``) that watchdogd's ``exec`` can start again, daemonized.

    The test starts it as a child (``start()``); a restart by watchdogd runs
    ``restart_argv()``: the same settings and port with ``--daemonize yes``
    and a pidfile, so the command returns at once and the server outlives
    it. ``close()`` stops whichever of the two is running, and only a
    process whose command line is a redis-server on this port.
    """

    def __init__(self, workdir: Path, **kwargs: Any) -> None:
        super().__init__(workdir, **kwargs)
        self.pidfile = workdir / f"redis-{self.port}.pid"

    def restart_argv(self) -> list[str]:
        argv = self.argv()
        index = argv.index("--daemonize")
        argv[index + 1] = "yes"
        return [*argv, "--pidfile", str(self.pidfile)]

    def pid(self) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            return self.proc.pid
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) and self._ours(pid) else None

    def _ours(self, pid: int) -> bool:
        cmdline = _cmdline(pid)
        return "redis-server" in cmdline and f":{self.port}" in cmdline

    def kill(self) -> int:
        """SIGKILL the running server (child or daemonized) and wait until it is gone."""
        pid = self.pid()
        assert pid is not None, "redis-server is not running"
        os.kill(pid, signal.SIGKILL)
        if self.proc is not None and self.proc.pid == pid:
            self.proc.wait(timeout=10)
            self.proc = None
        wait_until(lambda: not _alive(pid), 10, "redis-server to die")
        return pid

    def freeze(self) -> int:
        """SIGSTOP: the kernel still accepts TCP connections for it, it never answers."""
        pid = self.pid()
        assert pid is not None, "redis-server is not running"
        os.kill(pid, signal.SIGSTOP)
        return pid

    def thaw(self) -> None:
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def answers(self, timeout: float = 0.5) -> bool:
        """PING gets ``+PONG`` within ``timeout`` (a raw socket: no client library retries to hide a hang)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def close(self) -> None:
        self.thaw()  # a stopped process cannot act on SIGTERM
        super().close()
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not _alive(pid), 10, "the daemonized redis-server to die")
        with contextlib.suppress(OSError):
            self.pidfile.unlink()


# --------------------------------------------------------------------------- HTTP


class HangingHttpServer:
    """An HTTP endpoint that accepts every connection but answers only while ``marker`` exists.

    Without the marker a request is read and then left without a byte of
    reply (a deadlocked app behind a listening socket: the TCP handshake
    works, ``net.tcp`` is happy, nothing comes back). Creating the marker
    (``heal_argv()``: ``touch`` it, a command watchdogd can run) makes it
    answer ``200 ok``, also to requests already waiting.
    """

    REPLY = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"

    def __init__(self, marker: Path) -> None:
        self.marker = marker
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.port = int(self._sock.getsockname()[1])
        self.requests = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, name="hanging-http", daemon=True)

    def url(self, path: str = "/health") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> HangingHttpServer:
        self._accept.start()
        return self

    def __enter__(self) -> HangingHttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def hang(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.marker.unlink()

    def heal(self) -> None:
        self.marker.touch()

    def heal_argv(self) -> list[str]:
        return [TOUCH, str(self.marker)]

    @property
    def healthy(self) -> bool:
        return self.marker.exists()

    def answers(self, timeout: float = 0.5) -> bool:
        """A GET gets a whole reply within ``timeout``."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as conn:
                conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                reply = b""
                while chunk := conn.recv(4096):
                    reply += chunk
        except OSError:
            return False
        return reply.startswith(b"HTTP/1.1 200")

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.setblocking(False)
            head = b""
            while not self._stop.is_set():
                readable, _, _ = select.select([conn], [], [], 0.05)
                if readable:
                    try:
                        chunk = conn.recv(4096)
                    except OSError:
                        return
                    if not chunk:
                        return  # the client gave up
                    head += chunk
                if b"\r\n\r\n" in head and self.marker.exists():
                    self.requests += 1
                    with contextlib.suppress(OSError):
                        conn.setblocking(True)
                        conn.sendall(self.REPLY)
                    return

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._accept.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)


# --------------------------------------------------------------------------- Docker


def container_pid(api: Any, cid: str) -> int:
    return int(api.inspect_container(cid)["State"]["Pid"])


def crash_container(api: Any, cid: str) -> int:
    """SIGKILL the container's main process from the host, not through the API.

    Docker sees a ``die`` with no ``kill`` before it: a crash (exit 137),
    which is what ``docker.containers`` reports, unlike ``docker kill``,
    which is an operator's deliberate stop and left alone.
    """
    pid = container_pid(api, cid)
    assert pid > 0, f"container {cid[:12]} is not running"
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: api.inspect_container(cid)["State"]["Status"] == "exited", 20,
               f"container {cid[:12]} to exit")
    return pid


def container_running(api: Any, cid: str) -> bool:
    try:
        return bool(api.inspect_container(cid)["State"]["Running"])
    except Exception:
        return False

