"""The checked config the engine runs on: frozen records, and the error a load raises.

Apart from ``watchdogd.config`` (the loader: YAML, the models' checking forms,
every problem at once) because the daemon never loads a config itself: a child
does (``watchdogd.configchild``) and hands these records back. So the daemon
imports what it runs on, not the machinery that checks it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from watchdogd.contracts import ActionParams, Params
from watchdogd.core.guard import BudgetPolicy, GuardPolicy
from watchdogd.core.policy import Thresholds
from watchdogd.core.trend import Prediction
from watchdogd.fleet.spec import FleetSection
from watchdogd.model import Cardinality, Unit
from watchdogd.notifyspec import NotifyPolicy, NotifySection
from watchdogd.registry import DEFAULT, Registry

DEFAULT_CONFIG_PATH = Path("/etc/watchdogd/watchdogd.yaml")
HOST_WIDE = "*"
"""The rule name of host-wide audit and history rows (maintenance mode), so no rule may take it."""


class ConfigError(Exception):
    """All problems of one config file; ``str()`` is one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True)
class ActionConfig:
    kind: str
    params: ActionParams
    target: str | None
    settle: float = 0.0  # effective: the action's ``settle`` or its kind's default


@dataclass(frozen=True)
class Rule:
    name: str
    probe: str
    target: str | None
    params: Params
    unit: Unit
    cardinality: Cardinality
    thresholds: Thresholds
    every: float
    jitter: float
    timeout: float
    severity: str
    enabled: bool
    dry_run: bool  # effective: global or per rule
    actions: tuple[ActionConfig, ...]
    guard: GuardPolicy
    verify_after: float
    description: str = ""
    on_down: str = "hold"  # effective: "fire" turns a failed measurement into a breach
    depends_on: tuple[str, ...] = ()
    timeout_source: str = "probe_timeout"  # how ``timeout`` was derived, for check-config and status
    notify: NotifyPolicy = field(default_factory=NotifyPolicy)  # effective: the rule's own over notify.default
    predict: Prediction | None = None
    """Set: the thresholds apply to where the value is projected to be (``predict:``), not to the value."""


@dataclass(frozen=True)
class EvidenceSettings:
    """``evidence:``: how long a probe may take to describe, how much is kept, whether query texts are."""

    timeout: float = 2.0
    max_bytes: int = 64 * 1024
    show_queries: bool = False


@dataclass(frozen=True)
class Config:
    path: Path
    interval: float
    listen: str | None
    web_config_file: str | None
    textfile_dir: str | None
    state_dir: Path
    control_socket: Path
    control_group: str | None
    dry_run: bool
    budget: BudgetPolicy
    grace: float
    history_retention: float
    log_format: str
    log_level: str
    stuck_probes_restart: int = 16
    """Probe threads stuck past their rule's timeout at which the daemon stops its systemd watchdog
    pings (0: never). Only a restart gets such a thread back; see docs/faults.md."""
    http_keepalive_idle: float = 120.0
    """Seconds an idle keep-alive HTTP connection stays open (``HttpLimits.keepalive_idle``)."""
    release_start_pages_after: float | None = 60.0
    """Seconds after a start or reload by which the start's file pages are handed back (sooner once every
    enabled rule has run); None: never."""
    targets: Mapping[str, Mapping[str, Params]] = field(default_factory=dict)
    rules: Mapping[str, Rule] = field(default_factory=dict)
    notify: NotifySection = field(default_factory=NotifySection)
    evidence: EvidenceSettings = field(default_factory=EvidenceSettings)
    registry: Registry = field(default=DEFAULT, compare=False, repr=False)
    """The kinds this config was checked against; the engine and the target clients build from the same."""
    fleet: FleetSection | None = None
    fleet_groups: Mapping[str, str] = field(default_factory=dict)
    includes: tuple[Path, ...] = ()
    """The ``include:`` drop-ins read, in order (their rules and targets are in ``rules``/``targets``)."""
    """Rule name -> the fleet group its runs belong to (by ``rules:`` or by an action kind in ``actions:``)."""

    def summary(self) -> str:
        enabled = sum(1 for rule in self.rules.values() if rule.enabled)
        actions = sum(len(rule.actions) for rule in self.rules.values() if rule.enabled)
        targets = sum(len(named) for named in self.targets.values())
        mode = ", dry-run" if self.dry_run else ""
        if self.fleet is not None:
            groups = len(self.fleet.groups)
            mode += f", fleet budget on {self.fleet.coordinator.kind}: {groups} group{'s' * (groups != 1)}"
        if self.includes:
            mode += f", {len(self.includes)} drop-in{'s' * (len(self.includes) != 1)}"
        return (
            f"{len(self.rules)} rule{'s' * (len(self.rules) != 1)}: {enabled} enabled, "
            f"{len(self.rules) - enabled} disabled; "
            f"{actions} actions, {targets} targets{mode}"
        )


def env_config_path(default: Path = DEFAULT_CONFIG_PATH) -> Path:
    """WATCHDOGD_CONFIG lets packaging and tests point both commands at one file."""
    return Path(os.environ.get("WATCHDOGD_CONFIG", str(default)))
