"""The SQL the PostgreSQL probes and actions send, in one place so it can be read and reviewed as SQL.

Every statement is valid on PostgreSQL 12 to 17 (``backend_type``,
``pg_blocking_pids``, ``pg_stat_progress_vacuum`` and the ``*_lag`` columns
all exist since 10; ``reserved_connections`` (16+) is read with
``missing_ok``). Values are always bound parameters. The few fragments that
vary (which breach to re-check, which signal to send) are chosen from the
constant tables below and composed with ``psycopg.sql`` by the caller, never
taken from readings or config.

``now()`` is the statement's start in an autocommit connection, so every
age in one result is measured against the same instant.
"""

from __future__ import annotations

# -- per-backend probes and connections: one read of pg_stat_activity ------------------------------

ACTIVITY = """
SELECT s.max_connections, s.superuser_reserved, s.reserved, s.now,
       a.pid, a.pid = pg_backend_pid() AS ours,
       a.backend_type, a.backend_type IS NULL AS hidden,
       a.backend_start, a.usename, a.datname, a.application_name,
       host(a.client_addr) AS client_addr,
       a.state, a.state_change, a.query_start, a.xact_start, a.wait_event_type,
       CASE WHEN a.wait_event_type = 'Lock' THEN pg_blocking_pids(a.pid) END AS blocked_by,
       COALESCE(r.rolsuper, false) AS superuser
FROM (SELECT current_setting('max_connections')::int AS max_connections,
             current_setting('superuser_reserved_connections')::int AS superuser_reserved,
             COALESCE(current_setting('reserved_connections', true), '0')::int AS reserved,
             now() AS now) s
LEFT JOIN pg_stat_activity a ON true
LEFT JOIN pg_roles r ON r.oid = a.usesysid
"""
"""Every backend, ours included, with what ``postgres.idle``/``idle_in_transaction``/``long_query``,
``postgres.blocking`` and ``postgres.connections`` need: read once per target per cycle
(``PostgresClient.activity``) and filtered in Python (``activity.py``).

Rows we may not see matter: a role without ``pg_read_all_stats`` gets NULL
``backend_type`` and state for other users' sessions (``hidden``), so a probe
that skipped them would report "no idle connections" while hundreds exist.

``pg_blocking_pids`` is called only for backends waiting on a lock (CASE
evaluates it for those rows alone): the docs warn that it is not cheap, and
this keeps the cost proportional to the incident, not to the number of
connections. A blocker with pid 0 is a prepared transaction (no backend,
nothing to signal).

The settings are for ``postgres.connections``: client backends are what
``max_connections`` counts (walsenders, autovacuum and background workers
have their own slots since PostgreSQL 12); the reserved slots are for
superusers (and, on 16+, ``pg_use_reserved_connections``), so applications
hit the wall before ``max_connections``. The one-row ``s`` makes the result
never empty.
"""

# -- aggregate probes ---------------------------------------------------------------------------

REPLICAS = """
SELECT s.pid, s.application_name, host(s.client_addr) AS client_addr, s.client_port,
       s.state, s.sync_state,
       EXTRACT(EPOCH FROM s.write_lag)::float8 AS write_lag,
       EXTRACT(EPOCH FROM s.flush_lag)::float8 AS flush_lag,
       EXTRACT(EPOCH FROM s.replay_lag)::float8 AS replay_lag,
       pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                            ELSE pg_current_wal_lsn() END, s.replay_lsn)::float8 AS replay_bytes,
       EXTRACT(EPOCH FROM now() - s.reply_time)::float8 AS since_reply
FROM pg_stat_replication s
ORDER BY s.application_name, s.client_addr, s.client_port
"""
"""Downstream replicas of this server, on a primary or a cascading standby (the CASE is evaluated
lazily, so ``pg_current_wal_lsn()``, which fails during recovery, is never called on a standby)."""

STANDBY = """
SELECT pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_is_in_recovery() THEN
           CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
                ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END
       END::float8 AS replay_delay,
       CASE WHEN pg_is_in_recovery() THEN
           pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())
       END::float8 AS replay_bytes
"""
"""This server's own delay when it is a standby. Received-and-replayed-everything counts as 0:
on an idle primary the last replayed commit only gets older, which is not lag."""

DEAD_TUPLES = """
SELECT s.relid, s.schemaname, s.relname, s.n_live_tup, s.n_dead_tup,
       GREATEST(s.last_vacuum, s.last_autovacuum) AS last_vacuum,
       GREATEST(s.last_analyze, s.last_autoanalyze) AS last_analyze
FROM pg_stat_user_tables s
WHERE s.n_dead_tup >= %(min_dead_tuples)s
"""

# -- signalling backends --------------------------------------------------------------------

SIGNAL = """
WITH t AS (
    SELECT * FROM unnest(%(pids)s::int[], %(starts)s::timestamptz[], %(marks)s::timestamptz[],
                         %(apps)s::text[], %(supers)s::bool[])
                  AS t(pid, backend_start, mark, application_name, was_superuser)
), c AS (
    SELECT t.pid,
           a.pid IS NOT NULL AS alive,
           COALESCE(a.backend_start = t.backend_start, false) AS same_backend,
           COALESCE(a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()
                    AND a.application_name IS DISTINCT FROM %(self)s, false) AS client,
           COALESCE(a.application_name IS NOT DISTINCT FROM t.application_name, false) AS same_app,
           NOT COALESCE(r.rolsuper, false) OR t.was_superuser AS same_superuser,
           COALESCE({check}, false) AS breaching,
           COALESCE(r.rolsuper, false) AS superuser,
           current_setting('is_superuser') = 'on' AS we_are_superuser,
           COALESCE(pg_has_role(a.usesysid, 'USAGE') OR pg_has_role('pg_signal_backend', 'USAGE'),
                    false) AS may_signal,
           a.usename, a.datname, a.application_name AS app_now, host(a.client_addr) AS client_addr,
           a.state, current_user AS role,
           EXTRACT(EPOCH FROM now() - t.mark)::float8 AS seconds,
           CASE WHEN %(with_query)s THEN left(a.query, %(query_chars)s) END AS query
    FROM t
    LEFT JOIN pg_stat_activity a ON a.pid = t.pid
    LEFT JOIN pg_roles r ON r.oid = a.usesysid
), e AS (
    SELECT c.*,
           c.same_backend AND c.client AND c.same_app AND c.same_superuser AND c.breaching
           AND (NOT c.superuser OR c.we_are_superuser) AND c.may_signal AS eligible
    FROM c
)
SELECT e.*, CASE WHEN e.eligible THEN {signal} END AS signalled
FROM e
"""
"""Re-check and signal in ONE statement: same pid, same ``backend_start`` (so a reused pid is never
hit), still a client backend with the same ``application_name`` (the one attribute a session can change
to slip out of a filter) and not newly a superuser, and still in the very breach the
probe saw (``{check}``), and only then ``{signal}``. CASE evaluates its THEN branch only for rows
that pass, so nothing else is ever signalled. The permission columns mirror the server's own rule
(superuser backends need a superuser; others need membership in their role or
``pg_signal_backend``), so a denied row is reported instead of aborting the whole batch with an ERROR.
In dry-run ``{signal}`` is ``NULL``: the same WHERE, as a plain SELECT."""

BREACH_CHECKS: dict[str, str] = {
    "idle": "a.state = 'idle' AND a.state_change = t.mark",
    "idle_in_transaction": (
        "a.state IN ('idle in transaction', 'idle in transaction (aborted)') AND a.state_change = t.mark"
    ),
    "long_query": "a.state = 'active' AND a.query_start = t.mark",
    "blocking": (
        "a.xact_start IS NOT DISTINCT FROM t.mark AND EXISTS ("
        "SELECT 1 FROM pg_stat_activity w WHERE w.wait_event_type = 'Lock' "
        "AND a.pid = ANY (pg_blocking_pids(w.pid)))"
    ),
}
"""Per probe: what "still breaching" means, relative to the mark the probe recorded.

An unchanged ``state_change`` means the backend has not left that state
since it was measured, so it has only got older; an unchanged
``query_start`` means the same query is still running; an unchanged
``xact_start`` means the same transaction still holds the blocking lock.
"""

SIGNALS: dict[str, str] = {
    "terminate": "pg_terminate_backend(e.pid)",
    "cancel": "pg_cancel_backend(e.pid)",
    "dry_run": "NULL::boolean",
}

STILL_PRESENT = """
SELECT a.pid
FROM unnest(%(pids)s::int[], %(starts)s::timestamptz[]) AS t(pid, backend_start)
JOIN pg_stat_activity a ON a.pid = t.pid AND a.backend_start = t.backend_start
"""
"""Terminated backends that have not exited yet; a signal is asynchronous."""

# -- vacuum ----------------------------------------------------------------------------------------

_MAY_VACUUM_OWNER = (
    "pg_has_role(c.relowner, 'USAGE') OR (NOT c.relisshared AND pg_has_role("
    "(SELECT d.datdba FROM pg_database d WHERE d.datname = current_database()), 'USAGE'))"
)
_MAY_VACUUM_MAINTAIN = (
    "has_table_privilege(c.oid, 'MAINTAIN') OR (NOT c.relisshared AND pg_has_role("
    "(SELECT d.datdba FROM pg_database d WHERE d.datname = current_database()), 'USAGE'))"
)

VACUUM_PRIVILEGE_SINCE: tuple[tuple[int, str], ...] = ((170000, _MAY_VACUUM_MAINTAIN), (0, _MAY_VACUUM_OWNER))
"""Who may VACUUM a table, newest server first: the server's own rule, so a VACUUM that would only
print "skipping ... only table or database owner can vacuum it" is reported before it is sent.
MAINTAIN and ``pg_maintain`` exist from PostgreSQL 17 (added to 16 during development, then reverted)."""

VACUUM_TARGET = """
SELECT c.oid AS relid, n.nspname, c.relname, c.relkind,
       ({may_vacuum}) AS may_vacuum,
       EXISTS (SELECT 1 FROM pg_stat_progress_vacuum p WHERE p.relid = c.oid) AS vacuum_running,
       s.n_dead_tup, s.n_live_tup, current_user AS role
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.oid = %(relid)s
"""
"""The table by oid, as the probe saw it: a table dropped and recreated under the same name is another
table, and a renamed one is still this one."""

VACUUM_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', %(ms)s, false)"
STATEMENT_TIMEOUT = "SELECT set_config('statement_timeout', %(ms)s, false)"


def vacuum_privilege(server_version: int) -> str:
    return next(expr for since, expr in VACUUM_PRIVILEGE_SINCE if server_version >= since)

# -- evidence (``describe``): what the runbooks look at first -------------------------------------
#
# Sent by ``probes.describe_server`` in one read-only transaction on the shared connection, each under
# ``LOCAL_STATEMENT_TIMEOUT`` (what is left of the deadline). Query texts are fetched only when
# ``show_queries`` is true, so a redacted text never even leaves the server. Every list is cut by
# ``LIMIT %(limit)s`` and says how many rows there were in all (``count(*) OVER ()``). Ages are seconds.
#
# A relation named by a lock is resolved with ``regclass``, which takes no lock but knows only this
# database's tables and the shared catalogs (database 0): elsewhere the same oid may be another table,
# so those are shown as an oid in their database.

LOCAL_STATEMENT_TIMEOUT = "SELECT set_config('statement_timeout', %(ms)s, true)"
"""SET LOCAL statement_timeout, as a function so the value is a bound parameter; undone by the rollback."""

EVIDENCE_SESSIONS = """
SELECT a.usename, a.application_name, a.state,
       count(*) AS sessions,
       count(*) FILTER (WHERE a.wait_event_type = 'Lock') AS waiting_on_locks,
       count(*) FILTER (WHERE a.backend_type IS NULL) AS not_visible,
       EXTRACT(EPOCH FROM max(now() - a.state_change))::float8 AS oldest_state_seconds,
       EXTRACT(EPOCH FROM max(now() - a.xact_start))::float8 AS oldest_transaction_seconds,
       count(*) OVER () AS groups,
       sum(count(*)) OVER () AS total
FROM pg_stat_activity a
WHERE a.pid <> pg_backend_pid() AND (a.backend_type = 'client backend' OR a.backend_type IS NULL)
GROUP BY a.usename, a.application_name, a.state
ORDER BY sessions DESC, oldest_state_seconds DESC NULLS LAST, a.usename, a.application_name, a.state
LIMIT %(limit)s
"""
"""Client sessions grouped by user, application and state. Our own session is left out; the daemon's
other connections (``application_name = 'watchdogd'``) are counted: they use slots too. A role without
``pg_read_all_stats`` sees other users' sessions without a state: ``not_visible`` counts them."""

EVIDENCE_BLOCKED = """
WITH here AS (SELECT oid FROM pg_database WHERE datname = current_database())
SELECT a.pid, pg_blocking_pids(a.pid) AS blocked_by,
       a.usename, a.datname, a.application_name, a.state,
       EXTRACT(EPOCH FROM now() - COALESCE((to_jsonb(l) ->> 'waitstart')::timestamptz,
                                           a.query_start))::float8 AS waiting_seconds,
       EXTRACT(EPOCH FROM now() - a.xact_start)::float8 AS transaction_seconds,
       l.locktype, l.mode,
       CASE WHEN l.database = 0 OR l.database = (SELECT oid FROM here) THEN l.relation::regclass::text
            ELSE 'oid ' || l.relation || ' in database ' || l.database END AS relation,
       CASE WHEN %(show_queries)s THEN left(a.query, %(query_chars)s) END AS query,
       count(*) OVER () AS total
FROM pg_stat_activity a
LEFT JOIN pg_locks l ON l.pid = a.pid AND NOT l.granted
WHERE a.wait_event_type = 'Lock' AND a.pid <> pg_backend_pid()
ORDER BY waiting_seconds DESC NULLS LAST, a.pid
LIMIT %(limit)s
"""
"""Backends waiting for a lock, longest first: what they want (mode, relation) and who is in the way.

A backend waits for one lock at a time, so the LEFT JOIN adds at most one
row per waiter. ``pg_locks.waitstart`` exists from PostgreSQL 14; read
through ``to_jsonb`` it is NULL before, and the wait counts from the
query's start instead. ``relation`` is NULL for a lock on something else
(a transaction id, a tuple's transaction, an advisory lock: ``locktype``).
"""

EVIDENCE_BLOCKING = """
WITH here AS (SELECT oid FROM pg_database WHERE datname = current_database()),
edges AS (
    SELECT w.pid AS waiter, b.pid AS blocker
    FROM pg_stat_activity w
    CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS b(pid)
    WHERE w.wait_event_type = 'Lock'
),
blockers AS (
    SELECT blocker AS pid, count(DISTINCT waiter) AS blocks FROM edges GROUP BY blocker
),
held AS (
    SELECT DISTINCT e.blocker AS pid, h.mode,
           CASE WHEN h.relation IS NULL THEN h.locktype
                WHEN h.database = 0 OR h.database = (SELECT oid FROM here) THEN h.relation::regclass::text
                ELSE 'oid ' || h.relation || ' in database ' || h.database END AS what
    FROM edges e
    JOIN pg_locks w ON w.pid = e.waiter AND NOT w.granted
    JOIN pg_locks h ON h.pid = e.blocker AND h.granted
         AND h.locktype = w.locktype
         AND h.database IS NOT DISTINCT FROM w.database
         AND h.relation IS NOT DISTINCT FROM w.relation
         AND h.page IS NOT DISTINCT FROM w.page
         AND h.tuple IS NOT DISTINCT FROM w.tuple
         AND h.virtualxid IS NOT DISTINCT FROM w.virtualxid
         AND h.transactionid IS NOT DISTINCT FROM w.transactionid
         AND h.classid IS NOT DISTINCT FROM w.classid
         AND h.objid IS NOT DISTINCT FROM w.objid
         AND h.objsubid IS NOT DISTINCT FROM w.objsubid
)
SELECT b.pid, b.blocks, a.backend_type, a.usename, a.datname, a.application_name, a.state,
       COALESCE(a.wait_event_type = 'Lock', false) AS waiting,
       EXTRACT(EPOCH FROM now() - a.xact_start)::float8 AS transaction_seconds,
       EXTRACT(EPOCH FROM now() - a.state_change)::float8 AS state_seconds,
       ARRAY(SELECT h.mode || ' on ' || h.what FROM held h WHERE h.pid = b.pid ORDER BY 1) AS holds,
       CASE WHEN %(show_queries)s THEN left(a.query, %(query_chars)s) END AS query,
       count(*) OVER () AS total
FROM blockers b
LEFT JOIN pg_stat_activity a ON a.pid = b.pid
ORDER BY b.blocks DESC, transaction_seconds DESC NULLS LAST, b.pid
LIMIT %(limit)s
"""
"""Backends others wait for, by how many wait on them directly, with the locks they hold on exactly
what their waiters want (the lock tag, every field of it). A pid of 0 is a prepared transaction (no
backend, so no activity row). ``holds`` is empty for a blocker that is only ahead in the queue, waiting
for a conflicting lock itself, which ``waiting`` then shows."""

EVIDENCE_XMIN = """
SELECT x.*, count(*) OVER () AS total FROM (
    SELECT 'backend' AS kind, a.pid, NULL AS name, a.usename, a.datname, a.application_name, a.state,
           GREATEST(age(a.backend_xmin), age(a.backend_xid)) AS xmin_age,
           EXTRACT(EPOCH FROM now() - a.xact_start)::float8 AS transaction_seconds,
           EXTRACT(EPOCH FROM now() - a.state_change)::float8 AS state_seconds,
           CASE WHEN %(show_queries)s THEN left(a.query, %(query_chars)s) END AS query
    FROM pg_stat_activity a
    WHERE (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL) AND a.pid <> pg_backend_pid()
    UNION ALL
    SELECT 'prepared transaction', NULL, p.gid, p.owner, p.database, NULL, NULL,
           age(p.transaction), EXTRACT(EPOCH FROM now() - p.prepared)::float8, NULL, NULL
    FROM pg_prepared_xacts p
    UNION ALL
    SELECT 'replication slot', s.active_pid, s.slot_name, NULL, s.database, NULL,
           CASE WHEN s.active THEN 'active' ELSE 'inactive' END,
           GREATEST(age(s.xmin), age(s.catalog_xmin)), NULL, NULL, NULL
    FROM pg_replication_slots s
    WHERE s.xmin IS NOT NULL OR s.catalog_xmin IS NOT NULL
) x
ORDER BY xmin_age DESC NULLS LAST, transaction_seconds DESC NULLS LAST
LIMIT %(limit)s
"""
"""What holds the xmin horizon back, oldest first: VACUUM cannot remove rows that any of these may still
see. ``xmin_age`` is in transactions (``age()``); a backend's own ``backend_xid`` counts too, since an
open writing transaction holds the horizon as surely as a snapshot. Our own snapshot (this very
transaction's) is left out."""

EVIDENCE_REPLICATION = """
WITH pos AS (
    SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END AS lsn
)
SELECT s.application_name, host(s.client_addr) AS client_addr, s.client_port, s.state, s.sync_state,
       pg_wal_lsn_diff(pos.lsn, s.sent_lsn)::float8 AS sent_lag_bytes,
       pg_wal_lsn_diff(pos.lsn, s.write_lsn)::float8 AS write_lag_bytes,
       pg_wal_lsn_diff(pos.lsn, s.flush_lsn)::float8 AS flush_lag_bytes,
       pg_wal_lsn_diff(pos.lsn, s.replay_lsn)::float8 AS replay_lag_bytes,
       EXTRACT(EPOCH FROM s.write_lag)::float8 AS write_lag_seconds,
       EXTRACT(EPOCH FROM s.flush_lag)::float8 AS flush_lag_seconds,
       EXTRACT(EPOCH FROM s.replay_lag)::float8 AS replay_lag_seconds,
       EXTRACT(EPOCH FROM now() - s.reply_time)::float8 AS seconds_since_reply,
       count(*) OVER () AS total
FROM pg_stat_replication s, pos
ORDER BY replay_lag_bytes DESC NULLS LAST, s.application_name, s.client_addr, s.client_port
LIMIT %(limit)s
"""
"""Each downstream replica's position behind this server's WAL (the current LSN on a primary, the
replayed one on a cascading standby, as in ``REPLICAS``), in bytes, and the server's lag times."""
