"""Every Redis probe against a private, real redis-server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from tests.integration.redis.server import RedisServer, wait_until
from watchdogd.contracts import Probe, ProbeError
from watchdogd.families.redis.probes import PROBES
from watchdogd.families.redis.target import RedisTarget, RedisUnavailable
from watchdogd.model import Reading

pytestmark = pytest.mark.integration


def make(kind: str, target: RedisTarget, clock: Any = time.time, **params: Any) -> Probe:
    spec = PROBES[kind]
    return spec.factory(spec.params(**params), target, clock)


def by_subject(readings: list[Reading]) -> dict[str, Reading]:
    return {r.subject: r for r in readings}


@pytest.fixture
def restore_config(admin: redis.Redis) -> Iterator[Callable[..., None]]:
    """``restore_config(maxmemory=..., ...)`` sets config and puts the old values back after the test."""
    saved: dict[str, str] = {}

    def set_config(**values: Any) -> None:
        for key, value in values.items():
            name = key.replace("_", "-")
            saved.setdefault(name, admin.config_get(name)[name])
            admin.config_set(name, value)

    try:
        yield set_config
    finally:
        for name, value in saved.items():
            admin.config_set(name, value)


# --------------------------------------------------------------------------- instance probes


def test_up_measures_ping_latency(target: RedisTarget) -> None:
    (reading,) = make("redis.up", target).measure()
    assert reading.subject == "ping"
    assert 0 < reading.value < 1


def test_down_server_is_a_probe_error_naming_the_server(server: RedisServer, target: RedisTarget) -> None:
    server.stop()
    with pytest.raises(RedisUnavailable, match=f"redis 127.0.0.1:{server.port}/0: .*refused.*backoff"):
        make("redis.up", target).measure()


def test_memory_percent_of_maxmemory_and_of_system_ram_without_it(
    target: RedisTarget, admin: redis.Redis, restore_config: Callable[..., None]
) -> None:
    probe = make("redis.memory", target)
    (unbounded,) = probe.measure()
    assert unbounded.details["basis"] == "total_system_memory"
    assert 0 < unbounded.value < 5  # a fresh server uses a few MB of this machine's RAM
    restore_config(maxmemory=str(50 * 2**20))
    admin.mset({f"blob:{i}": b"x" * 10_000 for i in range(1000)})  # ~10 MB
    (reading,) = probe.measure()
    used = admin.info("memory")["used_memory"]
    assert reading.details["basis"] == "maxmemory"
    assert reading.value == pytest.approx(used / (50 * 2**20) * 100, rel=0.05)
    assert 15 < reading.value < 45


def test_memory_bytes(target: RedisTarget, admin: redis.Redis) -> None:
    admin.set("blob", b"x" * 2**20)
    (reading,) = make("redis.memory_bytes", target).measure()
    assert reading.value == pytest.approx(admin.info("memory")["used_memory"], rel=0.05)
    assert reading.value > 2**20


def test_clients_percent_of_maxclients(
    server: RedisServer, target: RedisTarget, admin: redis.Redis, restore_config: Callable[..., None]
) -> None:
    restore_config(maxclients="100")
    extra = [server.client() for _ in range(8)]
    for client in extra:
        client.ping()
    (reading,) = make("redis.clients", target).measure()
    connected = reading.details["connected_clients"]
    assert connected >= 10  # admin + 8 + watchdogd
    assert reading.value == pytest.approx(connected)  # of 100


def test_blocked_clients(server: RedisServer, target: RedisTarget, admin: redis.Redis) -> None:
    probe = make("redis.blocked_clients", target)
    blocker = server.client()
    thread = threading.Thread(target=blocker.blpop, args=(["jobs"],), kwargs={"timeout": 20})
    thread.start()
    try:
        wait_until(lambda: probe.measure()[0].value == 1, what="one blocked client")
    finally:
        admin.lpush("jobs", "wake up")
        thread.join(timeout=10)
    assert probe.measure()[0].value == 0


def test_replication_link_down_seconds(make_server: Callable[..., RedisServer], make_target: Any) -> None:
    master = make_server()
    replica = make_server()
    replica.client().replicaof("127.0.0.1", master.port)
    on_master = make("redis.replication", make_target(master.url))
    on_replica = make("redis.replication", make_target(replica.url))
    assert on_master.measure()[0].value == 0
    assert on_master.measure()[0].details["role"] == "master"
    wait_until(lambda: on_replica.measure()[0].details.get("master_link_status") == "up", what="replica link up")
    assert on_replica.measure()[0].value == 0
    master.stop()
    reading = wait_until(
        lambda: (r := on_replica.measure()[0]).value >= 1 and r, timeout=15, what="link down for a second"
    )
    assert reading.details["master_link_status"] == "down"
    assert reading.details["role"] == "slave"


def test_replica_that_never_reached_its_master_counts_its_uptime(
    make_server: Callable[..., RedisServer], make_target: Any
) -> None:
    replica = make_server()
    nobody = socket.socket()
    nobody.bind(("127.0.0.1", 0))  # a port that stays closed: nothing listens on it
    try:
        replica.client().replicaof("127.0.0.1", nobody.getsockname()[1])
        probe = make("redis.replication", make_target(replica.url))
        reading = wait_until(lambda: (r := probe.measure()[0]).value >= 1 and r, timeout=15, what="uptime >= 1s")
        assert reading.details["master_link_status"] == "down"
    finally:
        nobody.close()


# --------------------------------------------------------------------------- idle clients


def named_client(server: RedisServer, name: str) -> redis.Redis:
    client = server.client(client_name=name, single_connection_client=True)
    client.ping()
    return client


def client_id(client: redis.Redis) -> int:
    return int(client.client_id())


def test_idle_clients_lists_normal_clients_and_never_the_protected(
    server: RedisServer, target: RedisTarget, admin: redis.Redis
) -> None:
    worker = named_client(server, "worker-1")
    subscriber = server.client(client_name="sub-1").pubsub()
    subscriber.subscribe("news")
    subscriber.get_message(timeout=1)
    monitor_conn = redis.Redis(port=server.port).monitor()
    monitor_conn.__enter__()
    blocker = named_client(server, "blocker")
    blocker_id = client_id(blocker)
    thread = threading.Thread(target=blocker.blpop, args=(["never"],), kwargs={"timeout": 20})
    thread.start()
    try:
        wait_until(lambda: admin.info("clients")["blocked_clients"] == 1, what="the BLPOP to block")
        readings = by_subject(make("redis.idle_clients", target).measure())
        names = {r.details["name"] for r in readings.values()}
        assert "worker-1" in names
        assert names.isdisjoint({"sub-1", "blocker", "watchdogd"})
        assert f"id:{blocker_id}" not in readings
        flags = {c["name"]: c["flags"] for c in admin.client_list()}
        assert "P" in flags["sub-1"] and "b" in flags["blocker"]
        assert any("O" in c["flags"] for c in admin.client_list())
        assert all("O" not in r.details.get("flags", "") for r in readings.values())
        worker_reading = readings[f"id:{client_id(worker)}"]
        assert worker_reading.details["run_id"] == admin.info("server")["run_id"]
        assert worker_reading.details["addr"].startswith("127.0.0.1:")
    finally:
        admin.lpush("never", "x")
        thread.join(timeout=10)
        monitor_conn.__exit__()
        subscriber.close()


def test_idle_clients_filters(server: RedisServer, target: RedisTarget, admin: redis.Redis) -> None:
    admin.acl_setuser("app", enabled=True, passwords=["+pw"], commands=["+@all"], keys=["*"])
    celery = client_id(named_client(server, "celery-7"))
    cron = client_id(named_client(server, "cron"))
    app_client = server.client(single_connection_client=True, username="app", password="pw")
    app = client_id(app_client)
    app_client.get("something")  # after CLIENT ID: the last command is what `commands` filters on
    admin_id = client_id(admin)

    def ids(**params: Any) -> set[int]:
        return {r.details["id"] for r in make("redis.idle_clients", target, **params).measure()}

    assert ids() == {celery, cron, app, admin_id}
    assert ids(names=["celery*"]) == {celery}
    assert ids(exclude_names=["celery*"]) == {cron, app, admin_id}
    assert ids(names=[""]) == {app, admin_id}  # "" is "set no name"
    assert ids(users=["app"]) == {app}
    assert ids(exclude_users=["app"]) == {celery, cron, admin_id}
    assert ids(commands=["get"]) == {app}
    assert app not in ids(exclude_commands=["get"])
    assert ids(addresses=["127.0.0.0/8"]) == {celery, cron, app, admin_id}
    assert ids(addresses=["10.0.0.0/8"]) == set()
    assert ids(exclude_addresses=["127.0.0.1"]) == set()
    assert ids(addresses=["unix"]) == set()


def test_idle_seconds_grow_and_reset_on_a_command(
    server: RedisServer, target: RedisTarget, admin: redis.Redis
) -> None:
    sleepy = named_client(server, "sleepy")
    subject = f"id:{client_id(sleepy)}"
    probe = make("redis.idle_clients", target, names=["sleepy"])
    wait_until(lambda: by_subject(probe.measure())[subject].value >= 2, timeout=10, what="idle >= 2s")
    sleepy.ping()
    assert by_subject(probe.measure())[subject].value < 2


# --------------------------------------------------------------------------- queues


def test_queue_length_by_type_of_key(target: RedisTarget, admin: redis.Redis) -> None:
    admin.lpush("celery", *range(150))
    for i in range(600):
        admin.xadd("events", {"n": i})
    admin.zadd("delayed", {f"job{i}": i for i in range(50)})
    admin.sadd("pending-set", "a", "b")
    probe = make("redis.queue_length", target, keys=["celery", "events", "delayed", "pending-set", "drained"])
    readings = by_subject(probe.measure())
    assert {k: r.value for k, r in readings.items()} == {
        "celery": 150, "events": 600, "delayed": 50, "pending-set": 2, "drained": 0,
    }
    assert readings["events"].details["type"] == "stream"
    assert readings["drained"].details["type"] == "none"


def test_queue_length_refuses_a_named_key_that_is_not_a_queue(target: RedisTarget, admin: redis.Redis) -> None:
    admin.set("config", "x")
    with pytest.raises(ProbeError, match="key 'config' is a string, not a queue"):
        make("redis.queue_length", target, keys=["config"]).measure()


def test_queue_length_patterns_report_the_longest_keys_only(target: RedisTarget, admin: redis.Redis) -> None:
    for i in range(30):
        admin.rpush(f"queue:{i}", *range(i + 1))
    admin.set("queue:not-a-queue", "x")
    admin.rpush("other:1", *range(100))
    readings = make("redis.queue_length", target, patterns=["queue:*"], max_keys=5).measure()
    assert [(r.subject, r.value) for r in readings] == [(f"queue:{i}", i + 1) for i in (29, 28, 27, 26, 25)]
    assert all(r.details["scan_complete"] for r in readings)


def test_queue_length_scan_cap(target: RedisTarget, admin: redis.Redis) -> None:
    with admin.pipeline(transaction=False) as pipe:
        for i in range(3000):
            pipe.set(f"filler:{i}", i)
        pipe.execute()
    admin.rpush("queue:late", 1)
    readings = make("redis.queue_length", target, patterns=["queue:*"], max_scan=100).measure()
    assert all(r.details["scan_complete"] is False for r in readings)
    full = make("redis.queue_length", target, patterns=["queue:*"]).measure()
    assert [(r.subject, r.value) for r in full] == [("queue:late", 1)]


# --------------------------------------------------------------------------- rates and resets


def test_hit_ratio_over_the_interval(server: RedisServer, target: RedisTarget, admin: redis.Redis) -> None:
    probe = make("redis.hit_ratio", target)
    admin.mset({f"k{i}": i for i in range(10)})
    assert probe.measure() == []  # the first run has no interval
    for i in range(300):
        admin.get(f"k{i % 10}")
    for i in range(100):
        admin.get(f"missing{i}")
    (reading,) = probe.measure()
    assert reading.value == 0.75
    assert reading.details["hits"] == 300 and reading.details["misses"] == 100
    for i in range(5):
        admin.get("missing")
    (quiet,) = probe.measure()
    assert quiet.no_data and quiet.details["misses"] == 5  # 5 lookups < min_lookups: no data, state held
    server.restart()
    (restarted,) = probe.measure()
    assert restarted.no_data and "restarted" in restarted.details["reason"]  # another run_id: no rate, no recovery
    admin2 = server.client()
    for i in range(200):
        admin2.get("nothing-here")
    (after,) = probe.measure()
    assert after.value == 0.0


def test_evictions_rate_and_no_false_alarm_on_reset(
    server: RedisServer, target: RedisTarget, admin: redis.Redis, restore_config: Callable[..., None]
) -> None:
    probe = make("redis.evictions", target)
    restore_config(maxmemory=str(4 * 2**20), maxmemory_policy="allkeys-lru")
    assert probe.measure() == []
    value = b"v" * 1024
    with admin.pipeline(transaction=False) as pipe:
        for i in range(12_000):
            pipe.set(f"cache:{i}", value)
        pipe.execute()
    (reading,) = probe.measure()
    evicted = admin.info("stats")["evicted_keys"]
    assert evicted > 1000
    assert reading.details["evicted_keys"] == evicted
    assert reading.value > 0
    assert reading.value == pytest.approx(evicted / reading.details["interval"], rel=0.01)
    admin.config_resetstat()  # the counter goes back to 0 without a restart
    (reset,) = probe.measure()
    assert reset.no_data and "CONFIG RESETSTAT" in reset.details["reason"]
    (quiet,) = probe.measure()
    assert quiet.value == 0
    server.restart()
    (restarted,) = probe.measure()
    assert restarted.no_data  # never a negative rate after a restart, and no recovery either


def test_rejected_connections_rate(
    server: RedisServer, target: RedisTarget, admin: redis.Redis, restore_config: Callable[..., None]
) -> None:
    probe = make("redis.rejected_connections", target)
    assert probe.measure() == []
    connected = admin.info("clients")["connected_clients"]
    restore_config(maxclients=str(connected))
    for _ in range(3):
        # A raw socket, so no client library retries behind our back: one connection, one rejection.
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as extra:
            assert extra.recv(200).startswith(b"-ERR max number of clients reached")
    (reading,) = probe.measure()
    assert reading.details["rejected_connections"] == 3
    assert reading.value > 0


def test_slowlog_new_entries_and_worst_duration(
    server: RedisServer, target: RedisTarget, admin: redis.Redis, restore_config: Callable[..., None]
) -> None:
    restore_config(slowlog_log_slower_than="20000")  # 20 ms
    worst = make("redis.slowlog", target)
    count = make("redis.slowlog_entries", target)
    busy = "local i = 0 while i < tonumber(ARGV[1]) do i = i + 1 end return i"
    admin.eval(busy, 0, 3_000_000)  # already there before the first run: not news
    assert worst.measure() == [] and count.measure() == []
    assert worst.measure()[0].value == 0 and count.measure()[0].value == 0
    admin.eval(busy, 0, 3_000_000)
    admin.eval(busy, 0, 6_000_000)
    (slowest,) = worst.measure()
    (entries,) = count.measure()
    assert entries.value == 2
    assert slowest.value >= 0.02
    assert slowest.details["worst_command"] == "EVAL"
    assert slowest.details["new_entries"] == 2
    assert "local i" not in str(slowest.details)  # arguments never leave Redis
    server.restart()
    assert worst.measure() == []  # restart: a new baseline
