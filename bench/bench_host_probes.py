"""Wall time of one full host-probe cycle: every host probe measured once.

The daemon runs these every few seconds on the host it protects, so their
cost is overhead the operator pays forever. Target: 5 ms per cycle on a
2-core machine. file_age and dir_size walk operator-chosen trees, so here
they point at a small temporary directory; their cost grows with the tree.

Run: python bench/bench_host_probes.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from watchdogd.families.host.probes import PROBES

CYCLES = 200
WARMUP = 10
TARGET_MS = 5.0


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


def main() -> None:
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
    if total_ms > TARGET_MS:
        raise SystemExit(f"over target: {total_ms:.2f} ms > {TARGET_MS:g} ms")


if __name__ == "__main__":
    main()
