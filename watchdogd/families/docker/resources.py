"""``docker.container_memory`` and ``docker.container_cpu``: usage against each container's own limits.

One listing call per run picks the running containers; the numbers come
from the cgroup files when the engine is on this host (see
``docker_cgroup``), else from the engine's stats endpoint, many calls in
parallel because each one waits for the engine's one-second collector tick.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from watchdogd.contracts import Clock, Reading
from watchdogd.families.docker.cgroup import CgroupDirs, CgroupFs, parse_cpuset
from watchdogd.families.docker.common import Selection, base_details, engine_of, parse_time, selected

if TYPE_CHECKING:
    from watchdogd.families.docker.target import DockerEngine

STATS_WORKERS = 32
"""Parallel stats calls on the API path: they all finish on the same collector tick."""
LIMITS_TTL = 300.0
"""How long a container's CPU limit read by inspect is trusted (``docker update`` can change it)."""


class MemoryParams(Selection):
    include_unlimited: bool = False


class CpuParams(Selection):
    pass


@dataclass(frozen=True, slots=True)
class Sample:
    """One container's resource use, from either source, in one shape."""

    used: float | None  # memory bytes without inactive page cache
    limit: float | None  # memory limit; None: none set
    cpu_ns: float | None  # cumulative CPU time
    wall_ns: int  # when it was taken, on a clock that only moves forward for this source
    cpu_limit: float | None  # cores; None: all of the host's
    online: int  # the host's CPUs
    throttled: int
    source: str  # "cgroup" / "api"


# --------------------------------------------------------------------------- API path (pure parts)


def memory_used(stats: Mapping[str, Any]) -> tuple[float, float] | None:
    """(used bytes, limit bytes) the way ``docker stats`` counts: page cache the kernel can drop is not used."""
    memory = stats.get("memory_stats") or {}
    usage, limit = memory.get("usage"), memory.get("limit")
    if not usage or not limit:
        return None
    detail = memory.get("stats") or {}
    # cgroup v1 names it total_inactive_file, v2 inactive_file.
    inactive = detail.get("total_inactive_file", detail.get("inactive_file", 0)) or 0
    used = usage - inactive if inactive < usage else usage
    return float(used), float(limit)


def cpu_allowance(host_config: Mapping[str, Any]) -> float | None:
    """Cores a container may use by its HostConfig: ``--cpus``, else quota/period, else its cpuset; None: all."""
    nano = host_config.get("NanoCpus") or 0
    if nano > 0:
        return float(nano) / 1e9
    quota, period = host_config.get("CpuQuota") or 0, host_config.get("CpuPeriod") or 100_000
    if quota > 0:
        return float(quota) / float(period)
    cpuset = str(host_config.get("CpusetCpus") or "")
    return float(parse_cpuset(cpuset)) if cpuset and parse_cpuset(cpuset) else None


def api_sample(stats: Mapping[str, Any], cpu_limit: float | None, host_memory: float) -> Sample | None:
    cpu = stats.get("cpu_stats") or {}
    usage = (cpu.get("cpu_usage") or {}).get("total_usage")
    read = parse_time(stats.get("read"))
    if read is None:
        return None
    memory = memory_used(stats)
    used, limit = (None, None) if memory is None else memory
    if limit is not None and host_memory > 0 and limit >= host_memory * 0.99:
        limit = None  # the engine reports the host's memory as the limit of a container without one
    online = int(cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1)
    return Sample(
        used=used, limit=limit, cpu_ns=float(usage) if usage is not None else None, wall_ns=int(read * 1e9),
        cpu_limit=cpu_limit, online=online,
        throttled=int((cpu.get("throttling_data") or {}).get("throttled_periods") or 0), source="api",
    )


def cores_used(before: Sample, after: Sample) -> float | None:
    """Cores busy between two samples (1.0 = one full core)."""
    if before.source != after.source or before.cpu_ns is None or after.cpu_ns is None:
        return None
    d_cpu = after.cpu_ns - before.cpu_ns
    d_wall = after.wall_ns - before.wall_ns
    if d_wall <= 0 or d_cpu < 0:
        return None  # no time passed, or the container restarted (its counter went back)
    return d_cpu / d_wall


# --------------------------------------------------------------------------- sampling


class Sampler:
    """Samples running containers, from cgroup files when possible, else from the API.

    Keeps, per container, where its cgroup is (found once through its PID)
    and, for the API path, its CPU limit; both are forgotten when the
    container is no longer listed.
    """

    def __init__(self, cgroup: CgroupFs | None = None) -> None:
        self._cgroup = cgroup if cgroup is not None else CgroupFs()
        self._dirs: dict[str, CgroupDirs | None] = {}
        self._limits: dict[str, tuple[float | None, float]] = {}

    def sample(self, engine: DockerEngine, ids: Sequence[str]) -> dict[str, Sample]:
        samples: dict[str, Sample] = {}
        remote: list[str] = []
        local = engine.url.startswith("unix://")
        for cid in ids:
            got = self._from_cgroup(engine, cid) if local else None
            if got is not None:
                samples[cid] = got
            else:
                remote.append(cid)
        samples.update(self._from_api(engine, remote))
        keep = set(ids)
        self._dirs = {cid: d for cid, d in self._dirs.items() if cid in keep}
        self._limits = {cid: v for cid, v in self._limits.items() if cid in keep}
        return samples

    def _from_cgroup(self, engine: DockerEngine, cid: str) -> Sample | None:
        for attempt in (0, 1):
            if cid not in self._dirs or attempt:
                info = engine.inspect(cid)
                pid = int(((info or {}).get("State") or {}).get("Pid") or 0)
                self._dirs[cid] = self._cgroup.locate(pid, cid)
            dirs = self._dirs[cid]
            if dirs is None:
                return None
            try:
                raw = self._cgroup.sample(dirs)
            except (OSError, ValueError):
                continue  # moved or gone: look it up again once
            return Sample(
                used=raw.used, limit=raw.limit, cpu_ns=float(raw.cpu_ns), wall_ns=raw.at_ns,
                cpu_limit=raw.cpu_limit, online=os.cpu_count() or 1, throttled=raw.throttled, source="cgroup",
            )
        return None

    def _from_api(self, engine: DockerEngine, ids: Sequence[str]) -> dict[str, Sample]:
        if not ids:
            return {}
        with ThreadPoolExecutor(max_workers=min(STATS_WORKERS, len(ids)), thread_name_prefix="docker-stats") as pool:
            stats = list(pool.map(engine.stats, ids))
        host_memory = engine.mem_total()
        samples = {}
        for cid, raw in zip(ids, stats, strict=True):
            if raw is None:
                continue
            sample = api_sample(raw, self._cpu_limit(engine, cid), host_memory)
            if sample is not None:
                samples[cid] = sample
        return samples

    def _cpu_limit(self, engine: DockerEngine, cid: str) -> float | None:
        now = time.monotonic()
        known = self._limits.get(cid)
        if known is not None and now - known[1] < LIMITS_TTL:
            return known[0]
        info = engine.inspect(cid)
        cores = cpu_allowance((info or {}).get("HostConfig") or {})
        self._limits[cid] = (cores, now)
        return cores


def _running(engine: DockerEngine, selection: Selection) -> list[tuple[str, Mapping[str, Any]]]:
    return selected(engine, selection, {"status": ["running"]})


# --------------------------------------------------------------------------- probes


class MemoryProbe:
    """Percent of its memory limit each running container uses (what the OOM killer will act on).

    A container without a limit is skipped unless ``include_unlimited``
    (then its share of the host's memory, which ``host.memory`` covers better).
    """

    def __init__(self, params: MemoryParams, target: Any, clock: Clock, sampler: Sampler | None = None) -> None:
        self._params = params
        self._engine = target
        self._sampler = sampler or Sampler()

    def measure(self) -> list[Reading]:
        engine = engine_of(self._engine)
        rows = _running(engine, self._params)
        samples = self._sampler.sample(engine, [str(row.get("Id")) for _, row in rows])
        host_memory = engine.mem_total() if self._params.include_unlimited and rows else 0.0
        readings = []
        for name, row in rows:
            sample = samples.get(str(row.get("Id")))
            if sample is None or sample.used is None:
                continue
            limit = sample.limit
            if limit is None:
                if not self._params.include_unlimited or host_memory <= 0:
                    continue
                limit = host_memory
            details = {
                **base_details(row), "used_bytes": sample.used, "limit_bytes": limit,
                "unlimited": sample.limit is None, "source": sample.source,
            }
            readings.append(Reading(name, min(sample.used / limit * 100.0, 100.0), details))
        return readings


class CpuProbe:
    """Percent of its CPU allowance (``--cpus``, quota, cpuset, else all CPUs) each running container used.

    Measured between this run and the previous one, like ``host.cpu``: a
    container seen for the first time is sampled and reported from the next
    run on (so a single ``--once`` run reports nothing).
    """

    def __init__(self, params: CpuParams, target: Any, clock: Clock, sampler: Sampler | None = None) -> None:
        self._params = params
        self._engine = target
        self._sampler = sampler or Sampler()
        self._last: dict[str, Sample] = {}

    def measure(self) -> list[Reading]:
        engine = engine_of(self._engine)
        rows = _running(engine, self._params)
        samples = self._sampler.sample(engine, [str(row.get("Id")) for _, row in rows])
        readings: list[Reading] = []
        for name, row in rows:
            cid = str(row.get("Id"))
            sample, before = samples.get(cid), self._last.get(cid)
            if sample is None or before is None:
                continue
            cores = cores_used(before, sample)
            if cores is None:
                continue
            allowed = min(sample.cpu_limit or float(sample.online), float(sample.online))
            details = {
                **base_details(row),
                "cores_used": round(cores, 4),
                "cores_allowed": allowed,
                "throttled_periods": max(sample.throttled - before.throttled, 0),
                "source": sample.source,
            }
            readings.append(Reading(name, min(cores / allowed * 100.0, 100.0), details))
        self._last = samples
        return readings
