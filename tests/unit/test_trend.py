"""The trend estimator (core/trend.py): fit, projection, history bounds, clock steps, persistence.

Pure: every time is a number passed in. Accuracy on realistic curves is measured in
bench/bench_trend.py, not asserted here.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from watchdogd.core.policy import Thresholds, evaluate
from watchdogd.core.trend import (
    CLOCK_TOLERANCE,
    Prediction,
    TrendHistory,
    predict_readings,
    project,
)
from watchdogd.model import Reading, Status, SubjectState, no_data

T0 = 1_700_000_000.0  # epoch seconds: the precision has to hold at this magnitude
HOUR = 3600.0
UP = Prediction(above=95.0, below=None, within=4 * HOUR, over=HOUR)
DOWN = Prediction(above=None, below=10.0, within=4 * HOUR, over=HOUR)
INF = float("inf")


def line(start: float, per_hour: float, *, every: float = 30.0, span: float = HOUR, t0: float = T0) -> list[
        tuple[float, float]]:
    """Samples of a straight line from t0 to t0 + span inclusive."""
    n = round(span / every)
    return [(t0 + i * every, start + per_hour * i * every / HOUR) for i in range(n + 1)]


def feed(history: TrendHistory, samples: list[tuple[float, float]], prediction: Prediction = UP,
         subject: str = "/") -> list[Reading]:
    """Every sample through predict_readings, as the engine's runs would; the last run's readings."""
    out: list[Reading] = []
    for t, v in samples:
        out = predict_readings(history, [Reading(subject, v, {"mountpoint": subject})], t, prediction)
    return out


# --------------------------------------------------------------------------- the fit


def test_clean_line_gives_its_exact_slope_and_projection() -> None:
    samples = line(50.0, 10.0)  # 50 % rising 10 points an hour, one full window
    now = samples[-1][0]
    p = project(samples, now, UP)
    assert p is not None
    assert p.slope * HOUR == pytest.approx(10.0, rel=1e-9)
    assert p.value_now == pytest.approx(60.0)
    assert p.projected == pytest.approx(60.0 + 40.0, rel=1e-9)  # 4 h ahead at 10/h
    assert p.crosses_at == pytest.approx(now + 3.5 * HOUR, abs=1e-3)  # 60 -> 95 at 10/h
    assert (p.samples, p.span) == (121, HOUR)


def test_epoch_timestamps_and_byte_sized_values_keep_their_precision() -> None:
    # 1 TB disk growing 1 MB/s: uncentred sums of t*v would be ~1e21 and lose the slope entirely.
    samples = [(T0 + i * 30.0, 1e12 + 1e6 * i * 30.0) for i in range(121)]
    p = project(samples, samples[-1][0], Prediction(above=2e12, below=None, within=HOUR, over=HOUR))
    assert p is not None
    assert p.slope == pytest.approx(1e6, rel=1e-9)
    assert p.projected == pytest.approx(samples[-1][1] + 3600e6, rel=1e-12)


def test_below_line_projects_down_and_crosses() -> None:
    samples = line(40.0, -5.0)  # free space falling 5 points an hour: 35 now
    now = samples[-1][0]
    p = project(samples, now, DOWN)
    assert p is not None
    assert p.projected == pytest.approx(15.0)
    assert p.crosses_at == pytest.approx(now + 5 * HOUR, abs=1e-3)  # 35 -> 10 at 5/h: beyond the horizon


@pytest.mark.parametrize(
    ("prediction", "per_hour"),
    [(UP, 0.0), (UP, -3.0), (DOWN, 0.0), (DOWN, 3.0)],
    ids=["above-flat", "above-falling", "below-flat", "below-rising"],
)
def test_flat_or_moving_away_never_crosses(prediction: Prediction, per_hour: float) -> None:
    samples = line(50.0, per_hour)
    p = project(samples, samples[-1][0], prediction)
    assert p is not None
    assert p.crosses_at is None


def test_a_value_past_the_line_crosses_now_whatever_the_slope() -> None:
    samples = line(99.0, -1.0)  # 98 % and falling slowly: still past the line
    now = samples[-1][0]
    p = project(samples, now, UP)
    assert p is not None
    assert p.crosses_at == now


def test_only_the_window_is_fitted() -> None:
    # An hour falling, then an hour rising: over=1h sees only the rise.
    falling = line(80.0, -20.0, span=HOUR)
    rising = line(60.0, 10.0, span=HOUR, t0=falling[-1][0] + 30.0)
    p = project(falling + rising, rising[-1][0], UP)
    assert p is not None
    assert p.slope * HOUR == pytest.approx(10.0, rel=1e-6)


@pytest.mark.parametrize(
    "samples",
    [[], [(T0, 50.0)], [(T0, 50.0)] * 10, [(T0 + i, 50.0) for i in range(4)]],
    ids=["none", "one", "all-at-one-time", "fewer-than-min-samples"],
)
def test_too_little_to_fit_is_none_never_a_division_by_zero(samples: list[tuple[float, float]]) -> None:
    assert project(samples, T0 + 5, UP) is None


def test_a_span_under_half_the_window_is_not_trusted() -> None:
    short = line(50.0, 10.0, span=29 * 60.0)  # 59 samples over 29 min: enough samples, too short a span
    assert project(short, short[-1][0], UP) is None
    half = line(50.0, 10.0, span=HOUR / 2)
    p = project(half, half[-1][0], UP)
    assert p is not None
    assert p.projected == pytest.approx(55.0 + 40.0)


def test_non_finite_samples_give_no_projection() -> None:
    samples = line(50.0, 10.0)
    samples[60] = (samples[60][0], math.inf)
    assert project(samples, samples[-1][0], UP) is None


def test_prediction_needs_exactly_one_line() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Prediction(above=1.0, below=2.0, within=HOUR, over=HOUR)
    with pytest.raises(ValueError, match="exactly one"):
        Prediction(above=None, below=None, within=HOUR, over=HOUR)
    with pytest.raises(ValueError, match="positive"):
        Prediction(above=1.0, below=None, within=0.0, over=HOUR)


# --------------------------------------------------------------------------- predict_readings


def test_collecting_reads_no_data_with_the_count_then_projects() -> None:
    history = TrendHistory(HOUR)
    samples = line(50.0, 10.0)
    (first,) = feed(history, samples[:3])
    assert first.no_data and math.isnan(first.value)
    assert first.details == {"mountpoint": "/", "trend": "collecting", "samples": 3}
    last = feed(history, samples[3:])
    (reading,) = last
    assert not reading.no_data
    assert reading.value == pytest.approx(100.0)
    assert reading.details["mountpoint"] == "/"  # the probe's details stay
    assert reading.details == {
        "mountpoint": "/", "value_now": 60.0, "projected": 100.0, "within": 4 * HOUR, "slope_per_hour": 10.0,
        "crosses_at": round(samples[-1][0] + 3.5 * HOUR), "crosses_in": round(3.5 * HOUR), "samples": 121,
    }


def test_collecting_holds_a_pending_subject_in_the_policy() -> None:
    """The point of no_data: a restart without history must not clear a pending or firing subject."""
    th = Thresholds(above=95.0, for_=600.0)
    prev = {"/": SubjectState(Status.PENDING, T0 - 300.0, 120.0, T0 - 30.0)}
    readings = predict_readings(TrendHistory(HOUR), [Reading("/", 80.0)], T0, UP)
    assert readings[0].no_data
    assert evaluate(prev, readings, th, T0).states["/"] == prev["/"]


def test_the_reading_is_never_on_the_safe_side_of_the_value() -> None:
    falling = line(99.0, -2.0)  # 97 % now, falling: the projection (89) is below the line, the value is not
    (reading,) = feed(TrendHistory(HOUR), falling)
    assert reading.value == pytest.approx(97.0)
    assert reading.details["projected"] == pytest.approx(89.0)
    assert reading.details["crosses_in"] == 0
    rising = line(20.0, 2.0)  # free space 22 % and rising: reads 22, not the projected 30
    (reading,) = feed(TrendHistory(HOUR), rising, DOWN)
    assert reading.value == pytest.approx(22.0)
    assert reading.details["crosses_at"] is None


def test_below_line_reading_is_the_projection() -> None:
    (reading,) = feed(TrendHistory(HOUR), line(40.0, -5.0), DOWN)
    assert reading.value == pytest.approx(15.0)
    assert reading.details["slope_per_hour"] == -5.0


@pytest.mark.parametrize(
    "reading",
    [no_data("/", {"why": "quiet"}), Reading("/", INF, {"down": True}), Reading("/", -INF, {"down": True}),
     Reading("/", math.nan)],
    ids=["no_data", "+inf", "-inf", "nan"],
)
def test_no_data_and_non_finite_readings_pass_through_and_add_nothing(reading: Reading) -> None:
    history = TrendHistory(HOUR)
    feed(history, line(50.0, 10.0)[:10])
    before = list(history.samples("/"))
    out = predict_readings(history, [reading], T0 + 600.0, UP)
    assert out[0] is reading
    assert history.samples("/") == before  # kept (the subject is still there) and nothing added


def test_subjects_are_projected_apart() -> None:
    history = TrendHistory(HOUR)
    for t, v in line(50.0, 10.0):
        out = predict_readings(history, [Reading("/", v), Reading("/var", 100.0 - v)], t, UP)
    by = {r.subject: r for r in out}
    assert by["/"].value == pytest.approx(100.0)
    assert by["/var"].value == pytest.approx(40.0)  # falling: reads its current value
    assert by["/var"].details["crosses_at"] is None


# --------------------------------------------------------------------------- gaps and clock steps


def test_a_gap_is_fitted_across() -> None:
    """The daemon was stopped 20 minutes: what is in the window still lies on the line."""
    samples = [s for s in line(50.0, 10.0) if not T0 + 1200.0 < s[0] < T0 + 2400.0]
    (reading,) = feed(TrendHistory(HOUR), samples)
    assert reading.details["slope_per_hour"] == 10.0
    assert reading.details["samples"] == len(samples)


def test_a_gap_longer_than_the_window_starts_collecting_again() -> None:
    history = TrendHistory(HOUR)
    feed(history, line(50.0, 10.0))
    later = T0 + 3 * HOUR
    (reading,) = predict_readings(history, [Reading("/", 70.0)], later, UP)
    assert reading.no_data and reading.details["samples"] == 1
    assert history.samples("/") == [(later, 70.0)]  # a big forward jump of the clock does the same


def test_the_clock_stepping_back_restarts_the_history() -> None:
    history = TrendHistory(HOUR)
    feed(history, line(50.0, 10.0))
    back = T0 + HOUR - 300.0  # five minutes back
    (reading,) = predict_readings(history, [Reading("/", 61.0)], back, UP)
    assert reading.no_data
    assert history.samples("/") == [(back, 61.0)]


def test_jitter_within_the_tolerance_is_clamped_not_a_restart() -> None:
    history = TrendHistory(HOUR)
    history.add("/", T0, 50.0)
    history.add("/", T0 - CLOCK_TOLERANCE / 2, 51.0)
    assert history.samples("/") == [(T0, 50.0), (T0, 51.0)]


def test_non_finite_samples_never_enter_the_history() -> None:
    history = TrendHistory(HOUR)
    for t, v in [(T0, math.nan), (T0, INF), (math.nan, 1.0), (T0 + 1, 5.0)]:
        history.add("/", t, v)
    assert history.samples("/") == [(T0 + 1, 5.0)]


# --------------------------------------------------------------------------- bounds


def test_samples_per_subject_are_bounded_and_the_line_survives_merging() -> None:
    """An every-10s rule with over: 6h would hold 2,160 samples; merged into buckets it holds 256 at most."""
    over = 6 * HOUR
    prediction = Prediction(above=95.0, below=None, within=4 * HOUR, over=over)
    history = TrendHistory(over, max_samples=256)
    samples = line(20.0, 5.0, every=10.0, span=over)
    out = feed(history, samples, prediction)
    kept = history.samples("/")
    assert len(kept) <= 256
    assert kept[-1] == samples[-1]  # the newest stays as measured: it is value_now
    assert kept[0][0] >= samples[-1][0] - over
    assert out[0].details["slope_per_hour"] == 5.0  # means of points on a line lie on the line


def test_subjects_are_bounded_dropping_the_least_recently_seen() -> None:
    history = TrendHistory(HOUR, max_subjects=3)
    for i, subject in enumerate(["a", "b", "c"]):
        history.add(subject, T0 + i, 1.0)
    history.add("a", T0 + 3, 1.0)  # seen again: now the most recent
    history.add("d", T0 + 4, 1.0)
    assert history.subjects() == ["c", "a", "d"]
    assert len(history) == 3


def test_retain_forgets_subjects_gone_longer_than_the_window() -> None:
    history = TrendHistory(HOUR)
    history.add("gone", T0, 1.0)
    history.add("recent", T0 + HOUR, 1.0)
    history.add("here", T0 + HOUR, 1.0)
    history.retain({"here"}, T0 + HOUR + 60.0)
    assert history.subjects() == ["recent", "here"]  # "recent" was seen within the window: kept
    history.retain({"here"}, T0 + 2 * HOUR + 120.0)
    assert history.subjects() == ["here"]


# --------------------------------------------------------------------------- persistence


def test_dump_and_load_round_trip_through_json() -> None:
    history = TrendHistory(HOUR)
    for t, v in line(50.0, 10.0):
        predict_readings(history, [Reading("/", v), Reading("/var", v / 2)], t, UP)
    now = T0 + HOUR
    loaded = TrendHistory.load(json.loads(json.dumps(history.dump())), HOUR, now)
    assert loaded.subjects() == history.subjects()
    for subject in history.subjects():
        assert loaded.samples(subject) == history.samples(subject)
    assert project(loaded.samples("/"), now, UP) == project(history.samples("/"), now, UP)


def test_load_drops_samples_outside_the_window_and_rebuckets_for_a_new_one() -> None:
    history = TrendHistory(HOUR)
    feed(history, line(50.0, 10.0, every=10.0))
    now = T0 + HOUR
    data = history.dump()
    data["subjects"]["/"].append([now + 600.0, 99.0, 1])  # in the future: a clock that was ahead
    loaded = TrendHistory.load(data, HOUR / 2, now)  # reloaded with over: 30m
    kept = loaded.samples("/")
    assert kept[0][0] >= now - HOUR / 2
    assert kept[-1] == (now, 60.0)


@pytest.mark.parametrize(
    "junk",
    [None, "", 42, [], {"subjects": 5}, {"subjects": {"/": "x"}}, {"version": 1},
     {"subjects": {"/": [[T0, "x"], [None], [T0, math.nan], [T0, 1.0, 0], [True, 1.0], 7]}}],
)
def test_load_turns_junk_into_an_empty_history(junk: Any) -> None:
    loaded = TrendHistory.load(junk, HOUR, T0 + 60.0)
    assert all(not loaded.samples(s) for s in loaded.subjects())


def test_load_keeps_the_good_samples_among_junk() -> None:
    data = {"subjects": {"/": [[T0 + 30.0, 51.0], ["x"], [T0, 50.0, 2]], 7: [[T0, 1.0]]}}
    loaded = TrendHistory.load(data, HOUR, T0 + 60.0)
    assert loaded.subjects() == ["/"]
    assert loaded.samples("/") == [(T0, 50.0), (T0 + 30.0, 51.0)]  # sorted back into time order
