"""The pager: which transitions page whom, per rule policy, into the durable outbox (real SQLite store)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.fake_family import fake_registry
from tests.unit.test_engine import Clock, FakeProbe
from tests.unit.test_exporter import rule, snapshot
from watchdogd.config import Config, parse_config
from watchdogd.engine import events as ev
from watchdogd.engine.outbox import Outbox
from watchdogd.engine.snapshot import RuleSnapshot
from watchdogd.engine.state import StateStore
from watchdogd.model import Status
from watchdogd.notifications.pager import Pager

T0 = 1_000_000.0

SINKS = """\
notify:
  sinks:
    am: {alertmanager: {url: "http://127.0.0.1:9/"}}
    hook: {webhook: {url: "http://127.0.0.1:9/hook"}}
  default: {when: %s}
"""

RULES = """\
rules:
  acting:
    probe: fake.percent
    params: {key: p}
    above: 90
    severity: critical
    actions:
      - fake.fix: {key: a}
  alerting:
    probe: fake.percent
    params: {key: p}
    above: 90
  quiet:
    probe: fake.percent
    params: {key: p}
    above: 90
    notify: {when: never}
  hook-only:
    probe: fake.percent
    params: {key: p}
    above: 90
    notify: {sinks: [hook], when: firing, labels: {team: db}}
  repeating:
    probe: fake.percent
    params: {key: p}
    above: 90
    notify: {repeat: {count: 3, per: 1h}}
    actions:
      - fake.fix: {key: a}
"""


class Rig:
    def __init__(self, tmp_path: Path, when: str = "act_first", extra: str = "") -> None:
        self.clock = Clock(T0)
        self.store = StateStore(tmp_path / "state.db", self.clock)
        self.outbox = Outbox(self.store)
        text = f"state_dir: {tmp_path}/state\n" + SINKS % when + extra + RULES
        registry = fake_registry({"p": FakeProbe({})}, {"a": object()})  # type: ignore[dict-item]
        self.config: Config = parse_config(text, tmp_path / "w.yaml", registry=registry)
        self.woken = 0
        self.pager = Pager(self.outbox, lambda: self.config, self.clock, "host-1", self._wake)

    def _wake(self) -> None:
        self.woken += 1

    def changed(self, rule: str, old: Status, new: Status, value: float = 95.0, subject: str = "a") -> None:
        self.pager.handle(ev.SubjectChanged(self.clock.now, rule, subject, old, new, value, "warning"))

    def queued(self) -> list[tuple[str, str, str, str]]:
        """(sink, kind, rule, subject) of every queued notification, oldest first."""
        rows = self.outbox.due(float("inf"), limit=1000)
        out = []
        for row in rows:
            body = json.loads(row.body)
            out.append((row.sink, body["kind"], body["rule"], body["subject"]))
        return out


def test_act_first_does_not_page_a_fix_that_held(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.changed("acting", Status.PENDING, Status.FIRING)
    rig.changed("acting", Status.FIRING, Status.OK)
    assert rig.queued() == []
    assert rig.woken == 0


def test_act_first_pages_when_the_fix_did_not_hold_and_resolves_after(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.changed("acting", Status.PENDING, Status.FIRING)
    rig.pager.handle(ev.FixNotHeld(T0, "acting", "a", "fake.fix", 95.0, "still above 90% after 5s settle"))
    rig.pager.handle(ev.FixNotHeld(T0 + 60, "acting", "a", "fake.fix", 96.0, "again"))  # already paged
    rig.clock.now += 120
    rig.changed("acting", Status.FIRING, Status.OK, 10.0)
    assert rig.queued() == [
        ("am", "not_held", "acting", "a"),
        ("hook", "not_held", "acting", "a"),
        ("am", "resolved", "acting", "a"),
        ("hook", "resolved", "acting", "a"),
    ]
    body = json.loads(rig.outbox.due(float("inf"))[0].body)
    assert body["summary"] == "acting: a: fake.fix ran but the fix did not hold (still above 90% after 5s settle)"
    fields = (body["severity"], body["host"], body["value_text"], body["dry_run"])
    assert fields == ("critical", "host-1", "95.0%", False)
    assert rig.outbox.open_alerts() == []


def test_a_rule_without_actions_pages_on_firing_under_act_first(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.changed("alerting", Status.PENDING, Status.FIRING)
    assert rig.queued() == [("am", "firing", "alerting", "a"), ("hook", "firing", "alerting", "a")]
    [opened, _] = sorted(rig.outbox.open_alerts(), key=lambda a: a.sink)
    assert (opened.sink, opened.rule, opened.subject, opened.since) == ("am", "alerting", "a", T0)
    assert json.loads(opened.body)["summary"] == "alerting: a firing: 95.0% above 90.0%"


def test_when_firing_pages_every_rule_on_firing(tmp_path: Path) -> None:
    rig = Rig(tmp_path, when="firing")
    rig.changed("acting", Status.PENDING, Status.FIRING)
    rig.changed("acting", Status.FIRING, Status.FIRING)  # no change of state: nothing new
    assert [q[:2] for q in rig.queued()] == [("am", "firing"), ("hook", "firing")]


def test_never_and_sinks_and_labels_per_rule(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.changed("quiet", Status.PENDING, Status.FIRING)
    rig.changed("hook-only", Status.PENDING, Status.FIRING)
    assert rig.queued() == [("hook", "firing", "hook-only", "a")]
    assert json.loads(rig.outbox.due(float("inf"))[0].body)["labels"] == {"team": "db"}


def test_a_give_up_pages_under_act_first_and_the_resume_resolves_it(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.pager.handle(ev.GaveUp(T0, "acting", 5, 3600.0))
    rig.pager.handle(ev.Resumed(T0 + 900, "acting", "stable"))
    assert rig.queued() == [
        ("am", "gave_up", "acting", "-"),
        ("hook", "gave_up", "acting", "-"),
        ("am", "resumed", "acting", "-"),
        ("hook", "resumed", "acting", "-"),
    ]
    summary = json.loads(rig.outbox.due(float("inf"))[0].body)["summary"]
    assert summary == "acting: gave up after 5 actions in 1h; alerting only until it stays clear or is resumed"


def test_act_first_pages_a_subject_that_keeps_firing(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    for minute in (0, 10, 20):
        rig.clock.now = T0 + minute * 60
        rig.changed("repeating", Status.PENDING, Status.FIRING)
        if minute < 20:
            rig.changed("repeating", Status.FIRING, Status.OK)
    assert [q[:2] for q in rig.queued()] == [("am", "repeated"), ("hook", "repeated")]
    body = json.loads(rig.outbox.due(float("inf"))[0].body)
    assert body["summary"] == "repeating: a fired 3 times in 1h"


def test_the_repeat_window_forgets_old_firings(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    for hours in (0, 1.5, 3):  # never three within an hour
        rig.clock.now = T0 + hours * 3600
        rig.changed("repeating", Status.PENDING, Status.FIRING)
        rig.changed("repeating", Status.FIRING, Status.OK)
    assert rig.queued() == []


def test_the_repeat_table_forgets_subjects_whose_window_emptied(tmp_path: Path) -> None:
    """A rule over pids fires for a new subject each time: the table stays bounded, and a live window survives."""
    rig = Rig(tmp_path)
    rig.changed("repeating", Status.PENDING, Status.FIRING, subject="kept")
    for n in range(5000):
        rig.clock.now = T0 + n * 60.0  # each subject fires once; its window (1h) empties an hour later
        rig.changed("repeating", Status.PENDING, Status.FIRING, subject=f"pid-{n}")
    assert len(rig.pager._fired) <= 2 * 64 + 2 * 61  # about an hour of subjects, not 5000
    assert ("repeating", "kept") not in rig.pager._fired  # its one firing left the window long ago
    rig.changed("repeating", Status.PENDING, Status.FIRING, subject="pid-4999")
    assert len(rig.pager._fired[("repeating", "pid-4999")][1]) == 2  # a subject still in its window keeps count


@pytest.mark.parametrize(("mode", "expected"), [("mark", True), ("silent", False)])
def test_dry_run_rules_page_marked_or_not_at_all(tmp_path: Path, mode: str, expected: bool) -> None:
    rig = Rig(tmp_path)
    text = f"state_dir: {tmp_path}/state\ndry_run: true\n" + SINKS % "firing" + f"  dry_run: {mode}\n" + RULES
    rig.config = parse_config(text, tmp_path / "w.yaml", registry=rig.config.registry)
    rig.changed("alerting", Status.PENDING, Status.FIRING)
    queued = rig.outbox.due(float("inf"))
    assert bool(queued) is expected
    if expected:
        body = json.loads(queued[0].body)
        assert body["dry_run"] is True and body["summary"].startswith("[dry-run] alerting:")


def test_open_alerts_survive_a_restart_and_a_restart_resolves_what_cleared(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.changed("alerting", Status.PENDING, Status.FIRING)
    again = Pager(rig.outbox, lambda: rig.config, rig.clock, "host-1", lambda: None)  # a new process
    again.handle(ev.SubjectChanged(T0 + 5, "alerting", "a", Status.PENDING, Status.FIRING, 95.0, "warning"))
    assert len(rig.queued()) == 2  # already open: not paged twice
    again.handle(ev.SubjectChanged(T0 + 9, "alerting", "a", Status.FIRING, Status.OK, 5.0, "warning"))
    assert [q[1] for q in rig.queued()] == ["firing", "firing", "resolved", "resolved"]


def test_the_same_decision_is_queued_once_per_sink(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.changed("alerting", Status.PENDING, Status.FIRING)
    rows = rig.outbox.due(float("inf"))
    # A second put of the very same key (a restart that decides the same page) is ignored by the store.
    from watchdogd.engine.outbox import Queued  # noqa: PLC0415

    rig.outbox.put([Queued(rows[0].sink, rows[0].key, rows[0].body)], T0)
    assert len(rig.outbox.due(float("inf"))) == 2


# --------------------------------------------------------------------------- reconcile


def state(name: str, **changes: object) -> RuleSnapshot:
    fields: dict[str, object] = {"firing": {}, "up": True, "last_run": T0, "gave_up_at": None, **changes}
    fields.setdefault("firing_subjects", tuple(fields["firing"]))  # type: ignore[arg-type]
    return rule(name, **fields)


def test_a_restart_does_not_resolve_what_it_has_not_measured_yet(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.changed("alerting", Status.PENDING, Status.FIRING)
    # Restored after a restart: firing state without a value, the rule not run yet.
    rig.pager.reconcile(snapshot(state("alerting", last_run=None, firing_subjects=("a",))))
    rig.pager.reconcile(snapshot(state("alerting", last_run=None)))  # not measured: proves nothing
    rig.pager.reconcile(snapshot(state("alerting", up=False)))  # ran, but its probe is down: holds
    assert [q[1] for q in rig.queued()] == ["firing", "firing"]
    rig.pager.reconcile(snapshot(state("alerting")))  # measured, and the subject no longer fires
    assert [q[1] for q in rig.queued()] == ["firing", "firing", "resolved", "resolved"]
    assert rig.outbox.open_alerts() == []


def test_reconcile_resolves_the_alerts_of_a_removed_rule_and_drops_those_of_a_removed_sink(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.changed("alerting", Status.PENDING, Status.FIRING)
    sinks = SINKS.replace('    hook: {webhook: {url: "http://127.0.0.1:9/hook"}}\n', "") % "act_first"
    rules = RULES.replace("  alerting:\n", "  renamed:\n").replace("notify: {sinks: [hook], ", "notify: {")
    text = f"state_dir: {tmp_path}/state\n" + sinks + rules
    rig.config = parse_config(text, tmp_path / "w.yaml", registry=rig.config.registry)
    rig.pager.reconcile(snapshot(state("renamed")))
    bodies = [json.loads(row.body) for row in rig.outbox.due(float("inf"))]
    resolves = [body for body in bodies if body["kind"] != "firing"]
    assert [(r["kind"], r["rule"], r["subject"]) for r in resolves] == [("resolved", "alerting", "a")]
    assert resolves[0]["summary"] == "alerting: a resolved (the rule was removed or disabled)"
    assert rig.outbox.open_alerts() == []  # the hook's alert closed quietly: its sink is gone


def test_reconcile_pages_a_firing_subject_that_was_never_paged(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.pager.reconcile(snapshot(state("alerting", firing={"a": 97.0}), state("acting", firing={"a": 97.0})))
    # alerting pages on firing; acting (act_first with actions) waits for its fix to fail
    assert rig.queued() == [("am", "firing", "alerting", "a"), ("hook", "firing", "alerting", "a")]
    rig.pager.reconcile(snapshot(state("alerting", firing={"a": 97.0})))
    assert len(rig.queued()) == 2  # open now: not paged again


def test_reconcile_resumes_a_give_up_that_lifted_while_down(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.pager.handle(ev.GaveUp(T0, "acting", 5, 3600.0))
    rig.pager.reconcile(snapshot(state("acting", gave_up_at=T0)))
    assert [q[1] for q in rig.queued()] == ["gave_up", "gave_up"]
    rig.pager.reconcile(snapshot(state("acting")))
    assert [q[1] for q in rig.queued()] == ["gave_up", "gave_up", "resumed", "resumed"]


def test_a_restart_pages_a_restored_firing_subject_whose_page_was_lost(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.pager.reconcile(snapshot(state("alerting", last_run=None, firing_subjects=("a",))))
    assert rig.queued() == [("am", "firing", "alerting", "a"), ("hook", "firing", "alerting", "a")]
    body = json.loads(rig.outbox.due(float("inf"))[0].body)
    assert body["summary"] == "alerting: a firing above 90.0% (restored at start, not measured yet)"


def test_a_resolve_says_when_its_condition_began(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.changed("alerting", Status.PENDING, Status.FIRING)
    rig.clock.now = T0 + 300
    rig.changed("alerting", Status.FIRING, Status.OK, 10.0)
    resolved = json.loads(rig.outbox.due(float("inf"))[-1].body)
    assert (resolved["kind"], resolved["starts_at"], resolved["ends_at"]) == ("resolved", T0, T0 + 300)


def test_a_fix_that_did_not_hold_began_when_the_subject_started_firing(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.pager.handle(ev.FixNotHeld(T0 + 40, "acting", "a", "fake.fix", 95.0, "still above", since=T0))
    assert json.loads(rig.outbox.due(float("inf"))[0].body)["starts_at"] == T0
