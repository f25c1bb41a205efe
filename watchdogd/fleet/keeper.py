"""Keeping a host's lease alive while it holds slots, and knowing until when a holding is safe.

Both coordinators hold slots under an expiry the server enforces (etcd: the
host's lease; Redis: a PX on each slot key). The keeper refreshes it every
third of the TTL while at least one slot is held, and stops when none is, so
an idle host costs the coordinator nothing and a host that dies or is cut
off loses its slots after one TTL at most.

The safety rule lives here: a holding is valid until ``sent + ttl`` where
``sent`` is when the last *successful* grant or refresh was sent. The server
counted its TTL from a later moment (when it received the request), so the
host always gives up before the server can hand the slot to someone else.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from watchdogd.fleet.coordinator import CoordinatorError, CoordinatorStats

log = logging.getLogger(__name__)

RETRY_AFTER = 0.5
"""After a failed refresh, try again this soon (the holding is still valid until its deadline)."""

Refresh = Callable[[float], bool]
"""Renew the server-side expiry before the monotonic deadline given: True renewed, False gone.
Raises ``CoordinatorError`` when the coordinator did not answer."""


class LeaseKeeper:
    def __init__(
        self,
        refresh: Refresh,
        ttl: float,
        monotonic: Callable[[], float],
        stats: CoordinatorStats,
        *,
        timeout: float,
        name: str = "fleet-keeper",
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self._refresh = refresh
        self.ttl = ttl
        self._monotonic = monotonic
        self._stats = stats
        self._timeout = timeout
        self._name = name
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._held = 0
        self._valid_until = float("-inf")
        self._generation = 0  # bumped by each new lease: a grant of an old one is never valid again
        self._thread: threading.Thread | None = None
        self._closed = False

    # --- what grants ask -------------------------------------------------------------------------------------
    @property
    def generation(self) -> int:
        return self._generation

    def valid(self, generation: int) -> bool:
        """Whether a grant made under lease ``generation`` may still be acted on. No I/O."""
        with self._lock:
            return generation == self._generation and self._monotonic() < self._valid_until

    def remaining(self) -> float:
        """Seconds the current lease is known to last (negative once it may be gone)."""
        with self._lock:
            return self._valid_until - self._monotonic()

    # --- what the coordinator tells it ------------------------------------------------------------------------
    def renewed(self, sent: float, *, new_lease: bool = False) -> int:
        """A grant or refresh sent at monotonic ``sent`` succeeded; returns the lease generation now current."""
        with self._lock:
            if new_lease:
                self._generation += 1
                self._valid_until = sent + self.ttl
            else:
                self._valid_until = max(self._valid_until, sent + self.ttl)
            return self._generation

    def lost(self) -> None:
        """The server says the lease is gone: every grant under it is invalid now."""
        with self._lock:
            if self._valid_until > float("-inf"):
                self._stats.leases_lost += 1
            self._valid_until = float("-inf")
            self._generation += 1

    def hold(self) -> None:
        """One more slot held: keep the lease alive (starts the refresh thread when the first is taken)."""
        with self._lock:
            if self._closed:
                return
            self._held += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._wake.notify_all()

    def unhold(self) -> None:
        with self._lock:
            self._held = max(0, self._held - 1)
            self._wake.notify_all()

    @property
    def held(self) -> int:
        return self._held

    def close(self) -> None:
        """Stop refreshing; every grant is invalid from now on (not counted as a lease lost)."""
        self.halt()
        with self._lock:
            self._valid_until = float("-inf")
            self._generation += 1

    def halt(self) -> None:
        """Stop refreshing and leave validity as it is: how a host that hangs or dies looks from outside.

        Tests and the storm benchmark use it to show that such a host's
        holding turns false before the coordinator can give its slot away.
        """
        with self._lock:
            self._closed = True
            self._held = 0
            self._wake.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._timeout + 1.0)

    # --- the refresh loop ------------------------------------------------------------------------------------
    def _run(self) -> None:
        pause = self.ttl / 3.0
        while True:
            with self._lock:
                self._wake.wait_for(lambda: self._closed or self._held == 0, timeout=pause)
                if self._closed or self._held == 0:
                    self._thread = None
                    return
                generation = self._generation
            sent = self._monotonic()
            try:
                alive = self._refresh(sent + min(self._timeout, self.ttl / 3.0))
            except CoordinatorError as exc:
                self._stats.errors += 1
                self._stats.last_error = str(exc)
                log.warning("fleet lease refresh failed", extra={"fields": {"error": str(exc)}})
                pause = RETRY_AFTER
                continue
            except Exception as exc:  # a bug must not kill the keeper silently: the lease then lapses, safely
                log.exception("fleet lease refresh raised")
                self._stats.errors += 1
                self._stats.last_error = f"{type(exc).__name__}: {exc}"
                pause = RETRY_AFTER
                continue
            pause = self.ttl / 3.0
            with self._lock:  # one step: a close or a new lease meanwhile must not be undone by this answer
                if generation != self._generation or self._closed:
                    continue
                if alive:
                    self._valid_until = max(self._valid_until, sent + self.ttl)
                    continue
            log.warning("fleet lease lost: the coordinator no longer has it")
            self.lost()
