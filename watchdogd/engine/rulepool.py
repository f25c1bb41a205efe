"""Threads for rule runs: a few, and more only while a run is stuck behind a slow one.

A bucket's tick hands out hundreds of rule runs at once. A standard thread
pool starts a thread for every run that finds no idle one, so each tick grew
it to its maximum (64 threads, and as many probe threads behind them) even
though the runs were cheap and two threads would have done: more threads
cost memory (stacks, malloc arenas) and CPU (hand-offs), most of all on a
busy host, where cheap runs take longer and the pool grew further.

Here ``min_threads`` workers take runs in order. A run waiting while every
worker has been on its current run for longer than ``spawn_after`` and is
*blocked* (sleeping in the kernel: a probe waiting on the network, an
action) gets a new worker, up to ``max_threads``: a slow or hung run never
delays the others by more than ``spawn_after``, while a burst of cheap runs
is worked off by the few threads there are. A worker that is runnable but
waiting for a CPU (a busy host) gets no helper: another thread would only
wait for the same CPU, and that is how the old pool grew on busy hosts. A
supervisor thread makes that check only while runs wait. Workers above
``min_threads`` retire after ``idle_timeout`` idle.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

Job = Callable[[], object]

MIN_THREADS = 2
SPAWN_AFTER = 0.025
"""Seconds every worker must have been on one run before a waiting run gets a thread of its own."""
IDLE_TIMEOUT = 60.0


def thread_runnable(tid: int) -> bool:
    """Whether the thread is running or waiting for a CPU (state R), not blocked; unknown counts as blocked."""
    try:
        with open(f"/proc/self/task/{tid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split(maxsplit=1)[0] == b"R"
    except (OSError, IndexError):
        return False


class RulePool:
    def __init__(
        self,
        *,
        max_threads: int,
        min_threads: int = MIN_THREADS,
        spawn_after: float = SPAWN_AFTER,
        idle_timeout: float = IDLE_TIMEOUT,
        name: str = "rule",
        monotonic: Callable[[], float] = time.monotonic,
        runnable: Callable[[int], bool] = thread_runnable,
    ) -> None:
        self._max = max(max_threads, min_threads, 1)
        self._min = max(min_threads, 1)
        self._spawn_after = spawn_after
        self._idle_timeout = idle_timeout
        self._name = name
        self._monotonic = monotonic
        self._runnable = runnable
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # workers wait here for runs
        self._backlog = threading.Condition(lock)  # the supervisor waits here for runs left waiting
        self._exited = threading.Condition(lock)  # shutdown waits here for workers to end
        self._jobs: deque[Job] = deque()
        self._busy: dict[int, tuple[float, int]] = {}  # worker serial -> (when it took its run, its tid)
        self._threads = 0
        self._idle = 0
        self._started = 0
        self._closed = False
        self._supervisor: threading.Thread | None = None

    def submit(self, job: Job) -> None:
        """Queue a run; raises RuntimeError once shut down."""
        with self._cond:
            if self._closed:
                raise RuntimeError("rule pool is shut down")
            self._jobs.append(job)
            if self._idle:
                self._cond.notify()
            elif self._threads < self._min:
                self._spawn()
            # Also when a worker looked idle: it may be woken for this run after taking another, slow one.
            if self._supervisor is None:
                self._supervisor = threading.Thread(target=self._supervise, name=f"{self._name}-pool", daemon=True)
                self._supervisor.start()
            else:
                self._backlog.notify()

    @property
    def threads(self) -> int:
        with self._cond:
            return self._threads

    def shutdown(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Drop runs not yet started; with ``wait``, wait for the runs in progress (``timeout`` bounds it)."""
        with self._cond:
            self._closed = True
            self._jobs.clear()
            self._cond.notify_all()
            self._backlog.notify_all()
            if wait:
                deadline = None if timeout is None else self._monotonic() + timeout
                while self._threads:
                    left = None if deadline is None else deadline - self._monotonic()
                    if left is not None and left <= 0:
                        break
                    self._exited.wait(left)

    # -- under the lock --------------------------------------------------------

    def _spawn(self) -> None:
        self._threads += 1
        self._started += 1
        serial = self._started
        threading.Thread(target=self._work, args=(serial,), name=f"{self._name}-{serial}", daemon=True).start()

    def _stalled(self, now: float) -> bool:
        """Runs wait and no worker will be free soon: each is blocked on one run for ``spawn_after``."""
        return (
            bool(self._jobs)
            and not self._idle
            and self._threads < self._max
            and all(now - since >= self._spawn_after for since, _ in self._busy.values())
            and not any(self._runnable(tid) for _, tid in self._busy.values())
        )

    # -- threads ---------------------------------------------------------------

    def _work(self, serial: int) -> None:
        with self._cond:
            while True:
                while not self._jobs and not self._closed:
                    self._idle += 1
                    woken = self._cond.wait(self._idle_timeout)
                    self._idle -= 1
                    if not woken and not self._jobs and self._threads > self._min:
                        self._retire()
                        return
                if self._closed:
                    self._retire()
                    return
                job = self._jobs.popleft()
                self._busy[serial] = (self._monotonic(), threading.get_native_id())
                self._cond.release()
                try:
                    job()
                except Exception:  # the caller's job logs its own failures; a worker must never die of one
                    log.exception("rule pool job crashed")
                finally:
                    del job
                    self._cond.acquire()
                    del self._busy[serial]

    def _retire(self) -> None:
        self._threads -= 1
        self._exited.notify_all()

    def _supervise(self) -> None:
        """While runs wait, look every ``spawn_after`` whether all workers are stuck on slow runs."""
        with self._cond:
            while not self._closed:
                if not self._jobs:
                    self._backlog.wait()
                    continue
                self._backlog.wait(self._spawn_after)
                if self._stalled(self._monotonic()):
                    self._spawn()
