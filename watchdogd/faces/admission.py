"""Which connections stay when clients stall: shared by the HTTP server and the control socket.

Both servers read requests on one event loop and seat each connection here;
see ``Admission`` for the policy and docs/interfaces.md for the limits.
Stdlib only, so the HTTP server can import it cheaply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar


class Cuttable(Protocol):
    def cut(self) -> None:
        """Drop the connection now; whatever serves it then ends on its own."""


C = TypeVar("C", bound=Cuttable)


@dataclass
class _Seat:
    key: Hashable
    silent_since: float | None
    """Since when the client owes us bytes (its request, or reading our reply); None while we work for it."""


@dataclass
class Admission(Generic[C]):
    """Which connections stay when clients stall: judged by behaviour, because addresses are shared.

    A slow-loris client and an honest one can share an address (every local
    client is 127.0.0.1) or a uid, so a plain per-address cap would lock the
    honest one out with the attacker. What tells them apart is behaviour: an
    honest client sends its whole request as soon as it connects; an attacker
    stays *silent* (owes us bytes) for as long as it can. So:

    * per key (source address, uid), at most ``stalled_per_key`` connections
      may stay silent longer than ``grace``; ``sweep`` cuts the oldest beyond;
    * at most ``total`` connections at all (file descriptors): a newcomer at
      the cap takes the place of the oldest silent connection of the key that
      holds the most, and is refused only when no connection is silent.

    A newcomer is never the victim of its own arrival, and a flood from one
    key evicts its own connections first. Silent connections cost a file
    descriptor and a few bytes, never a thread: the servers read requests on
    one event loop. Not thread-safe: that event loop is its only user.
    """

    total: int
    stalled_per_key: int
    grace: float
    _seats: dict[C, _Seat] = field(default_factory=dict)
    on_silent: Callable[[], None] | None = None
    """Called when a connection goes silent: ``sweep_until`` sets it while it sleeps with no sweep due."""

    def admit(self, conn: C, key: Hashable, now: float) -> bool:
        """Seat a new connection (silent until its request is in); False: refused, nobody could make room."""
        if len(self._seats) >= self.total:
            victim = self._victim()
            if victim is None:
                return False
            self._evict(victim)
        self._seats[conn] = _Seat(key, now)
        self._went_silent()
        return True

    def silent(self, conn: C, now: float) -> None:
        """The client owes us bytes from ``now`` on."""
        seat = self._seats.get(conn)
        if seat is not None:
            seat.silent_since = now
            self._went_silent()

    def next_sweep(self, judged_at: float) -> float | None:
        """When a sweep could next cut something: the first seat the last sweep (at ``judged_at``) did not judge.

        That is the first silent seat still within ``grace`` at ``judged_at``
        leaving it; None when there is none. Seats already past their grace
        then were judged by that sweep, and stay as they are until another
        seat of their key passes too (which this then schedules). It takes
        the sweep's moment, not the clock's: a seat that passed its grace
        between the sweep and this call was judged by nobody, and reading
        the clock again dropped it from the schedule for good (a flaky
        test under CPU load: 7 of 8 stalled connections cut, the 8th never).
        """
        due = [seat.silent_since + self.grace for seat in self._seats.values()
               if seat.silent_since is not None and judged_at - seat.silent_since <= self.grace]
        return min(due) if due else None

    def busy(self, conn: C) -> None:
        """The request is in; the connection is ours to serve and cannot be evicted."""
        seat = self._seats.get(conn)
        if seat is not None:
            seat.silent_since = None

    def release(self, conn: C) -> None:
        self._seats.pop(conn, None)

    def sweep(self, now: float) -> int:
        """Cut, per key, the oldest connections silent past ``grace`` beyond ``stalled_per_key``."""
        stalled: dict[Hashable, list[tuple[float, C]]] = {}
        for conn, seat in self._seats.items():
            if seat.silent_since is not None and now - seat.silent_since > self.grace:
                stalled.setdefault(seat.key, []).append((seat.silent_since, conn))
        cut = 0
        for conns in stalled.values():
            conns.sort(key=lambda item: item[0])
            for _, conn in conns[: max(0, len(conns) - self.stalled_per_key)]:
                self._evict(conn)
                cut += 1
        return cut

    def cut_silent(self) -> int:
        """Shutting down: drop everyone who owes us bytes; requests being served finish."""
        silent = [conn for conn, seat in self._seats.items() if seat.silent_since is not None]
        for conn in silent:
            self._evict(conn)
        return len(silent)

    def counts(self) -> dict[Hashable, tuple[int, int]]:
        """Per key: (connections, silent ones), for tests and the bench."""
        result: dict[Hashable, tuple[int, int]] = {}
        for seat in self._seats.values():
            total, silent = result.get(seat.key, (0, 0))
            result[seat.key] = (total + 1, silent + (seat.silent_since is not None))
        return result

    def _victim(self) -> C | None:
        held: dict[Hashable, int] = {}
        for seat in self._seats.values():
            held[seat.key] = held.get(seat.key, 0) + 1
        silent = [(-held[seat.key], seat.silent_since, id(conn), conn)
                  for conn, seat in self._seats.items() if seat.silent_since is not None]
        return min(silent, key=lambda item: item[:3])[3] if silent else None

    def _went_silent(self) -> None:
        if self.on_silent is not None:
            self.on_silent()

    def _evict(self, conn: C) -> None:
        self._seats.pop(conn, None)
        conn.cut()


SWEEP_SLACK = 0.01
"""Seconds a sweep waits past the moment a seat leaves its grace, so that the seat is past it when judged."""


async def sweep_until(stop: asyncio.Event, admission: Admission[Any], clock: Callable[[], float]) -> None:
    """A server's housekeeping until ``stop``: cut what stalled, at the moment a seat passes its grace.

    It sleeps until then, and with no silent seat until one goes silent:
    a timer every fraction of the grace woke both servers' loops a few
    times a second with no client at all (0.1-0.3 % of a core at any
    number of rules, issue 17).
    """
    wake = asyncio.Event()
    stopping = asyncio.ensure_future(stop.wait())
    woken: asyncio.Future[Any] | None = None
    judged_at = float("-inf")  # nothing judged yet: every silent seat is due
    try:
        while not stopping.done():
            wake.clear()
            due = admission.next_sweep(judged_at)
            admission.on_silent = wake.set if due is None else None
            if woken is None or woken.done():
                woken = asyncio.ensure_future(wake.wait())
            timeout = None if due is None else max(0.0, due - clock()) + SWEEP_SLACK
            await asyncio.wait({stopping, woken}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            judged_at = clock()
            admission.sweep(judged_at)
    finally:
        admission.on_silent = None
        for task in (stopping, woken):
            if task is not None:
                task.cancel()


def run_loop(loop: asyncio.AbstractEventLoop, main: Callable[[], Awaitable[None]]) -> None:
    """A server thread's body: run ``main`` on its own loop, then close the loop whatever happened."""
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
