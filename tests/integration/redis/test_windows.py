"""``window:`` on redis.hit_ratio against a private, real redis-server, judged by the real policy.

The issue's case: lookups come in bursts every 2 s, quiet in between, misses
dominating. Per interval, a quiet interval used to return no reading, which
resolved the rule and restarted its ``for``: it went pending and resolved
again and again and never fired. With a window every run sees a burst, so
the rule goes pending once and fires; once traffic stops for a whole window,
the reading is "no data" and the policy holds the firing state.

Runs are paced in real time (every 0.5 s): the window is measured on the
server's own clock, so there is no event to wait for but the time itself.
The bursts are sent between runs, so which interval holds one is exact.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from watchdogd.contracts import Probe
from watchdogd.core.policy import Thresholds, evaluate
from watchdogd.families.redis.probes import PROBES
from watchdogd.families.redis.target import RedisTarget
from watchdogd.model import Reading, Status, SubjectState, Transition

pytestmark = pytest.mark.integration

TICK = 0.5
BURST_EVERY = 4  # ticks: a burst every 2 s
HITS, MISSES = 40, 160
WINDOW = 4.0
THRESHOLDS = Thresholds(below=0.8, for_=4.0)


def make(target: RedisTarget, **params: Any) -> Probe:
    spec = PROBES["redis.hit_ratio"]
    return spec.factory(spec.params(**params), target, time.time)


def burst(admin: redis.Redis) -> None:
    with admin.pipeline(transaction=False) as pipe:
        for i in range(HITS):
            pipe.get(f"hot:{i}")
        for i in range(MISSES):
            pipe.get(f"cold:{i}")
        pipe.execute()


class Rule:
    """One rule's subject states, stepped by the real policy; keeps every transition."""

    def __init__(self) -> None:
        self.states: dict[str, SubjectState] = {}
        self.transitions: list[Transition] = []

    def step(self, readings: list[Reading]) -> None:
        evaluation = evaluate(self.states, readings, THRESHOLDS, time.time())
        self.states = evaluation.states
        self.transitions += evaluation.transitions

    def kinds(self) -> list[tuple[Status, Status]]:
        return [(t.old, t.new) for t in self.transitions]


def test_bursty_traffic_fires_once_with_a_window_and_a_quiet_window_is_no_data(
    target: RedisTarget, admin: redis.Redis
) -> None:
    admin.mset({f"hot:{i}": i for i in range(HITS)})
    windowed = make(target, window=f"{WINDOW:g}s", min_lookups=100)
    interval = make(target, min_lookups=100)
    windowed_rule, interval_rule = Rule(), Rule()
    started = time.monotonic()

    def run(tick: int) -> tuple[list[Reading], list[Reading]]:
        time.sleep(max(0.0, started + tick * TICK - time.monotonic()))  # pacing: the window is real time
        found = windowed.measure(), interval.measure()
        windowed_rule.step(found[0])
        interval_rule.step(found[1])
        return found

    # Bursts at ticks 0, 4, 8, 12, each right after that tick's runs.
    interval_kinds: list[str] = []
    for tick in range(14):
        by_window, by_interval = run(tick)
        if tick == 0:
            assert by_window == [] and by_interval == []  # the first run: nothing to compare with
        else:
            (reading,) = by_window
            assert not reading.no_data, (tick, reading)  # every window holds a burst
            assert reading.value == pytest.approx(HITS / (HITS + MISSES))
            assert reading.details["window"] == WINDOW and 0 < reading.details["covered"] <= WINDOW
            assert reading.details["hits"] >= HITS and reading.details["misses"] >= MISSES
            (plain,) = by_interval
            interval_kinds.append("no_data" if plain.no_data else "reading")
        if tick % BURST_EVERY == 0:
            burst(admin)

    # Per interval, only the run right after a burst sees lookups; the others are no data (not silence).
    expected = ["reading" if tick % BURST_EVERY == 1 else "no_data" for tick in range(1, 14)]
    assert interval_kinds == expected
    # With the window: pending once, then firing, never resolved in between.
    assert windowed_rule.kinds() == [(Status.OK, Status.PENDING), (Status.PENDING, Status.FIRING)]
    # Without it, no data holds the pending timer, so the rule fires too, late (at a run with lookups).
    assert interval_rule.kinds() == [(Status.OK, Status.PENDING), (Status.PENDING, Status.FIRING)]

    # Traffic stops: once the last burst's step slides out of the window, the window is too quiet to judge.
    tick, quiet = 14, None
    while quiet is None and tick < 14 + int(2 * WINDOW / TICK):
        (reading,), _ = run(tick)
        if reading.no_data:
            quiet = reading
        tick += 1
    assert quiet is not None, "the window never went quiet"
    assert time.monotonic() - started >= 12 * TICK + WINDOW  # not before the last burst slid out
    assert quiet.details["hits"] == 0 and quiet.details["misses"] == 0
    assert quiet.details["reason"] == "0 lookups, fewer than min_lookups (100)"
    assert windowed_rule.states["keyspace"].status is Status.FIRING  # held: quiet is not recovery
    assert len(windowed_rule.transitions) == 2
