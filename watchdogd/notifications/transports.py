"""How a notification leaves the host: Prometheus Alertmanager (API v2) or a JSON webhook.

One ``POST`` per attempt, stdlib only (``socket``, ``ssl``, ``http.client``):
the daemon must not grow a dependency for it, and ``urllib`` would follow
redirects, read unbounded bodies and give the connect, the TLS handshake and
each read the whole timeout again. Here one deadline (the sink's
``timeout``) covers the whole request, the answer's body is read only when
it explains a failure and then at most ``MAX_RESPONSE`` bytes of it, and a
redirect is a failure: a page must go where the config says, not wherever a
server points.

Every failure is a ``DeliveryError`` whose ``retry`` tells the deliverer
whether the same request could succeed later (timeouts, refused
connections, 5xx, 408, 429, a server that hung up) or not until a person
changes something (other 4xx, redirects, an untrusted certificate, a CA file
that cannot be read). Its message is one line naming the sink and the URL,
never a secret: the URL is shown without user info or query string.

Secrets (the webhook's HMAC key, Alertmanager's basic-auth password) are read
when the transport is built, with ``watchdogd.secrets``, so an unreadable one
is a config error at load, not a failed page at 3 a.m.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import math
import re
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from watchdogd import __version__
from watchdogd.netio import connect
from watchdogd.notifications.message import Notification
from watchdogd.notifyspec import AlertmanagerSink, SinkConfig, TlsSettings, WebhookSink
from watchdogd.secrets import resolve_secret

USER_AGENT = f"watchdogd/{__version__}"
MAX_RESPONSE = 64 * 1024
"""Bytes of an error answer read at most: enough for any explanation, bounded against a server that streams."""
ERROR_EXCERPT = 200
"""Characters of an error answer quoted in the message (one line)."""
MAX_DESCRIPTION = 4096
"""Bytes of the ``description`` annotation (the notification's detail as JSON): Alertmanager keeps every
annotation of every alert in memory and in each notification it sends."""
FIRING_LIFETIME = 4
"""A firing alert's ``endsAt`` is this many ``resend`` intervals ahead: if the daemon dies, Alertmanager
resolves the alert by itself after a few missed re-sends instead of showing it firing forever."""
TEST_LIFETIME = 300.0
"""``watchdogctl test-notify`` opens an alert that closes itself after five minutes."""

FIRING_KINDS = frozenset({"firing", "not_held", "repeated", "gave_up"})
"""Kinds that open (or refresh) an alert; ``resolved`` and ``resumed`` close one; ``test`` is apart."""
GAVE_UP_ALERT = "WatchdogdGaveUp"
TEST_ALERT = "WatchdogdTest"
RULE_ITSELF = "-"

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
"""An HTTP header name (RFC 9110 token)."""
_OWN_HEADERS = frozenset({"content-type", "content-length", "host", "connection", "idempotency-key"})
"""Headers a webhook's configured ``headers`` may not replace (nor any ``X-Watchdogd-*``): they carry the
body's framing, its identity and its signature, which receivers rely on."""


class DeliveryError(Exception):
    """A failed attempt; ``retry`` says whether sending the same request again could succeed."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


class Transport(Protocol):
    name: str
    """The sink's name in the config."""
    resend: float | None
    """Seconds between re-sends of a firing alert that is still open (Alertmanager forgets an alert it
    has not heard of since its ``endsAt``); None when the receiving end needs none (webhooks)."""

    def send(self, notification: Notification) -> None:
        """Deliver one notification; raises ``DeliveryError`` and nothing else."""
        ...


def transport_for(name: str, sink: SinkConfig) -> Transport:
    """The transport the sink's config names. Raises ValueError for what the config validation cannot
    see: an unreadable secret, a URL without a usable host or port, a header watchdogd sets itself."""
    if sink.alertmanager is not None:
        return AlertmanagerTransport(name, sink.alertmanager)
    if sink.webhook is not None:
        return WebhookTransport(name, sink.webhook)
    raise ValueError(f"sink {name!r} names no transport")  # SinkConfig's validator makes this unreachable


class AlertmanagerTransport:
    """``POST <url>/api/v2/alerts`` with one alert (Alertmanager 0.16 and later; API v1 is gone since 0.27).

    Alertmanager identifies an alert by its labels, so everything that
    must match between a page and its resolve is a label (``alertname``,
    ``rule``, ``subject``, ``severity``, ``instance``, ``job`` and the rule's
    own labels) and everything else an annotation. A give-up is its own
    alert, ``WatchdogdGaveUp`` (no ``subject``), which ``resumed`` closes:
    the two must carry the same severity and rule labels. The rule's own
    labels and annotations cannot replace the ones set here.
    """

    def __init__(self, name: str, sink: AlertmanagerSink, *, clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.resend: float | None = float(sink.resend)
        self._clock = clock
        base = urlsplit(sink.url)
        if base.query or base.fragment:
            raise ValueError(f"sink {name!r}: the Alertmanager url is a base URL, without ?query or #fragment")
        url = urlunsplit(base._replace(path=base.path.rstrip("/") + "/api/v2/alerts"))
        self._http = _Endpoint(name, url, float(sink.timeout), sink.tls)
        if sink.basic_auth_password_file is not None and sink.basic_auth_user is None:
            raise ValueError(f"sink {name!r}: basic_auth_password_file needs basic_auth_user")
        self._headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if sink.basic_auth_user is not None:
            password = _secret(name, sink.basic_auth_password_file, None, "basic_auth_password") or ""
            self._headers["Authorization"] = _basic_auth(sink.basic_auth_user, password)
        elif self._http.userinfo is not None:
            self._headers["Authorization"] = _basic_auth(*self._http.userinfo)

    def send(self, notification: Notification) -> None:
        try:
            body = json.dumps([self.alert(notification)], separators=(",", ":"), ensure_ascii=False)
        except Exception as exc:  # a value no alert can carry (a timestamp out of range...): the same next time
            what = f"sink {self.name!r}: cannot encode the alert: {_one_line(str(exc))}"
            raise DeliveryError(what, retry=False) from None
        self._http.post(body.encode("utf-8"), self._headers)

    def alert(self, notification: Notification) -> dict[str, Any]:
        """The PostableAlert (API v2) for a notification."""
        n = notification
        now = self._clock()
        if n.kind in ("gave_up", "resumed"):
            alertname = GAVE_UP_ALERT
        elif n.kind == "test":
            alertname = TEST_ALERT
        else:
            alertname = n.rule
        own_labels = {
            "alertname": alertname,
            "rule": n.rule,
            "subject": "" if n.subject == RULE_ITSELF else n.subject,
            "severity": n.severity,
            "instance": n.host,
            "job": "watchdogd",
        }
        # An empty label value means "no such label" to Prometheus and Alertmanager alike.
        labels = {key: value for key, value in {**n.labels, **own_labels}.items() if value != ""}
        own_annotations = {"summary": n.summary, "watchdogd_kind": n.kind}
        value = n.value_text if n.value_text is not None else _number(n.value)
        if value is not None:
            own_annotations["value"] = value
        if n.dry_run:
            own_annotations["dry_run"] = "true"
        if n.detail:
            own_annotations["description"] = _bounded_json(n.detail, MAX_DESCRIPTION)
        annotations = {key: value for key, value in {**n.annotations, **own_annotations}.items() if value != ""}
        starts = _millis(n.starts_at)
        if n.kind in FIRING_KINDS:
            ends = _millis(now + FIRING_LIFETIME * (self.resend or 0.0))
        elif n.kind == "test":
            ends = _millis(now + TEST_LIFETIME)
        else:  # resolved, resumed: an endsAt in the past closes the alert
            ends = _millis(n.ends_at if n.ends_at is not None else now)
        ends = max(ends, starts)  # Alertmanager refuses an alert that ends before it starts (400)
        return {"labels": labels, "annotations": annotations, "startsAt": _rfc3339(starts), "endsAt": _rfc3339(ends)}


class WebhookTransport:
    """``POST <url>`` with the notification's JSON (``Notification.to_json()``); any 2xx is delivered.

    Headers: ``Idempotency-Key`` (the same for every attempt and across
    restarts, so a receiver can drop a duplicate after a timeout that was
    not one), ``X-Watchdogd-Kind``, the configured headers, and with a key
    ``X-Watchdogd-Signature: sha256=<hex>``, the HMAC-SHA256 of the exact
    body bytes, so the receiver can tell the page came from us.

    JSON has no infinity: a non-finite number (an outage's value is
    ``inf``) is sent as the string ``"inf"``, ``"-inf"`` or ``"nan"``, since
    the bare ``Infinity`` Python would write is rejected by strict parsers.
    """

    def __init__(self, name: str, sink: WebhookSink) -> None:
        self.name = name
        self.resend: float | None = None
        self._http = _Endpoint(name, sink.url, float(sink.timeout), sink.tls)
        secret = _secret(name, sink.secret_file, sink.secret_env, "secret")
        if secret == "":
            raise ValueError(f"sink {name!r}: the HMAC key is empty")
        self._key = secret.encode("utf-8") if secret is not None else None
        for header, value in sink.headers.items():
            lowered = header.lower()
            if not _TOKEN.match(header) or "\r" in value or "\n" in value:
                raise ValueError(f"sink {name!r}: header {header!r} is not a valid HTTP header")
            if lowered in _OWN_HEADERS or lowered.startswith("x-watchdogd-"):
                raise ValueError(f"sink {name!r}: header {header!r} is set by watchdogd itself")
        ours = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if self._http.userinfo is not None:
            ours["Authorization"] = _basic_auth(*self._http.userinfo)
        configured = {header.lower() for header in sink.headers}
        # Header names are case-insensitive: a configured ``user-agent`` replaces ours, never doubles it.
        self._headers = {header: value for header, value in ours.items() if header.lower() not in configured}
        self._configured = dict(sink.headers)

    def send(self, notification: Notification) -> None:
        try:
            body = json.dumps(
                _finite(notification.to_json()), separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                default=str,
            ).encode("utf-8")
        except Exception as exc:  # the same next time: retrying cannot help
            raise DeliveryError(
                f"sink {self.name!r}: cannot encode the notification: {_one_line(str(exc))}", retry=False
            ) from None
        headers = {
            **self._headers,
            "Idempotency-Key": notification.key,
            "X-Watchdogd-Kind": notification.kind,
            **self._configured,
        }
        if self._key is not None:
            headers["X-Watchdogd-Signature"] = "sha256=" + hmac.new(self._key, body, hashlib.sha256).hexdigest()
        self._http.post(body, headers)


class _Endpoint:
    """One URL to POST to, with the sink's timeout and TLS settings; the TLS context is built on first use."""

    def __init__(self, sink: str, url: str, timeout: float, tls: TlsSettings) -> None:
        self.sink = sink
        self.timeout = timeout
        self.tls = tls
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"sink {sink!r}: the url has an invalid port") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"sink {sink!r}: the url needs http:// or https:// and a host")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = port or (443 if self.https else 80)
        self.port_given = port
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.userinfo = (unquote(parts.username or ""), unquote(parts.password or "")) if parts.username else None
        self.shown = _shown_url(parts)
        self._context: ssl.SSLContext | None = None

    def fail(self, what: str, *, retry: bool) -> DeliveryError:
        return DeliveryError(f"sink {self.sink!r}: POST {self.shown}: {what}", retry=retry)

    def post(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Send; return on any 2xx, raise DeliveryError otherwise. The whole exchange ends by the deadline."""
        deadline = time.monotonic() + self.timeout
        try:
            conn = self._open(deadline)
        except DeliveryError:
            raise
        except Exception as exc:
            raise self._no_answer(exc) from None
        response: http.client.HTTPResponse | None = None
        try:
            sock = conn.sock
            assert sock is not None
            _settimeout(sock, deadline)
            conn.putrequest("POST", self.target, skip_accept_encoding=True)
            for header, value in {**headers, "Content-Length": str(len(body)), "Connection": "close"}.items():
                conn.putheader(header, value)
            conn.endheaders(body)
            _settimeout(sock, deadline)
            response = conn.getresponse()
            status = response.status
            if 200 <= status < 300:
                return  # the status is the verdict: the body of a success is not waited for
            if 300 <= status < 400:
                location = response.getheader("Location")
                where = f" to {_shown_url(urlsplit(location))}" if location else ""
                raise self.fail(
                    f"status {status}, redirected{where}: not followed (set the url to the final address)",
                    retry=False,
                )
            excerpt = _excerpt(_read_bounded(response, sock, deadline))
            raise self.fail(f"status {status}" + (f": {excerpt}" if excerpt else ""), retry=_worth_retrying(status))
        except DeliveryError:
            raise
        except Exception as exc:
            raise self._no_answer(exc) from None
        finally:
            if response is not None:
                response.close()
            conn.close()

    def _no_answer(self, exc: Exception) -> DeliveryError:
        if isinstance(exc, ssl.SSLCertVerificationError):
            # Trust is configuration: the same certificate fails the same way until a person renews it or
            # sets tls.ca_file; retrying would only hide the problem for give_up_after.
            return self.fail(f"TLS certificate not trusted: {exc.verify_message or exc.reason}", retry=False)
        if isinstance(exc, ssl.SSLError):
            return self.fail(f"TLS failed: {exc.reason or exc}", retry=True)
        if isinstance(exc, TimeoutError):
            return self.fail(f"timed out after {self.timeout:g}s", retry=True)
        if isinstance(exc, socket.gaierror):
            return self.fail(f"cannot resolve {self.host}: {exc.strerror or exc}", retry=True)
        if isinstance(exc, OSError) and exc.strerror:
            return self.fail(exc.strerror.lower(), retry=True)
        if isinstance(exc, http.client.RemoteDisconnected):
            return self.fail("the server closed the connection without answering", retry=True)
        if isinstance(exc, http.client.HTTPException | OSError):
            return self.fail(f"bad answer: {_one_line(str(exc)) or type(exc).__name__}", retry=True)
        if isinstance(exc, UnicodeError | ValueError):  # a header or host that cannot be encoded: our side
            return self.fail(f"cannot send: {_one_line(str(exc))}", retry=False)
        # Not understood: keep the notification; give_up_after bounds the effort.
        return self.fail(f"{type(exc).__name__}: {_one_line(str(exc))}", retry=True)

    def _tls(self) -> ssl.SSLContext:
        """The TLS context, loaded once: a plain-http sink never pays for the CA store (~0.8 MiB)."""
        if self._context is None:
            try:
                if self.tls.insecure_skip_verify:
                    context = ssl.create_default_context()
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                else:
                    context = ssl.create_default_context(cafile=self.tls.ca_file)
            except (OSError, ssl.SSLError) as exc:
                what = f"cannot load tls.ca_file {self.tls.ca_file}: {getattr(exc, 'strerror', None) or exc}"
                raise self.fail(_one_line(what), retry=False) from None
            self._context = context
        return self._context

    def _open(self, deadline: float) -> http.client.HTTPConnection:
        """A connection whose socket is connected (and TLS set up) within the deadline.

        Done here rather than by ``http.client``, which would give the
        connect to each address and the handshake each the whole timeout.
        """
        context = self._tls() if self.https else None
        sock = connect(self.host, self.port, deadline)
        try:
            if context is not None:
                _settimeout(sock, deadline)
                sock = context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        conn: http.client.HTTPConnection
        if self.https:  # HTTPSConnection only for its default port in the Host header: the socket is ready
            conn = http.client.HTTPSConnection(self.host, self.port_given, context=context)
        else:
            conn = http.client.HTTPConnection(self.host, self.port_given)
        conn.sock = sock
        return conn


def _settimeout(sock: socket.socket, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("timed out")
    sock.settimeout(remaining)


def _read_bounded(response: http.client.HTTPResponse, sock: socket.socket, deadline: float) -> bytes:
    """Up to ``MAX_RESPONSE`` bytes of an error answer's body, within the deadline; what arrived if it stalls.

    ``read1`` does one read on the socket at most, so the deadline is
    checked between reads even when the body trickles in byte by byte.
    """
    body = bytearray()
    try:
        while len(body) < MAX_RESPONSE:
            _settimeout(sock, deadline)
            chunk = response.read1(MAX_RESPONSE - len(body))
            if not chunk:
                break
            body += chunk
    except (OSError, http.client.HTTPException):
        pass  # the status already says it failed; the body only explains it
    return bytes(body)


def _worth_retrying(status: int) -> bool:
    """5xx, 408 and 429 can pass later; any other 4xx means our request is wrong and will stay wrong."""
    return not (400 <= status < 500) or status in (408, 429)


def _shown_url(parts: SplitResult) -> str:
    """The URL for messages: no ``user:password@``, no query string (tokens often live there)."""
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "..." if parts.query else "", ""))


def _secret(sink: str, file: str | None, env: str | None, what: str) -> str | None:
    try:
        return resolve_secret(None, file, env, what)
    except ValueError as exc:
        raise ValueError(f"sink {sink!r}: {exc}") from None


def _basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _excerpt(body: bytes) -> str:
    text = _one_line(body[: ERROR_EXCERPT * 4].decode("utf-8", "replace"))
    return text if len(text) <= ERROR_EXCERPT else text[: ERROR_EXCERPT - 3] + "..."


def _number(value: float | None) -> str | None:
    if value is None:
        return None
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _finite(data: Any) -> Any:
    """``data`` with every non-finite float replaced by its name (``"inf"``): JSON has no such numbers."""
    if isinstance(data, float) and not math.isfinite(data):
        return repr(data)
    if isinstance(data, Mapping):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(value) for value in data]
    return data


def _bounded_json(data: Mapping[str, Any], limit: int) -> str:
    """Compact JSON, cut to ``limit`` bytes (on a character boundary) with a marker when longer."""
    text = json.dumps(_finite(data), separators=(",", ":"), ensure_ascii=False, sort_keys=True, default=str)
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    marker = "...(cut)"
    return encoded[: limit - len(marker)].decode("utf-8", "ignore") + marker


def _millis(ts: float) -> int:
    """Unix time in whole milliseconds: what Alertmanager keeps, so comparisons match its own."""
    return math.floor(ts * 1000)


def _rfc3339(millis: int) -> str:
    seconds, rest = divmod(millis, 1000)  # not millis / 1000: a float could round .123 down to .122
    moment = datetime.fromtimestamp(seconds, UTC) + timedelta(milliseconds=rest)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
