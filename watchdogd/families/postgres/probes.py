"""PostgreSQL probes: up, connection saturation, idle / idle-in-transaction / long-running backends,
blocking locks, replication lag, dead tuples.

Per-backend subjects are ``pid:<pid>``; ``backend_start`` and the "mark" (the
timestamp the breach is measured from) ride along in the details, because a
pid alone does not name a backend for long and the actions refuse to signal
anything whose identity or breach changed since it was measured.

Every probe also ``describe``s the server the same way when its rule
starts firing (``describe_server``): sessions, locks, the xmin horizon and
replication, read in one bounded read-only transaction.

psycopg is never imported here (see ``target.py``): a host without
PostgreSQL must not pay for it.
"""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from watchdogd.contracts import (
    Cardinality,
    Clock,
    EvidenceLimits,
    NoParams,
    Params,
    Probe,
    ProbeSpec,
    Reading,
    Unit,
)
from watchdogd.evidencefit import fit
from watchdogd.families.postgres import queries as q
from watchdogd.families.postgres.activity import Activity
from watchdogd.families.postgres.filters import BackendFilter, BackendSelector
from watchdogd.families.postgres.target import (
    APPLICATION_NAME,
    PostgresClient,
    PostgresError,
    PostgresPermissionError,
    Row,
    _classify,
)
from watchdogd.spec import Field

if TYPE_CHECKING:
    import psycopg

TOP_GROUPS = 20
"""How many databases/users/states ``postgres.connections`` details list before folding the rest."""
MAX_PIDS_IN_DETAILS = 50
"""Lists of pids or replicas in details are cut here: details feed audit rows, which must stay small."""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _require_visibility(activity: Activity, client: PostgresClient) -> None:
    """Fail loudly when the role cannot see other sessions, instead of reporting a comfortable nothing."""
    if activity.hidden:
        raise PostgresPermissionError(
            f"permission denied: the role of {client.label} cannot see {activity.hidden} other session(s) in "
            "pg_stat_activity; GRANT pg_monitor to it (see docs/postgres.md)"
        )


def backend_details(row: Mapping[str, Any], check: str, mark: datetime | None) -> dict[str, Any]:
    """What an action needs to find exactly this backend in exactly this breach, and what the audit shows."""
    return {
        "pid": row["pid"],
        "backend_start": _iso(row["backend_start"]),
        "check": check,
        "mark": _iso(mark),
        "user": row["usename"],
        "database": row["datname"],
        "application": row["application_name"],
        "client": row["client_addr"] or "local",
        "state": row["state"],
        "superuser": bool(row["superuser"]),
    }


# --------------------------------------------------------------------------- evidence


QUERY_CHARS = 200
"""Query texts in evidence are cut here (``left()`` on the server): enough to recognise the statement."""
TEXT_CHARS = 200
"""Any other text (names, lock descriptions) is cut here too, whatever the server holds."""
REDACTED = "<redacted>"
"""In place of a query text unless the operator set ``evidence.show_queries``: texts carry customer data."""
_MARGIN = 0.1
"""Seconds of the deadline kept back from the server's statement_timeout, to return what was read in time."""


class _OutOfTime(Exception):
    """The deadline came before (or during) a statement: the sections read so far are returned."""


class _Reader:
    """The statements of one ``describe``, in one read-only transaction on the target's shared connection.

    The shared connection, not a new one: the evidence matters most when the
    server refuses new clients (``max_connections``), and the daemon must not
    add a backend to a server in trouble. Each statement gets ``SET LOCAL
    statement_timeout`` = what is left of the deadline, so the server cancels
    it in time and the connection is free for the other rules; the
    transaction is always rolled back, which also undoes the timeout.

    ``PostgresClient`` has no public way to run several statements in one
    transaction, so this takes its lock and connection itself (this family's
    own module); the lock wait is bounded by the deadline too, so a describe
    never outlives it waiting behind another rule's statement.
    """

    def __init__(self, conn: psycopg.Connection[Row], deadline: float) -> None:
        self._conn = conn
        self._deadline = deadline
        self.cut = False

    def rows(self, statement: str, params: Mapping[str, Any]) -> list[Row]:
        """The statement's rows; raises ``_OutOfTime`` when the deadline is (or comes) too close."""
        left = self._deadline - time.monotonic() - _MARGIN
        if self.cut or left < 0.01:
            self.cut = True
            raise _OutOfTime
        try:
            self._conn.execute(q.LOCAL_STATEMENT_TIMEOUT, {"ms": str(max(1, int(left * 1000)))})
            return self._conn.execute(statement, params).fetchall()
        except Exception as exc:
            if getattr(exc, "sqlstate", None) == "57014":  # query_canceled: our statement_timeout
                self.cut = True  # the transaction is aborted now: nothing more can be read in it
                raise _OutOfTime from None
            raise _classify(exc) from None


def _read_only(client: PostgresClient, deadline: float, read: Callable[[_Reader], None]) -> None:
    """Run ``read`` in a rolled-back read-only transaction on the shared connection (see ``_Reader``)."""
    with client.exclusive(deadline - time.monotonic() - _MARGIN) as conn:
        try:
            with conn.transaction(force_rollback=True):
                conn.execute("SET TRANSACTION READ ONLY")
                read(_Reader(conn, deadline))
        except (PostgresError, _OutOfTime):
            raise
        except Exception as exc:  # BEGIN, SET or the rollback failed: the connection is likely gone
            raise _classify(exc) from None


def _short(value: Any) -> Any:
    return value[:TEXT_CHARS] if isinstance(value, str) else value


def _secs(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def _query(row: Row, limits: EvidenceLimits) -> str | None:
    return _short(row["query"]) if limits.show_queries else REDACTED


def _sessions(rows: Sequence[Row], limits: EvidenceLimits) -> dict[str, Any]:
    groups = [{
        "user": _short(row["usename"]),
        "application": _short(row["application_name"]),
        "state": row["state"],
        "sessions": int(row["sessions"]),
        "waiting_on_locks": int(row["waiting_on_locks"]),
        "oldest_state_seconds": _secs(row["oldest_state_seconds"]),
        "oldest_transaction_seconds": _secs(row["oldest_transaction_seconds"]),
        **({"not_visible": int(row["not_visible"])} if row["not_visible"] else {}),
    } for row in rows[:limits.max_items]]
    total_groups = int(rows[0]["groups"]) if rows else 0
    return {"sessions": int(rows[0]["total"]) if rows else 0, "groups": groups,
            "more_groups": max(0, total_groups - len(groups))}


def _blocked(rows: Sequence[Row], limits: EvidenceLimits) -> dict[str, Any]:
    return {
        "waiting": int(rows[0]["total"]) if rows else 0,
        "blocked": [{
            "pid": row["pid"],
            "blocked_by": list(row["blocked_by"] or [])[:limits.max_items],
            "user": _short(row["usename"]),
            "database": _short(row["datname"]),
            "application": _short(row["application_name"]),
            "state": row["state"],
            "waiting_seconds": _secs(row["waiting_seconds"]),
            "transaction_seconds": _secs(row["transaction_seconds"]),
            "lock": {"type": row["locktype"], "mode": row["mode"], "relation": _short(row["relation"])},
            "query": _query(row, limits),
        } for row in rows[:limits.max_items]],
    }


def _blocking(rows: Sequence[Row], limits: EvidenceLimits) -> dict[str, Any]:
    return {
        "blocking_sessions": int(rows[0]["total"]) if rows else 0,
        "blocking": [{
            "pid": row["pid"],
            "kind": "prepared transaction" if row["pid"] == 0 else _short(row["backend_type"]),
            "blocks_directly": int(row["blocks"]),
            "user": _short(row["usename"]),
            "database": _short(row["datname"]),
            "application": _short(row["application_name"]),
            "state": row["state"],
            "waiting_itself": bool(row["waiting"]),
            "transaction_seconds": _secs(row["transaction_seconds"]),
            "state_seconds": _secs(row["state_seconds"]),
            "holds": [_short(lock) for lock in (row["holds"] or [])[:limits.max_items]],
            "query": _query(row, limits) if row["pid"] else None,
        } for row in rows[:limits.max_items]],
    }


def _xmin(rows: Sequence[Row], limits: EvidenceLimits) -> dict[str, Any]:
    holders = []
    for row in rows[:limits.max_items]:
        holder = {
            "kind": row["kind"],
            "pid": row["pid"],
            "name": _short(row["name"]),
            "user": _short(row["usename"]),
            "database": _short(row["datname"]),
            "application": _short(row["application_name"]),
            "state": row["state"],
            "xmin_age_transactions": row["xmin_age"],
            "transaction_seconds": _secs(row["transaction_seconds"]),
            "state_seconds": _secs(row["state_seconds"]),
        }
        if row["kind"] == "backend":
            holder["query"] = _query(row, limits)
        holders.append({key: value for key, value in holder.items() if value is not None})
    return {"holders": holders, "more": max(0, (int(rows[0]["total"]) if rows else 0) - len(holders))}


def _replication(rows: Sequence[Row], limits: EvidenceLimits) -> dict[str, Any]:
    subjects = dict(_replica_subjects(rows))
    return {
        "replicas": int(rows[0]["total"]) if rows else 0,
        "positions": [{
            "client": _short(subject),
            "state": row["state"],
            "sync_state": row["sync_state"],
            **{f"{step}_lag_bytes": row[f"{step}_lag_bytes"] for step in ("sent", "write", "flush", "replay")},
            **{f"{step}_lag_seconds": _secs(row[f"{step}_lag_seconds"]) for step in ("write", "flush", "replay")},
            "seconds_since_reply": _secs(row["seconds_since_reply"]),
        } for subject, row in list(subjects.items())[:limits.max_items]],
    }


SECTION_SESSIONS = "sessions by user, application and state"
SECTION_LOCKS = "blocked and blocking"
SECTION_XMIN = "oldest transactions holding back vacuum"
SECTION_REPLICATION = "replication"


def describe_server(client: PostgresClient, limits: EvidenceLimits) -> dict[str, Any]:
    """What the PostgreSQL runbooks look at first, the same for every ``postgres.*`` probe.

    Sessions by who and what state (who is using the slots, who has been
    idle in a transaction for an hour), who blocks whom on which lock, what
    holds the xmin horizon (why vacuum cannot keep up), and how far behind
    each replica is (only when there are any). Read in one transaction, so
    the activity rows agree with each other (PostgreSQL snapshots
    ``pg_stat_activity`` per transaction). A section the deadline left out
    says ``{"cut": "deadline"}``; a list longer than ``max_items`` says how
    many there were.
    """
    params = {"limit": limits.max_items, "show_queries": limits.show_queries, "query_chars": QUERY_CHARS}
    sections: dict[str, Any] = {}
    complete: set[str] = set()

    def read(reader: _Reader) -> None:
        sections[SECTION_SESSIONS] = _sessions(reader.rows(q.EVIDENCE_SESSIONS, params), limits)
        complete.add(SECTION_SESSIONS)
        sections[SECTION_LOCKS] = _blocked(reader.rows(q.EVIDENCE_BLOCKED, params), limits)
        sections[SECTION_LOCKS].update(_blocking(reader.rows(q.EVIDENCE_BLOCKING, params), limits))
        complete.add(SECTION_LOCKS)
        sections[SECTION_XMIN] = _xmin(reader.rows(q.EVIDENCE_XMIN, params), limits)
        complete.add(SECTION_XMIN)
        replicas = reader.rows(q.EVIDENCE_REPLICATION, params)
        if replicas:
            sections[SECTION_REPLICATION] = _replication(replicas, limits)
        complete.add(SECTION_REPLICATION)

    try:
        _read_only(client, limits.deadline, read)
    except _OutOfTime:
        for name in (SECTION_SESSIONS, SECTION_LOCKS, SECTION_XMIN, SECTION_REPLICATION):
            if name not in complete:  # missing, or (locks) with the blocked but not the blocking
                sections.setdefault(name, {})["cut"] = "deadline"
    return fit(sections, limits.max_bytes)


class _DescribesServer:
    """``describe`` for every PostgreSQL probe: the runbook's first look at the whole server."""

    _client: PostgresClient

    def describe(self, readings: Sequence[Reading], limits: EvidenceLimits) -> dict[str, Any]:
        return describe_server(self._client, limits)


# --------------------------------------------------------------------------- per-backend ages


class _BackendAgeProbe(_DescribesServer):
    """Seconds since a backend entered a state (or started a query), one reading per backend.

    Subclasses are rows of a table, not behaviour: which states, which
    timestamp the age counts from, and the name of the re-check the
    actions apply.
    """

    STATES: tuple[str, ...] = ()
    MARK = "state_change"
    inline = True  # reads the target's shared pg_stat_activity only (``watchdogd.inline``)
    CHECK = ""

    def __init__(self, params: BackendFilter, client: PostgresClient, clock: Clock) -> None:
        self._client = client
        self._select = BackendSelector(params)

    def measure(self) -> list[Reading]:
        activity = self._client.activity()
        _require_visibility(activity, self._client)
        readings = []
        for row in activity.backends(self.STATES, APPLICATION_NAME):
            mark = row[self.MARK]
            if mark is None or not self._select(row):
                continue
            seconds = max(0.0, (activity.now - mark).total_seconds())
            readings.append(Reading(f"pid:{row['pid']}", seconds, backend_details(row, self.CHECK, mark)))
        return readings


class IdleProbe(_BackendAgeProbe):
    """``postgres.idle``: how long each connection has sat idle (the "kill idle connections" runbook)."""

    STATES = ("idle",)
    CHECK = "idle"


class IdleInTransactionProbe(_BackendAgeProbe):
    """``postgres.idle_in_transaction``: idle inside an open transaction, holding locks and snapshots.

    Both states count: an aborted transaction left open still pins the xmin
    horizon and blocks vacuum until the client rolls it back.
    """

    STATES = ("idle in transaction", "idle in transaction (aborted)")
    CHECK = "idle_in_transaction"


class LongQueryProbe(_BackendAgeProbe):
    """``postgres.long_query``: seconds since the running query started."""

    STATES = ("active",)
    MARK = "query_start"
    CHECK = "long_query"


# --------------------------------------------------------------------------- blocking


class BlockingParams(BackendFilter):
    roots_only: bool = True
    """Report only blockers that do not wait themselves: in a chain A <- B <- C, killing B helps nobody."""


class BlockingProbe(_DescribesServer):
    """``postgres.blocking``: per blocking backend, how many backends wait on it, directly or down a chain.

    The value counts the whole tree under the blocker, because that is the
    damage it does; the details list the direct waiters. The mark is
    ``xact_start``: locks belong to a transaction, so the same blocker in a
    new transaction is a new incident (session advisory locks, held outside
    any transaction, have no xact_start and are matched as such).
    """

    inline = True  # reads the target's shared pg_stat_activity only (``watchdogd.inline``)

    def __init__(self, params: BlockingParams, client: PostgresClient, clock: Clock) -> None:
        self._client = client
        self._select = BackendSelector(params)
        self._roots_only = params.roots_only

    def measure(self) -> list[Reading]:
        activity = self._client.activity()
        _require_visibility(activity, self._client)
        waits: dict[int, set[int]] = {}  # blocker -> direct waiters
        waiting: set[int] = set()
        for waiter, blocker in activity.waits():
            waits.setdefault(blocker, set()).add(waiter)
            waiting.add(waiter)
        readings = []
        for blocker, direct in sorted(waits.items()):
            row = activity.by_pid.get(blocker)
            if (blocker == 0 or row is None or row["backend_type"] != "client backend"
                    or row["application_name"] == APPLICATION_NAME):
                continue  # a prepared transaction, gone, a worker, or ourselves: nothing a runbook may signal
            if (self._roots_only and blocker in waiting) or not self._select(row):
                continue
            total = _reachable(blocker, waits)
            details = backend_details(row, "blocking", row["xact_start"])
            details.update(
                blocked=sorted(direct)[:MAX_PIDS_IN_DETAILS],
                blocked_directly=len(direct),
                waiting=blocker in waiting,
            )
            readings.append(Reading(f"pid:{blocker}", float(len(total)), details))
        return readings


def _reachable(start: int, edges: Mapping[int, set[int]]) -> set[int]:
    """Every backend waiting on ``start``, directly or transitively (cycles are deadlocks, still finite)."""
    seen: set[int] = set()
    todo = list(edges.get(start, ()))
    while todo:
        pid = todo.pop()
        if pid in seen or pid == start:
            continue
        seen.add(pid)
        todo.extend(edges.get(pid, ()))
    return seen


# --------------------------------------------------------------------------- up, connections


class UpParams(Params):
    new_connection: bool = True
    """Measure a fresh connection (what a new application client sees) rather than the shared one."""


class UpProbe(_DescribesServer):
    """``postgres.up``: connect + ``SELECT 1`` latency in seconds; the probe is down when either fails.

    With ``new_connection`` (the default) a refused connection ("too many
    clients", pg_hba, a full disk at startup) shows as down even while the
    daemon's own long-lived connection still works, and a server that
    accepts the TCP connection but never answers (stopped, hung) is down
    within the target's ``connect_timeout`` (libpq counts at least 2 s).
    An availability probe: the engine reports a failure as this server
    down (``on_down: fire``), on the subject it reports when up.
    """

    def __init__(self, params: UpParams, client: PostgresClient, clock: Clock) -> None:
        self._client = client
        # ``new_connection``: the target's shared connection test, served inline (``watchdogd.inline``); without
        # it, a query of its own on the shared connection.
        self.inline = params.new_connection

    def outage_subjects(self) -> list[str]:
        return [self._client.label]

    def measure(self) -> list[Reading]:
        if self.inline:
            ping = self._client.ping()
            return [Reading(self._client.label, ping.connect_seconds + ping.query_seconds, {
                "connect_seconds": round(ping.connect_seconds, 6),
                "query_seconds": round(ping.query_seconds, 6),
                "server_version": ping.server_version,
                "in_recovery": ping.in_recovery,
            })]
        started = time.monotonic()
        [row] = self._client.query("SELECT 1 AS one, pg_is_in_recovery() AS in_recovery")
        elapsed = time.monotonic() - started
        return [Reading(self._client.label, elapsed, {"query_seconds": round(elapsed, 6),
                                                      "in_recovery": row["in_recovery"]})]


class ConnectionsProbe(_DescribesServer):
    """``postgres.connections``: client backends as a percent of the slots applications can use.

    ``max_connections`` minus the reserved slots is where applications get
    "sorry, too many clients already", so 100 % means they are locked out
    (superusers can still push it above 100).
    """

    inline = True  # reads the target's shared pg_stat_activity only (``watchdogd.inline``)

    def __init__(self, params: NoParams, client: PostgresClient, clock: Clock) -> None:
        self._client = client

    def measure(self) -> list[Reading]:
        activity = self._client.activity()
        _require_visibility(activity, self._client)
        reserved = activity.superuser_reserved + activity.reserved
        usable = max(1, activity.max_connections - reserved)
        by_db: dict[str, int] = {}
        by_user: dict[str, int] = {}
        by_state: dict[str, int] = {}
        used = 0
        for row in activity.client_slots():
            used += 1
            for table, key in ((by_db, row["datname"]), (by_user, row["usename"]), (by_state, row["state"])):
                name = key if key is not None else "-"
                table[name] = table.get(name, 0) + 1
        return [Reading("connections", used / usable * 100.0, {
            "used": used,
            "usable": usable,
            "max_connections": activity.max_connections,
            "reserved": reserved,
            "by_database": _top(by_db),
            "by_user": _top(by_user),
            "by_state": _top(by_state),
        })]


def _top(counts: Mapping[str, int]) -> dict[str, int]:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    top = dict(ranked[:TOP_GROUPS])
    rest = sum(n for _, n in ranked[TOP_GROUPS:])
    if rest:
        top["(other)"] = rest
    return top


# --------------------------------------------------------------------------- replication


class ReplicationParams(Params):
    replicas: list[str] = []
    """Globs on the replica's subject (``application_name@client_addr``); empty means all."""


def _replica_subjects(rows: Sequence[Row]) -> list[tuple[str, Row]]:
    """``application_name@client_addr``, stable across reconnects; the port only breaks a tie."""
    base = [f"{row['application_name'] or 'replica'}@{row['client_addr'] or 'local'}" for row in rows]
    return [
        (name if base.count(name) == 1 else f"{name}:{row['client_port']}", row)
        for name, row in zip(base, rows, strict=True)
    ]


class _ReplicationProbe(_DescribesServer):
    """Per downstream replica, plus ``standby`` for this server's own replay when it is one.

    A replica that disconnects vanishes from ``pg_stat_replication`` and so
    from these readings (its alert resolves): pair with ``postgres.replicas``
    ``below: N`` to be told it is gone.
    """

    VALUE = "replay_lag"

    def __init__(self, params: ReplicationParams, client: PostgresClient, clock: Clock) -> None:
        self._client = client
        self._match = _globs(params.replicas)

    def measure(self) -> list[Reading]:
        [own] = self._client.query(q.STANDBY)
        rows = self._client.query(q.REPLICAS)
        if any(row["state"] is None for row in rows):
            raise PostgresPermissionError(
                f"permission denied: the role of {self._client.label} cannot read pg_stat_replication; "
                "GRANT pg_monitor to it (see docs/postgres.md)"
            )
        readings = []
        for subject, row in _replica_subjects(rows):
            if not self._match(subject):
                continue
            details = {
                "state": row["state"],
                "sync_state": row["sync_state"],
                "write_lag": row["write_lag"],
                "flush_lag": row["flush_lag"],
                "replay_lag": row["replay_lag"] or 0.0,
                "replay_bytes": row["replay_bytes"] or 0.0,
                "seconds_since_reply": row["since_reply"],
            }
            readings.append(Reading(subject, float(details[self.VALUE] or 0.0), details))
        if own["in_recovery"] and self._match("standby"):
            details = {"replay_lag": own["replay_delay"] or 0.0, "replay_bytes": own["replay_bytes"] or 0.0}
            readings.append(Reading("standby", float(details[self.VALUE]), details))
        return readings


class ReplicationLagProbe(_ReplicationProbe):
    """``postgres.replication_lag``: seconds each replica's replay is behind (``replay_lag``)."""


class ReplicationLagBytesProbe(_ReplicationProbe):
    """``postgres.replication_lag_bytes``: WAL bytes not yet replayed; grows even when ``replay_lag`` is stale."""

    VALUE = "replay_bytes"


class ReplicasProbe(_DescribesServer):
    """``postgres.replicas``: how many replicas are streaming, so a vanished one is noticed (``below: N``)."""

    def __init__(self, params: NoParams, client: PostgresClient, clock: Clock) -> None:
        self._client = client

    def measure(self) -> list[Reading]:
        rows = self._client.query(q.REPLICAS)
        streaming = [subject for subject, row in _replica_subjects(rows) if row["state"] == "streaming"]
        return [Reading("replicas", float(len(streaming)), {"streaming": streaming[:MAX_PIDS_IN_DETAILS],
                                                           "connected": len(rows)})]


def _globs(patterns: list[str]) -> Callable[[str], bool]:
    if not patterns:
        return lambda _value: True
    match = re.compile("|".join(fnmatch.translate(p) for p in patterns)).match
    return lambda value: match(value) is not None


# --------------------------------------------------------------------------- dead tuples


class DeadTupleParams(Params):
    tables: list[str] = []
    """Globs on ``schema.table``; empty means every user table of the target's database."""
    exclude_tables: list[str] = []
    min_dead_tuples: int = Field(default=1000, ge=0, le=10**15)
    """Tables with fewer dead tuples are not reported: on a 40-row table a 50 % ratio is noise."""


class _DeadTupleProbe(_DescribesServer):
    """Per table of the target's database (``pg_stat_user_tables`` is per database)."""

    VALUE = "dead_tuples"

    def __init__(self, params: DeadTupleParams, client: PostgresClient, clock: Clock) -> None:
        self._client = client
        self._min = params.min_dead_tuples
        self._include = _globs(params.tables)
        self._exclude = _globs(params.exclude_tables) if params.exclude_tables else (lambda _v: False)

    def measure(self) -> list[Reading]:
        readings = []
        for row in self._client.query(q.DEAD_TUPLES, {"min_dead_tuples": self._min}):
            subject = f"{row['schemaname']}.{row['relname']}"
            if not self._include(subject) or self._exclude(subject):
                continue
            dead, live = int(row["n_dead_tup"]), int(row["n_live_tup"])
            ratio = dead / (dead + live) if dead + live else 0.0
            details = {
                "relid": int(row["relid"]),
                "schema": row["schemaname"],
                "table": row["relname"],
                "dead_tuples": dead,
                "live_tuples": live,
                "dead_ratio": round(ratio, 6),
                "last_vacuum": _iso(row["last_vacuum"]),
                "last_analyze": _iso(row["last_analyze"]),
            }
            readings.append(Reading(subject, float(details[self.VALUE]), details))
        return readings


class DeadTuplesProbe(_DeadTupleProbe):
    """``postgres.dead_tuples``: dead tuples per table."""


class DeadRatioProbe(_DeadTupleProbe):
    """``postgres.dead_ratio``: dead / (live + dead) per table, 0..1 (``min_dead_tuples`` keeps out tiny tables)."""

    VALUE = "dead_ratio"


# --------------------------------------------------------------------------- table


def _factory(cls: Callable[[Any, PostgresClient, Clock], Probe]) -> Callable[[Any, Any, Clock], Probe]:
    def factory(params: Any, client: Any, clock: Clock) -> Probe:
        if not isinstance(client, PostgresClient):
            raise TypeError(f"{cls.__name__} needs a postgres target client, got {type(client).__name__}")
        return cls(params, client, clock)

    return factory


def _spec(cls: Callable[[Any, PostgresClient, Clock], Probe], params: type[Params], unit: Unit,
          cardinality: Cardinality, summary: str, *, subjects: str, availability: bool = False) -> ProbeSpec:
    return ProbeSpec(params, _factory(cls), unit, cardinality, summary, target_kind="postgres",
                     availability=availability, subjects=subjects)


_HIGH, _LOW = Cardinality.HIGH, Cardinality.LOW

PROBES: dict[str, ProbeSpec] = {
    "postgres.up": _spec(UpProbe, UpParams, Unit.SECONDS, _LOW,
                         "connect + SELECT 1 latency; down (fires, on_down) when the server refuses or fails",
                         availability=True, subjects="pg_server"),
    "postgres.connections": _spec(ConnectionsProbe, NoParams, Unit.PERCENT, _LOW,
                                  "client backends as a percent of max_connections minus reserved slots",
                                  subjects="pg_server"),
    "postgres.idle": _spec(IdleProbe, BackendFilter, Unit.SECONDS, _HIGH,
                           "per backend: seconds idle", subjects="pg_backend"),
    "postgres.idle_in_transaction": _spec(IdleInTransactionProbe, BackendFilter, Unit.SECONDS, _HIGH,
                                          "per backend: seconds idle inside an open transaction",
                                          subjects="pg_backend"),
    "postgres.long_query": _spec(LongQueryProbe, BackendFilter, Unit.SECONDS, _HIGH,
                                 "per active backend: seconds since its query started", subjects="pg_backend"),
    "postgres.blocking": _spec(BlockingProbe, BlockingParams, Unit.COUNT, _HIGH,
                               "per blocking backend: how many backends wait on it", subjects="pg_backend"),
    "postgres.replication_lag": _spec(ReplicationLagProbe, ReplicationParams, Unit.SECONDS, _LOW,
                                      "per replica: replay lag in seconds", subjects="pg_replica"),
    "postgres.replication_lag_bytes": _spec(ReplicationLagBytesProbe, ReplicationParams, Unit.BYTES, _LOW,
                                            "per replica: WAL bytes not yet replayed", subjects="pg_replica"),
    "postgres.replicas": _spec(ReplicasProbe, NoParams, Unit.COUNT, _LOW,
                               "number of streaming replicas", subjects="pg_server"),
    "postgres.dead_tuples": _spec(DeadTuplesProbe, DeadTupleParams, Unit.COUNT, _HIGH,
                                  "per table: dead tuples", subjects="pg_table"),
    "postgres.dead_ratio": _spec(DeadRatioProbe, DeadTupleParams, Unit.RATIO, _HIGH,
                                 "per table: dead / (live + dead) tuples", subjects="pg_table"),
}
