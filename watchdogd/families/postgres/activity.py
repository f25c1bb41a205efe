"""One read of ``pg_stat_activity`` per target per cycle, and the views each probe takes of it.

The per-backend probes (idle, idle in transaction, long queries), the
blocking probe and the connections probe used to send a query each; they
now share ``queries.ACTIVITY`` (every backend, a superset of the columns),
read at most once per ``MAX_AGE`` by ``PostgresClient.activity``, and select
here in Python what their own statement used to select on the server, with
the same meaning (the SQL each replaced is quoted in each view's docstring).
Actions never act on these rows alone: their own statement re-checks the
backend's identity and breach (``queries.SIGNAL``).

Rows are read-only mappings and the snapshot a frozen dataclass: every
probe of the cycle gets the same object.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

ActivityRow = Mapping[str, Any]

_SETTINGS = ("max_connections", "superuser_reserved", "reserved", "now")


@dataclass(frozen=True, slots=True)
class Activity:
    """Every backend the role can see at one instant (``now``, the statement's start), and the slot settings."""

    now: datetime
    max_connections: int
    superuser_reserved: int
    reserved: int
    rows: tuple[ActivityRow, ...]
    hidden: int
    """Rows this role may not see (``backend_type`` NULL: no ``pg_read_all_stats``)."""
    by_pid: Mapping[int, ActivityRow] = field(repr=False)

    @classmethod
    def of(cls, result: Sequence[Mapping[str, Any]]) -> Activity:
        """From the rows of ``queries.ACTIVITY``; its one-row settings subquery makes ``result`` never empty."""
        first = result[0]
        rows = tuple(_frozen(row) for row in result if row["pid"] is not None)
        return cls(
            now=first["now"],
            max_connections=int(first["max_connections"]),
            superuser_reserved=int(first["superuser_reserved"]),
            reserved=int(first["reserved"]),
            rows=rows,
            hidden=sum(1 for row in rows if row["hidden"]),
            by_pid=MappingProxyType({row["pid"]: row for row in rows}),
        )

    def backends(self, states: Sequence[str], ignore_application: str) -> Iterator[ActivityRow]:
        """Client backends in ``states``, not ours, not of ``ignore_application`` (the daemon's other connections).

        Was ``WHERE a.pid <> pg_backend_pid() AND a.backend_type = 'client
        backend' AND a.state = ANY (states) AND a.application_name IS
        DISTINCT FROM 'watchdogd'``; the hidden rows it also returned are
        ``hidden`` here.
        """
        for row in self.rows:
            if (row["backend_type"] == "client backend" and not row["ours"] and row["state"] in states
                    and row["application_name"] != ignore_application):
                yield row

    def waits(self) -> Iterator[tuple[int, int]]:
        """(waiter, blocker) for every backend waiting on a lock and each backend it waits for.

        Was ``unnest(pg_blocking_pids(w.pid)) ... WHERE w.wait_event_type = 'Lock'``.
        """
        for row in self.rows:
            for blocker in row["blocked_by"] or ():
                yield row["pid"], blocker

    def client_slots(self) -> Iterator[ActivityRow]:
        """The backends that take one of ``max_connections``' slots: client backends (ours too) and hidden ones.

        Was ``LEFT JOIN pg_stat_activity a ON a.backend_type = 'client backend' OR a.backend_type IS NULL``.
        """
        for row in self.rows:
            if row["backend_type"] == "client backend" or row["backend_type"] is None:
                yield row


def _frozen(row: Mapping[str, Any]) -> ActivityRow:
    """One backend's columns, read-only (``blocked_by`` as a tuple); the settings stay on ``Activity``."""
    kept = {key: value for key, value in row.items() if key not in _SETTINGS}
    blocked_by = kept.get("blocked_by")
    if blocked_by is not None:
        kept["blocked_by"] = tuple(blocked_by)
    return MappingProxyType(kept)
