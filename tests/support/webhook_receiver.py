"""A local HTTP(S) endpoint that records what it is sent and answers what the test programmed.

``WebhookReceiver`` listens on 127.0.0.1 on a port of its own (optionally
with TLS, a self-signed certificate made on the spot), records every
request (method, path, headers, body bytes) and answers each with the next
programmed ``Reply`` (``503, 503, 200``...; 200 once the program runs out).
Replies can also misbehave the ways a real server does: hang without
answering, or stream a body far larger than anyone should read.

Tests wait with ``wait_for(n)``, which waits on a condition the handler
signals, never a sleep.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.integration.interfaces.support import self_signed

MAX_REQUEST = 16 * 1024 * 1024
HOLD_LIMIT = 60.0
"""A held reply is released at ``close()`` or after this long, whichever comes first."""


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream: int = 0
    """Bytes sent after ``body`` (zeros, announced in Content-Length): an answer too large to read whole.
    Sending stops early when the client hangs up."""
    hold: bool = False
    """Answer nothing until the receiver closes: a server that accepted the request and hangs."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    """Header names in lower case (the last value of a repeated header)."""
    body: bytes
    raw_headers: list[tuple[str, str]] = field(default_factory=list)
    """Every header line as sent, in order, repeats included."""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        return json.loads(self.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: WebhookReceiver

    def finish_request(self, request: Any, client_address: Any) -> None:
        """TLS is set up here, in the request's own thread, so a client stuck in the handshake blocks no other."""
        context = self.receiver.tls_context
        if context is None:
            super().finish_request(request, client_address)
            return
        try:
            request.settimeout(10)
            wrapped = context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            with self.receiver.changed:
                self.receiver.tls_failures += 1
                self.receiver.changed.notify_all()
            return
        try:
            super().finish_request(wrapped, client_address)
        finally:
            wrapped.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the base class's name)
        pass

    def do_POST(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def _handle(self) -> None:
        length = min(int(self.headers.get("Content-Length") or 0), MAX_REQUEST)
        body = self.rfile.read(length) if length else b""
        receiver = self.server.receiver
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = receiver.record(Request(self.command, self.path, headers, body, list(self.headers.items())))
        if reply.hold:
            receiver.closing.wait(HOLD_LIMIT)
            self.close_connection = True
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body) + reply.stream))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            self.wfile.write(reply.body)
            left = reply.stream
            chunk = bytes(65536)
            while left > 0 and not receiver.closing.is_set():
                self.wfile.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)
        except OSError:
            pass  # the client hung up: what a bounded reader does


class WebhookReceiver:
    """``with WebhookReceiver(503, 200, tls_dir=tmp_path) as hook: ...; hook.wait_for(2)``."""

    def __init__(self, *replies: int | Reply, tls_dir: Path | None = None) -> None:
        self._program: deque[Reply] = deque()
        self._requests: list[Request] = []
        self.changed = threading.Condition()
        self.closing = threading.Event()
        self.tls_failures = 0
        self.tls_context: ssl.SSLContext | None = None
        self.ca_file: str | None = None
        if tls_dir is not None:
            cert, key = self_signed(tls_dir, "webhook")
            self.tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.tls_context.load_cert_chain(cert, key)
            self.ca_file = str(cert)  # self-signed: the certificate is its own CA
        self.program(*replies)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.receiver = self
        self.port = int(self._server.server_address[1])
        scheme = "https" if self.tls_context is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def program(self, *replies: int | Reply) -> None:
        """Queue the next answers, in order; a bare int is a status with an empty body."""
        with self.changed:
            self._program.extend(Reply(r) if isinstance(r, int) else r for r in replies)

    def record(self, request: Request) -> Reply:
        """Called by the handler: keep the request, wake waiters, hand back the programmed answer."""
        with self.changed:
            self._requests.append(request)
            reply = self._program.popleft() if self._program else Reply()
            self.changed.notify_all()
            return reply

    @property
    def requests(self) -> list[Request]:
        with self.changed:
            return list(self._requests)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Request]:
        """The first ``count`` requests, once they have arrived; fails the test at the deadline."""
        with self.changed:
            if not self.changed.wait_for(lambda: len(self._requests) >= count, timeout):
                raise AssertionError(f"the webhook receiver got {len(self._requests)} requests in {timeout:g}s, "
                                     f"expected {count}")
            return list(self._requests[:count])

    def close(self) -> None:
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

