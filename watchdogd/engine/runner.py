"""One run of one rule: wait on dependencies -> probe under its timeout -> evaluate -> hand firing to the gate.

The runner turns a probe's outcome into readings and subject states; it
never decides about actions (the gate does) and never logs (it publishes
events). The one thing it counts itself is failed probe runs
(``probe_failures``): one per run, not an edge, so as an event each would go
through every sink (the history queue, the pager) only to be dropped there;
a dict increment here costs less, and the runner lives across reloads, so
the counts do too. A probe that overruns its timeout is abandoned, never
waited for, so one stuck probe costs one thread and not the schedule.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace

from watchdogd import inline
from watchdogd.contracts import ReportsOutage
from watchdogd.core import guard as guards
from watchdogd.core.policy import evaluate
from watchdogd.core.trend import predict_readings
from watchdogd.engine import events as ev
from watchdogd.engine.evidence import EvidenceTaker
from watchdogd.engine.gate import Gate, error_text
from watchdogd.engine.probepool import ProbePool
from watchdogd.engine.runtime import TREND_SAVE_EVERY, RuleRuntime, RunReport, trend_key
from watchdogd.engine.state import StateStore
from watchdogd.model import AuditEntry, Clock, ProbeResult, Reading, RuleStatus, Status, Transition

SEEN_KEY = "targets_seen"
STOP_POLL = 0.5
"""Seconds between checks for a stop request while a probe is awaited."""

Lookup = Callable[[str], RuleRuntime | None]
"""A rule's runtime by name (the engine's live table), for ``depends_on``."""


class Runner:
    def __init__(
        self,
        *,
        store: StateStore,
        events: ev.EventStream,
        clock: Clock,
        stop: threading.Event,
        lookup: Lookup,
        optional: Callable[[str], bool],
    ) -> None:
        self.store = store
        self.gate: Gate | None = None  # set by the engine, which builds the gate with our remeasure
        self.evidence: EvidenceTaker | None = None  # set by the engine
        self._events = events
        self._clock = clock
        self._stop = stop
        self._lookup = lookup
        self._optional = optional  # whether a target ("kind/name") is marked ``optional``
        self.pool = ProbePool()
        self._failures: Counter[str] = Counter()  # rule -> failed probe runs since start
        self._failures_lock = threading.Lock()  # rules run in parallel, each under its own lock only
        self._seen_lock = threading.Lock()
        # Targets that have answered at least once on this host, ever: from then on a failure is an outage.
        self._seen: dict[str, float] = {
            str(key): float(ts) for key, ts in (store.load_kv(SEEN_KEY) or {}).get("targets", {}).items()
        }

    def run(self, rt: RuleRuntime) -> RunReport:
        """The rule's run; the caller holds ``rt.lock``. Never raises for probe or action failures."""
        rule = rt.rule
        if not rule.enabled:
            return RunReport(rule.name, RuleStatus.DISABLED, True, None, (), (), ())
        if self._waits(rt):
            return RunReport.of(rt, self._clock())
        asked_at = self._clock()
        result = self._probe(rt)
        if self._stop.is_set():
            # Shutting down: a probe cut short is not an outage, and no action may start now.
            return RunReport.of(rt, self._clock())
        if self._absent(rt, result):
            return RunReport.of(rt, self._clock())
        if not result.up and rule.depends_on and self._recheck_dependencies(rt, asked_at):
            return RunReport.of(rt, self._clock())
        now = result.finished_at
        result = self._record(rt, self._as_outage(rt, result))
        if not result.up and rule.on_down == "hold":
            return RunReport.of(rt, self._clock())
        firing = self._evaluate(rt, result.readings, now)
        audit: list[AuditEntry] = []
        if firing and rt.actions and self.gate is not None:
            audit = self.gate.act(rt, firing, now)
        self._persist(rt)
        return RunReport.of(rt, self._clock(), tuple(audit))

    def remeasure(self, rt: RuleRuntime) -> ProbeResult:
        """Probe again and evaluate, for the gate's verify; the caller holds ``rt.lock``.

        On a probe thread and with every shared read made again (``inline.fresh``): a value read before the
        action (a ``statvfs`` before ``files.clean``, a ping before a restart) would misreport the fix.
        """
        result = self._record(rt, self._as_outage(rt, self._probe(rt, fresh=True)))
        if result.readings or result.up:
            self._evaluate(rt, result.readings, result.finished_at)
        return result

    def _record(self, rt: RuleRuntime, result: ProbeResult) -> ProbeResult:
        """Keep ``result`` as the rule's last, publishing the probe going down or coming back.

        The verify's re-probes go through here too: a restart that brings
        the service back is seen there first, and its "back" must not be lost.
        """
        was_up = rt.last.up if rt.last is not None else True
        rt.last, rt.last_run = result, result.finished_at
        rule = rt.rule
        if not result.up and not self._stop.is_set():  # a probe cut short by a stop is no failure
            with self._failures_lock:
                self._failures[rule.name] += 1
        if not result.up and was_up:
            self._events.publish(
                ev.ProbeDown(result.finished_at, rule.name, rule.probe, result.error, rule.on_down == "fire")
            )
        elif result.up and not was_up:
            self._events.publish(ev.ProbeUp(result.finished_at, rule.name, rule.probe))
        return result

    def probe_failures(self) -> dict[str, int]:
        """Per rule, failed probe runs since start (``watchdogd_probe_failures_total``).

        Every run ``_record`` keeps as down: failed, raised, timed out or still
        hung, the gate's verify re-probes included. Not counted: a failure of
        an optional target never seen on this host (absent), one a dependency
        in trouble explains (the rule waits), and a probe cut short by a stop.
        """
        with self._failures_lock:
            return dict(self._failures)

    # -- probing -----------------------------------------------------------------

    def _probe(self, rt: RuleRuntime, *, fresh: bool = False) -> ProbeResult:
        started = time.monotonic()
        if rt.hung is not None and not rt.hung.done():
            # Never stack threads behind a probe that is still stuck; report it until it returns.
            return self._down(started, f"previous run still hung (over {rt.rule.timeout:g}s)")
        if rt.hung is not None:  # assigned only when set: each assignment is a Python call (RuleRuntime.__setattr__)
            rt.hung = rt.hung_since = None
        probe = rt.probe
        readings: list[Reading] | None = None
        try:
            if not fresh and getattr(probe, inline.INLINE_ATTRIBUTE, False):
                # Served from what the cycle's shared reads hold, on this thread: no hand-off (``watchdogd.inline``).
                try:
                    with inline.only():
                        readings = probe.measure()
                except inline.WouldBlock:
                    pass  # a read is due: on a probe thread, as for any other probe
            if readings is None:
                future = self.pool.submit(functools.partial(inline.fresh_call, probe.measure) if fresh
                                          else probe.measure)
                try:
                    readings = self._wait(future, started + rt.rule.timeout)
                except FutureTimeout:
                    if self.pool.abandon(future):
                        rt.hung, rt.hung_since = future, time.monotonic()
                    if self._stop.is_set():
                        return self._down(started, "daemon stopping")
                    return self._down(started, f"timed out after {rt.rule.timeout:g}s")
        except Exception as exc:  # a probe failure is a reading, never a crash
            return self._down(started, error_text(exc))
        return ProbeResult(
            up=True,
            readings=tuple(readings),
            duration=time.monotonic() - started,
            finished_at=self._clock(),
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
                if time.monotonic() >= deadline or self._stop.is_set():
                    raise

    def _down(self, started: float, error: str) -> ProbeResult:
        return ProbeResult(up=False, error=error, duration=time.monotonic() - started, finished_at=self._clock())

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
                with self._seen_lock:
                    self._seen[key] = result.finished_at
                    seen = dict(self._seen)
                self.store.save_kv(SEEN_KEY, {"version": 1, "targets": seen})
                self._events.publish(ev.TargetSeen(result.finished_at, rt.rule.name, key))
            if rt.absent:
                rt.absent = False
            return False
        if key in self._seen or not self._optional(key):
            if rt.absent:
                rt.absent = False
            return False
        if not rt.absent:
            self._events.publish(ev.TargetAbsent(result.finished_at, rt.rule.name, key, result.error))
        rt.absent = True
        rt.last, rt.last_run = result, result.finished_at
        return True

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

    def _evaluate(self, rt: RuleRuntime, readings: Sequence[Reading], now: float) -> tuple[Reading, ...]:
        if rt.rule.predict is not None and rt.trend is not None:
            readings = predict_readings(rt.trend, readings, now, rt.rule.predict)
        evaluation = evaluate(rt.subjects, readings, rt.rule.thresholds, now)
        rt.subjects = evaluation.states  # status sees the new states now, not after the evidence
        evidence = self._evidence(rt, readings, evaluation.transitions, now)
        for change in evaluation.transitions:
            self._events.publish(
                ev.SubjectChanged(
                    now, rt.rule.name, change.subject, change.old, change.new, change.value, rt.rule.severity,
                    evidence if change.new is Status.FIRING else None,
                )
            )
        breaching = [*(r.subject for r in (*evaluation.firing, *evaluation.pending)), *evaluation.held]
        gave_up = rt.guard.gave_up_at is not None
        rt.guard = guards.observe(rt.guard, breaching, now, rt.rule.guard)
        if gave_up and rt.guard.gave_up_at is None:
            self._events.publish(ev.Resumed(now, rt.rule.name, "stable"))
        for subject in list(rt.last_skip):
            if subject not in rt.subjects:
                del rt.last_skip[subject]
        return evaluation.firing

    def _evidence(
        self, rt: RuleRuntime, readings: Sequence[Reading], transitions: Sequence[Transition], now: float
    ) -> int | None:
        """What the runbook would look at, for the subjects that start firing now (before their events go out,
        so the page can name it)."""
        started = {change.subject for change in transitions if change.new is Status.FIRING}
        if not started or self.evidence is None:
            return None
        evidence = self.evidence.take(rt, [r for r in readings if r.subject in started], "firing")
        if evidence is not None:
            rt.evidence = (now, evidence)
        return evidence

    def _persist(self, rt: RuleRuntime) -> None:
        data = rt.durable()
        if data != rt.saved:  # most runs change nothing durable: skip the fsync
            self.store.save_rule(rt.rule.name, data)
            rt.saved = data
        now = self._clock()
        if rt.trend is not None and not 0 <= now - rt.trend_saved < TREND_SAVE_EVERY:
            self.store.save_kv(trend_key(rt.rule.name), rt.trend.dump())
            rt.trend_saved = now

    # -- dependencies (one outage, one alert) ------------------------------------

    def _waits(self, rt: RuleRuntime) -> bool:
        """Whether a rule this one ``depends_on`` is in trouble; records it (and publishes the edges)."""
        troubled = self._troubled(rt.rule.depends_on) if rt.rule.depends_on else ()
        if troubled != rt.waiting_on:
            self._events.publish(ev.Waiting(self._clock(), rt.rule.name, troubled))
            rt.waiting_on = troubled  # only when it changed: a replaced field makes the rule's view again
        return bool(troubled)

    def _troubled(self, names: Sequence[str]) -> tuple[str, ...]:
        deps = [rt for name in names if (rt := self._lookup(name)) is not None]
        # Read without the dependency's lock: a view one run old is fine, the next run looks again.
        return tuple(dep.rule.name for dep in deps if dep.in_trouble())

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
            dep = self._lookup(name)
            if dep is None or not dep.rule.enabled:
                continue
            if not dep.lock.acquire(timeout=dep.rule.timeout + 1.0):
                continue
            try:
                if dep.last_run is None or dep.last_run < asked_at:
                    self.run(dep)
            finally:
                dep.lock.release()
        return self._waits(rt)
