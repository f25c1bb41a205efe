"""One rule cycle: probe (under a timeout) -> evaluate -> guard -> act -> verify -> record.

The engine owns the live per-rule state and the only path that runs actions,
so every safety rule (cooldown, budget, give-up, pause, dry-run, grace,
max_per_run) is applied in exactly one place. Scheduling lives elsewhere; the
engine is driven by ``run_rule`` from scheduler jobs, the control socket and
``--once``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from typing import Any

from watchdogd.config import ActionConfig, Config, Rule
from watchdogd.contracts import Action, NamesThing, Probe, ProbeError, ReportsOutage
from watchdogd.core import guard as guards
from watchdogd.core.policy import evaluate, rule_status
from watchdogd.counting import tally
from watchdogd.engine.probepool import ProbePool
from watchdogd.engine.snapshot import ActionSummary, EngineSnapshot, RuleSnapshot
from watchdogd.engine.state import StateStore
from watchdogd.logs import event
from watchdogd.model import (
    ActionResult,
    AuditEntry,
    Clock,
    Decision,
    ProbeResult,
    Reading,
    RuleStatus,
    Status,
    SubjectState,
)
from watchdogd.registry import Registry

log = logging.getLogger(__name__)

Clients = Mapping[tuple[str, str], Any]
"""(target kind, target name) -> connected client, shared by the rules that name it."""

HOST_KEY = "host_guard"
HOLDS_KEY = "holds"
SEEN_KEY = "targets_seen"
MAX_AUDIT_ITEMS = 100
STOP_POLL = 0.5
"""Seconds between checks for a stop request while a probe is awaited."""
VERIFY_POLL_MIN, VERIFY_POLL_MAX = 0.25, 5.0
"""Verify re-probes every half interval within these bounds: soon enough to see a restart land, never a busy loop."""


@dataclass
class RuleRuntime:
    """Live state of one rule. Mutated only while holding ``lock``."""

    rule: Rule
    probe: Probe
    actions: tuple[tuple[ActionConfig, Action], ...]
    probe_client: Any = None
    target_key: str | None = None  # "postgres/main": what "absent until first seen" is tracked on
    subjects: dict[str, SubjectState] = field(default_factory=dict)
    guard: guards.RuleGuard = field(default_factory=guards.RuleGuard)
    last: ProbeResult | None = None
    last_run: float | None = None
    hung: Future[list[Reading]] | None = None
    hung_since: float | None = None  # monotonic time the engine gave up waiting on ``hung``
    last_skip: dict[str, Decision] = field(default_factory=dict)
    saved: dict[str, Any] | None = None
    waiting_on: tuple[str, ...] = ()
    absent: bool = False  # its ``optional`` target has never answered on this host
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class RunReport:
    """What one ``run_rule`` did; ``--once`` and ``watchdogctl run`` print it."""

    rule: str
    status: RuleStatus
    up: bool
    error: str | None
    firing: tuple[str, ...]
    pending: tuple[str, ...]
    audit: tuple[AuditEntry, ...]
    waiting_on: tuple[str, ...] = ()


class _Disabled:
    """Stands in for the probe of a disabled rule, which is never run and opens no target."""

    def measure(self) -> list[Reading]:
        raise ProbeError("rule is disabled")


def build_runtime(
    rule: Rule, registry: Registry, clients: Clients, clock: Clock, previous: RuleRuntime | None = None
) -> RuleRuntime:
    """``previous``: the same rule's runtime before a reload that did not change what it measures."""
    if not rule.enabled:
        return RuleRuntime(rule=rule, probe=_Disabled(), actions=())
    probe_spec = registry.probes[rule.probe]
    kind, target = probe_spec.target_kind, rule.target
    probe_client = clients.get((kind, target)) if kind is not None and target is not None else None
    hung, hung_since = None, None
    if previous is not None and previous.probe_client is probe_client and previous.rule.enabled:
        # Same probe on the same connection: keep its memory (rate baselines, log offsets, RSS
        # history), or rate probes would go blind for an interval after every reload.
        probe, hung, hung_since = previous.probe, previous.hung, previous.hung_since
    else:
        probe = probe_spec.factory(rule.params, probe_client, clock)
    actions = []
    for action in rule.actions:
        spec = registry.actions[action.kind]
        client = (
            clients.get((spec.target_kind, action.target)) if spec.target_kind and action.target else None
        )
        actions.append((action, spec.factory(action.params, client, clock)))
    target_key = f"{kind}/{target}" if kind is not None and target is not None else None
    return RuleRuntime(
        rule=rule,
        probe=probe,
        actions=tuple(actions),
        probe_client=probe_client,
        hung=hung,
        hung_since=hung_since,
        target_key=target_key,
    )


class Engine:
    def __init__(
        self,
        config: Config,
        store: StateStore,
        clients: Clients,
        clock: Clock = time.time,
        *,
        grace: bool = True,
        stop: threading.Event | None = None,
    ) -> None:
        self.clock = clock
        self.store = store
        self.stop = stop or threading.Event()
        self.started_at = clock()
        self._grace = grace
        self._lock = threading.RLock()  # guards host budget, counters and the runtimes table
        self._counters: Counter[tuple[str, str, str]] = Counter()
        self._host = guards.host_guard_from_dict(store.load_kv(HOST_KEY) or {})
        self._holds: dict[str, guards.Hold] = guards.holds_from_dict(store.load_kv(HOLDS_KEY) or {})
        # Targets that have answered at least once on this host, ever: from then on a failure is an outage.
        self._seen: dict[str, float] = {
            str(key): float(ts) for key, ts in (store.load_kv(SEEN_KEY) or {}).get("targets", {}).items()
        }
        self._probe_pool = ProbePool()
        self.config = config
        self.config_loaded_at = clock()
        self.last_reload_error: str | None = None
        self._runtimes: dict[str, RuleRuntime] = {}
        self._install(config, clients)

    # -- configuration ---------------------------------------------------------

    def _install(self, config: Config, clients: Clients) -> None:
        saved = self.store.load_rules()
        runtimes: dict[str, RuleRuntime] = {}
        for name, rule in config.rules.items():
            old = self._runtimes.get(name)
            if old is not None and not _same_measurement(old.rule, rule):
                old = None
            runtime = build_runtime(rule, config.registry, clients, self.clock, previous=old)
            was_dry_run = False
            if old is not None:
                # Keep pending timers, cooldowns and give-ups across a reload that did not change what is measured.
                runtime.subjects, runtime.guard, runtime.last, runtime.last_run = (
                    old.subjects,
                    old.guard,
                    old.last,
                    old.last_run,
                )
                was_dry_run = old.rule.guard.dry_run
            elif name in saved:
                runtime.subjects, runtime.guard = _restore(saved[name])
                was_dry_run = bool(saved[name].get("dry_run", False))
            if was_dry_run and not rule.guard.dry_run:
                # Cooldowns counted in dry-run must not hold back the first real action.
                runtime.guard = guards.RuleGuard(paused_until=runtime.guard.paused_until)
            runtimes[name] = runtime
        for gone in set(saved) - set(config.rules):
            self.store.delete_rule(gone)
        with self._lock:
            self._runtimes = runtimes
            self.config = config
            self.config_loaded_at = self.clock()

    def reconfigure(self, config: Config, clients: Clients) -> None:
        """Swap in a validated config; rules keep their state when their measurement is unchanged."""
        self._install(config, clients)
        self.last_reload_error = None

    def rule_names(self) -> list[str]:
        with self._lock:
            return list(self._runtimes)

    def _runtime(self, name: str) -> RuleRuntime:
        with self._lock:
            runtime = self._runtimes.get(name)
        if runtime is None:
            raise KeyError(name)
        return runtime

    # -- one cycle -------------------------------------------------------------

    def run_rule(self, name: str) -> RunReport:
        """Probe, evaluate, act and record one rule. Never raises for probe or action failures."""
        runtime = self._runtime(name)
        with runtime.lock:
            return self._cycle(runtime)

    def _cycle(self, rt: RuleRuntime) -> RunReport:
        rule = rt.rule
        if not rule.enabled:
            return RunReport(rule.name, RuleStatus.DISABLED, True, None, (), (), ())
        if self._waits(rt):
            return self._report(rt, ())
        asked_at = self.clock()
        result = self._probe(rt)
        if self.stop.is_set():
            # Shutting down: a probe cut short is not an outage, and no action may start now.
            return self._report(rt, ())
        if self._absent(rt, result):
            return self._report(rt, ())
        if not result.up and rule.depends_on and self._recheck_dependencies(rt, asked_at):
            return self._report(rt, ())
        now = result.finished_at
        was_up = rt.last.up if rt.last is not None else True
        result = self._as_outage(rt, result)
        rt.last, rt.last_run = result, now
        if not result.up and was_up:
            event(
                log,
                logging.ERROR if rule.on_down == "fire" else logging.WARNING,
                "target unreachable" if rule.on_down == "fire" else "probe down",
                rule=rule.name,
                probe=rule.probe,
                error=result.error,
            )
        if not result.up and rule.on_down == "hold":
            return self._report(rt, ())
        if result.up and not was_up:
            event(log, logging.INFO, "probe up again", rule=rule.name, probe=rule.probe)
        firing = self._evaluate(rt, result.readings, now)
        audit: list[AuditEntry] = []
        if firing and rt.actions:
            audit = self._guard_and_act(rt, firing, now)
        self._persist(rt)
        return self._report(rt, tuple(audit))

    def _probe(self, rt: RuleRuntime) -> ProbeResult:
        started = time.monotonic()
        if rt.hung is not None and not rt.hung.done():
            # Never stack threads behind a probe that is still stuck; report it until it returns.
            return self._down(started, f"previous run still hung (over {rt.rule.timeout:g}s)")
        rt.hung = rt.hung_since = None
        future = self._probe_pool.submit(rt.probe.measure)
        try:
            readings = self._wait(future, started + rt.rule.timeout)
        except FutureTimeout:
            if self._probe_pool.abandon(future):
                rt.hung, rt.hung_since = future, time.monotonic()
            if self.stop.is_set():
                return self._down(started, "daemon stopping")
            return self._down(started, f"timed out after {rt.rule.timeout:g}s")
        except Exception as exc:  # a probe failure is a reading, never a crash
            return self._down(started, _error_text(exc))
        return ProbeResult(
            up=True,
            readings=tuple(readings),
            duration=time.monotonic() - started,
            finished_at=self.clock(),
        )

    def _wait(self, future: Future[list[Reading]], deadline: float) -> list[Reading]:
        """The probe's readings by ``deadline`` (monotonic), or FutureTimeout; a stop request ends the wait.

        Waiting in slices is what bounds SIGTERM: a rule may have a timeout
        of minutes, and shutdown waits for every run in progress.
        """
        while True:
            try:
                return future.result(timeout=max(0.0, min(deadline - time.monotonic(), STOP_POLL)))
            except FutureTimeout:
                if time.monotonic() >= deadline or self.stop.is_set():
                    raise

    def _absent(self, rt: RuleRuntime, result: ProbeResult) -> bool:
        """A failure on a target this host has never reached means "not installed here", not an outage.

        The shipped policy covers PostgreSQL, Redis and Docker; on a host
        without them (or without the daemon's role) their rules would be
        down or firing for ever and teach the operator to ignore the check.
        Until the target has answered once they read ``absent`` with the
        error; the first answer is recorded for good, so a service that was
        there and then vanished is an outage, also after a restart of the
        daemon. Only for targets marked ``optional: true`` (the shipped
        policy's); a target the operator configured is expected to be there.
        """
        key = rt.target_key
        if key is None:
            return False
        if result.up:
            if key not in self._seen:
                with self._lock:
                    self._seen[key] = result.finished_at
                    seen = dict(self._seen)
                self.store.save_kv(SEEN_KEY, {"version": 1, "targets": seen})
                event(log, logging.INFO, "target answered for the first time", target=key, rule=rt.rule.name)
            rt.absent = False
            return False
        if key in self._seen or not self._optional(rt):
            rt.absent = False
            return False
        if not rt.absent:
            event(log, logging.INFO, "target absent (never answered on this host)", target=key,
                  rule=rt.rule.name, error=result.error)
        rt.absent = True
        rt.last, rt.last_run = result, result.finished_at
        return True

    def _optional(self, rt: RuleRuntime) -> bool:
        kind, _, name = (rt.target_key or "").partition("/")
        params = self.config.targets.get(kind, {}).get(name)
        return bool(getattr(params, "optional", False))

    def _as_outage(self, rt: RuleRuntime, result: ProbeResult) -> ProbeResult:
        """A failed probe of an ``on_down: fire`` rule, with its outage readings; anything else as it is.

        +inf breaches any ``above`` and -inf any ``below``, so ``for``,
        actions, cooldown and backoff apply unchanged. The subjects are the
        ones the probe reports when up (or, for a probe that cannot say, the
        ones it measured last), so the timers carry across the outage.
        """
        rule = rt.rule
        if result.up or rule.on_down != "fire":
            return result
        value = float("inf") if rule.thresholds.above is not None else float("-inf")
        if isinstance(rt.probe, ReportsOutage):
            subjects = rt.probe.outage_subjects()
        else:
            subjects = list(rt.subjects) or [rule.target or rule.name]
        details = {"down": True, "error": result.error or "probe failed"}
        return replace(result, readings=tuple(Reading(subject, value, details) for subject in subjects))

    # -- dependencies (one outage, one alert) ------------------------------------

    def _waits(self, rt: RuleRuntime) -> bool:
        """Whether a rule this one ``depends_on`` is in trouble; records it (and logs the edges)."""
        troubled = self._troubled(rt.rule.depends_on)
        if troubled != rt.waiting_on:
            if troubled:
                event(log, logging.INFO, "waiting on dependency", rule=rt.rule.name, on=",".join(troubled))
            else:
                event(log, logging.INFO, "dependency clear, probing again", rule=rt.rule.name)
        rt.waiting_on = troubled
        return bool(troubled)

    def _troubled(self, names: Sequence[str]) -> tuple[str, ...]:
        if not names:
            return ()
        with self._lock:
            deps = [rt for name in names if (rt := self._runtimes.get(name)) is not None]
        # Read without the dependency's lock: a view one run old is fine, the next run looks again.
        return tuple(dep.rule.name for dep in deps if _in_trouble(dep))

    def _recheck_dependencies(self, rt: RuleRuntime, asked_at: float) -> bool:
        """Our probe failed while the dependencies looked fine: look at them again now.

        Rules run on their own schedules, so a dependent often notices an
        outage before the rule it depends on does. Running that rule now (if
        it did not run since we asked) turns what would be one "down" per
        dependent into one outage on the rule made to report it. The wait
        for a dependency that is running is bounded by its probe timeout;
        its own dependencies are never waited on from here (no lock cycles:
        ``depends_on`` is acyclic).
        """
        for name in rt.rule.depends_on:
            with self._lock:
                dep = self._runtimes.get(name)
            if dep is None or not dep.rule.enabled:
                continue
            if not dep.lock.acquire(timeout=dep.rule.timeout + 1.0):
                continue
            try:
                if dep.last_run is None or dep.last_run < asked_at:
                    self._cycle(dep)
            finally:
                dep.lock.release()
        return self._waits(rt)

    def _down(self, started: float, error: str) -> ProbeResult:
        return ProbeResult(
            up=False, error=error, duration=time.monotonic() - started, finished_at=self.clock()
        )

    def _evaluate(self, rt: RuleRuntime, readings: Sequence[Reading], now: float) -> tuple[Reading, ...]:
        evaluation = evaluate(rt.subjects, readings, rt.rule.thresholds, now)
        for change in evaluation.transitions:
            event(
                log,
                logging.WARNING if change.new is Status.FIRING else logging.INFO,
                _TRANSITION_MESSAGES[change.new],
                rule=rt.rule.name,
                subject=change.subject,
                value=change.value,
                severity=rt.rule.severity,
            )
        rt.subjects = evaluation.states
        breaching = [r.subject for r in (*evaluation.firing, *evaluation.pending)]
        rt.guard = guards.observe(rt.guard, breaching, now, rt.rule.guard)
        for subject in list(rt.last_skip):
            if subject not in rt.subjects:
                del rt.last_skip[subject]
        return evaluation.firing

    def _guard_and_act(self, rt: RuleRuntime, firing: Sequence[Reading], now: float) -> list[AuditEntry]:
        rule = rt.rule
        by_subject = {reading.subject: reading for reading in firing}
        max_per_run = min(action.params.max_per_run for action, _ in rt.actions)
        things = {subject: _things(rt, reading) for subject, reading in by_subject.items()}
        with self._lock:
            held = {
                subject: hold
                for subject, keys in things.items()
                if (hold := guards.active_hold(self._holds, keys, now)) is not None
            }
            verdict = guards.decide(
                rt.guard,
                self._host,
                list(by_subject),
                now,
                rule.guard,
                budget=self.config.budget,
                in_grace=self._in_grace(now),
                max_per_run=max_per_run,
                held=held,
            )
            rt.guard = verdict.guard
            if verdict.gave_up_now:
                event(
                    log,
                    logging.ERROR,
                    "rule gave up: too many actions, alerting only",
                    rule=rule.name,
                    max_actions=rule.guard.max_actions,
                    per=rule.guard.max_actions_per,
                )
            skipped = self._skip_entries(rt, verdict.skipped, by_subject, now, held)
            if not verdict.allowed:
                if skipped:
                    self.store.add_audit(skipped)
                return skipped
            rt.guard, self._host = guards.record_run(
                rt.guard, self._host, verdict.allowed, now, rule.guard, budget=self.config.budget
            )
            if not rule.guard.dry_run:  # a dry run changed nothing, so nothing needs the rest
                self._holds = guards.add_holds(self._holds, self._new_holds(rt, verdict.allowed, things, now), now)
            # Write-ahead: the cooldown and a "started" row are durable before anything runs,
            # so a kill -9 mid-action can never lead to a repeat inside the cooldown.
            started = [
                AuditEntry(
                    now,
                    rule.name,
                    subject,
                    action.kind,
                    verdict.decision,
                    "started",
                    value_before=by_subject[subject].value,
                )
                for action, _ in rt.actions
                for subject in verdict.allowed
            ]
            host_state = {
                HOST_KEY: guards.host_guard_to_dict(self._host),
                HOLDS_KEY: guards.holds_to_dict(self._holds),
            }
            ids = self.store.save_rule_and_audit(rule.name, self._rule_data(rt), [*skipped, *started], host_state)
        started_ids = ids[len(skipped) :]
        dry_run = verdict.decision is Decision.DRY_RUN
        targets = [by_subject[subject] for subject in verdict.allowed]
        finished = self._run_actions(rt, targets, dry_run, started, started_ids)
        # Record the outcome before verifying: verify_after may wait, and a crash then must not
        # leave a finished action looking "started".
        self._finish_audit(finished)
        if not dry_run:
            finished = self._verify(rt, finished)
            self._finish_audit(finished)
        return [*skipped, *finished]

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

    def _finish_audit(self, entries: Sequence[AuditEntry]) -> None:
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

    def _skip_entries(
        self,
        rt: RuleRuntime,
        skipped: Sequence[tuple[str, Decision]],
        by_subject: Mapping[str, Reading],
        now: float,
        held: Mapping[str, guards.Hold],
    ) -> list[AuditEntry]:
        """Audit a skip when its reason changes; a subject in cooldown for an hour is one row, not 240.

        A skip for a shared cooldown names the rule that acted and when, so
        "why did nothing restart it?" is answered in the row itself.
        """
        entries: list[AuditEntry] = []
        for subject, decision in skipped:
            if rt.last_skip.get(subject) is decision:
                continue
            rt.last_skip[subject] = decision
            hold = held.get(subject) if decision is Decision.SKIPPED_COOLDOWN else None
            detail: dict[str, Any] = {}
            if hold is not None:
                detail["held_by"] = {"rule": hold.rule, "action": hold.action, "at": hold.at, "until": hold.until}
            event(
                log,
                logging.INFO,
                "action skipped",
                rule=rt.rule.name,
                subject=subject,
                reason=decision.value.removeprefix("skipped_"),
                held_by=None if hold is None else hold.rule,
            )
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
    ) -> list[AuditEntry]:
        finished: list[AuditEntry] = []
        rows = iter(zip(started, ids, strict=True))
        for action_config, action in rt.actions:
            batch = targets[: action_config.params.max_per_run]
            begun = time.monotonic()
            result = _run_one(action, batch, dry_run)
            duration = time.monotonic() - begun
            label = "dry_run" if dry_run else ("ok" if result.ok else "failed")
            with self._lock:
                self._counters[(rt.rule.name, action_config.kind, label)] += 1
            event(
                log,
                logging.INFO if result.ok else logging.ERROR,
                "action would run" if dry_run else ("action done" if result.ok else "action failed"),
                rule=rt.rule.name,
                action=action_config.kind,
                subjects=len(batch),
                detail=result.detail,
                error=result.error,
            )
            for _ in targets:
                entry, entry_id = next(rows)
                finished.append(_finish(entry, entry_id, result, label, duration))
        return finished

    def _verify(self, rt: RuleRuntime, finished: list[AuditEntry]) -> list[AuditEntry]:
        """Re-probe until each acted-on subject is clear or the actions' ``settle`` time is spent.

        A restarted unit or container needs a moment to answer, a VACUUM to
        show in the statistics: one probe straight after the action would
        record fixes that worked as failed. So the verify polls (every half
        interval, 0.25 s to 5 s) and records when the fix held, or why it did
        not (still breaching and with what value, or the probe down).
        """
        rule = rt.rule
        settle = max(action.settle for action, _ in rt.actions)
        if rule.verify_after > 0 and self.stop.wait(rule.verify_after):
            return [_verified(e, None, None, "not verified: shutting down") for e in finished]
        started = time.monotonic()
        poll = min(max(rule.every / 2.0, VERIFY_POLL_MIN), VERIFY_POLL_MAX)
        subjects = {entry.subject for entry in finished}
        held_after: dict[str, float] = {}
        while True:
            result = self._probe(rt)
            result = self._as_outage(rt, result)
            rt.last, rt.last_run = result, result.finished_at
            if result.readings or result.up:
                self._evaluate(rt, result.readings, result.finished_at)
                elapsed = time.monotonic() - started
                for subject in subjects - held_after.keys():
                    state = rt.subjects.get(subject)
                    if state is None or state.status is Status.OK:
                        held_after[subject] = elapsed
            if held_after.keys() >= subjects or time.monotonic() - started >= settle:
                break
            if self.stop.wait(min(poll, max(settle - (time.monotonic() - started), 0.0))):
                break
        after = {reading.subject: reading.value for reading in result.readings}
        verified = []
        for entry in finished:
            if entry.subject in held_after:
                verified.append(_verified(entry, after.get(entry.subject), held_after[entry.subject], None))
                continue
            reason = _not_held_reason(rule, result, after.get(entry.subject), settle, self.stop.is_set())
            verified.append(_verified(entry, after.get(entry.subject), None, reason))
            event(
                log,
                logging.WARNING,
                "fix did not hold",
                rule=rule.name,
                subject=entry.subject,
                action=entry.action,
                value=after.get(entry.subject),
                reason=reason,
            )
        return verified

    # -- operator controls ---------------------------------------------------

    def pause(self, name: str, until: float, *, by: Mapping[str, Any] | None = None) -> None:
        """Stop the rule's actions until ``until`` (inf: until resumed); ``by`` (uid, pid, user) is who asked.

        The new guard state and an ``operator.pause`` audit row land in one
        transaction, like an action's write-ahead row.
        """
        rt = self._runtime(name)
        with rt.lock:
            rt.guard = guards.pause(rt.guard, until)
            detail: dict[str, Any] = {"until": until}
            if by:
                detail["by"] = dict(by)
            entry = AuditEntry(self.clock(), name, "-", "operator.pause", Decision.OPERATOR, "ok", detail=detail)
            data = self._rule_data(rt)
            self.store.save_rule_and_audit(name, data, [entry])
            rt.saved = data
        event(log, logging.WARNING, "rule paused", rule=name, until=until,
              uid=None if not by else by.get("uid"), pid=None if not by else by.get("pid"))

    def resume(self, name: str, *, reset: bool = False, by: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Lift a pause; with ``reset`` also a give-up and the ``max_actions`` window (``guard.resume``).

        Returns what the operator should hear: ``was_paused``, ``reset``,
        ``gave_up_at`` (still set after a plain resume of a given-up rule)
        and, with ``reset``, ``gave_up_lifted`` and ``actions_forgotten``.
        The same goes into an ``operator.resume`` audit row.
        """
        rt = self._runtime(name)
        with rt.lock:
            now = self.clock()
            before = rt.guard
            rt.guard = guards.resume(before, reset=reset)
            rt.last_skip.clear()
            outcome: dict[str, Any] = {
                "was_paused": guards.is_paused(before, now),
                "reset": reset,
                "gave_up_at": rt.guard.gave_up_at,
            }
            if reset:
                outcome["gave_up_lifted"] = before.gave_up_at is not None
                outcome["actions_forgotten"] = len(before.action_times)
            detail: dict[str, Any] = dict(outcome)
            if by:
                detail["by"] = dict(by)
            entry = AuditEntry(now, name, "-", "operator.resume", Decision.OPERATOR, "ok", detail=detail)
            data = self._rule_data(rt)
            self.store.save_rule_and_audit(name, data, [entry])
            rt.saved = data
        event(log, logging.WARNING, "rule resumed", rule=name, reset=reset,
              still_gave_up=rt.guard.gave_up_at is not None,
              uid=None if not by else by.get("uid"), pid=None if not by else by.get("pid"))
        return outcome

    # -- persistence and views ------------------------------------------------

    def _in_grace(self, now: float) -> bool:
        return self._grace and now < self.started_at + self.config.grace

    def _rule_data(self, rt: RuleRuntime) -> dict[str, Any]:
        return {
            "subjects": {
                subject: {"status": state.status.value, "since": state.since}
                for subject, state in rt.subjects.items()
                if state.status is not Status.OK
            },
            "guard": guards.rule_guard_to_dict(rt.guard),
            "dry_run": rt.rule.guard.dry_run,
        }

    def _persist(self, rt: RuleRuntime) -> None:
        data = self._rule_data(rt)
        if data != rt.saved:  # most cycles change nothing durable: skip the fsync
            self.store.save_rule(rt.rule.name, data)
            rt.saved = data

    def _report(self, rt: RuleRuntime, audit: tuple[AuditEntry, ...]) -> RunReport:
        return RunReport(
            rule=rt.rule.name,
            status=self._status(rt),
            up=rt.last.up if rt.last else True,
            error=rt.last.error if rt.last else None,
            firing=tuple(s for s, st in rt.subjects.items() if st.status is Status.FIRING),
            pending=tuple(s for s, st in rt.subjects.items() if st.status is Status.PENDING),
            audit=audit,
            waiting_on=rt.waiting_on,
        )

    def _status(self, rt: RuleRuntime) -> RuleStatus:
        now = self.clock()
        return rule_status(
            rt.subjects,
            enabled=rt.rule.enabled,
            # A rule that fires on an outage reports it through its subjects, not as "down".
            up=rt.last.up or rt.rule.on_down == "fire" if rt.last else True,
            paused=guards.is_paused(rt.guard, now),
            gave_up=guards.is_gave_up(rt.guard),
            waiting=bool(rt.waiting_on),
            absent=rt.absent,
        )

    def status_counts(self) -> dict[str, int]:
        """Rules per state, as status shows them; cheap enough for every /healthz request."""
        with self._lock:
            runtimes = list(self._runtimes.values())
        return tally(self._status(rt).value for rt in runtimes)

    def stalled(self) -> list[str]:
        """Rules that cannot run: their probe has been stuck past a whole interval beyond its timeout.

        A probe that overran its timeout once is an outage of what it
        watches (reported ``down``); one still stuck a full interval later
        holds a thread the daemon cannot take back, and the rule has missed
        a run. /healthz reports these.
        """
        now = time.monotonic()
        with self._lock:
            runtimes = list(self._runtimes.values())
        return [
            rt.rule.name
            for rt in runtimes
            if rt.hung is not None
            and rt.hung_since is not None
            and not rt.hung.done()
            and now - rt.hung_since > rt.rule.every
        ]

    @property
    def stuck_probes(self) -> int:
        """Probe threads still running after the engine gave up on them (every rule, old configs included)."""
        return self._probe_pool.stuck

    @property
    def abandoned_probes_total(self) -> int:
        return self._probe_pool.abandoned_total

    def snapshot(self) -> EngineSnapshot:
        now = self.clock()
        last_actions = self.store.last_actions()
        with self._lock:
            runtimes = list(self._runtimes.values())
            counters = dict(self._counters)
            host = self._host
            config = self.config
        rules = tuple(self._rule_snapshot(rt, last_actions, now) for rt in runtimes)
        budget = config.budget
        return EngineSnapshot(
            taken_at=now,
            started_at=self.started_at,
            dry_run=config.dry_run,
            rules=rules,
            actions_total=counters,
            budget_actions=budget.actions,
            budget_per=budget.per,
            budget_remaining=guards.budget_remaining(host, budget, now) or 0,
            actions_last_hour=sum(1 for t in host.action_times if t > now - 3600),
            config_path=str(config.path),
            config_loaded_at=self.config_loaded_at,
            last_reload_error=self.last_reload_error,
            stuck_probes=self._probe_pool.stuck,
            probes_abandoned=self._probe_pool.abandoned_total,
            stalled_rules=tuple(self.stalled()),
            state_resets=self.store.resets_total(),
        )

    def _rule_snapshot(
        self, rt: RuleRuntime, last_actions: Mapping[tuple[str, str], AuditEntry], now: float
    ) -> RuleSnapshot:
        rule = rt.rule
        last = rt.last
        subjects = dict(rt.subjects)
        return RuleSnapshot(
            name=rule.name,
            probe=rule.probe,
            target=rule.target,
            severity=rule.severity,
            unit=rule.unit,
            cardinality=rule.cardinality,
            status=self._status(rt),
            enabled=rule.enabled,
            dry_run=rule.dry_run,
            every=rule.every,
            above=rule.thresholds.above,
            below=rule.thresholds.below,
            up=None if last is None else last.up,
            error=None if last is None else last.error,
            last_run=rt.last_run,
            duration=None if last is None else last.duration,
            readings={r.subject: r.value for r in last.readings} if last is not None else {},
            firing=_values(subjects, Status.FIRING),
            pending=_values(subjects, Status.PENDING),
            cooldown_until=guards.cooldown_until(rt.guard, now),
            gave_up_at=rt.guard.gave_up_at,
            paused_until=rt.guard.paused_until if guards.is_paused(rt.guard, now) else None,
            last_actions=tuple(
                ActionSummary(a.kind, e.decision.value, e.result, e.ts, e.subject, e.error)
                for a in rule.actions
                if (e := last_actions.get((rule.name, a.kind))) is not None
            ),
            has_actions=bool(rule.actions),
            description=rule.description,
            actions=tuple(action.kind for action in rule.actions),
            timeout=rule.timeout,
            timeout_source=rule.timeout_source,
            on_down=rule.on_down,
            depends_on=rule.depends_on,
            waiting_on=rt.waiting_on,
        )

    def prune_history(self) -> int:
        return self.store.prune(self.clock() - self.config.history_retention)

    def close(self) -> None:
        self.stop.set()
        self._probe_pool.shutdown()


_TRANSITION_MESSAGES = {
    Status.FIRING: "firing",
    Status.PENDING: "pending",
    Status.OK: "resolved",
}


def _in_trouble(rt: RuleRuntime) -> bool:
    """What makes the rules depending on this one wait: it fails to measure, waits itself, or fires.

    Pending is not trouble by itself: a slow but answering server (latency
    pending on ``pg-up``) must not stop the rules that may fix it; an
    outage is trouble from its first failed probe.
    """
    last = rt.last
    if not rt.rule.enabled or last is None or rt.absent:  # not installed here is nobody's outage
        return False
    return not last.up or bool(rt.waiting_on) or any(st.status is Status.FIRING for st in rt.subjects.values())


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


def _values(subjects: Mapping[str, SubjectState], status: Status) -> dict[str, float]:
    return {s: st.value for s, st in subjects.items() if st.status is status and st.value is not None}


def _same_measurement(old: Rule, new: Rule) -> bool:
    return (old.probe, old.target, old.params, old.thresholds) == (
        new.probe,
        new.target,
        new.params,
        new.thresholds,
    )


def _restore(data: Mapping[str, Any]) -> tuple[dict[str, SubjectState], guards.RuleGuard]:
    subjects = {
        subject: SubjectState(status=Status(body["status"]), since=float(body["since"]))
        for subject, body in data.get("subjects", {}).items()
        if body.get("status") in {s.value for s in Status}
    }
    return subjects, guards.rule_guard_from_dict(data.get("guard", {}))


def _run_one(action: Action, batch: Sequence[Reading], dry_run: bool) -> ActionResult:
    try:
        return action.run(batch, dry_run=dry_run)
    except Exception as exc:  # an action bug must not kill the rule's job
        log.exception("action raised", extra={"fields": {"action": type(action).__name__}})
        return ActionResult(ok=False, error=_error_text(exc))


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


def _error_text(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
