"""One pg_stat_activity read per target per cycle, and the views the backend probes take of it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from watchdogd.families.postgres import queries as q
from watchdogd.families.postgres.actions import _backend, _signal
from watchdogd.families.postgres.activity import Activity
from watchdogd.families.postgres.target import (
    APPLICATION_NAME,
    PostgresClient,
    PostgresParams,
    PostgresPermissionError,
)
from watchdogd.model import Reading
from watchdogd.registry import DEFAULT

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SETTINGS = {"max_connections": 100, "superuser_reserved": 3, "reserved": 2, "now": NOW}


def backend(pid: int, state: str | None = "idle", **overrides: Any) -> dict[str, Any]:
    base = {
        "pid": pid, "ours": False, "backend_type": "client backend", "hidden": False,
        "backend_start": NOW - timedelta(hours=1), "usename": "app", "datname": "shop",
        "application_name": "web", "client_addr": "10.0.0.5", "state": state,
        "state_change": NOW - timedelta(seconds=pid), "query_start": NOW - timedelta(seconds=2 * pid),
        "xact_start": None, "wait_event_type": None, "blocked_by": None, "superuser": False,
    }
    return SETTINGS | base | overrides


SERVER = [
    backend(1, "active", ours=True, application_name=APPLICATION_NAME),  # our own statement
    backend(10),
    backend(11, application_name=APPLICATION_NAME),  # another connection of the daemon
    backend(12, "idle in transaction", xact_start=NOW - timedelta(seconds=60)),
    backend(13, "idle in transaction (aborted)"),
    backend(14, "active"),
    backend(15, "active", wait_event_type="Lock", blocked_by=[12]),
    backend(16, "active", wait_event_type="Lock", blocked_by=[15, 0]),
    backend(20, None, backend_type="autovacuum worker"),
    backend(21, "active", backend_type="walsender"),
    backend(30, "idle", superuser=True, usename="postgres"),
]


class FakeClient(PostgresClient):
    """A client whose server is a list of rows: counts the statements, never connects."""

    def __init__(self, rows: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(PostgresParams(dsn="host=127.0.0.1 port=1 user=nobody"), **kwargs)
        self.rows = rows
        self.statements: list[Any] = []

    def query(self, statement: Any, params: Any = None) -> list[dict[str, Any]]:
        self.statements.append(statement)
        if statement == q.ACTIVITY:
            return [dict(r) for r in self.rows]
        return []


def measure(kind: str, client: PostgresClient, **params: Any) -> list[Reading]:
    spec = DEFAULT.probes[kind]
    return spec.factory(spec.params(**params), client, time.time).measure()


def pids(readings: list[Reading]) -> list[int]:
    return sorted(r.details["pid"] for r in readings)


def test_backend_probes_select_what_their_own_statements_selected() -> None:
    client = FakeClient(SERVER)
    assert pids(measure("postgres.idle", client)) == [10]
    assert pids(measure("postgres.idle", client, include_superusers=True)) == [10, 30]
    assert pids(measure("postgres.idle_in_transaction", client)) == [12, 13]
    assert pids(measure("postgres.long_query", client)) == [14, 15, 16]
    [idle] = measure("postgres.idle", client)
    assert idle.value == 10.0  # against the server's now, not ours
    [long_query] = [r for r in measure("postgres.long_query", client) if r.details["pid"] == 14]
    assert long_query.value == 28.0  # query_start is the mark


def test_blocking_finds_roots_from_the_blocked_by_column() -> None:
    client = FakeClient(SERVER)
    [root] = measure("postgres.blocking", client)
    assert (root.subject, root.value, root.details["blocked"], root.details["waiting"]) == ("pid:12", 2.0, [15], False)
    everyone = {r.subject: r.value for r in measure("postgres.blocking", client, roots_only=False)}
    assert everyone == {"pid:12": 2.0, "pid:15": 1.0}  # 0 is a prepared transaction: nothing to signal


def test_connections_count_client_slots_ours_included() -> None:
    client = FakeClient(SERVER)
    [reading] = measure("postgres.connections", client)
    d = reading.details
    assert (d["used"], d["usable"], d["max_connections"], d["reserved"]) == (9, 95, 100, 5)
    assert d["by_state"] == {"idle": 3, "active": 4, "idle in transaction": 1, "idle in transaction (aborted)": 1}
    assert reading.value == pytest.approx(9 / 95 * 100)


def test_an_empty_server_still_has_its_settings() -> None:
    activity = Activity.of([SETTINGS | {"pid": None}])  # the LEFT JOIN's row when no backend is visible
    assert (activity.rows, activity.max_connections, activity.hidden) == ((), 100, 0)


def test_hidden_sessions_are_a_permission_error_for_every_view() -> None:
    client = FakeClient([*SERVER, backend(40, None, backend_type=None, hidden=True)])
    for kind in ("postgres.idle", "postgres.blocking", "postgres.connections"):
        with pytest.raises(PostgresPermissionError, match="cannot see 1 other session"):
            measure(kind, client)


def test_rows_are_read_only() -> None:
    activity = FakeClient(SERVER).activity()
    with pytest.raises(TypeError):
        activity.rows[0]["state"] = "idle"  # type: ignore[index]
    assert activity.by_pid[15]["blocked_by"] == (12,)
    assert "max_connections" not in activity.rows[0]


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_ten_backend_rules_in_one_cycle_read_once_and_the_next_cycle_again() -> None:
    clock = Clock()
    client = FakeClient(SERVER, monotonic=clock)
    kinds = ["postgres.idle", "postgres.idle_in_transaction", "postgres.long_query", "postgres.blocking",
             "postgres.connections"] * 2
    for kind in kinds:
        measure(kind, client)
    assert (client.statements.count(q.ACTIVITY), client.activity_reads) == (1, 1)
    clock.now += 5.0
    for kind in kinds:
        measure(kind, client)
    assert client.statements.count(q.ACTIVITY) == 2


def test_a_failed_read_is_not_kept() -> None:
    client = FakeClient(SERVER)
    client.rows = []  # Activity.of fails on an empty answer, as on a broken one
    with pytest.raises(IndexError):
        client.activity()
    client.rows = SERVER
    assert len(client.activity().rows) == len(SERVER)
    assert client.activity_reads == 2


@pytest.mark.parametrize(("signal", "reads"), [("terminate", 2), ("cancel", 2), ("dry_run", 1)])
def test_signalling_backends_makes_the_next_probe_read_afresh(signal: str, reads: int) -> None:
    client = FakeClient(SERVER)
    [reading] = measure("postgres.idle", client)
    found = _backend(reading)
    assert found is not None
    _signal(client, [found], signal, with_query=False)
    measure("postgres.idle", client)
    assert client.activity_reads == reads
