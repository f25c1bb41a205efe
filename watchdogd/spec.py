"""Declarations a family module exports so the registry can list it.

Each family module (``probes/host.py``, ``probes/postgres.py``...) exports
``PROBES: dict[str, ProbeSpec]`` and each action module ``ACTIONS: dict[str,
ActionSpec]``; each target module ``TARGET: TargetSpec``. ``registry.py``
merges those tables explicitly, so what exists is greppable and nothing is
discovered by scanning directories.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from watchdogd.actions.base import Action, ActionParams
from watchdogd.model import Cardinality, Clock, Unit
from watchdogd.probes.base import Params, Probe

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

    def __post_init__(self) -> None:
        if self.subjects not in SUBJECT_KINDS:
            raise ValueError(f"unknown subject kind {self.subjects!r}")


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
