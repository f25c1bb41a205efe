"""What a fleet coordinator offers the budget: slots of a group, granted with a fencing token.

A *group* is a set of rules (or action kinds) that the whole fleet shares:
at most ``max_hosts`` runs of it at once, and optionally at most
``max_runs`` started per ``per`` seconds. A *slot* is one run of one rule
on one host, held from the grant until the action and its verify finish, or
until the host's lease expires (the host died or lost the coordinator).

Every implementation keeps the same promises, which the storm test checks
from the coordinator's own record rather than the client's belief:

- never more than ``max_hosts`` holders of a group at once (a slot is one of
  ``max_hosts`` keys, taken only when absent, atomically);
- a grant carries a *fencing token* that only grows (etcd: the revision of
  the transaction that took the slot); it is written into the audit row of the
  run it allowed;
- ``holding(grant)`` turns false no later than the coordinator could have
  given the slot to someone else (the lease's deadline as this host knows it,
  counted from when the last keep-alive was *sent*), so a host never acts on
  a slot that may be gone;
- ``acquire`` and ``peek`` never raise for an unreachable or slow
  coordinator and never take longer than their deadline: they answer
  ``Denial(reason="unavailable")``, and the budget applies the group's
  ``on_unavailable`` policy;
- ``release`` never raises either: lease expiry is the backstop.

Deadlines are ``time.monotonic()`` values; ``since`` and holder times are
wall-clock seconds (hosts' clocks may differ: shown, never compared).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

DenialReason = Literal["full", "rate", "unavailable"]


@dataclass(frozen=True, slots=True)
class GroupLimits:
    """One group's limits as the coordinator needs them (config: ``fleet.groups.<name>``)."""

    name: str
    max_hosts: int
    max_runs: int | None = None
    per: float = 600.0


@dataclass(frozen=True, slots=True)
class Holder:
    """One slot as the coordinator records it."""

    group: str
    slot: int
    host: str
    rule: str
    since: float
    token: int


@dataclass(frozen=True, slots=True)
class Grant:
    """A slot this host holds. ``token`` is the fencing token; ``handle`` is the coordinator's own."""

    group: str
    slot: int
    host: str
    rule: str
    since: float
    token: int
    handle: str = ""


@dataclass(frozen=True, slots=True)
class Denial:
    """Why no slot: the group is full, its run window is spent, or the coordinator did not answer."""

    group: str
    reason: DenialReason
    detail: str
    holders: tuple[Holder, ...] = ()


@dataclass(frozen=True, slots=True)
class GroupView:
    """A group as ``watchdogctl fleet`` shows it."""

    group: str
    max_hosts: int
    holders: tuple[Holder, ...]
    max_runs: int | None
    runs_in_window: int | None
    per: float


@dataclass
class CoordinatorStats:
    """Counters the coordinator keeps for /metrics (read without a lock: ints, written by one thread at a time)."""

    requests: int = 0
    errors: int = 0
    failovers: int = 0
    leases_lost: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    endpoint: str = ""
    extra: dict[str, int] = field(default_factory=dict)


class CoordinatorError(Exception):
    """The coordinator did not answer in time or answered something unusable (one line, for logs and status)."""


class Coordinator(Protocol):
    kind: str
    """``etcd`` or ``redis``: shown in status, metrics and the audit row."""
    host: str
    stats: CoordinatorStats

    def acquire(self, group: GroupLimits, rule: str, deadline: float) -> Grant | Denial:
        """Take a slot of ``group`` for one run of ``rule``, or say why not. Never raises nor overruns ``deadline``."""
        ...

    def peek(self, group: GroupLimits, deadline: float) -> Denial | None:
        """Whether ``acquire`` would grant now, changing nothing (a dry run's answer). Never raises."""
        ...

    def holding(self, grant: Grant) -> bool:
        """False once the slot may be gone (lease expired, or its deadline passed without a keep-alive). No I/O."""
        ...

    def release(self, grant: Grant, deadline: float) -> None:
        """Give the slot back if it is still this grant's (compare the token). Never raises."""
        ...

    def view(self, group: GroupLimits, deadline: float) -> GroupView:
        """Holders and the run window's use; raises ``CoordinatorError`` when the coordinator does not answer."""
        ...

    def close(self) -> None:
        """Stop keep-alives and give up the lease (its slots go with it). Idempotent."""
        ...
