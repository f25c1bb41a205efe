"""The one table of families: what kinds of probe, action and target exist.

Adding a family: write its package under ``watchdogd/families/`` exporting
``FAMILY`` and add one line to ``SHIPPED``, naming its kinds. Nothing is
discovered by scanning directories, so what exists is greppable.

The kinds are listed here, not read from the families, so that knowing what
exists costs nothing: a family's package is imported the first time one of
its kinds is looked up. A host-only policy then never loads the PostgreSQL,
Redis, Docker, HTTP/TLS or systemd code (about 6 MiB of RSS with their
imports, bench/bench_imports.py). tests/unit/test_registry_index.py keeps
the table equal to what the families declare. Family modules must still not
import their client library at module level (see ``contracts.TargetSpec``).

A ``Registry`` is a value: the config is validated against one and carries
it (``Config.registry``), and the engine and the target clients build from
that same one. Tests build small registries of their own families.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

from watchdogd.contracts import ActionSpec, Family, ProbeSpec, TargetSpec


@dataclass(frozen=True)
class FamilyIndex:
    """One shipped family as the registry knows it before importing it: its package and the kinds it declares."""

    name: str
    probes: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        return f"watchdogd.families.{self.name}"


SHIPPED: tuple[FamilyIndex, ...] = (
    FamilyIndex("host", probes=("host.cpu", "host.dir_size", "host.disk", "host.file_age", "host.inodes",
                                "host.load", "host.memory", "host.swap")),
    FamilyIndex("process", probes=("process.age", "process.count", "process.cpu", "process.fds", "process.rss",
                                   "process.rss_growth"), actions=("process.signal",)),
    FamilyIndex("files", actions=("files.clean",)),
    FamilyIndex("exec", actions=("exec",)),
    FamilyIndex("net", probes=("net.http", "net.tcp", "net.tls_cert")),
    FamilyIndex("logs", probes=("log.count", "log.matches")),
    FamilyIndex("systemd", probes=("systemd.restarts", "systemd.unit"),
                actions=("journal.vacuum", "systemd.reload", "systemd.restart")),
    FamilyIndex("postgres", probes=("postgres.blocking", "postgres.connections", "postgres.dead_ratio",
                                    "postgres.dead_tuples", "postgres.idle", "postgres.idle_in_transaction",
                                    "postgres.long_query", "postgres.replicas", "postgres.replication_lag",
                                    "postgres.replication_lag_bytes", "postgres.up"),
                actions=("postgres.cancel", "postgres.terminate", "postgres.vacuum"), targets=("postgres",)),
    FamilyIndex("redis", probes=("redis.blocked_clients", "redis.clients", "redis.evictions", "redis.hit_ratio",
                                 "redis.idle_clients", "redis.memory", "redis.memory_bytes", "redis.queue_length",
                                 "redis.rejected_connections", "redis.replication", "redis.slowlog",
                                 "redis.slowlog_entries", "redis.up"),
                actions=("redis.client_kill", "redis.delete_keys"), targets=("redis",)),
    FamilyIndex("docker", probes=("docker.container_cpu", "docker.container_memory", "docker.containers",
                                  "docker.disk", "docker.engine"),
                actions=("docker.prune", "docker.restart", "docker.start"), targets=("docker",)),
)


def load_family(index: FamilyIndex) -> Family:
    family = importlib.import_module(index.module).FAMILY
    if not isinstance(family, Family):
        raise RuntimeError(f"registry: {index.module}.FAMILY is not a Family")
    return family


def shipped_families() -> tuple[Family, ...]:
    """Every shipped family, imported: for tests and tools that need them all."""
    return tuple(load_family(index) for index in SHIPPED)


T = TypeVar("T")


class LazySpecs(Mapping[str, T]):
    """Name -> spec, with the names known up front and a family imported on the first look-up of one of its kinds.

    Iterating, ``in`` and ``len`` import nothing; ``values()``/``items()``
    import every family (what a schema or a "did you mean" over all kinds
    needs). Rule threads may look up at once: the import lock serialises the
    import itself, and a spec table is stored only whole.
    """

    def __init__(self, owners: Mapping[str, FamilyIndex], pick: Callable[[Family], Mapping[str, T]]) -> None:
        self._owners = dict(owners)
        self._pick = pick
        self._loaded: dict[str, Mapping[str, T]] = {}
        self._lock = threading.RLock()  # a family whose import looks a kind up again must not deadlock

    def __getitem__(self, name: str) -> T:
        index = self._owners[name]
        table = self._loaded.get(index.name)
        if table is None:
            with self._lock:
                table = self._loaded.get(index.name)
                if table is None:
                    table = self._pick(load_family(index))
                    self._loaded[index.name] = table
        return table[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._owners)

    def __len__(self) -> int:
        return len(self._owners)

    def __contains__(self, name: object) -> bool:
        return name in self._owners


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

    def __reduce__(self) -> str:
        """The shipped registry crosses from the config child to the daemon by name (watchdogd.configchild).

        Its specs hold the family loaders, which do not pickle; any other registry is a test's, never sent.
        """
        if self is not DEFAULT:
            raise TypeError("only the shipped registry (watchdogd.registry.DEFAULT) is sent between processes")
        return "DEFAULT"

    @classmethod
    def lazy(cls, index: Iterable[FamilyIndex]) -> Registry:
        """The families of ``index``, each imported when one of its kinds is first looked up."""
        chosen = tuple(index)
        return cls(
            probes=LazySpecs(_owners(chosen, lambda i: i.probes), lambda family: family.probes),
            actions=LazySpecs(_owners(chosen, lambda i: i.actions), lambda family: family.actions),
            targets=LazySpecs(_owners(chosen, lambda i: i.targets), lambda family: family.targets),
        )


def _merge(tables: Iterable[Mapping[str, T]]) -> dict[str, T]:
    merged: dict[str, T] = {}
    for table in tables:
        for name, spec in table.items():
            if name in merged:
                raise RuntimeError(f"registry: {name} is declared twice")
            merged[name] = spec
    return merged


def _owners(index: Iterable[FamilyIndex], names: Callable[[FamilyIndex], Iterable[str]]) -> dict[str, FamilyIndex]:
    """Kind name -> the family declaring it; a kind declared twice is a programming error, caught at import."""
    owners: dict[str, FamilyIndex] = {}
    for family in index:
        for name in names(family):
            if name in owners:
                raise RuntimeError(f"registry: {name} is declared twice")
            owners[name] = family
    return owners


DEFAULT = Registry.lazy(SHIPPED)
"""Every family this build ships; what the daemon and watchdogctl validate configs against."""
