"""kill -9 the real daemon 500 times at random points; print what repeated and what was lost (should be 0).

The same campaign as tests/integration/faults/test_kill9.py (50 kills in CI),
at benchmark size, plus what the state identity file costs each audit write
(the in-place record that lets a start notice a reset database).

    python bench/bench_kill9.py [--rounds 500] [--seed N] [--keep]

Everything happens in a temporary directory it creates and removes (``--keep``
leaves it, with the daemon log, for a post-mortem). Exit status: 0 nothing
repeated or lost, 1 otherwise.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.faults.kill9_support import run_campaign  # noqa: E402
from watchdogd.engine.state import StateStore  # noqa: E402
from watchdogd.engine.statedir import StateLock  # noqa: E402
from watchdogd.model import AuditEntry, Decision  # noqa: E402

WRITES = 2000


def audit_write_cost(directory: Path) -> dict[bool, list[float]]:
    """Seconds per ``add_audit`` of one row, with and without the identity file, interleaved.

    The lock holder keeps the identity file, a plain opener does not; the
    two stores take turns so the machine's noise falls on both alike.
    """
    with_lock, without = directory / "identity", directory / "plain"
    with_lock.mkdir()
    lock = StateLock(with_lock)
    stores = {True: StateStore(with_lock / "state.db", time.time), False: StateStore(without / "state.db", time.time)}
    try:
        entry = AuditEntry(time.time(), "r", "s", "exec", Decision.RAN, "started")
        samples: dict[bool, list[float]] = {True: [], False: []}
        for i in range(2 * WRITES):
            kept = i % 2 == 0
            began = time.perf_counter()
            stores[kept].add_audit([entry])
            samples[kept].append(time.perf_counter() - began)
        return samples
    finally:
        for store in stores.values():
            store.close()
        lock.release()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--seed", type=int, default=random.randrange(1 << 30))
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="wd-kill9-"))
    figures = None
    try:
        costs = audit_write_cost(workdir)
        campaign = workdir / "campaign"
        campaign.mkdir()
        figures = run_campaign(campaign, args.rounds, args.seed)
    finally:
        if args.keep or figures is None or figures.problems:  # a failure keeps its evidence
            print(f"kept {workdir} (the daemon's log is campaign/daemon.log)")
        else:
            shutil.rmtree(workdir)
    print(f"kill -9 fault suite: {args.rounds} rounds, seed {args.seed}")
    print(figures.table())
    plain, kept = (statistics.median(costs[flag]) * 1e6 for flag in (False, True))
    print(f"\naudit write (one row, synchronous=FULL), median of {WRITES}:")
    print(f"  without the identity file  {plain:8.1f} us")
    print(f"  with the identity file     {kept:8.1f} us  (+{kept - plain:.1f} us: one pwrite in place, no fsync)")
    for problem in figures.problems:
        print(f"PROBLEM: {problem}")
    return 1 if figures.problems else 0


if __name__ == "__main__":
    sys.exit(main())
