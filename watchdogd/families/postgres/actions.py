"""PostgreSQL actions: terminate or cancel breaching backends, VACUUM (ANALYZE) breaching tables.

Signals are only ever sent by ``queries.SIGNAL``, which re-checks in the
same statement that each pid is still the backend the probe measured (same
``backend_start``) and still in the breach it was measured in. Between the
probe and the action a backend may exit, its pid may be reused, or an idle
connection may wake up to serve a request; none of them is ever signalled.

psycopg is imported only inside functions (``psycopg.sql`` composition):
see ``target.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from watchdogd.contracts import Action, ActionParams, ActionResult, ActionSpec, Clock, ItemResult, Reading
from watchdogd.families.postgres import queries as q
from watchdogd.families.postgres.target import APPLICATION_NAME, PostgresClient, PostgresError, Row, Session
from watchdogd.spec import Field, model_validator
from watchdogd.units import Duration

SIGNAL_CHUNK = 250
"""Backends per SIGNAL statement. Signals cannot be rolled back, so a statement stopped by
``statement_timeout`` half way leaves an unknown set signalled; small chunks keep every statement far
inside the timeout (1,000 terminations take about a second on two cores) and bound what one failure hides."""

QUERY_CHARS = 1000
"""Longest query text kept in an audit row when ``record_query_text`` is on."""

LEFT_BREACH: dict[str, str] = {
    "idle": "it was busy since it was measured",
    "idle_in_transaction": "its transaction moved on since it was measured",
    "long_query": "that query is no longer running",
    "blocking": "it no longer blocks anyone in the same transaction",
}
"""Why a backend that is no longer in the measured breach is left alone, per probe check."""

PAST = {"terminate": "terminated", "cancel": "cancelled"}


# --------------------------------------------------------------------------- params


class SignalParams(ActionParams):
    record_query_text: bool = False
    """Put the backend's query text (first 1000 characters) in the audit row; off because queries
    can carry personal data, and the audit log is kept for weeks."""
    wait_exit: Duration = Field(default=5.0, ge=0.0)
    """How long to wait for terminated backends to exit, so the audit says they did and the
    re-probe does not still see them. 0 = do not wait."""

    @model_validator(mode="after")
    def _fits_timeout(self) -> SignalParams:
        if self._waits() >= self.timeout:
            raise ValueError(f"the waits ({self._waits():g}s) must be shorter than timeout ({self.timeout:g}s)")
        return self

    def _waits(self) -> float:
        return self.wait_exit


class CancelParams(SignalParams):
    grace: Duration = Field(default=10.0, ge=0.0)
    """How long a cancelled query may take to stop before it is terminated."""
    terminate_after_grace: bool = True

    def _waits(self) -> float:
        return self.grace + self.wait_exit


class VacuumParams(ActionParams):
    max_per_run: int = Field(default=5, ge=1, le=10_000)
    timeout: Duration = Field(default=600.0, gt=0.0, le=86400.0)
    """For the whole run; each VACUUM gets what is left of it as its statement_timeout."""
    lock_timeout: Duration = Field(default=5.0, gt=0.0, le=86400.0)
    """A table some transaction holds an exclusive lock on is skipped rather than queued behind,
    because a waiting VACUUM makes every later query on that table wait behind it."""
    analyze: bool = True


# --------------------------------------------------------------------------- backends


@dataclass(frozen=True, slots=True)
class _Backend:
    """One reading's backend identity and breach, as the probe recorded them."""

    subject: str
    pid: int
    backend_start: str
    mark: str | None
    check: str
    application: str | None
    superuser: bool
    details: Mapping[str, Any]


def _backend(reading: Reading) -> _Backend | None:
    d = reading.details
    check = d.get("check")
    if not isinstance(d.get("pid"), int) or not d.get("backend_start") or check not in q.BREACH_CHECKS:
        return None
    return _Backend(reading.subject, d["pid"], d["backend_start"], d.get("mark"), str(check),
                    d.get("application"), d.get("superuser") is True, d)


def backend_thing(reading: Reading, client: PostgresClient) -> str:
    """A backend's stable name for the shared cooldown: pid *and* start, since a pid alone gets reused."""
    backend = _backend(reading)
    if backend is None:
        return f"{reading.subject} on {client.label}"  # run() refuses it anyway
    return f"backend {backend.pid} started {backend.backend_start} on {client.label}"


def _split(subjects: Sequence[Reading], action: str) -> tuple[list[_Backend], list[ItemResult]]:
    """Backends to act on, and a failed item for every reading that does not name one."""
    backends, refused = [], []
    for reading in subjects:
        backend = _backend(reading)
        if backend is None:
            refused.append(ItemResult(
                reading.subject, False,
                f"not a backend reading: {action} acts on readings of postgres.idle, "
                "postgres.idle_in_transaction, postgres.long_query or postgres.blocking",
            ))
        else:
            backends.append(backend)
    return backends, refused


@dataclass(frozen=True, slots=True)
class _Answers:
    """What the server said per subject, and the error of every chunk that failed as a whole."""

    rows: dict[str, Row]
    errors: dict[str, str]


def _signal(
    client: PostgresClient, backends: Sequence[_Backend], signal: str, *, with_query: bool
) -> _Answers:
    """Run ``queries.SIGNAL`` per kind of breach, in chunks; a failed chunk does not hide the others."""
    from psycopg import sql  # noqa: PLC0415 (lazy: see module docstring)

    answers = _Answers({}, {})
    by_check: dict[str, list[_Backend]] = {}
    for backend in backends:
        by_check.setdefault(backend.check, []).append(backend)
    if signal != "dry_run":
        client.forget_activity()  # whatever happens below, the next probe reads pg_stat_activity afresh
    for check, group in by_check.items():
        statement = sql.SQL(q.SIGNAL).format(  # constants from queries.py only
            check=sql.SQL(q.BREACH_CHECKS[check]),
            signal=sql.SQL(q.SIGNALS[signal]),
        )
        for start in range(0, len(group), SIGNAL_CHUNK):
            chunk = group[start:start + SIGNAL_CHUNK]
            try:
                result = client.query(statement, {
                    "pids": [b.pid for b in chunk],
                    "starts": [b.backend_start for b in chunk],
                    "marks": [b.mark for b in chunk],
                    "apps": [b.application for b in chunk],
                    "supers": [b.superuser for b in chunk],
                    "self": APPLICATION_NAME,
                    "with_query": with_query,
                    "query_chars": QUERY_CHARS,
                })
            except PostgresError as exc:
                answers.errors.update((b.subject, f"{signal} failed: {exc}") for b in chunk)
                continue
            by_pid = {row["pid"]: row for row in result}
            answers.rows.update((b.subject, by_pid[b.pid]) for b in chunk if b.pid in by_pid)
    return answers


def _wait_gone(client: PostgresClient, backends: Sequence[_Backend], timeout: float) -> tuple[set[int], float]:
    """Poll until the terminated backends have left pg_stat_activity; the pids still there, and the wait."""
    started = time.monotonic()
    pending = list(backends)
    delay = 0.01
    while pending:
        rows = client.query(q.STILL_PRESENT, {
            "pids": [b.pid for b in pending], "starts": [b.backend_start for b in pending],
        })
        present = {row["pid"] for row in rows}
        pending = [b for b in pending if b.pid in present]
        elapsed = time.monotonic() - started
        if not pending or elapsed >= timeout:
            break
        time.sleep(min(delay, timeout - elapsed))
        delay = min(delay * 2, 0.2)
    return {b.pid for b in pending}, time.monotonic() - started


_REFUSALS: tuple[tuple[Callable[[Row], bool], bool, str], ...] = (
    (lambda r: not r["alive"], True, "gone: the backend has already exited"),
    (lambda r: not r["same_backend"], True, "kept: the pid now belongs to another backend"),
    (lambda r: not r["client"], True, "kept: no longer a client backend"),
    (lambda r: not r["same_app"], True, "kept: application_name changed to {app_now!r} since it was measured"),
    (lambda r: not r["same_superuser"], True, "kept: {usename} became a superuser since it was measured"),
    (lambda r: not r["breaching"], True, "kept: {left} (now {state})"),
    (lambda r: r["superuser"] and not r["we_are_superuser"], False,
     "permission denied: {usename} is a superuser, and only a superuser may signal its backends"),
    (lambda r: not r["may_signal"], False,
     "permission denied: role {role} needs pg_signal_backend (or membership in role {usename}) to signal it"),
)
"""Why an ineligible backend was not signalled, first match wins. Changed-since-measured outcomes are
``ok``: the breach is gone, nothing was supposed to happen. Permission problems are failures."""


def _refusal(row: Row, check: str) -> tuple[bool, str] | None:
    for refused, ok, template in _REFUSALS:
        if refused(row):
            return ok, template.format(left=LEFT_BREACH[check], **row)
    return None


def _info(backend: _Backend, row: Row | None, with_query: bool) -> dict[str, Any]:
    """Audit fields: who and how long, from the server at signal time, else as the probe saw them."""
    d = backend.details
    live = row if row is not None and row["alive"] and row["same_backend"] else None
    info: dict[str, Any] = {
        "pid": backend.pid,
        "backend_start": backend.backend_start,
        "user": live["usename"] if live else d.get("user"),
        "database": live["datname"] if live else d.get("database"),
        "application": live["app_now"] if live else d.get("application"),
        "client": (live["client_addr"] or "local") if live else d.get("client"),
        "state": live["state"] if live else d.get("state"),
        "check": backend.check,
    }
    if row is not None and row["seconds"] is not None:
        info["seconds"] = round(row["seconds"], 3)
    if with_query and live is not None and live["query"] is not None:
        info["query"] = live["query"]
    return info


@dataclass(slots=True)
class _Outcome:
    """One backend's fate across the steps of a run, turned into an ``ItemResult`` at the end."""

    backend: _Backend
    row: Row | None = None
    ok: bool = True
    text: str = ""
    acted: bool = False  # signalled, or in dry-run: would be


def _apply(outcomes: Sequence[_Outcome], answers: _Answers, done: str, would: str,
           dry_run: bool) -> list[_Outcome]:
    """Record what one round of SIGNAL statements did per backend; return those it signalled (or would)."""
    signalled = []
    for outcome in outcomes:
        subject = outcome.backend.subject
        row = answers.rows.get(subject)
        outcome.row = row or outcome.row
        if row is None:
            outcome.ok, outcome.text = False, answers.errors.get(subject, "no answer from the server for this pid")
            continue
        refusal = _refusal(row, outcome.backend.check) if not row["eligible"] else None
        if refusal is not None:
            outcome.ok, outcome.text = refusal
        elif dry_run:
            outcome.text, outcome.acted = would, True
            signalled.append(outcome)
        elif row["signalled"]:
            outcome.text, outcome.acted = done, True
            signalled.append(outcome)
        else:
            outcome.text = "gone: exited before the signal arrived"
    return signalled


def _result(outcomes: Sequence[_Outcome], refused: Sequence[ItemResult], verb: str, with_query: bool,
            dry_run: bool) -> ActionResult:
    """``verb`` is the bare verb ("terminate"): the summary reads "terminated 3 of 4" or "would terminate 3 of 4"."""
    items = [*refused, *(ItemResult(o.backend.subject, o.ok, o.text, _info(o.backend, o.row, with_query))
                         for o in outcomes)]
    acted = sum(1 for o in outcomes if o.acted)
    failed = [item for item in items if not item.ok]
    kept = len(items) - acted - len(failed)
    summary = f"{'would ' + verb if dry_run else PAST[verb]} {acted} of {len(items)} backend(s)"
    if kept:
        summary += f"; {kept} gone or changed since measured, left alone"
    if failed:
        summary += f"; {len(failed)} backend(s) not signalled: {failed[0].detail}"
    # ``error`` stays for failures of the whole run: each audit row then carries its own item's reason.
    return ActionResult(ok=not failed, items=tuple(items), detail=summary)


def _failed(subjects: Sequence[Reading], message: str) -> ActionResult:
    return ActionResult(
        ok=False, items=tuple(ItemResult(r.subject, False, message) for r in subjects), detail=message,
        error=message,
    )


def _note_exits(client: PostgresClient, terminated: Sequence[_Outcome], wait: float) -> None:
    """Append to each terminated backend's detail whether it has exited (within ``wait``)."""
    if not terminated or wait <= 0:
        return
    try:
        left, waited = _wait_gone(client, [o.backend for o in terminated], wait)
    except PostgresError as exc:  # the signals went out; only the confirmation is missing
        for outcome in terminated:
            outcome.text += f"; exit not confirmed: {exc}"
        return
    for outcome in terminated:
        if outcome.backend.pid in left:
            outcome.text += f"; still exiting after {waited:.2f}s"
        else:
            outcome.text += f"; exited within {waited:.2f}s"


class TerminateAction:
    """``postgres.terminate``: ``pg_terminate_backend`` on each breaching backend, re-checked in-statement."""

    def __init__(self, params: SignalParams, client: PostgresClient, clock: Clock) -> None:
        self._params = params
        self._client = client

    def thing(self, reading: Reading) -> str:
        return backend_thing(reading, self._client)

    def run(self, subjects: Sequence[Reading], *, dry_run: bool) -> ActionResult:
        params = self._params
        backends, refused = _split(subjects, "postgres.terminate")
        outcomes = [_Outcome(b) for b in backends]
        answers = _signal(self._client, backends, "dry_run" if dry_run else "terminate",
                          with_query=params.record_query_text)
        terminated = _apply(outcomes, answers, "terminated", "would terminate", dry_run)
        if not dry_run:
            _note_exits(self._client, terminated, params.wait_exit)
        return _result(outcomes, refused, "terminate", params.record_query_text, dry_run)


class CancelAction:
    """``postgres.cancel``: cancel the query, and terminate the backend if it is still breaching after ``grace``.

    Cancelling first is the gentle way for long queries: the session (and
    the application's pooled connection) survives, only the query errors.
    The terminate step goes through the same in-statement re-check, so a
    backend whose query stopped, or that moved on to another query, is left
    alone.
    """

    def __init__(self, params: CancelParams, client: PostgresClient, clock: Clock) -> None:
        self._params = params
        self._client = client

    def thing(self, reading: Reading) -> str:
        return backend_thing(reading, self._client)

    def run(self, subjects: Sequence[Reading], *, dry_run: bool) -> ActionResult:
        params = self._params
        backends, refused = _split(subjects, "postgres.cancel")
        outcomes = [_Outcome(b) for b in backends]
        then = f", then terminate if still breaching after {params.grace:g}s" if params.terminate_after_grace else ""
        answers = _signal(self._client, backends, "dry_run" if dry_run else "cancel",
                          with_query=params.record_query_text)
        cancelled = _apply(outcomes, answers, "cancelled", f"would cancel{then}", dry_run)
        if not dry_run and cancelled:
            self._escalate(cancelled)
        return _result(outcomes, refused, "cancel", params.record_query_text, dry_run)

    def _escalate(self, cancelled: list[_Outcome]) -> None:
        """Wait out the grace for the cancels to take; terminate what is still breaching."""
        params = self._params
        started = time.monotonic()
        pending = cancelled
        delay = 0.02
        while pending:
            answers = _signal(self._client, [o.backend for o in pending], "dry_run", with_query=False)
            waited = time.monotonic() - started
            still = []
            for outcome in pending:
                row = answers.rows.get(outcome.backend.subject)
                if row is None or row["eligible"]:  # no answer counts as still breaching
                    still.append(outcome)
                else:
                    outcome.text += f"; stopped within {waited:.2f}s"
            pending = still
            if not pending or waited >= params.grace:
                break
            time.sleep(min(delay, params.grace - waited))
            delay = min(delay * 2, 0.25)
        if not pending:
            return
        grace = f"still breaching after the {params.grace:g}s grace"
        if not params.terminate_after_grace:
            for outcome in pending:
                outcome.text += f"; {grace} (terminate_after_grace is off)"
            return
        answers = _signal(self._client, [o.backend for o in pending], "terminate", with_query=False)
        terminated = []
        for outcome in pending:
            row = answers.rows.get(outcome.backend.subject)
            refusal = _refusal(row, outcome.backend.check) if row is not None and not row["eligible"] else None
            if row is None:
                outcome.ok = False
                outcome.text += f"; {grace}, not terminated: {answers.errors.get(outcome.backend.subject)}"
            elif row["signalled"]:
                outcome.text += f"; {grace}: terminated"
                terminated.append(outcome)
            elif refusal is not None:
                outcome.ok = outcome.ok and refusal[0]
                outcome.text += f"; not terminated: {refusal[1]}"
            else:
                outcome.text += "; exited before the terminate"
        _note_exits(self._client, terminated, params.wait_exit)


# --------------------------------------------------------------------------- vacuum


@dataclass(frozen=True, slots=True)
class _Table:
    subject: str
    relid: int
    schema: str
    table: str
    dead_tuples: int | None


@dataclass(frozen=True, slots=True)
class _Why:
    """Why a table is not vacuumed: ``ok`` when that is fine (gone, already being vacuumed)."""

    ok: bool
    text: str


def _table(reading: Reading) -> _Table | None:
    d = reading.details
    if not isinstance(d.get("relid"), int) or not d.get("schema") or not d.get("table"):
        return None
    return _Table(reading.subject, d["relid"], str(d["schema"]), str(d["table"]), d.get("dead_tuples"))


class VacuumAction:
    """``postgres.vacuum``: ``VACUUM (ANALYZE)`` each breaching table, one at a time, on its own connection.

    A dedicated connection, because a VACUUM may run for minutes and the
    shared one must keep serving every other rule's probes on this server.
    Before each VACUUM the table is looked up by oid (so a dropped and
    recreated table is not the one the probe measured), the privilege is
    checked (an unprivileged VACUUM is a silent no-op with a WARNING), and a
    table autovacuum is already working on is left to it.
    """

    def __init__(self, params: VacuumParams, client: PostgresClient, clock: Clock) -> None:
        self._params = params
        self._client = client

    def thing(self, reading: Reading) -> str:
        """The table by oid (what the action looks it up by), so a renamed table is still the same thing."""
        table = _table(reading)
        if table is None:
            return f"{reading.subject} on {self._client.label}"
        return f"table {table.relid} ({table.schema}.{table.table}) on {self._client.label}"

    def _statement(self, table: _Table) -> Any:
        from psycopg import sql  # noqa: PLC0415 (lazy: see module docstring)

        options = sql.SQL("(ANALYZE) " if self._params.analyze else "")
        return sql.SQL("VACUUM {options}{table}").format(options=options,
                                                         table=sql.Identifier(table.schema, table.table))

    def _check(self, query: Callable[..., list[Row]], version: int, table: _Table) -> tuple[Row | None, _Why | None]:
        """The live table row, and why this table must not be vacuumed now (None: go ahead)."""
        from psycopg import sql  # noqa: PLC0415

        statement = sql.SQL(q.VACUUM_TARGET).format(  # constants only
            may_vacuum=sql.SQL(q.vacuum_privilege(version))
        )
        rows = query(statement, {"relid": table.relid})
        if not rows:
            return None, _Why(True, "gone: the table no longer exists")
        row = rows[0]
        if (row["nspname"], row["relname"]) != (table.schema, table.table):
            return row, _Why(True, f"kept: oid {table.relid} is now {row['nspname']}.{row['relname']}")
        if not row["may_vacuum"]:
            return row, _Why(False, f"permission denied: role {row['role']} may not VACUUM {table.subject}; it "
                                    "needs to own the table (or the database), or on PostgreSQL 17+ hold MAINTAIN "
                                    "on it or pg_maintain")
        if row["vacuum_running"]:
            return row, _Why(True, "skipped: a VACUUM (autovacuum?) is already running on it")
        return row, None

    def run(self, subjects: Sequence[Reading], *, dry_run: bool) -> ActionResult:
        tables, items = [], []
        for reading in subjects:
            table = _table(reading)
            if table is None:
                items.append(ItemResult(reading.subject, False, "not a table reading: postgres.vacuum acts on "
                                        "readings of postgres.dead_tuples or postgres.dead_ratio"))
            else:
                tables.append(table)
        try:
            if dry_run:
                version = self._client.server_version()
                items += [self._dry(self._client.query, version, table) for table in tables]
            else:
                items += self._vacuum_all(tables)
        except PostgresError as exc:
            return _failed(subjects, f"vacuum failed: {exc}")
        failed = [item for item in items if not item.ok]
        done = sum(1 for item in items if item.info.get("vacuumed"))
        summary = f"{'would vacuum' if dry_run else 'vacuumed'} {done} of {len(items)} table(s)"
        if failed:
            summary += f"; {len(failed)} table(s) not vacuumed: {failed[0].detail}"
        return ActionResult(ok=not failed, items=tuple(items), detail=summary)

    def _dry(self, query: Callable[..., list[Row]], version: int, table: _Table) -> ItemResult:
        row, why = self._check(query, version, table)
        info = _table_info(table, row, vacuumed=why is None)
        if why is not None:
            return ItemResult(table.subject, why.ok, why.text, info)
        return ItemResult(table.subject, True, f"would {self._verb()} {table.subject}", info)

    def _verb(self) -> str:
        return "VACUUM (ANALYZE)" if self._params.analyze else "VACUUM"

    def _vacuum_all(self, tables: Sequence[_Table]) -> list[ItemResult]:
        params = self._params
        deadline = time.monotonic() + params.timeout
        items: list[ItemResult] = []
        if not tables:
            return items
        with self._client.session(statement_timeout=params.timeout) as session:
            session.query(q.VACUUM_LOCK_TIMEOUT, {"ms": str(max(1, round(params.lock_timeout * 1000)))})
            for table in tables:
                left = deadline - time.monotonic()
                if left <= 1.0:
                    items.append(ItemResult(table.subject, False, "not vacuumed: the action's timeout was used up",
                                            _table_info(table, None)))
                    continue
                items.append(self._vacuum_one(session, table, left))
        return items

    def _vacuum_one(self, session: Session, table: _Table, left: float) -> ItemResult:
        row, why = self._check(session.query, session.server_version, table)
        info = _table_info(table, row)
        if why is not None:
            return ItemResult(table.subject, why.ok, why.text, info)
        session.query(q.STATEMENT_TIMEOUT, {"ms": str(round(left * 1000))})
        session.notices.clear()
        started = time.monotonic()
        try:
            session.query(self._statement(table))
        except PostgresError as exc:
            return ItemResult(table.subject, False, f"{self._verb()} failed: {exc}", info)
        info["seconds"] = round(time.monotonic() - started, 3)
        skipped = [n for n in session.notices if n.startswith("skipping")]
        if skipped:
            return ItemResult(table.subject, False, f"not vacuumed: the server said {skipped[0]!r}", info)
        info["vacuumed"] = True
        return ItemResult(table.subject, True, f"vacuumed ({self._verb()}) in {info['seconds']:.2f}s", info)


def _table_info(table: _Table, row: Row | None, *, vacuumed: bool = False) -> dict[str, Any]:
    info: dict[str, Any] = {"relid": table.relid, "schema": table.schema, "table": table.table,
                            "dead_tuples": table.dead_tuples, "vacuumed": vacuumed}
    if row is not None and row.get("n_dead_tup") is not None:
        info["dead_tuples_now"] = int(row["n_dead_tup"])
    return info


# --------------------------------------------------------------------------- table


def _factory(cls: Callable[[Any, PostgresClient, Clock], Action]) -> Callable[[Any, Any, Clock], Action]:
    def factory(params: Any, client: Any, clock: Clock) -> Action:
        if not isinstance(client, PostgresClient):
            raise TypeError(f"{cls.__name__} needs a postgres target client, got {type(client).__name__}")
        return cls(params, client, clock)

    return factory


ACTIONS: dict[str, ActionSpec] = {
    "postgres.terminate": ActionSpec(
        SignalParams, _factory(TerminateAction),
        "pg_terminate_backend on breaching backends, re-checking identity and breach in the same statement",
        target_kind="postgres", settle=5.0, accepts=frozenset({"pg_backend"}),
    ),
    "postgres.cancel": ActionSpec(
        CancelParams, _factory(CancelAction),
        "pg_cancel_backend on breaching backends, terminating those still breaching after a grace",
        target_kind="postgres", settle=5.0, accepts=frozenset({"pg_backend"}),
    ),
    "postgres.vacuum": ActionSpec(
        VacuumParams, _factory(VacuumAction),
        "VACUUM (ANALYZE) breaching tables one at a time, with lock_timeout",
        target_kind="postgres", settle=60.0,  # the statistics collector reports dead tuples with a delay
        accepts=frozenset({"pg_table"}),
    ),
}
