"""PostgreSQL actions on real backends: only the measured breach is ever signalled."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.integration.postgres.pgenv import PgEnv, wait_until
from tests.integration.postgres.sessions import SWALLOW_CANCELS, busy
from watchdogd.families.postgres.target import PostgresClient
from watchdogd.model import ActionResult, Reading
from watchdogd.registry import DEFAULT

pytestmark = pytest.mark.integration

ClientFor = Callable[..., PostgresClient]


def measure(kind: str, client: PostgresClient, **params: Any) -> list[Reading]:
    spec = DEFAULT.probes[kind]
    return spec.factory(spec.params(**params), client, time.time).measure()


def act(kind: str, client: PostgresClient, readings: list[Reading], *, dry_run: bool = False,
        **params: Any) -> ActionResult:
    spec = DEFAULT.actions[kind]
    return spec.factory(spec.params(**params), client, time.time).run(readings, dry_run=dry_run)


def items(result: ActionResult) -> dict[str, tuple[bool, str]]:
    return {item.subject: (item.ok, item.detail) for item in result.items}


def pid_subject(conn: psycopg.Connection[Any]) -> str:
    return f"pid:{conn.info.backend_pid}"


@pytest.fixture
def watchdog(pg: PgEnv, client_for: ClientFor) -> PostgresClient:
    return client_for(pg.role("watchdog", "pg_monitor", "pg_signal_backend"))


def test_terminate_kills_idle_backends_but_not_one_that_woke_up(pg: PgEnv, watchdog: PostgresClient) -> None:
    app = pg.role("app")
    stale, woke = pg.connect(app), pg.connect(app)
    readings = measure("postgres.idle", watchdog, users=[pg.prefix + "*"])
    assert {r.subject for r in readings} == {pid_subject(stale), pid_subject(woke)}
    woke.execute("SELECT 1")  # served a request between the probe and the action: a new idle period
    result = act("postgres.terminate", watchdog, readings)
    outcome = items(result)
    assert outcome[pid_subject(stale)][0] is True
    assert outcome[pid_subject(stale)][1].startswith("terminated; exited within")
    assert outcome[pid_subject(woke)] == (True, "kept: it was busy since it was measured (now idle)")
    assert result.ok and result.detail.startswith("terminated 1 of 2 backend(s)")
    assert not pg.alive(stale.info.backend_pid)
    assert pg.alive(woke.info.backend_pid)
    info = next(i.info for i in result.items if i.subject == pid_subject(stale))
    assert info | {"seconds": 0} == {
        "pid": stale.info.backend_pid, "backend_start": readings[0].details["backend_start"]
        if readings[0].subject == pid_subject(stale) else readings[1].details["backend_start"],
        "user": app, "database": "postgres", "application": "wdt-app", "client": "127.0.0.1", "state": "idle",
        "check": "idle", "seconds": 0}
    assert "query" not in info


def test_a_role_that_became_superuser_since_the_probe_is_left_alone(pg: PgEnv, client_for: ClientFor) -> None:
    admin_daemon = client_for(pg.role("daemon", superuser=True))  # could signal a superuser's backend
    app = pg.role("app")
    conn = pg.connect(app)
    readings = measure("postgres.idle", admin_daemon, users=[app])
    pg.admin.execute(f'ALTER ROLE "{app}" SUPERUSER')  # excluded by default from now on
    result = act("postgres.terminate", admin_daemon, readings)
    assert items(result) == {pid_subject(conn): (True, f"kept: {app} became a superuser since it was measured")}
    assert pg.alive(conn.info.backend_pid)


def test_terminate_never_hits_a_pid_with_another_backend_start(pg: PgEnv, watchdog: PostgresClient) -> None:
    conn = pg.connect(pg.role("app"))
    [reading] = measure("postgres.idle", watchdog, users=[pg.prefix + "*"])
    reused = dataclasses.replace(reading, details={**reading.details, "backend_start": "2001-01-01T00:00:00+00:00"})
    result = act("postgres.terminate", watchdog, [reused])
    assert items(result) == {pid_subject(conn): (True, "kept: the pid now belongs to another backend")}
    assert pg.alive(conn.info.backend_pid)


def test_dry_run_reports_exactly_what_would_be_terminated_and_touches_nothing(
    pg: PgEnv, watchdog: PostgresClient
) -> None:
    app = pg.role("app")
    stale, woke = pg.connect(app), pg.connect(app)
    readings = measure("postgres.idle", watchdog, users=[pg.prefix + "*"])
    woke.execute("SELECT 1")
    result = act("postgres.terminate", watchdog, readings, dry_run=True)
    assert items(result) == {pid_subject(stale): (True, "would terminate"),
                             pid_subject(woke): (True, "kept: it was busy since it was measured (now idle)")}
    assert result.detail.startswith("would terminate 1 of 2 backend(s)")
    assert pg.alive(stale.info.backend_pid) and pg.alive(woke.info.backend_pid)


def test_record_query_text_only_when_asked(pg: PgEnv, watchdog: PostgresClient) -> None:
    conn = pg.connect(pg.role("app"))
    conn.execute("SELECT 'secret-customer-name'")
    readings = measure("postgres.idle", watchdog, users=[pg.prefix + "*"])
    [without] = act("postgres.terminate", watchdog, readings, dry_run=True).items
    [with_text] = act("postgres.terminate", watchdog, readings, dry_run=True, record_query_text=True).items
    assert "query" not in without.info
    assert with_text.info["query"] == "SELECT 'secret-customer-name'"


def test_cancel_stops_a_long_query_and_keeps_the_session(pg: PgEnv, watchdog: PostgresClient) -> None:
    conn = pg.connect(pg.role("app"))
    with busy(pg, conn, "SELECT pg_sleep(60)") as running:
        readings = measure("postgres.long_query", watchdog, users=[pg.prefix + "*"])
        result = act("postgres.cancel", watchdog, readings, grace="5s")
        wait_until(running.done, 5, "the cancelled statement to return")
    assert isinstance(running.error, psycopg.errors.QueryCanceled)
    ok, detail = items(result)[pid_subject(conn)]
    assert ok and detail.startswith("cancelled; stopped within")
    assert pg.alive(conn.info.backend_pid)
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_cancel_then_terminate_a_query_that_ignores_cancel(pg: PgEnv, watchdog: PostgresClient) -> None:
    conn = pg.connect(pg.role("app"))
    subject, pid = pid_subject(conn), conn.info.backend_pid
    # Inside pg_sleep (wait event type Timeout), so inside the block that swallows the cancel: "active" alone
    # came before it, and a cancel that landed there ended the statement (seen once in CI).
    with busy(pg, conn, SWALLOW_CANCELS, wait_event_type="Timeout") as running:
        readings = measure("postgres.long_query", watchdog, users=[pg.prefix + "*"])
        started = time.monotonic()
        result = act("postgres.cancel", watchdog, readings, grace="1s")
        elapsed = time.monotonic() - started
        wait_until(running.done, 5, "the terminated statement to return")
    ok, detail = items(result)[subject]
    assert ok, detail
    assert detail.startswith("cancelled; still breaching after the 1s grace: terminated; exited within"), detail
    assert 1.0 <= elapsed < 4.0
    assert not pg.alive(pid)


def test_cancel_dry_run_says_what_would_happen(pg: PgEnv, watchdog: PostgresClient) -> None:
    conn = pg.connect(pg.role("app"))
    with busy(pg, conn, "SELECT pg_sleep(60)") as running:
        readings = measure("postgres.long_query", watchdog, users=[pg.prefix + "*"])
        result = act("postgres.cancel", watchdog, readings, dry_run=True, grace="3s")
        assert not running.done()
    assert items(result) == {
        pid_subject(conn): (True, "would cancel, then terminate if still breaching after 3s")}


def test_terminate_idle_in_transaction(pg: PgEnv, watchdog: PostgresClient) -> None:
    conn = pg.connect(pg.role("app"), autocommit=False)
    conn.execute("SELECT 1")
    readings = measure("postgres.idle_in_transaction", watchdog, users=[pg.prefix + "*"])
    result = act("postgres.terminate", watchdog, readings)
    assert items(result)[pid_subject(conn)][1].startswith("terminated")
    assert not pg.alive(conn.info.backend_pid)


def test_terminate_the_root_blocker_releases_the_chain(pg: PgEnv, watchdog: PostgresClient) -> None:
    app = pg.role("app")
    db = pg.database("locks", owner=app)
    pg.connect(app, dbname=db).execute("CREATE TABLE t (id int)")
    root = pg.connect(app, dbname=db, autocommit=False)
    root.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
    waiter = pg.connect(app, dbname=db)
    with busy(pg, waiter, "SELECT count(*) FROM t", wait_event_type="Lock") as running:
        readings = measure("postgres.blocking", watchdog, users=[pg.prefix + "*"])
        assert [r.subject for r in readings] == [pid_subject(root)]
        result = act("postgres.terminate", watchdog, readings)
        wait_until(running.done, 5, "the waiter to get its lock")
    assert items(result)[pid_subject(root)][1].startswith("terminated")
    assert running.error is None
    assert pg.alive(waiter.info.backend_pid)


def test_blocker_that_committed_is_not_terminated(pg: PgEnv, watchdog: PostgresClient) -> None:
    app = pg.role("app")
    db = pg.database("locks", owner=app)
    pg.connect(app, dbname=db).execute("CREATE TABLE t (id int)")
    root = pg.connect(app, dbname=db, autocommit=False)
    root.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
    waiter = pg.connect(app, dbname=db)
    with busy(pg, waiter, "SELECT count(*) FROM t", wait_event_type="Lock") as running:
        readings = measure("postgres.blocking", watchdog, users=[pg.prefix + "*"])
        root.commit()
        wait_until(running.done, 5, "the waiter to get its lock")
        result = act("postgres.terminate", watchdog, readings)
    ok, detail = items(result)[pid_subject(root)]
    assert ok and detail.startswith("kept: it no longer blocks anyone")
    assert pg.alive(root.info.backend_pid)


def test_without_pg_signal_backend_the_permission_error_is_clear(pg: PgEnv, client_for: ClientFor) -> None:
    weak = client_for(pg.role("weak", "pg_monitor"))
    victim = pg.connect(pg.role("app"))
    readings = measure("postgres.idle", weak, users=[pg.prefix + "app"])
    result = act("postgres.terminate", weak, readings)
    assert not result.ok
    ok, detail = items(result)[pid_subject(victim)]
    assert not ok
    assert detail == (f"permission denied: role {pg.prefix}weak needs pg_signal_backend "
                      f"(or membership in role {pg.prefix}app) to signal it")
    assert result.error is None  # a per-backend failure: each audit row carries its own item's reason
    assert result.detail == f"terminated 0 of 1 backend(s); 1 backend(s) not signalled: {detail}"
    assert pg.alive(victim.info.backend_pid)


def test_superuser_backends_are_refused_to_a_non_superuser(pg: PgEnv, watchdog: PostgresClient) -> None:
    sup = pg.role("sup", superuser=True)
    conn = pg.connect(sup)
    readings = measure("postgres.idle", watchdog, users=[sup], include_superusers=True)
    result = act("postgres.terminate", watchdog, readings)
    assert items(result) == {pid_subject(conn): (
        False, f"permission denied: {sup} is a superuser, and only a superuser may signal its backends")}
    assert pg.alive(conn.info.backend_pid)


def test_readings_that_are_not_backends_are_refused(watchdog: PostgresClient) -> None:
    result = act("postgres.terminate", watchdog, [Reading("connections", 99.0, {"used": 3})])
    assert not result.ok
    assert items(result)["connections"][1].startswith("not a backend reading: postgres.terminate acts on")


def _dead_table(pg: PgEnv, owner: str, db: str) -> None:
    conn = pg.connect(owner, dbname=db)
    conn.execute("CREATE TABLE churn (id int) WITH (autovacuum_enabled = off)")
    conn.execute("INSERT INTO churn SELECT generate_series(1, 5000)")
    conn.execute("DELETE FROM churn WHERE id <= 4000")
    conn.close()  # flushes the table statistics


def test_vacuum_cleans_dead_tuples(pg: PgEnv, client_for: ClientFor) -> None:
    owner = pg.role("owner", "pg_monitor")
    db = pg.database("vac", owner=owner)
    _dead_table(pg, owner, db)
    client = client_for(owner, dbname=db)
    readings = wait_until(lambda: measure("postgres.dead_tuples", client), 10, "dead tuples in the statistics")
    dry = act("postgres.vacuum", client, readings, dry_run=True)
    assert items(dry) == {"public.churn": (True, "would VACUUM (ANALYZE) public.churn")}
    result = act("postgres.vacuum", client, readings)
    ok, detail = items(result)["public.churn"]
    assert ok and detail.startswith("vacuumed (VACUUM (ANALYZE)) in"), detail
    assert result.items[0].info["dead_tuples"] == 4000
    wait_until(lambda: measure("postgres.dead_tuples", client) == [], 10, "the dead tuples to be gone")


def test_vacuum_without_ownership_is_a_permission_error(pg: PgEnv, client_for: ClientFor) -> None:
    owner = pg.role("owner")
    db = pg.database("vac", owner=owner)
    _dead_table(pg, owner, db)
    watchdog = client_for(pg.role("watchdog", "pg_monitor", "pg_signal_backend"), dbname=db)
    readings = wait_until(lambda: measure("postgres.dead_tuples", watchdog), 10, "dead tuples in the statistics")
    for dry_run in (True, False):
        result = act("postgres.vacuum", watchdog, readings, dry_run=dry_run)
        ok, detail = items(result)["public.churn"]
        assert not ok and not result.ok
        assert detail.startswith(f"permission denied: role {pg.prefix}watchdog may not VACUUM public.churn")
    assert [r.value for r in measure("postgres.dead_tuples", watchdog)] == [4000]


def test_vacuum_gives_up_on_a_locked_table_after_lock_timeout(pg: PgEnv, client_for: ClientFor) -> None:
    owner = pg.role("owner", "pg_monitor")
    db = pg.database("vac", owner=owner)
    _dead_table(pg, owner, db)
    client = client_for(owner, dbname=db)
    readings = wait_until(lambda: measure("postgres.dead_tuples", client), 10, "dead tuples in the statistics")
    holder = pg.connect(owner, dbname=db, autocommit=False)
    holder.execute("LOCK TABLE churn IN SHARE UPDATE EXCLUSIVE MODE")
    started = time.monotonic()
    result = act("postgres.vacuum", client, readings, lock_timeout="300ms")
    assert time.monotonic() - started < 3
    holder.rollback()
    ok, detail = items(result)["public.churn"]
    assert not ok and "lock_timeout" in detail, detail


def test_session_advisory_lock_holder_outside_a_transaction_is_found_and_terminated(
    pg: PgEnv, watchdog: PostgresClient
) -> None:
    app = pg.role("app")
    holder = pg.connect(app)
    holder.execute("SELECT pg_advisory_lock(4242)")  # a session lock: idle, no transaction, still blocking
    holder_pid = holder.info.backend_pid
    waiter = pg.connect(app)
    with busy(pg, waiter, "SELECT pg_advisory_lock(4242)", wait_event_type="Lock") as running:
        readings = measure("postgres.blocking", watchdog, users=[pg.prefix + "*"])
        assert [(r.subject, r.value, r.details["mark"]) for r in readings] == [(f"pid:{holder_pid}", 1.0, None)]
        result = act("postgres.terminate", watchdog, readings)
        wait_until(running.done, 5, "the waiter to get the advisory lock")
    assert items(result)[f"pid:{holder_pid}"][1].startswith("terminated")
    assert running.error is None
