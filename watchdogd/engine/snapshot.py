"""Read-only views of the engine's state for /metrics, `watchdogctl status` and /healthz.

A scrape or a status call copies these under the engine's lock and formats
them afterwards, so readers never block a rule run and never run a probe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from watchdogd.core.guard import Maintenance
from watchdogd.engine.events import SinkStats
from watchdogd.model import Cardinality, RuleStatus, RuleTransition, Unit


@dataclass(frozen=True, slots=True)
class ActionSummary:
    action: str
    decision: str
    result: str
    ts: float
    subject: str
    error: str | None = None


@dataclass(slots=True)
class RuleSnapshot:
    """One rule's view. Read-only by convention, not frozen: views are shared by every reader until the rule
    changes, and nothing may change one. A frozen dataclass sets each of its 34 fields through
    ``object.__setattr__``: 3 of a render's 20 ms at 1,000 rules.

    The fields from the rule's config come in two runs (``RuleFacts``), so the
    engine makes a view from the facts it made once per config and the values
    of the moment, by position: keyword arguments cost more than the rest of
    the view at 1,000 rules.
    """

    # -- the rule's config (RuleFacts[0])
    name: str
    probe: str
    target: str | None
    severity: str
    unit: Unit
    cardinality: Cardinality
    enabled: bool
    dry_run: bool
    every: float
    above: float | None
    below: float | None
    # -- the rule now
    status: RuleStatus
    up: bool | None  # None: not run yet
    error: str | None
    last_run: float | None
    duration: float | None
    # -- the rule's config (RuleFacts[1])
    has_actions: bool = False
    description: str = ""
    actions: tuple[str, ...] = ()  # configured action kinds, in order (metrics pre-set their counters)
    timeout: float = 0.0  # the effective probe timeout
    timeout_source: str = ""  # how it was derived ("rule timeout", "probe_timeout capped at the interval"...)
    on_down: str = "hold"
    depends_on: tuple[str, ...] = ()
    # -- the rule now
    readings: Mapping[str, float] = field(default_factory=dict)
    firing: Mapping[str, float] = field(default_factory=dict)
    firing_subjects: tuple[str, ...] = ()  # every firing subject, also one restored at start without a value
    pending: Mapping[str, float] = field(default_factory=dict)
    cooldown_until: float | None = None
    gave_up_at: float | None = None
    paused_until: float | None = None
    last_actions: tuple[ActionSummary, ...] = ()
    waiting_on: tuple[str, ...] = ()  # the dependencies in trouble right now
    last_change: RuleTransition | None = None  # the rule's latest transition since the daemon started


RuleFacts = tuple[
    tuple[str, str, str | None, str, Unit, Cardinality, bool, bool, float, float | None, float | None],
    tuple[bool, str, tuple[str, ...], float, str, str, tuple[str, ...]],
]
"""A view's values from the rule's config, in field order: the fields before ``status``, and
``has_actions`` to ``depends_on``."""


@dataclass(frozen=True, slots=True)
class Held:
    rule: str
    token: int
    slot: int
    since: float


@dataclass(frozen=True, slots=True)
class Wait:
    rule: str
    reason: str
    since: float
    last: float
    denials: int
    detail: str


@dataclass(frozen=True, slots=True)
class GroupStats:
    """One group as this host sees it, from memory."""

    name: str
    max_hosts: int
    max_runs: int | None
    per: float
    on_unavailable: str
    held: tuple[Held, ...]
    waits: tuple[Wait, ...]
    outcomes: Mapping[str, int]
    acquire_seconds_sum: float
    acquire_count: int


@dataclass(frozen=True, slots=True)
class FleetStats:
    kind: str
    host: str
    endpoint: str
    requests: int
    errors: int
    failovers: int
    leases_lost: int
    last_error: str | None
    groups: tuple[GroupStats, ...]


@dataclass(frozen=True, slots=True)
class EngineSnapshot:
    taken_at: float
    started_at: float
    dry_run: bool
    rules: tuple[RuleSnapshot, ...]
    actions_total: Mapping[tuple[str, str, str], int]  # (rule, action, result) -> count since start
    budget_actions: int
    budget_per: float
    budget_remaining: int
    actions_last_hour: int
    config_path: str
    config_loaded_at: float
    last_reload_error: str | None = None
    stuck_probes: int = 0  # probe threads still running after their rule gave up waiting
    probes_abandoned: int = 0  # probes given up on since start
    stalled_rules: tuple[str, ...] = ()  # rules whose probe has been stuck past a whole interval
    state_resets: int = 0  # times a start found the state database reset, replaced or corrupt (host lifetime)
    transitions_total: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (rule, kind) -> count since start
    sinks: tuple[SinkStats, ...] = ()  # event sinks' delivery counts (watchdogd_event_sink_*)
    fleet: FleetStats | None = None  # the fleet budget's groups, slots held here, waits, coordinator counters
    maintenance: Maintenance | None = None  # the host's maintenance mode while it is on (watchdogctl pause --all)
    probe_failures: Mapping[str, int] = field(default_factory=dict)  # rule -> failed probe runs since start
    # (rule, action, decision) -> audited skips since start (watchdogd_action_skips_total)
    action_skips: Mapping[tuple[str, str, str], int] = field(default_factory=dict)
