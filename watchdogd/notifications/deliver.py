"""Delivering the outbox: one thread, retries with backoff, and reminders of open Alertmanager alerts.

A row is marked delivered only after the receiver answered 2xx; a failure
worth retrying (timeout, refused, 5xx, 429) is tried again after 1, 2, 4 ...
seconds, at most every 5 minutes, until ``give_up_after`` has passed since
it was queued; one that is not (a 4xx: our request is wrong) is given up at
once. Both are counted and logged. Nothing here runs in a rule's thread.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from watchdogd.engine.outbox import Due, Outbox
from watchdogd.logs import event
from watchdogd.model import Clock
from watchdogd.notifications.message import Notification
from watchdogd.notifications.transports import DeliveryError, Transport

log = logging.getLogger(__name__)

BACKOFF_MAX = 300.0
IDLE_WAIT = 5.0
"""Seconds between looks at the outbox when nothing is due (and reminders of open alerts are checked)."""
TICK_EVERY = 30.0
"""Seconds between calls of ``tick`` (the pager's reconcile) from the delivery thread."""


@dataclass(frozen=True, slots=True)
class SinkStats:
    sink: str
    delivered: int
    retried: int  # attempts that failed and will be tried again
    failed: int  # notifications given up on
    pending: int
    oldest_age: float  # seconds the oldest undelivered one has waited (0 when none)
    reminders: int  # open alerts sent again (Alertmanager's resend)


class Deliverer:
    def __init__(
        self,
        outbox: Outbox,
        transports: Callable[[], Mapping[str, Transport]],
        clock: Clock,
        give_up_after: Callable[[], float],
        tick: Callable[[], None] | None = None,
    ) -> None:
        self._outbox = outbox
        self._tick = tick
        self._ticked = clock()
        self._transports = transports  # the current config's, so a reload's new sinks take effect
        self._clock = clock
        self._give_up_after = give_up_after
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._reminded: dict[tuple[str, str, str], float] = {}
        self._restarted = True  # the first pass reminds of every open alert: the receiver may have lost them
        self._thread = threading.Thread(target=self._loop, name="notify-deliver", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the attempt in flight (each bounded by its transport's timeout)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def flush(self) -> None:
        """Deliver what is due now, in the calling thread (``--once``: no thread is started)."""
        try:
            self._drain()
        except Exception as exc:  # a --once run must report its rules even if the outbox cannot be read
            event(log, logging.ERROR, "notification delivery failed", error=str(exc))

    def send_now(self, sink: str, notification: Notification) -> str | None:
        """``watchdogctl test-notify``: one attempt, now, outside the outbox; the error text or None."""
        transports = self._transports()
        transport = transports.get(sink)
        if transport is None:
            return f"no sink named {sink!r} (notify.sinks: {', '.join(sorted(transports)) or 'none'})"
        try:
            transport.send(notification)
        except DeliveryError as exc:
            return str(exc)
        return None

    def stats(self) -> list[SinkStats]:
        now = self._clock()
        backlog = {b.sink: b for b in self._outbox.backlog()}
        with self._lock:
            counts = dict(self._counts)
        sinks = sorted(set(self._transports()) | set(backlog) | {sink for sink, _ in counts})
        return [
            SinkStats(
                sink=sink,
                delivered=counts.get((sink, "delivered"), 0),
                retried=counts.get((sink, "retried"), 0),
                failed=counts.get((sink, "failed"), 0),
                pending=backlog[sink].pending if sink in backlog else 0,
                oldest_age=max(0.0, now - (backlog[sink].oldest or now)) if sink in backlog else 0.0,
                reminders=counts.get((sink, "reminded"), 0),
            )
            for sink in sinks
        ]

    # -- the loop ------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._drain()
                self._remind()
                if self._tick is not None and self._clock() - self._ticked >= TICK_EVERY:
                    self._ticked = self._clock()
                    self._tick()
                wait = self._until_next()
            except Exception as exc:  # the state store failing: say so, try again later, never die
                event(log, logging.ERROR, "notification delivery failed", error=str(exc))
                wait = IDLE_WAIT
            self._wake.wait(wait)
            self._wake.clear()

    def _until_next(self) -> float:
        due = self._outbox.next_due()
        return IDLE_WAIT if due is None else min(max(due - self._clock(), 0.0), IDLE_WAIT)

    def _drain(self) -> None:
        while not self._stop.is_set():
            batch = self._outbox.due(self._clock())
            if not batch:
                return
            for row in batch:
                if self._stop.is_set():
                    return
                self._attempt(row)

    def _attempt(self, row: Due) -> None:
        transport = self._transports().get(row.sink)
        now = self._clock()
        if transport is None:
            self._settle(row, now, "sink no longer configured", retry=False)
            return
        try:
            transport.send(Notification.from_json(_loads(row.body)))
        except DeliveryError as exc:
            self._settle(row, self._clock(), str(exc), retry=exc.retry)
            return
        self._outbox.delivered(row.id, self._clock())
        self._count(row.sink, "delivered")

    def _settle(self, row: Due, now: float, error: str, *, retry: bool) -> None:
        limit = self._give_up_after()
        expired = limit > 0 and now - row.created >= limit
        if retry and not expired:
            self._outbox.retry(row.id, now + min(2.0**row.attempts, BACKOFF_MAX), error)
            self._count(row.sink, "retried")
            return
        self._outbox.failed(row.id, now, error)
        self._count(row.sink, "failed")
        event(log, logging.ERROR, "notification given up", sink=row.sink, key=row.key, error=error,
              attempts=row.attempts + 1)

    def _remind(self) -> None:
        """Send open alerts again to transports that forget them (Alertmanager's resolve_timeout)."""
        transports = self._transports()
        now = self._clock()
        alerts = self._outbox.open_alerts()  # one read per loop: it serves the reminders and the forgetting
        for alert in alerts:
            transport = transports.get(alert.sink)
            if transport is None or transport.resend is None:
                continue
            key = (alert.sink, alert.rule, alert.subject)
            if key not in self._reminded and not self._restarted:
                self._reminded[key] = now  # just opened: its own delivery told the receiver
                continue
            if now - self._reminded.get(key, 0.0) < transport.resend:
                continue
            self._reminded[key] = now
            try:
                transport.send(Notification.from_json(_loads(alert.body)))
            except DeliveryError as exc:
                event(log, logging.WARNING, "reminder of an open alert failed", sink=alert.sink, rule=alert.rule,
                      subject=alert.subject, error=str(exc))
                continue
            self._count(alert.sink, "reminded")
        self._restarted = False
        open_now = {(a.sink, a.rule, a.subject) for a in alerts}
        for key in set(self._reminded) - open_now:  # closed since: forget (one closed meanwhile goes next loop)
            del self._reminded[key]

    def _count(self, sink: str, what: str) -> None:
        with self._lock:
            self._counts[(sink, what)] += 1


def _loads(body: str) -> dict[str, object]:
    data = json.loads(body)
    if not isinstance(data, dict):
        raise DeliveryError("outbox row is not a JSON object", retry=False)
    return data
