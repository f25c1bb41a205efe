"""The Redis target against real servers: TLS, unix socket, ACL users, secrets, backoff, pooling."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from pydantic import ValidationError

from tests.integration.redis.server import RedisServer, TlsFiles, wait_until
from watchdogd.families.redis.actions import ACTIONS
from watchdogd.families.redis.probes import PROBES
from watchdogd.families.redis.target import RedisTarget, RedisTargetParams, RedisUnavailable

pytestmark = pytest.mark.integration


def watchdogd_clients(admin: redis.Redis) -> list[dict[str, str]]:
    return [c for c in admin.client_list() if c["name"] == "watchdogd"]


def test_connections_are_named_watchdogd_and_bounded_by_max_connections(
    server: RedisServer, admin: redis.Redis, make_target: Callable[..., RedisTarget]
) -> None:
    target = make_target(server.url, max_connections=2)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                target.command("PING")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    mine = watchdogd_clients(admin)
    assert 1 <= len(mine) <= 2


def test_tls_with_the_ca_file(
    make_server: Callable[..., RedisServer], tls_files: TlsFiles, make_target: Callable[..., RedisTarget]
) -> None:
    server = make_server(tls=tls_files)
    assert server.url.startswith("rediss://")
    target = make_target(server.url, tls_ca_file=str(tls_files.ca))
    assert target.command("PING") is True
    assert "(tls)" in target.name


def test_tls_refuses_an_unknown_ca_unless_told_to_skip_verification(
    make_server: Callable[..., RedisServer], tls_files: TlsFiles, make_target: Callable[..., RedisTarget]
) -> None:
    server = make_server(tls=tls_files)
    untrusted = make_target(server.url)
    with pytest.raises(RedisUnavailable, match="certificate verify failed"):
        untrusted.command("PING")
    insecure = make_target(server.url, tls_insecure_skip_verify=True)
    assert insecure.command("PING") is True


def test_unix_socket_url_with_a_database(
    make_server: Callable[..., RedisServer], tmp_path: Path, make_target: Callable[..., RedisTarget]
) -> None:
    sock = tmp_path / "redis.sock"
    server = make_server(unixsocket=sock)
    server.client().set("in-db-2", "yes")  # db 0: must not be what the target sees
    server.client(db=2).set("in-db-2", "two")
    target = make_target(f"unix://{sock}?db=2")
    assert target.command("GET", "in-db-2") == b"two"
    assert "unix:" in target.name


def test_acl_user_with_password_from_a_file_and_from_the_environment(
    server: RedisServer, admin: redis.Redis, tmp_path: Path, make_target: Callable[..., RedisTarget],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin.acl_setuser("watcher", enabled=True, passwords=["+s3cret-pw"], commands=["+@all"], keys=["*"])
    secret = tmp_path / "redis.pw"
    secret.write_text("s3cret-pw\n")
    secret.chmod(0o600)
    from_file = make_target(server.url, username="watcher", password_file=str(secret))
    assert from_file.command("ACL", "WHOAMI") == b"watcher"
    monkeypatch.setenv("WATCHDOGD_TEST_REDIS_PW", "s3cret-pw")
    from_env = make_target(server.url, username="watcher", password_env="WATCHDOGD_TEST_REDIS_PW")
    assert from_env.command("ACL", "WHOAMI") == b"watcher"


def test_wrong_password_is_a_clear_unavailable_error_without_the_password(
    server: RedisServer, admin: redis.Redis, make_target: Callable[..., RedisTarget]
) -> None:
    admin.acl_setuser("watcher", enabled=True, passwords=["+right"], commands=["+@all"], keys=["*"])
    target = make_target(server.url, username="watcher", password="not-the-password")
    with pytest.raises(RedisUnavailable) as caught:
        target.command("PING")
    message = str(caught.value)
    assert "invalid username-password pair" in message or "WRONGPASS" in message
    assert "not-the-password" not in message


def test_down_server_backs_off_then_reconnects_when_it_is_back(
    server: RedisServer, make_target: Callable[..., RedisTarget]
) -> None:
    target = make_target(server.url, reconnect_max="2s")
    assert target.command("PING") is True
    server.stop()
    with pytest.raises(RedisUnavailable, match=r"next attempt in 1\.0s \(1 failed attempt in a row\)"):
        target.command("PING")
    # Inside the backoff window: no new attempt, the same failure count, at once.
    with pytest.raises(RedisUnavailable, match=r"1 failed attempt in a row"):
        target.command("PING")
    server.start()

    def pings() -> bool:
        try:
            return target.command("PING") is True
        except RedisUnavailable:
            return False

    wait_until(pings, timeout=15, interval=0.1, what="the target to reconnect after the restart")
    assert target.failures == 0


def test_connect_does_no_io(make_target: Callable[..., RedisTarget]) -> None:
    # A port nobody listens on: creating the target must neither block nor raise.
    target = make_target("redis://127.0.0.1:1/0")
    assert target.failures == 0
    with pytest.raises(RedisUnavailable, match="refused"):
        target.command("PING")


def test_the_password_file_must_not_be_world_readable(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("x")
    os.chmod(secret, 0o644)
    with pytest.raises(ValidationError, match="readable by others"):
        RedisTargetParams(password_file=str(secret))


LEAST_PRIVILEGE = (
    "on >s3cret resetkeys %R~* %W~search:* resetchannels -@all +ping +info +client|setname +client|list"
    " +client|kill +slowlog|get +scan +type +llen +xlen +zcard +scard +unlink +memory|usage +ttl +hlen +strlen"
)
"""The ACL documented in docs/redis.md: every probe and both actions, deletes limited to search:*."""


def test_the_documented_least_privilege_acl_runs_every_probe_and_action(
    server: RedisServer, admin: redis.Redis, make_target: Callable[..., RedisTarget]
) -> None:
    admin.execute_command("ACL", "SETUSER", "watchdogd", *LEAST_PRIVILEGE.split())
    admin.rpush("celery", 1, 2, 3)
    admin.mset({"search:1": 1, "search:2": 2, "session:1": "keep"})
    idle = server.client(client_name="idle", single_connection_client=True)
    idle.ping()
    target = make_target(server.url, username="watchdogd", password="s3cret")
    params = {"redis.queue_length": {"keys": ["celery"], "patterns": ["queue:*"]}}
    for kind, spec in PROBES.items():
        spec.factory(spec.params(**params.get(kind, {})), target, time.time).measure()  # raises on NOPERM
    spec = PROBES["redis.idle_clients"]
    readings = spec.factory(spec.params(names=["idle"]), target, time.time).measure()
    kill = ACTIONS["redis.client_kill"]
    assert kill.factory(kill.params(), target, time.time).run(readings, dry_run=False).ok
    delete = ACTIONS["redis.delete_keys"]
    assert delete.factory(delete.params(match="search:*"), target, time.time).run([], dry_run=False).ok
    assert admin.keys("search:*") == [] and admin.get("session:1") == b"keep"
    # The ACL's write pattern is a second fence: a pattern outside it cannot delete.
    refused = delete.factory(delete.params(match="session:*"), target, time.time).run([], dry_run=False)
    assert not refused.ok and refused.error is not None and "permission denied" in refused.error
    assert admin.get("session:1") == b"keep"
