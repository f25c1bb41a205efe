"""Benchmark: the Docker probes over 200 busybox containers on the local engine.

Budget (issue 6): ``docker.containers`` over 200 containers in at most 300 ms.
Prints the figures; starts dockerd and builds the image if needed (like the
tests); removes every container it made, even when interrupted.

Issue 17 (one ``docker ps`` per engine per cycle): ``--cycle-rules N`` also
times cycles of N ``docker.containers`` rules on the one engine (each its own
selection): our CPU per cycle, dockerd's (from /proc, its pid file) and how
many listings a cycle sent. The script runs unchanged on older code (no
shared listing: one per rule), so a copy of it under the old tree, run from
there, gives the "before".

    python bench/bench_docker.py [--containers 200] [--runs 20] [--cycle-rules 10] [--cycle-only]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.dockerd import NETWORK_MODE, ensure_busybox_image, ensure_dockerd
from watchdogd.families.docker.cgroup import CgroupFs
from watchdogd.families.docker.probes import ContainersParams, ContainersProbe
from watchdogd.families.docker.resources import CpuParams, CpuProbe, MemoryParams, MemoryProbe, Sampler
from watchdogd.families.docker.target import DockerEngine, DockerTargetParams
from watchdogd.model import Reading

BUDGET_MS = 300.0
LABEL = "watchdogd-bench.run"
CYCLES = 40
DOCKERD_PID = Path("/var/run/docker.pid")


def process_cpu(pid: int) -> float:
    """Seconds of CPU (user + system, children excluded) process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cycle_cost(engine: DockerEngine, prefix: str, run: str, rules: int) -> None:
    """CPU per cycle of ``rules`` container rules on one engine, ours and dockerd's, and listings per cycle."""
    selections: list[dict[str, object]] = [
        {"names": [f"{prefix}-*"]},
        {"names": [f"{prefix}-0*"]},
        {"names": [f"{prefix}-*"], "labels": [f"{LABEL}={run}"]},
        {"names": [f"{prefix}-1*"], "labels": [LABEL]},
        {"names": [f"{prefix}-*"], "exclude_names": [f"{prefix}-00*"]},
    ]
    probes = [ContainersProbe(ContainersParams(**selections[i % len(selections)]), engine, time.time)  # type: ignore[arg-type]
              for i in range(rules)]
    listings = [0]
    containers = engine.containers

    def counting(filters: object, *, all_states: bool = True) -> object:
        listings[0] += 1
        return containers(filters, all_states=all_states)  # type: ignore[arg-type]

    engine.containers = counting  # type: ignore[method-assign]
    for probe in probes:
        probe.measure()  # warm up: inspects of the crashed ones cached per probe
    shared = getattr(engine, "_listing", None)  # a new cycle, without waiting out max_age
    dockerd = int(DOCKERD_PID.read_text()) if DOCKERD_PID.exists() else None
    ours, theirs, walls = [], [], []
    listings[0] = 0
    for _ in range(CYCLES):
        if shared is not None:
            shared.forget()
        cpu, wall = time.process_time(), time.perf_counter()
        engine_cpu = process_cpu(dockerd) if dockerd else 0.0
        for probe in probes:
            probe.measure()
        ours.append((time.process_time() - cpu) * 1000)
        walls.append((time.perf_counter() - wall) * 1000)
        theirs.append(((process_cpu(dockerd) if dockerd else 0.0) - engine_cpu) * 1000)
    engine.containers = containers  # type: ignore[method-assign]
    print(f"cycle of {rules} docker.containers rules on one engine ({CYCLES} cycles): listings/cycle "
          f"{listings[0] / CYCLES:.1f}; watchdogd CPU median {statistics.median(ours):.1f} ms, "
          f"dockerd CPU {statistics.fsum(theirs) / CYCLES:.1f} ms (mean, 10 ms ticks), "
          f"wall median {statistics.median(walls):.1f} ms")


def timed(fn: Callable[[], list[Reading]], runs: int) -> tuple[list[float], list[Reading]]:
    times, readings = [], []
    for _ in range(runs):
        started = time.perf_counter()
        readings = fn()
        times.append((time.perf_counter() - started) * 1000)
    return times, readings


def report(name: str, times: list[float], readings: list[Reading], budget: float | None = None) -> bool:
    ordered = sorted(times)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    verdict = ""
    ok = True
    if budget is not None:
        ok = p95 <= budget
        verdict = f"  budget {budget:.0f} ms: {'OK' if ok else 'OVER'}"
    print(f"{name:<52} readings={len(readings):<4} median={statistics.median(times):7.1f} ms"
          f"  p95={p95:7.1f} ms  max={max(times):7.1f} ms{verdict}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--containers", type=int, default=200)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--cycle-rules", type=int, default=10, help="container rules per cycle (0: skip)")
    parser.add_argument("--cycle-only", action="store_true", help="only the cycle figures")
    args = parser.parse_args()

    url = ensure_dockerd()
    image = ensure_busybox_image()
    api = docker.APIClient(base_url=url, version="auto", timeout=120)
    run = uuid.uuid4().hex[:8]
    prefix = f"bench-{run}"
    ids: list[str] = []

    def make(index: int) -> str:
        # Every fourth one crashes (exit 3), so the probe has real problem containers to inspect.
        command = ["sh", "-c", "exit 3"] if index % 4 == 0 else ["sleep", "100000"]
        created = api.create_container(image, command, name=f"{prefix}-{index:03d}", labels={LABEL: run},
                                       host_config=api.create_host_config(network_mode=NETWORK_MODE))
        api.start(created["Id"])
        return str(created["Id"])

    engine = DockerEngine(DockerTargetParams(url=url))
    ok = True
    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            ids.extend(pool.map(make, range(args.containers)))
        print(f"created {len(ids)} containers ({args.containers // 4} exit 3) in {time.perf_counter() - started:.1f} s"
              f" on dockerd {api.version()['Version']}, {api.info()['NCPU']} CPUs")
        names = [f"{prefix}-*"]
        if args.cycle_rules:
            cycle_cost(engine, prefix, run, args.cycle_rules)
        if args.cycle_only:
            return 0

        healthy_only = ContainersProbe(ContainersParams(names=names, conditions=["unhealthy"]), engine, time.time)
        healthy_only.measure()  # SDK import, client, event replay: once per daemon life
        times, readings = timed(healthy_only.measure, args.runs)
        ok &= report("docker.containers, list only (no suspects)", times, readings, BUDGET_MS)

        crashes = ContainersProbe(ContainersParams(names=names), engine, time.time)
        first = time.perf_counter()
        readings = crashes.measure()
        print(f"{'docker.containers, first run (inspects 50 crashed)':<52} readings={len(readings):<4}"
              f" once={(time.perf_counter() - first) * 1000:7.1f} ms")
        times, readings = timed(crashes.measure, args.runs)
        ok &= report("docker.containers, steady state (inspects cached)", times, readings, BUDGET_MS)
        firing = sum(1 for r in readings if r.value > 0)
        print(f"  {firing} of {len(readings)} readings in trouble (expected {args.containers // 4})")

        memory = MemoryProbe(MemoryParams(names=names, include_unlimited=True), engine, time.time)
        memory.measure()  # finds each container's cgroup once (one inspect each for the PID)
        times, readings = timed(memory.measure, args.runs)
        report("docker.container_memory (cgroup files)", times, readings)
        cpu = CpuProbe(CpuParams(names=names), engine, time.time)
        cpu.measure()
        times, readings = timed(cpu.measure, args.runs)
        report("docker.container_cpu (cgroup files)", times, readings)
        # What an engine on another host gets: the stats endpoint, 32 calls at a time, each waiting for
        # the engine's one-second collector tick.
        with tempfile.TemporaryDirectory() as nowhere:
            remote = MemoryProbe(MemoryParams(names=names, include_unlimited=True), engine, time.time,
                                 Sampler(CgroupFs(Path(nowhere))))
            times, readings = timed(remote.measure, 3)
        report("docker.container_memory (stats API fallback)", times, readings)
    finally:
        engine.close()
        started = time.perf_counter()
        leftovers = [row["Id"] for row in api.containers(all=True, filters={"label": f"{LABEL}={run}"})]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda cid: api.remove_container(cid, force=True), leftovers))
        print(f"removed {len(leftovers)} containers in {time.perf_counter() - started:.1f} s")
        api.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
