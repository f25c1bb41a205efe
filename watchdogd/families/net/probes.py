"""Network probes: TCP connect, HTTP(S) checks, TLS certificate expiry.

Two different facts, kept apart (DESIGN.md "Outage model"): a service that
*answers badly* (HTTP 500, a body that does not match) is measured, as a
reading whose value is infinite latency with the reason in ``error``; a
service that *does not answer* (refused, no route, timed out, TLS handshake
failed, connection reset before a response) is a failed measurement, raised
as ``ProbeError``. ``net.tcp`` and ``net.http`` are availability probes, so
the engine turns that failure into a breach of their own subject (``on_down:
fire``): ``above: 2s`` still fires on a slow, a broken and a dead service
alike, and the rule's status says which it was.

Every wait is bounded by one deadline per check (``timeout``), not one per
step: a host name with several addresses, a TLS handshake and a server that
accepts the connection and then says nothing all end within it.

Stdlib only (``socket``, ``http.client``, ``ssl``): one request per run with
no connection reuse is all a health check needs, and the daemon must not
grow a dependency for it.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import SplitResult, urljoin, urlsplit, urlunsplit

from watchdogd import __version__
from watchdogd.contracts import (
    Cardinality,
    Clock,
    EvidenceLimits,
    Params,
    ProbeError,
    ProbeSpec,
    Reading,
    Unit,
    local_probe,
)
from watchdogd.families.net.x509dates import CertificateError, _header, validity
from watchdogd.netio import connect
from watchdogd.spec import BeforeValidator, Field, WithJsonSchema, field_validator, model_validator
from watchdogd.units import Duration, Size

DOWN = float("inf")
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = f"watchdogd/{__version__}"
ERROR_BODY_EXCERPT = 200
EVIDENCE_BODY = 1024
"""Bytes of a response body shown in evidence: enough for an error page's message, never a payload."""
EVIDENCE_HEADERS = ("content-type", "server", "location", "retry-after")
"""Response headers shown in evidence; never Set-Cookie and the like."""
EVIDENCE_NAMES = 10
"""Subject alternative names shown for a certificate (their total is given too)."""


def _endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve: {exc.strerror or exc}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {exc.verify_message or exc.reason}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__


def _no_answer(what: str, exc: BaseException, timeout: float) -> str:
    """The one-line ``ProbeError`` message for a service that did not answer at all."""
    text = _error_text(exc)
    if text == "timed out":
        text = f"timed out after {timeout:g}s"
    return f"no answer from {what}: {text}"


def _soft_deadline(limits: EvidenceLimits) -> float:
    """When describe stops waiting: a little before the engine's deadline, to leave time to answer."""
    left = limits.deadline - time.monotonic()
    return limits.deadline - min(0.2, max(0.0, left) * 0.1)


def _tls_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    if not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=ca_file)


class _Endpoint(Params):
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    timeout: Duration = Field(default=5.0, gt=0, le=86400.0)


# --------------------------------------------------------------------------- tcp


class TcpParams(_Endpoint):
    pass


class TcpProbe:
    """Seconds to complete a TCP connect; raises ``ProbeError`` when it does not complete.

    Refused, no route, or no SYN-ACK within ``timeout`` (a full accept
    queue, a firewall dropping packets) is no answer: the engine reports it
    as this endpoint down (availability probe), so the rule fires on it.
    """

    def __init__(self, params: TcpParams) -> None:
        self._params = params
        self._subject = _endpoint(params.host, params.port)

    def outage_subjects(self) -> list[str]:
        return [self._subject]

    def measure(self) -> list[Reading]:
        p = self._params
        started = time.monotonic()
        try:
            with connect(p.host, p.port, started + p.timeout):
                latency = time.monotonic() - started
        except OSError as exc:
            raise ProbeError(_no_answer(self._subject, exc, p.timeout)) from None
        return [Reading(self._subject, latency, {"up": True})]

    def describe(self, readings: Sequence[Reading], limits: EvidenceLimits) -> dict[str, Any]:
        """A connect to every address the name resolves to, each with its own result: "::1 refused, 127.0.0.1
        connected" tells a dual-stack misconfiguration from a dead service, which one connect cannot."""
        p = self._params
        stop = _soft_deadline(limits)
        section: dict[str, Any] = {"endpoint": self._subject}
        try:
            addresses = socket.getaddrinfo(p.host, p.port, type=socket.SOCK_STREAM)[: limits.max_items]
        except OSError as exc:
            return {"TCP connect": {**section, "error": _error_text(exc)}}
        rows = []
        for index, (family, kind, proto, _name, address) in enumerate(addresses):
            wait = min(p.timeout, (stop - time.monotonic()) / (len(addresses) - index))
            row: dict[str, Any] = {"address": str(address[0])}
            if wait <= 0:
                rows.append({**row, "result": "not tried: no time left (deadline)"})
                continue
            started = time.monotonic()
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(wait)
                try:
                    sock.connect(address)
                    result = "connected"
                except OSError as exc:
                    result = _error_text(exc)
                    if result == "timed out":
                        result = f"timed out after {wait:.2g}s"
            rows.append({**row, "result": result, "elapsed": round(time.monotonic() - started, 4)})
        return {"TCP connect": {**section, "addresses": rows}}


# --------------------------------------------------------------------------- tls certificate


class TlsCertParams(_Endpoint):
    port: int = Field(default=443, ge=1, le=65535)
    server_name: str | None = None
    verify: bool = True
    ca_file: str | None = None


def fetch_certificate(
    host: str, port: int, server_name: str, timeout: float, context: ssl.SSLContext
) -> tuple[bytes, str | None]:
    """The server's leaf certificate (DER) and why it does not verify (None if it does).

    A certificate that fails verification is fetched again without
    verification: an expired certificate is exactly the one whose date we
    must still be able to read.
    """
    try:
        return _handshake(host, port, server_name, timeout, context), None
    except ssl.SSLCertVerificationError as exc:
        why = exc.verify_message or exc.reason or str(exc)
    der = _handshake(host, port, server_name, timeout, _tls_context(False, None))
    return der, why


def _handshake(host: str, port: int, server_name: str, timeout: float, context: ssl.SSLContext) -> bytes:
    deadline = time.monotonic() + timeout
    with connect(host, port, deadline) as raw:
        raw.settimeout(max(0.001, deadline - time.monotonic()))
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("the server sent no certificate")
    return der


class TlsCertProbe:
    """Seconds until the server's certificate expires: ``below: 14d``.

    Negative once expired. A certificate that does not verify (unknown CA,
    wrong host name) reads as at most 0 seconds left: it is already unusable
    for clients, which is what the rule is there to catch. ``verify: false``
    watches only the date. A server that cannot be reached at all is a down
    probe, not a value: there is no date to report.
    """

    def __init__(self, params: TlsCertParams, clock: Clock) -> None:
        self._params = params
        self._clock = clock
        self._context = _tls_context(params.verify, params.ca_file)
        self._subject = _endpoint(params.host, params.port)

    def measure(self) -> list[Reading]:
        p = self._params
        der, why = fetch_certificate(p.host, p.port, p.server_name or p.host, p.timeout, self._context)
        try:
            not_after = validity(der)[1]
        except CertificateError as exc:
            raise CertificateError(f"cannot read the certificate of {self._subject}: {exc}") from exc
        left = not_after - self._clock()
        details: dict[str, Any] = {
            "not_after": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(not_after)),
            "seconds_left": round(left),
            "verify_error": why,
        }
        return [Reading(self._subject, min(left, 0.0) if why else left, details)]

    def describe(self, readings: Sequence[Reading], limits: EvidenceLimits) -> dict[str, Any]:
        """The certificate the server sends now: who it is for, who issued it, its dates, and its names.

        Read from the DER (see ``certificate_facts``), so an expired or
        untrusted certificate, the one a firing rule is about, shows too.
        """
        p = self._params
        timeout = min(p.timeout, (_soft_deadline(limits) - time.monotonic()) / 2)  # two handshakes if unverified
        section: dict[str, Any] = {"endpoint": self._subject, "server_name": p.server_name or p.host}
        if timeout <= 0:
            return {"TLS certificate": {**section, "error": "no time left (deadline)"}}
        try:
            der, why = fetch_certificate(p.host, p.port, p.server_name or p.host, timeout, self._context)
        except OSError as exc:
            return {"TLS certificate": {**section, "error": _no_answer(self._subject, exc, timeout)}}
        section["verify_error"] = why
        try:
            not_before, not_after = validity(der)
            section.update(
                not_before=_iso(not_before), not_after=_iso(not_after), seconds_left=round(not_after - self._clock())
            )
            facts = certificate_facts(der)
        except (CertificateError, IndexError, ValueError) as exc:
            return {"TLS certificate": {**section, "error": f"cannot read the certificate: {exc}"}}
        names = facts.pop("names")
        section.update(facts)
        section.update(names=names[: min(EVIDENCE_NAMES, limits.max_items)], names_total=len(names))
        return {"TLS certificate": section}


def _iso(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


_NAME_KEYS = {
    "2.5.4.3": "CN", "2.5.4.5": "serialNumber", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST",
    "2.5.4.10": "O", "2.5.4.11": "OU", "0.9.2342.19200300.100.1.25": "DC", "1.2.840.113549.1.9.1": "emailAddress",
}
_STRING_CODECS = {
    0x0C: "utf-8", 0x12: "ascii", 0x13: "ascii", 0x14: "latin-1", 0x16: "ascii", 0x1A: "ascii",
    0x1C: "utf-32-be", 0x1E: "utf-16-be",
}
_SUBJECT_ALT_NAME = "2.5.29.17"
_GENERAL_NAMES = {0x81: "email", 0x82: "DNS", 0x86: "URI"}  # [1] rfc822Name, [2] dNSName, [6] URI; [7] is IP
_NAME_CHARS = 200


def _children(der: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(tag, start, end) of each DER element in ``der[start:end]``."""
    at = start
    while at < end:
        tag, content, at = _header(der, at)
        yield tag, content, at


def _oid(raw: bytes) -> str:
    first = min(raw[0] // 40, 2)
    parts = [first, raw[0] - 40 * first]
    value = 0
    for byte in raw[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(str(part) for part in parts)


def _name(der: bytes, start: int, end: int) -> str:
    """An X.501 Name as ``CN=..., O=...``, in the order the certificate stores it (as openssl prints it)."""
    parts = []
    for _set, rdn_start, rdn_end in _children(der, start, end):
        for _seq, attr_start, attr_end in _children(der, rdn_start, rdn_end):
            (_, oid_start, oid_end), (tag, value_start, value_end) = list(_children(der, attr_start, attr_end))[:2]
            oid = _oid(der[oid_start:oid_end])
            value = der[value_start:value_end].decode(_STRING_CODECS.get(tag, "latin-1"), "replace")
            parts.append(f"{_NAME_KEYS.get(oid, oid)}={value}")
    return ", ".join(parts)[:_NAME_CHARS]


def _alt_names(der: bytes, start: int, end: int) -> list[str]:
    """The subjectAltName entries of an ``extensions`` ([3]) element, as ``DNS:host`` / ``IP:addr``."""
    names: list[str] = []
    for _tag, seq_start, seq_end in _children(der, start, end):  # the SEQUENCE OF Extension inside [3]
        for _ext, ext_start, ext_end in _children(der, seq_start, seq_end):
            parts = list(_children(der, ext_start, ext_end))  # extnID, critical (optional), extnValue
            if _oid(der[parts[0][1] : parts[0][2]]) != _SUBJECT_ALT_NAME:
                continue
            _, value_start, _value_end = parts[-1]  # OCTET STRING holding GeneralNames ::= SEQUENCE
            _, names_start, names_end = _header(der, value_start)
            for tag, name_start, name_end in _children(der, names_start, names_end):
                raw = der[name_start:name_end]
                if tag == 0x87:
                    with contextlib.suppress(ValueError):
                        names.append(f"IP:{ipaddress.ip_address(raw)}")
                elif tag in _GENERAL_NAMES:
                    names.append(f"{_GENERAL_NAMES[tag]}:{raw.decode('ascii', 'replace')[:_NAME_CHARS]}")
    return names


def certificate_facts(der: bytes) -> dict[str, Any]:
    """Subject, issuer, serial number and subject alternative names, from a certificate's DER bytes.

    Like ``x509dates`` (whose element reader it uses), a walk of fixed
    steps (RFC 5280 4.1), because ``getpeercert()`` decodes only verified
    certificates. Raises CertificateError (or IndexError) on bytes it cannot walk.
    """
    _, cert_start, cert_end = _header(der, 0)
    _, tbs_start, tbs_end = _header(der, cert_start)
    fields = list(_children(der, tbs_start, min(tbs_end, cert_end)))
    if fields and fields[0][0] == 0xA0:  # [0] version, absent in v1 certificates
        fields = fields[1:]
    serial, _signature, issuer, _validity, subject, _key, *optional = fields
    names = [name for tag, start, end in optional if tag == 0xA3 for name in _alt_names(der, start, end)]
    return {
        "subject": _name(der, subject[1], subject[2]),
        "issuer": _name(der, issuer[1], issuer[2]),
        "serial": der[serial[1] : serial[2]].hex()[:64],
        "names": names,
    }


# --------------------------------------------------------------------------- http


def _status_ranges(value: Any) -> Any:
    """``200``, ``"200-299"``, ``"2xx"`` or a list of them -> list of (low, high)."""
    items = value if isinstance(value, list) else [value]
    ranges = []
    for item in items:
        text = str(item).strip().lower()
        match = re.fullmatch(r"([1-5])xx|(\d{3})(?:\s*-\s*(\d{3}))?", text)
        if match is None or isinstance(item, bool):
            raise ValueError(f"expected a status like 200, 200-299 or 2xx, got {item!r}")
        if match.group(1):
            low = int(match.group(1)) * 100
            ranges.append((low, low + 99))
        else:
            low = int(match.group(2))
            high = int(match.group(3) or low)
            if high < low:
                raise ValueError(f"status range {item!r} ends before it starts")
            ranges.append((low, high))
    return ranges


_STATUS = {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": r"^\s*([1-5]xx|\d{3}(\s*-\s*\d{3})?)\s*$"}]}
StatusRanges = Annotated[
    list[tuple[int, int]],
    BeforeValidator(_status_ranges),
    WithJsonSchema({"anyOf": [_STATUS, {"type": "array", "items": _STATUS}],
                    "description": "statuses: 200, 200-299 or 2xx, or a list of them"}),
]


class HttpParams(Params):
    url: str
    method: Literal["GET", "HEAD"] = "GET"
    timeout: Duration = Field(default=10.0, gt=0, le=86400.0)
    expect_status: StatusRanges = Field(default=[(200, 399)], min_length=1)
    body_regex: str | None = None
    headers: dict[str, str] = {}
    redirects: Literal["none", "same_host", "any"] = "same_host"
    max_redirects: int = Field(default=5, ge=0, le=20)
    verify_tls: bool = True
    ca_file: str | None = None
    max_body: Size = Field(default=1024 * 1024, gt=0, le=2**30)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL with a host, got {value!r}")
        try:
            _ = parts.port
        except ValueError as exc:
            raise ValueError(f"bad port in {value!r}: {exc}") from exc
        return value

    @field_validator("body_regex")
    @classmethod
    def _check_regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name) or any(c in text for c in "\r\n"):
                raise ValueError(f"invalid header {name!r}")
        return value

    @model_validator(mode="after")
    def _check_body(self) -> HttpParams:
        if self.body_regex is not None and self.method == "HEAD":
            raise ValueError("body_regex needs method GET: a HEAD response has no body")
        return self


@dataclass
class _Exchange:
    """What one check saw, hop by hop. ``status`` is the current hop's: None until it answers."""

    url: str
    status: int | None = None
    body: bytes = b""
    location: str | None = None
    cert_der: bytes | None = None
    redirects: list[str] = field(default_factory=list)
    note: str | None = None
    headers: dict[str, str] = field(default_factory=dict)  # EVIDENCE_HEADERS of the current hop's response


class HttpProbe:
    """Seconds for the whole check (redirects and body included); infinite when the answer is wrong.

    Wrong means the final status is not in ``expect_status`` (default
    200-399) or ``body_regex`` does not match the first ``max_body`` bytes.
    No answer at all (refused, timed out, TLS handshake failed, connection
    closed or reset before a status line) raises ``ProbeError`` instead: an
    availability failure the engine reports on this URL (``on_down:
    fire``). So the runbook "health endpoint returns 5xx, takes over 2
    seconds or is gone" is one rule: ``above: 2s``.

    Redirects are followed on the same host only (``redirects: same_host``,
    https -> http downgrades never): a health check that hops to another
    host would be measuring something else. A redirect that is not
    followed is the final response, as curl without ``-L`` shows it.
    """

    def __init__(self, params: HttpParams, clock: Clock) -> None:
        self._params = params
        self._clock = clock
        self._regex = re.compile(params.body_regex.encode()) if params.body_regex else None
        self._context: ssl.SSLContext | None = None  # built on the first https request: ~0.8 MiB each
        self._headers = {"User-Agent": USER_AGENT, "Accept": "*/*", "Connection": "close", **params.headers}

    def outage_subjects(self) -> list[str]:
        return [self._params.url]

    def measure(self) -> list[Reading]:
        p = self._params
        started = time.monotonic()
        deadline = started + p.timeout
        exchange = _Exchange(p.url)
        details: dict[str, Any] = {}
        try:
            self._follow(exchange, deadline)
            failure = self._judge(exchange)
        except (OSError, http.client.HTTPException) as exc:
            if exchange.status is None:  # this hop never answered: not a measurement
                raise ProbeError(self._no_answer(exchange, exc)) from None
            failure = _error_text(exc)  # it answered, then failed (body cut off or too slow, redirect loop)
        elapsed = time.monotonic() - started
        details.update(status=exchange.status, elapsed=round(elapsed, 4))
        if exchange.redirects:
            details.update(redirects=exchange.redirects, final_url=exchange.url)
        if exchange.note:
            details["note"] = exchange.note
        if exchange.cert_der is not None:
            with contextlib.suppress(CertificateError):  # the check is about HTTP; net.tls_cert reports this
                details["cert_seconds_left"] = round(validity(exchange.cert_der)[1] - self._clock())
        if failure is not None:
            details["error"] = failure
            if exchange.body and exchange.status is not None and exchange.status >= 400:
                details["body"] = exchange.body[:ERROR_BODY_EXCERPT].decode("utf-8", "replace")
            return [Reading(p.url, DOWN, details)]
        return [Reading(p.url, elapsed, details)]

    def describe(self, readings: Sequence[Reading], limits: EvidenceLimits) -> dict[str, Any]:
        """The check done again, showing what curl -i would: status, a few headers, the start of the body.

        Same request, redirect policy and TLS settings as ``measure``; the
        wait is the probe's timeout or what is left of the evidence's, the
        shorter. User info and query strings of URLs are left out (unless
        ``show_queries``): that is where credentials and tokens hide.
        """
        p = self._params
        started = time.monotonic()
        exchange = _Exchange(p.url)
        show = limits.show_queries
        section: dict[str, Any] = {"url": _safe_url(p.url, show), "method": p.method}
        try:
            self._follow(exchange, min(started + p.timeout, _soft_deadline(limits)))
            section["verdict"] = self._judge(exchange) or "as expected"
        except (OSError, http.client.HTTPException) as exc:
            prefix = "no answer: " if exchange.status is None else ""
            section["error"] = prefix + _error_text(exc)
        headers = dict(exchange.headers)
        if "location" in headers:
            headers["location"] = _safe_url(urljoin(exchange.url, headers["location"]), show)
        section.update(status=exchange.status, elapsed=round(time.monotonic() - started, 4), headers=headers)
        if exchange.redirects:
            section.update(
                redirects=[_safe_url(url, show) for url in exchange.redirects[: limits.max_items]],
                final_url=_safe_url(exchange.url, show),
            )
        if exchange.note:
            section["note"] = _URL_IN_TEXT.sub(lambda m: _safe_url(m.group(), show), exchange.note)
        head = exchange.body[:EVIDENCE_BODY]
        section["body_bytes_read"] = len(exchange.body)
        section["body_start"] = (
            f"<binary, {len(exchange.body)} bytes>" if b"\0" in head else head.decode("utf-8", "replace")
        )
        return {"HTTP response": section}

    def _no_answer(self, exchange: _Exchange, exc: BaseException) -> str:
        text = _no_answer(exchange.url, exc, self._params.timeout)
        if exchange.redirects:
            text += f" (redirected from {self._params.url})"
        return text

    def _judge(self, exchange: _Exchange) -> str | None:
        assert exchange.status is not None
        if not any(low <= exchange.status <= high for low, high in self._params.expect_status):
            wanted = ", ".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in self._params.expect_status)
            return f"status {exchange.status}, expected {wanted}"
        if self._regex is not None and not self._regex.search(exchange.body):
            return f"body does not match {self._params.body_regex!r}"
        return None

    def _follow(self, exchange: _Exchange, deadline: float) -> None:
        p = self._params
        while True:
            self._request(exchange, p.method, deadline)
            if exchange.status not in REDIRECT_STATUSES or exchange.location is None or p.redirects == "none":
                return
            target = urljoin(exchange.url, exchange.location)
            refusal = self._refuse_redirect(exchange.url, target)
            if refusal is not None:
                exchange.note = f"redirect to {target} not followed: {refusal}"
                return
            if len(exchange.redirects) >= p.max_redirects:
                raise http.client.HTTPException(f"more than {p.max_redirects} redirects")
            exchange.redirects.append(target)
            exchange.url = target

    def _refuse_redirect(self, current: str, target: str) -> str | None:
        old, new = urlsplit(current), urlsplit(target)
        if new.scheme not in ("http", "https") or not new.hostname:
            return "not an http(s) URL"
        if self._params.redirects == "any":
            return None
        if (new.hostname or "").lower() != (old.hostname or "").lower():
            return "another host (set redirects: any to allow)"
        if old.scheme == "https" and new.scheme == "http":
            return "a downgrade from https to http"
        return None

    def _tls(self) -> ssl.SSLContext:
        """The TLS context, loaded once: a plain-http rule never pays for the CA store."""
        if self._context is None:
            self._context = _tls_context(self._params.verify_tls, self._params.ca_file)
        return self._context

    def _open(self, parts: SplitResult, deadline: float) -> http.client.HTTPConnection:
        """A connection whose socket is already connected (and TLS set up) within the deadline.

        Done here rather than by ``http.client``, which would give the
        connect and the handshake each the whole timeout again.
        """
        host = parts.hostname or ""
        https = parts.scheme == "https"
        sock = connect(host, parts.port or (443 if https else 80), deadline)
        context = self._tls() if https else None
        try:
            if context is not None:
                _settimeout(sock, deadline)
                sock = context.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        conn: http.client.HTTPConnection
        if https:  # HTTPSConnection only for its default port in the Host header: the socket is ready
            conn = http.client.HTTPSConnection(host, parts.port, context=context)
        else:
            conn = http.client.HTTPConnection(host, parts.port)
        conn.sock = sock
        return conn

    def _request(self, exchange: _Exchange, method: str, deadline: float) -> None:
        p = self._params
        parts = urlsplit(exchange.url)
        exchange.status = None
        exchange.headers = {}
        if deadline - time.monotonic() <= 0:
            raise TimeoutError("timed out")
        conn = self._open(parts, deadline)
        sock = conn.sock
        assert sock is not None
        path = parts.path or "/"
        if parts.query:
            path += f"?{parts.query}"
        response: http.client.HTTPResponse | None = None
        try:
            if isinstance(sock, ssl.SSLSocket):
                exchange.cert_der = sock.getpeercert(binary_form=True)
            _settimeout(sock, deadline)
            conn.request(method, path, headers=self._headers)
            _settimeout(sock, deadline)
            response = conn.getresponse()
            exchange.status = response.status
            exchange.location = response.getheader("Location")
            exchange.headers = {
                name: value[:ERROR_BODY_EXCERPT]
                for name in EVIDENCE_HEADERS
                if (value := response.getheader(name)) is not None
            }
            exchange.body = b"" if method == "HEAD" else _read_body(response, sock, int(p.max_body), deadline)
        finally:
            if response is not None:
                response.close()  # the response holds the socket open after conn.close()
            conn.close()


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


def _safe_url(url: str, show_queries: bool) -> str:
    """The URL without user info (``user:password@``), and without its query unless ``show_queries``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    query = parts.query if show_queries or not parts.query else "<redacted>"
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _read_body(response: http.client.HTTPResponse, sock: socket.socket, limit: int, deadline: float) -> bytes:
    """Up to ``limit`` bytes of the body, within the deadline even when it trickles in byte by byte.

    ``read1`` does at most one read on the socket, so the deadline is
    checked between reads; ``read(n)`` would loop until it has n bytes.
    """
    body = bytearray()
    while len(body) < limit:
        _settimeout(sock, deadline)
        if deadline - time.monotonic() <= 0:
            raise TimeoutError("timed out")
        chunk = response.read1(min(65536, limit - len(body)))
        if not chunk:
            break
        body += chunk
    return bytes(body)


def _settimeout(sock: socket.socket, deadline: float) -> None:
    """Shrink the socket timeout to what is left of the check before the next wait.

    It bounds each read, not their sum: the status line and headers are read
    by ``http.client`` in several reads, so a server trickling its headers
    byte by byte can still take longer, which the engine's per-rule timeout
    then cuts off. The body is read under the deadline (``_read_body``).
    """
    sock.settimeout(max(0.001, deadline - time.monotonic()))


# --------------------------------------------------------------------------- table


PROBES: dict[str, ProbeSpec] = {
    "net.tcp": ProbeSpec(
        TcpParams, local_probe(lambda params, _clock: TcpProbe(params)), Unit.SECONDS, Cardinality.LOW,
        "TCP connect latency in seconds; the endpoint is down (fires, on_down) when the connect fails",
        availability=True, subjects="endpoint",
    ),
    "net.http": ProbeSpec(
        HttpParams, local_probe(HttpProbe), Unit.SECONDS, Cardinality.LOW,
        "HTTP(S) check latency in seconds; infinite when the status or body is wrong; down (fires, on_down)"
        " when nothing answers",
        availability=True, subjects="endpoint",
    ),
    "net.tls_cert": ProbeSpec(
        TlsCertParams, local_probe(TlsCertProbe), Unit.SECONDS, Cardinality.LOW,
        "seconds until the TLS certificate expires (0 or less when it does not verify)", subjects="endpoint",
    ),
}
