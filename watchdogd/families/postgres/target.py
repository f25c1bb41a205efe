"""A named PostgreSQL server: one shared autocommit connection, re-established with backoff.

This is the only module that imports psycopg, and only inside functions, so
a host without a PostgreSQL target never loads it (memory budget). Probe and
action modules talk to ``PostgresClient`` and catch ``PostgresError``.

Why one connection per target rather than one per rule: a server whose
``max_connections`` is exhausted is exactly when the daemon must still be
able to look and act, so it holds on to the slot it already has; and twenty
rules opening twenty backends would be the daemon contributing to the
problem it watches.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from watchdogd.contracts import ProbeError, TargetParams, TargetSpec
from watchdogd.families.postgres import queries as q
from watchdogd.families.postgres.activity import Activity
from watchdogd.secrets import resolve_secret
from watchdogd.sharedread import MAX_AGE, SharedRead
from watchdogd.spec import Field, PrivateAttr, model_validator
from watchdogd.units import Duration

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

    Query = str | sql.SQL | sql.Composed

APPLICATION_NAME = "watchdogd"
"""Forced on every connection (it overrides the DSN) so probes can always recognise and skip our own backends."""

Row = dict[str, Any]


class PostgresError(ProbeError):
    """A query or connection failed; the message is one line, fit for status and the audit log."""


class PostgresUnavailable(PostgresError):
    """No connection (server down, refused, auth failed); the client retries with backoff."""


class PostgresPermissionError(PostgresError):
    """The role lacks a privilege; the message says which grant would fix it."""


class PostgresTimeout(PostgresError):
    """``statement_timeout`` or ``lock_timeout`` stopped the statement."""


class PostgresParams(TargetParams):
    """``targets.postgres.<name>``. Exactly one of ``dsn``, ``dsn_file``, ``dsn_env``."""

    dsn: str | None = Field(default=None, repr=False)
    dsn_file: str | None = None
    dsn_env: str | None = None
    connect_timeout: Duration = Field(default=5.0, ge=1.0, le=86400.0)
    statement_timeout: Duration = Field(default=5.0, gt=0.0, le=86400.0)
    max_backoff: Duration = Field(default=60.0, ge=1.0)

    _conninfo: str = PrivateAttr(default="")
    _label: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _resolve_dsn(self) -> PostgresParams:
        value = resolve_secret(self.dsn, self.dsn_file, self.dsn_env, "dsn")
        if not value:
            raise ValueError("set one of dsn, dsn_file or dsn_env")
        from psycopg import ProgrammingError  # noqa: PLC0415 (lazy: see module docstring)
        from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415

        try:
            parts = conninfo_to_dict(value)
        except ProgrammingError as exc:
            raise ValueError(f"dsn is not a valid libpq connection string: {_one_line(exc)}") from None
        self._conninfo = value
        self._label = _label(parts)
        return self

    @property
    def conninfo(self) -> str:
        return self._conninfo

    @property
    def label(self) -> str:
        """``host:port/dbname`` without credentials: a stable, loggable name for the server."""
        return self._label


def _label(parts: Mapping[str, Any]) -> str:
    host = str(parts.get("host") or parts.get("hostaddr") or "local")
    port = str(parts.get("port") or "5432")
    dbname = str(parts.get("dbname") or parts.get("user") or "")
    return f"{host}:{port}/{dbname}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


@dataclass(frozen=True, slots=True)
class Ping:
    """One fresh connection's timings, for ``postgres.up``."""

    connect_seconds: float
    query_seconds: float
    server_version: int
    in_recovery: bool


_SETUP = (
    "SELECT set_config('statement_timeout', %(statement_timeout)s, false),"
    " set_config('TimeZone', 'UTC', false),"
    " set_config('default_transaction_read_only', %(read_only)s, false)"
)
"""Session settings, applied after connecting so an ``options`` in the operator's DSN survives.

UTC makes the timestamps in reading details and audit rows unambiguous;
read-only is a second lock on the door for the shared connection, whose
only writes are signals (functions, allowed in read-only transactions).
"""

_DEFAULT_NETWORK = {"keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10",
                    "keepalives_count": "3", "tcp_user_timeout": "30000"}
"""A dead network path is noticed in about a minute, not the kernel's two hours; the DSN may override.

``statement_timeout`` is enforced by the server, so it cannot help when the
server or the path to it is gone: keepalives catch a silent peer, and
``tcp_user_timeout`` a request that is never acknowledged.
"""


class Session:
    """A dedicated connection for one long operation (VACUUM), so probes keep the shared one.

    Notices are kept: a VACUUM without privilege does nothing and only says
    so in a WARNING, which the caller must turn into a failure.
    """

    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self._conn = conn
        self.server_version = int(conn.info.server_version)
        self.notices: list[str] = []
        conn.add_notice_handler(lambda diag: self.notices.append(diag.message_primary or ""))

    def query(self, statement: Query, params: Mapping[str, Any] | None = None) -> list[Row]:
        try:
            cursor = self._conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else []
        except Exception as exc:
            raise _classify(exc) from None


class PostgresClient:
    """The shared connection of one target, safe to use from several rules' threads.

    Every statement runs under ``statement_timeout`` (server side) and the
    lock wait is bounded, so a hung query on one rule makes the others fail
    fast with a clear message instead of piling up behind it.
    """

    def __init__(
        self,
        params: PostgresParams,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        activity_max_age: float = MAX_AGE,
    ) -> None:
        self.params = params
        self.label = params.label
        self._monotonic = monotonic
        self._lock = threading.Lock()
        # Whoever holds the lock is inside one connect or one statement, each bounded by its timeout;
        # waiting a little longer than the longer of the two, and less than the engine's default 10 s
        # probe timeout, turns a stuck holder into a clear "busy" error instead of a hung probe.
        self._lock_wait = max(params.connect_timeout, params.statement_timeout) + 1.0
        self._conn: psycopg.Connection[Row] | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._max_backoff = params.max_backoff
        self._last_error = ""
        self._closed = False
        # One pg_stat_activity read for every backend probe of this target due in the same cycle.
        self._activity = SharedRead(
            lambda: Activity.of(self.query(q.ACTIVITY)), max_age=activity_max_age, monotonic=monotonic
        )
        # One fresh connection per cycle for every postgres.up rule of this target (a failure is never kept).
        self._ping = SharedRead(self._ping_fresh, max_age=activity_max_age, monotonic=monotonic)

    def retry_within(self, seconds: float) -> None:
        """Never hold back the next connect attempt longer than ``seconds`` (``TargetSpec.retry_within``).

        Caps ``max_backoff`` and shortens a wait already scheduled, so a
        server that is back is used again on each rule's next run rather
        than after a backoff longer than the rules' interval.
        """
        cap = max(0.0, min(self.params.max_backoff, seconds))
        self._activity.limit(seconds)  # no rule gets the same pg_stat_activity read on two of its runs
        self._ping.limit(seconds)
        self._max_backoff = cap
        self._retry_at = min(self._retry_at, self._monotonic() + cap)

    def _reset_backoff(self) -> None:
        """The server just accepted a connection: let the next use of the shared one reconnect at once.

        Without the lock on purpose: ``ping`` must not queue behind a
        statement on the shared connection. Two plain stores; a failure
        recorded by a concurrent connect just after this wins, which is
        what it should do.
        """
        self._failures, self._retry_at = 0, 0.0

    # -- connecting -----------------------------------------------------------------------

    def _open(self, *, statement_timeout: float, read_only: bool) -> psycopg.Connection[Row]:
        import psycopg  # noqa: PLC0415 (lazy: see module docstring)
        from psycopg.conninfo import conninfo_to_dict, make_conninfo  # noqa: PLC0415
        from psycopg.rows import dict_row  # noqa: PLC0415

        parts = {**_DEFAULT_NETWORK, **conninfo_to_dict(self.params.conninfo)}
        parts["application_name"] = APPLICATION_NAME
        parts["connect_timeout"] = str(max(2, math.ceil(self.params.connect_timeout)))
        conn = psycopg.connect(make_conninfo("", **parts), autocommit=True, row_factory=dict_row)
        try:
            conn.execute(_SETUP, {
                "statement_timeout": str(max(1, round(statement_timeout * 1000))),
                "read_only": "on" if read_only else "off",
            })
        except BaseException:
            conn.close()
            raise
        return conn

    def _connection(self) -> tuple[psycopg.Connection[Row], bool]:
        """The live shared connection and whether it was opened just now. Lock held."""
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn, False
        self._drop()
        if self._closed:
            raise PostgresUnavailable(f"the client for {self.label} was closed (reload or shutdown)")
        now = self._monotonic()
        if now < self._retry_at:
            wait = math.ceil(self._retry_at - now)
            raise PostgresUnavailable(f"reconnecting in {wait}s: {self._last_error}")
        try:
            conn = self._open(statement_timeout=self.params.statement_timeout, read_only=True)
        except Exception as exc:
            self._failures += 1
            delay = min(self._max_backoff, 2.0 ** (self._failures - 1))
            self._retry_at = now + delay
            self._last_error = _classify(exc).args[0]
            raise PostgresUnavailable(f"reconnecting in {delay:g}s: {self._last_error}") from None
        self._failures, self._retry_at, self._conn = 0, 0.0, conn
        return conn, True

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):  # closing a broken socket can fail; it is gone either way
                conn.close()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        if not self._lock.acquire(timeout=self._lock_wait):
            raise PostgresError(
                f"busy: another rule's statement on {self.label} has held the connection for over "
                f"{self._lock_wait:g}s"
            )
        try:
            yield
        finally:
            self._lock.release()

    @contextmanager
    def exclusive(self, wait: float) -> Iterator[Any]:
        """The shared connection for a caller's own transaction, waiting at most ``wait`` seconds for it.

        Evidence reads several statements in one read-only transaction under
        its own deadline, which ``query`` (one statement, the lock's usual
        wait) cannot give it. Raises ``PostgresError`` when another rule's
        statement holds the connection past ``wait``.
        """
        if wait <= 0 or not self._lock.acquire(timeout=wait):
            raise PostgresError(f"busy: another rule's statement on {self.label} held the connection until "
                                "the evidence deadline")
        try:
            conn, _ = self._connection()
            yield conn
        finally:
            self._lock.release()

    # -- queries --------------------------------------------------------------------------

    def query(self, statement: Query, params: Mapping[str, Any] | None = None) -> list[Row]:
        """Rows as dicts. Raises ``PostgresError`` subclasses, never a psycopg exception.

        A connection found dead on first use (the server restarted since the
        last cycle) is reopened and the statement retried once: every
        statement we send re-checks its own preconditions, so running it
        again is safe, and a restart that already finished should not show
        as an outage.
        """
        with self._locked():
            for attempt in (1, 2):
                conn, fresh = self._connection()
                try:
                    cursor = conn.execute(statement, params)
                    return cursor.fetchall() if cursor.description else []
                except Exception as exc:
                    error = _classify(exc)
                    if not (conn.closed or conn.broken):
                        raise error from None
                    self._drop()
                    if attempt == 2 or fresh:
                        raise PostgresUnavailable(f"connection lost: {error.args[0]}") from None
            raise AssertionError("unreachable")  # pragma: no cover

    def activity(self) -> Activity:
        """Every backend, read once for all the probes of this target due together (``activity.py``).

        At most ``activity_max_age`` old (from the moment the read started);
        a failed read is not kept (see ``SharedRead``). ``forget_activity``
        after signalling backends, so the next probe sees what we changed.
        """
        return self._activity.get()

    def forget_activity(self) -> None:
        self._activity.forget()

    @property
    def activity_reads(self) -> int:
        """``pg_stat_activity`` reads actually sent through ``activity`` (tests and benchmarks count them)."""
        return self._activity.reads

    def server_version(self) -> int:
        """``server_version_num`` of the current connection (160002 for 16.2), for version-specific SQL."""
        with self._locked():
            conn, _ = self._connection()
            return int(conn.info.server_version)

    def ping(self) -> Ping:
        """Open a fresh connection and run one query: what a new application client would experience.

        Deliberately not the shared connection: when ``max_connections`` is
        exhausted the shared one keeps working while every new client is
        refused, and "up" must say what the applications see. One such
        connection serves every ``postgres.up`` rule of this target due in the
        same cycle (``SharedRead``, as ``activity``): a success is reused for
        at most ``activity_max_age`` (capped at half the shortest interval), a
        failure never.
        """
        return self._ping.get()

    @property
    def pings(self) -> int:
        """Fresh connections actually opened by ``ping`` (tests and benchmarks count them)."""
        return self._ping.reads

    def _ping_fresh(self) -> Ping:
        started = self._monotonic()
        try:
            conn = self._open(statement_timeout=self.params.statement_timeout, read_only=True)
        except Exception as exc:
            raise _classify(exc) from None
        try:
            connected = self._monotonic()
            row = conn.execute("SELECT pg_is_in_recovery() AS in_recovery").fetchone()
            done = self._monotonic()
            ping = Ping(connected - started, done - connected, int(conn.info.server_version),
                        bool(row and row["in_recovery"]))
        except Exception as exc:
            raise _classify(exc) from None
        finally:
            conn.close()
        # The server is back: the other rules' next query must not wait out a backoff from the outage.
        self._reset_backoff()
        return ping

    @contextmanager
    def session(self, *, statement_timeout: float) -> Iterator[Session]:
        """A dedicated read-write connection for one long operation, closed afterwards."""
        try:
            conn = self._open(statement_timeout=statement_timeout, read_only=False)
        except Exception as exc:
            raise _classify(exc) from None
        try:
            yield Session(conn)
        finally:
            conn.close()

    def close(self) -> None:
        """Idempotent. Never reopened afterwards, so a probe still running on a client replaced by a
        reload cannot leak a connection; and never stuck for long behind a statement on a dead network."""
        locked = self._lock.acquire(timeout=self._lock_wait)
        try:
            self._closed = True
            self._drop()
        finally:
            if locked:
                self._lock.release()


# -- error classification ---------------------------------------------------------------------

_PERMISSION_HINT = "(grant pg_monitor and pg_signal_backend to the daemon's role; see docs/postgres.md)"


def _classify(exc: BaseException) -> PostgresError:
    """Map a psycopg exception to one of ours with a one-line, actionable message."""
    import psycopg  # noqa: PLC0415 (lazy: see module docstring)
    from psycopg import errors  # noqa: PLC0415

    if isinstance(exc, PostgresError):
        return exc
    text = _one_line(exc)
    if isinstance(exc, errors.InsufficientPrivilege):
        return PostgresPermissionError(f"permission denied: {text} {_PERMISSION_HINT}")
    if isinstance(exc, errors.LockNotAvailable):
        return PostgresTimeout(f"lock not obtained within lock_timeout: {text}")
    if isinstance(exc, errors.QueryCanceled):
        return PostgresTimeout(f"statement cancelled (statement_timeout): {text}")
    if isinstance(exc, psycopg.OperationalError | errors.AdminShutdown | errors.CannotConnectNow):
        return PostgresUnavailable(text)
    return PostgresError(text)


def connect(params: PostgresParams) -> PostgresClient:
    """Never blocks or raises: the first query connects, so a server down at start is a probe down."""
    return PostgresClient(params)


def close(client: PostgresClient) -> None:
    client.close()


def retry_within(client: PostgresClient, seconds: float) -> None:
    client.retry_within(seconds)


TARGET = TargetSpec(params=PostgresParams, connect=connect, close=close, retry_within=retry_within)
