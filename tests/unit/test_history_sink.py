"""The alert history: the state store as a queued sink of what each rule saw change, alert-only rules too."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from tests.support.fake_family import fake_registry
from tests.unit.test_engine import Clock, FakeAction, FakeProbe, make_engine
from watchdogd.config import parse_config
from watchdogd.engine import events as ev
from watchdogd.engine.engine import Engine
from watchdogd.engine.sinks import HistorySink
from watchdogd.engine.state import StateStore
from watchdogd.model import ActionResult, Decision, ItemResult, Reading, RuleStatus, Status

ALERT_ONLY = """\
state_dir: {state}
rules:
  q:
    probe: fake.percent
    params: {{key: q}}
    above: 90
    for: 30s
    timeout: 1s
"""


def test_an_alert_only_rule_leaves_its_whole_story_in_the_history(tmp_path: Path) -> None:
    clock = Clock()
    store = StateStore(tmp_path / "state.db", clock)
    probe = FakeProbe({"a": 95.0})
    config = parse_config(ALERT_ONLY.format(state=tmp_path / "state"), tmp_path / "w.yaml",
                          registry=fake_registry({"q": probe}, {}))
    engine = Engine(config, store, {}, clock, grace=False)
    engine.run_rule("q")  # pending
    clock.now += 31
    engine.run_rule("q")  # firing
    probe.values["a"] = 10.0
    clock.now += 15
    engine.run_rule("q")  # resolved
    probe.error = RuntimeError("connection refused")
    clock.now += 15
    engine.run_rule("q")  # down (on_down: hold for a plain probe)
    engine.close()  # drains the queued sink

    rows = list(reversed(store.transitions(rule="q")))
    assert [(r.kind, r.subject) for r in rows] == [
        ("pending", "a"), ("firing", "a"), ("resolved", "a"), ("down", "-"),
    ]
    assert rows[1].value == 95.0 and rows[1].detail == {"from": "pending", "severity": "warning"}
    assert rows[3].detail == {"error": "connection refused", "fires": False}
    assert store.history() == []  # no action, no audit row: the history is where its story is
    [history] = [s for s in engine.snapshot().sinks if s.name == "history"]
    assert (history.mode, history.delivered, history.failed, history.dropped) == ("queued", 4, 0, 0)


def test_history_is_pruned_with_the_audit_log(tmp_path: Path) -> None:
    clock = Clock()
    store = StateStore(tmp_path / "state.db", clock)
    sink = HistorySink(store)
    sink.handle(ev.SubjectChanged(100.0, "r", "a", Status.OK, Status.PENDING, 91.0, "warning"))
    sink.handle(ev.SubjectChanged(200.0, "r", "a", Status.PENDING, Status.FIRING, 92.0, "warning"))
    sink.handle(ev.Audited(200.0, "r", ()))  # the audit log's own: not history
    assert [r.kind for r in store.transitions()] == ["firing", "pending"]
    store.prune(150.0)
    assert [r.ts for r in store.transitions()] == [200.0]
    assert store.transitions(rule="other") == []


# --------------------------------------------------------------------------- the rule's own changes

GIVES_UP = """\
    probe: fake.percent
    params: {key: r}
    above: 90
    timeout: 1s
    cooldown: 1m
    stable_for: 10m
    max_actions: {count: 1, per: 1h}
    actions:
      - fake.fix: {key: r, settle: 0s}
"""


def _give_up(tmp_path: Path, clock: Clock) -> tuple[Engine, FakeProbe, FakeAction, StateStore]:
    """Rule ``r`` acts once, its fix never holds, and the next run past the cooldown gives up."""
    engine, probe, action, store = make_engine(tmp_path, GIVES_UP, clock)
    action.fix_to = None
    engine.run_rule("r")  # firing, acts (1 of max_actions 1), the fix does not hold
    clock.now += 61  # past the 1m cooldown: ready again, but the window is full
    engine.run_rule("r")
    assert len(action.calls) == 1
    [rule] = engine.snapshot().rules
    assert rule.gave_up_at == clock.now and rule.status is RuleStatus.GAVE_UP
    return engine, probe, action, store


def test_a_give_up_lifts_by_itself_once_the_condition_stays_clear_for_stable_for(tmp_path: Path) -> None:
    clock = Clock()
    engine, probe, action, store = _give_up(tmp_path, clock)
    gave_up_at = clock.now
    probe.values["a"] = 10.0
    clock.now += 60
    engine.run_rule("r")  # resolved: clear from here
    clear_since = clock.now
    clock.now += 599
    engine.run_rule("r")  # a second short of stable_for: still given up
    snap = engine.snapshot()
    assert snap.rules[0].gave_up_at == gave_up_at
    assert ("r", "resumed") not in snap.transitions_total
    assert snap.rules[0].last_change is not None and snap.rules[0].last_change.kind == "resolved"
    clock.now += 1
    engine.run_rule("r")  # clear for stable_for (10m): the give-up lifts, with a fresh action window
    snap = engine.snapshot()
    [rule] = snap.rules
    assert rule.gave_up_at is None and rule.status is RuleStatus.OK
    assert rule.last_change is not None
    assert (rule.last_change.kind, rule.last_change.ts, rule.last_change.subject) == ("resumed", clock.now, "-")
    assert snap.transitions_total == {
        ("r", "firing"): 1, ("r", "gave_up"): 1, ("r", "resolved"): 1, ("r", "resumed"): 1,
    }
    resumed_at = clock.now
    probe.values["a"] = 95.0
    clock.now += 1
    engine.run_rule("r")  # acting again: the condition is back and the window is fresh
    assert len(action.calls) == 2
    engine.close()  # drains the queued history sink

    rows = list(reversed(store.transitions(rule="r")))
    assert [(r.kind, r.subject) for r in rows] == [
        ("firing", "a"), ("gave_up", "-"), ("resolved", "a"), ("resumed", "-"), ("firing", "a"),
    ]
    assert (rows[1].ts, rows[1].detail) == (gave_up_at, {"max_actions": 1})
    assert rows[2].ts == clear_since
    assert (rows[3].ts, rows[3].detail, rows[3].value) == (resumed_at, {"by": "stable"}, None)


def test_resume_reset_of_a_given_up_rule_is_a_resumed_by_the_operator_and_nothing_else_is(tmp_path: Path) -> None:
    clock = Clock()
    engine, _probe, _action, store = _give_up(tmp_path, clock)
    alice = {"uid": 1000, "pid": 4242, "user": "alice"}
    clock.now += 5
    plain = engine.resume("r", by=alice)  # a plain resume leaves a give-up in place
    assert plain["gave_up_at"] is not None
    assert ("r", "resumed") not in engine.snapshot().transitions_total
    clock.now += 5
    reset = engine.resume("r", reset=True, by=alice)
    assert reset["gave_up_lifted"] is True
    reset_at = clock.now
    snap = engine.snapshot()
    assert snap.transitions_total[("r", "resumed")] == 1
    assert snap.rules[0].last_change is not None
    assert (snap.rules[0].last_change.kind, snap.rules[0].last_change.ts) == ("resumed", reset_at)
    # Paused but not given up: neither a plain resume nor a reset is a "resumed" (nothing gave up).
    clock.now += 5
    engine.pause("r", math.inf)
    engine.resume("r")
    engine.pause("r", clock.now + 300)
    engine.resume("r", reset=True)
    assert engine.snapshot().transitions_total[("r", "resumed")] == 1
    engine.close()

    rows = list(reversed(store.transitions(rule="r")))
    assert [r.kind for r in rows] == ["firing", "gave_up", "resumed"]
    assert (rows[2].ts, rows[2].subject, rows[2].detail) == (reset_at, "-", {"by": "operator"})
    # The operator's own rows stay in the audit log, one per pause and resume.
    operator = [e.action for e in store.history(decisions={Decision.OPERATOR})]
    assert operator.count("operator.resume") == 4 and operator.count("operator.pause") == 2


def test_a_probe_that_fails_and_answers_again_is_down_then_back(tmp_path: Path) -> None:
    clock = Clock()
    store = StateStore(tmp_path / "state.db", clock)
    probe = FakeProbe({"a": 10.0})
    config = parse_config(ALERT_ONLY.format(state=tmp_path / "state"), tmp_path / "w.yaml",
                          registry=fake_registry({"q": probe}, {}))
    engine = Engine(config, store, {}, clock, grace=False)
    engine.run_rule("q")  # ok: no change, no row
    probe.error = RuntimeError("connection refused")
    clock.now += 15
    engine.run_rule("q")  # down
    down_at = clock.now
    clock.now += 15
    engine.run_rule("q")  # still down: no second row
    probe.error = None
    clock.now += 15
    engine.run_rule("q")  # back
    back_at = clock.now
    clock.now += 15
    engine.run_rule("q")  # still up: no second row
    snap = engine.snapshot()
    assert snap.transitions_total == {("q", "down"): 1, ("q", "back"): 1}
    assert snap.rules[0].last_change is not None
    assert (snap.rules[0].last_change.kind, snap.rules[0].last_change.ts) == ("back", back_at)
    engine.close()

    rows = list(reversed(store.transitions(rule="q")))
    assert [(r.kind, r.subject, r.ts) for r in rows] == [("down", "-", down_at), ("back", "-", back_at)]
    assert rows[0].detail == {"error": "connection refused", "fires": False}
    assert rows[1].detail == {} and rows[1].value is None


def test_an_outage_of_an_on_down_fire_rule_is_down_and_firing_then_back_and_resolved(tmp_path: Path) -> None:
    clock = Clock()
    store = StateStore(tmp_path / "state.db", clock)
    probe = FakeProbe({"main": 0.01})
    text = (f"state_dir: {tmp_path}/state\ntargets: {{fake: {{main: {{}}}}}}\n"
            "rules:\n  up:\n    probe: fake.up\n    target: main\n    params: {key: up}\n    above: 5s\n"
            "    timeout: 1s\n")
    config = parse_config(text, tmp_path / "w.yaml", registry=fake_registry({"up": probe}, {}))
    assert config.rules["up"].on_down == "fire"
    engine = Engine(config, store, {}, clock, grace=False)
    engine.run_rule("up")
    probe.error = RuntimeError("connection refused")
    clock.now += 15
    engine.run_rule("up")
    probe.error = None
    clock.now += 15
    engine.run_rule("up")
    snap = engine.snapshot()
    assert snap.transitions_total == {("up", k): 1 for k in ("down", "firing", "back", "resolved")}
    engine.close()

    rows = list(reversed(store.transitions(rule="up")))
    # "seen" (the target answered for the first time) is history, but not a transition /metrics counts.
    assert [(r.kind, r.subject) for r in rows] == [
        ("seen", "fake/main"), ("down", "-"), ("firing", "main"), ("back", "-"), ("resolved", "main"),
    ]
    assert rows[1].detail == {"error": "connection refused", "fires": True}
    assert rows[2].value == math.inf


# --------------------------------------------------------------------------- the verify re-probe


class ProbeAction:
    """An action that sets the probe's error (None: the service answers again, an error: it is restarting)."""

    def __init__(self, probe: FakeProbe, error: Exception | None) -> None:
        self.probe, self.error, self.calls = probe, error, 0

    def run(self, subjects: Sequence[Reading], *, dry_run: bool) -> ActionResult:
        self.calls += 1
        self.probe.error = self.error
        return ActionResult(ok=True, items=tuple(ItemResult(s.subject, True, "restarted") for s in subjects))


# Found by this test: the verify's re-probe used to set the rule's last result without publishing down/back,
# so an outage fixed by the rule's own action (the commonest case) never came "back" in the history.
def test_an_outage_fixed_by_the_rules_action_comes_back_in_the_history(tmp_path: Path) -> None:
    clock = Clock()
    store = StateStore(tmp_path / "state.db", clock)
    probe = FakeProbe({"main": 0.01})
    restart = ProbeAction(probe, None)
    text = (f"state_dir: {tmp_path}/state\ntargets: {{fake: {{main: {{}}}}}}\n"
            "rules:\n  up:\n    probe: fake.up\n    target: main\n    params: {key: up}\n    above: 5s\n"
            "    timeout: 1s\n    actions:\n      - fake.fix: {key: up, settle: 0s}\n")
    config = parse_config(text, tmp_path / "w.yaml", registry=fake_registry({"up": probe}, {"up": restart}))
    engine = Engine(config, store, {}, clock, grace=False)
    engine.run_rule("up")
    probe.error = RuntimeError("connection refused")
    clock.now += 15
    engine.run_rule("up")  # down, firing (on_down: fire), restarted; the verify sees it answer
    assert restart.calls == 1
    clock.now += 15
    engine.run_rule("up")
    snap = engine.snapshot()
    engine.close()
    kinds = [r.kind for r in reversed(store.transitions(rule="up")) if r.kind != "seen"]
    assert kinds.count("down") == kinds.count("back") == 1, kinds  # today: ['down', 'firing', 'resolved']
    assert snap.transitions_total[("up", "back")] == 1


# Found by this test, the other way round: a verify re-probe that found the probe down (the service
# restarting) recorded no "down", and the next run that answered published a "back" from nothing.
def test_a_probe_down_in_the_verify_is_not_a_back_without_a_down(tmp_path: Path) -> None:
    clock = Clock()
    store = StateStore(tmp_path / "state.db", clock)
    probe = FakeProbe({"a": 95.0})
    restarting = ProbeAction(probe, RuntimeError("restarting"))
    text = f"state_dir: {tmp_path}/state\nrules:\n  r:\n" + GIVES_UP
    config = parse_config(text, tmp_path / "w.yaml", registry=fake_registry({"r": probe}, {"r": restarting}))
    engine = Engine(config, store, {}, clock, grace=False)
    engine.run_rule("r")  # firing, acts; the verify finds the probe down
    assert restarting.calls == 1
    probe.error, probe.values["a"] = None, 10.0
    clock.now += 15
    engine.run_rule("r")  # answers again, clear
    engine.close()
    kinds = [r.kind for r in reversed(store.transitions(rule="r"))]
    assert kinds.count("back") == kinds.count("down"), kinds  # today: ['firing', 'back', 'resolved']
