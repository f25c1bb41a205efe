"""Evidence of the net and log probes (``describe``): local HTTP(S) servers, real sockets, real log files.

The servers are the service family's own test servers
(``tests/integration/services/servers.py``), on 127.0.0.1 ports the kernel
picks. Certificates are made with ``cryptography`` and read back by our DER
walker, so the two must agree.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.services.servers import HttpServer, Route, TlsFiles, make_tls
from watchdogd.contracts import Describes, EvidenceLimits, Reading
from watchdogd.families.logs.probes import KEPT_LINE_CHARS, KEPT_LINES, Chunk, CountProbe, LogParams
from watchdogd.families.logs.probes import PROBES as LOGS
from watchdogd.families.net.probes import PROBES as NET
from watchdogd.families.net.probes import _safe_url, certificate_facts


def limits(seconds: float = 2.0, **kwargs: Any) -> EvidenceLimits:
    return EvidenceLimits(deadline=time.monotonic() + seconds, max_bytes=kwargs.pop("max_bytes", 64 * 1024), **kwargs)


def make(table: dict[str, Any], kind: str, clock: Any = time.time, **params: Any) -> Any:
    spec = table[kind]
    return spec.factory(spec.params.model_validate(params), None, clock)


def size(sections: dict[str, Any]) -> int:
    return len(json.dumps(sections))


@pytest.fixture
def make_http() -> Iterator[Callable[..., HttpServer]]:
    servers: list[HttpServer] = []

    def start(routes: dict[str, Route], tls: TlsFiles | None = None) -> HttpServer:
        server = HttpServer(routes, tls.server_context() if tls else None)
        servers.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in servers:
            server.close()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_every_net_and_log_probe_describes(tmp_path: Path) -> None:
    for kind, params in [
        ("net.tcp", {"port": 1}), ("net.http", {"url": "http://x/"}), ("net.tls_cert", {}),
        ("log.matches", {"path": str(tmp_path / "a.log"), "pattern": "x"}),
        ("log.count", {"unit": "ssh.service", "pattern": "x"}),
    ]:
        table = NET if kind.startswith("net.") else LOGS
        assert isinstance(make(table, kind, **params), Describes), kind


# --------------------------------------------------------------------------- net.http


def test_http_evidence_shows_status_some_headers_and_the_start_of_the_body(make_http: Any) -> None:
    page = b"<html><h1>503</h1>database is down: connection refused" + b"." * 4000 + b"</html>"
    server = make_http({"/health": Route(503, page, headers=(
        ("Content-Type", "text/html; charset=utf-8"), ("Set-Cookie", "session=s3cret"), ("Retry-After", "30"),
    ))})
    probe = make(NET, "net.http", url=server.url("/health"), headers={"Authorization": "Bearer t0ken"})
    readings = probe.measure()
    started = time.monotonic()
    sections = probe.describe(readings, limits())
    elapsed = time.monotonic() - started
    response = sections["HTTP response"]
    assert response["status"] == 503
    assert response["verdict"] == "status 503, expected 200-399"
    assert response["headers"]["content-type"] == "text/html; charset=utf-8"
    assert response["headers"]["server"].startswith("BaseHTTP")
    assert response["headers"]["retry-after"] == "30"
    assert response["body_start"].startswith("<html><h1>503</h1>database is down")
    assert len(response["body_start"]) == 1024
    assert response["body_bytes_read"] == len(page)
    assert 0 < response["elapsed"] < 1
    text = json.dumps(sections)
    assert "s3cret" not in text and "t0ken" not in text  # no cookies, no request headers
    print(f"net.http describe: {elapsed * 1000:.1f} ms, {size(sections)} bytes")


def test_http_evidence_keeps_credentials_and_queries_out_of_urls(make_http: Any) -> None:
    server = make_http({"/go": Route(302, b"", headers=(("Location", "http://elsewhere.invalid/x?token=abc"),))})
    url = server.url("/go?key=hunter2").replace("http://", "http://admin:pw@")
    sections = make(NET, "net.http", url=url).describe([], limits())
    response = sections["HTTP response"]
    assert response["url"] == f"http://127.0.0.1:{server.port}/go?<redacted>"
    assert response["status"] == 302
    assert response["headers"]["location"] == "http://elsewhere.invalid/x?<redacted>"
    assert response["note"].startswith("redirect to http://elsewhere.invalid/x?<redacted> not followed")
    text = json.dumps(sections)
    assert "hunter2" not in text and "abc" not in text and "pw@" not in text
    shown = make(NET, "net.http", url=url).describe([], limits(show_queries=True))["HTTP response"]
    assert shown["url"].endswith("/go?key=hunter2") and "pw@" not in shown["url"]


def test_http_evidence_of_a_binary_body_and_of_no_answer(make_http: Any, closed_port: int) -> None:
    server = make_http({"/img": Route(200, b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(range(256)))})
    ok = make(NET, "net.http", url=server.url("/img")).describe([], limits())["HTTP response"]
    assert ok["verdict"] == "as expected" and ok["body_start"] == "<binary, 266 bytes>"
    down = make(NET, "net.http", url=f"http://127.0.0.1:{closed_port}/").describe([], limits())["HTTP response"]
    assert down["error"] == "no answer: Connection refused"
    assert down["status"] is None and down["headers"] == {}


def test_http_evidence_stops_at_the_deadline(make_http: Any) -> None:
    server = make_http({"/slow": Route(200, b"late", delay=3.0)})
    probe = make(NET, "net.http", url=server.url("/slow"), timeout="10s")
    started = time.monotonic()
    response = probe.describe([], limits(0.5))["HTTP response"]
    assert time.monotonic() - started < 0.5
    assert response["error"] == "no answer: timed out"


def test_safe_url() -> None:
    assert _safe_url("https://u:p@[::1]:8443/a/b?x=1#frag", False) == "https://[::1]:8443/a/b?<redacted>"
    assert _safe_url("http://host/a", False) == "http://host/a"
    assert _safe_url("http://host:99999/a", True) == "http://host/a"


# --------------------------------------------------------------------------- net.tcp


def test_tcp_evidence_tries_every_address(make_http: Any, closed_port: int) -> None:
    server = make_http({})
    up = make(NET, "net.tcp", host="127.0.0.1", port=server.port).describe([], limits())["TCP connect"]
    assert up["endpoint"] == f"127.0.0.1:{server.port}"
    [row] = up["addresses"]
    assert row["address"] == "127.0.0.1" and row["result"] == "connected" and row["elapsed"] < 1
    probe = make(NET, "net.tcp", host="localhost", port=closed_port)
    down = probe.describe([], limits())["TCP connect"]
    expected = {str(info[4][0]) for info in socket.getaddrinfo("localhost", closed_port, type=socket.SOCK_STREAM)}
    assert {row["address"] for row in down["addresses"]} == expected
    assert all(row["result"] in {"Connection refused", "Cannot assign requested address"} for row in down["addresses"])


def test_tcp_evidence_of_a_name_that_does_not_resolve() -> None:
    down = make(NET, "net.tcp", host="nothing.invalid", port=80).describe([], limits())["TCP connect"]
    assert down["error"].startswith("cannot resolve")


# --------------------------------------------------------------------------- net.tls_cert


def test_tls_evidence_names_subject_issuer_and_names_even_when_untrusted(make_http: Any, tmp_path: Path) -> None:
    tls = make_tls(tmp_path, expires_in=dt.timedelta(days=3))
    server = make_http({"/": Route()}, tls)
    untrusted = make(NET, "net.tls_cert", host="127.0.0.1", port=server.port)
    started = time.monotonic()
    sections = untrusted.describe(untrusted.measure(), limits())
    elapsed = time.monotonic() - started
    cert = sections["TLS certificate"]
    assert cert["subject"] == "CN=localhost"
    assert cert["issuer"] == "CN=watchdogd test CA"
    assert cert["names"] == ["DNS:localhost", "IP:127.0.0.1"] and cert["names_total"] == 2
    assert cert["not_after"] == tls.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert 2 * 86400 < cert["seconds_left"] <= 3 * 86400
    assert cert["verify_error"]  # our CA is not in the system store
    trusted = make(NET, "net.tls_cert", host="127.0.0.1", port=server.port, ca_file=str(tls.ca),
                   server_name="localhost")
    assert trusted.describe([], limits())["TLS certificate"]["verify_error"] is None
    print(f"net.tls_cert describe: {elapsed * 1000:.1f} ms, {size(sections)} bytes")


def test_tls_evidence_of_a_port_that_does_not_answer(closed_port: int) -> None:
    cert = make(NET, "net.tls_cert", host="127.0.0.1", port=closed_port).describe([], limits())["TLS certificate"]
    assert cert["error"].endswith("Connection refused")


def _certificate(names: list[x509.GeneralName] | None, subject: x509.Name, issuer: x509.Name) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(issuer).public_key(key.public_key())
        .serial_number(0x1234ABCD).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
    )
    if names is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=True)
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_certificate_facts_agree_with_cryptography() -> None:
    subject = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bäckerei Müller GmbH"),
        x509.NameAttribute(NameOID.COMMON_NAME, "*.example.org"),
    ])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example CA"),
                        x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "example")])
    names: list[x509.GeneralName] = [x509.DNSName(f"h{i}.example.org") for i in range(30)]
    names += [x509.IPAddress(ipaddress.ip_address("2001:db8::1")), x509.RFC822Name("ops@example.org"),
              x509.UniformResourceIdentifier("https://example.org/")]
    der = _certificate(names, subject, issuer)
    facts = certificate_facts(der)
    assert facts["subject"] == "C=DE, O=Bäckerei Müller GmbH, CN=*.example.org"
    assert facts["issuer"] == "CN=Example CA, DC=example"
    assert facts["serial"] == "1234abcd"
    san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert facts["names"][:30] == [f"DNS:{name}" for name in san.get_values_for_type(x509.DNSName)]
    assert facts["names"][30:] == ["IP:2001:db8::1", "email:ops@example.org", "URI:https://example.org/"]


def test_certificate_facts_without_extensions() -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bare")])
    assert certificate_facts(_certificate(None, name, name))["names"] == []


# --------------------------------------------------------------------------- logs


def test_log_evidence_keeps_the_last_matched_lines_of_a_file(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    now = [1_700_000_000.0]
    probe = make(LOGS, "log.count", clock=lambda: now[0], path=str(log), pattern="ERROR")
    assert probe.describe([], limits())["last matching lines (oldest first)"] == []
    probe.measure()
    with log.open("a") as handle:
        for i in range(50):
            handle.write(f"INFO request {i} fine\n")
            handle.write(f"ERROR request {i} failed: " + "x" * 500 + "\n")
    now[0] += 10
    [reading] = probe.measure()
    started = time.monotonic()
    sections = probe.describe([reading], limits(max_items=5))
    elapsed = time.monotonic() - started
    lines = sections["last matching lines (oldest first)"]
    assert [row["line"].split(":")[0] for row in lines] == [f"ERROR request {i} failed" for i in range(45, 50)]
    assert all(len(row["line"]) == KEPT_LINE_CHARS for row in lines)
    assert all(row["time"] == "2023-11-14T22:13:30Z" for row in lines)  # when the probe read them
    source = sections["log"]
    assert source["path"] == str(log) and source["matches"] == 50 and source["pattern"] == "ERROR"
    assert source["size_bytes"] == log.stat().st_size
    everything = probe.describe([reading], limits(max_items=100))["last matching lines (oldest first)"]
    assert len(everything) == KEPT_LINES  # what the probe keeps, however much was asked
    assert everything[-1]["line"].startswith("ERROR request 49 ")
    assert "INFO" not in json.dumps(sections)
    print(f"log.count describe: {elapsed * 1000:.2f} ms, {size(sections)} bytes")


def test_log_evidence_fits_max_bytes_dropping_the_oldest(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    probe = make(LOGS, "log.matches", path=str(log), pattern="ERROR")
    probe.measure()
    log.write_text("".join(f"ERROR {i} " + "y" * 300 + "\n" for i in range(20)))
    probe.measure()
    sections = probe.describe([], limits(max_bytes=1500))
    assert size(sections) <= 1500
    lines = sections["last matching lines (oldest first)"]
    assert 0 < len(lines) < 20 and lines[-1]["line"].startswith("ERROR 19 ")
    assert "cut short" in sections


class _Journal:
    """A journal source with the entries' own timestamps, as ``JournalSource`` returns them."""

    def __init__(self) -> None:
        self.lines: list[tuple[float | None, str]] = []

    def read(self, now: float, window: float) -> Chunk:
        lines, self.lines = self.lines, []
        return Chunk(lines, [])


def test_log_evidence_of_a_journal_keeps_the_journal_times() -> None:
    journal = _Journal()
    probe = CountProbe(LogParams(unit="app.service", pattern="panic"), lambda: 1_700_000_100.0, source=journal)
    journal.lines = [(1_700_000_001.0, "panic: nil map"), (1_700_000_002.0, "all good"), (1_700_000_003.0, "panic!")]
    [reading] = probe.measure()
    sections = probe.describe([reading], limits())
    assert sections["last matching lines (oldest first)"] == [
        {"time": "2023-11-14T22:13:21Z", "line": "panic: nil map"},
        {"time": "2023-11-14T22:13:23Z", "line": "panic!"},
    ]
    assert sections["log"]["unit"] == "app.service" and sections["log"]["line_times"] == "journal timestamps"
    assert sections["log"]["matches"] == 2


def test_reading_for_the_subject_is_optional(tmp_path: Path) -> None:
    log = tmp_path / "gone.log"
    probe = make(LOGS, "log.count", path=str(log), pattern="x")
    assert probe.describe([Reading(str(log), 1.0, {})], limits())["log"]["error"].startswith("cannot stat")
