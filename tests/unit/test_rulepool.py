"""The rule pool: few threads for cheap runs, a new one only when runs wait behind slow ones."""

from __future__ import annotations

import threading

import pytest

from watchdogd.engine.rulepool import RulePool, thread_runnable


def test_a_burst_of_cheap_runs_is_worked_off_by_the_minimum_threads() -> None:
    pool = RulePool(max_threads=64, min_threads=2, spawn_after=10.0)  # no worker is ever busy that long
    done = threading.Semaphore(0)
    for _ in range(2000):
        pool.submit(done.release)
    for _ in range(2000):
        assert done.acquire(timeout=10)
    assert 1 <= pool.threads <= 2  # started on demand, never past the minimum for cheap runs
    pool.shutdown()


def test_runs_waiting_behind_stuck_ones_get_threads_of_their_own() -> None:
    pool = RulePool(max_threads=64, min_threads=2, spawn_after=0.01)
    release = threading.Event()
    stuck = threading.Semaphore(0)

    def hang() -> None:
        stuck.release()
        release.wait(30)

    for _ in range(5):
        pool.submit(hang)
    for _ in range(5):
        assert stuck.acquire(timeout=10)  # all five running at once: three threads beyond the minimum
    ran = threading.Event()
    pool.submit(ran.set)
    assert ran.wait(10)
    assert pool.threads >= 6
    release.set()
    pool.shutdown()
    assert pool.threads == 0


def test_the_pool_never_grows_past_its_maximum() -> None:
    pool = RulePool(max_threads=3, min_threads=1, spawn_after=0.01)
    release = threading.Event()
    started = threading.Semaphore(0)

    def hang() -> None:
        started.release()
        release.wait(30)

    for _ in range(6):
        pool.submit(hang)
    for _ in range(3):
        assert started.acquire(timeout=10)
    assert not started.acquire(timeout=0.2)  # the other three wait: no fourth thread
    assert pool.threads == 3
    release.set()
    for _ in range(3):
        assert started.acquire(timeout=10)
    pool.shutdown()


def test_a_crashing_run_does_not_take_its_worker_with_it() -> None:
    pool = RulePool(max_threads=1, min_threads=1)

    def crash() -> None:
        raise ValueError("boom")

    ran = threading.Event()
    pool.submit(crash)
    pool.submit(ran.set)
    assert ran.wait(10)
    assert pool.threads == 1
    pool.shutdown()


def test_shutdown_drops_waiting_runs_waits_for_running_ones_and_refuses_new_ones() -> None:
    pool = RulePool(max_threads=1, min_threads=1, spawn_after=10.0)
    release, started = threading.Event(), threading.Event()
    finished, dropped = threading.Event(), threading.Event()

    def slow() -> None:
        started.set()
        release.wait(30)
        finished.set()

    pool.submit(slow)
    pool.submit(dropped.set)
    assert started.wait(10)
    threading.Timer(0.1, release.set).start()
    pool.shutdown(wait=True, timeout=10)
    assert finished.is_set() and not dropped.is_set()
    with pytest.raises(RuntimeError):
        pool.submit(dropped.set)


def test_workers_waiting_for_a_cpu_get_no_helpers() -> None:
    """On a busy host cheap runs take long too; a thread more would only queue for the same CPU."""
    pool = RulePool(max_threads=64, min_threads=1, spawn_after=0.01, runnable=lambda tid: True)
    release, started = threading.Event(), threading.Event()

    def hang() -> None:
        started.set()
        release.wait(30)

    pool.submit(hang)
    assert started.wait(10)
    ran = threading.Event()
    pool.submit(ran.set)
    assert not ran.wait(0.3)  # the supervisor looked many times and saw a runnable worker each time
    assert pool.threads == 1
    release.set()
    assert ran.wait(10)
    pool.shutdown()


def test_thread_state_tells_blocked_from_runnable() -> None:
    blocked, inside = threading.Event(), threading.Event()
    tid: list[int] = []

    def wait() -> None:
        tid.append(threading.get_native_id())
        inside.set()
        blocked.wait(30)

    thread = threading.Thread(target=wait)
    thread.start()
    assert inside.wait(10)
    try:
        assert thread_runnable(threading.get_native_id())  # this thread, running now
        # The other thread may not have reached its wait yet: blocked within a few checks.
        assert any(not thread_runnable(tid[0]) for _ in range(10_000))
        assert not thread_runnable(2**22 + 12345)  # no such thread: counted as blocked
    finally:
        blocked.set()
        thread.join()
