"""Deltas of Redis' cumulative INFO counters between two probe runs, with resets detected.

Redis counters (``evicted_keys``, ``keyspace_hits``...) start again from
zero after a restart or ``CONFIG RESETSTAT``. A naive ``(now - before) / dt``
then goes negative or, worse, reports a huge burst. The rule here is simple
and pure: no previous sample, another ``run_id``, any counter that went
down, or no time passed -> no delta for that interval, only a new baseline.
The probe then returns no reading, which the policy treats as "nothing
breaching" (an alarm needs evidence).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class CounterSample:
    run_id: str
    at: float  # seconds; the server's clock when it reports one, else ours
    counters: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class CounterDelta:
    increase: Mapping[str, float]
    seconds: float

    def rate(self, name: str) -> float:
        return self.increase[name] / self.seconds


def info_number(info: Mapping[str, Any], name: str) -> float:
    """A numeric INFO field; a missing one means this Redis is too old or not Redis at all."""
    try:
        return float(info[name])
    except KeyError:
        raise ValueError(f"INFO has no field {name!r} (is this Redis 6.2 or newer?)") from None
    except (TypeError, ValueError):
        raise ValueError(f"INFO field {name!r} is not a number: {info[name]!r}") from None


def sample(
    server: Mapping[str, Any], stats: Mapping[str, Any], names: Iterable[str], fallback_now: float
) -> CounterSample:
    """Build a sample from ``INFO server`` and ``INFO stats``.

    The interval is measured on the server's clock (``server_time_usec``):
    it is exactly the time between the two snapshots Redis took, immune to
    network latency and to our own thread's scheduling.
    """
    server_time = server.get("server_time_usec")
    at = float(server_time) / 1e6 if server_time is not None else fallback_now
    return CounterSample(
        run_id=str(server.get("run_id", "")),
        at=at,
        counters={name: info_number(stats, name) for name in names},
    )


def delta(previous: CounterSample | None, current: CounterSample) -> CounterDelta | None:
    """How much each counter grew since ``previous``, or None when that cannot be known."""
    if previous is None or previous.run_id != current.run_id:
        return None
    seconds = current.at - previous.at
    if seconds <= 0:
        return None
    increase = {name: value - previous.counters.get(name, value) for name, value in current.counters.items()}
    if any(value < 0 for value in increase.values()):
        return None  # CONFIG RESETSTAT, or a counter that wrapped
    return CounterDelta(increase, seconds)
