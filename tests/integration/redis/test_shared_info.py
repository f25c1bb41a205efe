"""One INFO round trip per Redis target per engine cycle, counted by the real server (issue 17, Must 2)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from tests.integration.redis.server import RedisServer
from watchdogd.clients import close_clients, open_clients
from watchdogd.config import parse_config
from watchdogd.engine.engine import Engine
from watchdogd.engine.state import StateStore
from watchdogd.families.redis.target import RedisTarget

pytestmark = pytest.mark.integration

RULES = {"mem": ("redis.memory", "99"), "mem-bytes": ("redis.memory_bytes", "1TiB"),
         "clients": ("redis.clients", "99"), "blocked": ("redis.blocked_clients", "1000"),
         "link": ("redis.replication", "1d")}


def info_calls(admin: redis.Redis) -> int:
    """INFO commands the server has run so far (its own count; ours add one for this very call)."""
    return int(admin.info("commandstats").get("cmdstat_info", {}).get("calls", 0))


def test_the_info_rules_of_one_engine_cycle_share_one_round_trip(
    tmp_path: Path, server: RedisServer, admin: redis.Redis
) -> None:
    rules = "".join(f"  {name}:\n    probe: {kind}\n    above: {above}\n" for name, (kind, above) in RULES.items())
    text = f"state_dir: {tmp_path}/state\ntargets:\n  redis:\n    main: {{url: \"{server.url}\"}}\nrules:\n{rules}"
    config = parse_config(text, tmp_path / "watchdogd.yaml")
    clients = open_clients(config)
    target = clients[("redis", "main")]
    assert isinstance(target, RedisTarget)
    store = StateStore(tmp_path / "state.db", time.time)
    engine = Engine(config, store, clients, time.time, grace=False)
    try:
        for name in RULES:  # the first cycle: each probe adds its sections to the shared snapshot
            engine.run_rule(name)
        target.forget_info()  # as after max_age: the next cycle reads afresh
        reads, before = target.info_reads, info_calls(admin)
        reports = [engine.run_rule(name) for name in RULES]  # one cycle
        after = info_calls(admin)
        assert all(report.error is None for report in reports), reports
        assert target.info_reads == reads + 1
        # One pipeline of INFO clients, memory, replication, server (4 commands, one round trip) for the
        # five rules, and our own INFO commandstats: before, the five rules sent six INFO in five round trips.
        assert after - before == 4 + 1
    finally:
        engine.close()
        store.close()
        close_clients(clients, config.registry)
