"""How much cumulative counters grew over a sliding time window, surviving resets, in bounded memory.

Rate and ratio probes (Redis hits and misses, evictions, a unit's
``NRestarts``) read counters that only grow, except when they start again
from zero: a server restart, ``CONFIG RESETSTAT``, a manual ``systemctl
restart``. Judged over one interval, sparse traffic makes a ratio come and
go with every quiet interval, and a rule's ``for`` never completes; judged
over a window, one burst keeps speaking for the whole window.

The window keeps *steps* (the increase between two consecutive samples)
rather than samples, and sums them, so a reset costs only the step across
it: that step is kept as "lost" (no increase, no covered seconds) and the
steps before and after it still count. A Prometheus-style "the new value
is all increase" guess is not made: after a restart the new value may
include anything from the whole life of the new counter (a ``NRestarts``
zeroed by hand and then grown for hours before the next sample), and a
watchdog must not alarm on a guess.

Only whole steps that began inside the window count, so the seconds
covered are at most the window (less while it fills, or after a reset)
and a rate is the increase over the seconds actually covered. The newest
step always counts, even when it is longer than the window: an interval
longer than the window then degrades to per-interval behaviour instead of
never answering.

Pure and stdlib only: the caller passes the time of each sample, which may
be a server's clock (Redis' ``server_time_usec``) or a monotonic one.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_STEPS", "Added", "CounterWindow", "WindowIncrease"]

DEFAULT_MAX_STEPS = 120
"""Steps kept per window: a 5 m window at a 15 s interval needs 20; a 1 d window at 1 s is thinned to 12 m
steps. About 330 bytes a step with two counters, so under 40 KiB for a full window (measured)."""


class Added(enum.Enum):
    """What a sample did to the window, so a caller can tell "first look" from "counters restarted"."""

    FIRST = "first"
    """The first sample: a baseline, nothing to compare with yet."""
    STEP = "step"
    """An ordinary step: every counter grew or stayed, in the same epoch."""
    RESET = "reset"
    """The epoch changed or a counter went down: the step across is lost, the steps before it stay."""
    CLOCK_BACK = "clock_back"
    """Time went backwards (a clock step): nothing before can be placed in the window, which starts again."""


@dataclass(frozen=True, slots=True)
class WindowIncrease:
    """The window's answer: the summed increases and the seconds of steps they were observed over."""

    increase: Mapping[str, float]
    seconds: float
    """Seconds actually covered: the window's steps, less the ones lost to resets. Always > 0."""
    resets: int
    """Steps in the window lost to a reset (epoch change, a counter going down)."""

    def rate(self, name: str) -> float:
        return self.increase[name] / self.seconds


@dataclass(slots=True)
class _Step:
    start: float
    end: float
    increase: dict[str, float] | None
    """None: the step across a reset, whose increase cannot be known."""


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float
    epoch: str
    values: dict[str, float]


class CounterWindow:
    """A sliding window over samples ``(at, epoch, {name: value})`` of cumulative counters.

    ``epoch`` is whatever says "these counters started again" (Redis'
    ``run_id``); any counter going down says it too. At most ``max_steps``
    steps are kept: when samples come faster than ``window / (max_steps -
    1)``, consecutive steps are merged into one, which makes the window
    slide in coarser steps but never changes a sum.
    """

    def __init__(self, window: float, max_steps: int = DEFAULT_MAX_STEPS) -> None:
        if not (math.isfinite(window) and window > 0):
            raise ValueError(f"window must be a positive number of seconds, got {window!r}")
        if max_steps < 2:
            raise ValueError(f"max_steps must be at least 2, got {max_steps!r}")
        self.window = float(window)
        self._max_steps = max_steps
        self._min_span = self.window / (max_steps - 1)
        self._steps: deque[_Step] = deque()
        self._last: _Sample | None = None

    @property
    def steps(self) -> int:
        """Steps kept (lost ones included): what the bound applies to. Not ``__len__``: an empty window is
        still a window (its baseline counts), and must not be falsy."""
        return len(self._steps)

    def add(self, at: float, epoch: str, values: Mapping[str, float]) -> Added:
        """Take a sample; ``at`` in seconds on any clock that the caller keeps using."""
        sample = _Sample(_finite("at", at), epoch, {name: _finite(name, value) for name, value in values.items()})
        last, self._last = self._last, sample
        if last is None:
            return Added.FIRST
        if sample.at < last.at:
            self._steps.clear()
            return Added.CLOCK_BACK
        common = sample.values.keys() & last.values.keys()
        if sample.epoch != last.epoch or any(sample.values[name] < last.values[name] for name in common):
            self._append(_Step(last.at, sample.at, None))
            self._slide(sample.at)
            return Added.RESET
        increase = {name: value - last.values.get(name, value) for name, value in sample.values.items()}
        newest = self._steps[-1] if self._steps else None
        if (
            newest is not None
            and newest.increase is not None
            and newest.end == last.at
            and newest.end - newest.start < self._min_span
        ):
            newest.end = sample.at  # samples faster than the bound allows: extend the newest step
            for name, value in increase.items():
                newest.increase[name] = newest.increase.get(name, 0.0) + value
        else:
            self._append(_Step(last.at, sample.at, increase))
        self._slide(sample.at)
        return Added.STEP

    def increase(self) -> WindowIncrease | None:
        """Each counter's increase over the window ending at the newest sample; None when no second is covered.

        Counters are those of the newest sample; one absent from some
        steps (new since) counts only where it was present.
        """
        if self._last is None:
            return None
        counted = [step for step in self._steps if step.increase is not None]
        seconds = sum(step.end - step.start for step in counted)
        if seconds <= 0:
            return None
        total = {
            name: sum(step.increase.get(name, 0.0) for step in counted if step.increase is not None)
            for name in self._last.values
        }
        return WindowIncrease(total, seconds, len(self._steps) - len(counted))

    def _append(self, step: _Step) -> None:
        self._steps.append(step)
        while len(self._steps) > self._max_steps:  # only resets get here: merging bounds the other steps
            self._steps.popleft()

    def _slide(self, now: float) -> None:
        """Drop steps that began before the window; the newest step always stays."""
        start = now - self.window
        while len(self._steps) > 1 and self._steps[0].start < start:
            self._steps.popleft()


def _finite(name: str, value: float) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number
