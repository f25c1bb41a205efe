"""A private redis-server process on a free port, for tests and benchmarks.

Tests that change config, kill clients, delete keys or stop the server must
not do it to the shared Redis on 6379, which other test suites use at the
same time; each gets its own server from here instead.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from tests.helpers import free_port, wait_until  # noqa: F401  (re-exported for this package)

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


class RedisServer:
    """``with RedisServer(tmp) as server: server.client().ping()``; killed on exit whatever happens."""

    def __init__(
        self,
        workdir: Path,
        *,
        extra: Sequence[str] = (),
        tls: TlsFiles | None = None,
        unixsocket: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.extra = list(extra)
        self.tls = tls
        self.unixsocket = unixsocket
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.logfile = workdir / f"redis-{self.port}.log"
        self._clients: list[redis.Redis] = []

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def url(self) -> str:
        return self.url_for(0)

    def url_for(self, db: int) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/{db}"

    def argv(self) -> list[str]:
        argv = [
            REDIS_SERVER, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--dir", str(self.workdir), "--logfile", str(self.logfile), "--protected-mode", "no",
        ]
        if self.tls:
            argv += [
                "--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls.cert),
                "--tls-key-file", str(self.tls.key), "--tls-ca-cert-file", str(self.tls.ca),
                "--tls-auth-clients", "no",
            ]
        else:
            argv += ["--port", str(self.port)]
        if self.unixsocket:
            argv += ["--unixsocket", str(self.unixsocket), "--unixsocketperm", "700"]
        return argv + self.extra

    def start(self, timeout: float = 10.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        probe = self._raw_client()
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.log_tail()}")
                try:
                    if probe.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not answer PING: {self.log_tail()}")
                time.sleep(0.01)
        finally:
            probe.close()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); the port stays ours for ``start`` again."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()
        self.stop()

    def client(self, db: int = 0, **kwargs: Any) -> redis.Redis:
        """A redis-py client to this server (database ``db``), closed with the server."""
        client = self._raw_client(db, **kwargs)
        self._clients.append(client)
        return client

    def _raw_client(self, db: int = 0, **kwargs: Any) -> redis.Redis:
        options: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 2}
        if self.tls:
            options.update(ssl_ca_certs=str(self.tls.ca))
        options.update(kwargs)
        return redis.Redis.from_url(self.url_for(db), **options)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return " | ".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
