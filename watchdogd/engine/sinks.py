"""The engine's own sinks: the log, the counters status and /metrics read, and the alert history on disk.

The log and the tallies are inline (in memory, microseconds): the log line
of a transition appears in the rule's own run, in order, and a snapshot
taken right after a run already counts it; neither touches the disk, so a
snapshot built from them never waits on a sync. The history sink writes to
the state store and is queued, so a slow disk never holds up a rule.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from watchdogd.engine import events as ev
from watchdogd.engine.state import StateStore
from watchdogd.logs import event as log_event
from watchdogd.model import AuditEntry, Decision, RuleTransition, Status

log = logging.getLogger("watchdogd.engine")

_TRANSITIONS = {
    Status.FIRING: (logging.WARNING, "firing"),
    Status.PENDING: (logging.INFO, "pending"),
    Status.OK: (logging.INFO, "resolved"),
}
_ACTED = frozenset({Decision.RAN, Decision.DRY_RUN})
SKIP_DECISIONS: tuple[Decision, ...] = tuple(
    d for d in Decision if d not in (Decision.RAN, Decision.DRY_RUN, Decision.OPERATOR)
)
"""Guard decisions that did not run the action (``gave_up`` included: the run that tipped over ``max_actions``)."""
_SKIPS = frozenset(SKIP_DECISIONS)


def _changed(e: ev.SubjectChanged) -> tuple[int, str, dict[str, Any]]:
    level, message = _TRANSITIONS[e.new]
    return level, message, {"rule": e.rule, "subject": e.subject, "value": e.value, "severity": e.severity}


def _down(e: ev.ProbeDown) -> tuple[int, str, dict[str, Any]]:
    level, message = (logging.ERROR, "target unreachable") if e.fires else (logging.WARNING, "probe down")
    return level, message, {"rule": e.rule, "probe": e.probe, "error": e.error}


def _waiting(e: ev.Waiting) -> tuple[int, str, dict[str, Any]]:
    if e.on:
        return logging.INFO, "waiting on dependency", {"rule": e.rule, "on": ",".join(e.on)}
    return logging.INFO, "dependency clear, probing again", {"rule": e.rule}


def _ran(e: ev.ActionRan) -> tuple[int, str, dict[str, Any]]:
    message = {"dry_run": "action would run", "ok": "action done"}.get(e.result, "action failed")
    level = logging.INFO if e.ok else logging.ERROR
    fields = {"rule": e.rule, "action": e.action, "subjects": e.subjects, "detail": e.detail, "error": e.error}
    return level, message, fields


def _operator(e: ev.Operator) -> tuple[int, str, dict[str, Any]]:
    by = e.detail.get("by") or {}
    if e.what == "pause":
        fields: dict[str, Any] = {"rule": e.rule, "until": e.detail.get("until")}
    else:
        still = e.detail.get("gave_up_at") is not None
        fields = {"rule": e.rule, "reset": e.detail.get("reset"), "still_gave_up": still}
    fields.update(uid=by.get("uid"), pid=by.get("pid"))
    return logging.WARNING, f"rule {e.what}d", fields


LINES: Mapping[type[Any], Callable[[Any], tuple[int, str, dict[str, Any]]]] = {
    ev.SubjectChanged: _changed,
    ev.ProbeDown: _down,
    ev.ProbeUp: lambda e: (logging.INFO, "probe up again", {"rule": e.rule, "probe": e.probe}),
    ev.TargetSeen: lambda e: (logging.INFO, "target answered for the first time", {"target": e.target, "rule": e.rule}),
    ev.TargetAbsent: lambda e: (
        logging.INFO,
        "target absent (never answered on this host)",
        {"target": e.target, "rule": e.rule, "error": e.error},
    ),
    ev.Waiting: _waiting,
    ev.GaveUp: lambda e: (
        logging.ERROR, "rule gave up: too many actions, alerting only",
        {"rule": e.rule, "max_actions": e.max_actions, "per": e.per},
    ),
    ev.Resumed: lambda e: (
        logging.WARNING if e.by == "operator" else logging.INFO,
        "rule acting again after giving up",
        {"rule": e.rule, "by": e.by},
    ),
    ev.Skipped: lambda e: (
        logging.INFO, "action skipped", {"rule": e.rule, "subject": e.subject, "reason": e.reason, "held_by": e.held_by}
    ),
    ev.ActionRan: _ran,
    ev.FixNotHeld: lambda e: (
        logging.WARNING, "fix did not hold",
        {"rule": e.rule, "subject": e.subject, "action": e.action, "value": e.value, "reason": e.reason},
    ),
    ev.Operator: _operator,
}
"""Event type -> (level, message, fields) of its log line; events not listed (``Audited``) are not logged."""


class LogSink:
    """One line per event, with the messages and levels the daemon has always logged (``LINES``)."""

    name = "log"

    def handle(self, event: ev.Event) -> None:
        line = LINES.get(type(event))
        if line is not None:
            level, message, fields = line(event)
            log_event(log, level, message, **fields)


def _history_row(event: ev.Event) -> RuleTransition | None:
    """The alert-history row of an event, or None for events the audit log already holds."""
    match event:
        case ev.SubjectChanged():
            kind = _TRANSITIONS[event.new][1]
            detail: dict[str, object] = {"from": event.old.value, "severity": event.severity}
            if event.evidence is not None:
                detail["evidence"] = event.evidence
            return RuleTransition(event.ts, event.rule, kind, event.subject, event.value, detail)
        case ev.ProbeDown():
            return RuleTransition(event.ts, event.rule, "down", detail={"error": event.error, "fires": event.fires})
        case ev.ProbeUp():
            return RuleTransition(event.ts, event.rule, "back")
        case ev.GaveUp():
            return RuleTransition(event.ts, event.rule, "gave_up", detail={"max_actions": event.max_actions})
        case ev.Resumed():
            return RuleTransition(event.ts, event.rule, "resumed", detail={"by": event.by})
        case ev.Waiting():
            return RuleTransition(event.ts, event.rule, "waiting" if event.on else "clear", detail={"on": event.on})
        case ev.TargetAbsent():
            return RuleTransition(event.ts, event.rule, "absent", event.target, detail={"error": event.error})
        case ev.TargetSeen():
            return RuleTransition(event.ts, event.rule, "seen", event.target)
    return None


TRANSITION_KINDS: tuple[str, ...] = ("pending", "firing", "resolved", "down", "back", "gave_up", "resumed")
"""What ``watchdogd_transitions_total`` counts, by ``kind``: a subject's and the rule's own changes of state."""


class Tallies:
    """Counters for /metrics, the newest ran/dry_run audit row per (rule, action) and each rule's latest
    transition, for status.

    Seeded from the store at start (``last``), then kept from events, so a
    snapshot reads memory only.
    """

    name = "tallies"

    def __init__(self, last: Mapping[tuple[str, str], AuditEntry] | None = None) -> None:
        self._lock = threading.Lock()
        self._actions: Counter[tuple[str, str, str]] = Counter()
        self._transitions: Counter[tuple[str, str]] = Counter()
        self._skips: Counter[tuple[str, str, str]] = Counter()
        self._last: dict[tuple[str, str], AuditEntry] = dict(last or {})
        self._changes: dict[str, RuleTransition] = {}

    def handle(self, event: ev.Event) -> None:
        with self._lock:
            if isinstance(event, ev.ActionRan):
                self._actions[(event.rule, event.action, event.result)] += 1
            elif isinstance(event, ev.Audited):
                for entry in event.entries:
                    if entry.decision in _ACTED:
                        self._last[(entry.rule, entry.action)] = entry
                    elif entry.decision in _SKIPS:  # a skip row is published once, as it is written
                        self._skips[(entry.rule, entry.action, entry.decision.value)] += 1
            elif (row := _history_row(event)) is not None and row.kind in TRANSITION_KINDS:
                self._transitions[(row.rule, row.kind)] += 1
                self._changes[row.rule] = row

    def actions_total(self) -> dict[tuple[str, str, str], int]:
        with self._lock:
            return dict(self._actions)

    def transitions_total(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._transitions)

    def action_skips(self) -> dict[tuple[str, str, str], int]:
        """(rule, action, decision) -> audited skips since start: one per audit row, so once per change of reason."""
        with self._lock:
            return dict(self._skips)

    def last_actions(self) -> dict[tuple[str, str], AuditEntry]:
        with self._lock:
            return dict(self._last)

    def rule_parts(
        self, rule: str, kinds: Sequence[str]
    ) -> tuple[RuleTransition | None, tuple[AuditEntry | None, ...]]:
        """One rule's latest transition and, per action kind, its newest ran/dry_run row: what its view shows."""
        with self._lock:
            return self._changes.get(rule), tuple(self._last.get((rule, kind)) for kind in kinds) if kinds else ()

    def last_changes(self) -> dict[str, RuleTransition]:
        """Per rule, its latest transition since start (what ``status --json`` shows as ``last_change``)."""
        with self._lock:
            return dict(self._changes)


class HistorySink:
    """The alert history in the state store: every change a rule saw, alert-only rules included.

    Queued (``EventStream.attach(..., queued=True)``): each row is a disk
    write, which must never hold up a rule; if the disk falls a thousand
    events behind, the oldest are dropped and counted, while the audit rows
    (written by the gate itself) are never at stake.
    """

    name = "history"

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def handle(self, event: ev.Event) -> None:
        row = _history_row(event)
        if row is not None:
            self._store.add_transitions([row])
