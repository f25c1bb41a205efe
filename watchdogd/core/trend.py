"""Trend rules (``predict:``): where a value is heading, from a least-squares line over its recent history.

Like Prometheus' ``predict_linear``: each subject keeps its recent ``(time, value)`` samples; the line
fitted over the last ``over`` seconds is read ``within`` seconds ahead, and the rule's ordinary
thresholds (``core/policy.py``, with its ``for``) compare that projected value with the line. With a
straight line the value crosses the line within the horizon iff the projection is past it, so no second
comparison is needed; the projection is never reported on the safe side of the current value, so a
value already past the line fires whatever the slope says.

Choices, and why (measured with ``bench/bench_trend.py``; table and the alternatives' figures in
``bench/README.md``, "Trend prediction accuracy"):

- **Ordinary least squares over the whole window, drops included.** A log rotation (a drop to the safe
  side) stays in the fit: the freed space is real, and a window holding a rotation or more fits the
  saw-tooth's net trend, not the ramp of one tooth. Measured on steep saw-teeth shorter than the
  window (ramps that would reach the line within the horizon): 9.6 % false positives, nearly all
  while the history is still short; restarting the fit at each drop (it then fits only the ramp):
  50 %; Theil-Sen (median of pairwise slopes): 44 %, later on bursty fills and six times the CPU.
  A single jump (a big file copied in) reads as a steep fill for as long as it is in the window:
  ``for`` does not cover that, and nothing in the window tells it from the first burst of a bursty
  fill (the benchmark prints it).
- **Minimum span** ``MIN_SPAN_FRACTION`` (half) of ``over``, besides ``min_samples``: the line is read
  ``within`` ahead, so a short history is extrapolated far (a quarter of the window projected four
  hours: 23 % false positives on those saw-teeth, 11 % on noise of sigma up to 3 without ``for``;
  half: 9.6 % and 3 %; the fill figures stay, but a one-hour fill on a subject with no history at all
  fires 20 rather than 35 minutes ahead). Until then the subject reads ``no_data`` (``"trend":
  "collecting"``): its state is held, not cleared.
- **Clock steps back** (a sample more than ``CLOCK_TOLERANCE`` before the previous one): the subject's
  history restarts, since a fit across the step would mix two time lines. A smaller step back (jitter)
  is clamped to the previous sample's time. A big step forward needs nothing: the old samples age out.
- **Bounded memory**: at most ``max_samples`` points per subject (samples closer together than
  ``over / (max_samples - 3)`` merge into their mean; the newest stays as measured, it is
  ``value_now``) and at most ``max_subjects`` subjects (the least recently seen is forgotten).
- Times and values are centred on the window's first sample before the regression: squared epoch
  seconds, or byte counts times seconds, leave too few digits for the slope.

Pure: no clock, no I/O; the engine passes ``now`` and holds the history under the rule's lock.
"""

from __future__ import annotations

import bisect
import math
import operator
from collections import OrderedDict, deque
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from watchdogd.model import Reading, no_data

__all__ = [
    "CLOCK_TOLERANCE",
    "MIN_SPAN_FRACTION",
    "Prediction",
    "Projection",
    "TrendHistory",
    "predict_readings",
    "project",
]

CLOCK_TOLERANCE = 1.0
"""Seconds a sample may be older than the previous one before the clock counts as stepped back."""

MIN_SPAN_FRACTION = 0.5
"""The samples must span at least this share of ``over`` before a line is fitted on them."""

DUMP_VERSION = 1


@dataclass(frozen=True, slots=True)
class Prediction:
    """What a rule's `predict:` asks (the config parses units into floats)."""

    above: float | None  # exactly one of above/below is set
    below: float | None
    within: float  # horizon, seconds (e.g. 4h)
    over: float  # history window the slope is fitted on, seconds (e.g. 1h)
    min_samples: int = 5  # fewer samples in the window: no prediction yet

    def __post_init__(self) -> None:
        if (self.above is None) == (self.below is None):
            raise ValueError("set exactly one of above or below")
        if not (self.within > 0 and self.over > 0 and self.min_samples >= 2):
            raise ValueError("within and over must be positive and min_samples at least 2")

    @property
    def line(self) -> float:
        """The level the projection must not cross."""
        line = self.above if self.above is not None else self.below
        assert line is not None  # __post_init__
        return line

    @property
    def min_span(self) -> float:
        """Seconds the samples must span before their line is trusted (see ``MIN_SPAN_FRACTION``)."""
        return self.over * MIN_SPAN_FRACTION


@dataclass(frozen=True, slots=True)
class Projection:
    value_now: float  # the newest sample
    projected: float  # the fitted line at now + within
    slope: float  # units per second
    crosses_at: float | None  # wall time the fitted line reaches the line; None if flat/moving away
    samples: int
    span: float  # seconds between oldest and newest sample used


def project(samples: Sequence[tuple[float, float]], now: float, prediction: Prediction) -> Projection | None:
    """The least-squares line over the samples (oldest first) in ``[now - over, now]``, read at ``now + within``.

    None when there is too little to fit (fewer than ``min_samples``, or a span shorter than
    ``min_span``): a guess from two close samples would fire on any wobble.
    """
    lo = bisect.bisect_left(samples, now - prediction.over, key=_time)
    hi = bisect.bisect_right(samples, now + CLOCK_TOLERANCE, key=_time)
    n = hi - lo
    if n < max(2, prediction.min_samples):
        return None
    t0, v0 = samples[lo]
    span = samples[hi - 1][0] - t0
    if not span >= max(prediction.min_span, 1e-9):
        return None
    # Centred on the first sample (times and values), so neither epoch seconds nor byte counts lose
    # the digits the covariance needs.
    window = samples[lo:hi]
    ts = [t - t0 for t, _ in window]
    vs = [v - v0 for _, v in window]
    mean_t = sum(ts) / n
    mean_v = sum(vs) / n
    sxx = sum(map(operator.mul, ts, ts)) - n * mean_t * mean_t
    sxy = sum(map(operator.mul, ts, vs)) - n * mean_t * mean_v
    if not (sxx > 0 and math.isfinite(sxx) and math.isfinite(sxy)):
        return None
    slope = sxy / sxx
    value_now = samples[hi - 1][1]
    centre_t, centre_v = t0 + mean_t, v0 + mean_v
    return Projection(
        value_now=value_now,
        projected=centre_v + slope * (now + prediction.within - centre_t),
        slope=slope,
        crosses_at=_crosses_at(prediction, value_now, (centre_t, centre_v), slope, now),
        samples=n,
        span=span,
    )


def _time(sample: tuple[float, float]) -> float:
    return sample[0]


def _crosses_at(
    prediction: Prediction, value_now: float, centre: tuple[float, float], slope: float, now: float
) -> float | None:
    """When the fitted line (through ``centre`` = (time, value)) reaches the line: now if the value is past
    it already, None if it never will."""
    mean_t, mean_v = centre
    line = prediction.line
    sign = 1.0 if prediction.above is not None else -1.0  # +1: the bad side is above the line
    if sign * (value_now - line) > 0:
        return now
    if not sign * slope > 0:
        return None  # flat, or heading for the safe side
    at = mean_t + (line - mean_v) / slope
    return max(now, at) if math.isfinite(at) else None


def predict_readings(
    history: TrendHistory, readings: Sequence[Reading], now: float, prediction: Prediction
) -> list[Reading]:
    """The readings the policy evaluates for a ``predict:`` rule: each value replaced by its projection.

    A ``no_data`` or non-finite reading (a probe outage the engine turned into +/-inf for
    ``on_down: fire``) passes through unchanged and adds no sample. A subject without enough
    history reads ``no_data`` (state held, not cleared).
    """
    out: list[Reading] = []
    for reading in readings:
        if reading.no_data or not math.isfinite(reading.value):
            out.append(reading)
            continue
        history.add(reading.subject, now, reading.value)
        samples = history.samples(reading.subject)
        projection = project(samples, now, prediction)
        if projection is None:
            out.append(no_data(reading.subject, {**reading.details, "trend": "collecting",
                                                 "samples": _in_window(samples, now, prediction.over)}))
            continue
        worst = max if prediction.above is not None else min
        value = worst(projection.value_now, projection.projected)
        out.append(Reading(reading.subject, value, {**reading.details, **_details(projection, now, prediction.within)}))
    history.retain({r.subject for r in readings}, now)
    return out


def _in_window(samples: Sequence[tuple[float, float]], now: float, over: float) -> int:
    return sum(1 for t, _ in samples if t >= now - over)


def _details(projection: Projection, now: float, within: float) -> dict[str, Any]:
    """What status, audit and notifications show: rounded for people, not for further maths."""
    crosses_at = projection.crosses_at
    return {
        "value_now": _significant(projection.value_now),
        "projected": _significant(projection.projected),
        "within": within,
        "slope_per_hour": _significant(projection.slope * 3600.0, 4),
        "crosses_at": None if crosses_at is None else round(crosses_at),
        "crosses_in": None if crosses_at is None else round(crosses_at - now),
        "samples": projection.samples,
    }


def _significant(x: float, digits: int = 6) -> float:
    """``x`` to ``digits`` significant digits: 87.53128 -> 87.5313, 1234567890 -> 1234570000."""
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - math.floor(math.log10(abs(x))))


# --------------------------------------------------------------------------- history


class _Series:
    """One subject's points, oldest first, and how many samples were merged into each."""

    __slots__ = ("points", "weights")

    def __init__(self) -> None:
        self.points: deque[tuple[float, float]] = deque()
        self.weights: deque[int] = deque()


class TrendHistory:
    """Per-subject bounded (time, value) samples for one rule. Not thread-safe: the rule's lock guards it."""

    def __init__(self, over: float, *, max_samples: int = 256, max_subjects: int = 1024) -> None:
        if not (over > 0 and max_samples >= 4 and max_subjects >= 1):
            raise ValueError("over must be positive, max_samples at least 4 and max_subjects at least 1")
        self.over = over
        self.max_samples = max_samples
        self.max_subjects = max_subjects
        self._bucket = over / (max_samples - 3)
        """Points closer than this merge: a window then holds at most ``max_samples - 2`` buckets and the newest."""
        self._series: OrderedDict[str, _Series] = OrderedDict()  # least recently seen first

    def __len__(self) -> int:
        return len(self._series)

    def add(self, subject: str, at: float, value: float) -> None:
        """Record one sample; NaN and infinities are ignored (they would poison every later fit)."""
        self._add(subject, at, value, 1)

    def _add(self, subject: str, at: float, value: float, weight: int) -> None:
        if not (math.isfinite(at) and math.isfinite(value)):
            return
        series = self._series.get(subject)
        if series is None:
            series = self._series[subject] = _Series()
            while len(self._series) > self.max_subjects:
                self._series.popitem(last=False)
        else:
            self._series.move_to_end(subject)
        points, weights = series.points, series.weights
        if points:
            last = points[-1][0]
            if at < last - CLOCK_TOLERANCE:
                points.clear()  # the wall clock stepped back: the old samples are on another time line
                weights.clear()
            else:
                at = max(at, last)
        points.append((at, value))
        weights.append(weight)
        self._merge(series)
        self._trim(series, at)

    def _merge(self, series: _Series) -> None:
        """Merge the two points before the newest when they fall in one bucket (the newest stays as measured)."""
        points, weights = series.points, series.weights
        if len(points) < 3:
            return
        (t1, v1), (t2, v2) = points[-3], points[-2]
        if math.floor(t1 / self._bucket) != math.floor(t2 / self._bucket):
            return
        n1, n2 = weights[-3], weights[-2]
        newest, newest_weight = points.pop(), weights.pop()
        for _ in range(2):
            points.pop()
            weights.pop()
        n = n1 + n2
        points.append(((t1 * n1 + t2 * n2) / n, (v1 * n1 + v2 * n2) / n))
        weights.append(n)
        points.append(newest)
        weights.append(newest_weight)

    def _trim(self, series: _Series, now: float) -> None:
        points, weights = series.points, series.weights
        start = now - self.over
        while points and (points[0][0] < start or len(points) > self.max_samples):
            points.popleft()
            weights.popleft()

    def samples(self, subject: str) -> Sequence[tuple[float, float]]:
        """The subject's points, oldest first (merged points at their mean time and value)."""
        series = self._series.get(subject)
        return [] if series is None else list(series.points)

    def subjects(self) -> list[str]:
        """Least recently seen first."""
        return list(self._series)

    def retain(self, subjects: Collection[str], now: float) -> None:
        """Forget subjects not listed and not seen within ``over``; age every subject's old samples out."""
        for subject in list(self._series):
            series = self._series[subject]
            self._trim(series, now)
            if not series.points and subject not in subjects:
                del self._series[subject]

    def dump(self) -> dict[str, Any]:
        """JSON-able: ``{"version", "over", "subjects": {subject: [[t, v, n], ...]}}``, least recently seen first."""
        return {
            "version": DUMP_VERSION,
            "over": self.over,
            "subjects": {
                subject: [[t, v, n] for (t, v), n in zip(series.points, series.weights, strict=True)]
                for subject, series in self._series.items()
            },
        }

    @classmethod
    def load(
        cls, data: Any, over: float, now: float, *, max_samples: int = 256, max_subjects: int = 1024
    ) -> TrendHistory:
        """Rebuild from ``dump()``; whatever is not a well-formed sample is skipped (junk gives an empty history).

        Samples older than ``now - over`` or in the future are dropped; the rest are added again, so a new
        ``over`` or ``max_samples`` re-buckets them.
        """
        history = cls(over, max_samples=max_samples, max_subjects=max_subjects)
        subjects = data.get("subjects") if isinstance(data, dict) else None
        if not isinstance(subjects, dict):
            return history
        for subject, raw in subjects.items():
            if isinstance(subject, str) and isinstance(raw, list):
                for t, v, n in sorted(_points(raw)):
                    if now - over <= t <= now + CLOCK_TOLERANCE:
                        history._add(subject, t, v, n)
        return history


def _points(raw: Iterable[Any]) -> list[tuple[float, float, int]]:
    """The well-formed ``[t, v]`` or ``[t, v, n]`` entries of a dumped subject, as numbers."""
    out = []
    for item in raw:
        if not isinstance(item, list | tuple) or len(item) not in (2, 3):
            continue
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in item):
            continue
        t, v = float(item[0]), float(item[1])
        n = int(item[2]) if len(item) == 3 else 1
        if math.isfinite(t) and math.isfinite(v) and n >= 1:
            out.append((t, v, n))
    return out
