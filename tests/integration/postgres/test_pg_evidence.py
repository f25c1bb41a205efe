"""PostgreSQL evidence (``describe``) against the machine's real server, with sessions the test holds open."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers import wait_until
from tests.integration.postgres.pgenv import PgEnv
from tests.integration.postgres.sessions import busy
from watchdogd.contracts import Describes, EvidenceLimits
from watchdogd.families.postgres import queries as q
from watchdogd.families.postgres.target import PostgresClient, PostgresError
from watchdogd.registry import DEFAULT

pytestmark = pytest.mark.integration

ClientFor = Callable[..., PostgresClient]
SECRET = "wdt_secret_literal_42"


def describe(kind: str, client: PostgresClient, *, seconds: float = 2.0, **limits: Any) -> dict[str, Any]:
    spec = DEFAULT.probes[kind]
    probe = spec.factory(spec.params(), client, time.time)
    assert isinstance(probe, Describes)
    return probe.describe([], EvidenceLimits(deadline=time.monotonic() + seconds, max_bytes=64 * 1024, **limits))


def test_a_blocked_session_its_blocker_and_the_xmin_holder_show(pg: PgEnv, client_for: ClientFor) -> None:
    app = pg.role("app")
    db = pg.database("ev", owner=app)
    pg.connect(app, dbname=db).execute("CREATE TABLE t (id int)")
    root = pg.connect(app, dbname=db, autocommit=False, application_name="wdt-root")
    root.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
    root.execute("SELECT txid_current()")  # an xid: the open transaction now holds the xmin horizon
    waiter = pg.connect(app, dbname=db, application_name="wdt-waiter")
    watchdog = pg.role("watchdog", "pg_monitor")
    monitor = client_for(watchdog, dbname=db)
    elsewhere = client_for(watchdog)  # connected to "postgres": table t is in another database
    root_pid, waiter_pid = pg.pids(root, waiter)
    try:
        with busy(pg, waiter, f"SELECT count(*) FROM t WHERE '{SECRET}' <> ''", wait_event_type="Lock"):
            started = time.monotonic()
            redacted = describe("postgres.blocking", monitor)
            took = time.monotonic() - started
            shown = describe("postgres.idle_in_transaction", monitor, show_queries=True)
            remote = describe("postgres.connections", elsewhere)
    finally:
        root.rollback()

    text = json.dumps(redacted)
    print(f"\npostgres describe: {took * 1000:.1f} ms, {len(text)} bytes of JSON")
    assert took < 1.0
    assert len(text) <= 64 * 1024
    assert SECRET not in text

    locks = redacted["blocked and blocking"]
    [blocked] = [row for row in locks["blocked"] if row["pid"] == waiter_pid]
    assert blocked["blocked_by"] == [root_pid]
    assert blocked["lock"] == {"type": "relation", "mode": "AccessShareLock", "relation": "t"}
    assert blocked["query"] == "<redacted>"
    assert blocked["waiting_seconds"] >= 0
    [blocker] = [row for row in locks["blocking"] if row["pid"] == root_pid]
    assert blocker["holds"] == ["AccessExclusiveLock on t"]
    assert blocker["blocks_directly"] == 1
    assert blocker["waiting_itself"] is False
    assert blocker["state"] == "idle in transaction"
    assert blocker["query"] == "<redacted>"

    groups = {(g["user"], g["application"], g["state"]): g
              for g in redacted["sessions by user, application and state"]["groups"]}
    root_group = groups[(app, "wdt-root", "idle in transaction")]
    assert (root_group["sessions"], root_group["waiting_on_locks"]) == (1, 0)
    assert root_group["oldest_transaction_seconds"] >= root_group["oldest_state_seconds"] >= 0
    assert groups[(app, "wdt-waiter", "active")]["waiting_on_locks"] == 1

    holders = redacted["oldest transactions holding back vacuum"]["holders"]
    [holder] = [h for h in holders if h.get("pid") == root_pid]
    assert holder["kind"] == "backend"
    assert holder["xmin_age_transactions"] >= 1
    assert holder["query"] == "<redacted>"
    assert "replication" not in redacted  # no replicas on this server: the section is left out

    [shown_waiter] = [row for row in shown["blocked and blocking"]["blocked"] if row["pid"] == waiter_pid]
    assert SECRET in shown_waiter["query"]

    # From another database the oid would name the wrong table (or none): it says where it is instead.
    [remote_waiter] = [row for row in remote["blocked and blocking"]["blocked"] if row["pid"] == waiter_pid]
    assert remote_waiter["lock"]["relation"].startswith("oid ")


def test_a_slow_statement_is_cancelled_at_the_deadline_and_the_rest_is_kept(
    pg: PgEnv, client_for: ClientFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monitor = client_for(pg.role("watchdog", "pg_monitor"))
    monkeypatch.setattr(q, "EVIDENCE_XMIN", "SELECT pg_sleep(10), %(limit)s, %(show_queries)s, %(query_chars)s")
    started = time.monotonic()
    sections = describe("postgres.dead_tuples", monitor, seconds=0.8)
    took = time.monotonic() - started
    assert took < 0.8  # the server cancelled it before the deadline (SET LOCAL statement_timeout)
    assert "cut" not in sections["sessions by user, application and state"]
    assert "cut" not in sections["blocked and blocking"]
    assert sections["oldest transactions holding back vacuum"] == {"cut": "deadline"}
    assert sections["replication"] == {"cut": "deadline"}
    # The shared connection is left as it was: out of the transaction, with the target's own timeout.
    assert monitor.query("SHOW statement_timeout") == [{"statement_timeout": "5s"}]
    assert monitor.query("SELECT current_setting('transaction_read_only') AS ro") == [{"ro": "on"}]


def test_waits_for_the_shared_connection_only_until_the_deadline(pg: PgEnv, client_for: ClientFor) -> None:
    monitor = client_for(pg.role("watchdog", "pg_monitor"))
    statement = f"SELECT pg_sleep(2) AS {pg.prefix}other_rule"
    other_rule = threading.Thread(target=monitor.query, args=(statement,))
    other_rule.start()
    try:
        wait_until(lambda: pg.admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query = %s AND state = 'active'", [statement]
        ).fetchone() == (1,), 5, "the other rule's statement to run")
        started = time.monotonic()
        with pytest.raises(PostgresError, match="busy"):
            describe("postgres.up", monitor, seconds=0.5)
        assert time.monotonic() - started < 0.5
    finally:
        other_rule.join(5)
    assert "cut" not in describe("postgres.up", monitor)["blocked and blocking"]  # the connection is free again
