"""redis.client_kill and redis.delete_keys against a private, real redis-server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from tests.integration.redis.server import RedisServer, wait_until
from watchdogd.families.redis.actions import ACTIONS
from watchdogd.families.redis.probes import PROBES
from watchdogd.families.redis.target import RedisTarget
from watchdogd.model import ActionResult, Reading

pytestmark = pytest.mark.integration


def action(kind: str, target: RedisTarget, **params: Any) -> Any:
    spec = ACTIONS[kind]
    return spec.factory(spec.params(**params), target, time.time)


def idle_readings(target: RedisTarget, **params: Any) -> dict[str, Reading]:
    spec = PROBES["redis.idle_clients"]
    probe = spec.factory(spec.params(**params), target, time.time)
    return {r.details["name"]: r for r in probe.measure()}


def named_client(server: RedisServer, name: str) -> redis.Redis:
    client = server.client(client_name=name, single_connection_client=True)
    client.ping()
    return client


def names_connected(admin: redis.Redis) -> set[str]:
    return {c["name"] for c in admin.client_list()}


# --------------------------------------------------------------------------- client_kill


def test_client_kill_kills_exactly_the_given_clients(
    server: RedisServer, target: RedisTarget, admin: redis.Redis
) -> None:
    for name in ("idle-a", "idle-b", "bystander"):
        named_client(server, name)
    readings = idle_readings(target, names=["idle-*"])
    assert set(readings) == {"idle-a", "idle-b"}
    result = action("redis.client_kill", target).run(list(readings.values()), dry_run=False)
    assert result.ok, result
    assert [item.detail.split(" ")[0] for item in result.items] == ["killed", "killed"]
    assert {item.subject for item in result.items} == {r.subject for r in readings.values()}
    assert {item.info["name"] for item in result.items} == {"idle-a", "idle-b"}
    assert all(item.info["addr"].startswith("127.0.0.1:") for item in result.items)
    remaining = names_connected(admin)
    assert "bystander" in remaining and remaining.isdisjoint({"idle-a", "idle-b"})
    assert "killed 2 of 2" in result.detail


def test_client_kill_dry_run_checks_everything_and_kills_nothing(
    server: RedisServer, target: RedisTarget, admin: redis.Redis
) -> None:
    named_client(server, "idle-a")
    readings = idle_readings(target, names=["idle-a"])
    result = action("redis.client_kill", target).run(list(readings.values()), dry_run=True)
    assert result.ok
    (item,) = result.items
    assert item.detail.startswith("would kill client id=")
    assert "would kill 1 of 1" in result.detail
    assert "idle-a" in names_connected(admin)


def test_client_kill_keeps_a_client_that_became_active_or_protected_or_left(
    server: RedisServer, target: RedisTarget, admin: redis.Redis
) -> None:
    woke = named_client(server, "woke-up")
    # A raw socket: redis-py's pubsub() would open another connection, and this one must subscribe itself.
    subscriber = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        subscriber.sendall(b"CLIENT SETNAME will-subscribe\r\n")
        assert subscriber.recv(100) == b"+OK\r\n"
        leaver = named_client(server, "leaver")
        wait_until(
            lambda: all(r.value >= 1 for r in idle_readings(target, names=["woke-up"]).values()),
            what="the client to idle for a second",
        )
        readings = idle_readings(target, names=["woke-up", "will-subscribe", "leaver"])
        woke.ping()
        subscriber.sendall(b"SUBSCRIBE news\r\n")
        assert b"subscribe" in subscriber.recv(100)
        leaver.close()
        wait_until(lambda: "leaver" not in names_connected(admin), what="the leaver to disconnect")
        result = action("redis.client_kill", target).run(list(readings.values()), dry_run=False)
        outcome = {readings_name(readings, item.subject): item for item in result.items}
        assert result.ok
        assert outcome["woke-up"].detail.startswith("kept: it ran a command since the probe")
        assert outcome["will-subscribe"].detail == "kept: it is a pub/sub subscriber"
        assert outcome["leaver"].detail == "already gone"
        assert {"woke-up", "will-subscribe"} <= names_connected(admin)
    finally:
        subscriber.close()


def readings_name(readings: dict[str, Reading], subject: str) -> str:
    return next(name for name, r in readings.items() if r.subject == subject)


def test_client_kill_refuses_ids_from_before_a_restart(
    server: RedisServer, target: RedisTarget, admin: redis.Redis
) -> None:
    named_client(server, "old")
    readings = idle_readings(target, names=["old"])
    server.restart()
    fresh = server.client(client_name="new", single_connection_client=True)
    fresh.ping()
    result = action("redis.client_kill", target).run(list(readings.values()), dry_run=False)
    (item,) = result.items
    assert item.ok and item.detail.startswith("kept: Redis restarted since the probe")
    assert "new" in names_connected(server.client())


def test_client_kill_without_the_acl_permission_is_a_clear_failed_item(
    server: RedisServer, admin: redis.Redis, make_target: Callable[..., RedisTarget]
) -> None:
    admin.acl_setuser("watcher", enabled=True, passwords=["+pw"], commands=["+@all", "-client|kill"], keys=["*"])
    target = make_target(server.url, username="watcher", password="pw")
    named_client(server, "victim")
    readings = idle_readings(target, names=["victim"])
    result = action("redis.client_kill", target).run(list(readings.values()), dry_run=False)
    assert not result.ok
    (item,) = result.items
    assert not item.ok
    assert "permission denied" in item.detail and "ACL SETUSER" in item.detail and "watcher" in item.detail
    assert "victim" in names_connected(admin)


def test_client_kill_rejects_readings_that_are_not_clients(target: RedisTarget) -> None:
    result = action("redis.client_kill", target).run([Reading("memory", 95.0, {})], dry_run=False)
    assert not result.ok
    assert "not a Redis client reading" in result.items[0].detail


# --------------------------------------------------------------------------- delete_keys


@pytest.fixture
def keys(admin: redis.Redis) -> dict[str, int]:
    """1500 keys matching search:* and a few near misses that must survive."""
    with admin.pipeline(transaction=False) as pipe:
        for i in range(1500):
            pipe.set(f"search:{i}", i)
        pipe.execute()
    survivors = {"searchx": 1, "search": 1, "Search:1": 1, "other:search:1": 1}
    admin.mset(survivors)
    admin.rpush("search:list", "a", "b")
    return survivors


def count(admin: redis.Redis, pattern: str) -> int:
    return sum(1 for _ in admin.scan_iter(match=pattern, count=1000))


def test_delete_keys_deletes_only_matching_keys_and_at_most_max_keys_per_run(
    target: RedisTarget, admin: redis.Redis, keys: dict[str, int]
) -> None:
    delete = action("redis.delete_keys", target, match="search:*", max_keys=1000, batch=300)
    first = delete.run([], dry_run=False)
    assert first.ok, first
    assert count(admin, "search:*") == 501
    assert "unlinked 1000 key(s)" in first.detail and "more matching keys may remain" in first.detail
    assert len(first.items) == 100 and all(item.subject.startswith("search:") for item in first.items)
    second = delete.run([], dry_run=False)
    assert "unlinked 501 key(s)" in second.detail
    assert count(admin, "search:*") == 0
    third = delete.run([], dry_run=False)
    assert third.ok and "unlinked 0 key(s)" in third.detail
    assert all(admin.exists(key) for key in keys)


def test_delete_keys_dry_run_counts_and_deletes_nothing(
    target: RedisTarget, admin: redis.Redis, keys: dict[str, int]
) -> None:
    capped = action("redis.delete_keys", target, match="search:*", max_keys=1000).run([], dry_run=True)
    assert capped.ok
    assert "would unlink 1000 key(s)" in capped.detail
    assert all(item.detail == "would unlink" for item in capped.items)
    everything = action("redis.delete_keys", target, match="search:*", max_keys=100_000).run([], dry_run=True)
    assert "would unlink 1501 key(s)" in everything.detail
    assert "remain" not in everything.detail
    assert count(admin, "search:*") == 1501


def test_delete_keys_type_filter(target: RedisTarget, admin: redis.Redis, keys: dict[str, int]) -> None:
    result = action("redis.delete_keys", target, match="search:*", type="list").run([], dry_run=False)
    assert "unlinked 1 key(s) of type list" in result.detail
    assert not admin.exists("search:list")
    assert count(admin, "search:*") == 1500


def test_delete_keys_sends_only_scan_and_unlink(
    server: RedisServer, target: RedisTarget, admin: redis.Redis, keys: dict[str, int]
) -> None:
    target.command("PING")  # connect (and name the connection) before recording
    seen: list[str] = []
    ready = threading.Event()
    monitor_client = server.client()

    def record() -> None:
        with monitor_client.monitor() as monitor:
            ready.set()
            for command in monitor.listen():
                text = command["command"]
                if text == "ECHO stop-recording":
                    return
                seen.append(text.split(" ")[0].upper())

    thread = threading.Thread(target=record, daemon=True)
    thread.start()
    assert ready.wait(5)
    wait_until(lambda: any("O" in c["flags"] for c in admin.client_list()), what="MONITOR to start")
    action("redis.delete_keys", target, match="search:*", max_keys=100_000).run([], dry_run=False)
    admin.echo("stop-recording")
    thread.join(timeout=10)
    ours = set(seen) - {"CLIENT"}  # the admin's own CLIENT LIST while waiting for MONITOR
    assert ours == {"SCAN", "UNLINK"}, seen
    assert count(admin, "search:*") == 0


def test_delete_keys_without_the_acl_permission_fails_clearly(
    server: RedisServer, admin: redis.Redis, make_target: Callable[..., RedisTarget], keys: dict[str, int]
) -> None:
    admin.acl_setuser("reader", enabled=True, passwords=["+pw"], commands=["+@read", "+scan"], keys=["*"])
    target = make_target(server.url, username="reader", password="pw")
    result: ActionResult = action("redis.delete_keys", target, match="search:*").run([], dry_run=False)
    assert not result.ok
    assert result.error is not None and "permission denied" in result.error
    assert count(admin, "search:*") == 1501


def test_delete_keys_stops_at_its_timeout(target: RedisTarget, admin: redis.Redis, keys: dict[str, int]) -> None:
    # The smallest timeout config accepts (0 is refused): the deadline passes before, or right after, the
    # first SCAN round trip, so most matching keys must remain.
    result = action("redis.delete_keys", target, match="search:*", timeout="0.000001s").run([], dry_run=False)
    assert result.ok
    assert "stopped at the action's timeout" in result.detail
    assert count(admin, "search:*") > 1501 // 2


def test_delete_keys_says_keys_remain_when_one_scan_reply_held_more_than_max_keys(
    target: RedisTarget, admin: redis.Redis
) -> None:
    admin.mset({f"tmp:{i}": i for i in range(10)})  # one SCAN reply returns all ten
    result = action("redis.delete_keys", target, match="tmp:*", max_keys=3, batch=1000).run([], dry_run=False)
    assert "unlinked 3 key(s)" in result.detail and "more matching keys may remain" in result.detail
    assert admin.dbsize() == 7
