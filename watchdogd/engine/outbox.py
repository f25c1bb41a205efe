"""The durable outbox of notifications, and the alerts left open, in the state store.

A notification is a row here before the first attempt to send it, in the
same transaction that opens or closes the alert it belongs to; a delivery is
marked done only after the receiver said so. So a restart or ``kill -9``
resends what was not confirmed (at least once, under the same key, which
receivers dedupe on) and loses nothing. Bodies are opaque JSON text here:
what they mean is the notifications package's business.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from watchdogd.engine.state import StateStore

BATCH = 50


@dataclass(frozen=True, slots=True)
class Queued:
    """A notification to deliver to one sink."""

    sink: str
    key: str
    body: str


@dataclass(frozen=True, slots=True)
class OpenAlert:
    sink: str
    rule: str
    subject: str
    body: str  # the notification that opened it (Alertmanager is reminded with it)
    since: float


@dataclass(frozen=True, slots=True)
class Due:
    id: int
    sink: str
    key: str
    body: str
    created: float
    attempts: int


@dataclass(frozen=True, slots=True)
class SinkBacklog:
    sink: str
    pending: int
    oldest: float | None  # when the oldest undelivered one was queued


class Outbox:
    def __init__(self, store: StateStore) -> None:
        self._store = store

    def put(
        self,
        queued: Sequence[Queued],
        now: float,
        *,
        opened: Sequence[OpenAlert] = (),
        closed: Sequence[tuple[str, str, str]] = (),
    ) -> None:
        """Queue ``queued`` and open/close alerts ((sink, rule, subject)) in one transaction.

        A key already queued for a sink is not queued twice (a restart that
        decides the same notification again).
        """
        if not (queued or opened or closed):
            return
        with self._store.transaction("outbox put") as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO outbox (sink, key, body, created, next_at) VALUES (?, ?, ?, ?, ?)",
                [(q.sink, q.key, q.body, now, now) for q in queued],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO open_alerts (sink, rule, subject, body, since) VALUES (?, ?, ?, ?, ?)",
                [(a.sink, a.rule, a.subject, a.body, a.since) for a in opened],
            )
            conn.executemany("DELETE FROM open_alerts WHERE sink = ? AND rule = ? AND subject = ?", closed)

    def due(self, now: float, limit: int = BATCH) -> list[Due]:
        with self._store.transaction("outbox due", write=False) as conn:
            rows = conn.execute(
                "SELECT id, sink, key, body, created, attempts FROM outbox"
                " WHERE delivered_at IS NULL AND failed_at IS NULL AND next_at <= ? ORDER BY next_at, id LIMIT ?",
                (now, limit),
            ).fetchall()
        return [Due(r["id"], r["sink"], r["key"], r["body"], r["created"], r["attempts"]) for r in rows]

    def next_due(self) -> float | None:
        """When the next undelivered notification is due (None: nothing waits)."""
        with self._store.transaction("outbox next", write=False) as conn:
            row = conn.execute(
                "SELECT MIN(next_at) FROM outbox WHERE delivered_at IS NULL AND failed_at IS NULL"
            ).fetchone()
        return None if row[0] is None else float(row[0])

    def delivered(self, row_id: int, now: float) -> None:
        self._update("UPDATE outbox SET delivered_at = ?, attempts = attempts + 1 WHERE id = ?", (now, row_id))

    def retry(self, row_id: int, next_at: float, error: str) -> None:
        self._update(
            "UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ? WHERE id = ?",
            (next_at, error, row_id),
        )

    def failed(self, row_id: int, now: float, error: str) -> None:
        """Given up on: kept (with its error) until retention, never sent again."""
        self._update(
            "UPDATE outbox SET attempts = attempts + 1, failed_at = ?, last_error = ? WHERE id = ?",
            (now, error, row_id),
        )

    def open_alerts(self) -> list[OpenAlert]:
        with self._store.transaction("open alerts", write=False) as conn:
            rows = conn.execute("SELECT sink, rule, subject, body, since FROM open_alerts").fetchall()
        return [OpenAlert(r["sink"], r["rule"], r["subject"], r["body"], r["since"]) for r in rows]

    def backlog(self) -> list[SinkBacklog]:
        with self._store.transaction("outbox backlog", write=False) as conn:
            rows = conn.execute(
                "SELECT sink, COUNT(*) AS pending, MIN(created) AS oldest FROM outbox"
                " WHERE delivered_at IS NULL AND failed_at IS NULL GROUP BY sink"
            ).fetchall()
        return [SinkBacklog(r["sink"], r["pending"], r["oldest"]) for r in rows]

    def prune(self, older_than: float) -> int:
        """Retention: settled deliveries (delivered or given up) older than ``older_than``."""
        with self._store.transaction("outbox prune") as conn:
            return conn.execute(
                "DELETE FROM outbox WHERE created < ? AND (delivered_at IS NOT NULL OR failed_at IS NOT NULL)",
                (older_than,),
            ).rowcount

    def _update(self, sql: str, args: tuple[object, ...]) -> None:
        with self._store.transaction("outbox update") as conn:
            conn.execute(sql, args)
