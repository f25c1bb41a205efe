"""The one table of families: what kinds of probe, action and target exist.

Adding a family: write its package under ``watchdogd/families/`` exporting
``FAMILY`` and add one line to ``FAMILIES``. Nothing is discovered by
scanning directories, so what exists is greppable. Family modules must not
import their client library at module level (see ``contracts.TargetSpec``):
the host-only daemon must stay small.

A ``Registry`` is a value: the config is validated against one and carries
it (``Config.registry``), and the engine and the target clients build from
that same one. Tests build small registries of their own families.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from watchdogd.contracts import ActionSpec, Family, ProbeSpec, TargetSpec
from watchdogd.families import docker, exec, files, host, logs, net, postgres, process, redis, systemd

FAMILIES: tuple[Family, ...] = (
    host.FAMILY,
    process.FAMILY,
    files.FAMILY,
    exec.FAMILY,
    net.FAMILY,
    logs.FAMILY,
    systemd.FAMILY,
    postgres.FAMILY,
    redis.FAMILY,
    docker.FAMILY,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Registry:
    probes: Mapping[str, ProbeSpec]
    actions: Mapping[str, ActionSpec]
    targets: Mapping[str, TargetSpec]

    @classmethod
    def of(cls, families: Iterable[Family]) -> Registry:
        """Merge families; a kind declared twice is a programming error, caught at import."""
        chosen = tuple(families)
        return cls(
            probes=_merge(family.probes for family in chosen),
            actions=_merge(family.actions for family in chosen),
            targets=_merge(family.targets for family in chosen),
        )


def _merge(tables: Iterable[Mapping[str, T]]) -> dict[str, T]:
    merged: dict[str, T] = {}
    for table in tables:
        for name, spec in table.items():
            if name in merged:
                raise RuntimeError(f"registry: {name} is declared twice")
            merged[name] = spec
    return merged


DEFAULT = Registry.of(FAMILIES)
"""Every family this build ships; what the daemon and watchdogctl validate configs against."""
