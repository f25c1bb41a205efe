"""Explicit tables from kind-name to implementation.

Adding a family: write its module with ``PROBES``/``ACTIONS``/``TARGET`` and
add its lines below. Family modules must not import their client library at
module level (see ``spec.TargetSpec``): the host-only daemon must stay small.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from watchdogd.actions import docker as docker_actions
from watchdogd.actions import exec as exec_actions
from watchdogd.actions import files as files_actions
from watchdogd.actions import journal as journal_actions
from watchdogd.actions import postgres as postgres_actions
from watchdogd.actions import process as process_actions
from watchdogd.actions import redis as redis_actions
from watchdogd.actions import systemd as systemd_actions
from watchdogd.probes import docker as docker_probes
from watchdogd.probes import host as host_probes
from watchdogd.probes import logs as log_probes
from watchdogd.probes import net as net_probes
from watchdogd.probes import postgres as postgres_probes
from watchdogd.probes import process as process_probes
from watchdogd.probes import redis as redis_probes
from watchdogd.probes import systemd as systemd_probes
from watchdogd.spec import ActionSpec, ProbeSpec, TargetSpec
from watchdogd.targets import docker as docker_target
from watchdogd.targets import postgres as postgres_target
from watchdogd.targets import redis as redis_target

PROBE_FAMILIES: tuple[Mapping[str, ProbeSpec], ...] = (
    host_probes.PROBES,
    postgres_probes.PROBES,
    redis_probes.PROBES,
    docker_probes.PROBES,
    log_probes.PROBES,
    net_probes.PROBES,
    process_probes.PROBES,
    systemd_probes.PROBES,
)
ACTION_FAMILIES: tuple[Mapping[str, ActionSpec], ...] = (
    exec_actions.ACTIONS,
    files_actions.ACTIONS,
    postgres_actions.ACTIONS,
    redis_actions.ACTIONS,
    docker_actions.ACTIONS,
    journal_actions.ACTIONS,
    process_actions.ACTIONS,
    systemd_actions.ACTIONS,
)
TARGET_KINDS: Mapping[str, TargetSpec] = {
    "postgres": postgres_target.TARGET,
    "redis": redis_target.TARGET,
    "docker": docker_target.TARGET,
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
