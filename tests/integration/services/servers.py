"""Local HTTP(S) servers with chosen misbehaviour, TLS certificates, child processes, and wait_until.

Every server listens on 127.0.0.1 on a port the kernel picks, and every
helper here is closed by the fixture that made it, even when a test fails.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.helpers import wait_until  # noqa: F401  (re-exported for this package)

# --------------------------------------------------------------------------- http


@dataclass(frozen=True)
class Route:
    status: int = 200
    body: bytes = b"ok\n"
    delay: float = 0.0  # the server's own slowness, which is what the test is about
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class HttpServer:
    """``routes`` maps a path to a Route; unknown paths answer 404."""

    routes: dict[str, Route]
    tls: ssl.SSLContext | None = None
    seen_headers: list[dict[str, str]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> HttpServer:
        routes, seen = self.routes, self.seen_headers

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(body=True)

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def _answer(self, body: bool) -> None:
                seen.append(dict(self.headers.items()))
                route = routes.get(self.path.split("?")[0], Route(404, b"not found\n"))
                if route.delay:
                    time.sleep(route.delay)
                self.send_response(route.status)
                for name, value in route.headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                if body:
                    self.wfile.write(route.body)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


# --------------------------------------------------------------------------- tls


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path
    not_after: dt.datetime

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_tls(directory: Path, *, expires_in: dt.timedelta) -> TlsFiles:
    """A private CA and a server certificate for 127.0.0.1/localhost that expires after ``expires_in``."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "watchdogd test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    not_after = (now + expires_in).replace(microsecond=0)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key", not_after)
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return files


# --------------------------------------------------------------------------- processes


IDLE = "import time\nprint('ready', flush=True)\nwhile True: time.sleep(1)"
LEAK = (
    "import time\nchunks = []\nprint('ready', flush=True)\n"
    "while True:\n    chunks.append(bytearray(2 << 20))\n    time.sleep(0.05)"
)


class Children:
    """Python child processes with a recognisable argv; all killed on ``close``."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, code: str, *args: str) -> subprocess.Popen[bytes]:
        child = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE)
        self.procs.append(child)
        assert child.stdout is not None and child.stdout.readline() == b"ready\n", "child did not start"
        return child

    def close(self) -> None:
        for child in self.procs:
            if child.poll() is None:
                child.kill()
        for child in self.procs:
            child.wait(timeout=10)
            if child.stdout is not None:
                child.stdout.close()
