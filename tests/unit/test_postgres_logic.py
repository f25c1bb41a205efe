"""Pure parts of the PostgreSQL family: lock graphs, replica names, refusal reasons, reading shapes, backoff."""

from __future__ import annotations

from typing import Any

import pytest

from watchdogd.families.postgres import queries as pgqueries
from watchdogd.families.postgres.actions import LEFT_BREACH, _backend, _refusal
from watchdogd.families.postgres.probes import PROBES, _reachable, _replica_subjects, _top
from watchdogd.families.postgres.target import PostgresClient, PostgresParams, PostgresUnavailable
from watchdogd.model import Cardinality, Reading, Unit
from watchdogd.registry import DEFAULT


def test_tables_declare_the_family() -> None:
    assert set(PROBES) == {
        "postgres.up", "postgres.connections", "postgres.idle", "postgres.idle_in_transaction",
        "postgres.long_query", "postgres.blocking", "postgres.replication_lag", "postgres.replication_lag_bytes",
        "postgres.replicas", "postgres.dead_tuples", "postgres.dead_ratio",
    }
    for name in ("postgres.idle", "postgres.idle_in_transaction", "postgres.long_query", "postgres.blocking"):
        assert PROBES[name].cardinality is Cardinality.HIGH
    assert PROBES["postgres.idle"].unit is Unit.SECONDS
    assert PROBES["postgres.connections"].unit is Unit.PERCENT
    assert PROBES["postgres.dead_ratio"].unit is Unit.RATIO
    assert {spec.target_kind for spec in PROBES.values()} == {"postgres"}
    assert {name for name in DEFAULT.actions if name.startswith("postgres.")} == {
        "postgres.terminate", "postgres.cancel", "postgres.vacuum"}
    # Every breach a probe can record has a re-check and an explanation.
    assert set(pgqueries.BREACH_CHECKS) == set(LEFT_BREACH) == {
        "idle", "idle_in_transaction", "long_query", "blocking"}


def test_reachable_counts_the_whole_chain_and_survives_cycles() -> None:
    edges = {1: {2}, 2: {3, 4}, 3: set(), 5: {6}, 6: {5}}
    assert _reachable(1, edges) == {2, 3, 4}
    assert _reachable(2, edges) == {3, 4}
    assert _reachable(5, edges) == {6}  # a deadlock cycle ends


def test_replica_subjects_are_stable_and_break_ties_by_port() -> None:
    rows: list[dict[str, Any]] = [
        {"application_name": "pg2", "client_addr": "10.0.0.2", "client_port": 5000},
        {"application_name": "walreceiver", "client_addr": "10.0.0.3", "client_port": 5001},
        {"application_name": "walreceiver", "client_addr": "10.0.0.3", "client_port": 5002},
        {"application_name": "", "client_addr": None, "client_port": -1},
    ]
    assert [s for s, _ in _replica_subjects(rows)] == [
        "pg2@10.0.0.2", "walreceiver@10.0.0.3:5001", "walreceiver@10.0.0.3:5002", "replica@local"]


def test_top_folds_the_long_tail() -> None:
    counts = {f"db{i:02d}": i for i in range(25)}
    top = _top(counts)
    assert len(top) == 21
    assert top["db24"] == 24
    assert top["(other)"] == sum(range(5))


def signal_row(**overrides: Any) -> dict[str, Any]:
    base = {"alive": True, "same_backend": True, "client": True, "same_app": True, "same_superuser": True,
            "breaching": True,
            "superuser": False, "we_are_superuser": False, "may_signal": True, "app_now": "web",
            "state": "active", "usename": "app", "role": "watchdogd"}
    return base | overrides


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"alive": False, "same_backend": False}, (True, "gone: the backend has already exited")),
    ({"same_backend": False}, (True, "kept: the pid now belongs to another backend")),
    ({"same_app": False, "app_now": "pgbouncer"},
     (True, "kept: application_name changed to 'pgbouncer' since it was measured")),
    ({"same_superuser": False}, (True, "kept: app became a superuser since it was measured")),
    ({"breaching": False}, (True, "kept: it was busy since it was measured (now active)")),
    ({"superuser": True, "usename": "postgres"},
     (False, "permission denied: postgres is a superuser, and only a superuser may signal its backends")),
    ({"may_signal": False},
     (False, "permission denied: role watchdogd needs pg_signal_backend (or membership in role app) to signal it")),
    ({"superuser": True, "we_are_superuser": True}, None),
    ({}, None),
])
def test_refusal_reasons_first_match_wins(overrides: dict[str, Any], expected: tuple[bool, str] | None) -> None:
    assert _refusal(signal_row(**overrides), "idle") == expected


@pytest.mark.parametrize("details", [
    {},
    {"pid": "12", "backend_start": "2024-01-01T00:00:00+00:00", "check": "idle"},
    {"pid": 12, "check": "idle"},
    {"pid": 12, "backend_start": "2024-01-01T00:00:00+00:00", "check": "connections"},
])
def test_only_backend_readings_with_identity_and_a_known_check_are_acted_on(details: dict[str, Any]) -> None:
    assert _backend(Reading("x", 1.0, details)) is None


def test_backend_reading_keeps_identity_and_mark() -> None:
    backend = _backend(Reading("pid:12", 5.0, {
        "pid": 12, "backend_start": "2024-01-01T00:00:00+00:00", "check": "blocking", "mark": None,
        "application": "web"}))
    assert backend is not None
    assert (backend.pid, backend.check, backend.mark, backend.application) == (12, "blocking", None, "web")


def test_backoff_doubles_up_to_max_backoff_and_says_so() -> None:
    now = [0.0]
    client = PostgresClient(PostgresParams(dsn="host=127.0.0.1 port=1 user=nobody", max_backoff="5s"),
                            monotonic=lambda: now[0])
    messages = []
    for _ in range(5):
        with pytest.raises(PostgresUnavailable) as caught:
            client.query("SELECT 1")
        messages.append(str(caught.value).split(": ", 1)[0])
        now[0] += 0.5
        with pytest.raises(PostgresUnavailable, match="reconnecting in"):
            client.query("SELECT 1")  # waiting: no connection attempt, the remaining wait is shown
        now[0] += 100
    assert messages == ["reconnecting in 1s", "reconnecting in 2s", "reconnecting in 4s", "reconnecting in 5s",
                        "reconnecting in 5s"]
    assert "Connection refused" in str(caught.value)
    client.close()
