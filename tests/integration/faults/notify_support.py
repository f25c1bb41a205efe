"""What the notification end-to-end tests and bench/bench_notify.py share.

* ``RecordingReceiver``: the tests' ``WebhookReceiver`` that also stamps
  each request's arrival (wall clock, the daemon's clock too: one host) with
  the status it was answered, can refuse everything (``refusing = True``:
  503 to every request, whatever was programmed) and can hold requests at a
  gate (``close_gate()`` / ``open_gate()``) so the daemon's single deliverer
  is stuck in one request while pages pile up in the outbox.
* ``read_metrics``/``figures``: the daemon's metrics (its textfile) as dicts.
* ``settled``: the barrier that makes "no page was sent" a checkable claim:
  metrics rendered after a given moment in which the pager (a queued event
  sink) has handled every event the inline log sink saw, so a page it was
  going to decide is in the outbox by then.
* ``outbox_rows``: the state database's outbox, read-only, for the daemon that
  was killed.

Nothing here sleeps for a fixed time: waits are conditions with deadlines.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ctl, wait_until
from tests.support.webhook_receiver import Reply, Request, WebhookReceiver

GATE_LIMIT = 60.0
"""A request held at the gate is let through after this long at most (the test failed: do not hang)."""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass(frozen=True)
class Arrival:
    at: float  # time.time() when the whole request had been read
    request: Request
    status: int  # what it was answered

    @property
    def key(self) -> str:
        return self.request.header("Idempotency-Key") or ""

    @property
    def kind(self) -> str:
        return str(self.request.json().get("kind"))


class RecordingReceiver(WebhookReceiver):
    """A ``WebhookReceiver`` that keeps arrival times and answers, and can refuse or hold everything."""

    def __init__(self, *replies: int | Reply, refusing: bool = False) -> None:
        self.arrivals: list[Arrival] = []
        self.refusing = refusing
        self.held = 0  # requests waiting at the closed gate right now
        self._gate = threading.Event()
        self._gate.set()
        super().__init__(*replies)

    def record(self, request: Request) -> Reply:
        at = time.time()
        if not self._gate.is_set():
            with self.changed:
                self.held += 1
                self.changed.notify_all()
            self._gate.wait(GATE_LIMIT)
            with self.changed:
                self.held -= 1
        with self.changed:  # an RLock: the base class takes it again
            reply = super().record(request)
            if self.refusing:
                reply = Reply(503, body=b"refusing on purpose")
            self.arrivals.append(Arrival(at, request, reply.status))
            self.changed.notify_all()
            return reply

    def close_gate(self) -> None:
        self._gate.clear()

    def open_gate(self) -> None:
        self._gate.set()

    def close(self) -> None:
        self._gate.set()
        super().close()

    def snapshot(self) -> list[Arrival]:
        with self.changed:
            return list(self.arrivals)

    def wait_arrivals(
        self, predicate: Callable[[list[Arrival]], Any], timeout: float, what: str
    ) -> list[Arrival]:
        """Wait (on the handler's condition, no polling) until ``predicate(arrivals)`` holds; return them."""
        with self.changed:
            if not self.changed.wait_for(lambda: predicate(self.arrivals), timeout):
                shown = [(round(a.at, 3), a.status, a.request.header("X-Watchdogd-Kind"), a.key[:8])
                         for a in self.arrivals]
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; arrivals: {shown}")
            return list(self.arrivals)


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def write_secret(path: Path, secret: str) -> Path:
    path.write_text(secret + "\n", encoding="utf-8")
    path.chmod(0o600)  # a key readable by others is refused
    return path


def make_old(path: Path, age: float = 3600.0) -> None:
    then = time.time() - age
    os.utime(path, (then, then))


def make_fresh(path: Path) -> None:
    os.utime(path)


def read_metrics(directory: Path) -> Samples:
    """The daemon's metrics from its textfile (``textfile_dir``): the same registry as ``/metrics``.

    The textfile is rewritten after each rule cycle, at most once a second.
    ``/metrics`` is not used here because its body is rendered ahead of the
    scrapers' pattern: right after a start, before a pattern is known, it can
    be up to ``max_spacing`` (5 s) old however often it is scraped.
    """
    path = directory / "watchdogd.prom"
    if not path.exists():
        return {}
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def rendered_after(samples: Samples) -> float:
    """A moment the samples are newer than: the last probe run they show (rules run every fraction of a s)."""
    return max((v for (name, _), v in samples.items() if name == "watchdogd_probe_last_run_timestamp_seconds"),
               default=0.0)


def figures(samples: Samples, sink: str) -> dict[str, float]:
    """The sink's notification figures: delivered, retried, failed, reminders, pending, oldest."""
    names = {
        "delivered": "watchdogd_notifications_delivered_total",
        "retried": "watchdogd_notifications_retried_total",
        "failed": "watchdogd_notifications_failed_total",
        "reminders": "watchdogd_notification_reminders_total",
        "pending": "watchdogd_notification_outbox_pending",
        "oldest": "watchdogd_notification_outbox_oldest_seconds",
    }
    out = {}
    for short, name in names.items():
        value = sample(samples, name, sink=sink)
        assert value is not None, f"{name}{{sink={sink!r}}} missing from the metrics"
        out[short] = value
    return out


def pager_caught_up(samples: Samples) -> bool:
    """The pager has handled (without failing) every event the inline log sink got.

    Events go to the inline sinks and then into each queued sink's queue in
    one ``publish``; the pager writes its pages to the outbox inside
    ``handle``, before the event counts as delivered. So in samples where
    the two counts are equal and the pager's queue is empty, every page
    decided about the events so far is in the outbox (``outbox_pending``) or
    already sent (``delivered_total``).
    """
    def handled(sink: str) -> float:
        return sum(sample(samples, "watchdogd_event_sink_events_total", sink=sink, result=r) or 0.0
                   for r in ("delivered", "failed", "dropped"))

    notify_failed = sample(samples, "watchdogd_event_sink_events_total", sink="notify", result="failed")
    assert not notify_failed, f"the pager raised on {notify_failed} event(s): no page is no proof then"
    queued = sample(samples, "watchdogd_event_sink_queue_length", sink="notify")
    return queued == 0 and handled("notify") == handled("log")


def settled(directory: Path, after: float, timeout: float = 10.0) -> Samples:
    """Metrics rendered after ``after`` (wall clock) in which the pager has caught up with the events."""
    def ready() -> Samples | None:
        samples = read_metrics(directory)
        return samples if rendered_after(samples) > after and pager_caught_up(samples) else None

    return wait_until(ready, timeout, f"metrics newer than {after:.3f} with the pager caught up")


def wait_figures(directory: Path, sink: str, predicate: Callable[[dict[str, float]], Any], timeout: float,
                 what: str) -> dict[str, float]:
    def ready() -> dict[str, float] | None:
        samples = read_metrics(directory)
        if not samples:
            return None
        found = figures(samples, sink)
        return found if predicate(found) else None

    return wait_until(ready, timeout, what)


def history(sock: Path, *args: str) -> dict[str, Any]:
    done = ctl("--socket", str(sock), "history", "--json", *args)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def outbox_rows(database: Path) -> list[dict[str, Any]]:
    """The outbox of a stopped (or killed) daemon's state database, read-only."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute("SELECT * FROM outbox ORDER BY id")]
    finally:
        conn.close()


def open_alerts(database: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute("SELECT sink, rule, subject, since FROM open_alerts")]
    finally:
        conn.close()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]
