"""The budget: how many real action runs may start, across rules, in a window.

The gate asks a ``Budget`` and never looks inside, so a budget kept
elsewhere (a fleet's, on a coordinator) can stand in for the host's own
without a change to the gate. A fleet budget answers in two steps: ``clear``
(before the gate's lock, since it may wait on the network, bounded) takes a
slot and says how to give it back; the host's count is then booked under the
lock like before. The protocol splits the host's spending in two so that
the spend commits in the same transaction as the write-ahead row:
``prepare`` says what the spend would make durable, the gate writes that
with the "started" rows, and only then ``commit`` makes it the budget's
state. A failed write leaves the budget as it was, like the disk.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from watchdogd.core import guard as guards
from watchdogd.core.guard import BudgetPolicy
from watchdogd.model import Decision

HOST_KEY = "host_guard"
"""The kv row of the host budget's action times (the name predates the Budget protocol; kept for old state)."""

LoadKv = Callable[[str], Mapping[str, Any] | None]


@dataclass(frozen=True)
class Spend:
    """One run booked but not yet committed: ``kv`` lands with the write-ahead rows, ``detail`` in them."""

    state: object
    kv: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BudgetView:
    """What status, /metrics and ``check`` show; read without waiting on the gate."""

    kind: str
    actions: int
    per: float
    remaining: int
    used_last_hour: int


def _nothing() -> None:
    return None


def _always() -> bool:
    return True


@dataclass(frozen=True)
class Clearance:
    """A budget's answer for one run of one rule, asked before the gate's lock.

    ``closed`` is the skip decision when the run may not start (the fleet
    group is full, or its coordinator did not answer and the group fails
    closed). ``give_back`` returns what ``clear`` took (a fleet slot): the gate
    calls it when the run is over, or at once when the guard skips it after
    all; it never raises. ``still_held`` is asked before each action: false
    once the slot may be someone else's (the lease is lost), so a group that
    fails closed runs no further action. ``detail`` lands in the run's audit
    rows (the group, the fencing token, or why it was skipped).
    """

    closed: Decision | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    give_back: Callable[[], None] = _nothing
    still_held: Callable[[], bool] = _always


OPEN = Clearance()


class Budget(Protocol):
    def governs(self, rule: str) -> bool:
        """Whether ``clear`` may close or take anything for this rule (the gate asks it only then)."""
        ...

    def clear(self, rule: str, dry_run: bool, now: float) -> Clearance:
        """Take what one run of ``rule`` needs beyond the host's count; bounded in time, never raises.

        A dry run takes nothing: it only says whether a real run would get through.
        """
        ...

    def is_open(self, now: float) -> bool:
        """Whether one more run may start now. Asked before a dry run too: it shows what would happen."""
        ...

    def prepare(self, now: float) -> Spend:
        """Book one real run; nothing changes until ``commit``. Called under the gate's lock."""
        ...

    def commit(self, spend: Spend) -> None:
        """The write-ahead transaction holding ``spend.kv`` committed: make it the budget's state."""
        ...

    def release(self, spend: Spend) -> None:
        """The run and its verify are over (the host budget counts on; a fleet slot is the Clearance's)."""
        ...

    def view(self, now: float) -> BudgetView: ...


class HostBudget:
    """This host's own count of real runs in the window, kept in the state store.

    The state is an immutable ``HostGuard`` swapped whole on commit, so
    ``view`` reads it without a lock and a snapshot never waits on the gate.
    """

    def __init__(self, policy: BudgetPolicy, load: LoadKv) -> None:
        self.policy = policy
        self._host = guards.host_guard_from_dict(load(HOST_KEY) or {})
        self._commit_lock = threading.Lock()

    def governs(self, rule: str) -> bool:
        return False

    def clear(self, rule: str, dry_run: bool, now: float) -> Clearance:
        return OPEN

    def is_open(self, now: float) -> bool:
        return guards.budget_open(self._host, self.policy, now)

    def prepare(self, now: float) -> Spend:
        host = guards.host_spend(self._host, now, self.policy)
        return Spend(state=host, kv={HOST_KEY: guards.host_guard_to_dict(host)})

    def commit(self, spend: Spend) -> None:
        if isinstance(spend.state, guards.HostGuard):
            with self._commit_lock:
                self._host = spend.state

    def release(self, spend: Spend) -> None:
        """Nothing to give back: a host run counts for the whole window."""

    def view(self, now: float) -> BudgetView:
        host = self._host
        return BudgetView(
            kind="host",
            actions=self.policy.actions,
            per=self.policy.per,
            remaining=guards.budget_remaining(host, self.policy, now),
            used_last_hour=sum(1 for t in host.action_times if t > now - 3600),
        )


def budget_for(policy: BudgetPolicy, load: LoadKv, previous: HostBudget | None = None) -> HostBudget:
    """The host budget the config asks for; a reload with the same policy keeps the running one (and its count)."""
    if previous is not None and previous.policy == policy:
        return previous
    return HostBudget(policy, load)
