"""The HTTP side: web config parsing (exporter-toolkit format), basic auth, listen parsing, routes."""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest

from tests.integration.interfaces.support import self_signed
from tests.unit.test_exporter import rule, snapshot
from watchdogd.faces.exporter import Exposition, build_registry
from watchdogd.faces.httpserver import (
    BasicAuth,
    HttpLimits,
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
    assert parse_listen("127.0.0.1:19469") == (socket.AF_INET, ("127.0.0.1", 19469))
    assert parse_listen("[::1]:19469")[0] == socket.AF_INET6
    assert parse_listen(":19469") == (socket.AF_INET6, ("::", 19469))
    for bad in ("19469", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000"):
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


def test_a_trickling_client_is_cut_at_the_head_deadline() -> None:
    srv = start_server(HttpLimits(head_deadline=1.0))
    try:
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
        assert time.monotonic() - started < 3
        assert get(srv, "/healthz").status == 200
    finally:
        srv.close()


def start_server(limits: HttpLimits | None = None) -> MetricsServer:
    exposition = Exposition(build_registry(lambda: snapshot(rule()), "1", process=False))
    srv = MetricsServer("127.0.0.1:0", WebConfig(), exposition, lambda: (True, "ok"), limits)
    srv.start()
    return srv


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def closed_by_server(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1024) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_sixty_four_silent_and_trickling_connections_do_not_starve_scrapes() -> None:
    """Issue 20: 64 slow-loris connections took all 32 thread slots and 1 scrape in 39 got through."""
    srv = start_server()
    holders: list[socket.socket] = []
    try:
        for index in range(64):
            sock = socket.create_connection(srv.address, timeout=5)
            if index % 2:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow: ")  # a head that never ends
            holders.append(sock)
        wait_for(lambda: sum(n for n, _ in srv.admission.counts().values()) >= 64, 5, "64 connections accepted")
        for _ in range(10):
            started = time.monotonic()
            assert get(srv, "/metrics").status == 200
            assert time.monotonic() - started < 1.0
    finally:
        for sock in holders:
            sock.close()
        srv.close()


def test_a_source_keeps_only_a_few_stalled_connections_and_the_oldest_go_first() -> None:
    srv = start_server(HttpLimits(stall_grace=0.2, stalled_per_source=4))
    holders: list[socket.socket] = []
    try:
        for _ in range(12):
            holders.append(socket.create_connection(srv.address, timeout=5))
            time.sleep(0.01)  # distinct ages
        wait_for(lambda: sum(closed_by_server(sock) for sock in holders) == 8, 5, "8 stalled connections cut")
        assert [closed_by_server(sock) for sock in holders] == [True] * 8 + [False] * 4
        assert srv.admission.counts() == {"127.0.0.1": (4, 4)}
        assert get(srv, "/healthz").status == 200
    finally:
        for sock in holders:
            sock.close()
        srv.close()


def test_at_the_connection_cap_a_newcomer_evicts_the_oldest_silent_connection() -> None:
    srv = start_server(HttpLimits(max_connections=8, stall_grace=30))
    holders: list[socket.socket] = []
    try:
        for _ in range(8):
            holders.append(socket.create_connection(srv.address, timeout=5))
        wait_for(lambda: srv.admission.counts().get("127.0.0.1") == (8, 8), 5, "8 connections seated")
        assert get(srv, "/metrics").status == 200
        wait_for(lambda: closed_by_server(holders[0]), 5, "the oldest connection evicted")
        assert not any(closed_by_server(sock) for sock in holders[1:])
    finally:
        for sock in holders:
            sock.close()
        srv.close()


def test_an_oversized_head_gets_431_and_keep_alive_idles_out() -> None:
    srv = start_server(HttpLimits(keepalive_idle=0.5, max_head=4096))
    try:
        with socket.create_connection(srv.address, timeout=5) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"a" * 5000 + b"\r\n\r\n")
            assert raw.recv(1024).startswith(b"HTTP/1.1 431 ")
        conn = http.client.HTTPConnection(*srv.address, timeout=5)
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() == b"ok\n"
        sock = conn.sock
        assert sock is not None
        started = time.monotonic()
        sock.settimeout(5)
        assert sock.recv(1) == b""  # the server closed the idle keep-alive connection
        assert 0.3 < time.monotonic() - started < 3
        conn.close()
    finally:
        srv.close()


def test_an_idle_keep_alive_connection_lasts_the_configured_idle_time() -> None:
    """Issue 17: connections idle 10 s were closed, so a 15 s Prometheus reconnected at every scrape.

    Scaled down: a 2 s setting keeps a connection idle for 1 s (longer than the 0.5 s a shorter
    setting would allow), the next request goes over the same socket, and only 2 s of idling ends it.
    """
    srv = start_server(HttpLimits(keepalive_idle=2.0))
    try:
        conn = http.client.HTTPConnection(*srv.address, timeout=5)
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() == b"ok\n"
        sock = conn.sock
        assert sock is not None
        sock.settimeout(1.0)
        with pytest.raises(TimeoutError):
            sock.recv(1)  # 1 s idle: the server has not closed it
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        assert response.status == 200 and b"watchdogd_rule_firing" in response.read()
        assert conn.sock is sock  # the same connection, not a reconnect
        started = time.monotonic()
        sock.settimeout(5)
        assert sock.recv(1) == b""  # idle past the setting: closed
        assert 1.5 < time.monotonic() - started < 4
        conn.close()
    finally:
        srv.close()


def test_a_reload_changes_the_idle_time_of_open_connections() -> None:
    srv = start_server(HttpLimits(keepalive_idle=60.0))
    try:
        conn = http.client.HTTPConnection(*srv.address, timeout=5)
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() == b"ok\n"
        srv.update(srv.web, keepalive_idle=0.3)
        conn.request("GET", "/healthz")  # its next idle wait uses the new setting
        assert conn.getresponse().read() == b"ok\n"
        sock = conn.sock
        assert sock is not None
        sock.settimeout(5)
        started = time.monotonic()
        assert sock.recv(1) == b""
        assert time.monotonic() - started < 3
        conn.close()
    finally:
        srv.close()


def test_the_default_idle_time_outlasts_a_usual_scrape_interval() -> None:
    assert HttpLimits().keepalive_idle >= 60.0


def test_bcrypt_is_loaded_only_where_basic_auth_is_on() -> None:
    """0.4 MiB of RSS (issue 17): a daemon serving /metrics without users never imports it."""
    code = (
        "import sys\n"
        "from watchdogd.faces.httpserver import BasicAuth\n"
        "assert BasicAuth({}).check(None)\n"
        "assert 'bcrypt' not in sys.modules, 'imported without users'\n"
        "assert not BasicAuth({'bob': b'$2b$04$' + b'a' * 53}).check('Basic Ym9iOng=')\n"
        "assert 'bcrypt' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
