"""The probe pool: results and errors reach the waiter, workers are bounded, a hung probe never holds the exit."""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import wait

import pytest

from watchdogd.probepool import ProbePool


def test_results_and_exceptions_reach_the_waiter() -> None:
    pool = ProbePool(2)
    assert pool.submit(lambda: 42).result(timeout=5) == 42

    def fail() -> int:
        raise ValueError("no answer")

    with pytest.raises(ValueError, match="no answer"):
        pool.submit(fail).result(timeout=5)
    pool.shutdown()


def test_at_most_the_configured_workers_run_at_once() -> None:
    pool = ProbePool(2)
    release = threading.Event()
    running: list[int] = []
    lock = threading.Lock()

    def hold(n: int) -> int:
        with lock:
            running.append(n)
        release.wait(10)
        return n

    futures = [pool.submit(lambda n=n: hold(n)) for n in range(4)]
    done, _ = wait(futures, timeout=0.5)
    assert not done and len(running) == 2
    release.set()
    assert sorted(f.result(timeout=5) for f in futures) == [0, 1, 2, 3]
    pool.shutdown()


def test_a_hung_probe_does_not_keep_the_process_alive() -> None:
    """With the standard pool, the interpreter joins the stuck worker at exit and never ends."""
    code = (
        "import threading\n"
        "from watchdogd.probepool import ProbePool\n"
        "pool = ProbePool(2)\n"
        "stuck = pool.submit(threading.Event().wait)\n"
        "print('abandoned' if not stuck.done() else 'done')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "abandoned"
