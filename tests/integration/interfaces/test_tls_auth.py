"""The endpoint secured the node_exporter way: exporter-toolkit web config with TLS and bcrypt basic auth."""

from __future__ import annotations

import base64
import http.client
import signal
import ssl
from pathlib import Path

import bcrypt
import pytest

from tests.integration.interfaces.conftest import DaemonFactory
from tests.integration.interfaces.support import free_port, self_signed, wait_until

pytestmark = pytest.mark.integration


def web_config(directory: Path, password: str) -> Path:
    """web.yml with a self-signed certificate (made once) and one user, ``prometheus``."""
    cert, key = directory / "server.crt", directory / "server.key"
    if not cert.exists():
        cert, key = self_signed(directory)
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=8)).decode()
    path = directory / "web.yml"
    path.write_text(
        "tls_server_config:\n"
        f"  cert_file: {cert.name}\n"  # relative to web.yml, as in exporter-toolkit
        f"  key_file: {key.name}\n"
        "basic_auth_users:\n"
        f"  prometheus: '{hashed}'\n"
    )
    return path


def https_get(port: int, cafile: Path, path: str, user: str | None = None, password: str | None = None
              ) -> tuple[int, dict[str, str], bytes]:
    context = ssl.create_default_context(cafile=str(cafile))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    headers = {}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_tls_and_basic_auth(start_daemon: DaemonFactory, short_dir: Path) -> None:
    port = free_port()
    web = web_config(short_dir, "right horse")
    daemon = start_daemon(f"""
        interval: 1s
        listen: 127.0.0.1:{port}
        web_config_file: {web}
        rules:
          mem: {{probe: host.memory, above: 0}}
        """)
    started = daemon.wait_for_log("started")
    assert "https, basic auth (1 users)" in started
    cafile = short_dir / "server.crt"

    status, _, body = https_get(port, cafile, "/metrics", "prometheus", "right horse")
    assert status == 200 and b"watchdogd_build_info" in body
    for user, password in (("prometheus", "wrong"), ("eve", "right horse"), (None, None)):
        status, headers, _ = https_get(port, cafile, "/metrics", user, password)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic"), (user, status)
    assert https_get(port, cafile, "/healthz")[0] == 401  # every path is protected, as in node_exporter

    plain = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        plain.request("GET", "/metrics")
        plain.getresponse().read()
    plain.close()

    # A reload swaps the credentials in place, without a restart.
    web_config(short_dir, "new one")
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("reloaded")
    wait_until(lambda: https_get(port, cafile, "/metrics", "prometheus", "new one")[0] == 200, 10, "new password")
    assert https_get(port, cafile, "/metrics", "prometheus", "right horse")[0] == 401
    assert daemon.returncode is None
