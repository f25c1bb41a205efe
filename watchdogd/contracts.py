"""The contract between the engine and the families: what a family imports, and all it may import of the core.

A family (``watchdogd/families/<name>/``) measures and fixes one kind of
thing. It gets its params validated, its target client and the clock; it
returns readings and action results. Everything it shares with the engine is
here: the data it produces (re-exported from ``model``), the params bases,
the probe/action/target protocols, the errors, and the ``*Spec`` records
with which it declares its kinds to the registry. This module imports no
family and nothing of the engine, so a family can be read, tested and added
without learning either.

A probe instance lives as long as its rule's config: it may keep state
between runs (CPU time deltas, counters for rates, file offsets) because
several rules measuring the same thing must not disturb each other, which
psutil's module-level ``cpu_percent`` state would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from watchdogd.model import ActionResult, Cardinality, Clock, ItemResult, Reading, Unit, no_data
from watchdogd.spec import ConfigDict, Field, Model
from watchdogd.units import Duration

__all__ = [
    "ANY_SUBJECT",
    "SUBJECT_KINDS",
    "Action",
    "ActionFactory",
    "ActionParams",
    "ActionResult",
    "ActionSpec",
    "Cardinality",
    "Clock",
    "Describes",
    "EvidenceLimits",
    "Family",
    "ItemResult",
    "NamesThing",
    "NoParams",
    "Params",
    "Probe",
    "ProbeError",
    "ProbeFactory",
    "ProbeSpec",
    "Reading",
    "ReportsOutage",
    "TargetParams",
    "TargetSpec",
    "Unit",
    "describe_kinds",
    "local_probe",
    "no_data",
]

class ProbeError(Exception):
    """A probe could not measure. The message ends up verbatim in status and /metrics logs."""


class Params(Model):
    """Base of every probe's and action's ``params``: frozen, unknown keys are errors."""

    # defer_build: ~100 params models are registered but a config uses a handful; building each
    # validator on first use instead of at import saves several MiB of RSS (bench/bench_rss.py).
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class NoParams(Params):
    pass


class TargetParams(Params):
    """What every ``targets.<kind>.<name>`` takes besides its connection settings."""

    optional: bool = False
    """True: until the target has answered once on this host, a failure means "this host does not have
    it (yet)" and its rules read ``absent``, not an outage; once it has answered, a failure is an outage.
    The shipped policy marks its PostgreSQL, Redis and Docker targets optional, so it can be installed
    on any host. False (the default): a target the operator configured is expected, and a failure is an
    outage from the first start."""


class Probe(Protocol):
    def measure(self) -> list[Reading]:
        """Return one reading per subject, or raise; the engine turns exceptions into a down result.

        Runs in a worker thread under a timeout: it must not touch shared state
        other than its own attributes and its target client.
        """
        ...


@runtime_checkable
class ReportsOutage(Protocol):
    """A probe that knows which subjects an outage takes down with it.

    Availability probes (``postgres.up``, ``net.http``, ``systemd.unit``...)
    implement it so that "unreachable" is reported on the very subject the
    probe reports when the thing is up: the rule's ``for`` timer, cooldown
    and backoff then carry across the outage instead of starting over on a
    made-up subject.
    """

    def outage_subjects(self) -> list[str]:
        """The subjects to mark as down when ``measure`` fails; never raises, never does I/O."""
        ...


@dataclass(frozen=True)
class EvidenceLimits:
    """The bounds of one ``describe``: the engine also enforces them (it stops waiting at ``deadline`` and
    cuts what is returned to ``max_bytes``), but a family that keeps to them returns something whole."""

    deadline: float  # monotonic time by which describe must have returned
    max_bytes: int  # of the JSON of all sections together
    max_items: int = 20  # rows per list (processes, sessions, keys, lines)
    show_queries: bool = False  # PostgreSQL query texts, Redis command arguments: redacted unless True


@runtime_checkable
class Describes(Protocol):
    """A probe that can show what its runbook would look at first, when its rule starts firing.

    Called by the engine in a worker thread, rarely (a subject starting to
    fire, an action about to run), so it may do more I/O than ``measure``,
    within ``limits``. Returns named sections of plain JSON data (str,
    numbers, bools, None, lists, dicts), e.g. ``{"top processes by CPU":
    [...]}``; never secrets (passwords, DSNs, tokens); query texts and
    command arguments only with ``limits.show_queries``. May raise: the
    engine records the error in place of the sections.
    """

    def describe(self, readings: Sequence[Reading], limits: EvidenceLimits) -> dict[str, Any]: ...


class ActionParams(Params):
    """Bounds every action has. The engine enforces ``max_per_run`` before calling ``run``."""

    max_per_run: int = Field(default=10, ge=1, le=10_000)
    timeout: Duration = Field(default=60.0, gt=0, le=86400.0)
    settle: Duration | None = Field(default=None, le=3600.0)
    """How long the thing acted on may take to come right (a restarted unit to answer, a VACUUM to show
    in the statistics); the verify re-probes until the condition clears or this is spent. None takes the
    action kind's default (``ActionSpec.settle``)."""


class Action(Protocol):
    def run(self, subjects: Sequence[Reading], *, dry_run: bool) -> ActionResult:
        """Fix the given breaching subjects, at most ``max_per_run`` of them (already cut).

        In dry-run, do every read-only step (list the files, find the keys)
        and report per item exactly what would be done, but change nothing.
        Must not raise for an expected failure (permission denied, gone
        already): report it in the result. Unexpected exceptions are caught by
        the engine and recorded as a failed run.

        ``ActionResult.error`` means the whole run failed (target unreachable);
        the engine writes it into every audit row of the run, ahead of an
        item's own reason. A failure of one item (one backend not signalled)
        belongs in that ``ItemResult`` only.
        """
        ...


@runtime_checkable
class NamesThing(Protocol):
    """An action that can say which thing it changes for a subject.

    The shared cooldown keys on (action kind, thing), not on the rule: a
    unit restarted by the unit-failed rule is in cooldown for the health
    rule too. An action whose thing is not its subject implements this
    (``systemd.restart`` with ``unit:`` restarts that unit whatever the
    subject; ``exec`` runs its rendered argv). Without it the thing is the
    action's target and the subject.
    """

    def thing(self, reading: Reading) -> str:
        """A stable, loggable key of what ``run`` would change for this reading; no I/O."""
        ...


ProbeFactory = Callable[[Any, Any, Clock], Probe]
"""(params, target client or None, clock) -> probe."""
ActionFactory = Callable[[Any, Any, Clock], Action]
"""(params, target client or None, clock) -> action."""

SUBJECT_KINDS: Mapping[str, str] = {
    "host": "the host",
    "mount": "mounted filesystems",
    "path": "files and directories",
    "log": "log files and journals",
    "endpoint": "network endpoints",
    "process": "a set of matching processes",
    "pid": "single processes",
    "unit": "systemd units",
    "pg_server": "a PostgreSQL server",
    "pg_backend": "PostgreSQL backends",
    "pg_replica": "PostgreSQL replicas",
    "pg_table": "PostgreSQL tables",
    "redis": "a Redis server",
    "redis_client": "Redis clients",
    "redis_key": "Redis keys",
    "docker": "a Docker engine",
    "container": "containers",
}
"""What a probe's subjects name, so config can refuse an action that cannot act on them.

``postgres.terminate`` on ``host.cpu`` would be handed the subject ``cpu`` and
refuse it at run time, every time; saying so at load time is the honest answer.
"""

ANY_SUBJECT: frozenset[str] = frozenset(SUBJECT_KINDS)
"""For actions whose parameters alone say what they change (files.clean's path, exec's argv)."""


def describe_kinds(kinds: frozenset[str]) -> str:
    """``PostgreSQL backends (pg_backend)``: the words for operators, the key for the docs."""
    return " or ".join(f"{SUBJECT_KINDS[kind]} ({kind})" for kind in sorted(kinds))


def local_probe(build: Callable[[Any, Clock], Probe]) -> ProbeFactory:
    """Adapt a (params, clock) constructor of a host-local probe to the registry's factory signature.

    Local probes have no target client; dropping it here keeps each probe
    constructor honest about what it uses.
    """

    def factory(params: Any, _target: Any, clock: Clock) -> Probe:
        return build(params, clock)

    return factory


@dataclass(frozen=True)
class ProbeSpec:
    params: type[Params]
    factory: ProbeFactory
    unit: Unit
    cardinality: Cardinality
    summary: str
    target_kind: str | None = None  # "postgres", "redis", "docker"; None for host-local probes
    availability: bool = False
    """The probe answers "is it there?": failing to measure *is* the finding (``on_down: fire`` by default)."""
    subjects: str = field(kw_only=True)
    """What each reading's subject names, a key of ``SUBJECT_KINDS``."""
    shared: Callable[[Clock], Any] | None = field(default=None, kw_only=True)
    """A family's object shared by every probe of this kind in the engine (one /proc scan per cycle, the
    mount table read only when it changes): built once per engine by calling it with the clock, kept across
    reloads, and handed to the factory in place of the target client. Host-local probes only: a probe with a
    ``target_kind`` shares through its target client instead. Two specs naming the same callable get the
    same object, so ``host.disk`` and ``host.inodes`` read one mount table."""

    def __post_init__(self) -> None:
        if self.subjects not in SUBJECT_KINDS:
            raise ValueError(f"unknown subject kind {self.subjects!r}")
        if self.shared is not None and self.target_kind is not None:
            raise ValueError("a probe with a target shares through its target client, not `shared`")


@dataclass(frozen=True)
class ActionSpec:
    params: type[ActionParams]
    factory: ActionFactory
    summary: str
    target_kind: str | None = None
    settle: float = 5.0
    """Default ``settle`` seconds: how long verify keeps re-probing before it calls the fix failed."""
    accepts: frozenset[str] = field(kw_only=True)
    """The subject kinds (``SUBJECT_KINDS``) whose readings this action can act on."""
    accepts_any_with: str | None = field(default=None, kw_only=True)
    """A parameter that, when set, names the thing acted on itself (``systemd.restart``'s ``unit``),
    so that any probe's subjects will do."""

    def __post_init__(self) -> None:
        unknown = self.accepts - ANY_SUBJECT
        if unknown or not self.accepts:
            raise ValueError(f"unknown subject kinds {sorted(unknown)}")
        if self.accepts_any_with is not None and self.accepts_any_with not in self.params.model_fields:
            raise ValueError(f"accepts_any_with names no parameter: {self.accepts_any_with!r}")

    def accepts_kind(self, kind: str, params: Any) -> bool:
        named = self.accepts_any_with is not None and getattr(params, self.accepts_any_with, None) is not None
        return kind in self.accepts or named


@dataclass(frozen=True)
class TargetSpec:
    """A kind of thing probes talk to (a PostgreSQL server, a Redis, a Docker engine).

    ``connect`` imports the client library itself, so a host that configures
    no PostgreSQL target never loads psycopg (memory budget, start time).
    The returned client must reconnect by itself and be safe to share
    between the rules that name it.
    """

    params: type[Params]
    connect: Callable[[Any], Any]
    close: Callable[[Any], None]
    retry_within: Callable[[Any, float], None] | None = None
    """``retry_within(client, seconds)``: never hold back a reconnect longer than this.

    The daemon passes half the shortest interval of the rules using the
    target, so a service that is back is seen on each rule's next run
    rather than after a reconnect backoff longer than the interval.
    """


@dataclass(frozen=True)
class Family:
    """What one family package declares (its ``FAMILY``): the kinds it adds, keyed by their config names.

    The registry lists families, never their modules, so adding one is a
    new package under ``watchdogd/families/`` plus one line there.
    """

    name: str
    probes: Mapping[str, ProbeSpec] = field(default_factory=dict)
    actions: Mapping[str, ActionSpec] = field(default_factory=dict)
    targets: Mapping[str, TargetSpec] = field(default_factory=dict)
