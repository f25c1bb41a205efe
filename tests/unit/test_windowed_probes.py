"""``window:`` on redis.hit_ratio, redis.evictions, redis.rejected_connections and systemd.restarts.

Redis is a table of INFO answers and systemctl a table of unit properties,
so every time here is a number: the server's clock (``server_time_usec``)
for Redis, the injected monotonic clock for systemd. The same probes run
against a real redis-server in tests/integration/redis/test_windows.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tests.unit.test_svc_systemd import FakeSystemctl
from watchdogd.contracts import Probe
from watchdogd.core.policy import Thresholds, evaluate
from watchdogd.families.redis.probes import PROBES as REDIS_PROBES
from watchdogd.families.redis.probes import CounterRateProbe, HitRatioProbe
from watchdogd.families.systemd.probes import PROBES as SYSTEMD_PROBES
from watchdogd.families.systemd.probes import RestartsParams, RestartsProbe, UnitParams
from watchdogd.families.systemd.systemctl import Systemctl
from watchdogd.model import Reading, Status, SubjectState


class FakeRedis:
    """Answers the rate probes' one pipeline (INFO server, INFO stats) from attributes the test moves."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.run_id = "run-1"
        self.stats: dict[str, int] = {
            "keyspace_hits": 0, "keyspace_misses": 0, "evicted_keys": 0, "rejected_connections": 0,
        }

    def pipeline(self, commands: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        server = {"run_id": self.run_id, "server_time_usec": int(self.now * 1e6)}
        return [server if command == ("INFO", "server") else dict(self.stats) for command in commands]

    def lookups(self, hits: int, misses: int) -> None:
        self.stats["keyspace_hits"] += hits
        self.stats["keyspace_misses"] += misses

    def restart(self) -> None:
        self.run_id += "+"
        self.stats = dict.fromkeys(self.stats, 0)


RATES = {"redis.evictions": ("evicted_keys", "evictions"),
         "redis.rejected_connections": ("rejected_connections", "rejected_connections")}


def redis_probe(kind: str, redis: FakeRedis, **params: Any) -> Probe:
    """The probe classes themselves: the factory insists on a real RedisTarget, and these need only INFO."""
    parsed = REDIS_PROBES[kind].params.model_validate(params)
    if kind == "redis.hit_ratio":
        return HitRatioProbe(parsed, redis, lambda: redis.now)
    field, subject = RATES[kind]
    return CounterRateProbe(field, subject, parsed, redis, lambda: redis.now)


def one(readings: list[Reading]) -> Reading:
    assert len(readings) == 1, readings
    return readings[0]


# --------------------------------------------------------------------------- params


@pytest.mark.parametrize("kind", ["redis.hit_ratio", "redis.evictions", "redis.rejected_connections"])
def test_redis_window_param_bounds(kind: str) -> None:
    params = REDIS_PROBES[kind].params
    assert params.model_validate({}).window is None
    assert params.model_validate({"window": "5m"}).window == 300.0
    assert params.model_validate({"window": "1d"}).window == 86400.0
    for bad in ("0s", "25h", "soon"):
        with pytest.raises(ValidationError):
            params.model_validate({"window": bad})


def test_systemd_window_only_on_restarts() -> None:
    assert SYSTEMD_PROBES["systemd.restarts"].params.model_validate({"units": ["app"], "window": "10m"}) == (
        RestartsParams(units=["app.service"], window=600.0)
    )
    with pytest.raises(ValidationError):
        RestartsParams(units=["app"], window=0)
    with pytest.raises(ValidationError, match="window"):
        SYSTEMD_PROBES["systemd.unit"].params.model_validate({"units": ["app"], "window": "10m"})


# --------------------------------------------------------------------------- redis.hit_ratio


def test_hit_ratio_over_a_window_judges_bursts_not_quiet_intervals() -> None:
    redis = FakeRedis()
    probe = redis_probe("redis.hit_ratio", redis, window="10s", min_lookups=100)
    assert probe.measure() == []  # the first run: nothing to compare with
    values = []
    for tick in range(1, 13):
        redis.now += 1.0
        if tick % 3 == 1:
            redis.lookups(hits=20, misses=80)  # one burst every 3 s
        reading = one(probe.measure())
        assert not reading.no_data, (tick, reading)
        values.append(reading.value)
    assert values == [0.2] * 12
    assert reading.details == {"hits": 60.0, "misses": 240.0, "window": 10.0, "covered": 10.0}


def test_hit_ratio_min_lookups_counts_the_whole_window() -> None:
    redis = FakeRedis()
    probe = redis_probe("redis.hit_ratio", redis, window="1m", min_lookups=100)
    probe.measure()
    for _ in range(3):
        redis.now += 15.0
        redis.lookups(hits=10, misses=30)  # 40 an interval: never enough alone
        last = one(probe.measure())
    assert last.value == 0.25  # 120 in the window
    assert last.details["hits"] == 30.0 and last.details["covered"] == 45.0


def test_too_few_lookups_is_no_data_with_or_without_a_window() -> None:
    for params in ({}, {"window": "1m"}):
        redis = FakeRedis()
        probe = redis_probe("redis.hit_ratio", redis, **params)
        probe.measure()
        redis.now += 15.0
        redis.lookups(hits=1, misses=2)
        quiet = one(probe.measure())
        assert quiet.no_data, params
        assert quiet.subject == "keyspace"
        assert quiet.details["reason"] == "3 lookups, fewer than min_lookups (100)"
        assert (quiet.details["hits"], quiet.details["misses"]) == (1.0, 2.0)


def test_a_restart_inside_a_window_loses_one_step_only() -> None:
    redis = FakeRedis()
    probe = redis_probe("redis.hit_ratio", redis, window="1m")
    probe.measure()
    redis.now += 15.0
    redis.lookups(hits=100, misses=100)
    assert one(probe.measure()).value == 0.5
    redis.now += 15.0
    redis.restart()
    redis.lookups(hits=0, misses=50)  # lost with the step across the restart
    after = one(probe.measure())
    assert (after.value, after.details["resets"], after.details["covered"]) == (0.5, 1, 15.0)
    redis.now += 15.0
    redis.lookups(hits=0, misses=200)
    assert one(probe.measure()).value == 0.25  # 100 hits of 400 lookups: both sides of the restart count


def test_a_restart_with_nothing_usable_is_no_data_not_silence() -> None:
    for params in ({}, {"window": "1m"}):
        redis = FakeRedis()
        probe = redis_probe("redis.hit_ratio", redis, **params)
        probe.measure()
        redis.now += 15.0
        redis.restart()
        redis.lookups(hits=0, misses=500)
        restarted = one(probe.measure())
        assert restarted.no_data, params
        assert "another run_id" in restarted.details["reason"]


def test_the_server_clock_going_back_restarts_the_window_as_no_data() -> None:
    redis = FakeRedis()
    probe = redis_probe("redis.hit_ratio", redis, window="1m")
    probe.measure()
    redis.now += 15.0
    redis.lookups(hits=500, misses=0)
    assert one(probe.measure()).value == 1.0
    redis.now -= 3600.0
    stepped = one(probe.measure())
    assert stepped.no_data and stepped.details["window"] == 60.0
    redis.now += 15.0
    redis.lookups(hits=0, misses=500)
    assert one(probe.measure()).value == 0.0  # only what came after the step


# --------------------------------------------------------------------------- redis.evictions, rejected_connections


@pytest.mark.parametrize(("kind", "field"), [
    ("redis.evictions", "evicted_keys"), ("redis.rejected_connections", "rejected_connections"),
])
def test_rate_over_a_window_is_per_second_of_the_covered_part(kind: str, field: str) -> None:
    redis = FakeRedis()
    probe = redis_probe(kind, redis, window="1m")
    assert probe.measure() == []
    redis.now += 10.0
    redis.stats[field] += 300
    first = one(probe.measure())
    assert (first.value, first.details) == (30.0, {field: 300.0, "window": 60.0, "covered": 10.0})
    for _ in range(5):
        redis.now += 10.0
        last = one(probe.measure())  # quiet: 0 new, still inside the window
    assert (last.value, last.details[field], last.details["covered"]) == (5.0, 300.0, 60.0)
    redis.now += 10.0
    assert one(probe.measure()).value == 0.0  # the burst slid out: a real 0, not no data


def test_rate_without_a_window_is_per_interval_and_a_reset_is_no_data() -> None:
    redis = FakeRedis()
    probe = redis_probe("redis.evictions", redis)
    probe.measure()
    redis.now += 10.0
    redis.stats["evicted_keys"] += 50
    assert one(probe.measure()).details == {"evicted_keys": 50.0, "interval": 10.0}
    redis.now += 10.0
    redis.stats["evicted_keys"] = 3  # CONFIG RESETSTAT
    reset = one(probe.measure())
    assert reset.no_data and "CONFIG RESETSTAT" in reset.details["reason"]
    redis.now += 10.0
    assert one(probe.measure()).value == 0.0


# --------------------------------------------------------------------------- the case, with the policy


def test_bursty_hit_ratio_with_a_window_goes_pending_once_and_fires() -> None:
    """Bursts every 2 s, a run every second, ``for: 4s``: per interval it flapped; windowed it fires."""
    redis = FakeRedis()
    probe = redis_probe("redis.hit_ratio", redis, window="5s", min_lookups=100)
    th = Thresholds(below=0.8, for_=4.0)
    states: dict[str, SubjectState] = {}
    kinds: list[tuple[Status, Status]] = []
    probe.measure()
    for tick in range(1, 10):
        redis.now += 1.0
        if tick % 2 == 1:
            redis.lookups(hits=30, misses=120)
        ev = evaluate(states, probe.measure(), th, redis.now)
        states = ev.states
        kinds += [(t.old, t.new) for t in ev.transitions]
    assert kinds == [(Status.OK, Status.PENDING), (Status.PENDING, Status.FIRING)]
    assert states["keyspace"].status is Status.FIRING


# --------------------------------------------------------------------------- systemd.restarts


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def restarts_probe(units: dict[str, dict[str, str]], clock: Clock, **params: Any) -> RestartsProbe:
    parsed = RestartsParams.model_validate({"units": list(units), **params})
    return RestartsProbe(parsed, Systemctl(FakeSystemctl(units)), clock)


def loaded(restarts: int) -> dict[str, str]:
    return {"LoadState": "loaded", "ActiveState": "active", "NRestarts": str(restarts)}


def test_restarts_without_a_window_are_cumulative() -> None:
    units = {"app.service": loaded(7)}
    probe = restarts_probe(units, Clock())
    assert [(r.subject, r.value) for r in probe.measure()] == [("app.service", 7.0)]
    # UnitParams (no window) still builds the cumulative probe
    old = RestartsProbe(UnitParams(units=["app"]), Systemctl(FakeSystemctl(units)), Clock())
    assert [r.value for r in old.measure()] == [7.0]


def test_restarts_within_the_window_slide_out_when_the_loop_is_over() -> None:
    clock = Clock()
    units = {"app.service": loaded(40)}  # an old crash loop, long over
    probe = restarts_probe(units, clock, window="10m")
    assert probe.measure() == []  # the first run: nothing to compare with
    values = []
    for restarts in (40, 42, 45, 45, 45, 45, 45, 45):  # a run every 2 minutes
        clock.now += 120.0
        units["app.service"] = loaded(restarts)
        values.append(one(probe.measure()).value)
    # Whole 2-minute steps slide out: the 2 restarts first, then the 3; 10 minutes later, back to 0.
    assert values == [0.0, 2.0, 5.0, 5.0, 5.0, 5.0, 3.0, 0.0]


def test_a_manual_restart_zeroing_nrestarts_loses_only_that_step() -> None:
    clock = Clock()
    units = {"app.service": loaded(3)}
    probe = restarts_probe(units, clock, window="10m")
    probe.measure()
    clock.now += 60.0
    units["app.service"] = loaded(5)
    assert one(probe.measure()).value == 2.0
    clock.now += 60.0
    units["app.service"] = loaded(1)  # systemctl restart by hand: 0, then one automatic restart
    after = one(probe.measure())
    assert (after.value, after.details["resets"], after.details["covered"], after.details["window"]) == (
        2.0, 1, 60.0, 600.0,
    )
    assert after.details["restarts"] == 1  # the cumulative count is still in the details


def test_a_manual_restart_with_nothing_else_in_the_window_is_no_data() -> None:
    clock = Clock()
    units = {"app.service": loaded(9)}
    probe = restarts_probe(units, clock, window="10m")
    probe.measure()
    clock.now += 60.0
    units["app.service"] = loaded(0)
    reset = one(probe.measure())
    assert reset.no_data and reset.subject == "app.service"
    assert "started by hand" in reset.details["reason"]


def test_each_unit_has_its_own_window_and_a_gone_unit_forgets_it() -> None:
    clock = Clock()
    units = {"a.service": loaded(1), "b.service": loaded(10)}
    probe = restarts_probe(units, clock, window="10m")
    probe.measure()
    clock.now += 60.0
    units.update({"a.service": loaded(2), "b.service": loaded(14)})
    assert {r.subject: r.value for r in probe.measure()} == {"a.service": 1.0, "b.service": 4.0}
    clock.now += 60.0
    units["b.service"] = {"LoadState": "not-found"}
    assert [r.subject for r in probe.measure()] == ["a.service"]
    clock.now += 60.0
    units["b.service"] = loaded(20)
    assert [r.subject for r in probe.measure()] == ["a.service"]  # b starts a new window: a first run again
