"""Increases of Redis' cumulative INFO counters, per interval or over a window, with resets detected.

Redis counters (``evicted_keys``, ``keyspace_hits``...) start again from
zero after a restart or ``CONFIG RESETSTAT``. A naive ``(now - before) / dt``
then goes negative or, worse, reports a huge burst. Per interval the rule is
simple and pure: no previous sample, another ``run_id``, any counter that
went down, or no time passed -> no delta for that interval, only a new
baseline. Over a window (:mod:`watchdogd.counterwindow`) a reset costs only
the step across it. Either way :class:`Tracker` says why there is nothing
to say (:class:`Gap`), and the probe turns that into "no data", which holds
the rule's state: a restart is no evidence of recovery either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from watchdogd.counterwindow import Added, CounterWindow

GAP_FIRST = "first sample: nothing to compare with yet"
GAP_RESTARTED = "Redis restarted (another run_id): its counters started again"
GAP_RESET = "a counter went down (CONFIG RESETSTAT): counters started again"
GAP_CLOCK = "the server's clock did not move forward"


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


def gap_reason(previous: CounterSample, current: CounterSample) -> str:
    """Why ``delta(previous, current)`` is None, in words for the reading's details."""
    if previous.run_id != current.run_id:
        return GAP_RESTARTED
    if current.at <= previous.at:
        return GAP_CLOCK
    return GAP_RESET


_GAP_OF_ADDED: Mapping[Added, str] = {
    Added.FIRST: GAP_FIRST,
    Added.RESET: GAP_RESET,
    Added.CLOCK_BACK: GAP_CLOCK,
    Added.STEP: "no second of the window observed yet",
}


@dataclass(frozen=True, slots=True)
class Observed:
    """Increases over one interval (``window`` None) or over a window's observed part."""

    increase: Mapping[str, float]
    seconds: float
    window: float | None = None
    resets: int = 0

    def rate(self, name: str) -> float:
        return self.increase[name] / self.seconds

    def details(self) -> dict[str, Any]:
        """What the reading shows of the time base: the interval, or the window and how much of it was seen."""
        if self.window is None:
            return {"interval": round(self.seconds, 3)}
        found: dict[str, Any] = {"window": self.window, "covered": round(self.seconds, 3)}
        if self.resets:
            found["resets"] = self.resets
        return found


@dataclass(frozen=True, slots=True)
class Gap:
    """Nothing to say this run, and why; ``first`` when there was never anything to compare with."""

    reason: str
    first: bool = False
    window: float | None = None

    def details(self) -> dict[str, Any]:
        return {"reason": self.reason} if self.window is None else {"reason": self.reason, "window": self.window}


class Tracker:
    """The previous sample (per interval) or a :class:`CounterWindow` (``window`` seconds) of one probe."""

    def __init__(self, window: float | None) -> None:
        self._window = None if window is None else CounterWindow(window)
        self._previous: CounterSample | None = None

    def add(self, current: CounterSample) -> Observed | Gap:
        previous, self._previous = self._previous, current
        if self._window is None:
            if previous is None:
                return Gap(GAP_FIRST, first=True)
            found = delta(previous, current)
            return Gap(gap_reason(previous, current)) if found is None else Observed(found.increase, found.seconds)
        added = self._window.add(current.at, current.run_id, current.counters)
        if added is Added.RESET and previous is not None and previous.run_id != current.run_id:
            reason = GAP_RESTARTED
        else:
            reason = _GAP_OF_ADDED[added]
        seen = None if added is Added.FIRST else self._window.increase()
        if seen is None:
            return Gap(reason, first=added is Added.FIRST, window=self._window.window)
        return Observed(seen.increase, seen.seconds, self._window.window, seen.resets)
