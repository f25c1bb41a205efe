"""Counter deltas: first run, restart, CONFIG RESETSTAT and clock edge cases never give a rate."""

from __future__ import annotations

import pytest

from watchdogd.families.redis.counters import CounterSample, delta, info_number, sample


def at(run_id: str, seconds: float, **counters: float) -> CounterSample:
    return CounterSample(run_id, seconds, counters)


def test_normal_interval() -> None:
    result = delta(at("a", 100.0, evicted_keys=10), at("a", 110.0, evicted_keys=60))
    assert result is not None
    assert result.increase == {"evicted_keys": 50} and result.seconds == 10
    assert result.rate("evicted_keys") == 5.0


@pytest.mark.parametrize(
    ("previous", "current", "why"),
    [
        (None, at("a", 1.0, hits=5), "first run"),
        (at("a", 1.0, hits=5000), at("b", 2.0, hits=3), "restart: another run_id"),
        (at("a", 1.0, hits=5000), at("a", 2.0, hits=3), "CONFIG RESETSTAT: the counter went down"),
        (at("a", 1.0, hits=5, misses=9), at("a", 2.0, hits=9, misses=1), "one of several went down"),
        (at("a", 5.0, hits=1), at("a", 5.0, hits=2), "no time passed"),
        (at("a", 5.0, hits=1), at("a", 4.0, hits=2), "the clock went back"),
    ],
)
def test_no_delta(previous: CounterSample | None, current: CounterSample, why: str) -> None:
    assert delta(previous, current) is None, why


def test_sample_prefers_the_server_clock() -> None:
    server = {"run_id": "abc", "server_time_usec": 1_700_000_000_500_000}
    taken = sample(server, {"evicted_keys": 7}, ["evicted_keys"], fallback_now=1.0)
    assert taken == CounterSample("abc", 1_700_000_000.5, {"evicted_keys": 7.0})
    assert sample({"run_id": "abc"}, {"evicted_keys": "7"}, ["evicted_keys"], fallback_now=3.0).at == 3.0


def test_missing_or_odd_fields_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="INFO has no field 'evicted_keys'"):
        info_number({}, "evicted_keys")
    with pytest.raises(ValueError, match="not a number"):
        info_number({"evicted_keys": "lots"}, "evicted_keys")
