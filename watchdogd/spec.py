"""Declarations a family module exports so the registry can list it.

Each family module (``probes/host.py``, ``probes/postgres.py``...) exports
``PROBES: dict[str, ProbeSpec]`` and each action module ``ACTIONS: dict[str,
ActionSpec]``; each target module ``TARGET: TargetSpec``. ``registry.py``
merges those tables explicitly, so what exists is greppable and nothing is
discovered by scanning directories.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from watchdogd.actions.base import Action, ActionParams
from watchdogd.model import Cardinality, Clock, Unit
from watchdogd.probes.base import Params, Probe

ProbeFactory = Callable[[Any, Any, Clock], Probe]
"""(params, target client or None, clock) -> probe."""
ActionFactory = Callable[[Any, Any, Clock], Action]
"""(params, target client or None, clock) -> action."""


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


@dataclass(frozen=True)
class ActionSpec:
    params: type[ActionParams]
    factory: ActionFactory
    summary: str
    target_kind: str | None = None
    settle: float = 5.0
    """Default ``settle`` seconds: how long verify keeps re-probing before it calls the fix failed."""


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
