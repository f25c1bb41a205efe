"""Trend rules in the engine: the projection is what fires and acts; the history survives reloads and restarts.

Fake probe and action (tests.unit.test_engine), a real SQLite store and a hand-driven clock.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.fake_family import fake_registry
from tests.unit.test_engine import Clock, FakeAction, FakeProbe, make_engine
from watchdogd.config import Config, parse_config
from watchdogd.engine.engine import Engine
from watchdogd.engine.snapshot import RuleSnapshot
from watchdogd.engine.state import StateStore
from watchdogd.model import Decision, RuleStatus

EVERY = 60.0
PREDICT = """\
    probe: fake.percent
    params: {key: r}
    predict: {above: 90, within: 4h, over: 1h, min_samples: 5}
    every: 1m
    timeout: 1s
    cooldown: 10m
    actions:
      - fake.fix: {key: r, settle: 0.1s}
"""


def fill(engine: Engine, probe: FakeProbe, clock: Clock, start: float, per_run: float, runs: int) -> None:
    """``runs`` runs a minute apart while the value grows ``per_run`` each (a disk filling)."""
    for i in range(runs):
        probe.values["a"] = start + per_run * i
        engine.run_rule("r")
        clock.now += EVERY


def test_the_projection_fires_and_acts_while_the_value_is_far_from_the_line(tmp_path: Path) -> None:
    clock = Clock()
    engine, probe, action, store = make_engine(tmp_path, PREDICT, clock, values={"a": 40.0})
    action.fix_to = None
    fill(engine, probe, clock, 40.0, 0.25, 30)  # 15 %/h: 90 % in 3h20m, inside the 4 h horizon
    assert action.calls == []  # half the window is needed first: still collecting, state held
    fill(engine, probe, clock, 47.5, 0.25, 2)
    assert len(action.calls) == 1
    [entry] = [e for e in store.history() if e.decision is Decision.RAN]
    trend = entry.detail["trend"]
    assert trend["value_now"] < 50 and entry.value_before is not None and entry.value_before > 90
    assert 2.5 * 3600 < trend["crosses_in"] < 3 * 3600


def test_a_flat_value_below_the_line_never_fires(tmp_path: Path) -> None:
    clock = Clock()
    engine, probe, action, _store = make_engine(tmp_path, PREDICT, clock, values={"a": 80.0})
    fill(engine, probe, clock, 80.0, 0.0, 40)
    assert action.calls == [] and rule(engine).status is RuleStatus.OK


def test_a_reload_that_changes_the_horizon_keeps_the_history(tmp_path: Path) -> None:
    clock = Clock()
    engine, probe, action, _store = make_engine(tmp_path, PREDICT, clock, values={"a": 40.0})
    action.fix_to = None
    fill(engine, probe, clock, 40.0, 0.1, 35)  # 6 %/h: 90 % in over 8 h, beyond the horizon
    assert action.calls == []
    wider = PREDICT.replace("within: 4h", "within: 12h")
    engine.reconfigure(reparse(tmp_path, wider, probe, action), {})
    fill(engine, probe, clock, 43.5, 0.1, 1)
    assert len(action.calls) == 1  # predicted at once, on the samples from before the reload


def test_a_restart_predicts_from_its_first_run(tmp_path: Path) -> None:
    clock = Clock()
    engine, probe, action, store = make_engine(tmp_path, PREDICT, clock, values={"a": 40.0})
    action.fix_to = None
    fill(engine, probe, clock, 40.0, 0.25, 29)
    engine.close()  # saves the histories (and so does a run every TREND_SAVE_EVERY)
    store.close()

    clock.now += 120  # down two minutes
    store2 = StateStore(tmp_path / "state.db", clock)
    engine2 = Engine(reparse(tmp_path, PREDICT, probe, action), store2, {}, clock)
    probe.values["a"] = 47.5
    engine2.run_rule("r")
    assert rule(engine2).firing_subjects == ("a",)


def rule(engine: Engine) -> RuleSnapshot:
    [found] = [r for r in engine.snapshot().rules if r.name == "r"]
    return found


def reparse(tmp_path: Path, rule_yaml: str, probe: FakeProbe, action: FakeAction) -> Config:
    text = f"state_dir: {tmp_path}/state\ngrace: 60s\nbudget: {{actions: 2, per: 1h}}\nrules:\n  r:\n" + rule_yaml
    return parse_config(text, tmp_path / "w.yaml", registry=fake_registry({"r": probe}, {"r": action}))
