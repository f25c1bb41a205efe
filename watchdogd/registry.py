"""Explicit tables from kind-name to implementation.

Adding a family: write its module with ``PROBES``/``ACTIONS``/``TARGET`` and
add one line below. Family modules must not import their client library at
module level (see ``spec.TargetSpec``): the host-only daemon must stay small.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from watchdogd.actions import exec as exec_actions
from watchdogd.actions import files as files_actions
from watchdogd.probes import host as host_probes
from watchdogd.spec import ActionSpec, ProbeSpec, TargetSpec

# family imports (one per line; the families are added as they land)
# postgres: from watchdogd.probes import postgres as postgres_probes
# postgres: from watchdogd.actions import postgres as postgres_actions
# postgres: from watchdogd.targets import postgres as postgres_target
# redis: from watchdogd.probes import redis as redis_probes
# redis: from watchdogd.actions import redis as redis_actions
# redis: from watchdogd.targets import redis as redis_target
# docker: from watchdogd.probes import docker as docker_probes
# docker: from watchdogd.actions import docker as docker_actions
# docker: from watchdogd.targets import docker as docker_target
# services: from watchdogd.probes import services as service_probes
# services: from watchdogd.actions import services as service_actions

PROBE_FAMILIES: tuple[Mapping[str, ProbeSpec], ...] = (
    host_probes.PROBES,
    # postgres: postgres_probes.PROBES,
    # redis: redis_probes.PROBES,
    # docker: docker_probes.PROBES,
    # services: service_probes.PROBES,
)
ACTION_FAMILIES: tuple[Mapping[str, ActionSpec], ...] = (
    exec_actions.ACTIONS,
    files_actions.ACTIONS,
    # postgres: postgres_actions.ACTIONS,
    # redis: redis_actions.ACTIONS,
    # docker: docker_actions.ACTIONS,
    # services: service_actions.ACTIONS,
)
TARGET_KINDS: Mapping[str, TargetSpec] = {
    # postgres: "postgres": postgres_target.TARGET,
    # redis: "redis": redis_target.TARGET,
    # docker: "docker": docker_target.TARGET,
}

T = TypeVar("T")


def _merge(tables: tuple[Mapping[str, T], ...]) -> dict[str, T]:
    merged: dict[str, T] = {}
    for table in tables:
        for name, spec in table.items():
            if name in merged:
                raise RuntimeError(f"registry: {name} is declared twice")
            merged[name] = spec
    return merged


PROBES: Mapping[str, ProbeSpec] = _merge(PROBE_FAMILIES)
ACTIONS: Mapping[str, ActionSpec] = _merge(ACTION_FAMILIES)
