"""Fixtures for the Redis family: private redis-server processes, TLS files, connected targets.

Every server here is our own process on a free port (never the shared
6379), killed at teardown even when the test fails, so tests may change its
config, kill its clients, delete keys and stop it.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.redis.server import REDIS_SERVER, RedisServer, TlsFiles
from watchdogd.families.redis.target import RedisTarget, RedisTargetParams


@pytest.fixture(scope="session", autouse=True)
def _redis_server_binary() -> None:
    if shutil.which(REDIS_SERVER) is None:
        pytest.fail(f"redis-server not found at {REDIS_SERVER}: install the redis-server package", pytrace=False)


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """``make_server(extra=[...])`` starts another private server; all are stopped at teardown."""
    servers: list[RedisServer] = []

    def make(**kwargs: Any) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(servers)}", **kwargs)
        servers.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.close()


@pytest.fixture
def server(make_server: Callable[..., RedisServer]) -> RedisServer:
    return make_server()


@pytest.fixture
def admin(server: RedisServer) -> redis.Redis:
    """A plain client for the test's own setup and checks (not watchdogd's connection)."""
    return server.client()


@pytest.fixture
def make_target() -> Iterator[Callable[..., RedisTarget]]:
    targets: list[RedisTarget] = []

    def make(url: str, **params: Any) -> RedisTarget:
        # No reuse of a shared INFO snapshot: these tests change the server between two measures and check
        # the change at once (test_shared_info.py checks the sharing, with the daemon's own clients).
        target = RedisTarget(RedisTargetParams(url=url, **params), info_max_age=0.0)
        targets.append(target)
        return target

    try:
        yield make
    finally:
        for target in targets:
            target.close()


@pytest.fixture
def target(server: RedisServer, make_target: Callable[..., RedisTarget]) -> RedisTarget:
    return make_target(server.url)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost."""
    directory = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("watchdogd test CA")).issuer_name(name("watchdogd test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        ), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("localhost")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(ca=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption(),
    ))
    files.key.chmod(0o600)
    return files
