"""Guard: cooldown, backoff and its reset, give-up and its lift, budget, grace, pause, dry-run, persistence.

Every time is an injected number; nothing sleeps.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from watchdogd.core.guard import (
    BudgetPolicy,
    GuardPolicy,
    HostGuard,
    RuleGuard,
    SubjectGuard,
    Verdict,
    backoff,
    budget_open,
    budget_remaining,
    cooldown_until,
    decide,
    host_guard_from_dict,
    host_guard_to_dict,
    host_spend,
    is_gave_up,
    is_paused,
    observe,
    pause,
    record_run,
    resume,
    rule_guard_from_dict,
    rule_guard_to_dict,
)
from watchdogd.model import Decision

INF = float("inf")

POLICY = GuardPolicy(
    cooldown=60.0,
    max_cooldown=600.0,
    stable_for=300.0,
    max_actions=3,
    max_actions_per=3600.0,
    dry_run=False,
)
UNLIMITED = replace(POLICY, max_actions=None)
DRY = replace(POLICY, dry_run=True)


def check(
    rg: RuleGuard,
    candidates: list[str],
    now: float,
    policy: GuardPolicy = POLICY,
    hg: HostGuard | None = None,
    budget: BudgetPolicy | None = None,
    in_grace: bool = False,
    max_per_run: int = 10,
) -> Verdict:
    return decide(
        rg,
        candidates,
        now,
        policy,
        budget_closed=(
            None if budget is None or budget_open(hg or HostGuard(), budget, now) else Decision.SKIPPED_BUDGET
        ),
        in_grace=in_grace,
        max_per_run=max_per_run,
    )


def act(
    rg: RuleGuard,
    subjects: list[str],
    now: float,
    policy: GuardPolicy = POLICY,
    hg: HostGuard | None = None,
    budget: BudgetPolicy | None = None,
) -> tuple[RuleGuard, HostGuard, Verdict]:
    """One engine cycle for a rule whose `subjects` are firing: observe, decide, record what is allowed."""
    rg = observe(rg, subjects, now, policy)
    verdict = check(rg, subjects, now, policy, hg, budget)
    new_rg = record_run(verdict.guard, verdict.allowed, now, policy)
    new_hg = hg or HostGuard()
    if verdict.allowed and budget is not None and not policy.dry_run:
        new_hg = host_spend(new_hg, now, budget)
    return new_rg, new_hg, verdict


# --------------------------------------------------------------------------- decide basics


def test_fresh_rule_allows_everything() -> None:
    rg = RuleGuard()
    v = check(rg, ["a", "b"], 0.0)
    assert v == Verdict(("a", "b"), (), Decision.RAN, False, rg)


def test_dry_run_decision() -> None:
    v = check(RuleGuard(), ["a"], 0.0, policy=DRY)
    assert (v.allowed, v.decision) == (("a",), Decision.DRY_RUN)


def test_empty_candidates() -> None:
    full = RuleGuard(action_times=(1.0, 2.0, 3.0))
    v = check(full, [], 10.0)
    assert v == Verdict((), (), Decision.RAN, False, full)


def test_duplicate_candidates_are_decided_once() -> None:
    v = check(RuleGuard(), ["a", "b", "a"], 0.0, max_per_run=1)
    assert v.allowed == ("a",)
    assert v.skipped == (("b", Decision.SKIPPED_MAX_PER_RUN),)


def test_max_per_run_below_one_is_a_bug() -> None:
    with pytest.raises(ValueError, match="max_per_run"):
        check(RuleGuard(), ["a"], 0.0, max_per_run=0)


def test_max_per_run_cut_keeps_candidate_order() -> None:
    rg = RuleGuard(subjects={"d": SubjectGuard(attempts=1, last_action=0.0, cooldown_until=100.0)})
    v = check(rg, ["e", "d", "c", "b", "a"], 50.0, max_per_run=2)
    assert v.allowed == ("e", "c")
    assert v.skipped == (
        ("d", Decision.SKIPPED_COOLDOWN),
        ("b", Decision.SKIPPED_MAX_PER_RUN),
        ("a", Decision.SKIPPED_MAX_PER_RUN),
    )


# --------------------------------------------------------------------------- cooldown and backoff


def test_cooldown_per_subject_boundary() -> None:
    rg, _, _ = act(RuleGuard(), ["a"], 1000.0)
    assert rg.subjects["a"] == SubjectGuard(attempts=1, last_action=1000.0, cooldown_until=1060.0)
    v = check(rg, ["a", "b"], 1059.9)
    assert v.allowed == ("b",)
    assert v.skipped == (("a", Decision.SKIPPED_COOLDOWN),)
    assert check(rg, ["a"], 1060.0).allowed == ("a",)


def test_backoff_doubles_and_caps() -> None:
    rg = RuleGuard()
    now = 0.0
    cooldowns = []
    for _ in range(7):
        rg, _, v = act(rg, ["a"], now, UNLIMITED)
        assert v.allowed == ("a",)
        sg = rg.subjects["a"]
        cooldowns.append(sg.cooldown_until - now)
        now = sg.cooldown_until  # the condition is back the moment the cooldown ends
    assert cooldowns == [60.0, 120.0, 240.0, 480.0, 600.0, 600.0, 600.0]
    assert rg.subjects["a"].attempts == 7


def test_backoff_function() -> None:
    assert [backoff(60.0, 600.0, n) for n in (1, 2, 3, 4, 5)] == [60.0, 120.0, 240.0, 480.0, 600.0]
    assert backoff(60.0, 600.0, 0) == 60.0
    assert backoff(60.0, 600.0, 100_000) == 600.0  # weeks of retries must not overflow float


def test_backoff_resets_after_stable_for_clear() -> None:
    rg, _, _ = act(RuleGuard(), ["a"], 0.0)
    rg, _, _ = act(rg, ["a"], 60.0)
    assert rg.subjects["a"] == SubjectGuard(attempts=2, last_action=60.0, cooldown_until=180.0)
    rg = observe(rg, [], 200.0, POLICY)
    assert rg.subjects["a"].clear_since == 200.0
    rg = observe(rg, [], 499.9, POLICY)
    assert rg.subjects["a"] == SubjectGuard(
        attempts=2, last_action=60.0, cooldown_until=180.0, clear_since=200.0
    )
    rg = observe(rg, [], 500.0, POLICY)
    assert rg.subjects == {}
    rg, _, _ = act(rg, ["a"], 600.0)
    assert rg.subjects["a"] == SubjectGuard(attempts=1, last_action=600.0, cooldown_until=660.0)


def test_backoff_not_reset_when_clear_for_less_than_stable_for() -> None:
    rg, _, _ = act(RuleGuard(), ["a"], 0.0)
    rg, _, _ = act(rg, ["a"], 60.0)
    rg = observe(rg, [], 200.0, POLICY)
    rg = observe(rg, [], 450.0, POLICY)
    rg = observe(rg, ["a"], 480.0, POLICY)  # back after 280 s < stable_for
    assert rg.subjects["a"] == SubjectGuard(attempts=2, last_action=60.0, cooldown_until=180.0)
    rg = observe(rg, [], 500.0, POLICY)
    rg = observe(rg, [], 790.0, POLICY)  # clear clock restarted at 500
    assert rg.subjects["a"].attempts == 2
    rg, _, _ = act(rg, ["a"], 795.0)
    assert rg.subjects["a"] == SubjectGuard(attempts=3, last_action=795.0, cooldown_until=1035.0)


def test_stable_clear_inside_long_cooldown_keeps_entry_with_zero_attempts() -> None:
    policy = replace(POLICY, cooldown=100.0, max_cooldown=1000.0, stable_for=10.0)
    rg, _, _ = act(RuleGuard(), ["a"], 0.0, policy)
    rg = observe(rg, [], 5.0, policy)
    rg = observe(rg, [], 15.0, policy)
    assert rg.subjects["a"] == SubjectGuard(
        attempts=0, last_action=0.0, cooldown_until=100.0, clear_since=5.0
    )
    assert check(rg, ["a"], 50.0, policy).skipped == (("a", Decision.SKIPPED_COOLDOWN),)
    rg = observe(rg, [], 99.0, policy)
    assert "a" in rg.subjects
    rg = observe(rg, [], 100.0, policy)
    assert rg.subjects == {}


def test_subjects_are_independent() -> None:
    rg, _, _ = act(RuleGuard(), ["a"], 0.0)
    rg = observe(rg, ["b"], 10.0, POLICY)  # "a" is clear, "b" has no entry and gets none
    assert set(rg.subjects) == {"a"}
    assert rg.subjects["a"].clear_since == 10.0
    assert rg.clear_since is None


# --------------------------------------------------------------------------- give-up


def _three_runs() -> RuleGuard:
    rg = RuleGuard()
    for now, subject in ((0.0, "a"), (600.0, "b"), (1200.0, "c")):
        rg, _, v = act(rg, [subject], now)
        assert v.allowed == (subject,)
    assert rg.action_times == (0.0, 600.0, 1200.0)
    return rg


def test_give_up_after_max_actions_in_window() -> None:
    rg = _three_runs()
    rg = observe(rg, ["c", "d", "e"], 1230.0, POLICY)
    v = check(rg, ["c", "d", "e"], 1230.0)
    assert v.allowed == ()
    assert v.gave_up_now is True
    assert v.skipped == (
        ("c", Decision.SKIPPED_COOLDOWN),
        ("d", Decision.GAVE_UP),
        ("e", Decision.GAVE_UP),
    )
    assert v.guard == replace(rg, gave_up_at=1230.0)
    assert is_gave_up(v.guard)
    again = check(v.guard, ["d"], 1245.0)
    assert again.skipped == (("d", Decision.SKIPPED_GAVE_UP),)
    assert again.gave_up_now is False
    assert again.guard is v.guard


def test_no_give_up_while_every_candidate_is_cooling() -> None:
    rg = _three_runs()
    v = check(rg, ["c"], 1230.0)
    assert v.skipped == (("c", Decision.SKIPPED_COOLDOWN),)
    assert v.gave_up_now is False
    assert v.guard.gave_up_at is None


def test_unlimited_never_gives_up() -> None:
    rg = RuleGuard(action_times=tuple(float(t) for t in range(100)))
    assert check(rg, ["a"], 100.0, UNLIMITED).allowed == ("a",)


def test_window_slides_old_runs_fall_out() -> None:
    rg = _three_runs()
    assert check(rg, ["z"], 3599.9).gave_up_now is True  # run at 0 is still inside (-0.1, 3599.9]
    v = check(rg, ["z"], 3600.0)  # window is (0, 3600]: the run at 0 is out
    assert (v.allowed, v.gave_up_now) == (("z",), False)
    rg = record_run(rg, v.allowed, 3600.0, POLICY)
    assert rg.action_times == (600.0, 1200.0, 3600.0)


def test_record_run_prunes_rule_window() -> None:
    rg = RuleGuard(action_times=(0.0, 100.0, 5000.0))
    rg = record_run(rg, ["a"], 5000.0, UNLIMITED)
    assert rg.action_times == (5000.0, 5000.0)


def test_give_up_lifts_after_rule_clear_for_stable_for() -> None:
    rg = check(_three_runs(), ["d"], 1800.0).guard
    assert rg.gave_up_at == 1800.0
    rg = observe(rg, ["d"], 1900.0, POLICY)
    assert rg.gave_up_at == 1800.0
    rg = observe(rg, [], 2000.0, POLICY)
    assert (rg.gave_up_at, rg.clear_since) == (1800.0, 2000.0)
    rg = observe(rg, [], 2299.0, POLICY)
    assert rg.gave_up_at == 1800.0
    rg = observe(rg, [], 2300.0, POLICY)
    assert (rg.gave_up_at, rg.action_times, rg.clear_since) == (None, (), 2000.0)
    assert check(rg, ["d"], 2315.0).allowed == ("d",)


def test_give_up_stays_if_condition_returns_before_stable_for() -> None:
    rg = check(_three_runs(), ["d"], 1800.0).guard
    rg = observe(rg, [], 2000.0, POLICY)
    rg = observe(rg, ["d"], 2200.0, POLICY)
    assert (rg.gave_up_at, rg.clear_since) == (1800.0, None)
    rg = observe(rg, [], 2250.0, POLICY)
    rg = observe(rg, [], 2500.0, POLICY)
    assert rg.gave_up_at == 1800.0
    rg = observe(rg, [], 2550.0, POLICY)
    assert rg.gave_up_at is None


def test_resume_with_reset_clears_give_up_pause_and_window_but_keeps_attempts() -> None:
    rg = pause(check(_three_runs(), ["d"], 1800.0).guard, INF)
    resumed = resume(rg, reset=True)
    assert resumed == RuleGuard(subjects=rg.subjects, clear_since=rg.clear_since)
    assert resumed.subjects["c"].attempts == 1
    assert check(resumed, ["d"], 1815.0).allowed == ("d",)  # no re-give-up on the next cycle


def test_plain_resume_lifts_the_pause_only_a_give_up_stays() -> None:
    rg = pause(check(_three_runs(), ["d"], 1800.0).guard, INF)
    resumed = resume(rg)
    assert resumed == replace(rg, paused_until=None)
    assert resumed.gave_up_at == 1800.0 and resumed.action_times == (0.0, 600.0, 1200.0)
    assert check(resumed, ["d"], 1815.0).skipped == (("d", Decision.SKIPPED_GAVE_UP),)


def test_pause_and_resume_do_not_refill_the_max_actions_window() -> None:
    """Issue 13: {count: 3, per: 1h} ran 5 times in the hour because of one pause and resume."""
    rg = RuleGuard()
    runs = 0
    for now in (0.0, 600.0):
        rg, _, v = act(rg, ["a" if now == 0 else "b"], now)
        runs += len(v.allowed)
    rg = resume(pause(rg, INF))
    for now, subject in ((1200.0, "c"), (1500.0, "d"), (1800.0, "e")):
        v = check(rg, [subject], now)
        rg = record_run(v.guard, v.allowed, now, POLICY)
        runs += len(v.allowed)
    assert runs == 3 and rg.gave_up_at == 1500.0


def test_dry_run_gives_up_on_the_same_cadence() -> None:
    rg = RuleGuard()
    for now, subject in ((0.0, "a"), (600.0, "b"), (1200.0, "c")):
        rg, hg, v = act(rg, [subject], now, DRY)
        assert v.decision is Decision.DRY_RUN
        assert hg == HostGuard()
    assert check(rg, ["d"], 1230.0, DRY).gave_up_now is True


# --------------------------------------------------------------------------- host budget


BUDGET = BudgetPolicy(actions=2, per=3600.0)


def test_budget_exhausted_skips() -> None:
    hg = HostGuard()
    _, hg, _ = act(RuleGuard(), ["x"], 0.0, hg=hg, budget=BUDGET)
    _, hg, _ = act(RuleGuard(), ["y"], 10.0, hg=hg, budget=BUDGET)
    assert hg.action_times == (0.0, 10.0)
    assert budget_remaining(hg, BUDGET, 20.0) == 0
    rg = RuleGuard(subjects={"b": SubjectGuard(attempts=1, last_action=0.0, cooldown_until=100.0)})
    v = check(rg, ["a", "b"], 20.0, hg=hg, budget=BUDGET)
    assert v.allowed == ()
    assert v.skipped == (("a", Decision.SKIPPED_BUDGET), ("b", Decision.SKIPPED_COOLDOWN))
    assert v.gave_up_now is False
    assert v.guard is rg
    assert budget_remaining(hg, BUDGET, 3600.0) == 1  # the run at 0 left the window (0, 3600]
    assert check(rg, ["a"], 3600.0, hg=hg, budget=BUDGET).allowed == ("a",)


def test_budget_is_per_run_not_per_subject() -> None:
    _, hg, v = act(RuleGuard(), ["a", "b", "c"], 0.0, budget=BUDGET)
    assert v.allowed == ("a", "b", "c")
    assert hg.action_times == (0.0,)
    assert budget_remaining(hg, BUDGET, 0.0) == 1


def test_budget_blocks_dry_run_but_dry_run_never_consumes_it() -> None:
    full = HostGuard(action_times=(0.0, 1.0))
    v = check(RuleGuard(), ["a"], 5.0, DRY, hg=full, budget=BUDGET)
    assert v.skipped == (("a", Decision.SKIPPED_BUDGET),)
    empty = HostGuard()
    rg, hg, v = act(RuleGuard(), ["a"], 5.0, DRY, hg=empty, budget=BUDGET)
    assert (v.allowed, v.decision) == (("a",), Decision.DRY_RUN)
    assert hg is empty
    assert budget_remaining(hg, BUDGET, 5.0) == 2
    real_rg, _, _ = act(RuleGuard(), ["a"], 5.0, POLICY, hg=empty, budget=BUDGET)
    assert rg == real_rg  # same rule bookkeeping as a real run


def test_record_run_prunes_host_window() -> None:
    hg = HostGuard(action_times=(0.0, 100.0, 3000.0))
    hg = host_spend(hg, 3700.0, BUDGET)
    assert hg.action_times == (3000.0, 3700.0)


def test_give_up_wins_over_budget() -> None:
    v = check(_three_runs(), ["z"], 1230.0, hg=HostGuard(action_times=(1.0, 2.0)), budget=BUDGET)
    assert v.skipped == (("z", Decision.GAVE_UP),)


# --------------------------------------------------------------------------- grace and pause


def test_grace_skips_everything() -> None:
    rg = RuleGuard(subjects={"b": SubjectGuard(attempts=1, cooldown_until=100.0)})
    v = check(rg, ["a", "b"], 0.0, in_grace=True)
    assert v == Verdict(
        (), (("a", Decision.SKIPPED_GRACE), ("b", Decision.SKIPPED_GRACE)), Decision.RAN, False, rg
    )


@pytest.mark.parametrize(
    ("rg", "in_grace", "expected"),
    [
        (RuleGuard(paused_until=100.0, gave_up_at=1.0), True, Decision.SKIPPED_PAUSED),
        (RuleGuard(gave_up_at=1.0), True, Decision.SKIPPED_GAVE_UP),
        (RuleGuard(action_times=(1.0, 2.0, 3.0)), True, Decision.SKIPPED_GRACE),
    ],
)
def test_rule_wide_gate_precedence(rg: RuleGuard, in_grace: bool, expected: Decision) -> None:
    v = check(rg, ["a"], 10.0, in_grace=in_grace)
    assert v.skipped == (("a", expected),)
    assert v.gave_up_now is False


def test_pause_with_expiry() -> None:
    rg = pause(RuleGuard(), 1000.0)
    assert is_paused(rg, 999.9)
    v = check(rg, ["a", "b"], 999.9)
    assert v.skipped == (("a", Decision.SKIPPED_PAUSED), ("b", Decision.SKIPPED_PAUSED))
    assert observe(rg, ["a"], 999.9, POLICY).paused_until == 1000.0
    assert not is_paused(rg, 1000.0)
    assert check(rg, ["a"], 1000.0).allowed == ("a",)  # expiry honoured even before observe tidies up
    assert observe(rg, ["a"], 1000.0, POLICY).paused_until is None


def test_pause_forever() -> None:
    rg = pause(RuleGuard(), INF)
    rg = observe(rg, ["a"], 1e12, POLICY)
    assert rg.paused_until == INF
    assert is_paused(rg, 1e12)
    assert check(rg, ["a"], 1e12).skipped == (("a", Decision.SKIPPED_PAUSED),)
    assert resume(rg).paused_until is None


# --------------------------------------------------------------------------- read helpers


def test_cooldown_until_helper() -> None:
    rg = RuleGuard(
        subjects={
            "a": SubjectGuard(attempts=1, cooldown_until=100.0),
            "b": SubjectGuard(attempts=1, cooldown_until=250.0),
            "c": SubjectGuard(attempts=1, cooldown_until=50.0),
        }
    )
    assert cooldown_until(rg, 60.0) == 250.0
    assert cooldown_until(rg, 250.0) is None
    assert cooldown_until(RuleGuard(), 0.0) is None


def test_is_gave_up() -> None:
    assert not is_gave_up(RuleGuard())
    assert is_gave_up(RuleGuard(gave_up_at=0.0))  # 0.0 is a time, not "unset"


# --------------------------------------------------------------------------- purity and write-ahead


def test_inputs_are_never_mutated() -> None:
    subjects = {"a": SubjectGuard(attempts=1, cooldown_until=10.0)}
    rg = RuleGuard(subjects=subjects, action_times=(5.0,))
    hg = HostGuard(action_times=(5.0,))
    record_run(rg, ["a", "b"], 20.0, POLICY)
    host_spend(hg, 20.0, BUDGET)
    observe(rg, [], 1000.0, POLICY)
    decide(
        rg, ["a", "b"], 20.0, POLICY,
        budget_closed=None if budget_open(hg, BUDGET, 20.0) else Decision.SKIPPED_BUDGET,
        in_grace=False, max_per_run=1,
    )
    assert subjects == {"a": SubjectGuard(attempts=1, cooldown_until=10.0)}
    assert rg.subjects is subjects
    assert (rg.action_times, hg.action_times) == ((5.0,), (5.0,))


def test_record_run_with_nothing_acted_is_not_a_run() -> None:
    rg = RuleGuard()
    assert record_run(rg, [], 0.0, POLICY) == rg


def test_write_ahead_survives_a_restart() -> None:
    """Booked before the action runs, persisted, reloaded after kill -9: the cooldown still holds."""
    rg, hg, _ = act(RuleGuard(), ["pid-42"], 100.0, budget=BUDGET)
    stored = json.dumps(rule_guard_to_dict(rg), allow_nan=False)
    reloaded = rule_guard_from_dict(json.loads(stored))
    v = check(reloaded, ["pid-42"], 130.0, hg=hg, budget=BUDGET)
    assert v.skipped == (("pid-42", Decision.SKIPPED_COOLDOWN),)


def test_random_walk_never_exceeds_limits() -> None:
    """Seeded fuzz: whatever the firing pattern, cooldowns and the max_actions window are never broken."""
    rng = random.Random(99)
    policy = replace(POLICY, cooldown=30.0, max_cooldown=300.0, stable_for=120.0, max_actions=5)
    budget = BudgetPolicy(actions=8, per=1800.0)
    rg, hg = RuleGuard(), HostGuard()
    runs: list[float] = []
    host_runs: list[float] = []
    last_acted: dict[str, float] = {}
    for cycle in range(3000):
        now = cycle * 15.0
        firing = [s for s in "abcdefg" if rng.random() < 0.4]
        rg = observe(rg, firing, now, policy)
        if rng.random() < 0.01:
            reset = rng.random() < 0.5
            rg = resume(rg, reset=reset)
            if reset:  # only an explicit reset forgets the window
                runs.clear()
        v = decide(
            rg, firing, now, policy,
            budget_closed=None if budget_open(hg, budget, now) else Decision.SKIPPED_BUDGET,
            in_grace=rng.random() < 0.05,
            max_per_run=3,
        )
        assert len(v.allowed) <= 3
        assert sorted(v.allowed + tuple(s for s, _ in v.skipped)) == sorted(firing)
        for s in v.allowed:
            assert now - last_acted.get(s, -1e9) >= policy.cooldown
            last_acted[s] = now
        rg = record_run(v.guard, v.allowed, now, policy)
        if v.allowed:
            hg = host_spend(hg, now, budget)
        if v.allowed:
            runs.append(now)
            host_runs.append(now)
        assert len([t for t in runs if t > now - policy.max_actions_per]) <= 5
        assert len([t for t in host_runs if t > now - budget.per]) <= budget.actions
        if rg.gave_up_at is None:
            runs[:] = [t for t in runs if t in rg.action_times]


# --------------------------------------------------------------------------- persistence


def test_rule_guard_json_round_trip_with_infinity() -> None:
    rg = RuleGuard(
        subjects={
            "a": SubjectGuard(attempts=3, last_action=100.5, cooldown_until=340.5, clear_since=None),
            "b": SubjectGuard(attempts=0, last_action=None, cooldown_until=INF, clear_since=200.0),
        },
        action_times=(10.0, 100.5),
        gave_up_at=150.0,
        paused_until=INF,
        clear_since=-INF,
    )
    text = json.dumps(rule_guard_to_dict(rg), allow_nan=False)  # strict JSON: no Infinity literal
    assert '"inf"' in text
    assert rule_guard_from_dict(json.loads(text)) == rg


def test_default_rule_guard_round_trip() -> None:
    d = rule_guard_to_dict(RuleGuard())
    assert d == {
        "version": 1,
        "subjects": {},
        "action_times": [],
        "gave_up_at": None,
        "paused_until": None,
        "clear_since": None,
    }
    assert rule_guard_from_dict(json.loads(json.dumps(d))) == RuleGuard()


def test_rule_guard_from_dict_tolerates_missing_keys() -> None:
    assert rule_guard_from_dict({}) == RuleGuard()
    old = {"subjects": {"a": {"attempts": 2}, "b": {}}, "paused_until": "inf"}
    assert rule_guard_from_dict(old) == RuleGuard(
        subjects={"a": SubjectGuard(attempts=2), "b": SubjectGuard()},
        paused_until=INF,
    )


def test_host_guard_json_round_trip() -> None:
    hg = HostGuard(action_times=(1.0, 2.5, 3600.0))
    d = json.loads(json.dumps(host_guard_to_dict(hg), allow_nan=False))
    assert d == {"version": 1, "action_times": [1.0, 2.5, 3600.0]}
    assert host_guard_from_dict(d) == hg
    assert host_guard_from_dict({}) == HostGuard()
