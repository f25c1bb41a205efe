"""The rule table and the operator's controls, over a runner and a gate.

``Engine`` owns the live rule runtimes: it builds them from config (keeping
state across a reload that did not change what a rule measures), drives one
run through the ``Runner`` (probe -> evaluate) which hands firing subjects
to the ``Gate`` (guard -> write-ahead -> act -> verify -> record), and
answers snapshots for status and /metrics from memory only: counters and
last actions come from the event stream, the budget from its immutable
view, so a reader never waits on a disk sync. Scheduling lives elsewhere;
the engine is driven by ``run_rule`` from scheduler jobs, the control
socket and ``--once``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from watchdogd.configtypes import HOST_WIDE, Config, Rule
from watchdogd.core import guard as guards
from watchdogd.core.policy import subjects_status
from watchdogd.counting import tally
from watchdogd.engine import events as ev
from watchdogd.engine.budget import Budget, HostBudget, budget_for
from watchdogd.engine.evidence import EvidenceStore, EvidenceTaker
from watchdogd.engine.fleetbudget import FleetBudget, FleetGroup, FleetPlan
from watchdogd.engine.gate import Gate
from watchdogd.engine.probegroups import ProbeGroups
from watchdogd.engine.runner import Runner
from watchdogd.engine.runtime import (
    Clients,
    RuleRuntime,
    RunReport,
    SharedObjects,
    build_runtime,
    carried_trend,
    restore,
    same_measurement,
    trend_key,
)
from watchdogd.engine.sinks import HistorySink, LogSink, Tallies
from watchdogd.engine.snapshot import ActionSummary, EngineSnapshot, FleetStats, RuleFacts, RuleSnapshot
from watchdogd.engine.state import StateStore
from watchdogd.fleet.coordinator import Coordinator, GroupLimits, GroupView
from watchdogd.logs import event as log_event
from watchdogd.model import AuditEntry, Clock, Decision, RuleTransition, Status

__all__ = ["HOST_RULE", "MAINTENANCE_KEY", "Clients", "Engine", "RunReport"]

log = logging.getLogger("watchdogd.engine")

MAINTENANCE_KEY = "maintenance"
"""The state store's kv key of the host's maintenance mode (``guard.maintenance_to_dict``)."""
HOST_RULE = HOST_WIDE
"""The ``rule`` of audit and alert-history rows about the whole host (maintenance mode), as in ``pause --all``;
config refuses it as a rule name."""


TREND_LOCK_WAIT = 1.0
"""Seconds ``save_trends`` waits for a rule's run at shutdown before leaving its history as last saved."""

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
        coordinator: Coordinator | None = None,
        on_view: Callable[[RuleSnapshot], None] | None = None,
    ) -> None:
        """``on_view``: called with each view a run made, on the rule's thread (the exporter prepares the rule's
        lines there: ``faces.exporter.RuleGroups``); it must be quick and must not raise."""
        self.clock = clock
        self._on_view = on_view
        self.store = store
        self.stop = stop or threading.Event()
        self.started_at = clock()
        self._grace = grace
        self._lock = threading.Lock()  # the runtimes table and the config; never held across I/O
        self.events = ev.EventStream()
        self._tallies = Tallies(store.last_actions())
        self.events.attach(LogSink())
        self.events.attach(self._tallies)
        self.events.attach(HistorySink(store), queued=True)
        self.config = config
        self.config_loaded_at = clock()
        self.last_reload_error: str | None = None
        # Host-wide maintenance mode: read lock-free (one reference), changed under its lock with its rows.
        self._maintenance: guards.Maintenance | None = guards.maintenance_from_dict(store.load_kv(MAINTENANCE_KEY))
        self._maintenance_lock = threading.Lock()
        self._runtimes: dict[str, RuleRuntime] = {}
        self._snapshot_cache: dict[str, _SnapshotCache] = {}
        self._shared = SharedObjects(clock)
        self._groups = ProbeGroups()
        self.runner = Runner(
            store=store, events=self.events, clock=clock, stop=self.stop, lookup=self._lookup, optional=self._optional
        )
        self.gate = Gate(
            store=store,
            budget=self._budget_maker(config, coordinator)(None),
            events=self.events,
            remeasure=self.runner.remeasure,
            clock=clock,
            stop=self.stop,
            in_grace=self._in_grace,
            maintenance=self.maintenance,
        )
        self.evidence = EvidenceTaker(EvidenceStore(store), self.runner.pool, clock, config.evidence)
        self.runner.gate, self.runner.evidence, self.gate.evidence = self.gate, self.evidence, self.evidence
        self._install(config, clients, coordinator)

    # -- configuration ---------------------------------------------------------

    def _budget_maker(self, config: Config, coordinator: Coordinator | None) -> Callable[[Budget | None], Budget]:
        """How to make the budget ``config`` asks for from the running one (kept where unchanged)."""

        def make(previous: Budget | None) -> Budget:
            running = previous.host if isinstance(previous, FleetBudget) else previous
            host = budget_for(config.budget, self.store.load_kv, running if isinstance(running, HostBudget) else None)
            if config.fleet is None or coordinator is None:
                return host
            fleet = FleetBudget(host, coordinator, fleet_plan(config, coordinator.host), self.clock)
            if isinstance(previous, FleetBudget):
                fleet.carry_over(previous)
            return fleet

        return make

    def _install(self, config: Config, clients: Clients, coordinator: Coordinator | None = None) -> None:
        saved = self.store.load_rules()
        runtimes: dict[str, RuleRuntime] = {}
        self._groups.plan(config.rules.values())
        for name, rule in config.rules.items():
            old = self._runtimes.get(name)
            if old is not None and not same_measurement(old.rule, rule):
                old = None
            runtime = build_runtime(rule, config.registry, clients, self.clock, previous=old, shared=self._shared,
                                    groups=self._groups)
            if old is not None:
                # Keep pending timers, cooldowns and give-ups across a reload that did not change what is
                # measured: copied now for status, taken over again (settle) once the old run is done.
                runtime.inherit(old)
                runtime.predecessor = old
            elif name in saved:
                runtime.subjects, runtime.guard = restore(saved[name])
                if saved[name].get("dry_run", False) and not rule.guard.dry_run:
                    # Cooldowns counted in dry-run must not hold back the first real action.
                    runtime.guard = guards.RuleGuard(paused_until=runtime.guard.paused_until)
            runtime.trend = carried_trend(rule, self._runtimes.get(name), self.store.load_kv, self.clock())
            runtimes[name] = runtime
        for gone in set(saved) - set(config.rules):
            self.store.delete_rule(gone)
        self.gate.reconfigure(self._budget_maker(config, coordinator))
        self.evidence.settings = config.evidence
        with self._lock:
            self._runtimes = runtimes
            self.config = config
            self.config_loaded_at = self.clock()

    def reconfigure(self, config: Config, clients: Clients, coordinator: Coordinator | None = None) -> None:
        """Swap in a validated config; rules keep their state when their measurement is unchanged."""
        self._install(config, clients, coordinator)
        self.last_reload_error = None

    def rule_names(self) -> list[str]:
        with self._lock:
            return list(self._runtimes)

    def _lookup(self, name: str) -> RuleRuntime | None:
        with self._lock:
            return self._runtimes.get(name)

    def _runtime(self, name: str) -> RuleRuntime:
        runtime = self._lookup(name)
        if runtime is None:
            raise KeyError(name)
        return runtime

    def _optional(self, target_key: str) -> bool:
        kind, _, name = target_key.partition("/")
        params = self.config.targets.get(kind, {}).get(name)
        return bool(getattr(params, "optional", False))

    def _in_grace(self, now: float) -> bool:
        return self._grace and now < self.started_at + self.config.grace

    # -- one run ---------------------------------------------------------------

    def run_rule(self, name: str) -> RunReport:
        """Probe, evaluate, act and record one rule. Never raises for probe or action failures."""
        runtime = self._runtime(name)
        self.settle_maintenance()  # an expired maintenance is on record before this run's actions
        with runtime.lock:
            runtime.settle()
            report = self.runner.run(runtime)
        self._make_view(runtime)
        return report

    def _make_view(self, rt: RuleRuntime) -> None:
        """The rule's view, made on its own thread right after its run, so the next scrape or status finds it made.

        At 1,000 rules run since the last scrape, making every view was 10 ms
        of a 27 ms render, on the scrape's clock; here each run pays its own
        (about 10 us), while what it read is still in the CPU's caches.
        """
        rule = rt.rule
        change, actions = self._tallies.rule_parts(rule.name, self._kinds(rule))
        parts = (rt, rt.version, change, *actions)  # as in _rule_snapshots: read before the view is made
        cache = self._snapshot_cache
        cached = cache.get(rule.name)
        now = self.clock()
        if cached is None or not cached.serves(parts, now):
            made = cache[rule.name] = _made(cached, rt, parts, actions, change, now=now)
            if self._on_view is not None:
                self._on_view(made.view)

    @staticmethod
    def _kinds(rule: Rule) -> tuple[str, ...]:
        return tuple(action.kind for action in rule.actions) if rule.actions else ()

    # -- operator controls ---------------------------------------------------

    def pause(self, name: str, until: float, *, by: Mapping[str, Any] | None = None) -> None:
        """Stop the rule's actions until ``until`` (inf: until resumed); ``by`` (uid, pid, user) is who asked.

        The new guard state and an ``operator.pause`` audit row land in one
        transaction, like an action's write-ahead row.
        """
        rt = self._runtime(name)
        with rt.lock:
            rt.settle()
            rt.guard = guards.pause(rt.guard, until)
            detail: dict[str, Any] = {"until": until}
            if by:
                detail["by"] = dict(by)
            self._operator(rt, "pause", detail)

    def resume(self, name: str, *, reset: bool = False, by: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Lift a pause; with ``reset`` also a give-up and the ``max_actions`` window (``guard.resume``).

        Returns what the operator should hear: ``was_paused``, ``reset``,
        ``gave_up_at`` (still set after a plain resume of a given-up rule)
        and, with ``reset``, ``gave_up_lifted`` and ``actions_forgotten``.
        The same goes into an ``operator.resume`` audit row.
        """
        rt = self._runtime(name)
        with rt.lock:
            rt.settle()
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
            self._operator(rt, "resume", detail)
            if reset and before.gave_up_at is not None:
                self.events.publish(ev.Resumed(now, name, "operator"))
        return outcome

    def _operator(self, rt: RuleRuntime, what: str, detail: dict[str, Any]) -> None:
        now = self.clock()
        entry = AuditEntry(now, rt.rule.name, "-", f"operator.{what}", Decision.OPERATOR, "ok", detail=detail)
        data = rt.durable()
        ids = self.store.save_rule_and_audit(rt.rule.name, data, [entry])
        rt.saved = data
        self.events.publish(ev.Audited(now, rt.rule.name, (replace(entry, id=ids[0]),)))
        self.events.publish(ev.Operator(now, rt.rule.name, what, detail))

    # -- maintenance mode (the whole host) --------------------------------------

    def maintenance(self, now: float) -> guards.Maintenance | None:
        """The host's maintenance if it is on at ``now``: from memory, for the gate, the pager and snapshots."""
        current = self._maintenance
        return current if guards.in_maintenance(current, now) else None

    def pause_all(
        self, until: float, *, reason: str | None = None, by: Mapping[str, Any] | None = None
    ) -> dict[str, guards.Maintenance | None]:
        """Maintenance mode: no rule acts until ``until`` (inf: until ``resume_all``); probes go on.

        A running maintenance is replaced (its ``since`` kept): the new end,
        asker and reason, recorded with what it replaced. Returns
        ``maintenance`` (the new one) and ``replaced`` (the one before, or None).
        """
        with self._maintenance_lock:
            now = self.clock()
            self._settle_maintenance(now)
            before = self.maintenance(now)
            new = guards.start_maintenance(before, now, until, by=by, reason=reason)
            detail = maintenance_detail(new)
            if before is not None:
                detail["replaced"] = maintenance_detail(before)
            kind = "maintenance_start" if before is None else "maintenance_change"
            self._write_maintenance(new, now, "operator.pause_all", kind, detail)
        log_event(log, logging.WARNING, "maintenance started" if before is None else "maintenance changed",
                  until=until, reason=reason, **_who(by))
        return {"maintenance": new, "replaced": before}

    def resume_all(self, *, by: Mapping[str, Any] | None = None) -> dict[str, guards.Maintenance | None]:
        """End maintenance mode now; ``ended`` is the maintenance that ended, None when there was none."""
        with self._maintenance_lock:
            now = self.clock()
            self._settle_maintenance(now)
            ended = self.maintenance(now)
            if ended is None:
                return {"ended": None}
            detail: dict[str, Any] = {"ended": "resumed", "maintenance": maintenance_detail(ended)}
            if by:
                detail["by"] = dict(by)
            self._write_maintenance(None, now, "operator.resume_all", "maintenance_end", detail)
        log_event(log, logging.WARNING, "maintenance ended", ended="resumed", since=ended.since, **_who(by))
        return {"ended": ended}

    def settle_maintenance(self) -> None:
        """Record the end of a maintenance that expired (once; lock-free while there is nothing to do).

        Expiry needs nobody: the gate asks ``maintenance(now)``, which checks
        the end itself, so the first action after it runs on time. This
        writes the history rows that say so, from the next rule run (or
        ``pause --all``/``resume --all``), dated at the expiry itself; after
        a restart past the expiry, likewise.
        """
        current = self._maintenance
        if current is None or guards.in_maintenance(current, self.clock()):
            return
        with self._maintenance_lock:
            self._settle_maintenance(self.clock())

    def _settle_maintenance(self, now: float) -> None:
        """Under the maintenance lock."""
        current = self._maintenance
        if current is None or guards.in_maintenance(current, now):
            return
        detail: dict[str, Any] = {"ended": "expired", "maintenance": maintenance_detail(current)}
        self._write_maintenance(None, current.until, "maintenance.expired", "maintenance_end", detail)
        log_event(log, logging.WARNING, "maintenance ended", ended="expired", since=current.since,
                  until=current.until)

    def _write_maintenance(
        self, new: guards.Maintenance | None, ts: float, action: str, kind: str, detail: dict[str, Any]
    ) -> None:
        """The new state, its operator row and its alert-history row: one transaction, then memory."""
        entry = AuditEntry(ts, HOST_RULE, "-", action, Decision.OPERATOR, "ok", detail=detail)
        row = RuleTransition(ts, HOST_RULE, kind, detail=detail)
        ids = self.store.save_kv_and_history({MAINTENANCE_KEY: guards.maintenance_to_dict(new)}, [entry], [row])
        self._maintenance = new
        self.events.publish(ev.Audited(ts, HOST_RULE, (replace(entry, id=ids[0]),)))

    # -- views -----------------------------------------------------------------

    def status_counts(self) -> dict[str, int]:
        """Rules per state, as status shows them; cheap enough for every /healthz request."""
        now = self.clock()
        with self._lock:
            runtimes = list(self._runtimes.values())
        return tally(rt.status(now).value for rt in runtimes)

    def every_rule_ran(self) -> bool:
        """Whether every enabled rule has finished a run since it was configured: the start's pages are touched.

        A rule that has not (waiting on a dependency, its probe stuck) makes
        this False; the daemon then falls back on its deadline
        (``release_start_pages_after``).
        """
        with self._lock:
            runtimes = list(self._runtimes.values())
        return all(rt.last is not None for rt in runtimes if rt.rule.enabled)

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
        return self.runner.pool.stuck

    def snapshot(self) -> EngineSnapshot:
        """Everything status and /metrics show, from memory: never a database read, never a wait on a sync."""
        now = self.clock()
        last_actions, changes = self._tallies.last_actions(), self._tallies.last_changes()
        with self._lock:
            runtimes = list(self._runtimes.values())
            config = self.config
        budget = self.gate.budget.view(now)
        return EngineSnapshot(
            taken_at=now,
            started_at=self.started_at,
            dry_run=config.dry_run,
            rules=self._rule_snapshots(runtimes, last_actions, changes, now),
            actions_total=self._tallies.actions_total(),
            budget_actions=budget.actions,
            budget_per=budget.per,
            budget_remaining=budget.remaining,
            actions_last_hour=budget.used_last_hour,
            config_path=str(config.path),
            config_loaded_at=self.config_loaded_at,
            last_reload_error=self.last_reload_error,
            stuck_probes=self.runner.pool.stuck,
            probes_abandoned=self.runner.pool.abandoned_total,
            stalled_rules=tuple(self.stalled()),
            state_resets=self.store.resets_total(),
            transitions_total=self._tallies.transitions_total(),
            sinks=self.events.stats(),
            fleet=self.fleet_stats(now),
            maintenance=self.maintenance(now),
            probe_failures=self.runner.probe_failures(),
            action_skips=self._tallies.action_skips(),
        )

    def _rule_snapshots(
        self,
        runtimes: Sequence[RuleRuntime],
        last_actions: Mapping[tuple[str, str], AuditEntry],
        changes: Mapping[str, RuleTransition],
        now: float,
    ) -> tuple[RuleSnapshot, ...]:
        """Each rule's view, reused while nothing it is made of changed (``_SnapshotCache``).

        At 1,000 rules building every view took 10-13 ms per status or
        scrape, a third of a /metrics render, while most rules had not run
        since the last one.
        """
        cache = self._snapshot_cache  # also filled by each run (``_make_view``): updated in place, one key at a time
        views = []
        for rt in runtimes:  # inlined: two calls a rule less, 1,000 rules a scrape
            rule = rt.rule
            name = rule.name
            actions = tuple(last_actions.get((name, a.kind)) for a in rule.actions) if rule.actions else ()
            change = changes.get(name)
            # Everything the view is made of: the runtime at its version (read first: a run that replaces a field
            # while the view is made leaves a view that does not serve), and what its tallies hold for it.
            parts = (rt, rt.version, change, *actions)
            cached = cache.get(name)
            if cached is None or not cached.serves(parts, now):
                cached = cache[name] = _made(cached, rt, parts, actions, change, now=now)
            views.append(cached.view)
        if len(cache) > len(runtimes):  # rules a reload removed: one reference swap (a run at worst adds one back)
            self._snapshot_cache = {name: cache[name] for name in (rt.rule.name for rt in runtimes) if name in cache}
        return tuple(views)

    def fleet_stats(self, now: float) -> FleetStats | None:
        budget = self.gate.budget
        return budget.stats(now) if isinstance(budget, FleetBudget) else None

    def fleet_views(self) -> list[GroupView | str] | None:
        """The groups as the coordinator has them (network reads, each within the fleet timeout)."""
        budget = self.gate.budget
        return budget.views() if isinstance(budget, FleetBudget) else None

    def prune_history(self) -> int:
        cutoff = self.clock() - self.config.history_retention
        return self.store.prune(cutoff) + self.evidence.store.prune(cutoff)

    def close(self) -> None:
        self.stop.set()
        self.save_trends()
        self.runner.pool.shutdown()
        self.events.close()

    def save_trends(self) -> None:
        """Write every rule's trend history, so a clean restart predicts again from its first run."""
        with self._lock:
            runtimes = list(self._runtimes.values())
        for rt in runtimes:
            if rt.trend is None or not rt.lock.acquire(timeout=TREND_LOCK_WAIT):
                continue  # a run still in flight at shutdown: its last save (at most a minute old) stands
            try:
                self.store.save_kv(trend_key(rt.rule.name), rt.trend.dump())
            finally:
                rt.lock.release()


def maintenance_detail(m: guards.Maintenance) -> dict[str, Any]:
    """A maintenance as its audit and history rows hold it."""
    return {"since": m.since, "until": m.until, "by": dict(m.by), "reason": m.reason}


def _who(by: Mapping[str, Any] | None) -> dict[str, Any]:
    """The asker's fields for a log line (``uid=0 pid=4242 user=root``)."""
    by = by or {}
    return {"uid": by.get("uid"), "pid": by.get("pid"), "user": by.get("user")}


def fleet_plan(config: Config, host: str) -> FleetPlan:
    """The groups of ``config.fleet`` as the fleet budget needs them."""
    assert config.fleet is not None
    groups = {
        name: FleetGroup(GroupLimits(name, g.max_hosts, g.max_runs, g.per), g.on_unavailable)
        for name, g in config.fleet.groups.items()
    }
    timeout = config.fleet.coordinator.timeout
    return FleetPlan(host=host, timeout=timeout, groups=groups, rule_groups=config.fleet_groups)


def _made(
    cached: _SnapshotCache | None,
    rt: RuleRuntime,
    parts: tuple[object, ...],
    actions: tuple[AuditEntry | None, ...],
    change: RuleTransition | None,
    *,
    now: float,
) -> _SnapshotCache:
    """The rule's view made again, with the facts of the same config; ``parts``: what it is made of."""
    facts = cached.facts if cached is not None and cached.rule is rt.rule else _rule_facts(rt.rule)
    view = _rule_snapshot(rt, facts, actions, change, now)
    until, paused = view.cooldown_until, view.paused_until
    if until is None or (paused is not None and paused < until):
        until = paused
    return _SnapshotCache(parts, rt.rule, facts, view, math.inf if until is None else until)


@dataclass(slots=True)
class _SnapshotCache:
    """A rule's view and what it was made of; good until one of those is replaced or a time in it passes.

    The only times in a view are the pause's end (status, ``paused_until``)
    and the latest cooldown end (``cooldown_until``); both stay as they are
    until they pass. ``facts`` (the config's part of the view) serve every
    view of the same rule config. Not frozen, for the same reason as the
    view: made 1,000 times per scrape after an interval, and never changed.
    """

    parts: tuple[object, ...]
    rule: Rule  # the config ``facts`` were made from
    facts: RuleFacts
    view: RuleSnapshot
    until: float

    def serves(self, parts: tuple[object, ...], now: float) -> bool:
        return now < self.until and parts == self.parts


_PENDING, _FIRING = Status.PENDING, Status.FIRING
"""Module globals for the view's loop over subjects: ``Status.FIRING`` costs 165 ns on Python 3.11 (see policy)."""

NONE: Mapping[str, float] = MappingProxyType({})
"""The empty mapping every view without firing, pending or readings shares: three dicts less per view."""


def _rule_facts(rule: Rule) -> RuleFacts:
    """What a view takes from the rule's config, made once per config rather than once per view."""
    actions = rule.actions
    return (
        (rule.name, rule.probe, rule.target, rule.severity, rule.unit, rule.cardinality, rule.enabled, rule.dry_run,
         rule.every, rule.thresholds.above, rule.thresholds.below),
        (bool(actions), rule.description, tuple(action.kind for action in actions) if actions else (), rule.timeout,
         rule.timeout_source, rule.on_down, rule.depends_on),
    )


def _rule_snapshot(
    rt: RuleRuntime, facts: RuleFacts, actions: tuple[AuditEntry | None, ...], change: RuleTransition | None,
    now: float,
) -> RuleSnapshot:
    """A view, by position after ``RuleFacts`` (see ``RuleSnapshot``): 1,000 of them per scrape after an interval."""
    rule = rt.rule
    last = rt.last
    guard = rt.guard
    firing: dict[str, float] = {}
    pending: dict[str, float] = {}
    firing_subjects: list[str] = []
    any_pending = False
    for subject, st in rt.subjects.items():  # one pass, which also decides the status when no flag does
        if st.status is _FIRING:
            firing_subjects.append(subject)
            if st.value is not None:
                firing[subject] = st.value
        elif st.status is _PENDING:
            any_pending = True
            if st.value is not None:
                pending[subject] = st.value
    status = rt.operator_status(now)
    if status is None:
        status = subjects_status(firing=bool(firing_subjects), pending=any_pending)
    if last is None:
        up = error = duration = None
        readings: Mapping[str, float] = NONE
    else:
        up, error, duration = last.up, last.error, last.duration
        # What was measured (a trend rule's projection is in firing/pending); no data is no sample.
        readings = {r.subject: r.value for r in last.readings if not r.no_data} if last.readings else NONE
    return RuleSnapshot(
        *facts[0], status, up, error, rt.last_run, duration, *facts[1],
        readings,
        firing or NONE,
        tuple(firing_subjects) if firing_subjects else (),
        pending or NONE,
        guards.cooldown_until(guard, now),
        guard.gave_up_at,
        guard.paused_until if guards.is_paused(guard, now) else None,
        tuple(
            ActionSummary(a.kind, e.decision.value, e.result, e.ts, e.subject, e.error)
            for a, e in zip(rule.actions, actions, strict=True)
            if e is not None
        ) if rule.actions else (),
        rt.waiting_on,
        change,
    )
