"""net.tcp, net.http and net.tls_cert against real local servers, through the daemon and directly."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import run_once, write_config
from tests.integration.services.servers import HttpServer, Route, TlsFiles
from watchdogd.contracts import ProbeError
from watchdogd.families.net.probes import PROBES

pytestmark = pytest.mark.integration

ROUTES = {
    "/ok": Route(200, b'{"status": "ok"}\n'),
    "/error": Route(500, b"upstream database unavailable\n"),
    "/slow": Route(200, b'{"status": "ok"}\n', delay=1.2),
    "/degraded": Route(200, b'{"status": "degraded"}\n'),
    "/moved": Route(302, b"", headers=(("Location", "/ok"),)),
    "/elsewhere": Route(302, b"", headers=(("Location", "http://login.example.invalid/"),)),
}


def probe(kind: str, **params: Any) -> Any:
    spec = PROBES[kind]
    return spec.factory(spec.params.model_validate(params), None, time.time)


def statuses(stdout: str) -> dict[str, str]:
    """``rule: status; ...`` lines of ``--once`` -> {rule: status}."""
    found = {}
    for line in stdout.splitlines():
        name, sep, rest = line.partition(": ")
        if sep and " " not in name:
            found[name] = rest.split(";")[0]
    return found


def test_http_server_answering_500_or_slowly_or_wrong_body_is_found(
    tmp_path: Path, make_http: Callable[..., HttpServer]
) -> None:
    server = make_http(ROUTES)
    rules = "".join(
        f"""
          {name}:
            probe: net.http
            params: {{url: "{server.url(path)}", timeout: 5s{extra}}}
            above: 0.8s
        """
        for name, path, extra in [
            ("healthy", "/ok", ', body_regex: "\\"status\\": \\"ok\\""'),
            ("server-error", "/error", ""),
            ("too-slow", "/slow", ""),
            ("bad-body", "/degraded", ', body_regex: "\\"status\\": \\"ok\\""'),
            ("redirected", "/moved", ""),
        ]
    )
    config = write_config(tmp_path, f"rules:{rules}")
    result = run_once(config)
    assert result.returncode == 1, result.stdout + result.stderr
    assert statuses(result.stdout) == {
        "healthy": "ok", "server-error": "firing", "too-slow": "firing", "bad-body": "firing", "redirected": "ok",
    }, result.stdout
    assert f"subject={server.url('/error')} value=inf" in result.stderr


def test_http_details_say_why(make_http: Callable[..., HttpServer]) -> None:
    server = make_http(ROUTES)
    [error] = probe("net.http", url=server.url("/error")).measure()
    assert math.isinf(error.value)
    assert error.details["status"] == 500
    assert error.details["error"] == "status 500, expected 200-399"
    assert error.details["body"] == "upstream database unavailable\n"
    started = time.monotonic()
    with pytest.raises(ProbeError, match=r"^no answer from .*/slow: timed out after 0.5s$"):
        probe("net.http", url=server.url("/slow"), timeout="0.5s").measure()  # no status line in time
    assert time.monotonic() - started < 1.0
    [ok] = probe("net.http", url=server.url("/ok"), headers={"Host": "app.internal", "X-Check": "1"}).measure()
    assert 0 < ok.value < 1 and ok.details["status"] == 200
    assert server.seen_headers[-1]["Host"] == "app.internal" and server.seen_headers[-1]["X-Check"] == "1"


def test_http_redirects_follow_same_host_only(make_http: Callable[..., HttpServer]) -> None:
    server = make_http(ROUTES)
    [moved] = probe("net.http", url=server.url("/moved")).measure()
    assert moved.details["status"] == 200 and moved.details["redirects"] == [server.url("/ok")]
    [elsewhere] = probe("net.http", url=server.url("/elsewhere")).measure()
    assert elsewhere.details["status"] == 302  # not followed off-host: the redirect is the answer
    assert "not followed: another host" in elsewhere.details["note"]
    [strict] = probe("net.http", url=server.url("/moved"), redirects="none", expect_status="2xx").measure()
    assert math.isinf(strict.value) and strict.details["error"] == "status 302, expected 200-299"


def test_certificate_about_to_expire_is_found(
    tmp_path: Path, make_http: Callable[..., HttpServer], expiring_tls: TlsFiles
) -> None:
    server = make_http(ROUTES, tls=expiring_tls)
    ca = expiring_tls.ca
    config = write_config(tmp_path, f"""
        rules:
          cert-renew:
            probe: net.tls_cert
            params: {{port: {server.port}, server_name: localhost, ca_file: "{ca}"}}
            below: 14d
          cert-expired:
            probe: net.tls_cert
            params: {{port: {server.port}, server_name: localhost, ca_file: "{ca}"}}
            below: 1d
          https-health:
            probe: net.http
            params: {{url: "{server.url('/ok')}", ca_file: "{ca}"}}
            above: 2s
        """)
    result = run_once(config)
    assert statuses(result.stdout) == {"cert-renew": "firing", "cert-expired": "ok", "https-health": "ok"}, (
        result.stdout + result.stderr
    )
    left = (expiring_tls.not_after - dt.datetime.now(dt.UTC)).total_seconds()
    [reading] = probe("net.tls_cert", port=server.port, server_name="localhost", ca_file=str(ca)).measure()
    assert reading.value == pytest.approx(left, abs=60)
    assert reading.details["verify_error"] is None
    [https] = probe("net.http", url=server.url("/ok"), ca_file=str(ca)).measure()
    assert https.details["cert_seconds_left"] == pytest.approx(left, abs=60)


def test_untrusted_certificate(make_http: Callable[..., HttpServer], expiring_tls: TlsFiles) -> None:
    server = make_http(ROUTES, tls=expiring_tls)
    [cert] = probe("net.tls_cert", port=server.port, server_name="localhost").measure()
    assert cert.value == 0.0  # days are left, but no client would accept it
    assert "certificate" in cert.details["verify_error"] and cert.details["seconds_left"] > 86400
    [only_date] = probe("net.tls_cert", port=server.port, verify=False).measure()
    assert only_date.value > 86400
    with pytest.raises(ProbeError, match="no answer from .*: TLS certificate not trusted"):
        probe("net.http", url=server.url("/ok")).measure()  # the handshake failed: nothing was asked
    [unverified] = probe("net.http", url=server.url("/ok"), verify_tls=False).measure()
    assert unverified.details["status"] == 200


def test_closed_port_is_found_by_net_tcp(
    tmp_path: Path, closed_port: int, make_http: Callable[..., HttpServer]
) -> None:
    listening = make_http(ROUTES)
    config = write_config(tmp_path, f"""
        rules:
          port-closed:
            probe: net.tcp
            params: {{port: {closed_port}, timeout: 2s}}
            above: 1s
          port-open:
            probe: net.tcp
            params: {{host: localhost, port: {listening.port}}}
            above: 1s
        """)
    result = run_once(config)
    assert result.returncode == 1
    assert statuses(result.stdout) == {"port-closed": "firing", "port-open": "ok"}, result.stdout
    with pytest.raises(ProbeError, match=rf"^no answer from 127.0.0.1:{closed_port}: Connection refused$"):
        probe("net.tcp", port=closed_port).measure()
    assert PROBES["net.tcp"].availability  # so the engine turns that into a breach of the endpoint
    assert probe("net.tcp", port=closed_port).outage_subjects() == [f"127.0.0.1:{closed_port}"]
