"""Benchmark: the fleet budget under a storm of simulated hosts, on etcd and on Redis (issue 16, Must 4).

    PYTHONPATH=$PWD python3 bench/bench_fleet.py --storm    [--hosts 1000] [--duration 300] [--kinds etcd,redis]
    PYTHONPATH=$PWD python3 bench/bench_fleet.py --latency  [--sizes 1,100,1000] [--duration 60] [--kinds ...]
    PYTHONPATH=$PWD python3 bench/bench_fleet.py --quick    (a smoke run of both, small and short)

``--storm``: ``--hosts`` simulated hosts (threads in ``--processes`` worker processes, each host its own
real coordinator and lease) storm one group with max_hosts=2 and a run window (``--max-runs`` per
``--per``) for ``--duration`` seconds. etcd (a 3-member cluster of its own) is hurt, spread over the
storm: a follower killed and restarted, the leader killed and restarted, the leader frozen (SIGSTOP)
past the election timeout, two members down (no quorum); Redis (a server of its own, append-only file
fsynced always) is restarted and frozen. 2 % of grants crash mid-action (keeper stopped, nothing
released) and 5 % of acts last 3-8 s (``--long-share``), past the 3 s TTL, so a fault can take the slot
from under them and ``holding`` must turn false in time. Prints the checks of
tests/support/fleet_storm.py (at most max_hosts acting, slot order by fencing token, slots outliving
their holder, acquire latency and deadlines, the run window) and the per-phase table; exit status 1
when a check fails.

``--latency``: the same hosts without faults and without a run window, at each of ``--sizes`` hosts for
``--duration`` s, per kind: acquire latency p50/p99 over every attempt (granted or denied) and over
grants. Target: p99 < 200 ms on loopback. The simulated hosts share 4 processes (hundreds of threads
behind one GIL each), which adds latency no real host has; so every storm also runs a *probe* host alone
in a fifth process, firing every ~0.2 s: its figures are what one real host sees during the storm.
With 1 host a rule fires every 5 s, too few samples for a p99, so the single host cools down only
0.1-0.3 s between runs (``--solo-cooldown``).

Also prints the CPU each run used (the host workers as they report it, the observer from getrusage,
the coordinator's server processes from psutil and, once killed and reaped, getrusage) and how busy
the whole machine was (/proc/stat): the hosts, the coordinator and the observer share the machine, so
a saturated CPU shows up as latency. Only what it creates is touched: its own etcd cluster and
redis-server on free ports, in a temp dir removed at exit (``--keep DIR`` keeps the runs instead).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.redis.server import RedisServer
from tests.support.etcd_cluster import EtcdCluster, running_etcd_cluster
from tests.support.fleet_storm import (
    ETCD_LONG_FAULTS,
    REDIS_DURABLE,
    REDIS_FAULTS,
    Fault,
    HostProfile,
    StormReport,
    StormRun,
    StormSpec,
    analyse,
    failures,
    format_report,
    run_storm,
    spread,
)

TARGET_P99 = 0.200


# --- what runs where ----------------------------------------------------------------------------------------------
@dataclass
class Backend:
    """One coordinator of the benchmark's own, and how to hurt it."""

    kind: str
    target: tuple[str, ...]
    faulted: Any
    healthy: Callable[[], None] | None
    cluster: EtcdCluster | None
    faults: tuple[str, ...]
    pids: Callable[[], list[int]]
    """The coordinator's server processes now (for the CPU figures)."""


@contextlib.contextmanager
def backend(kind: str, workdir: Path) -> Iterator[Backend]:
    if kind == "etcd":
        with running_etcd_cluster(workdir / "etcd") as cluster:
            yield Backend("etcd", tuple(cluster.endpoints), cluster, lambda: cluster.wait_healthy(30.0), cluster,
                          ETCD_LONG_FAULTS, lambda: [m.proc.pid for m in cluster.members if m.proc is not None])
    else:
        with RedisServer(workdir / "redis", extra=REDIS_DURABLE) as server:
            yield Backend("redis", (server.url,), server, None, None, REDIS_FAULTS,
                          lambda: [server.proc.pid] if server.proc is not None else [])


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all cores so far (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _rusage_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _server_seconds(pids: Sequence[int]) -> dict[int, float]:
    seconds: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            seconds[pid] = times.user + times.system + times.children_user + times.children_system
    return seconds


@dataclass
class Cpu:
    """CPU used during one run: this benchmark's own processes, and the whole machine's share."""

    wall: float
    workers: float
    """The worker processes (the simulated hosts), as they reported it."""
    parent: float
    servers: float
    """The etcd members / redis-server: live ones from psutil, killed ones from getrusage once reaped."""
    machine: float

    def __str__(self) -> str:
        own = self.workers + self.parent + self.servers
        return (f"own CPU {own / self.wall:.2f} cores (host workers {self.workers / self.wall:.2f}, coordinator "
                f"{self.servers / self.wall:.2f}, observer {self.parent / self.wall:.2f}); machine {self.machine:.0%} "
                f"busy of {os.cpu_count()} cores")


class CpuMeter:
    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids = pids
        self.started = time.monotonic()
        self.machine = machine_jiffies()
        self.children = _rusage_seconds(resource.RUSAGE_CHILDREN)
        self.parent = _rusage_seconds(resource.RUSAGE_SELF)
        self.servers = _server_seconds(pids())

    def stop(self, workers: float) -> Cpu:
        """``workers``: the CPU seconds the worker processes reported; the other reaped children are servers
        killed by a fault."""
        servers = _server_seconds(self.pids())
        reaped = _rusage_seconds(resource.RUSAGE_CHILDREN) - self.children
        busy, total = machine_jiffies()
        return Cpu(
            time.monotonic() - self.started,
            workers,
            _rusage_seconds(resource.RUSAGE_SELF) - self.parent,
            max(0.0, reaped - workers) + sum(seconds - self.servers.get(pid, 0.0) for pid, seconds in servers.items()),
            (busy - self.machine[0]) / max(1, total - self.machine[1]),
        )


def storm(back: Backend, spec: StormSpec, workdir: Path, faults: Sequence[Fault]) -> tuple[StormRun, Cpu]:
    meter = CpuMeter(back.pids)
    run = run_storm(spec, workdir, faults=faults, target=back.faulted, healthy=back.healthy, cluster=back.cluster)
    return run, meter.stop(run.stats.get("cpu_ms", 0) / 1000)


# --- modes --------------------------------------------------------------------------------------------------------
def storm_mode(args: argparse.Namespace, workdir: Path) -> int:
    failed = 0
    for kind in args.kinds:
        with backend(kind, workdir / f"{kind}-storm") as back:
            spec = StormSpec(
                kind, back.target, args.hosts, args.duration, processes=args.processes, max_hosts=2,
                max_runs=args.max_runs, per=args.per, lease_ttl=args.ttl, timeout=args.timeout,
                profile=HostProfile(long_share=args.long_share), probe=True,
            )
            faults = spread(back.faults, args.duration, down=args.down)
            started = time.monotonic()
            run, cpu = storm(back, spec, workdir / f"{kind}-storm" / "run", faults)
            report = analyse(run)
            problems = failures(report)
            print(format_report(report))
            print(f"wall {time.monotonic() - started:.0f} s; {cpu}; elections seen {len(run.elections)}")
            print("checks: " + ("PASS" if not problems else "FAIL\n  " + "\n  ".join(problems)), flush=True)
            print()
            failed += bool(problems)
    return 1 if failed else 0


def latency_mode(args: argparse.Namespace, workdir: Path) -> int:
    rows: list[tuple[str, int, StormReport, Cpu]] = []
    for kind in args.kinds:
        with backend(kind, workdir / f"{kind}-latency") as back:
            for hosts in args.sizes:
                profile = HostProfile(crash_share=0.0)
                if hosts == 1:
                    profile = replace(profile, cooldown_min=args.solo_cooldown[0], cooldown_max=args.solo_cooldown[1],
                                      first_offset=0.0)
                spec = StormSpec(kind, back.target, hosts, args.duration, processes=min(args.processes, hosts),
                                 max_hosts=2, lease_ttl=args.ttl, timeout=args.timeout, profile=profile,
                                 probe=hosts > 1)
                run, cpu = storm(back, spec, workdir / f"{kind}-latency" / f"h{hosts}", ())
                report = analyse(run)
                rows.append((kind, hosts, report, cpu))
                print(_latency_row(kind, hosts, report, cpu), f"({cpu})", flush=True)
    print()
    print(latency_table(rows))
    bad = [r for r in rows if failures(r[2])]
    for kind, hosts, report, _ in bad:
        print(f"{kind} {hosts} hosts: checks FAIL: {failures(report)}")
    return 1 if bad else 0


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _met(seconds: float) -> str:
    return f"{_ms(seconds)} ({'met' if seconds < TARGET_P99 else 'MISSED'})"


def _latency_row(kind: str, hosts: int, report: StormReport, cpu: Cpu) -> str:
    lat, probe = report.latency, report.probe
    probe_cells = f"{_ms(probe.p50)} | {_met(probe.p99)} | {probe.attempts}" if probe else "- | - | -"
    return (f"| {kind} | {hosts} | {lat.attempts} | {lat.outcomes.get('granted', 0)} | {_ms(lat.p50)} | "
            f"{_met(lat.p99)} | {_ms(lat.max)} | {_ms(lat.granted_p50)} | {_ms(lat.granted_p99)} | {probe_cells} | "
            f"{(cpu.workers + cpu.parent) / cpu.wall:.2f} | {cpu.servers / cpu.wall:.2f} | {cpu.machine:.0%} |")


def latency_table(rows: Sequence[tuple[str, int, StormReport, Cpu]]) -> str:
    head = ("| coordinator | hosts | attempts | granted | p50 | p99 (target < 200 ms) | max | granted p50 "
            "| granted p99 | probe p50 | probe p99 | probe attempts | CPU hosts+observer (cores) "
            "| CPU coordinator (cores) | machine busy |")
    return "\n".join([head, "|" + "---|" * (head.count("|") - 1), *(_latency_row(*row) for row in rows)])


# --- entry --------------------------------------------------------------------------------------------------------
def _csv_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _csv(text: str) -> list[str]:
    kinds = [x for x in text.split(",") if x]
    unknown = set(kinds) - {"etcd", "redis"}
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown coordinator kind(s): {', '.join(sorted(unknown))}")
    return kinds


def _pair(text: str) -> tuple[float, float]:
    low, high = (float(x) for x in text.split(","))
    return low, high


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--storm", action="store_true", help="the storm with faults (default)")
    mode.add_argument("--latency", action="store_true", help="acquire latency at --sizes hosts, no faults")
    mode.add_argument("--quick", action="store_true", help="a small, short run of both modes")
    parser.add_argument("--kinds", type=_csv, default=["etcd", "redis"], help="etcd,redis (default both)")
    parser.add_argument("--hosts", type=int, default=1000, help="storm: simulated hosts (default 1000)")
    parser.add_argument("--sizes", type=_csv_ints, default=[1, 100, 1000], help="latency: host counts")
    parser.add_argument("--duration", type=float, help="seconds per run (storm 300, latency 60)")
    parser.add_argument("--processes", type=int, default=4, help="worker processes (default 4)")
    parser.add_argument("--ttl", type=float, default=3.0, help="lease TTL, s (default 3)")
    parser.add_argument("--timeout", type=float, default=1.0, help="coordinator per-call timeout, s (default 1)")
    parser.add_argument("--max-runs", type=int, default=20, help="storm: run window size (default 20)")
    parser.add_argument("--per", type=float, default=10.0, help="storm: run window length, s (default 10)")
    parser.add_argument("--long-share", type=float, default=0.05,
                        help="storm: share of acts lasting 3-8 s, past the TTL, that a fault may cut (default 0.05)")
    parser.add_argument("--down", type=float, default=5.0, help="storm: seconds each fault lasts (default 5)")
    parser.add_argument("--solo-cooldown", type=_pair, default=(0.1, 0.3), help="latency, 1 host: cooldown lo,hi")
    parser.add_argument("--keep", type=Path, help="keep the runs' events and logs in this directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.hosts, args.sizes = 100, [1, 50]
    if args.duration is None:
        args.duration = 30.0 if args.quick else (60.0 if args.latency else 300.0)
    if args.quick:
        args.down = min(args.down, 3.0)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            workdir = args.keep
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-fleet-")))
        if args.quick:
            status = storm_mode(args, workdir)
            latency_args = argparse.Namespace(**{**vars(args), "duration": 10.0})
            return max(status, latency_mode(latency_args, workdir))
        if args.latency:
            return latency_mode(args, workdir)
        return storm_mode(args, workdir)


if __name__ == "__main__":
    sys.exit(main())
