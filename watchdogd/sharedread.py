"""One read of a target serving every rule due in the same cycle (issue 17: work shared where it is the same).

A leaf helper, so the docker, postgres and redis families (which may not
import each other) share one copy.

Freshness: a value taken less than ``max_age`` seconds ago (counted from the
moment its read *started*, so the data is never older than that) is handed
out again; the rules of one cycle start within milliseconds of each other, so
they share one read while the next cycle reads afresh. The target client
caps ``max_age`` at half the shortest interval of its rules (``limit``, from
``retry_within``), so no rule ever gets the same read on two runs. An
optional ``version`` callable lets the owner end the reuse early when it
knows the data changed (an engine event, an action of ours): the value is
reused only while ``version()`` still returns what it returned when the read
started.

Concurrency: one lock per target and query. A caller that arrives while a
read is in flight waits for it instead of reading again. A failed read is
never cached: the callers that waited for it get the same error (a copy,
so their tracebacks stay apart) rather than each repeating a read that just
failed, possibly after its full timeout; the next caller after that reads
again. The wait is not bounded here: the read itself is, by the client's own
timeouts.

The value must be immutable (tuples, read-only mappings): every caller gets
the same object.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, NoReturn, TypeVar

from watchdogd import inline

T = TypeVar("T")

MAX_AGE = 1.0
"""Seconds a shared read is reused: far below any rule interval (>= 1 s, usually 5 s and more), far above
the spread of the rules one cycle starts together."""


class SharedRead(Generic[T]):
    """``get()``: the last value if fresh enough, else one new read shared with every concurrent caller."""

    def __init__(
        self,
        read: Callable[[], T],
        *,
        max_age: float = MAX_AGE,
        monotonic: Callable[[], float] = time.monotonic,
        version: Callable[[], Hashable] | None = None,
        inline_reads: bool = False,
    ) -> None:
        """``inline_reads``: ``read`` is itself safe inside ``inline.only()`` (it refuses its own blocking reads
        with ``WouldBlock``), so a caller there may start it; waiting for a read in flight is refused anyway."""
        if max_age < 0:
            raise ValueError(f"max_age must be >= 0, got {max_age!r}")
        self._read = read
        self._configured = max_age
        self._max_age = max_age
        self._monotonic = monotonic
        self._version = version
        self._inline_reads = inline_reads
        self._cond = threading.Condition()
        self._value: tuple[T, float, Hashable] | None = None  # value, read started at, version then
        self._reading = False
        self._round = 0  # reads finished, failed or not: a waiter knows whether *its* read ended
        self._error: BaseException | None = None  # what the last finished read raised, if it failed
        self.reads = 0
        """Reads started (for tests and benchmarks: N rules in one cycle should make it grow by one)."""

    def get(self) -> T:
        """Inside ``inline.only()`` a value that is not fresh raises ``WouldBlock``: no read, no wait for one.

        Inside ``inline.fresh()`` (a verify's re-probe after an action) no value read before is handed out: a
        read in flight is waited for, then this caller reads again.
        """
        reuse = not inline.wants_fresh()
        with self._cond:
            while True:
                fresh = self._fresh() if reuse else None
                if fresh is not None:
                    return fresh[0]
                if not self._reading:
                    if not self._inline_reads:
                        inline.check("shared read")
                    break
                inline.check("shared read")
                waited_for = self._round
                while self._reading:
                    self._cond.wait()
                if self._round == waited_for + 1 and self._error is not None:
                    _raise_again(self._error)
            self._reading = True
            self.reads += 1
        version = self._version() if self._version is not None else None
        started = self._monotonic()
        try:
            value = self._read()
        except inline.WouldBlock:
            # Not a failed read: the read needs a probe thread. Whoever waited reads for itself.
            with self._cond:
                self._reading, self._error, self._round = False, None, self._round + 1
                self._cond.notify_all()
            raise
        except BaseException as exc:
            with self._cond:
                self._reading, self._error, self._round = False, exc, self._round + 1
                self._cond.notify_all()
            raise
        with self._cond:
            self._value = (value, started, version)
            self._reading, self._error, self._round = False, None, self._round + 1
            self._cond.notify_all()
        return value

    def limit(self, seconds: float) -> None:
        """Reuse a value for at most ``seconds`` (and never longer than configured): half the shortest interval
        of the rules on this target, so that a rule's next run always reads afresh."""
        with self._cond:
            self._max_age = max(0.0, min(self._configured, seconds))

    def forget(self) -> None:
        """Drop the value: the next ``get`` reads (after an action of ours changed what it describes)."""
        with self._cond:
            self._value = None

    def _fresh(self) -> tuple[T] | None:
        """The value if still reusable. Lock held."""
        if self._value is None:
            return None
        value, started, version = self._value
        if self._monotonic() - started >= self._max_age:
            return None
        if self._version is not None and self._version() != version:
            return None
        return (value,)


def _raise_again(error: BaseException) -> NoReturn:
    """The failed read's error for one more waiter: a copy, so one raise's traceback stays out of the others'."""
    try:
        duplicate = copy.copy(error)
    except Exception:  # an exception that cannot be copied is raised as it is
        raise error from None
    duplicate.__traceback__ = None
    raise duplicate from error
