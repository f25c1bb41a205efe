"""HTTP on ``listen``: /metrics, /healthz, and node_exporter's web config for TLS and basic auth.

The web config file is read in the Prometheus exporter-toolkit format on
purpose: operators already have one for node_exporter and can point
``web_config_file`` at the same file. Keys the toolkit knows but we cannot
honour with Python's ``ssl`` are refused with a clear message rather than
silently ignored, because each of them (cipher_suites, client_allowed_sans,
non-verifying client certificates) is a security restriction the operator
believes is in force.

Robustness against slow and hostile clients (issue 20: 64 slow-loris
connections used to take all 32 thread slots, and 1 scrape in 39 got
through): connections are accepted, TLS-handshaken and read on one asyncio
event loop, so a client that connects and trickles (or sends nothing) costs
a file descriptor, never a thread. Only a complete request head reaches the
worker threads that render /metrics and check bcrypt. The handshake plus
the first head must arrive within ``HttpLimits.head_deadline`` of
connecting, a keep-alive connection may idle ``keepalive_idle`` between
requests, and a reply must be taken within ``write_timeout``. Which
connections stay when a source stalls many of them is ``control.Admission``:
behaviour decides, not the address, because Prometheus and an attacker can
share one (127.0.0.1).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import hashlib
import io
import logging
import re
import socket
import ssl
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from watchdogd.faces.admission import Admission, run_loop, sweep_until
from watchdogd.faces.exporter import Exposition
from watchdogd.faces.sending import write_in_pieces
from watchdogd.logs import event

log = logging.getLogger(__name__)

HealthCheck = Callable[[], tuple[bool, str]]
"""Returns (healthy, reason); the reason is the /healthz body."""



@dataclass(frozen=True)
class HttpLimits:
    """What one client may cost; the defaults hold 200 slow-loris connections from one address at bay."""

    head_deadline: float = 5.0
    """Seconds from connecting to a complete first request head, TLS handshake included. One overall
    deadline, not a per-read timeout, which a client trickling one byte a second would reset forever."""
    keepalive_idle: float = 120.0
    """Seconds a kept-alive connection may wait for its next request; once that starts, head_deadline applies.
    Longer than any usual scrape interval (config ``http_keepalive_idle``), so Prometheus keeps one connection,
    as it does with node_exporter (whose Go server never closes an idle one). An idle connection is silent, so
    ``stalled_per_source`` and ``max_connections`` still cut idle ones first when a source opens too many."""
    write_timeout: float = 10.0
    """Seconds a client has to take a reply."""
    stall_grace: float = 1.0
    """Seconds a connection may owe us bytes before it counts as stalled (a WAN TLS client needs a few RTTs)."""
    stalled_per_source: int = 8
    """Stalled connections one source address may keep; the oldest beyond are cut (``control.Admission``)."""
    max_connections: int = 256
    """Open connections at most (file descriptors); a newcomer past it evicts the oldest silent one."""
    workers: int = 8
    """Threads rendering replies (and checking bcrypt); only complete request heads reach them."""
    max_head: int = 64 * 1024
    """Bytes of request line and headers; more gets 431."""
    max_header_lines: int = 100


AUTH_CACHE_SIZE = 64
_BCRYPT_RE = re.compile(r"^\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{53}$")
# Checked when the user is unknown, so a wrong user name costs as long as a wrong password.
_DUMMY_HASH = b"$2b$10$7EqJtq98hPqEX7fNZaFWoOhi5BWX4Z3/pUxU7WDXBDYC0ZRBI1Uma"

TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
CLIENT_AUTH: dict[str, ssl.VerifyMode] = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_UNSUPPORTED: dict[str, str] = {
    "tls_server_config.cipher_suites": "not supported by watchdogd (OpenSSL's defaults apply); remove it",
    "tls_server_config.curve_preferences": "not supported by watchdogd (OpenSSL's defaults apply); remove it",
    "tls_server_config.client_allowed_sans": "not supported by watchdogd; remove it, or restrict clients "
    "with client_ca_file",
    "tls_server_config.cert": "inline certificates are not supported; use cert_file",
    "tls_server_config.key": "inline keys are not supported; use key_file",
}
_IGNORED = ("tls_server_config.prefer_server_cipher_suites", "http_server_config.http2")
"""Toolkit keys with no effect here (we serve HTTP/1.1; OpenSSL picks ciphers): accepted, logged once."""


class WebConfigError(Exception):
    """A bad web config file; ``str()`` names the file and the key."""


class ListenError(Exception):
    """``listen`` cannot be parsed or bound; the message names the address."""


# --------------------------------------------------------------------------- web config


@dataclass(frozen=True)
class WebConfig:
    """What the web config file asks for. The default (no file) is plain HTTP, no auth."""

    tls: ssl.SSLContext | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    source: str | None = None


def load_web_config(path: str | None) -> WebConfig:
    """Read and check a web config file; raise WebConfigError naming the key that is wrong."""
    if path is None:
        return WebConfig()
    import yaml  # noqa: PLC0415 (only a daemon with a web config file reads YAML: the config child reads the policy)

    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise WebConfigError(f"{path}: cannot read web config: {exc.strerror}") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise WebConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from exc
    return parse_web_config(data or {}, path)


def parse_web_config(data: Any, path: str) -> WebConfig:
    if not isinstance(data, dict):
        raise WebConfigError(f"{path}: the web config must be a mapping")
    _check_keys(data, path)
    base = Path(path).parent
    tls = _tls_context(data.get("tls_server_config") or {}, base, path)
    users = _users(data.get("basic_auth_users") or {}, path)
    http = data.get("http_server_config") or {}
    headers = http.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise WebConfigError(f"{path}: http_server_config.headers: expected a mapping of header names to strings")
    for key in _IGNORED:
        section, name = key.split(".")
        if name in (data.get(section) or {}):
            event(log, logging.INFO, "web config key has no effect in watchdogd", file=path, key=key)
    return WebConfig(tls=tls, users=users, headers=dict(headers), source=path)


_KNOWN: dict[str, tuple[str, ...]] = {
    "tls_server_config": (
        "cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version",
        "cipher_suites", "curve_preferences", "prefer_server_cipher_suites", "client_allowed_sans", "cert", "key",
    ),
    "http_server_config": ("http2", "headers"),
    "basic_auth_users": (),
}


def _check_keys(data: Mapping[str, Any], path: str) -> None:
    for section, body in data.items():
        if section not in _KNOWN:
            raise WebConfigError(f"{path}: {section}: unknown key (expected one of: {', '.join(_KNOWN)})")
        if section == "basic_auth_users" or body is None:
            continue
        if not isinstance(body, dict):
            raise WebConfigError(f"{path}: {section}: expected a mapping")
        for key in body:
            dotted = f"{section}.{key}"
            if key not in _KNOWN[section]:
                raise WebConfigError(f"{path}: {dotted}: unknown key (expected one of: {', '.join(_KNOWN[section])})")
            if dotted in _UNSUPPORTED:
                raise WebConfigError(f"{path}: {dotted}: {_UNSUPPORTED[dotted]}")


def _tls_context(tls: Mapping[str, Any], base: Path, path: str) -> ssl.SSLContext | None:
    if not tls:
        return None
    cert, key = tls.get("cert_file"), tls.get("key_file")
    if not cert or not key:
        missing = "cert_file" if not cert else "key_file"
        raise WebConfigError(f"{path}: tls_server_config.{missing}: required when tls_server_config is set")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _tls_version(tls, "min_version", "TLS12", path)
    context.maximum_version = _tls_version(tls, "max_version", "TLS13", path)
    try:
        context.load_cert_chain(str(base / str(cert)), str(base / str(key)))
    except (OSError, ssl.SSLError) as exc:
        raise WebConfigError(
            f"{path}: tls_server_config.cert_file/key_file: cannot load {cert} / {key}: {_ssl_text(exc)}"
        ) from exc
    auth = str(tls.get("client_auth_type") or "NoClientCert")
    if auth not in CLIENT_AUTH:
        hint = (" (watchdogd always verifies client certificates: use VerifyClientCertIfGiven)"
                if auth in ("RequestClientCert", "RequireAnyClientCert") else "")
        raise WebConfigError(
            f"{path}: tls_server_config.client_auth_type: {auth!r} is not supported; "
            f"expected one of: {', '.join(CLIENT_AUTH)}{hint}"
        )
    context.verify_mode = CLIENT_AUTH[auth]
    ca = tls.get("client_ca_file")
    if context.verify_mode is not ssl.CERT_NONE:
        if not ca:
            raise WebConfigError(f"{path}: tls_server_config.client_ca_file: required with client_auth_type {auth}")
        try:
            context.load_verify_locations(cafile=str(base / str(ca)))
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(
                f"{path}: tls_server_config.client_ca_file: cannot load {ca}: {_ssl_text(exc)}"
            ) from exc
    return context


def _tls_version(tls: Mapping[str, Any], key: str, default: str, path: str) -> ssl.TLSVersion:
    name = str(tls.get(key) or default)
    if name not in TLS_VERSIONS:
        raise WebConfigError(f"{path}: tls_server_config.{key}: {name!r}; expected one of: {', '.join(TLS_VERSIONS)}")
    return TLS_VERSIONS[name]


def _users(raw: Any, path: str) -> dict[str, bytes]:
    if not isinstance(raw, dict):
        raise WebConfigError(f"{path}: basic_auth_users: expected a mapping of user names to bcrypt hashes")
    users: dict[str, bytes] = {}
    for user, hashed in raw.items():
        if not isinstance(user, str) or ":" in user or not user:
            raise WebConfigError(f"{path}: basic_auth_users: {user!r} is not a valid user name")
        if not isinstance(hashed, str) or not _BCRYPT_RE.match(hashed):
            raise WebConfigError(
                f"{path}: basic_auth_users.{user}: expected a bcrypt hash ($2y$10$...), "
                "e.g. from: htpasswd -nBC 10 '' | tr -d ':\\n'"
            )
        users[user] = hashed.encode("ascii")
    return users


def _ssl_text(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)


class BasicAuth:
    """Checks ``Authorization: Basic`` against bcrypt hashes.

    bcrypt costs tens of milliseconds by design; a Prometheus scraping every
    15 s with the same password would pay it every time. Successful checks
    are remembered (as a digest, never the password) in a small LRU, like
    exporter-toolkit does. Failures are never cached, so a changed password
    in the file takes effect at the next reload.
    """

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = dict(users)
        self._ok: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def required(self) -> bool:
        return bool(self._users)

    def check(self, header: str | None) -> bool:
        if not self._users:
            return True
        credentials = _parse_basic(header)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self._users.get(user)
        key = hashlib.sha256(b"\0".join((user.encode(), hashed or b"", password))).digest()
        with self._lock:
            if hashed is not None and key in self._ok:
                self._ok.move_to_end(key)
                return True
        # Imported here, where basic auth is on: 0.4 MiB of RSS every other daemon would carry for nothing
        # (a cached import is a dict lookup next to bcrypt's tens of milliseconds).
        from bcrypt import checkpw  # noqa: PLC0415

        try:
            ok = checkpw(password, hashed or _DUMMY_HASH) and hashed is not None
        except ValueError:
            ok = False
        if ok:
            with self._lock:
                self._ok[key] = None
                while len(self._ok) > AUTH_CACHE_SIZE:
                    self._ok.popitem(last=False)
        return ok


def _parse_basic(header: str | None) -> tuple[str, bytes] | None:
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


# --------------------------------------------------------------------------- listen address


def parse_listen(listen: str) -> tuple[socket.AddressFamily, tuple[str, int]]:
    """``127.0.0.1:19469``, ``[::1]:19469``, ``localhost:19469`` or ``:19469`` (all addresses, like Go)."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ListenError(f"listen: {listen!r} is not host:port (e.g. 127.0.0.1:19469 or [::1]:19469)")
    port = int(port_text)
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host:
        return socket.AF_INET6, ("::", port)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"listen: cannot resolve {host!r}: {exc.strerror}") from exc
    family, _, _, _, address = infos[0]
    return family, (str(address[0]), int(address[1]))


# --------------------------------------------------------------------------- server

BACKLOG = 128
_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n"
              b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 23\r\n\r\nrequest head too large\n")
_BLANK_LINES = 4
"""Blank lines tolerated before a request line (RFC 9112 2.2), then the client is talking nonsense."""


@dataclass(frozen=True)
class _App:
    """Everything a request needs, swapped as one object on reload."""

    web: WebConfig
    auth: BasicAuth
    exposition: Exposition
    health: HealthCheck


class _HeadTooLarge(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    """The stdlib's HTTP/1.1 parsing and replies, over a head the event loop already read.

    Runs in a worker thread; it never touches the socket, so no client can
    hold it: the reply is built in memory and the event loop sends it.
    """

    protocol_version = "HTTP/1.1"
    server_version = "watchdogd"
    sys_version = ""

    def __init__(self, head: bytes, client_address: tuple[str, int], app: _App) -> None:
        # No super().__init__(): it would read a socket, and the head is already here.
        self.app = app
        self.client_address = client_address
        self.rfile = io.BytesIO(head)
        self._out = io.BytesIO()
        self.wfile = self._out
        self.close_connection = True
        self.handle_one_request()

    @property
    def reply(self) -> bytes:
        return self._out.getvalue()

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def _dispatch(self, *, head: bool) -> None:
        app = self.app
        if not app.auth.check(self.headers.get("Authorization")):
            self._reply(401, b"Unauthorized\n", "text/plain; charset=utf-8", head=head,
                        extra={"WWW-Authenticate": 'Basic realm="watchdogd", charset="UTF-8"'})
            return
        route = _ROUTES.get(urlsplit(self.path).path)
        if route is None:
            self._reply(404, b"Not found: try /metrics or /healthz\n", "text/plain; charset=utf-8", head=head)
            return
        route(self, app, head)

    def _metrics(self, app: _App, head: bool) -> None:
        gzip_ok = "gzip" in (self.headers.get("Accept-Encoding") or "")
        try:
            rendered = app.exposition.render(self.headers.get("Accept") or "", gzip_ok)
        except Exception as exc:  # a bug in a collector must show as a 500, not kill the server thread
            event(log, logging.ERROR, "rendering /metrics failed", error=f"{type(exc).__name__}: {exc}")
            self._reply(500, b"metrics collection failed; see the daemon log\n", "text/plain; charset=utf-8",
                        head=head)
            return
        extra = {"Content-Encoding": rendered.encoding} if rendered.encoding else {}
        self._reply(200, rendered.body, rendered.content_type, head=head, extra=extra)

    def _healthz(self, app: _App, head: bool) -> None:
        healthy, reason = app.health()
        self._reply(200 if healthy else 503, (reason + "\n").encode(), "text/plain; charset=utf-8", head=head)

    def _index(self, app: _App, head: bool) -> None:
        body = (b"<html><head><title>watchdogd</title></head><body><h1>watchdogd</h1>"
                b'<p><a href="/metrics">Metrics</a> | <a href="/healthz">Health</a></p></body></html>\n')
        self._reply(200, body, "text/html; charset=utf-8", head=head)

    def _reply(
        self, code: int, body: bytes, content_type: str, *, head: bool, extra: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(code)
        for name, value in {**self.app.web.headers, **(extra or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        event(log, logging.DEBUG, "http request", client=self.client_address[0], request=format % args)


_ROUTES: dict[str, Callable[[_Handler, _App, bool], None]] = {
    "/metrics": _Handler._metrics,
    "/healthz": _Handler._healthz,
    "/": _Handler._index,
}


def _answer(head: bytes, client_address: tuple[str, int], app: _App) -> tuple[bytes, bool]:
    """(reply bytes, close the connection after it)."""
    handler = _Handler(head, client_address, app)
    return handler.reply, handler.close_connection


class _Conn:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    def cut(self) -> None:
        self.writer.transport.abort()


def _listening_socket(family: socket.AddressFamily, address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # ":19469" means every address, IPv4 included, as it does for node_exporter.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


class MetricsServer:
    """The listening socket is bound in the constructor, so a taken port fails before any rule runs."""

    def __init__(
        self, listen: str, web: WebConfig, exposition: Exposition, health: HealthCheck,
        limits: HttpLimits | None = None,
    ) -> None:
        family, address = parse_listen(listen)
        self.listen = listen
        self.limits = limits or HttpLimits()
        try:
            self._sock = _listening_socket(family, address)
        except OSError as exc:
            raise ListenError(f"listen: cannot bind {listen}: {exc.strerror or exc}") from exc
        self._app = _App(web, BasicAuth(web.users), exposition, health)
        self.admission: Admission[_Conn] = Admission(
            self.limits.max_connections, self.limits.stalled_per_source, self.limits.stall_grace
        )
        self._pool = ThreadPoolExecutor(self.limits.workers, thread_name_prefix="http")
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(_loop_error)
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    @property
    def web(self) -> WebConfig:
        return self._app.web

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._thread.start()

    def update(self, web: WebConfig, keepalive_idle: float | None = None) -> None:
        """Swap TLS, users and headers in place (reload); TLS applies to new connections, the rest to new requests.

        ``keepalive_idle`` (config ``http_keepalive_idle``) applies from each connection's next idle wait.
        """
        app = self._app
        self._app = _App(web, BasicAuth(web.users), app.exposition, app.health)
        if keepalive_idle is not None:
            self.limits = dataclasses.replace(self.limits, keepalive_idle=keepalive_idle)

    def close(self) -> None:
        if self._thread is None:
            self._sock.close()
            self._loop.close()
            self._pool.shutdown(wait=False)
            return
        with contextlib.suppress(RuntimeError):  # the loop already ended
            self._loop.call_soon_threadsafe(self._begin_stop)
        self._thread.join(timeout=10.0)

    def _begin_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def _run(self) -> None:
        run_loop(self._loop, self._main)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._connection, sock=self._sock, limit=self.limits.max_head,
                                            backlog=BACKLOG)
        try:
            await sweep_until(self._stop, self.admission, self._loop.time)
        finally:
            server.close()
            for task in self._tasks:
                task.cancel()
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=5.0)
            self._pool.shutdown(wait=False)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = _Conn(writer)
        peer = writer.get_extra_info("peername") or ("?", 0)
        address = (str(peer[0]), int(peer[1]))
        try:
            if self.admission.admit(conn, address[0], self._loop.time()):
                await self._converse(conn, reader, writer, address)
                writer.close()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.CancelledError) as exc:
            event(log, logging.DEBUG, "http connection ended", client=address[0], error=type(exc).__name__)
        except Exception:  # a bug must cost one connection, never the loop
            log.exception("http connection failed")
        finally:
            self.admission.release(conn)
            if not writer.is_closing():
                writer.transport.abort()
            self._tasks.discard(task)

    async def _converse(
        self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: tuple[str, int]
    ) -> None:
        limits, loop = self.limits, self._loop
        deadline = loop.time() + limits.head_deadline
        tls = self._app.web.tls
        if tls is not None:
            async with asyncio.timeout_at(deadline):
                await writer.start_tls(tls)
        prefix = b""
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    head = await self._read_head(reader, prefix)
            except _HeadTooLarge:
                writer.write(_TOO_LARGE)
                head = None
            if head is None:
                return
            self.admission.busy(conn)
            reply, close = await loop.run_in_executor(self._pool, _answer, head, address, self._app)
            self.admission.silent(conn, loop.time())
            async with asyncio.timeout(limits.write_timeout):
                await write_in_pieces(writer, reply)
            if close:
                return
            async with asyncio.timeout(self.limits.keepalive_idle):  # read each time: a reload may change it
                prefix = await reader.read(1)
            if not prefix:
                return
            self.admission.silent(conn, loop.time())  # a new request has begun: its own grace and deadline
            deadline = loop.time() + limits.head_deadline

    async def _read_head(self, reader: asyncio.StreamReader, prefix: bytes) -> bytes | None:
        """Request line and headers, through the blank line; None if the client closed before the end."""
        head = bytearray()
        blank = lines = 0
        while True:
            try:
                line = prefix + await reader.readline()
            except ValueError as exc:  # a line longer than the reader's limit
                raise _HeadTooLarge from exc
            prefix = b""
            if not line.endswith(b"\n"):
                return None
            if line in (b"\r\n", b"\n"):
                if head:
                    return bytes(head + line)
                blank += 1
                if blank > _BLANK_LINES:
                    return None
                continue
            head += line
            lines += 1
            if len(head) > self.limits.max_head or lines > self.limits.max_header_lines + 1:
                raise _HeadTooLarge


def _loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's own complaints (a failed handshake, accept out of file descriptors) go to our log."""
    exc = context.get("exception")
    level = logging.DEBUG if isinstance(exc, OSError | ssl.SSLError) else logging.WARNING
    event(log, level, "http event loop", detail=str(context.get("message")), error=repr(exc))


def describe(web: WebConfig) -> str:
    """``https, basic auth (2 users)`` for the start-up log line."""
    parts = ["https" if web.tls else "http"]
    if web.users:
        parts.append(f"basic auth ({len(web.users)} users)")
    return ", ".join(parts)
