"""One INFO round trip per Redis target per cycle, served to every INFO-reading redis.* rule due in it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest

from watchdogd import inline
from watchdogd.families.redis.target import RedisTarget, RedisTargetParams
from watchdogd.model import Reading
from watchdogd.registry import DEFAULT

SECTIONS: dict[str, dict[str, Any]] = {
    "server": {"run_id": "abc", "server_time_usec": 1_000_000_000, "uptime_in_seconds": 50},
    "clients": {"connected_clients": 10, "maxclients": 100, "blocked_clients": 2},
    "memory": {"used_memory": 50, "maxmemory": 100, "total_system_memory": 1000},
    "replication": {"role": "master"},
    "stats": {"keyspace_hits": 900, "keyspace_misses": 100, "evicted_keys": 0, "expired_keys": 5,
              "rejected_connections": 0, "total_commands_processed": 1000, "total_connections_received": 9},
}


class Clock:
    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


class FakeTarget(RedisTarget):
    """A target whose server answers INFO from ``SECTIONS``; records every round trip."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(RedisTargetParams(url="redis://127.0.0.1:1/0"), clock)
        self.round_trips: list[list[str]] = []

    def pipeline(self, commands: Sequence[Sequence[str | bytes | int | float]]) -> list[Any]:
        self.round_trips.append([str(c[1]) for c in commands])
        return [dict(SECTIONS[str(c[1])]) for c in commands]


def measure(kind: str, target: RedisTarget) -> list[Reading]:
    spec = DEFAULT.probes[kind]
    return spec.factory(spec.params(), target, time.time).measure()


KINDS = ["redis.memory", "redis.memory_bytes", "redis.clients", "redis.blocked_clients", "redis.replication"]


def test_the_info_rules_of_one_cycle_share_one_round_trip() -> None:
    clock = Clock()
    target = FakeTarget(clock)
    for kind in KINDS:  # the first cycle learns the sections one probe at a time
        measure(kind, target)
    clock.now += 5.0
    before = len(target.round_trips)
    values = {kind: measure(kind, target)[0].value for kind in KINDS * 2}  # one cycle of ten rules
    assert len(target.round_trips) == before + 1
    assert target.round_trips[-1] == ["clients", "memory", "replication", "server"]
    assert values == {"redis.memory": 50.0, "redis.memory_bytes": 50.0, "redis.clients": 10.0,
                      "redis.blocked_clients": 2.0, "redis.replication": 0.0}
    clock.now += 1.0
    measure("redis.memory", target)  # the next cycle reads again
    assert len(target.round_trips) == before + 2


def test_a_new_section_is_read_at_once_not_after_max_age() -> None:
    target = FakeTarget(Clock())
    measure("redis.memory", target)
    measure("redis.clients", target)
    assert target.round_trips == [["memory"], ["clients", "memory"]]
    measure("redis.memory", target)
    assert len(target.round_trips) == 2


def test_sections_are_copies() -> None:
    target = FakeTarget(Clock())
    from watchdogd.families.redis.probes import read_info  # noqa: PLC0415

    (memory,) = read_info(target, "memory")
    memory["used_memory"] = 99
    (again,) = read_info(target, "memory")
    assert again["used_memory"] == 50
    assert len(target.round_trips) == 1


def test_a_failed_info_is_not_kept() -> None:
    target = FakeTarget(Clock())
    answer = target.pipeline
    target.pipeline = lambda commands: (_ for _ in ()).throw(ConnectionError("down"))  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        measure("redis.memory", target)
    target.pipeline = answer  # type: ignore[method-assign]
    assert measure("redis.memory", target)[0].value == 50.0
    assert target.info_reads == 2


class PingClient:
    def __init__(self) -> None:
        self.pings = 0

    def ping(self) -> bool:
        self.pings += 1
        return True


class PingTarget(RedisTarget):
    """A target whose server answers PING; counts the measurements (``run`` calls) and the PINGs."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(RedisTargetParams(url="redis://127.0.0.1:1/0"), clock)
        self.client = PingClient()
        self.runs = 0

    def run(self, operation: Any) -> Any:
        self.runs += 1
        return operation(self.client)


def test_the_up_rules_of_one_cycle_share_one_ping_and_the_next_cycle_pings_again() -> None:
    clock = Clock()
    target = PingTarget(clock)
    first = [measure("redis.up", target) for _ in range(3)]
    assert target.runs == 1 and target.client.pings == 2  # two PINGs, the second timed
    assert {r[0].value for r in first} == {first[0][0].value}
    clock.now += 5.0
    measure("redis.up", target)
    assert target.runs == 2 and target.pings == 2


def test_an_up_rule_runs_inline_on_a_fresh_ping_and_refuses_without_one() -> None:
    clock = Clock()
    target = PingTarget(clock)
    spec = DEFAULT.probes["redis.up"]
    probe = spec.factory(spec.params(), target, time.time)
    assert probe.inline
    with inline.only(), pytest.raises(inline.WouldBlock):
        probe.measure()
    probe.measure()
    with inline.only():
        [reading] = probe.measure()
    assert reading.subject == "ping" and target.runs == 1
