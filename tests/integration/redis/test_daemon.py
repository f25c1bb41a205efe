"""The real daemon (``watchdogd.daemon`` as a process) against a private redis-server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.helpers import DaemonProcess, run_once, write_config
from tests.integration.redis.server import RedisServer, wait_until

pytestmark = pytest.mark.integration


def config(tmp_path: Path, server: RedisServer, rules: str, *, interval: str = "1s") -> Path:
    return write_config(tmp_path, f"""
        interval: {interval}
        targets:
          redis:
            cache: {{url: "{server.url}", reconnect_max: 2s}}
        rules:
        {rules}
        """)


@pytest.fixture
def checker(server: RedisServer) -> redis.Redis:
    """The test's own eyes; named keep-* so the rule under test excludes it."""
    return server.client(client_name="keep-checker")


def names(client: redis.Redis) -> list[str]:
    return [c["name"] for c in client.client_list()]


@pytest.fixture
def pinger(server: RedisServer) -> Iterator[redis.Redis]:
    """A client that runs a command every 200 ms: never idle, so never killed."""
    client = server.client(client_name="active", single_connection_client=True)
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(0.2):
            client.ping()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield client
    finally:
        stop.set()
        thread.join(timeout=5)


def test_daemon_kills_idle_clients_and_keeps_excluded_active_and_protected_ones(
    tmp_path: Path, server: RedisServer, checker: redis.Redis, pinger: redis.Redis
) -> None:
    for name in ("idle-1", "idle-2", "keep-me"):
        server.client(client_name=name, single_connection_client=True).ping()
    subscriber = server.client(client_name="subscriber").pubsub()
    subscriber.subscribe("news")
    subscriber.get_message(timeout=1)
    blocker = server.client(client_name="blocker", single_connection_client=True)
    blocked = threading.Thread(target=blocker.blpop, args=(["never"],), kwargs={"timeout": 60}, daemon=True)
    blocked.start()
    wait_until(lambda: checker.info("clients")["blocked_clients"] == 1, what="the BLPOP to block")
    path = config(tmp_path, server, """
          redis-idle:
            probe: redis.idle_clients
            params: {exclude_names: ["keep-*"]}
            above: 2s
            cooldown: 1s
            actions:
              - redis.client_kill: {max_per_run: 10}
        """)
    try:
        with DaemonProcess(path) as daemon:
            daemon.wait_for_log("firing", rule="redis-idle")
            daemon.wait_for_log("action done", rule="redis-idle", action="redis.client_kill")
            wait_until(lambda: not {"idle-1", "idle-2"} & set(names(checker)), timeout=20,
                       what="idle-1 and idle-2 to be killed")
            left = set(names(checker))
            assert {"keep-me", "keep-checker", "active", "subscriber", "blocker", "watchdogd"} <= left
            assert daemon.returncode is None
    finally:
        checker.lpush("never", "wake up")
        blocked.join(timeout=10)
        subscriber.close()


def test_daemon_survives_redis_stopping_and_recovers_when_it_is_back(tmp_path: Path, server: RedisServer) -> None:
    path = config(tmp_path, server, """
          redis-memory:
            probe: redis.memory_bytes
            above: 1B
        """)
    with DaemonProcess(path) as daemon:
        daemon.wait_for_log("firing", rule="redis-memory")
        server.stop()
        down = daemon.wait_for_log("probe down", rule="redis-memory")
        assert f"127.0.0.1:{server.port}" in down and "next attempt in" in down
        assert daemon.returncode is None
        server.start()
        daemon.wait_for_log("probe up again", rule="redis-memory", timeout=30)
        assert daemon.returncode is None


def test_queue_thresholds_on_a_list_a_stream_and_a_sorted_set(
    tmp_path: Path, server: RedisServer, checker: redis.Redis
) -> None:
    checker.lpush("celery", *range(150))
    for i in range(600):
        checker.xadd("events", {"n": i})
    checker.zadd("delayed", {f"job{i}": i for i in range(50)})
    path = config(tmp_path, server, """
          queue-warning:
            probe: redis.queue_length
            params: {keys: [celery, events, delayed]}
            above: 100
            severity: warning
          queue-critical:
            probe: redis.queue_length
            params: {keys: [celery, events, delayed]}
            above: 500
            severity: critical
        """)
    result = run_once(path)
    assert result.returncode == 1, result.stderr
    lines = {line.split(":", 1)[0]: line for line in result.stdout.splitlines()}
    assert "firing: celery, events" in lines["queue-warning"]
    assert "firing: events" in lines["queue-critical"] and "celery" not in lines["queue-critical"]
    checker.delete("celery", "events")  # drained: Celery deletes the empty list
    again = run_once(path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "queue-warning: ok" in again.stdout and "queue-critical: ok" in again.stdout


def test_delete_keys_from_the_daemon_dry_run_then_bounded_then_cooldown(
    tmp_path: Path, server: RedisServer, checker: redis.Redis
) -> None:
    with checker.pipeline(transaction=False) as pipe:
        for i in range(1500):
            pipe.set(f"search:{i}", i)
        pipe.execute()
    checker.set("sessions:1", "keep")
    path = config(tmp_path, server, """
          redis-memory-high:
            probe: redis.memory_bytes
            above: 1B
            cooldown: 1h
            actions:
              - redis.delete_keys: {match: "search:*", max_keys: 1000}
        """)
    dry = run_once(path, "--dry-run")
    assert "redis.delete_keys memory: dry_run" in dry.stdout, dry.stdout + dry.stderr
    assert checker.dbsize() == 1501
    real = run_once(path)
    assert "redis.delete_keys memory: ran ok" in real.stdout, real.stdout + real.stderr
    assert checker.dbsize() == 501
    assert checker.get("sessions:1") == b"keep"
    held = run_once(path)
    assert "skipped_cooldown" in held.stdout, held.stdout
    assert checker.dbsize() == 501


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, """
        targets:
          redis:
            cache: {url: "http://127.0.0.1:6379", pasword: x}
        rules:
          purge:
            probe: redis.memory
            above: 90
            actions:
              - redis.delete_keys: {match: "*"}
        """)
    result = run_once(path)
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert any("targets.redis.cache.url: url must start with redis://" in line for line in errors), errors
    assert any("targets.redis.cache.pasword: unknown key; did you mean 'password'?" in line for line in errors)
    assert "Traceback" not in result.stderr
