"""The counter window: sliding, resets by epoch and by a counter going down, clock steps, bounds.

Pure: every time is a number passed in.
"""

from __future__ import annotations

import math

import pytest

from watchdogd.counterwindow import Added, CounterWindow, WindowIncrease


def feed(window: CounterWindow, samples: list[tuple[float, str, float]], name: str = "n") -> list[Added]:
    return [window.add(at, epoch, {name: value}) for at, epoch, value in samples]


def answer(window: CounterWindow) -> WindowIncrease:
    found = window.increase()
    assert found is not None
    return found


def test_first_sample_is_a_baseline_with_no_answer() -> None:
    window = CounterWindow(60.0)
    assert window.increase() is None
    assert window.add(100.0, "a", {"n": 5}) is Added.FIRST
    assert window.increase() is None


def test_increase_and_covered_seconds_while_the_window_fills() -> None:
    window = CounterWindow(60.0)
    assert feed(window, [(0.0, "a", 10), (15.0, "a", 25), (30.0, "a", 25)]) == [Added.FIRST, Added.STEP, Added.STEP]
    found = answer(window)
    assert found.increase == {"n": 15.0}
    assert found.seconds == 30.0
    assert found.resets == 0
    assert found.rate("n") == 0.5


def test_the_window_slides_old_steps_out() -> None:
    window = CounterWindow(30.0)
    # a burst of 100 in the first step, then quiet
    feed(window, [(0.0, "a", 0), (10.0, "a", 100), (20.0, "a", 100), (30.0, "a", 100)])
    assert answer(window).increase == {"n": 100.0}  # the step [0, 10] began inside [0, 30]
    assert answer(window).seconds == 30.0
    window.add(40.0, "a", {"n": 100})
    found = answer(window)
    assert found.increase == {"n": 0.0}  # [0, 10] began before 40 - 30: out
    assert found.seconds == 30.0


def test_a_burst_keeps_speaking_for_the_whole_window() -> None:
    """The issue's case: lookups come in bursts every 2 s; every window of 5 s sees at least one."""
    window = CounterWindow(5.0)
    total = 0.0
    window.add(0.0, "a", {"lookups": total})
    for tick in range(1, 40):
        if tick % 4 == 0:
            total += 500
        window.add(tick * 0.5, "a", {"lookups": total})
        if tick >= 4:
            assert answer(window).increase["lookups"] >= 500, tick


def test_epoch_change_loses_only_the_step_across_it() -> None:
    window = CounterWindow(100.0)
    added = feed(window, [(0.0, "a", 0), (10.0, "a", 40), (20.0, "b", 3), (30.0, "b", 13)])
    assert added == [Added.FIRST, Added.STEP, Added.RESET, Added.STEP]
    found = answer(window)
    assert found.increase == {"n": 50.0}  # 40 before the restart, 10 after; the 3 across it are lost
    assert found.seconds == 20.0  # the lost step's 10 s are not covered
    assert found.resets == 1


def test_a_counter_going_down_is_a_reset_even_in_the_same_epoch() -> None:
    """CONFIG RESETSTAT, or a manual restart zeroing NRestarts: never a negative increase."""
    window = CounterWindow(100.0)
    added = feed(window, [(0.0, "a", 500), (10.0, "a", 600), (20.0, "a", 2), (30.0, "a", 7)])
    assert added[2] is Added.RESET
    found = answer(window)
    assert found.increase == {"n": 105.0}
    assert found.seconds == 20.0 and found.resets == 1


def test_one_counter_down_resets_all_of_them() -> None:
    window = CounterWindow(100.0)
    window.add(0.0, "a", {"hits": 10, "misses": 10})
    window.add(10.0, "a", {"hits": 20, "misses": 30})
    assert window.add(20.0, "a", {"hits": 25, "misses": 1}) is Added.RESET
    assert answer(window).increase == {"hits": 10.0, "misses": 20.0}


def test_a_reset_with_nothing_else_in_the_window_has_no_answer() -> None:
    window = CounterWindow(100.0)
    feed(window, [(0.0, "a", 50), (10.0, "b", 0)])
    assert window.increase() is None
    window.add(20.0, "b", {"n": 4})
    assert answer(window).increase == {"n": 4.0}


def test_a_lost_step_slides_out_like_any_other() -> None:
    window = CounterWindow(25.0)
    feed(window, [(0.0, "a", 0), (10.0, "b", 0), (20.0, "b", 1), (30.0, "b", 2), (40.0, "b", 3)])
    found = answer(window)
    assert found.resets == 0
    assert (found.increase, found.seconds) == ({"n": 2.0}, 20.0)


def test_time_going_backwards_restarts_the_window() -> None:
    window = CounterWindow(100.0)
    feed(window, [(1000.0, "a", 0), (1010.0, "a", 50)])
    assert window.add(500.0, "a", {"n": 60}) is Added.CLOCK_BACK
    assert window.increase() is None  # nothing before can be placed in the window
    window.add(510.0, "a", {"n": 65})
    found = answer(window)
    assert (found.increase, found.seconds) == ({"n": 5.0}, 10.0)


def test_zero_covered_seconds_has_no_answer() -> None:
    window = CounterWindow(100.0)
    feed(window, [(5.0, "a", 1), (5.0, "a", 3)])
    assert window.increase() is None
    window.add(6.0, "a", {"n": 4})
    assert answer(window).increase == {"n": 3.0}  # the increase at the same instant still counts


def test_the_newest_step_counts_even_when_longer_than_the_window() -> None:
    """An interval longer than the window degrades to per-interval, rather than never answering."""
    window = CounterWindow(10.0)
    feed(window, [(0.0, "a", 0), (60.0, "a", 30), (120.0, "a", 90)])
    found = answer(window)
    assert (found.increase, found.seconds) == ({"n": 60.0}, 60.0)


def test_fast_samples_are_merged_within_the_bound_and_sums_are_exact() -> None:
    window = CounterWindow(100.0, max_steps=11)  # steps of at least 10 s
    for tick in range(1001):
        window.add(tick * 0.5, "a", {"n": tick * 2})
        assert window.steps <= 11
    found = answer(window)
    # Whole merged steps only: between 90 and 100 s of the last 100 s, 4 per second.
    assert 90.0 <= found.seconds <= 100.0
    assert found.increase["n"] == pytest.approx(4 * found.seconds)


def test_many_resets_stay_within_the_bound() -> None:
    window = CounterWindow(1000.0, max_steps=8)
    for tick in range(100):
        window.add(float(tick), str(tick), {"n": 1})  # a new epoch every second
        assert window.steps <= 8
    assert window.increase() is None


def test_counters_new_since_count_only_where_present() -> None:
    window = CounterWindow(100.0)
    window.add(0.0, "a", {"old": 0})
    window.add(10.0, "a", {"old": 5, "new": 7})
    window.add(20.0, "a", {"old": 6, "new": 9})
    assert answer(window).increase == {"old": 6.0, "new": 2.0}


@pytest.mark.parametrize(("window", "max_steps"), [(0.0, 10), (-5.0, 10), (math.inf, 10), (math.nan, 10), (1.0, 1)])
def test_bounds_are_checked(window: float, max_steps: int) -> None:
    with pytest.raises(ValueError):
        CounterWindow(window, max_steps)


@pytest.mark.parametrize(("at", "value"), [(math.nan, 1.0), (math.inf, 1.0), (1.0, math.nan), (1.0, -math.inf)])
def test_non_finite_samples_are_refused(at: float, value: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        CounterWindow(10.0).add(at, "a", {"n": value})
