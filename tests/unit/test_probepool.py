"""The probe pool: results reach the waiter, stuck probes never make others wait, and never hold the exit."""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import Future

import pytest

from tests.helpers import wait_until
from watchdogd.engine.probepool import ProbePool


def test_results_and_exceptions_reach_the_waiter() -> None:
    pool = ProbePool()
    assert pool.submit(lambda: 42).result(timeout=5) == 42

    def fail() -> int:
        raise ValueError("no answer")

    with pytest.raises(ValueError, match="no answer"):
        pool.submit(fail).result(timeout=5)
    pool.shutdown()


def test_any_number_of_stuck_probes_leave_the_next_probe_a_thread() -> None:
    """With the old fixed pool of 8, the ninth stuck probe made every later probe wait behind them."""
    pool = ProbePool()
    release = threading.Event()
    stuck = [pool.submit(release.wait) for _ in range(20)]
    for future in stuck:
        assert pool.abandon(future)
    assert pool.stuck == 20
    assert pool.submit(lambda: "answered").result(timeout=5) == "answered"
    release.set()
    wait_until(lambda: pool.stuck == 0, 5, "stuck probes counted as returned")
    assert pool.abandoned_total == 20
    pool.shutdown()


def test_an_abandoned_probe_that_never_started_is_cancelled_not_counted() -> None:
    pool = ProbePool(max_threads=1)
    release = threading.Event()
    running = pool.submit(release.wait)
    queued: Future[int] = pool.submit(lambda: 1)
    assert not pool.abandon(queued)
    assert queued.cancelled()
    assert pool.abandon(running)
    assert pool.stuck == 1
    release.set()
    wait_until(lambda: pool.stuck == 0, 5, "the stuck probe returned")
    pool.shutdown()


def test_idle_workers_retire_and_reused_ones_are_not_multiplied() -> None:
    pool = ProbePool(idle_timeout=0.2)
    for _ in range(50):
        pool.submit(lambda: None).result(timeout=5)
    assert pool.threads == 1  # one after another: one worker reused
    gate = threading.Barrier(5)
    futures = [pool.submit(lambda: gate.wait(5)) for _ in range(5)]
    for future in futures:
        future.result(timeout=5)
    assert pool.threads == 5
    wait_until(lambda: pool.threads == 0, 10, "idle workers retired")
    assert pool.submit(lambda: "again").result(timeout=5) == "again"
    pool.shutdown()


def test_a_hung_probe_does_not_keep_the_process_alive() -> None:
    """With the standard pool, the interpreter joins the stuck worker at exit and never ends."""
    code = (
        "import threading\n"
        "from watchdogd.engine.probepool import ProbePool\n"
        "pool = ProbePool()\n"
        "stuck = pool.submit(threading.Event().wait)\n"
        "print('abandoned' if pool.abandon(stuck) else 'done')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "abandoned"
