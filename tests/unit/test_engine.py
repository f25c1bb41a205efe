"""Engine cycle logic with fake probes and actions (the engine is under test, not them).

The engine gets them from a registry of fake kinds (``tests.support.fake_family``).

A real SQLite store in tmp_path and a hand-driven clock: no sleeping.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.support.fake_family import fake_registry
from watchdogd.config import Config, parse_config
from watchdogd.engine.engine import Engine
from watchdogd.engine.state import StateStore
from watchdogd.model import ActionResult, Decision, ItemResult, Reading, RuleStatus


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeProbe:
    """Returns the values the test sets; can raise or hang on demand."""

    def __init__(self, values: dict[str, float]) -> None:
        self.values = values
        self.error: Exception | None = None
        self.release = threading.Event()
        self.hang = False

    def measure(self) -> list[Reading]:
        if self.hang:
            self.release.wait(30)
        if self.error is not None:
            raise self.error
        return [Reading(subject, value) for subject, value in self.values.items()]


class FakeAction:
    def __init__(self, probe: FakeProbe, store: StateStore, fix_to: float | None = 0.0) -> None:
        self.probe = probe
        self.store = store
        self.fix_to = fix_to
        self.calls: list[tuple[list[str], bool]] = []
        self.seen_started: list[str] = []

    def run(self, subjects: Sequence[Reading], *, dry_run: bool) -> ActionResult:
        # Write-ahead check: the "started" row must already be durable while we run.
        self.seen_started = [e.result for e in self.store.history(limit=10)]
        self.calls.append(([s.subject for s in subjects], dry_run))
        if not dry_run and self.fix_to is not None:
            for s in subjects:
                self.probe.values[s.subject] = self.fix_to
        return ActionResult(ok=True, items=tuple(ItemResult(s.subject, True, "fixed") for s in subjects))


def make_engine(
    tmp_path: Path,
    rule_yaml: str,
    clock: Clock,
    *,
    grace: bool = False,
    values: dict[str, float] | None = None,
) -> tuple[Engine, FakeProbe, FakeAction, StateStore]:
    """An engine whose one rule ``r`` measures with the returned probe and acts with the returned action."""
    text = f"state_dir: {tmp_path}/state\ngrace: 60s\nbudget: {{actions: 2, per: 1h}}\nrules:\n  r:\n" + rule_yaml
    store = StateStore(tmp_path / "state.db", clock)
    probe = FakeProbe(values if values is not None else {"a": 95.0})
    action = FakeAction(probe, store)
    config: Config = parse_config(text, tmp_path / "w.yaml", registry=fake_registry({"r": probe}, {"r": action}))
    engine = Engine(config, store, {}, clock, grace=grace)
    return engine, probe, action, store


BASE = """\
    probe: fake.percent
    params: {key: r}
    above: 90
    timeout: 1s
    cooldown: 10m
    actions:
      - fake.fix: {key: r, settle: 0.1s}
"""


def test_firing_subject_is_acted_on_after_write_ahead(tmp_path: Path) -> None:
    engine, _probe, action, store = make_engine(tmp_path, BASE, Clock())
    report = engine.run_rule("r")
    assert action.calls == [(["a"], False)]
    assert action.seen_started == ["started"]
    [entry] = store.history()
    assert (entry.decision, entry.result, entry.value_before, entry.value_after) == (
        Decision.RAN,
        "ok",
        95.0,
        0.0,
    )
    assert entry.detail["held"] is True
    assert report.status is RuleStatus.OK  # the verify re-probe saw the fix


def test_cooldown_blocks_a_repeat_and_is_audited_once(tmp_path: Path) -> None:
    clock = Clock()
    engine, probe, action, store = make_engine(tmp_path, BASE, clock)
    action.fix_to = None  # the fix does not hold
    engine.run_rule("r")
    for _ in range(3):
        clock.now += 60
        engine.run_rule("r")
    assert len(action.calls) == 1
    decisions = [e.decision for e in store.history()]
    assert decisions == [Decision.SKIPPED_COOLDOWN, Decision.RAN]
    clock.now += 600
    engine.run_rule("r")
    assert len(action.calls) == 2


def test_cooldown_survives_a_new_engine_on_the_same_state(tmp_path: Path) -> None:
    clock = Clock()
    engine, _probe, action, store = make_engine(tmp_path, BASE, clock)
    action.fix_to = None
    engine.run_rule("r")
    engine.close()
    store.close()
    clock.now += 30
    engine2, _probe2, action2, _store2 = make_engine(tmp_path, BASE, clock)
    engine2.run_rule("r")
    assert action2.calls == []


def test_probe_error_is_a_down_result_not_an_exception(tmp_path: Path) -> None:
    engine, probe, action, _store = make_engine(tmp_path, BASE, Clock())
    probe.error = RuntimeError("disk\nvanished")
    report = engine.run_rule("r")
    assert (report.up, report.error, report.status) == (False, "disk vanished", RuleStatus.DOWN)
    assert action.calls == []


def test_hung_probe_times_out_and_is_not_stacked(tmp_path: Path) -> None:
    engine, probe, _action, _store = make_engine(tmp_path, BASE, Clock())
    probe.hang = True
    try:
        first = engine.run_rule("r")
        second = engine.run_rule("r")
    finally:
        probe.release.set()
    assert first.error == "timed out after 1s"
    assert second.error == "previous run still hung (over 1s)"


def test_dry_run_calls_the_action_in_dry_run_and_spares_the_budget(tmp_path: Path) -> None:
    clock = Clock()
    engine, _probe, action, store = make_engine(tmp_path, BASE + "    dry_run: true\n", clock)
    engine.run_rule("r")
    assert action.calls == [(["a"], True)]
    [entry] = store.history()
    assert (entry.decision, entry.result) == (Decision.DRY_RUN, "dry_run")
    assert engine.snapshot().budget_remaining == 2


def test_grace_period_skips_actions(tmp_path: Path) -> None:
    clock = Clock()
    engine, _probe, action, store = make_engine(tmp_path, BASE, clock, grace=True)
    engine.run_rule("r")
    assert action.calls == []
    assert [e.decision for e in store.history()] == [Decision.SKIPPED_GRACE]
    clock.now += 61
    engine.run_rule("r")
    assert len(action.calls) == 1


def test_host_budget_is_shared_and_enforced(tmp_path: Path) -> None:
    clock = Clock()
    values = {"a": 95.0, "b": 96.0, "c": 97.0}
    engine, _probe, action, store = make_engine(
        tmp_path, BASE.replace("cooldown: 10m", "cooldown: 1s"), clock, values=values
    )
    action.fix_to = None
    for _ in range(3):
        engine.run_rule("r")
        clock.now += 700
    # budget 2 per hour: the third run is refused
    assert len(action.calls) == 2
    assert store.history()[0].decision is Decision.SKIPPED_BUDGET


def test_pause_and_resume(tmp_path: Path) -> None:
    clock = Clock()
    engine, _probe, action, store = make_engine(tmp_path, BASE, clock)
    engine.pause("r", clock.now + 300)
    assert engine.run_rule("r").status is RuleStatus.PAUSED
    assert action.calls == []
    engine.resume("r")
    engine.run_rule("r")
    assert len(action.calls) == 1


def test_max_per_run_cuts_the_batch(tmp_path: Path) -> None:
    yaml = BASE.replace("settle: 0.1s}", "settle: 0.1s, max_per_run: 2}")
    engine, _probe, action, store = make_engine(tmp_path, yaml, Clock(), values={"a": 95, "b": 96, "c": 97})
    engine.run_rule("r")
    assert action.calls == [(["a", "b"], False)]
    assert {e.subject: e.decision for e in store.history()}["c"] is Decision.SKIPPED_MAX_PER_RUN


def test_unknown_rule_raises_key_error(tmp_path: Path) -> None:
    engine, *_ = make_engine(tmp_path, BASE, Clock())
    with pytest.raises(KeyError):
        engine.run_rule("nope")
