"""Trend prediction accuracy: synthetic fill curves through ``predict_readings`` and the real policy.

Each curve is one subject sampled every ``--every`` seconds (with up to a second of start jitter, as
the scheduler has); every sample goes through ``core.trend.predict_readings`` and then
``core.policy.evaluate`` with ``Thresholds(above=line, clear_above=..., for_=..., for_slack=every/4)``,
exactly as the engine runs a ``predict:`` rule. The history starts empty with each curve (a new
subject, or a restart without saved history), so the first ``over`` of every curve is a warm-up.

Per shape it prints: how many curves reach the line (their own samples pass it), how many of those
fired, the lead time (minutes from the firing to the first sample past the line; negative: late), the
share fired at least 30 minutes ahead, and what fired wrongly: *early* (a curve that reaches the line,
but more than ``within`` after the firing) and *false positives* (a curve that never reaches it).
Together they are the issue's "fired on a curve that never reaches the line within the horizon".

Shapes (``--curves`` each, fixed ``--seed``; values are percent of a disk):

- linear: flat at 20-80 % for 0-2 h (the daemon was running before the fill started), then a
  straight line that reaches the line in 1-12 h.
- noisy: the same with Gaussian noise, sigma 0.1-1.0 points.
- bursty: the same lead-in, then batch writes: plateaus of 0.5-1.5 x a typical gap of 5-30 min, each
  ended by a 1-5 min burst; the staircase reaches the line in 1-12 h.
- step: flat, then at 1-3 h one jump (a big file copied in) and flat again, 6 h per curve; half end
  above the line, half below. A jump cannot be seen coming: its best lead time is minus the ``for``.
- saw-tooth: a log grows from a base of 20-70 % and is rotated away every 15 min - 6 h (log-uniform,
  random phase), sigma 0.05 noise, never reaching the line; 12 h per curve. From the top of a tooth
  the log would need 1.25-8 horizons to fill the rest of the headroom if no rotation came.
- steep saw-tooth: the same, but 0.25-1 horizon from the top: every ramp is, on its own, a fill that
  reaches the line within the horizon. No target (see bench/README.md): printed so the cost is known.
- noise: a flat level of 30-90 % with Gaussian noise (sigma 0.1-1.0, level + 5 sigma below the line);
  12 h per curve.

Targets (the issue): linear, noisy and bursty fills fired >= 30 min ahead in >= 95 % of curves;
<= 5 % false positives on saw-tooth and noise.

    python bench/bench_trend.py [--quick] [--curves 300] [--every 30s] [--line 95] [--within 4h]
                                [--over 1h] [--for 10m] [--clear-above 90|none] [--seed 1] [--jobs N]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from watchdogd.core.policy import Thresholds, evaluate
from watchdogd.core.trend import Prediction, TrendHistory, predict_readings
from watchdogd.model import Reading, Status, SubjectState

MIN = 60.0
HOUR = 3600.0
EPOCH = 1_700_000_000.0
LEAD_TARGET = 30 * MIN
DETECT_TARGET = 0.95
FP_TARGET = 0.05
GRACE = 10 * MIN
"""How long after the line is passed a replay goes on (plus the ``for``): a late firing still counts as detected."""


@dataclass(frozen=True)
class Params:
    every: float
    line: float
    within: float
    over: float
    for_: float
    clear_above: float | None

    @property
    def prediction(self) -> Prediction:
        return Prediction(above=self.line, below=None, within=self.within, over=self.over)

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(above=self.line, clear_above=self.clear_above, for_=self.for_, for_slack=self.every / 4)


@dataclass(frozen=True)
class Curve:
    values: Sequence[float]
    """One value per step of ``every``."""
    band: str = ""
    """A breakdown the table also prints apart (the saw-tooth's period, where the step ends)."""


@dataclass
class Outcome:
    reach: float | None  # seconds from the start when a sample first passed the line
    fired: list[float] = field(default_factory=list)  # when each firing episode started
    lead: float | None = None  # reach - start of the episode firing at the reach (or starting within the grace)
    band: str = ""
    early: bool = False  # reaches the line, but a firing started more than ``within`` before it
    warm_up: bool = False  # fired within the first ``over``, while the history did not fill the window yet

    @property
    def false_positive(self) -> bool:
        return self.reach is None and bool(self.fired)


# --------------------------------------------------------------------------- shapes


def _fill(rng: random.Random, p: Params, noise: float) -> Curve:
    start = rng.uniform(20.0, 80.0)
    fill = rng.uniform(1 * HOUR, 12 * HOUR)
    lead_in = rng.uniform(0.0, 2 * HOUR)
    rate = (p.line - start) / fill
    n = int((lead_in + fill + HOUR) / p.every)
    return Curve([start + rate * max(0.0, i * p.every - lead_in) + (rng.gauss(0.0, noise) if noise else 0.0)
                  for i in range(n)])


def linear(rng: random.Random, p: Params) -> Curve:
    return _fill(rng, p, 0.0)


def noisy(rng: random.Random, p: Params) -> Curve:
    return _fill(rng, p, rng.uniform(0.1, 1.0))


def bursty(rng: random.Random, p: Params) -> Curve:
    """Each burst writes what the average rate would have since the last one (x 0.5-1.5).

    The plateaus stay shorter than the default window (45 min at most): a plateau longer than
    ``over`` followed by a jump is a step (see ``step``), not a trend.
    """
    start = rng.uniform(20.0, 70.0)
    fill = rng.uniform(1 * HOUR, 12 * HOUR)
    lead_in = rng.uniform(0.0, 2 * HOUR)
    typical_gap = rng.uniform(5 * MIN, 30 * MIN)
    rate = (p.line - start) / fill
    values: list[float] = [start] * int(lead_in / p.every)
    v = start
    while v <= p.line:
        gap = rng.uniform(0.5, 1.5) * typical_gap
        values.extend([v] * max(1, round(gap / p.every)))
        burst_steps = max(1, round(rng.uniform(1 * MIN, 5 * MIN) / p.every))
        size = rate * (gap + burst_steps * p.every) * rng.uniform(0.5, 1.5)
        values.extend(v + size * k / burst_steps for k in range(1, burst_steps + 1))
        v += size
    values.extend([v] * int(HOUR / p.every))
    return Curve(values)


def step(rng: random.Random, p: Params) -> Curve:
    start = rng.uniform(20.0, 80.0)
    at = rng.uniform(1 * HOUR, 3 * HOUR)
    if rng.random() < 0.5:
        after, band = rng.uniform(p.line + 1, 99.5), "ends above"
    else:
        after, band = start + rng.uniform(0.2, 0.95) * (p.line - 0.5 - start), "ends below"
    return Curve([start if i * p.every < at else after for i in range(int(6 * HOUR / p.every))], band)


def sawtooth(rng: random.Random, p: Params, steep: bool = False) -> Curve:
    """A log that grows and is rotated away, never reaching the line.

    Its steepness is how long the log would take to fill the rest of the headroom from the top of a
    tooth if no rotation came, in horizons: 1.25-8 (``steep``: 0.25-1, so every ramp on its own is a
    fill that would reach the line within the horizon), log-uniform.
    """
    base = rng.uniform(20.0, 70.0)
    headroom = p.line - base
    period = math.exp(rng.uniform(math.log(15 * MIN), math.log(6 * HOUR)))
    low, high = (0.25, 1.0) if steep else (1.25, 8.0)
    from_top = p.within * math.exp(rng.uniform(math.log(low), math.log(high)))
    amplitude = headroom * period / (period + from_top)
    phase = rng.uniform(0.0, period)
    values = [base + amplitude * (((i * p.every + phase) % period) / period) + rng.gauss(0.0, 0.05)
              for i in range(int(12 * HOUR / p.every))]
    return Curve(values, "period <= over" if period <= p.over else "period > over")


def steep_sawtooth(rng: random.Random, p: Params) -> Curve:
    return sawtooth(rng, p, steep=True)


def noise(rng: random.Random, p: Params) -> Curve:
    sigma = rng.uniform(0.1, 1.0)
    level = rng.uniform(30.0, min(90.0, p.line - 5 * sigma))
    return Curve([level + rng.gauss(0.0, sigma) for _ in range(int(12 * HOUR / p.every))])


@dataclass(frozen=True)
class Shape:
    make: Callable[[random.Random, Params], Curve]
    target: str  # "lead": fired >= 30 min ahead; "fp": false positives; "": reported only


SHAPES: dict[str, Shape] = {
    "linear": Shape(linear, "lead"),
    "noisy": Shape(noisy, "lead"),
    "bursty": Shape(bursty, "lead"),
    "step": Shape(step, ""),
    "saw-tooth": Shape(sawtooth, "fp"),
    "noise": Shape(noise, "fp"),
    "steep saw-tooth": Shape(steep_sawtooth, ""),
}


# --------------------------------------------------------------------------- replay


def replay(curve: Curve, p: Params, rng: random.Random) -> Outcome:
    """One curve through predict_readings + evaluate, as the engine runs a predict: rule."""
    values = curve.values
    reach_index = next((i for i, v in enumerate(values) if v > p.line), None)
    stop = len(values)
    if reach_index is not None:
        stop = min(stop, reach_index + int((p.for_ + GRACE) / p.every) + 1)
    history = TrendHistory(p.over)
    prediction, thresholds = p.prediction, p.thresholds
    states: dict[str, SubjectState] = {}
    out = Outcome(None if reach_index is None else reach_index * p.every, band=curve.band)
    t0 = EPOCH + rng.uniform(0.0, 86400.0)
    firing_at_reach: float | None = None
    for i in range(stop):
        now = t0 + i * p.every + rng.uniform(0.0, 1.0)
        readings = predict_readings(history, [Reading("/", values[i])], now, prediction)
        evaluation = evaluate(states, readings, thresholds, now)
        states = evaluation.states
        out.fired.extend(i * p.every for change in evaluation.transitions if change.new is Status.FIRING)
        if i == reach_index and states["/"].status is Status.FIRING:
            firing_at_reach = out.fired[-1]
    out.warm_up = bool(out.fired) and out.fired[0] < p.over
    if out.reach is not None:
        out.early = any(out.reach - f > p.within for f in out.fired)
        later = [f for f in out.fired if f >= out.reach]
        if firing_at_reach is not None:
            out.lead = out.reach - firing_at_reach
        elif later:
            out.lead = out.reach - later[0]
    return out


def run_curve(job: tuple[str, int, int, Params]) -> Outcome:
    """One curve of a shape; its own seeded generator, so the figures do not depend on ``--jobs``."""
    shape, index, seed, p = job
    rng = random.Random(f"{seed}-{shape}-{index}")
    return replay(SHAPES[shape].make(rng, p), p, rng)


# --------------------------------------------------------------------------- report


def nearest_rank(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def minutes(x: float | None) -> str:
    return "-" if x is None else f"{x / MIN:.0f}"


def share(part: int, whole: int) -> str:
    return "-" if whole == 0 else f"{part} ({100.0 * part / whole:.1f}%)"


@dataclass
class Row:
    shape: str
    outcomes: list[Outcome]

    @property
    def reaching(self) -> int:
        return sum(1 for o in self.outcomes if o.reach is not None)

    @property
    def leads(self) -> list[float]:
        return [o.lead for o in self.outcomes if o.lead is not None]

    @property
    def ahead(self) -> int:
        return sum(1 for lead in self.leads if lead >= LEAD_TARGET)

    @property
    def early(self) -> int:
        return sum(1 for o in self.outcomes if o.early)

    @property
    def false_positives(self) -> int:
        return sum(1 for o in self.outcomes if o.false_positive)

    @property
    def false_in_warm_up(self) -> int:
        return sum(1 for o in self.outcomes if o.false_positive and o.warm_up)

    def cells(self) -> list[str]:
        n, reaching = len(self.outcomes), self.reaching
        return [
            self.shape, str(n), str(reaching), share(len(self.leads), reaching),
            minutes(nearest_rank(self.leads, 0.05)), minutes(nearest_rank(self.leads, 0.5)),
            share(self.ahead, reaching), share(self.early, reaching), share(self.false_positives, n - reaching),
            str(self.false_in_warm_up) if n > reaching else "-",
        ]


HEADER = ["shape", "curves", "reach the line", "fired", "lead p5 (min)", "lead p50 (min)", ">= 30 min ahead",
          "early (> within ahead)", "false positives (never reach)", "of which in the first over"]


def table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def verdicts(rows: dict[str, Row]) -> list[tuple[bool, str]]:
    out = []
    for name, shape in SHAPES.items():
        row = rows[name]
        if shape.target == "lead":
            ratio = row.ahead / max(1, row.reaching)
            out.append((ratio >= DETECT_TARGET, f"{name}: {100 * ratio:.1f}% of fills fired >= 30 min ahead "
                        f"(target >= {100 * DETECT_TARGET:.0f}%)"))
        elif shape.target == "fp":
            ratio = row.false_positives / max(1, len(row.outcomes))
            out.append((ratio <= FP_TARGET, f"{name}: false positives {100 * ratio:.1f}% "
                        f"(target <= {100 * FP_TARGET:.0f}%)"))
    return out


def summary(rows: dict[str, Row]) -> str:
    """One line for bench/run's table (it shows a script's last two lines)."""
    ahead = ", ".join(f"{name} {100 * rows[name].ahead / max(1, rows[name].reaching):.1f}%"
                      for name, shape in SHAPES.items() if shape.target == "lead")
    fp = ", ".join(f"{name} {100 * rows[name].false_positives / max(1, len(rows[name].outcomes)):.1f}%"
                   for name, shape in SHAPES.items() if shape.target == "fp")
    return f"trend: fired >= 30 min ahead {ahead}; false positives {fp}"


def duration(raw: str) -> float:
    units = {"s": 1.0, "m": MIN, "h": HOUR, "d": 24 * HOUR}
    return float(raw[:-1]) * units[raw[-1]] if raw[-1:] in units else float(raw)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="40 curves per shape (a few seconds)")
    ap.add_argument("--curves", type=int, default=300, help="curves per shape (default 300)")
    ap.add_argument("--every", type=duration, default=30.0, help="sampling interval (default 30s)")
    ap.add_argument("--line", type=float, default=95.0, help="predict.above, percent (default 95)")
    ap.add_argument("--within", type=duration, default=4 * HOUR, help="horizon (default 4h)")
    ap.add_argument("--over", type=duration, default=1 * HOUR, help="fit window (default 1h)")
    ap.add_argument("--for", dest="for_", type=duration, default=10 * MIN, help="the rule's for (default 10m)")
    ap.add_argument("--clear-above", type=lambda raw: None if raw == "none" else float(raw), default=90.0,
                    help="the rule's clear_above (default 90, as the shipped disk-filling rule; 'none')")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: one per CPU)")
    args = ap.parse_args(argv)
    p = Params(args.every, args.line, args.within, args.over, args.for_, args.clear_above)
    curves = 40 if args.quick else args.curves
    print(f"every {p.every:g}s, predict above {p.line:g} within {p.within / HOUR:g}h over {p.over / HOUR:g}h, "
          f"for {p.for_ / MIN:g}m, clear_above {p.clear_above}; {curves} curves per shape, seed {args.seed}")
    started = time.monotonic()
    jobs = [(name, i, args.seed, p) for name in SHAPES for i in range(curves)]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            outcomes = list(pool.map(run_curve, jobs, chunksize=8))
    else:
        outcomes = [run_curve(job) for job in jobs]
    rows = {name: Row(name, outcomes[k * curves:(k + 1) * curves]) for k, name in enumerate(SHAPES)}
    bands = [Row(f"{name}, {band}", [o for o in row.outcomes if o.band == band])
             for name, row in rows.items() for band in sorted({o.band for o in row.outcomes if o.band})]
    print()
    print(table([*rows.values(), *bands]))
    print()
    results = verdicts(rows)
    for ok, line in results:
        print(("PASS  " if ok else "FAIL  ") + line)
    print(f"{len(jobs)} curves in {time.monotonic() - started:.1f} s ({args.jobs} jobs)")
    failed = sum(1 for ok, _ in results if not ok)
    print(summary(rows))
    print(f"verdict: {'every target met' if not failed else f'{failed} target(s) missed'}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
