"""The fleet budget: the host's own count, plus a slot of a fleet group held on a coordinator for each run.

It stands in for the host budget (the gate sees one ``Budget``): rules in
no group, and every host-count question, go to the ``HostBudget`` it wraps,
so the host's limit always applies too. A rule in a group gets a slot in
``clear`` (before the gate's lock; the coordinator answers within
``coordinator.timeout``) and gives it back when its actions and verify are
over. When the coordinator does not answer, the group's ``on_unavailable``
decides: ``skip`` fails closed (the run is skipped, audited as "fleet budget
unavailable"), ``host`` runs under the host budget alone and says so in the
audit row. A dry run asks without taking (``peek``).

The counters here are what /metrics and ``watchdogctl fleet`` show; they are
plain ints written under a small lock and copied for a snapshot, never a
network call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from watchdogd.engine.budget import OPEN, BudgetView, Clearance, HostBudget, Spend
from watchdogd.engine.snapshot import FleetStats, GroupStats, Held, Wait
from watchdogd.fleet.coordinator import Coordinator, CoordinatorError, Denial, Grant, GroupLimits, GroupView
from watchdogd.logs import event
from watchdogd.model import Decision

log = logging.getLogger(__name__)

WAIT_FORGET = 600.0
"""A rule denied a slot is shown as waiting until it is granted, or this long after its last denial
(it stopped firing, so it no longer asks)."""

OUTCOMES = ("granted", "full", "rate", "unavailable", "fallback", "lost")
DENIAL_DECISION: Mapping[str, Decision] = {
    "full": Decision.SKIPPED_FLEET,
    "rate": Decision.SKIPPED_FLEET,
    "unavailable": Decision.SKIPPED_FLEET_UNAVAILABLE,
}


@dataclass(frozen=True)
class FleetGroup:
    limits: GroupLimits
    on_unavailable: Literal["skip", "host"] = "skip"


@dataclass(frozen=True)
class FleetPlan:
    """The fleet part of a config: the groups and which rule is in which."""

    host: str
    timeout: float
    groups: Mapping[str, FleetGroup]
    rule_groups: Mapping[str, str]


@dataclass
class _Tally:
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    held: dict[int, Held] = field(default_factory=dict)  # token -> what this host holds
    waits: dict[str, Wait] = field(default_factory=dict)  # rule -> its wait
    seconds: float = 0.0
    count: int = 0


class FleetBudget:
    def __init__(
        self,
        host: HostBudget,
        coordinator: Coordinator,
        plan: FleetPlan,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.policy = host.policy
        self.coordinator = coordinator
        self.plan = plan
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._tallies = {name: _Tally() for name in plan.groups}

    # -- the fleet part -------------------------------------------------------------------------------------------
    def governs(self, rule: str) -> bool:
        return rule in self.plan.rule_groups

    def clear(self, rule: str, dry_run: bool, now: float) -> Clearance:
        name = self.plan.rule_groups.get(rule)
        if name is None:
            return OPEN
        group = self.plan.groups[name]
        begun = self._monotonic()
        deadline = begun + self.plan.timeout
        answer: Grant | Denial | None
        if dry_run:
            answer = self.coordinator.peek(group.limits, deadline)
        else:
            answer = self.coordinator.acquire(group.limits, rule, deadline)
        self._timed(name, self._monotonic() - begun)
        if answer is None:  # a dry run that would get a slot
            return Clearance(detail={"fleet": {"group": name, "would": "grant"}})
        if isinstance(answer, Grant):
            return self._granted(name, group, rule, answer)
        return self._denied(name, group, rule, answer, now)

    def _granted(self, name: str, group: FleetGroup, rule: str, grant: Grant) -> Clearance:
        with self._lock:
            tally = self._tallies[name]
            tally.outcomes["granted"] += 1
            tally.held[grant.token] = Held(rule, grant.token, grant.slot, grant.since)
            tally.waits.pop(rule, None)
        given = threading.Event()

        def give_back() -> None:
            if given.is_set():
                return
            given.set()
            with self._lock:
                self._tallies[name].held.pop(grant.token, None)
            self.coordinator.release(grant, self._monotonic() + self.plan.timeout)

        def still_held() -> bool:
            if self.coordinator.holding(grant):
                return True
            with self._lock:
                self._tallies[name].outcomes["lost"] += 1
            event(log, logging.WARNING, "fleet slot lost mid-run", group=name, rule=rule, token=grant.token,
                  policy=group.on_unavailable)
            return group.on_unavailable == "host"

        detail = {
            "group": name,
            "token": grant.token,
            "slot": grant.slot,
            "coordinator": self.coordinator.kind,
            "host": grant.host,
        }
        return Clearance(detail={"fleet": detail}, give_back=give_back, still_held=still_held)

    def _denied(self, name: str, group: FleetGroup, rule: str, denial: Denial, now: float) -> Clearance:
        fallback = denial.reason == "unavailable" and group.on_unavailable == "host"
        outcome = "fallback" if fallback else denial.reason
        with self._lock:
            tally = self._tallies[name]
            tally.outcomes[outcome] += 1
            if not fallback:
                old = tally.waits.get(rule)
                since = old.since if old is not None else now
                count = old.denials + 1 if old is not None else 1
                tally.waits[rule] = Wait(rule, denial.reason, since, now, count, denial.detail)
        detail: dict[str, Any] = {"group": name, "reason": denial.reason, "detail": denial.detail}
        if denial.holders:
            detail["holders"] = [
                {"host": h.host, "rule": h.rule, "since": h.since, "token": h.token} for h in denial.holders
            ]
        if fallback:
            detail["fallback"] = "host"
            return Clearance(detail={"fleet": detail})
        return Clearance(closed=DENIAL_DECISION[denial.reason], detail={"fleet": detail})

    def _timed(self, name: str, seconds: float) -> None:
        with self._lock:
            tally = self._tallies[name]
            tally.seconds += seconds
            tally.count += 1

    # -- the host part: the host's own limit always applies ------------------------------------------------------
    def is_open(self, now: float) -> bool:
        return self.host.is_open(now)

    def prepare(self, now: float) -> Spend:
        return self.host.prepare(now)

    def commit(self, spend: Spend) -> None:
        self.host.commit(spend)

    def release(self, spend: Spend) -> None:
        self.host.release(spend)

    def view(self, now: float) -> BudgetView:
        return self.host.view(now)

    # -- views ----------------------------------------------------------------------------------------------------
    def stats(self, now: float) -> FleetStats:
        """From memory, for status and /metrics: never a network call."""
        with self._lock:
            groups = []
            for name, group in self.plan.groups.items():
                tally = self._tallies[name]
                for rule, wait in list(tally.waits.items()):
                    if now - wait.last > WAIT_FORGET:
                        del tally.waits[rule]
                groups.append(
                    GroupStats(
                        name=name,
                        max_hosts=group.limits.max_hosts,
                        max_runs=group.limits.max_runs,
                        per=group.limits.per,
                        on_unavailable=group.on_unavailable,
                        held=tuple(tally.held.values()),
                        waits=tuple(tally.waits.values()),
                        outcomes=dict(tally.outcomes),
                        acquire_seconds_sum=tally.seconds,
                        acquire_count=tally.count,
                    )
                )
        stats = self.coordinator.stats
        return FleetStats(
            kind=self.coordinator.kind,
            host=self.plan.host,
            endpoint=stats.endpoint,
            requests=stats.requests,
            errors=stats.errors,
            failovers=stats.failovers,
            leases_lost=stats.leases_lost,
            last_error=stats.last_error,
            groups=tuple(groups),
        )

    def views(self) -> list[GroupView | str]:
        """Every group as the coordinator has it, all within one timeout; an error is that group's line.

        One deadline for all groups: a coordinator that hangs costs
        ``watchdogctl fleet`` one timeout, not one per group.
        """
        deadline = self._monotonic() + self.plan.timeout
        out: list[GroupView | str] = []
        for name, group in self.plan.groups.items():
            if self._monotonic() >= deadline:
                out.append(f"{name}: not asked: the coordinator used up the {self.plan.timeout:g}s timeout")
                continue
            try:
                out.append(self.coordinator.view(group.limits, deadline))
            except CoordinatorError as exc:
                out.append(f"{name}: {exc}")
        return out

    def carry_over(self, previous: FleetBudget) -> None:
        """A reload keeps the counters of groups that still exist (slots in flight release through their own)."""
        self._lock = previous._lock  # the tallies are shared with the old budget's slots in flight
        with self._lock:
            for name, tally in previous._tallies.items():
                if name in self._tallies:
                    self._tallies[name] = tally
