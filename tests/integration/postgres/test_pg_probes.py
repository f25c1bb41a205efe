"""PostgreSQL probes against the machine's real server, with backends the test holds open."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.integration.postgres.pgenv import Cluster, PgEnv, wait_until
from tests.integration.postgres.sessions import busy
from watchdogd.families.postgres.target import (
    PostgresClient,
    PostgresParams,
    PostgresPermissionError,
    PostgresUnavailable,
)
from watchdogd.model import Reading
from watchdogd.registry import DEFAULT

pytestmark = pytest.mark.integration

ClientFor = Callable[..., PostgresClient]


def measure(kind: str, client: PostgresClient, **params: Any) -> list[Reading]:
    spec = DEFAULT.probes[kind]
    return spec.factory(spec.params(**params), client, time.time).measure()


def by_pid(readings: list[Reading]) -> dict[int, Reading]:
    return {r.details["pid"]: r for r in readings}


@pytest.fixture
def monitor(pg: PgEnv, client_for: ClientFor) -> PostgresClient:
    """The daemon's client, as the least-privileged role the docs prescribe."""
    return client_for(pg.role("watchdog", "pg_monitor", "pg_signal_backend"))


def test_idle_reports_each_idle_backend_with_its_identity(pg: PgEnv, monitor: PostgresClient) -> None:
    app = pg.role("app")
    idle = [pg.connect(app), pg.connect(app)]
    active = pg.connect(app)
    with busy(pg, active, "SELECT pg_sleep(30)"):
        readings = measure("postgres.idle", monitor, users=[pg.prefix + "*"])
    found = by_pid(readings)
    assert set(found) == set(pg.pids(*idle))
    for conn in idle:
        reading = found[conn.info.backend_pid]
        assert reading.subject == f"pid:{conn.info.backend_pid}"
        assert reading.value >= 0
        row = pg.admin.execute("SELECT backend_start, state_change FROM pg_stat_activity WHERE pid = %s",
                               [conn.info.backend_pid]).fetchone()
        assert row is not None
        assert reading.details["backend_start"] == row[0].isoformat()
        assert reading.details["mark"] == row[1].isoformat()
        assert reading.details | {"pid": 0} == reading.details | {
            "pid": 0, "check": "idle", "user": app, "database": "postgres", "application": "wdt-app",
            "client": "127.0.0.1", "state": "idle"}


def test_idle_age_grows_while_idle(pg: PgEnv, monitor: PostgresClient) -> None:
    conn = pg.connect(pg.role("app"))
    first = by_pid(measure("postgres.idle", monitor, users=[pg.prefix + "*"]))[conn.info.backend_pid].value
    later = wait_until(lambda: (v := by_pid(measure("postgres.idle", monitor, users=[pg.prefix + "*"]))
                                [conn.info.backend_pid].value) > first + 0.2 and v, 5, "the idle age to grow")
    assert later > first


def test_filters_users_databases_applications_addresses_and_superusers(pg: PgEnv, monitor: PostgresClient) -> None:
    app, other, sup = pg.role("app"), pg.role("other"), pg.role("sup", superuser=True)
    db = pg.database("db")
    plain = pg.connect(app)
    batch = pg.connect(app, application_name="batch-nightly")
    elsewhere = pg.connect(app, dbname=db)
    excluded_user = pg.connect(other)
    superuser = pg.connect(sup)
    local = psycopg.connect(f"host=/var/run/postgresql user={app} dbname=postgres application_name=wdt-app",
                            autocommit=True)
    pg.sessions.append(local)
    mine = [pg.prefix + "*"]

    def pids(**params: Any) -> set[int]:
        return set(by_pid(measure("postgres.idle", monitor, **params)))

    assert pids(users=mine) == set(pg.pids(plain, batch, elsewhere, excluded_user, local))
    assert pids(users=mine, include_superusers=True) == set(
        pg.pids(plain, batch, elsewhere, excluded_user, local, superuser))
    assert pids(users=mine, exclude_users=[other]) == set(pg.pids(plain, batch, elsewhere, local))
    assert pids(users=mine, databases=[db]) == {elsewhere.info.backend_pid}
    assert pids(users=mine, exclude_databases=[db]) == set(pg.pids(plain, batch, excluded_user, local))
    assert pids(users=mine, application_names=["batch-*"]) == {batch.info.backend_pid}
    assert pids(users=mine, exclude_application_names=["batch-*"]) == set(
        pg.pids(plain, elsewhere, excluded_user, local))
    assert pids(users=mine, client_addrs=["local"]) == {local.info.backend_pid}
    assert pids(users=mine, client_addrs=["127.0.0.0/8"]) == set(pg.pids(plain, batch, elsewhere, excluded_user))
    assert pids(users=mine, exclude_client_addrs=["127.0.0.1", "local"]) == set()
    assert pids(users=mine, client_addrs=["10.0.0.0/8"]) == set()


def test_never_reports_the_daemons_own_backends(pg: PgEnv, monitor: PostgresClient) -> None:
    monitor.query("SELECT 1")  # the shared connection now exists and is idle between statements
    other_daemon = pg.connect(pg.role("app"), application_name="watchdogd")
    readings = measure("postgres.idle", monitor, users=[pg.prefix + "*"])
    assert other_daemon.info.backend_pid not in by_pid(readings)
    assert not [r for r in readings if r.details["application"] == "watchdogd"]


def test_idle_in_transaction_reports_both_states(pg: PgEnv, monitor: PostgresClient) -> None:
    app = pg.role("app")
    open_tx = pg.connect(app, autocommit=False)
    open_tx.execute("SELECT 1")
    aborted = pg.connect(app, autocommit=False)
    with pytest.raises(psycopg.errors.DivisionByZero):
        aborted.execute("SELECT 1/0")
    plain_idle = pg.connect(app)
    found = by_pid(measure("postgres.idle_in_transaction", monitor, users=[pg.prefix + "*"]))
    assert set(found) == set(pg.pids(open_tx, aborted))
    assert found[open_tx.info.backend_pid].details["state"] == "idle in transaction"
    assert found[aborted.info.backend_pid].details["state"] == "idle in transaction (aborted)"
    assert plain_idle.info.backend_pid not in found


def test_long_query_reports_active_backends_from_query_start(pg: PgEnv, monitor: PostgresClient) -> None:
    app = pg.role("app")
    idle = pg.connect(app)
    conn = pg.connect(app)
    with busy(pg, conn, "SELECT pg_sleep(30)"):
        wait_until(lambda: by_pid(measure("postgres.long_query", monitor, users=[pg.prefix + "*"]))
                   .get(conn.info.backend_pid, Reading("", 0)).value > 0.3, 5, "the query to age")
        found = by_pid(measure("postgres.long_query", monitor, users=[pg.prefix + "*"]))
    assert set(found) == {conn.info.backend_pid}
    assert idle.info.backend_pid not in found
    assert found[conn.info.backend_pid].details["check"] == "long_query"


def test_blocking_chain_finds_the_root_blocker(pg: PgEnv, monitor: PostgresClient) -> None:
    app = pg.role("app")
    db = pg.database("locks", owner=app)
    setup = pg.connect(app, dbname=db)
    setup.execute("CREATE TABLE t (id int)")
    root = pg.connect(app, dbname=db, autocommit=False, application_name="root")
    root.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
    middle = pg.connect(app, dbname=db, autocommit=False)
    tail = pg.connect(app, dbname=db)
    try:
        with busy(pg, middle, "LOCK TABLE t IN ACCESS EXCLUSIVE MODE", wait_event_type="Lock"), \
                busy(pg, tail, "SELECT count(*) FROM t", wait_event_type="Lock"):
            roots = measure("postgres.blocking", monitor, users=[pg.prefix + "*"])
            everyone = by_pid(measure("postgres.blocking", monitor, users=[pg.prefix + "*"], roots_only=False))
    finally:
        root.rollback()
    [blocker] = roots
    assert blocker.subject == f"pid:{root.info.backend_pid}"
    assert blocker.value == 2  # the middle waiter and the tail behind it
    assert middle.info.backend_pid in blocker.details["blocked"]
    assert blocker.details["waiting"] is False
    assert blocker.details["check"] == "blocking"
    assert blocker.details["mark"] is not None  # xact_start of the transaction holding the lock
    assert everyone[middle.info.backend_pid].details["waiting"] is True
    assert root.info.backend_pid in everyone


def test_connections_counts_per_database_user_and_state(pg: PgEnv, monitor: PostgresClient) -> None:
    app = pg.role("app")
    conns = [pg.connect(app) for _ in range(3)]
    [reading] = measure("postgres.connections", monitor)
    d = reading.details
    max_connections = int(pg.admin.execute("SHOW max_connections").fetchone()[0])  # type: ignore[index]
    reserved = int(pg.admin.execute("SHOW superuser_reserved_connections").fetchone()[0])  # type: ignore[index]
    assert (d["max_connections"], d["reserved"], d["usable"]) == (max_connections, reserved,
                                                                   max_connections - reserved)
    assert d["by_user"][app] == len(conns)
    assert reading.value == pytest.approx(d["used"] / d["usable"] * 100)
    assert d["used"] >= len(conns) + 1
    assert sum(d["by_state"].values()) == d["used"]


def test_up_measures_a_fresh_connection(pg: PgEnv, monitor: PostgresClient, client_for: ClientFor) -> None:
    [reading] = measure("postgres.up", monitor)
    assert reading.subject == "127.0.0.1:5432/postgres"
    assert 0 < reading.value < 5
    assert reading.details["in_recovery"] is False
    assert reading.details["server_version"] >= 120000
    [shared] = measure("postgres.up", monitor, new_connection=False)
    assert 0 < shared.value < 5
    refused = PostgresClient(PostgresParams(dsn="host=127.0.0.1 port=1 user=nobody"))
    try:
        with pytest.raises(PostgresUnavailable, match="refused"):
            measure("postgres.up", refused)
    finally:
        refused.close()


def test_role_without_pg_monitor_is_a_clear_permission_error(pg: PgEnv, client_for: ClientFor) -> None:
    blind = client_for(pg.role("blind"))
    pg.connect(pg.role("app"))
    for kind in ("postgres.idle", "postgres.long_query", "postgres.idle_in_transaction", "postgres.connections",
                 "postgres.blocking"):
        with pytest.raises(PostgresPermissionError, match="GRANT pg_monitor"):
            measure(kind, blind)


def test_dead_tuples_found_per_table(pg: PgEnv, client_for: ClientFor) -> None:
    app = pg.role("app")
    db = pg.database("dead", owner=app)
    conn = pg.connect(app, dbname=db)
    conn.execute("CREATE TABLE churn (id int) WITH (autovacuum_enabled = off)")
    conn.execute("CREATE TABLE calm (id int) WITH (autovacuum_enabled = off)")
    conn.execute("INSERT INTO churn SELECT generate_series(1, 4000)")
    conn.execute("INSERT INTO calm SELECT generate_series(1, 4000)")
    conn.execute("DELETE FROM churn WHERE id <= 3000")
    conn.close()  # a backend flushes its table statistics when it exits
    client = client_for(pg.role("watchdog", "pg_monitor"), dbname=db)

    def churn() -> Reading | None:
        return {r.subject: r for r in measure("postgres.dead_tuples", client)}.get("public.churn")

    reading = wait_until(churn, 10, "the dead tuples of public.churn in the statistics")
    assert reading.value == 3000
    assert reading.details["dead_ratio"] == pytest.approx(0.75)
    assert reading.details["relid"] > 0
    assert "public.calm" not in {r.subject for r in measure("postgres.dead_tuples", client)}
    [ratio] = measure("postgres.dead_ratio", client, tables=["public.ch*"])
    assert ratio.value == pytest.approx(0.75)
    assert measure("postgres.dead_ratio", client, exclude_tables=["public.churn"]) == []
    assert measure("postgres.dead_tuples", client, min_dead_tuples=5000) == []


def test_replication_probes_on_a_server_without_replicas(monitor: PostgresClient) -> None:
    assert measure("postgres.replication_lag", monitor) == []
    assert measure("postgres.replication_lag_bytes", monitor) == []
    [count] = measure("postgres.replicas", monitor)
    assert (count.subject, count.value) == ("replicas", 0)


def test_replication_lag_on_a_real_primary_and_standby(cluster: Cluster) -> None:
    standby = Cluster(replica_of=cluster, settings={"cluster_name": "wdt_standby", "hot_standby": "on"})
    primary_client = PostgresClient(PostgresParams(dsn=cluster.dsn()))
    standby_client = PostgresClient(PostgresParams(dsn=standby.dsn()))
    try:
        standby.start()
        subject = "wdt_standby@127.0.0.1"

        def streaming() -> list[Reading]:
            return [r for r in measure("postgres.replication_lag", primary_client) if r.details["state"] == "streaming"]

        [lag] = wait_until(streaming, 30, "the standby to stream")
        assert lag.subject == subject
        assert lag.value >= 0
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE filler AS SELECT generate_series(1, 1000) AS id")
        [lag_bytes] = measure("postgres.replication_lag_bytes", primary_client)
        assert lag_bytes.subject == subject
        assert lag_bytes.value >= 0
        [count] = measure("postgres.replicas", primary_client)
        assert count.value == 1
        assert count.details["streaming"] == [subject]
        assert measure("postgres.replication_lag", primary_client, replicas=["other*"]) == []
        # On the standby: its own replay delay, under the subject "standby".
        own = wait_until(lambda: [r for r in measure("postgres.replication_lag", standby_client)
                                  if r.subject == "standby" and r.details["replay_bytes"] == 0], 30,
                         "the standby to replay everything")
        assert own[0].value >= 0
        [up] = measure("postgres.up", standby_client)
        assert up.details["in_recovery"] is True
    finally:
        primary_client.close()
        standby_client.close()
        standby.destroy()
