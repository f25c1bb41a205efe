"""The HTTP side: web config parsing (exporter-toolkit format), basic auth, listen parsing, routes."""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from tests.integration.interfaces.support import self_signed
from tests.unit.test_exporter import rule, snapshot
from watchdogd import httpserver
from watchdogd.exporter import Exposition, build_registry
from watchdogd.httpserver import (
    BasicAuth,
    ListenError,
    MetricsServer,
    WebConfig,
    WebConfigError,
    load_web_config,
    parse_listen,
)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def hashed(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "web.yml"
    path.write_text(text)
    return str(path)


# --------------------------------------------------------------------------- web config


def test_no_file_means_plain_http_without_auth() -> None:
    web = load_web_config(None)
    assert web.tls is None and not web.users


def test_basic_auth_users_and_headers(tmp_path: Path) -> None:
    web = load_web_config(write(tmp_path, f"""
basic_auth_users:
  prometheus: '{hashed("s3cret")}'
http_server_config:
  http2: true
  headers: {{X-Frame-Options: deny}}
"""))
    assert set(web.users) == {"prometheus"}
    assert web.headers == {"X-Frame-Options": "deny"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tls_server_config: {cert_file: a.pem}", "tls_server_config.key_file: required"),
        (
            "tls_server_config: {cipher_suites: [TLS_AES_128_GCM_SHA256]}",
            "tls_server_config.cipher_suites: not supported",
        ),
        ("tls_server_config: {client_allowed_sans: [x]}", "client_allowed_sans: not supported"),
        ("tls_srever_config: {}", "tls_srever_config: unknown key"),
        ("tls_server_config: {cert_flie: x}", "tls_server_config.cert_flie: unknown key"),
        ("basic_auth_users: {bob: plaintext}", "basic_auth_users.bob: expected a bcrypt hash"),
        ("basic_auth_users: [bob]", "basic_auth_users: expected a mapping"),
        ("- a list", "must be a mapping"),
        ("key: [unclosed", "not valid YAML"),
        ("tls_server_config: {cert_file: nope.pem, key_file: nope.key}", "cannot load nope.pem"),
    ],
)
def test_bad_web_config_names_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)
    message = str(caught.value)
    assert message.startswith(path) and expected in message and "\n" not in message


def test_missing_web_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WebConfigError, match="cannot read web config"):
        load_web_config(str(tmp_path / "absent.yml"))


def test_non_verifying_client_auth_is_refused_with_a_hint(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    path = write(tmp_path, f"tls_server_config: {{cert_file: {cert.name}, key_file: {key.name}, "
                           "client_auth_type: RequireAnyClientCert}")
    with pytest.raises(WebConfigError, match="always verifies client certificates"):
        load_web_config(path)


def test_tls_paths_are_relative_to_the_web_config_file(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    web = load_web_config(write(tmp_path, f"tls_server_config: {{cert_file: {cert.name}, key_file: {key.name}}}"))
    assert isinstance(web.tls, ssl.SSLContext)
    assert web.tls.minimum_version is ssl.TLSVersion.TLSv1_2


# --------------------------------------------------------------------------- basic auth


def test_basic_auth_accepts_right_and_rejects_wrong_credentials() -> None:
    auth = BasicAuth({"prom": hashed("right").encode()})
    assert auth.check(basic("prom", "right"))
    assert auth.check(basic("prom", "right"))  # cached path
    assert not auth.check(basic("prom", "wrong"))
    assert not auth.check(basic("eve", "right"))
    assert not auth.check(None)
    assert not auth.check("Basic !!!notbase64")
    assert not auth.check("Bearer abc")
    assert not auth.check("Basic " + base64.b64encode(b"no-colon").decode())
    assert BasicAuth({}).check(None)


# --------------------------------------------------------------------------- listen


def test_parse_listen_forms() -> None:
    assert parse_listen("127.0.0.1:9469") == (socket.AF_INET, ("127.0.0.1", 9469))
    assert parse_listen("[::1]:9469")[0] == socket.AF_INET6
    assert parse_listen(":9469") == (socket.AF_INET6, ("::", 9469))
    for bad in ("9469", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000"):
        with pytest.raises(ListenError, match="listen"):
            parse_listen(bad)


def test_taken_port_is_a_listen_error() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        exposition = Exposition(build_registry(lambda: snapshot(rule()), "1", process=False))
        with pytest.raises(ListenError, match=f"cannot bind 127.0.0.1:{port}"):
            MetricsServer(f"127.0.0.1:{port}", WebConfig(), exposition, lambda: (True, "ok"))
    finally:
        holder.close()


# --------------------------------------------------------------------------- routes


@pytest.fixture
def server() -> Iterator[tuple[MetricsServer, list[tuple[bool, str]]]]:
    health = [(True, "ok: 1 rules running")]
    exposition = Exposition(build_registry(lambda: snapshot(rule()), "1", process=False))
    srv = MetricsServer("127.0.0.1:0", WebConfig(headers={"X-Test": "yes"}), exposition, lambda: health[0])
    srv.start()
    try:
        yield srv, health
    finally:
        srv.close()


def get(srv: MetricsServer, path: str, method: str = "GET", headers: dict[str, str] | None = None
        ) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection(*srv.address, timeout=10)
    conn.request(method, path, headers=headers or {})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def test_routes(server: tuple[MetricsServer, list[tuple[bool, str]]]) -> None:
    srv, health = server
    conn = http.client.HTTPConnection(*srv.address, timeout=10)
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200 and b"watchdogd_rule_firing" in body
    assert response.getheader("Content-Type", "").startswith("text/plain; version=0.0.4")
    assert response.getheader("X-Test") == "yes"
    conn.request("GET", "/healthz")  # same keep-alive connection
    response = conn.getresponse()
    assert response.status == 200 and response.read() == b"ok: 1 rules running\n"
    conn.close()
    health[0] = (False, "1 rule(s) did not run within two intervals: disk-full")
    assert get(srv, "/healthz").status == 503
    assert get(srv, "/nope").status == 404
    assert get(srv, "/metrics", "HEAD").status == 200
    assert get(srv, "/metrics", "POST").status == 501
    assert get(srv, "/metrics", headers={"Accept-Encoding": "gzip"}).getheader("Content-Encoding") == "gzip"


def test_garbage_on_the_http_port_does_not_stop_the_server(
    server: tuple[MetricsServer, list[tuple[bool, str]]],
) -> None:
    srv, _ = server
    with socket.create_connection(srv.address, timeout=5) as raw:
        raw.sendall(b"\x00\xff garbage\r\n\r\n")
        raw.recv(1024)
    assert get(srv, "/healthz").status == 200


def test_a_trickling_client_is_cut_at_the_request_deadline(
    server: tuple[MetricsServer, list[tuple[bool, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(httpserver, "REQUEST_DEADLINE", 1.0)
    srv, _ = server
    started = time.monotonic()
    with socket.create_connection(srv.address, timeout=5) as raw:
        raw.sendall(b"GET /metrics HTTP/1.1\r\n")
        closed = False
        while time.monotonic() - started < 6:
            try:
                raw.sendall(b"X")  # one header byte at a time: each read succeeds, the request never ends
            except OSError:
                closed = True
                break
            raw.settimeout(0.3)
            try:
                if raw.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
        assert closed, "the server kept a trickling client forever"
    assert time.monotonic() - started < 4
    assert get(srv, "/healthz").status == 200
