"""The alert history: the state store as a queued sink of what each rule saw change, alert-only rules too."""

from __future__ import annotations

from pathlib import Path

from tests.support.fake_family import fake_registry
from tests.unit.test_engine import Clock, FakeProbe
from watchdogd.config import parse_config
from watchdogd.engine import events as ev
from watchdogd.engine.engine import Engine
from watchdogd.engine.sinks import HistorySink
from watchdogd.engine.state import StateStore
from watchdogd.model import Status

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
