"""Policy state machine: thresholds, `for`, hysteresis, vanished subjects, rule status.

Every time is an injected number; nothing sleeps.
"""

from __future__ import annotations

import math
import random

import pytest

from watchdogd.core.policy import Evaluation, Thresholds, breaches, evaluate, rule_status
from watchdogd.model import Reading, RuleStatus, Status, SubjectState, Transition, no_data

OK, PENDING, FIRING = Status.OK, Status.PENDING, Status.FIRING
NAN = float("nan")
INF = float("inf")


def step(prev: dict[str, SubjectState], th: Thresholds, now: float, **values: float) -> Evaluation:
    return evaluate(prev, [Reading(s, v) for s, v in values.items()], th, now)


def walk(th: Thresholds, points: list[tuple[float, float]], subject: str = "x") -> list[Evaluation]:
    """Feed one subject a series of (now, value) and return every evaluation."""
    states: dict[str, SubjectState] = {}
    out = []
    for now, value in points:
        ev = evaluate(states, [Reading(subject, value)], th, now)
        states = ev.states
        out.append(ev)
    return out


# --------------------------------------------------------------------------- breaches


@pytest.mark.parametrize(
    ("value", "expected"),
    [(89.9, False), (90.0, False), (90.0001, True), (1e9, True), (-5.0, False)],
)
def test_above_is_strict(value: float, expected: bool) -> None:
    assert breaches(value, Thresholds(above=90.0), firing=False) is expected


@pytest.mark.parametrize(("value", "expected"), [(10.1, False), (10.0, False), (9.99, True), (-1e9, True)])
def test_below_is_strict(value: float, expected: bool) -> None:
    assert breaches(value, Thresholds(below=10.0), firing=False) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5.0, True), (10.0, False), (50.0, False), (90.0, False), (95.0, True)],
)
def test_both_sides(value: float, expected: bool) -> None:
    assert breaches(value, Thresholds(above=90.0, below=10.0), firing=False) is expected


def test_no_threshold_never_breaches() -> None:
    th = Thresholds()
    assert not breaches(1e300, th, firing=False)
    assert not breaches(-1e300, th, firing=True)


def test_clear_level_only_applies_when_firing() -> None:
    th = Thresholds(above=90.0, clear_above=85.0)
    assert breaches(86.0, th, firing=True) is True
    assert breaches(86.0, th, firing=False) is False
    assert breaches(85.0, th, firing=True) is False  # strict: at the clear level it clears


def test_clear_below_only_applies_when_firing() -> None:
    th = Thresholds(below=10.0, clear_below=15.0)
    assert breaches(14.0, th, firing=True) is True
    assert breaches(14.0, th, firing=False) is False
    assert breaches(15.0, th, firing=True) is False


def test_clear_level_defaults_to_trigger() -> None:
    th = Thresholds(above=90.0, below=10.0)
    assert breaches(90.5, th, firing=True) is True
    assert breaches(90.0, th, firing=True) is False
    assert breaches(9.5, th, firing=True) is True
    assert breaches(10.0, th, firing=True) is False


def test_clear_level_without_trigger_is_ignored() -> None:
    th = Thresholds(below=10.0, clear_above=50.0)
    assert breaches(80.0, th, firing=True) is False
    assert breaches(5.0, th, firing=True) is True


@pytest.mark.parametrize("firing", [False, True])
def test_nan_never_breaches(firing: bool) -> None:
    th = Thresholds(above=90.0, below=10.0, clear_above=50.0, clear_below=50.0)
    assert breaches(NAN, th, firing=firing) is False


def test_infinity() -> None:
    assert breaches(INF, Thresholds(above=1e300), firing=False) is True
    assert breaches(INF, Thresholds(below=10.0), firing=False) is False
    assert breaches(-INF, Thresholds(below=-1e300), firing=False) is True


# --------------------------------------------------------------------------- evaluate: for


def test_for_zero_fires_immediately_with_one_transition() -> None:
    ev = step({}, Thresholds(above=90.0), 100.0, x=95.0)
    assert ev.states == {"x": SubjectState(FIRING, since=100.0, value=95.0, last_seen=100.0)}
    assert ev.transitions == (Transition("x", OK, FIRING, 95.0),)
    assert ev.firing == (Reading("x", 95.0),)
    assert ev.pending == ()


def test_for_pending_then_firing_exactly_at_boundary() -> None:
    th = Thresholds(above=90.0, for_=60.0)
    evs = walk(th, [(1000.0, 91.0), (1030.0, 92.0), (1059.999, 93.0), (1060.0, 94.0), (1075.0, 95.0)])
    assert [ev.states["x"] for ev in evs] == [
        SubjectState(PENDING, 1000.0, 91.0, 1000.0),
        SubjectState(PENDING, 1000.0, 92.0, 1030.0),
        SubjectState(PENDING, 1000.0, 93.0, 1059.999),
        SubjectState(FIRING, 1060.0, 94.0, 1060.0),
        SubjectState(FIRING, 1060.0, 95.0, 1075.0),
    ]
    assert [ev.transitions for ev in evs] == [
        (Transition("x", OK, PENDING, 91.0),),
        (),
        (),
        (Transition("x", PENDING, FIRING, 94.0),),
        (),
    ]
    assert [len(ev.pending) for ev in evs] == [1, 1, 1, 0, 0]
    assert [len(ev.firing) for ev in evs] == [0, 0, 0, 1, 1]


def test_for_slack_fires_a_sample_that_lands_just_short() -> None:
    """Samples an interval apart land a few ms under a `for` of two intervals: that must fire, not wait a third."""
    th = Thresholds(above=90.0, for_=2.0, for_slack=0.25)
    evs = walk(th, [(1000.0, 91.0), (1000.98, 92.0), (1001.99, 93.0)])
    assert [ev.states["x"].status for ev in evs] == [PENDING, PENDING, FIRING]


def test_for_slack_never_fires_the_first_sample_nor_much_too_early() -> None:
    th = Thresholds(above=90.0, for_=1.0, for_slack=15.0 * 0.25)  # a 1 s `for` on a 15 s interval
    evs = walk(th, [(1000.0, 91.0), (1000.0, 92.0), (1015.0, 93.0)])
    assert [ev.states["x"].status for ev in evs] == [PENDING, PENDING, FIRING]
    early = walk(Thresholds(above=90.0, for_=60.0, for_slack=3.75), [(1000.0, 91.0), (1056.0, 92.0)])
    assert [ev.states["x"].status for ev in early] == [PENDING, PENDING]


def test_for_resets_when_value_dips() -> None:
    th = Thresholds(above=90.0, for_=60.0)
    evs = walk(th, [(0.0, 95.0), (30.0, 80.0), (45.0, 95.0), (100.0, 95.0), (105.0, 95.0)])
    assert [ev.states["x"].status for ev in evs] == [PENDING, OK, PENDING, PENDING, FIRING]
    assert [ev.states["x"].since for ev in evs] == [0.0, 30.0, 45.0, 45.0, 105.0]
    assert evs[1].transitions == (Transition("x", PENDING, OK, 80.0),)


def test_pending_ignores_hysteresis() -> None:
    th = Thresholds(above=90.0, clear_above=80.0, for_=60.0)
    evs = walk(th, [(0.0, 95.0), (10.0, 85.0)])
    assert evs[1].states["x"] == SubjectState(OK, 10.0, 85.0, 10.0)
    assert evs[1].transitions == (Transition("x", PENDING, OK, 85.0),)


def test_pending_since_in_future_is_reanchored() -> None:
    # The wall clock stepped back 1000 s: `for` restarts instead of stalling for 1000 s.
    th = Thresholds(above=90.0, for_=60.0)
    prev = {"x": SubjectState(PENDING, since=5000.0, value=95.0, last_seen=5000.0)}
    ev = step(prev, th, 4000.0, x=95.0)
    assert ev.states["x"] == SubjectState(PENDING, 4000.0, 95.0, 4000.0)
    assert step(ev.states, th, 4060.0, x=95.0).states["x"].status is FIRING


def test_firing_keeps_since_and_updates_value() -> None:
    th = Thresholds(above=90.0)
    evs = walk(th, [(0.0, 95.0), (15.0, 99.0), (30.0, 91.0)])
    assert evs[2].states["x"] == SubjectState(FIRING, 0.0, 91.0, 30.0)
    assert evs[1].transitions == evs[2].transitions == ()


def test_firing_to_ok_sets_since() -> None:
    evs = walk(Thresholds(above=90.0), [(0.0, 95.0), (15.0, 50.0), (30.0, 40.0)])
    assert evs[1].states["x"] == SubjectState(OK, 15.0, 50.0, 15.0)
    assert evs[1].transitions == (Transition("x", FIRING, OK, 50.0),)
    assert evs[2].states["x"] == SubjectState(OK, 15.0, 40.0, 30.0)
    assert evs[2].transitions == ()


def test_new_ok_subject_has_no_transition() -> None:
    ev = step({}, Thresholds(above=90.0), 7.0, x=10.0)
    assert ev.states == {"x": SubjectState(OK, 7.0, 10.0, 7.0)}
    assert ev.transitions == ()
    assert ev.firing == ev.pending == ()


# --------------------------------------------------------------------------- evaluate: hysteresis


def test_hysteresis_hovering_does_not_flap() -> None:
    th = Thresholds(above=90.0, clear_above=85.0)
    values = [91.0, 89.0, 90.5, 86.0, 89.9, 85.1, 85.0, 89.0, 90.0, 90.5]
    evs = walk(th, [(float(i * 15), v) for i, v in enumerate(values)])
    assert [ev.states["x"].status for ev in evs] == [
        FIRING, FIRING, FIRING, FIRING, FIRING, FIRING, OK, OK, OK, FIRING,
    ]  # fmt: skip
    changes = [t for ev in evs for t in ev.transitions]
    assert changes == [
        Transition("x", OK, FIRING, 91.0),
        Transition("x", FIRING, OK, 85.0),
        Transition("x", OK, FIRING, 90.5),
    ]


def test_without_hysteresis_hovering_flaps() -> None:
    evs = walk(Thresholds(above=90.0), [(0.0, 91.0), (15.0, 89.0), (30.0, 91.0)])
    assert [ev.states["x"].status for ev in evs] == [FIRING, OK, FIRING]


def test_below_with_hysteresis() -> None:
    th = Thresholds(below=10.0, clear_below=20.0, for_=30.0)
    evs = walk(th, [(0.0, 5.0), (30.0, 8.0), (45.0, 15.0), (60.0, 19.9), (75.0, 20.0), (90.0, 12.0)])
    assert [ev.states["x"].status for ev in evs] == [PENDING, FIRING, FIRING, FIRING, OK, OK]


def test_both_sides_fire_independently() -> None:
    th = Thresholds(above=90.0, below=10.0)
    ev = step({}, th, 0.0, hot=95.0, cold=5.0, fine=50.0)
    assert [r.subject for r in ev.firing] == ["hot", "cold"]
    assert ev.states["fine"].status is OK


def test_nan_clears_a_firing_subject_and_never_fires() -> None:
    th = Thresholds(above=90.0, clear_above=50.0)
    evs = walk(th, [(0.0, 95.0), (15.0, NAN), (30.0, NAN)])
    assert [ev.states["x"].status for ev in evs] == [FIRING, OK, OK]
    (cleared,) = evs[1].transitions
    assert (cleared.old, cleared.new) == (FIRING, OK)
    assert cleared.value is not None and math.isnan(cleared.value)


def test_infinite_age_fires() -> None:
    ev = step({}, Thresholds(above=86400.0), 0.0, backup=INF)
    assert ev.states["backup"] == SubjectState(FIRING, 0.0, INF, 0.0)
    assert ev.transitions == (Transition("backup", OK, FIRING, INF),)


# --------------------------------------------------------------------------- evaluate: subjects


def test_vanished_subjects_are_dropped_with_transition_if_not_ok() -> None:
    prev = {
        "fire": SubjectState(FIRING, 0.0, 95.0, 0.0),
        "pend": SubjectState(PENDING, 0.0, 95.0, 0.0),
        "calm": SubjectState(OK, 0.0, 10.0, 0.0),
        "kept": SubjectState(FIRING, 0.0, 95.0, 0.0),
    }
    ev = step(prev, Thresholds(above=90.0), 15.0, kept=95.0, new=99.0)
    assert set(ev.states) == {"kept", "new"}
    assert ev.transitions == (
        Transition("new", OK, FIRING, 99.0),
        Transition("fire", FIRING, OK, None),
        Transition("pend", PENDING, OK, None),
    )


def test_all_vanished() -> None:
    prev = {"a": SubjectState(FIRING, 0.0, 95.0, 0.0)}
    ev = evaluate(prev, [], Thresholds(above=90.0), 15.0)
    assert ev == Evaluation({}, (Transition("a", FIRING, OK, None),), (), ())


def test_firing_and_pending_keep_input_order_and_reading_objects() -> None:
    th = Thresholds(above=90.0, for_=30.0)
    prev = {s: SubjectState(PENDING, 0.0, 95.0, 0.0) for s in ("c", "a")}
    readings = [
        Reading("c", 95.0, {"pid": 3}),
        Reading("z", 95.0, {"pid": 26}),
        Reading("m", 1.0),
        Reading("a", 95.0, {"pid": 1}),
        Reading("b", 95.0, {"pid": 2}),
    ]
    ev = evaluate(prev, readings, th, 30.0)
    assert ev.firing == (readings[0], readings[3])
    assert ev.firing[0] is readings[0]
    assert ev.pending == (readings[1], readings[4])


def test_duplicate_subject_last_reading_wins() -> None:
    ev = evaluate({}, [Reading("x", 95.0), Reading("x", 10.0)], Thresholds(above=90.0), 0.0)
    assert ev.states == {"x": SubjectState(OK, 0.0, 10.0, 0.0)}
    assert ev.firing == ()
    assert ev.transitions == ()


def test_prev_is_not_mutated() -> None:
    prev = {"x": SubjectState(PENDING, 0.0, 95.0, 0.0), "gone": SubjectState(FIRING, 0.0, 95.0, 0.0)}
    snapshot = dict(prev)
    step(prev, Thresholds(above=90.0, for_=10.0), 20.0, x=95.0)
    assert prev == snapshot


def test_random_walk_invariants() -> None:
    """Seeded fuzz (hypothesis is not a declared test dependency): structural invariants always hold."""
    rng = random.Random(1234)
    th = Thresholds(above=90.0, clear_above=80.0, below=5.0, for_=30.0)
    subjects = [f"s{i}" for i in range(12)]
    states: dict[str, SubjectState] = {}
    for cycle in range(400):
        now = cycle * 10.0
        present = [s for s in subjects if rng.random() < 0.9]
        readings = [Reading(s, rng.choice([NAN, INF, rng.uniform(0.0, 100.0)])) for s in present]
        ev = evaluate(states, readings, th, now)
        assert list(ev.states) == present
        assert all(st.last_seen == now for st in ev.states.values())
        assert {r.subject for r in ev.firing} == {s for s, st in ev.states.items() if st.status is FIRING}
        assert {r.subject for r in ev.pending} == {s for s, st in ev.states.items() if st.status is PENDING}
        for t in ev.transitions:
            assert t.old is not t.new
            before = states.get(t.subject, SubjectState(OK))
            after = ev.states.get(t.subject, SubjectState(OK))
            assert (t.old, t.new) == (before.status, after.status)
        for s, st in ev.states.items():
            assert st.since <= now
            if st.status is PENDING:
                assert now - st.since < th.for_
            if st.status is not states.get(s, SubjectState(OK)).status:
                assert st.since == now
        states = ev.states


# --------------------------------------------------------------------------- rule_status


def _states(*statuses: Status) -> dict[str, SubjectState]:
    return {f"s{i}": SubjectState(st) for i, st in enumerate(statuses)}


# Columns: enabled, up, paused, gave_up, subject statuses -> expected.
@pytest.mark.parametrize(
    ("enabled", "up", "paused", "gave_up", "statuses", "expected"),
    [
        (False, False, True, True, (FIRING,), RuleStatus.DISABLED),
        (True, False, True, True, (FIRING,), RuleStatus.PAUSED),
        (True, False, False, True, (FIRING,), RuleStatus.GAVE_UP),
        (True, False, False, False, (FIRING,), RuleStatus.DOWN),
        (True, True, False, False, (OK, PENDING, FIRING), RuleStatus.FIRING),
        (True, True, False, False, (OK, PENDING), RuleStatus.PENDING),
        (True, True, False, False, (OK, OK), RuleStatus.OK),
        (True, True, False, False, (), RuleStatus.OK),
    ],
)
def test_rule_status_precedence(
    enabled: bool, up: bool, paused: bool, gave_up: bool, statuses: tuple[Status, ...], expected: RuleStatus
) -> None:
    got = rule_status(_states(*statuses), enabled=enabled, up=up, paused=paused, gave_up=gave_up)
    assert got is expected


# --------------------------------------------------------------------------- no data and hold


def test_no_data_holds_a_pending_timer_so_sparse_traffic_still_fires() -> None:
    """A quiet interval between bursts neither resets ``for`` nor resolves: the issue's hit-ratio case."""
    th = Thresholds(below=0.8, for_=4.0)
    states: dict[str, SubjectState] = {}
    seen: list[Status] = []
    for now, reading in [
        (0.0, Reading("keyspace", 0.2)),
        (1.0, no_data("keyspace")),
        (2.0, Reading("keyspace", 0.3)),
        (3.0, no_data("keyspace")),
        (4.0, Reading("keyspace", 0.1)),
    ]:
        ev = evaluate(states, [reading], th, now)
        states = ev.states
        seen.append(states["keyspace"].status)
    assert seen == [PENDING, PENDING, PENDING, PENDING, FIRING]
    assert states["keyspace"].since == 4.0


def test_no_data_keeps_the_state_without_transition_and_is_not_acted_on() -> None:
    prev = {"k": SubjectState(FIRING, 5.0, 0.1, 5.0)}
    ev = evaluate(prev, [no_data("k")], Thresholds(below=0.8), 20.0)
    assert ev.states == prev
    assert (ev.transitions, ev.firing, ev.pending, ev.held) == ((), (), (), ("k",))


def test_no_data_for_a_new_subject_creates_nothing() -> None:
    ev = evaluate({}, [no_data("k")], Thresholds(below=0.8), 20.0)
    assert ev == Evaluation({}, (), (), (), ())


def test_hold_keeps_a_one_interval_event_firing_for_the_hold_time() -> None:
    th = Thresholds(above=0.1, hold=60.0)
    evs = walk(th, [(0.0, 0.5), (15.0, 0.0), (45.0, 0.0), (59.0, 0.0), (60.0, 0.0)])
    assert [e.states["x"].status for e in evs] == [FIRING, FIRING, FIRING, FIRING, OK]
    assert [len(e.firing) for e in evs] == [1, 0, 0, 0, 0]  # acted on only while measured in breach
    assert [e.held for e in evs] == [(), ("x",), ("x",), ("x",), ()]
    assert evs[-1].transitions == (Transition("x", FIRING, OK, 0.0),)
    assert all(e.states["x"].since == 0.0 for e in evs[:4])


def test_hold_keeps_a_vanished_subject_firing_until_it_ends() -> None:
    th = Thresholds(above=0.1, hold=60.0)
    first = evaluate({}, [Reading("x", 1.0)], th, 0.0)
    held = evaluate(first.states, [], th, 30.0)
    assert held.states == first.states and held.held == ("x",) and held.transitions == ()
    gone = evaluate(held.states, [], th, 61.0)
    assert gone == Evaluation({}, (Transition("x", FIRING, OK, None),), (), ())


def test_a_breach_inside_hold_fires_on_without_a_new_transition() -> None:
    evs = walk(Thresholds(above=0.1, hold=60.0), [(0.0, 1.0), (15.0, 0.0), (30.0, 2.0)])
    assert evs[2].transitions == () and len(evs[2].firing) == 1 and evs[2].states["x"].since == 0.0
