"""Evidence at firing and before acting: taken under its deadline, cut to size, stored, linked, shown.

The engine is under test, with the fake family's probes given a ``describe`` of the test's own and a real
SQLite store; the families' own describe functions have their tests next to their families.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support.fake_family import fake_registry
from tests.unit.test_engine import Clock, FakeAction, FakeProbe
from watchdogd.config import parse_config
from watchdogd.contracts import EvidenceLimits
from watchdogd.engine import events as ev
from watchdogd.engine.engine import Engine
from watchdogd.engine.state import StateStore
from watchdogd.faces.cli import render_evidence
from watchdogd.faces.control import Dispatcher, Handlers
from watchdogd.model import Reading, Status


class Describing(FakeProbe):
    """A fake probe that can describe: its sections, or it blocks or raises on demand."""

    def __init__(self, values: dict[str, float], sections: dict[str, Any] | None = None) -> None:
        super().__init__(values)
        self.sections = sections if sections is not None else {"top processes by CPU": [{"pid": 1, "cpu": 99.0}]}
        self.block = threading.Event()
        self.blocking = False
        self.fail: Exception | None = None
        self.asked: list[tuple[list[str], EvidenceLimits]] = []

    def describe(self, readings: Sequence[Reading], limits: EvidenceLimits) -> dict[str, Any]:
        self.asked.append(([r.subject for r in readings], limits))
        if self.blocking:
            self.block.wait(10)
        if self.fail is not None:
            raise self.fail
        return self.sections


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.events: list[ev.Event] = []

    def handle(self, event: ev.Event) -> None:
        self.events.append(event)


def engine_with(
    tmp_path: Path, probe: Describing, rule: str, extra: str = ""
) -> tuple[Engine, StateStore, Clock, Recorder, FakeAction]:
    clock = Clock()
    store = StateStore(tmp_path / "state.db", clock)
    action = FakeAction(probe, store)
    text = f"state_dir: {tmp_path}/state\n{extra}rules:\n  r:\n" + rule
    config = parse_config(text, tmp_path / "w.yaml", registry=fake_registry({"r": probe}, {"r": action}))
    engine = Engine(config, store, {}, clock, grace=False)
    recorder = Recorder()
    engine.events.attach(recorder)
    return engine, store, clock, recorder, action


ALERT_ONLY = """\
    probe: fake.percent
    params: {key: r}
    above: 90
    timeout: 5s
"""

ACTING = ALERT_ONLY + """\
    actions:
      - fake.fix: {key: r, settle: 0.1s}
"""


def test_evidence_is_taken_as_a_subject_starts_firing_and_named_by_its_event(tmp_path: Path) -> None:
    probe = Describing({"a": 95.0, "b": 10.0})
    engine, _store, _clock, recorder, _ = engine_with(tmp_path, probe, ALERT_ONLY)
    engine.run_rule("r")
    engine.run_rule("r")  # still firing: no new evidence
    [(subjects, limits)] = probe.asked
    assert subjects == ["a"] and (limits.max_bytes, limits.show_queries) == (64 * 1024, False)
    [firing] = [e for e in recorder.events if isinstance(e, ev.SubjectChanged) and e.new is Status.FIRING]
    assert firing.evidence is not None
    found = engine.evidence.store.get(firing.evidence)
    assert found is not None
    assert (found.rule, found.reason, found.subjects, found.error) == ("r", "firing", ("a",), None)
    assert found.sections == {"top processes by CPU": [{"pid": 1, "cpu": 99.0}]}


def test_the_action_s_audit_row_links_the_evidence_taken_before_it(tmp_path: Path) -> None:
    probe = Describing({"a": 95.0})
    engine, store, _clock, _recorder, action = engine_with(tmp_path, probe, ACTING)
    engine.run_rule("r")
    assert action.calls == [(["a"], False)]
    [row] = store.history()
    assert len(probe.asked) == 1  # the run's firing evidence serves its action too
    found = engine.evidence.store.get(row.detail["evidence"])
    assert found is not None and found.reason == "firing"


def test_a_rule_firing_since_earlier_takes_evidence_before_it_acts(tmp_path: Path) -> None:
    probe = Describing({"a": 95.0})
    rule = ACTING.replace("above: 90\n", "above: 90\n    cooldown: 1m\n")
    engine, store, clock, _recorder, action = engine_with(tmp_path, probe, rule)
    action.fix_to = None  # the fix does not hold
    engine.run_rule("r")
    clock.now += 120  # past the cooldown: acts again, the subject fired all along
    engine.run_rule("r")
    taken = [engine.evidence.store.get(row.detail["evidence"]) for row in store.history()]
    assert [found.reason if found else None for found in taken] == ["before action", "firing"]  # newest first


def test_a_describe_past_its_timeout_is_abandoned_and_recorded(tmp_path: Path) -> None:
    probe = Describing({"a": 95.0})
    probe.blocking = True
    engine, _store, _clock, recorder, _ = engine_with(tmp_path, probe, ALERT_ONLY, "evidence: {timeout: 0.2s}\n")
    try:
        engine.run_rule("r")
    finally:
        probe.block.set()
    [firing] = [e for e in recorder.events if isinstance(e, ev.SubjectChanged) and e.new is Status.FIRING]
    found = engine.evidence.store.get(firing.evidence or -1)
    assert found is not None and found.error == "timed out after 0.2s" and found.sections == {}


def test_a_describe_that_raises_leaves_its_error(tmp_path: Path) -> None:
    probe = Describing({"a": 95.0})
    probe.fail = RuntimeError("permission denied: /proc/1/io")
    engine, _store, _clock, recorder, _ = engine_with(tmp_path, probe, ALERT_ONLY)
    engine.run_rule("r")
    [firing] = [e for e in recorder.events if isinstance(e, ev.SubjectChanged) and e.new is Status.FIRING]
    found = engine.evidence.store.get(firing.evidence or -1)
    assert found is not None and found.error == "permission denied: /proc/1/io"


def test_evidence_is_cut_to_max_bytes_largest_sections_first(tmp_path: Path) -> None:
    sections = {"small": "x" * 100, "big": "y" * 5000, "medium": "z" * 900}
    probe = Describing({"a": 95.0}, sections)
    engine, _store, _clock, recorder, _ = engine_with(tmp_path, probe, ALERT_ONLY, "evidence: {max_bytes: 2KiB}\n")
    engine.run_rule("r")
    [firing] = [e for e in recorder.events if isinstance(e, ev.SubjectChanged) and e.new is Status.FIRING]
    found = engine.evidence.store.get(firing.evidence or -1)
    assert found is not None
    assert set(found.sections) == {"small", "medium"} and found.cut == ("big",)
    assert found.bytes <= 2048


def test_a_probe_that_cannot_describe_takes_no_evidence(tmp_path: Path) -> None:
    probe = FakeProbe({"a": 95.0})
    clock = Clock()
    store = StateStore(tmp_path / "state.db", clock)
    text = f"state_dir: {tmp_path}/state\nrules:\n  r:\n" + ALERT_ONLY
    engine = Engine(parse_config(text, tmp_path / "w.yaml", registry=fake_registry({"r": probe})), store, {}, clock)
    recorder = Recorder()
    engine.events.attach(recorder)
    engine.run_rule("r")
    assert [e.evidence for e in recorder.events if isinstance(e, ev.SubjectChanged)] == [None]


def test_watchdogctl_show_prints_the_sections(tmp_path: Path) -> None:
    probe = Describing({"a": 95.0}, {"sessions by state": {"active": 3, "idle": 40}})
    engine, _store, _clock, recorder, _ = engine_with(tmp_path, probe, ALERT_ONLY)
    engine.run_rule("r")
    [firing] = [e for e in recorder.events if isinstance(e, ev.SubjectChanged) and e.new is Status.FIRING]
    handlers = Handlers(
        snapshot=engine.snapshot, history=lambda *_: (), pause=lambda *_: None, resume=lambda *_: {},
        run=engine.run_rule, reload=lambda: (True, ""), rules=engine.rule_names, units=lambda: {}, version="t",
        evidence=engine.evidence.store.get,
    )
    dispatcher = Dispatcher(handlers)
    reply = dispatcher.handle(b'{"v": 1, "cmd": "show", "args": {"id": %d}}' % firing.evidence)
    assert reply["ok"] is True
    text = render_evidence(reply["result"])
    assert text.splitlines()[0].startswith(f"evidence {firing.evidence}: r, firing, ")
    assert "== sessions by state" in text and '"idle": 40' in text
    missing = dispatcher.handle(b'{"v": 1, "cmd": "show", "args": {"id": 999}}')
    assert missing["ok"] is False and missing["error"]["code"] == "unknown_evidence"
