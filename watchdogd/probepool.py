"""Worker threads for probe runs that a hung probe cannot use to keep the process alive.

A probe stuck in a system call (a server that accepts and never answers past
its client's own timeout, a FIFO nobody writes) cannot be cancelled from
Python. The engine stops waiting for it at the rule's timeout, but the
standard library's pool joins its workers at interpreter exit, so one hung
probe kept ``watchdogd --once`` and a daemon told to stop alive until the probe
returned. These workers are daemon threads: at exit, after the state has been
saved, a probe still stuck is abandoned and the kernel releases what it held.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")

_Job = tuple[Callable[[], object], Future[object]] | None


class ProbePool:
    """At most ``workers`` threads, started as needed, each running one probe at a time."""

    def __init__(self, workers: int, name: str = "probe") -> None:
        self._max = workers
        self._name = name
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("probe pool is shut down")
            self._jobs.put((fn, future))  # type: ignore[arg-type]  # Future is invariant; the worker sets a T
            if self._idle == 0 and len(self._threads) < self._max:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            else:
                self._idle -= self._idle > 0  # this job will wake one idle worker
        return future

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, future = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # handed to the waiter, which turns it into a down result
                    future.set_exception(exc)
            with self._lock:
                self._idle += 1

    def shutdown(self) -> None:
        """Stop taking work; idle workers end, a stuck one is left to the process exit (daemon thread)."""
        with self._lock:
            self._closed = True
            for _ in self._threads:
                self._jobs.put(None)
