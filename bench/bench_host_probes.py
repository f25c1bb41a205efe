"""Wall time of one full host-probe cycle: every host probe measured once.

The daemon runs these every few seconds on the host it protects, so their
cost is overhead the operator pays forever. Target: 5 ms per cycle on a
2-core machine. file_age and dir_size walk operator-chosen trees, so here
they point at a small temporary directory; their cost grows with the tree.

Then the CPU of one ``host.disk`` run, built as the engine builds it (its
``ProbeSpec.shared`` mount table), in two cases: the mount table unchanged
(the usual case: since issue 17 a zero-timeout poll of the open
``/proc/self/mountinfo``, no read) and changed before every run (a tmpfs
mounted or unmounted in a private mount namespace: read and parse). The
second case needs root and unshare(1); the script re-runs itself there.
Run it with ``PYTHONPATH=<old checkout>`` to see the code before.

Run: python bench/bench_host_probes.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from watchdogd.families.host.probes import PROBES

CYCLES = 200
WARMUP = 10
TARGET_MS = 5.0
DISK_RUNS = 200


def small_tree(root: Path) -> None:
    """A backup folder's worth: 20 dumps plus a nested folder of 30 small files."""
    for i in range(20):
        (root / f"db-{i:02d}.sql.gz").write_bytes(b"x" * 1024)
    (root / "nested").mkdir()
    for i in range(30):
        (root / "nested" / f"f{i}").write_bytes(b"y" * 100)


def build(tmp: Path) -> dict[str, Any]:
    params: dict[str, dict[str, Any]] = {
        "host.file_age": {"path": str(tmp / "db-*.sql.gz")},
        "host.dir_size": {"path": str(tmp)},
    }
    probes = {}
    for name, spec in PROBES.items():
        probes[name] = spec.factory(spec.params(**params.get(name, {})), None, time.time)
    return probes


def disk_probe() -> Any:
    spec = PROBES["host.disk"]
    make_shared = getattr(spec, "shared", None)  # absent before issue 17
    shared = make_shared(time.time) if make_shared is not None else None
    return spec.factory(spec.params(), shared, time.time)


def disk_cpu(change: str | None) -> list[float]:
    """CPU microseconds of each ``host.disk`` run; with ``change`` (a directory), a mount or unmount before each."""
    probe = disk_probe()
    probe.measure()
    costs = []
    for run in range(DISK_RUNS):
        if change is not None:
            argv = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", change] if run % 2 == 0 else ["umount", change]
            subprocess.run(argv, check=True)
        started = time.thread_time()
        probe.measure()
        costs.append((time.thread_time() - started) * 1e6)
    return costs


def print_disk(label: str, costs: list[float]) -> None:
    print(f"  host.disk, {label:<38} cpu median {statistics.median(costs):6.1f} us  p90"
          f" {statistics.quantiles(costs, n=10)[-1]:6.1f} us  ({len(costs)} runs)")


def disk_section() -> None:
    print("host.disk per run, CPU:")
    print_disk("mount table unchanged", disk_cpu(None))
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        print("  host.disk, mount table changed before every run: skipped (needs root and unshare)")
        return
    # A private namespace: the host's mounts are not touched, and its changes do not reach us.
    child = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, __file__, "--disk-changing"],
        capture_output=True, text=True, check=False, timeout=300,
    )
    print(child.stdout.rstrip() if child.returncode == 0 else f"  changed-table case failed: {child.stderr[-300:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--disk-changing", action="store_true", help=argparse.SUPPRESS)
    if parser.parse_args().disk_changing:
        with tempfile.TemporaryDirectory() as point:
            print_disk("mount table changed before every run", disk_cpu(point))
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        small_tree(tmp)
        probes = build(tmp)
        per_probe = dict.fromkeys(probes, 0.0)
        for _ in range(WARMUP):
            for probe in probes.values():
                probe.measure()
        started = time.perf_counter()
        for _ in range(CYCLES):
            for name, probe in probes.items():
                t0 = time.perf_counter()
                probe.measure()
                per_probe[name] += time.perf_counter() - t0
        total_ms = (time.perf_counter() - started) / CYCLES * 1000

    print(f"host probe cycle (all host probes): {total_ms:.2f} ms per cycle (target <= {TARGET_MS:g} ms)")
    print(f"  {CYCLES} cycles, {os.cpu_count()} logical cores")
    for name, seconds in sorted(per_probe.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<16} {seconds / CYCLES * 1000:7.3f} ms")
    disk_section()
    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if total_ms > TARGET_MS:
        raise SystemExit(f"over target: {total_ms:.2f} ms > {TARGET_MS:g} ms")


if __name__ == "__main__":
    main()
