"""The only path that runs actions: guard -> write-ahead -> act -> verify -> record.

Every safety rule (cooldown, shared holds, budget, give-up, pause, host
maintenance, dry-run, grace, max_per_run) is applied here and nowhere else. The write-ahead step
is one transaction: the rule's new cooldown, the shared holds, the budget's
spend and the "started" rows land together or not at all, so a ``kill -9``
mid-action can never lead to a repeat the cooldown or the budget forbids.
That write (and its fsync) happens under the gate's own lock, which nothing
that serves status or /metrics ever takes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from watchdogd.configtypes import Rule
from watchdogd.contracts import Action, NamesThing
from watchdogd.core import guard as guards
from watchdogd.engine import events as ev
from watchdogd.engine.budget import OPEN, Budget, Clearance, Spend
from watchdogd.engine.evidence import EvidenceTaker
from watchdogd.engine.runtime import RuleRuntime
from watchdogd.engine.state import StateStore
from watchdogd.model import ActionResult, AuditEntry, Clock, Decision, ProbeResult, Reading, Status

log = logging.getLogger(__name__)

HOLDS_KEY = "holds"
MAX_AUDIT_ITEMS = 100
VERIFY_POLL_MIN, VERIFY_POLL_MAX = 0.25, 5.0
"""Verify re-probes every half interval within these bounds: soon enough to see a restart land, never a busy loop."""

SLOT_LOST = ActionResult(
    ok=False, error="not run: fleet budget unavailable (the slot's lease was lost; the group fails closed)"
)

Remeasure = Callable[[RuleRuntime], ProbeResult]
"""Probe the rule again and evaluate what it saw (the runner's, for verify)."""

MaintenanceAt = Callable[[float], guards.Maintenance | None]
"""The host's maintenance mode if it is on at that time (the engine's, from memory)."""


def _no_maintenance(now: float) -> guards.Maintenance | None:
    return None


class Gate:
    def __init__(
        self,
        *,
        store: StateStore,
        budget: Budget,
        events: ev.EventStream,
        remeasure: Remeasure,
        clock: Clock,
        stop: threading.Event,
        in_grace: Callable[[float], bool],
        evidence: EvidenceTaker | None = None,
        maintenance: MaintenanceAt = _no_maintenance,
    ) -> None:
        self.evidence = evidence
        self._maintenance = maintenance
        self.store = store
        self.budget = budget  # swapped by a reload that changes the budget
        self._events = events
        self._remeasure = remeasure
        self._clock = clock
        self._stop = stop
        self._in_grace = in_grace
        self._lock = threading.Lock()  # holds, budget spend and the write-ahead write, across rules
        self._holds: dict[str, guards.Hold] = guards.holds_from_dict(store.load_kv(HOLDS_KEY) or {})

    def reconfigure(self, make: Callable[[Budget], Budget]) -> None:
        """The budget a reload asks for, made from the running one under the lock: a spend committing
        meanwhile is kept (``make`` keeps the running host budget when its policy is unchanged)."""
        with self._lock:
            self.budget = make(self.budget)

    def act(self, rt: RuleRuntime, firing: Sequence[Reading], now: float) -> list[AuditEntry]:
        """Decide, book, run, verify and record the rule's actions for its firing subjects.

        A fleet slot (if the rule is in a group) is taken before the gate's
        lock, since the coordinator may take up to its timeout, and given
        back when the run and its verify are over, or at once when the guard
        skips the run after all.
        """
        by_subject = {reading.subject: reading for reading in firing}
        things = {subject: _things(rt, reading) for subject, reading in by_subject.items()}
        clearance = self._clear(rt, things, now)
        try:
            return self._act(rt, by_subject, things, clearance, now)
        finally:
            clearance.give_back()

    def _clear(self, rt: RuleRuntime, things: Mapping[str, Mapping[str, str]], now: float) -> Clearance:
        """Ask a fleet budget for a slot, only when the guard would let the run start (without the lock).

        The guard's answer is checked again under the lock; asking first
        keeps a rule in cooldown from taking a slot the fleet needs.
        """
        budget, rule = self.budget, rt.rule
        if not budget.governs(rule.name):
            return OPEN
        # self._holds is swapped whole under the lock, so reading it here sees one consistent map.
        would, _held = self._decide(rt, things, now, None, self._maintenance(now))
        if not would.allowed:
            return OPEN
        return budget.clear(rule.name, rule.guard.dry_run, now)

    def _decide(
        self,
        rt: RuleRuntime,
        things: Mapping[str, Mapping[str, str]],
        now: float,
        budget_closed: Decision | None,
        maintenance: guards.Maintenance | None,
    ) -> tuple[guards.Verdict, dict[str, guards.Hold]]:
        """The guard's verdict on the subjects of ``things`` (in order), with the shared holds that apply.

        Asked twice per run: before the lock to decide whether a fleet slot is worth asking for
        (``budget_closed`` None), and under it to decide for good.
        """
        held = {s: h for s, keys in things.items() if (h := guards.active_hold(self._holds, keys, now)) is not None}
        verdict = guards.decide(
            rt.guard,
            list(things),
            now,
            rt.rule.guard,
            budget_closed=budget_closed,
            in_grace=self._in_grace(now),
            max_per_run=min(action.params.max_per_run for action, _ in rt.actions),
            held=held,
            maintenance=maintenance is not None,
        )
        return verdict, held

    def _act(
        self,
        rt: RuleRuntime,
        by_subject: Mapping[str, Reading],
        things: Mapping[str, Mapping[str, str]],
        clearance: Clearance,
        now: float,
    ) -> list[AuditEntry]:
        rule = rt.rule
        spend: Spend | None = None
        with self._lock:
            closed = clearance.closed or (None if self.budget.is_open(now) else Decision.SKIPPED_BUDGET)
            maintenance = self._maintenance(now)
            verdict, held = self._decide(rt, things, now, closed, maintenance)  # things: by_subject's keys
            unbooked, skips_before = rt.guard, dict(rt.last_skip)  # what a failed write must leave
            rt.guard = verdict.guard
            if verdict.gave_up_now:
                self._events.publish(ev.GaveUp(now, rule.name, rule.guard.max_actions, rule.guard.max_actions_per))
            _forget_maintenance_skips(rt, verdict.allowed)
            skipped = self._skip_entries(
                rt, verdict.skipped, by_subject, now, held, clearance=clearance, maintenance=maintenance
            )
            if not verdict.allowed:
                clearance.give_back()  # the slot is the fleet's again before the audit write
                if skipped:
                    try:
                        ids = self.store.add_audit(skipped)
                    except BaseException:
                        rt.last_skip = skips_before  # unwritten skips are written on the next run
                        raise
                    self._events.publish(ev.Audited(now, rule.name, _with_ids(skipped, ids)))
                return skipped
            if not rule.guard.dry_run:  # a dry run changes nothing, so it spends nothing
                spend = self.budget.prepare(now)  # first: a budget that cannot book has booked nothing else
            rt.guard = guards.record_run(rt.guard, verdict.allowed, now, rule.guard)
            holds, kv = self._holds, {}
            if spend is not None:
                holds = guards.add_holds(self._holds, self._new_holds(rt, verdict.allowed, things, now), now)
                kv = {HOLDS_KEY: guards.holds_to_dict(holds), **spend.kv}
            detail = {**(spend.detail if spend is not None else {}), **clearance.detail}
            started = [
                AuditEntry(
                    now,
                    rule.name,
                    subject,
                    action.kind,
                    verdict.decision,
                    "started",
                    value_before=by_subject[subject].value,
                    detail={**detail, **_projection(rule, by_subject[subject])},
                )
                for action, _ in rt.actions
                for subject in verdict.allowed
            ]
            data = rt.durable()
            try:
                ids = self.store.save_rule_and_audit(rule.name, data, [*skipped, *started], kv)
            except BaseException:
                # Nothing will run: the rule, the holds and the budget stay as the disk has them (a fleet
                # slot is given back by act()).
                rt.guard, rt.last_skip = unbooked, skips_before
                if spend is not None:
                    self.budget.release(spend)
                raise
            rt.saved = data
            self._holds = holds
            if spend is not None:
                self.budget.commit(spend)
        started_ids = ids[len(skipped) :]
        self._events.publish(ev.Audited(now, rule.name, _with_ids([*skipped, *started], ids)))
        try:
            return [*skipped, *self._run_and_verify(rt, by_subject, verdict, started, started_ids, clearance=clearance)]
        finally:
            if spend is not None:
                self.budget.release(spend)

    def _run_and_verify(
        self,
        rt: RuleRuntime,
        by_subject: Mapping[str, Reading],
        verdict: guards.Verdict,
        started: Sequence[AuditEntry],
        started_ids: Sequence[int],
        *,
        clearance: Clearance,
    ) -> list[AuditEntry]:
        dry_run = verdict.decision is Decision.DRY_RUN
        targets = [by_subject[subject] for subject in verdict.allowed]
        evidence = self._evidence_before(rt, targets)
        finished = self._run_actions(rt, targets, dry_run, started, started_ids, clearance=clearance)
        if evidence is not None:  # each row names what the runbook saw before it ran
            finished = [replace(entry, detail={**entry.detail, "evidence": evidence}) for entry in finished]
        # Record the outcome before verifying: verify_after may wait, and a crash then must not
        # leave a finished action looking "started".
        self._record(rt, finished)
        if not dry_run:
            finished = self._verify(rt, finished, evidence)
            self._record(rt, finished)
        return finished

    def _evidence_before(self, rt: RuleRuntime, targets: Sequence[Reading]) -> int | None:
        """Evidence before the actions run: the one this run took as the subjects started firing, else new."""
        if self.evidence is None:
            return None
        taken = rt.evidence
        if taken is not None and rt.last_run is not None and taken[0] == rt.last_run:
            return taken[1]
        return self.evidence.take(rt, targets, "before action")

    def _record(self, rt: RuleRuntime, entries: Sequence[AuditEntry]) -> None:
        for entry in entries:
            assert entry.id is not None
            self.store.finish_audit(
                entry.id,
                result=entry.result,
                error=entry.error,
                value_after=entry.value_after,
                duration=entry.duration,
                detail=entry.detail,
            )
        self._events.publish(ev.Audited(self._clock(), rt.rule.name, tuple(entries)))

    def _new_holds(
        self, rt: RuleRuntime, allowed: Sequence[str], things: Mapping[str, Mapping[str, str]], now: float
    ) -> dict[str, guards.Hold]:
        """The things about to be acted on, each held for the cooldown this run earned its subject."""
        new: dict[str, guards.Hold] = {}
        for subject in allowed:
            sg = rt.guard.subjects.get(subject)
            until = sg.cooldown_until if sg is not None else now + rt.rule.guard.cooldown
            for key, kind in things[subject].items():
                new[key] = guards.Hold(rt.rule.name, kind, now, until)
        return new

    def _skip_entries(
        self,
        rt: RuleRuntime,
        skipped: Sequence[tuple[str, Decision]],
        by_subject: Mapping[str, Reading],
        now: float,
        held: Mapping[str, guards.Hold],
        *,
        clearance: Clearance,
        maintenance: guards.Maintenance | None = None,
    ) -> list[AuditEntry]:
        """Audit a skip when its reason changes; a subject in cooldown for an hour is one row, not 240.

        A skip for a shared cooldown names the rule that acted and when, and
        one for maintenance who put the host in maintenance, why and until
        when, so "why did nothing restart it?" is answered in the row itself.
        """
        entries: list[AuditEntry] = []
        for subject, decision in skipped:
            if rt.last_skip.get(subject) is decision:
                continue
            rt.last_skip[subject] = decision
            hold = held.get(subject) if decision is Decision.SKIPPED_COOLDOWN else None
            detail: dict[str, Any] = dict(clearance.detail) if decision is clearance.closed else {}
            if hold is not None:
                detail["held_by"] = {"rule": hold.rule, "action": hold.action, "at": hold.at, "until": hold.until}
            if decision is Decision.SKIPPED_MAINTENANCE and maintenance is not None:
                detail["maintenance"] = {
                    "since": maintenance.since, "until": maintenance.until, "by": dict(maintenance.by),
                    "reason": maintenance.reason,
                }
            reason = decision.value.removeprefix("skipped_")
            self._events.publish(ev.Skipped(now, rt.rule.name, subject, reason, None if hold is None else hold.rule))
            entries.extend(
                AuditEntry(
                    now,
                    rt.rule.name,
                    subject,
                    action.kind,
                    decision,
                    "n/a",
                    value_before=by_subject[subject].value,
                    detail=detail,
                )
                for action, _ in rt.actions
            )
        return entries

    def _run_actions(
        self,
        rt: RuleRuntime,
        targets: Sequence[Reading],
        dry_run: bool,
        started: Sequence[AuditEntry],
        ids: Sequence[int],
        *,
        clearance: Clearance,
    ) -> list[AuditEntry]:
        finished: list[AuditEntry] = []
        rows = iter(zip(started, ids, strict=True))
        for action_config, action in rt.actions:
            batch = targets[: action_config.params.max_per_run]
            begun = time.monotonic()
            # Before each action, not once: a slot lost while the previous one ran (the lease
            # expired) may be someone else's now, and a group that fails closed stops here.
            result = _run_one(action, batch, dry_run) if clearance.still_held() else SLOT_LOST
            duration = time.monotonic() - begun
            label = "dry_run" if dry_run else ("ok" if result.ok else "failed")
            self._events.publish(
                ev.ActionRan(
                    self._clock(), rt.rule.name, action_config.kind, label, result.ok, len(batch), result.detail,
                    result.error,
                )
            )
            for _ in targets:
                entry, entry_id = next(rows)
                finished.append(_finish(entry, entry_id, result, label, duration))
        return finished

    def _verify(self, rt: RuleRuntime, finished: list[AuditEntry], evidence: int | None) -> list[AuditEntry]:
        """Re-probe until each acted-on subject is clear or the actions' ``settle`` time is spent.

        A restarted unit or container needs a moment to answer, a VACUUM to
        show in the statistics: one probe straight after the action would
        record fixes that worked as failed. So the verify polls (every half
        interval, 0.25 s to 5 s) and records when the fix held, or why it did
        not (still breaching and with what value, or the probe down).
        """
        rule = rt.rule
        settle = max(action.settle for action, _ in rt.actions)
        if rule.verify_after > 0 and self._stop.wait(rule.verify_after):
            return [_verified(e, None, None, "not verified: shutting down") for e in finished]
        started = time.monotonic()
        poll = min(max(rule.every / 2.0, VERIFY_POLL_MIN), VERIFY_POLL_MAX)
        subjects = {entry.subject for entry in finished}
        held_after: dict[str, float] = {}
        while True:
            result = self._remeasure(rt)
            if result.readings or result.up:
                elapsed = time.monotonic() - started
                for subject in subjects - held_after.keys():
                    state = rt.subjects.get(subject)
                    if state is None or state.status is Status.OK:
                        held_after[subject] = elapsed
            if held_after.keys() >= subjects or time.monotonic() - started >= settle:
                break
            if self._stop.wait(min(poll, max(settle - (time.monotonic() - started), 0.0))):
                break
        after = {reading.subject: reading.value for reading in result.readings}
        verified = []
        for entry in finished:
            if entry.subject in held_after:
                verified.append(_verified(entry, after.get(entry.subject), held_after[entry.subject], None))
                continue
            reason = _not_held_reason(rule, result, after.get(entry.subject), settle, self._stop.is_set())
            verified.append(_verified(entry, after.get(entry.subject), None, reason))
            state = rt.subjects.get(entry.subject)
            since = state.since if state is not None and state.status is Status.FIRING else None
            self._events.publish(
                ev.FixNotHeld(
                    self._clock(), rule.name, entry.subject, entry.action, after.get(entry.subject), reason, since,
                    evidence,
                )
            )
        return verified


def _forget_maintenance_skips(rt: RuleRuntime, allowed: Sequence[str]) -> None:
    """Acting ends a subject's maintenance skip, so the next maintenance is audited afresh for it."""
    for subject in allowed:
        if rt.last_skip.get(subject) is Decision.SKIPPED_MAINTENANCE:
            del rt.last_skip[subject]


def _with_ids(entries: Sequence[AuditEntry], ids: Sequence[int]) -> tuple[AuditEntry, ...]:
    return tuple(replace(entry, id=entry_id) for entry, entry_id in zip(entries, ids, strict=True))


def _things(rt: RuleRuntime, reading: Reading) -> dict[str, str]:
    """The shared-cooldown keys of what this rule's actions would change for ``reading``, each to its action kind.

    "kind thing": a restart and a reload of one unit are different things
    to hold; a restart of it by any rule is the same one.
    """
    keys: dict[str, str] = {}
    for config, action in rt.actions:
        if isinstance(action, NamesThing):
            thing = action.thing(reading)
        else:
            thing = f"{config.target}/{reading.subject}" if config.target else reading.subject
        keys[f"{config.kind} {thing}"] = config.kind
    return keys


def _verified(entry: AuditEntry, value: float | None, held_after: float | None, reason: str | None) -> AuditEntry:
    detail: dict[str, Any] = {**entry.detail, "held": held_after is not None}
    if held_after is not None:
        detail["settled_after"] = round(held_after, 3)
    if reason is not None:
        detail["verify"] = reason
    return replace(entry, value_after=value, detail=detail)


def _not_held_reason(rule: Rule, result: ProbeResult, value: float | None, settle: float, stopping: bool) -> str:
    if stopping:
        return "not verified: shutting down"
    if not result.up:
        return f"probe down after {settle:g}s settle: {result.error}"
    if value is None:
        return f"subject not measured after {settle:g}s settle"
    side, line = ("above", rule.thresholds.above) if rule.thresholds.above is not None else (
        "below", rule.thresholds.below)
    return f"still {side} {line:g} after {settle:g}s settle (value {value:g})"


TREND_KEYS = ("value_now", "projected", "within", "slope_per_hour", "crosses_at", "crosses_in", "samples")


def _projection(rule: Rule, reading: Reading) -> dict[str, Any]:
    """A trend rule acts on a projection (``value_before``): its row also says what was measured and when
    the line would have been crossed, so the audit shows the action ran ahead of the line, and by how much."""
    if rule.predict is None:
        return {}
    return {"trend": {key: reading.details[key] for key in TREND_KEYS if key in reading.details}}


def _run_one(action: Action, batch: Sequence[Reading], dry_run: bool) -> ActionResult:
    try:
        return action.run(batch, dry_run=dry_run)
    except Exception as exc:  # an action bug must not kill the rule's job
        log.exception("action raised", extra={"fields": {"action": type(action).__name__}})
        return ActionResult(ok=False, error=error_text(exc))


def _finish(
    entry: AuditEntry, entry_id: int, result: ActionResult, label: str, duration: float
) -> AuditEntry:
    own = [item for item in result.items if item.subject == entry.subject]
    items = own or list(result.items)
    ok = all(item.ok for item in own) if own else result.ok
    error = result.error or next((item.detail for item in own if not item.ok), None)
    return replace(
        entry,
        id=entry_id,
        result="dry_run" if label == "dry_run" else ("ok" if ok else "failed"),
        error=error,
        duration=duration,
        detail={
            "summary": result.detail,
            "items": [
                {"subject": i.subject, "ok": i.ok, "detail": i.detail, **dict(i.info)}
                for i in items[:MAX_AUDIT_ITEMS]
            ],
            "items_total": len(items),
        },
    )


def error_text(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
