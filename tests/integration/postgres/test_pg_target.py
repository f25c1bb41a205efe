"""The target client against real servers: session settings, timeouts, reconnects and backoff."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.integration.postgres.pgenv import Cluster, PgEnv, wait_until
from watchdogd.families.postgres.target import (
    PostgresClient,
    PostgresError,
    PostgresParams,
    PostgresTimeout,
    PostgresUnavailable,
    connect,
)

pytestmark = pytest.mark.integration

ClientFor = Callable[..., PostgresClient]


def test_session_is_watchdogd_read_only_utc_with_statement_timeout(pg: PgEnv, client_for: ClientFor) -> None:
    client = client_for(pg.role("watchdog", "pg_monitor"), statement_timeout="300ms")
    [row] = client.query("SELECT pg_backend_pid() AS pid, current_setting('application_name') AS app,"
                         " current_setting('TimeZone') AS tz, current_setting('statement_timeout') AS st,"
                         " current_setting('default_transaction_read_only') AS ro")
    assert (row["app"], row["tz"], row["st"], row["ro"]) == ("watchdogd", "UTC", "300ms", "on")
    [seen] = pg.admin.execute("SELECT application_name FROM pg_stat_activity WHERE pid = %s", [row["pid"]]).fetchall()
    assert seen == ("watchdogd",)
    with pytest.raises(PostgresTimeout, match="statement_timeout"):
        client.query("SELECT pg_sleep(5)")
    with pytest.raises(PostgresError, match="read-only"):
        client.query("CREATE TEMP TABLE nope (id int)")
    assert client.query("SELECT 1 AS one") == [{"one": 1}]  # the connection survived both errors


def test_dsn_application_name_is_overridden(pg: PgEnv) -> None:
    role = pg.role("watchdog")
    client = PostgresClient(PostgresParams(dsn=pg.dsn(role, application_name="pretend")))
    try:
        [row] = client.query("SELECT current_setting('application_name') AS app")
    finally:
        client.close()
    assert row["app"] == "watchdogd"


def test_a_killed_connection_is_replaced_transparently(pg: PgEnv, client_for: ClientFor) -> None:
    client = client_for(pg.role("watchdog"))
    [first] = client.query("SELECT pg_backend_pid() AS pid")
    pg.admin.execute("SELECT pg_terminate_backend(%s)", [first["pid"]])  # our own test role's backend
    wait_until(lambda: not pg.alive(first["pid"]), 5, "the daemon's backend to exit")
    [second] = client.query("SELECT pg_backend_pid() AS pid")
    assert second["pid"] != first["pid"]


def test_server_stopped_backs_off_then_recovers(cluster: Cluster) -> None:
    now = [1000.0]
    client = PostgresClient(PostgresParams(dsn=cluster.dsn(), max_backoff="4s"), monotonic=lambda: now[0])
    try:
        assert client.query("SELECT 1 AS one") == [{"one": 1}]
        cluster.stop()
        with pytest.raises(PostgresUnavailable, match=r"^reconnecting in 1s: "):
            client.query("SELECT 1")
        with pytest.raises(PostgresUnavailable, match=r"^reconnecting in 1s: "):
            client.query("SELECT 1")  # inside the backoff: no new attempt, the wait is shown
        errors = []
        for _ in range(4):
            now[0] += 10
            with pytest.raises(PostgresUnavailable) as caught:
                client.query("SELECT 1")
            errors.append(str(caught.value).split(":")[0])
        assert errors == ["reconnecting in 2s", "reconnecting in 4s", "reconnecting in 4s", "reconnecting in 4s"]
        cluster.start()
        now[0] += 10
        assert client.query("SELECT 1 AS one") == [{"one": 1}]
    finally:
        client.close()


def test_connect_never_blocks_or_raises_for_a_dead_server() -> None:
    client = connect(PostgresParams(dsn="host=127.0.0.1 port=1 user=nobody connect_timeout=2"))
    try:
        with pytest.raises(PostgresUnavailable, match="reconnecting in 1s: .*refused"):
            client.query("SELECT 1")
    finally:
        client.close()


def test_a_closed_client_never_reconnects(pg: PgEnv) -> None:
    role = pg.role("watchdog")
    client = PostgresClient(PostgresParams(dsn=pg.dsn(role)))
    client.query("SELECT 1")
    client.close()
    client.close()  # idempotent
    with pytest.raises(PostgresUnavailable, match="was closed"):
        client.query("SELECT 1")
    wait_until(lambda: pg.admin.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s",
                                        [role]).fetchone() == (0,), 5, "the closed connection's backend to exit")


def test_a_fresh_ping_ends_the_shared_connection_backoff(cluster: Cluster) -> None:
    """postgres.up sees the server back first; the other rules' next query must not wait out the backoff."""
    now = [1000.0]
    client = PostgresClient(PostgresParams(dsn=cluster.dsn()), monotonic=lambda: now[0])
    try:
        cluster.stop()
        for _ in range(5):
            with pytest.raises(PostgresUnavailable):
                client.query("SELECT 1")
            now[0] += 100
        with pytest.raises(PostgresUnavailable, match=r"^reconnecting in 32s"):
            client.query("SELECT 1")
        cluster.start()
        with pytest.raises(PostgresUnavailable, match=r"^reconnecting in 32s"):
            client.query("SELECT 1")  # the clock stands still: the shared connection is still backing off
        assert client.ping().server_version > 0  # a fresh connection is never held back
        assert client.query("SELECT 1 AS one") == [{"one": 1}]  # and it lifted the backoff
    finally:
        client.close()


def test_retry_within_caps_the_backoff_of_a_stopped_server(cluster: Cluster) -> None:
    now = [1000.0]
    client = PostgresClient(PostgresParams(dsn=cluster.dsn()), monotonic=lambda: now[0])
    client.retry_within(2.5)
    try:
        cluster.stop()
        delays = []
        for _ in range(4):
            with pytest.raises(PostgresUnavailable) as caught:
                client.query("SELECT 1")
            delays.append(str(caught.value).split(":")[0])
            now[0] += 2.5
        assert delays == ["reconnecting in 1s", "reconnecting in 2s", "reconnecting in 2.5s", "reconnecting in 2.5s"]
        cluster.start()
        now[0] += 2.5
        assert client.query("SELECT 1 AS one") == [{"one": 1}]  # within one capped wait of the server's return
    finally:
        client.close()
