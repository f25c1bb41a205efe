"""Fixtures for the service family: local HTTP(S) servers, child processes, systemd as PID 1."""

from __future__ import annotations

import datetime as dt
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.services.servers import Children, HttpServer, Route, TlsFiles, make_tls
from tests.support.systemd_container import booted_watchdogd_box


@pytest.fixture
def make_http() -> Iterator[Callable[..., HttpServer]]:
    servers: list[HttpServer] = []

    def make(routes: dict[str, Route], tls: TlsFiles | None = None) -> HttpServer:
        server = HttpServer(routes, tls.server_context() if tls else None)
        servers.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in servers:
            server.close()


@pytest.fixture
def expiring_tls(tmp_path: Path) -> TlsFiles:
    """A certificate with three days left: inside any sane "renew 14 days ahead" rule."""
    return make_tls(tmp_path / "tls", expires_in=dt.timedelta(days=3))


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on: bound once by us, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def children() -> Iterator[Children]:
    kids = Children()
    try:
        yield kids
    finally:
        kids.close()


@pytest.fixture
def token() -> str:
    return f"svc-it-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def systemd_box() -> Iterator[Any]:
    """A booted Debian 12 container, systemd as PID 1, this tree's watchdogd in /opt/watchdogd (cached image)."""
    with booted_watchdogd_box() as box:
        yield box
