"""Plain data passed between probes, policy, guard, actions and state.

Stdlib only, so every other module (and every test) can import it cheaply.
All times are float seconds on the wall clock (``time.time()``): they are
persisted in SQLite and must mean the same thing after a restart, which a
monotonic clock does not.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Clock = Callable[[], float]
"""Returns wall-clock seconds. Injected everywhere so logic is testable without sleeping."""


class _Enum(enum.Enum):
    """Enums hashed by identity: members are singletons, equal only to themselves, so this is Enum's own
    equality; Enum's ``__hash__`` is Python code (``hash(self._name_)``), 160 ns a dict lookup on 3.11 where
    this is 20, and units and decisions are dict keys on every /metrics render and rule run."""

    __hash__ = object.__hash__


class Unit(_Enum):
    """What a probe's value means; decides how thresholds are parsed and shown."""

    PERCENT = "percent"  # 0..100
    RATIO = "ratio"  # 0..1
    SECONDS = "seconds"
    BYTES = "bytes"
    COUNT = "count"
    PER_SECOND = "per_second"


class Cardinality(_Enum):
    """Whether subjects may become metric labels (mountpoints) or only aggregates (pids)."""

    LOW = "low"
    HIGH = "high"


class Status(_Enum):
    OK = "ok"
    PENDING = "pending"
    FIRING = "firing"


class RuleStatus(_Enum):
    """What `watchdogctl status` shows for a whole rule."""

    OK = "ok"
    PENDING = "pending"
    FIRING = "firing"
    PAUSED = "paused"
    GAVE_UP = "gave_up"
    DOWN = "down"  # the probe itself failed (and the rule holds its state: ``on_down: hold``)
    WAITING = "waiting"  # a rule it ``depends_on`` is in trouble: not probed, no action, counted there
    ABSENT = "absent"  # its optional target never answered on this host: not installed, not an outage
    DISABLED = "disabled"


class Decision(_Enum):
    """Why an action ran or did not. Every value ends up in an audit row."""

    RAN = "ran"
    DRY_RUN = "dry_run"
    SKIPPED_COOLDOWN = "skipped_cooldown"
    SKIPPED_BUDGET = "skipped_budget"
    SKIPPED_GAVE_UP = "skipped_gave_up"
    SKIPPED_GRACE = "skipped_grace"
    SKIPPED_MAX_PER_RUN = "skipped_max_per_run"
    SKIPPED_PAUSED = "skipped_paused"
    SKIPPED_MAINTENANCE = "skipped_maintenance"  # the whole host is in maintenance (watchdogctl pause --all)
    SKIPPED_FLEET = "skipped_fleet"  # the rule's fleet group is full or its run window spent
    SKIPPED_FLEET_UNAVAILABLE = "skipped_fleet_unavailable"  # the coordinator did not answer; the group fails closed
    GAVE_UP = "gave_up"  # the run that tipped the rule over max_actions
    OPERATOR = "operator"  # an operator paused or resumed the rule (action operator.pause / operator.resume),
    # or the whole host (rule "*": operator.pause_all / operator.resume_all, maintenance.expired at its end)


@dataclass(frozen=True, slots=True)
class Reading:
    """One measured value for one subject.

    ``details`` carries what an action needs to act safely on exactly this
    subject (a backend's pid *and* backend_start, a container id, a file path)
    and what the audit log should show; it never becomes a metric label.
    """

    subject: str
    value: float
    details: Mapping[str, Any] = field(default_factory=dict)
    no_data: bool = False
    """The subject is there but this run says nothing about it (a window too quiet for a ratio, a trend
    with too few samples yet): its state is held as it was, neither cleared nor advanced. ``value`` is NaN."""


def no_data(subject: str, details: Mapping[str, Any] | None = None) -> Reading:
    """A reading that holds the subject's state (see ``Reading.no_data``)."""
    return Reading(subject, float("nan"), details or {}, no_data=True)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Outcome of one probe run. A failed probe is ``up=False`` with the error, never an exception."""

    up: bool
    readings: tuple[Reading, ...] = ()
    error: str | None = None
    duration: float = 0.0
    finished_at: float = 0.0


@dataclass(frozen=True, slots=True)
class ItemResult:
    """What an action did (or would do, in dry-run) to one thing: a file, a pid, a key."""

    subject: str
    ok: bool
    detail: str = ""
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ActionResult:
    """Outcome of one action run over a batch of subjects.

    ``items`` lists each thing touched so dry-run can show exactly what would
    happen and the audit log can show exactly what did.
    """

    ok: bool
    items: tuple[ItemResult, ...] = ()
    detail: str = ""
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SubjectState:
    """Per rule and subject: where it is in ok -> pending -> firing."""

    status: Status = Status.OK
    since: float = 0.0  # when it entered ``status``
    value: float | None = None
    last_seen: float = 0.0


@dataclass(frozen=True, slots=True)
class Transition:
    """A subject changed status in this evaluation (for logs, audit and, later, notifications)."""

    subject: str
    old: Status
    new: Status
    value: float | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One row of the audit log: every guard decision, whether or not anything ran.

    ``result`` is ``started`` while an action is in flight (written before it
    runs, so a crash leaves evidence), then ``ok``/``failed``; ``n/a`` for
    skips. ``detail`` holds the per-item results and what the probe saw.
    """

    ts: float
    rule: str
    subject: str
    action: str
    decision: Decision
    result: str
    error: str | None = None
    value_before: float | None = None
    value_after: float | None = None
    duration: float | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    id: int | None = None


@dataclass(frozen=True, slots=True)
class RuleTransition:
    """A row of the alert history: a rule or one of its subjects changed state (pending, firing, down...).

    Kept apart from the audit log, which records what the guard decided
    about actions; this records what the rule saw, alert-only rules too.
    """

    ts: float
    rule: str
    kind: str  # pending, firing, resolved, down, back, gave_up, resumed, waiting, clear, absent, seen
    subject: str = "-"
    value: float | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    id: int | None = None
