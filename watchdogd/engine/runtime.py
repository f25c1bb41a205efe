"""A rule's live state between runs, how it is built from config, and what of it is durable."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from watchdogd.configtypes import ActionConfig, Rule
from watchdogd.contracts import Action, Probe, ProbeError
from watchdogd.core import guard as guards
from watchdogd.core.policy import OperatorFlags, operator_status, status_of
from watchdogd.core.trend import TrendHistory
from watchdogd.engine.probegroups import ProbeGroups, SharedProbe
from watchdogd.model import AuditEntry, Clock, Decision, ProbeResult, Reading, RuleStatus, Status, SubjectState
from watchdogd.registry import Registry

VIEWED = frozenset({"rule", "subjects", "guard", "last", "last_run", "waiting_on", "absent"})
"""The runtime's fields a rule's view is made of (with its tallies' last actions and change)."""

Clients = Mapping[tuple[str, str], Any]
"""(target kind, target name) -> connected client, shared by the rules that name it."""


@dataclass
class RuleRuntime:
    """Live state of one rule. Mutated only while holding ``lock``; read by snapshots without it."""

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
    predecessor: RuleRuntime | None = None  # the runtime a reload replaced, until this one took its state over
    evidence: tuple[float, int] | None = None  # (run time, id) of the evidence its last transition to firing took
    trend: TrendHistory | None = None  # with ``predict``: each subject's recent values, what the slope is fitted on
    trend_saved: float = 0.0  # when ``trend`` was last written to the state store (see TREND_SAVE_EVERY)
    lock: threading.Lock = field(default_factory=threading.Lock)
    version: int = 0  # bumped each time a field a view shows is replaced (``__setattr__``)

    def __setattr__(self, name: str, value: Any) -> None:
        """Count the replacements of what a view shows, so a view can be checked against one number.

        The engine's view of the rule (``Engine.snapshot``) is good while the
        version is; before, it was checked against the objects it was made of,
        which kept the previous run's result, subjects and guard alive until
        the next scrape and freed them there: 1.5 ms of a render at 1,000 rules.
        These fields are only ever replaced, never changed in place.
        """
        object.__setattr__(self, name, value)
        if name in VIEWED:
            object.__setattr__(self, "version", self.version + 1)

    def inherit(self, old: RuleRuntime) -> None:
        """Take over pending timers, cooldowns and give-ups of the same rule before a reload.

        Cooldowns counted in dry-run must not hold back the first real action,
        so a rule leaving dry-run keeps only its pause.
        """
        self.subjects, self.guard, self.last, self.last_run = old.subjects, old.guard, old.last, old.last_run
        if old.rule.guard.dry_run and not self.rule.guard.dry_run:
            self.guard = guards.RuleGuard(paused_until=self.guard.paused_until)

    def settle(self) -> None:
        """Take the state over again from the replaced runtime, once no run of it is in flight.

        A reload copies the old runtime's state without waiting for its run
        (a run may take minutes); a run that ended meanwhile changed the old
        one. The first thing done with this runtime (a run, a pause, a
        resume: the caller holds ``lock``) takes it over again under the old
        runtime's lock, so no booked action is forgotten.
        """
        old, self.predecessor = self.predecessor, None
        if old is not None:
            with old.lock:
                self.inherit(old)

    def status(self, now: float) -> RuleStatus:
        return status_of(self.subjects, self._flags(now))

    def operator_status(self, now: float) -> RuleStatus | None:
        """``status`` when an operator flag or the probe's health decides it; None when the subjects do.

        A view asks this (1,000 times per scrape), having walked the subjects itself.
        """
        return operator_status(self._flags(now))

    def _flags(self, now: float) -> OperatorFlags:
        last, guard = self.last, self.guard
        # A rule that fires on an outage reports it through its subjects, not as "down".
        up = last.up or self.rule.on_down == "fire" if last is not None else True
        return (not self.rule.enabled, guards.is_paused(guard, now), self.absent, bool(self.waiting_on),
                guards.is_gave_up(guard), not up)

    def in_trouble(self) -> bool:
        """What makes the rules depending on this one wait: it fails to measure, waits itself, or fires.

        Pending is not trouble by itself: a slow but answering server (latency
        pending on ``pg-up``) must not stop the rules that may fix it; an
        outage is trouble from its first failed probe.
        """
        last = self.last
        if not self.rule.enabled or last is None or self.absent:  # not installed here is nobody's outage
            return False
        return not last.up or bool(self.waiting_on) or any(st.status is Status.FIRING for st in self.subjects.values())

    def durable(self) -> dict[str, Any]:
        """What survives a restart: subjects not ok (their ``for`` timers) and the guard."""
        return {
            "subjects": {
                subject: {"status": state.status.value, "since": state.since}
                for subject, state in self.subjects.items()
                if state.status is not Status.OK
            },
            "guard": guards.rule_guard_to_dict(self.guard),
            "dry_run": self.rule.guard.dry_run,
        }


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

    @classmethod
    def of(cls, rt: RuleRuntime, now: float, audit: tuple[AuditEntry, ...] = ()) -> RunReport:
        return cls(
            rule=rt.rule.name,
            status=rt.status(now),
            up=rt.last.up if rt.last else True,
            error=rt.last.error if rt.last else None,
            firing=tuple(s for s, st in rt.subjects.items() if st.status is Status.FIRING),
            pending=tuple(s for s, st in rt.subjects.items() if st.status is Status.PENDING),
            audit=audit,
            waiting_on=rt.waiting_on,
        )


TREND_SAVE_EVERY = 60.0
"""Seconds between writes of a rule's trend history: a restart loses at most this much of it (the window
is an hour or more), and an fsync per rule per run would cost more than the prediction."""


def trend_key(rule: str) -> str:
    """The state store's kv key of a rule's trend history."""
    return f"trend:{rule}"


def carried_trend(
    rule: Rule, before: RuleRuntime | None, load: Callable[[str], Any], now: float
) -> TrendHistory | None:
    """The history a (re)built rule starts from: the running rule's if it measures the same thing, else the saved.

    The samples are the probe's own values, so a reload that only changes the line, the horizon or the
    window keeps them (a new ``over`` re-trims them on the next fit); a copy, because the replaced
    runtime's run may still be adding to its own.
    """
    if rule.predict is None:
        return None
    same = before is not None and (before.rule.probe, before.rule.target, before.rule.params) == (
        rule.probe, rule.target, rule.params
    )
    running = before.trend if same and before is not None else None
    source = running.dump() if running is not None else load(trend_key(rule.name))
    return TrendHistory.load(source, rule.predict.over, now)


class _Disabled:
    """Stands in for the probe of a disabled rule, which is never run and opens no target."""

    def measure(self) -> list[Reading]:
        raise ProbeError("rule is disabled")


class SharedObjects:
    """The families' shared objects (``ProbeSpec.shared``), one per callable, for the engine's lifetime.

    Kept across reloads like target clients are, so a probe kept by a reload
    still holds the object the new probes get. Built on first use: a policy
    without process rules never scans /proc.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._objects: dict[Callable[[Clock], Any], Any] = {}
        self._lock = threading.Lock()

    def get(self, make: Callable[[Clock], Any]) -> Any:
        with self._lock:
            if make not in self._objects:
                self._objects[make] = make(self._clock)
            return self._objects[make]


def build_runtime(
    rule: Rule,
    registry: Registry,
    clients: Clients,
    clock: Clock,
    previous: RuleRuntime | None = None,
    *,
    shared: SharedObjects | None = None,
    groups: ProbeGroups | None = None,
) -> RuleRuntime:
    """``previous``: the same rule's runtime before a reload that did not change what it measures.

    ``shared``: where host-local probes get their family's shared object
    (``ProbeSpec.shared``); without it (tests) each probe gets its own.
    ``groups``: the rules that measure the same thing on the same beat
    (``engine.probegroups``); without it each rule has its own probe.
    """
    if not rule.enabled:
        return RuleRuntime(rule=rule, probe=_Disabled(), actions=())
    probe_spec = registry.probes[rule.probe]
    kind, target = probe_spec.target_kind, rule.target
    probe_client = clients.get((kind, target)) if kind is not None and target is not None else None
    if probe_spec.shared is not None:
        probe_client = shared.get(probe_spec.shared) if shared is not None else probe_spec.shared(clock)
    hung, hung_since = None, None
    kept: Probe | None = None
    if previous is not None and previous.probe_client is probe_client and previous.rule.enabled:
        # Same probe on the same connection: keep its memory (rate baselines, log offsets, RSS
        # history), or rate probes would go blind for an interval after every reload.
        kept, hung, hung_since = previous.probe, previous.hung, previous.hung_since
        kept = kept.probe if isinstance(kept, SharedProbe) else kept  # regrouped below

    def make() -> Probe:
        return kept if kept is not None else probe_spec.factory(rule.params, probe_client, clock)

    probe = groups.probe_for(rule, make) if groups is not None else make()
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


def same_measurement(old: Rule, new: Rule) -> bool:
    return (old.probe, old.target, old.params, old.thresholds) == (
        new.probe,
        new.target,
        new.params,
        new.thresholds,
    )


def restore(data: Mapping[str, Any]) -> tuple[dict[str, SubjectState], guards.RuleGuard]:
    subjects = {
        subject: SubjectState(status=Status(body["status"]), since=float(body["since"]))
        for subject, body in data.get("subjects", {}).items()
        if body.get("status") in {s.value for s in Status}
    }
    return subjects, guards.rule_guard_from_dict(data.get("guard", {}))
