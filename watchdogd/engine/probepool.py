"""Worker threads for probe runs, so that a hung probe costs its own rule and nothing else.

A probe stuck in a system call (a server that accepts and never answers past
its client's own timeout, a read on a hung network filesystem) cannot be
cancelled from Python. Two things follow, and this pool is built around them:

* **Isolation.** A fixed pool lets a few stuck probes take every worker and
  blind unrelated rules (9 hung log rules made ``host.load`` go down). Here a
  worker is started whenever a probe is submitted and none is idle, so a
  stuck one never makes another probe wait. The number of threads is bounded
  by the callers: the engine has at most one probe in flight per rule and
  never starts a rule's next probe while the previous one is still stuck.
  Idle workers retire after ``idle_timeout``, so a burst does not leave threads.
* **Accounting.** When the engine stops waiting (the rule's timeout), it calls
  ``abandon``: a probe that had not started is cancelled; one that is running
  is counted as stuck until it returns. ``stuck`` is what /healthz and the
  systemd watchdog look at: the only way to get a stuck thread back is a
  restart, and the daemon asks for one past a configured number.

Workers are daemon threads: at exit, after the state has been saved, a probe
still stuck is abandoned and the kernel releases what it held (the standard
library's pool joins its workers at exit, so one hung probe kept the process
alive after SIGTERM).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")

_Job = tuple[Callable[[], object], Future[object]] | None

MAX_THREADS = 1024
"""A ceiling against runaway callers only; the engine's one-probe-per-rule rule bounds it long before."""


class ProbePool:
    """Threads started on demand, each running one probe at a time; idle ones retire."""

    def __init__(self, *, idle_timeout: float = 60.0, name: str = "probe", max_threads: int = MAX_THREADS) -> None:
        self._idle_timeout = idle_timeout
        self._name = name
        self._max = max_threads
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._started = 0
        self._idle = 0  # workers waiting for a job and not yet promised one
        self._stuck: set[object] = set()  # futures of stuck probes
        self._abandoned_total = 0
        self._closed = False

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("probe pool is shut down")
            self._jobs.put((fn, future))  # type: ignore[arg-type]  # Future is invariant; the worker sets a T
            if self._idle > 0:
                self._idle -= 1  # this job will wake one idle worker
            elif self._threads < self._max:
                self._threads += 1
                self._started += 1
                threading.Thread(target=self._work, name=f"{self._name}-{self._started}", daemon=True).start()
        return future

    def abandon(self, future: Future[T]) -> bool:
        """The caller stopped waiting: cancel the probe if it has not started, else count it stuck.

        Returns whether a thread is now stuck on it. The count drops again
        when the probe returns by itself (a client timeout longer than the
        rule's, a server that finally answered).
        """
        if future.cancel():
            return False
        with self._lock:
            if future.done():
                return False
            self._stuck.add(future)
            self._abandoned_total += 1
        future.add_done_callback(self._unstick)
        return True

    def _unstick(self, future: Future[T]) -> None:
        with self._lock:
            self._stuck.discard(future)

    @property
    def stuck(self) -> int:
        """Threads still running a probe whose caller gave up on it."""
        with self._lock:
            return len(self._stuck)

    @property
    def abandoned_total(self) -> int:
        """Probes given up on since start (stuck now or returned late)."""
        with self._lock:
            return self._abandoned_total

    @property
    def threads(self) -> int:
        with self._lock:
            return self._threads

    def _work(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=self._idle_timeout)
            except queue.Empty:
                with self._lock:
                    # Retire only if another idle worker is left for any job promised meanwhile.
                    if self._idle > 0:
                        self._idle -= 1
                        self._threads -= 1
                        return
                continue
            if job is None:
                with self._lock:
                    self._threads -= 1
                return
            fn, future = job
            result: object = None
            error: BaseException | None = None
            ran = future.set_running_or_notify_cancel()
            if ran:
                try:
                    result = fn()
                except BaseException as exc:  # handed to the waiter, which turns it into a down result
                    error = exc
            with self._lock:
                # Idle before the waiter hears back: its next probe then reuses this thread.
                self._idle += 1
            if ran and error is not None:
                future.set_exception(error)
            elif ran:
                future.set_result(result)
            del job, fn, future, result, error  # an idle worker must not keep the last result alive

    def shutdown(self) -> None:
        """Stop taking work; idle workers end, a stuck one is left to the process exit (daemon thread)."""
        with self._lock:
            self._closed = True
            for _ in range(self._threads):
                self._jobs.put(None)
