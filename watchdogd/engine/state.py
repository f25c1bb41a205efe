"""The daemon's memory across restarts: rule state and the audit log.

Why SQLite with these settings:

* WAL + ``synchronous=FULL``: the guard writes a "started" audit row and the new
  cooldown *before* an action runs. That write must survive ``kill -9`` and
  power loss, or a restart could repeat an action the cooldown forbids. FULL in
  WAL mode fsyncs the log on every commit; the daemon writes a handful of rows
  per cycle, so the cost is irrelevant.
* One connection behind one lock: the scheduler calls in from several worker
  threads. SQLite serialises writers anyway; a single connection keeps every
  public method one transaction without ``database is locked`` retries between
  our own threads. ``busy_timeout`` only matters for other processes (an
  operator running ``sqlite3`` on the file).
* Schema version in ``PRAGMA user_version`` with a table of migrations, so a
  later issue adds a column by appending one entry to ``_MIGRATIONS``.

JSON columns (rule state, kv blobs, audit ``detail``) are written with
``json.dumps(allow_nan=True)``, so ``inf``/``nan`` round-trip. That output is
not strict JSON (``Infinity``/``NaN``): it must only be decoded by Python's
``json`` module, never by SQLite's ``json_*`` functions or a strict parser.
Tuples come back as lists (JSON has no tuples). The float audit columns are
SQLite REALs: ``inf`` survives, ``nan`` becomes NULL (SQLite has no NaN).
Rule state and kv blobs must be JSON (a ``TypeError`` otherwise: guard state
that came back as a string would be silently wrong); audit ``detail`` is for
humans, so an odd value in it is stored as its ``repr`` rather than failing
the write that must precede an action.

A bad state file (not a database, failing ``quick_check``, or a schema newer
than this code) is moved aside and replaced by an empty one with one ERROR
log line: the daemon must not crash-loop on its own memory. An unusable
*directory* is an operator mistake and raises ``StateError`` instead.

Startup recovery runs only when this process holds the state directory's
lock (``StateLock``: the daemon and ``--once``), because only then is no one
else mid-action on this database:

* "started" rows are closed as ``interrupted``: the process that wrote them
  died before the action returned (``kill -9``, OOM, power loss), so the row
  must not claim forever that the action is still running.
* A reset is detected and counted. ``<db stem>.id`` beside the database
  (``state.id``) records the database's id (also stored inside it) and the
  highest committed audit id. A database that is new, another one, or lower
  than recorded (a 0-byte file, a deleted ``-wal``, a restore) means
  cooldowns and history were lost: one ERROR line says what was found, and
  ``resets_total()`` (carried over in the identity file, so a reset never
  zeroes it) feeds ``watchdogd_state_resets_total``. The file is rewritten
  in place after each commit that adds audit rows, without fsync (see
  ``_write_identity``): it guards against deletion and truncation, not
  against power loss. It costs ~20 us of its own per audit write, ~80 us
  measured end to end (the inode it dirties joins the journal commit the
  WAL's fsync forces), next to ~600 us for the fsync'd write itself.

Readers that do not hold the lock (tests reading history, a post-mortem) see
the rows as they are and write nothing at open.

The state directory must be watchdogd's own (``StateLock`` refuses one that
holds other files): ``files.clean`` of a shared directory, a package
purge or an operator's ``rm`` there would take the audit log with it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sqlite3
import threading
import types
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from watchdogd.engine.statedir import (
    FILE_MODE,
    IDENTITY_SUFFIX,
    LOCK_NAME,
    StateError,
    ensure_state_dir,
    held_by_this_process,
)
from watchdogd.model import AuditEntry, Clock, Decision, RuleTransition

log = logging.getLogger(__name__)

__all__ = ["INTERRUPTED", "SCHEMA_VERSION", "StateStore"]

_MIGRATIONS: Final[Mapping[int, tuple[str, ...]]] = types.MappingProxyType(
    {
        1: (
            """
            CREATE TABLE rules (
                rule TEXT PRIMARY KEY,
                data TEXT NOT NULL,
                updated_at REAL NOT NULL
            )
            """,
            """
            CREATE TABLE kv (
                key TEXT PRIMARY KEY,
                data TEXT NOT NULL,
                updated_at REAL NOT NULL
            )
            """,
            # AUTOINCREMENT: ids are never reused, even after prune() empties the
            # table, so a late finish_audit() can never update someone else's row.
            """
            CREATE TABLE audit (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                ts REAL NOT NULL,
                rule TEXT NOT NULL,
                subject TEXT NOT NULL,
                action TEXT NOT NULL,
                decision TEXT NOT NULL,
                result TEXT NOT NULL,
                error TEXT,
                value_before REAL,
                value_after REAL,
                duration REAL,
                detail TEXT NOT NULL DEFAULT '{}'
            )
            """,
            "CREATE INDEX audit_ts ON audit (ts)",
            "CREATE INDEX audit_rule_ts ON audit (rule, ts)",
            # Partial index for last_actions(): skips (the bulk of the log) stay out of it.
            # The WHERE must match _ACTED_SQL textually for the planner to use it.
            "CREATE INDEX audit_acted ON audit (rule, action, ts) WHERE decision IN ('ran', 'dry_run')",
        ),
        # The alert history (engine.sinks.HistorySink): what each rule saw change, alert-only rules too.
        2: (
            """
            CREATE TABLE transitions (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                ts REAL NOT NULL,
                rule TEXT NOT NULL,
                kind TEXT NOT NULL,
                subject TEXT NOT NULL DEFAULT '-',
                value REAL,
                detail TEXT NOT NULL DEFAULT '{}'
            )
            """,
            "CREATE INDEX transitions_ts ON transitions (ts)",
            "CREATE INDEX transitions_rule_ts ON transitions (rule, ts)",
        ),
        # Notifications (engine/outbox.py): written before any attempt, so a restart or kill -9 loses none;
        # the open alerts are what a restart resolves or Alertmanager is reminded of.
        3: (
            """
            CREATE TABLE outbox (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                sink TEXT NOT NULL,
                key TEXT NOT NULL,
                body TEXT NOT NULL,
                created REAL NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_at REAL NOT NULL,
                delivered_at REAL,
                failed_at REAL,
                last_error TEXT,
                UNIQUE (sink, key)
            )
            """,
            "CREATE INDEX outbox_due ON outbox (next_at) WHERE delivered_at IS NULL AND failed_at IS NULL",
            """
            CREATE TABLE open_alerts (
                sink TEXT NOT NULL,
                rule TEXT NOT NULL,
                subject TEXT NOT NULL,
                body TEXT NOT NULL,
                since REAL NOT NULL,
                PRIMARY KEY (sink, rule, subject)
            )
            """,
        ),
        # Evidence (engine/evidence.py): what the runbook would look at first, taken at firing and before acting.
        4: (
            """
            CREATE TABLE evidence (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                ts REAL NOT NULL,
                rule TEXT NOT NULL,
                reason TEXT NOT NULL,
                subjects TEXT NOT NULL,
                body TEXT NOT NULL,
                bytes INTEGER NOT NULL,
                duration REAL NOT NULL,
                error TEXT
            )
            """,
            "CREATE INDEX evidence_ts ON evidence (ts)",
        ),
    }
)
SCHEMA_VERSION: Final[int] = max(_MIGRATIONS)

_ACTED_SQL: Final[str] = "decision IN ('ran', 'dry_run')"
_AUDIT_COLUMNS: Final[str] = (
    "id, ts, rule, subject, action, decision, result, error, value_before, value_after, duration, detail"
)
_MAX_HISTORY: Final[int] = 10_000
_SQLITE_SUFFIXES: Final[tuple[str, ...]] = ("", "-wal", "-shm", "-journal")
INTERRUPTED: Final[str] = "interrupted"
"""Result of a "started" row whose process died before the action returned, set at the next start."""
_INTERRUPTED_ERROR: Final[str] = "daemon died mid-action; it may or may not have taken effect"
_INTERRUPTED_DETAIL: Final[str] = "daemon died before the action finished"
_IDENTITY_SIZE: Final[int] = 128  # bytes; every record is padded to it, so an overwrite leaves no stale tail
_IDENTITY_KEY: Final[str] = "state_identity"
_RESETS_KEY: Final[str] = "state_resets"
_LISTED: Final[int] = 5  # ids named in a log line before "..."
# Result codes that mean "this file is damaged", as opposed to locked, read-only
# or an I/O error, where moving the file aside would destroy good state.
_CORRUPT_CODES: Final[frozenset[int]] = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


class _Corrupt(Exception):
    """Internal: the file exists but is not a state database we can use."""


class _NeedsWrite(Exception):
    """Internal: SQLite must write (roll back a hot journal) before the file can be checked."""


@dataclass(frozen=True, slots=True)
class _Identity:
    """What the identity file vouches for: which database, how far its audit log got, resets so far."""

    database: str
    audit_max: int
    resets: int


def _read_identity(path: Path) -> _Identity | None:
    """None when there is nothing to compare with: first start, upgrade, or a garbled file (logged)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("state: cannot read %s (%s); skipping the reset check this time", path, exc.strerror or exc)
        return None
    try:
        data = json.loads(raw)
        return _Identity(str(data["database"]), int(data["audit_max"]), int(data.get("resets", 0)))
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("state: %s is not a valid identity file (%s); skipping the reset check this time", path, exc)
        return None


def _reset_found(recorded: _Identity, database: str, top: int, *, created: bool) -> str | None:
    """What replaced the recorded database, in words for the ERROR line; None if it is intact."""
    if created:
        return "a new empty database" if top == 0 else f"a database without an identity, with audit rows up to {top}"
    if database != recorded.database:
        return f"another database ({database[:12]}, audit rows up to {top})"
    if top < recorded.audit_max:
        return (f"the same database with audit rows only up to {top}: its newest commits are gone"
                " (a deleted -wal file, or a restore from an older copy)")
    return None


def _audit_top(conn: sqlite3.Connection) -> int:
    """The highest audit id ever committed: AUTOINCREMENT keeps it in sqlite_sequence, even after prune()."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
    return int(row[0]) if row is not None else 0


def _kv_count(conn: sqlite3.Connection, key: str) -> int:
    row = conn.execute("SELECT data FROM kv WHERE key = ?", (key,)).fetchone()
    data = _loads_obj(row["data"], f"kv {key!r}") if row is not None else None
    try:
        return int(data.get("count", 0)) if data else 0
    except (TypeError, ValueError):
        return 0


def _plain(obj: object) -> object:
    """json ``default`` for rule state: accept read-only mappings, nothing else."""
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _lenient(obj: object) -> object:
    """json ``default`` for audit detail, which is for humans: degrade, never fail."""
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=repr)
    return repr(obj)


def _dumps_state(data: Mapping[str, Any]) -> str:
    """Strict: guard/policy state that came back stringified would be silently wrong."""
    return json.dumps(dict(data), allow_nan=True, default=_plain, separators=(",", ":"))


def _dumps_detail(detail: Mapping[str, Any]) -> str:
    """Lenient: an odd value in detail must not cost the audit row (or block the action)."""
    try:
        return json.dumps(dict(detail), allow_nan=True, default=_lenient, separators=(",", ":"))
    except (TypeError, ValueError) as exc:  # non-str keys, circular references
        log.warning("audit detail is not JSON serialisable (%s); storing its repr", exc)
        return json.dumps({"unserialisable_detail": repr(detail)})


def _loads_obj(text: str, what: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        log.error("state: %s does not hold a JSON object; ignoring it", what)
        return None
    return value


def _row_to_entry(row: sqlite3.Row) -> AuditEntry:
    detail = _loads_obj(row["detail"], f"audit row {row['id']} detail")
    return AuditEntry(
        id=row["id"],
        ts=row["ts"],
        rule=row["rule"],
        subject=row["subject"],
        action=row["action"],
        decision=Decision(row["decision"]),
        result=row["result"],
        error=row["error"],
        value_before=row["value_before"],
        value_after=row["value_after"],
        duration=row["duration"],
        detail=detail if detail is not None else {},
    )


def _rule_since(rule: str | None, since: float | None) -> tuple[list[str], list[object]]:
    """The WHERE terms (constants with "?") and their bound values of the history readers' common filters."""
    where: list[str] = []
    args: list[object] = []
    if rule is not None:
        where.append("rule = ?")
        args.append(rule)
    if since is not None:
        where.append("ts >= ?")
        args.append(since)
    return where, args


def _audit_params(entry: AuditEntry) -> tuple[object, ...]:
    return (
        entry.ts,
        entry.rule,
        entry.subject,
        entry.action,
        entry.decision.value,
        entry.result,
        entry.error,
        entry.value_before,
        entry.value_after,
        entry.duration,
        _dumps_detail(entry.detail),
    )


_INSERT_AUDIT: Final[str] = (
    "INSERT INTO audit (ts, rule, subject, action, decision, result, error,"
    " value_before, value_after, duration, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_KV: Final[str] = (
    "INSERT INTO kv (key, data, updated_at) VALUES (?, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at"
)
_UPSERT_RULE: Final[str] = (
    "INSERT INTO rules (rule, data, updated_at) VALUES (?, ?, ?)"
    " ON CONFLICT (rule) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at"
)


class StateStore:
    """Rule state and audit log in one SQLite file; safe to share between threads."""

    def __init__(self, path: Path, clock: Clock, *, busy_timeout: float = 5.0) -> None:
        self._path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._busy_timeout = busy_timeout
        self._moved_aside = False
        self._identity: _Identity | None = None  # set only for the lock holder, who keeps the file current
        self._identity_failed = False
        self._identity_fd: int | None = None
        self._ensure_dir(self._path.parent)
        self._conn: sqlite3.Connection | None = self._open_or_replace()
        if held_by_this_process(self._path.parent / LOCK_NAME):
            self._recover()
        self._resets = self._stored_resets()

    @classmethod
    def in_memory(cls, clock: Clock) -> StateStore:
        """A throwaway store for unit tests of other modules: same schema, no file."""
        store = cls.__new__(cls)
        store._path = Path(":memory:")
        store._clock = clock
        store._lock = threading.Lock()
        store._busy_timeout = 0.0
        store._moved_aside = False
        store._identity = None
        store._identity_failed = False
        store._identity_fd = None
        store._resets = 0
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        store._migrate(conn)
        store._conn = conn
        return store

    # -- opening -------------------------------------------------------------

    def _ensure_dir(self, directory: Path) -> None:
        ensure_state_dir(directory)

    def _open_or_replace(self) -> sqlite3.Connection:
        try:
            return self._open()
        except _Corrupt as why:
            aside = self._move_aside()
            self._moved_aside = True
            log.error(
                "state database %s is unusable (%s); moved it aside to %s and starting with empty state:"
                " cooldowns, give-ups and pauses are forgotten",
                self._path,
                why,
                aside,
            )
        try:
            return self._open()
        except _Corrupt as why:  # cannot happen for a file we just created; do not loop
            raise StateError(f"state database {self._path} is unusable even when new: {why}") from None

    def _open(self) -> sqlite3.Connection:
        """Verify, then open for writing and migrate.

        ``_Corrupt`` for a damaged file, ``StateError`` for anything else.
        """
        if not self._path.exists():
            try:
                fd = os.open(self._path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
                try:
                    os.fchmod(fd, FILE_MODE)  # independent of the umask
                finally:
                    os.close(fd)
            except FileExistsError:
                pass
            except OSError as exc:
                raise StateError(f"state database {self._path} cannot be created: {exc.strerror}") from exc
        try:
            self._verify(read_only=True)
        except _NeedsWrite:
            self._verify(read_only=False)
        conn = self._connect(read_only=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StateError(f"state database {self._path} cannot use WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            self._migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise self._classify(exc) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _verify(self, *, read_only: bool) -> None:
        """Refuse files we would misread: a newer schema, or one SQLite itself calls damaged.

        Done on a read-only connection when possible, because closing a
        read-write one makes SQLite checkpoint into, and then delete, the
        ``-wal``/``-shm`` files: on a damaged database that would destroy the
        evidence (and possibly the newest committed rows) we are about to move
        aside. A hot rollback journal (left by a crash while the database was
        not in WAL mode) can only be rolled back by a writer: ``_NeedsWrite``
        asks the caller to verify read-write instead.
        """
        conn = self._connect(read_only=read_only)
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise _Corrupt(
                    f"schema version {version} is newer than this watchdogd knows ({SCHEMA_VERSION})"
                )
            problems = [str(r[0]) for r in conn.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                summary = " ".join(" ".join(problems[:3]).split())  # one log line, however SQLite words it
                raise _Corrupt(f"quick_check: {summary[:300]}")
        except sqlite3.Error as exc:
            if read_only and exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_READONLY:
                raise _NeedsWrite(str(exc)) from exc
            raise self._classify(exc) from exc
        finally:
            conn.close()

    def _connect(self, *, read_only: bool) -> sqlite3.Connection:
        uri = self._path.resolve().as_uri() + ("?mode=ro" if read_only else "?mode=rw")
        try:
            conn = sqlite3.connect(
                uri, uri=True, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StateError(f"state database {self._path} cannot be opened: {exc}") from exc
        conn.row_factory = sqlite3.Row
        return conn

    def _classify(self, exc: sqlite3.Error) -> Exception:
        """Only SQLite's own verdict of damage counts as corruption.

        "database is locked", read-only or I/O errors mean the file may be
        fine: moving it aside would throw good state away, so they are
        reported instead.
        """
        if exc.sqlite_errorcode in _CORRUPT_CODES:
            return _Corrupt(str(exc))
        return StateError(f"state database {self._path} cannot be opened: {exc}")

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        """Each step runs in its own transaction with its version bump, so a crash resumes cleanly."""
        current = int(conn.execute("PRAGMA user_version").fetchone()[0])
        for version in sorted(v for v in _MIGRATIONS if v > current):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {int(version)}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            log.debug("state schema migrated to version %d", version)

    def _move_aside(self) -> Path:
        """Keep the bad file for a post-mortem.

        Its companions keep SQLite's naming (``<aside>-wal``), so ``sqlite3 <aside>``
        opens them together; and none may stay behind, or SQLite would replay
        an old journal into the fresh database.
        """
        stamp = dt.datetime.fromtimestamp(self._clock(), dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        base = f"{self._path.name}.corrupt-{stamp}"
        target = self._path.with_name(base)
        n = 0
        while any(Path(f"{target}{s}").exists() for s in _SQLITE_SUFFIXES):
            n += 1
            target = self._path.with_name(f"{base}.{n}")
        try:
            for suffix in reversed(_SQLITE_SUFFIXES):  # main file last: while it exists, the set is findable
                src = Path(f"{self._path}{suffix}")
                if src.exists():
                    src.rename(f"{target}{suffix}")
        except OSError as exc:
            raise StateError(
                f"state database {self._path} is corrupt and cannot be moved aside: {exc.strerror}"
            ) from exc
        return target

    # -- startup recovery (lock holder only) ------------------------------------

    def _recover(self) -> None:
        """Make the database tell the truth about what happened while no one was watching."""
        self._close_interrupted()
        self._check_identity()

    def _close_interrupted(self) -> None:
        """Rows still "started" were written by a process that died before its action returned.

        The action may or may not have taken effect; the row says so instead
        of claiming forever that it is still running. Decision, value_before
        and the write-ahead detail stay as they were: they are the evidence.
        """
        now = self._clock()
        note = {"interrupted": _INTERRUPTED_DETAIL, "closed_at": now}
        with self._tx("close interrupted audit rows") as conn:
            rows = conn.execute("SELECT id, detail FROM audit WHERE result = 'started' ORDER BY id").fetchall()
            for row in rows:
                old = _loads_obj(row["detail"], f"audit row {row['id']} detail") or {}
                conn.execute(
                    "UPDATE audit SET result = ?, error = ?, detail = ? WHERE id = ?",
                    (INTERRUPTED, _INTERRUPTED_ERROR, _dumps_detail({**old, **note}), row["id"]),
                )
        if rows:
            ids = [int(r["id"]) for r in rows]
            listed = ", ".join(map(str, ids[:_LISTED])) + (", ..." if len(ids) > _LISTED else "")
            log.warning(
                "state database %s: %d audit row%s left \"started\" by a watchdogd that died mid-action"
                " (id %s) closed as %s: those actions may or may not have taken effect",
                self._path,
                len(ids),
                "" if len(ids) == 1 else "s",
                listed,
                INTERRUPTED,
            )

    @property
    def _identity_path(self) -> Path:
        return self._path.with_name(self._path.stem + IDENTITY_SUFFIX)

    def _check_identity(self) -> None:
        """Compare the database with what the identity file says was committed; log and count a reset."""
        recorded = _read_identity(self._identity_path)
        with self._tx("check the database identity") as conn:
            row = conn.execute("SELECT data FROM kv WHERE key = ?", (_IDENTITY_KEY,)).fetchone()
            found = _loads_obj(row["data"], f"kv {_IDENTITY_KEY!r}") if row is not None else None
            database = str(found.get("database", "")) if found else ""
            created = not database
            if created:
                database = uuid.uuid4().hex
                conn.execute(_UPSERT_KV, (_IDENTITY_KEY, _dumps_state({"database": database}), self._clock()))
            top = _audit_top(conn)
            resets = max(_kv_count(conn, _RESETS_KEY), recorded.resets if recorded else 0)
            what = None if recorded is None else _reset_found(recorded, database, top, created=created)
            if self._moved_aside or what is not None:
                resets += 1
                conn.execute(_UPSERT_KV, (_RESETS_KEY, _dumps_state({"count": resets}), self._clock()))
        if what is not None and recorded is not None and not self._moved_aside:  # moving aside logged already
            log.error(
                "state database %s was reset or replaced: expected database %s with audit rows up to %d,"
                " found %s; cooldowns, give-ups and history before now are lost (state resets so far: %d)",
                self._path,
                recorded.database[:12],
                recorded.audit_max,
                what,
                resets,
            )
        self._identity = _Identity(database, top, resets)
        self._write_identity(self._identity)

    def _note_audit(self, ids: Sequence[int]) -> None:
        """After a commit that added audit rows: the identity file now vouches for them."""
        if self._identity is None or not ids:
            return
        with self._lock:
            identity = self._identity
            if identity is None or max(ids) <= identity.audit_max:
                return
            self._identity = _Identity(identity.database, max(ids), identity.resets)
            self._write_identity(self._identity)

    def _write_identity(self, identity: _Identity) -> None:
        """One ``pwrite`` of a fixed-size record in place, on a kept fd: no fsync, rename or truncate.

        Measured here: write-to-temp + rename costs ~0.3 ms per audit write
        (ext4's ``auto_da_alloc`` starts writeback on a rename over a file or
        a truncate) and even an open/close pair ~40 us; a ``pwrite`` plus the
        ``fstat`` that notices a deleted file costs ~10 us. A ``kill -9``
        cannot tear one small ``pwrite``; power loss could, and then the next
        start logs a garbled file and skips the check (the file guards against
        deletion and truncation, not power loss). A failure costs the check,
        never the audit write.
        """
        record = json.dumps(
            {"database": identity.database, "audit_max": identity.audit_max, "resets": identity.resets},
            separators=(",", ":"),
        ).encode()
        data = record.ljust(max(_IDENTITY_SIZE, len(record) + 1) - 1) + b"\n"
        try:
            fd = self._identity_fd
            if fd is None or os.fstat(fd).st_nlink == 0:  # first write, or someone deleted the file
                fd = self._reopen_identity()
            os.pwrite(fd, data, 0)
            if os.fstat(fd).st_size != len(data):  # a new file, or a longer one left by someone else
                os.ftruncate(fd, len(data))
        except OSError as exc:
            if not self._identity_failed:  # once per run of failures: a full disk must not log every action
                log.warning("state: cannot write %s (%s): a reset of %s may go undetected",
                            self._identity_path, exc.strerror or exc, self._path)
            self._identity_failed = True
        else:
            self._identity_failed = False

    def _reopen_identity(self) -> int:
        self._close_identity()
        fd = os.open(self._identity_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
        self._identity_fd = fd
        return fd

    def _close_identity(self) -> None:
        fd, self._identity_fd = self._identity_fd, None
        if fd is not None:
            os.close(fd)

    def _stored_resets(self) -> int:
        with self._tx("read the reset count", write=False) as conn:
            return _kv_count(conn, _RESETS_KEY)

    def resets_total(self) -> int:
        """How often this state was found reset, replaced or corrupt at a start, over the host's life.

        For ``watchdogd_state_resets_total``. Counted by the lock holder at
        open, so it is constant for the life of a store.
        """
        return self._resets

    # -- plumbing ------------------------------------------------------------

    def transaction(self, what: str, *, write: bool = True) -> AbstractContextManager[sqlite3.Connection]:
        """One transaction for a table this store holds but another module owns (``engine/outbox.py``)."""
        return self._tx(what, write=write)

    @contextmanager
    def _tx(self, what: str, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One lock hold, one transaction; SQLite errors become one-line ``StateError``s."""
        with self._lock:
            conn = self._conn_or_raise()
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error as rb_exc:  # keep the original error, which says what went wrong
                        log.warning(
                            "state database %s: rollback after %s failed: %s", self._path, what, rb_exc
                        )
                if isinstance(exc, sqlite3.Error):
                    raise StateError(f"state database {self._path}: {what} failed: {exc}") from exc
                raise

    def _conn_or_raise(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            raise StateError(f"state database {self._path} is closed")
        return conn

    # -- rule state and kv ---------------------------------------------------

    def load_rules(self) -> dict[str, dict[str, Any]]:
        with self._tx("load_rules", write=False) as conn:
            rows = conn.execute("SELECT rule, data FROM rules").fetchall()
        out: dict[str, dict[str, Any]] = {}
        for row in rows:
            data = _loads_obj(row["data"], f"state of rule {row['rule']!r}")
            if data is not None:
                out[row["rule"]] = data
        return out

    def save_rule(self, rule: str, data: Mapping[str, Any]) -> None:
        text = _dumps_state(data)
        with self._tx("save_rule") as conn:
            conn.execute(_UPSERT_RULE, (rule, text, self._clock()))

    def delete_rule(self, rule: str) -> None:
        """Only the rule's state goes; its audit rows stay until retention prunes them."""
        with self._tx("delete_rule") as conn:
            conn.execute("DELETE FROM rules WHERE rule = ?", (rule,))

    def load_kv(self, key: str) -> dict[str, Any] | None:
        with self._tx("load_kv", write=False) as conn:
            row = conn.execute("SELECT data FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else _loads_obj(row["data"], f"kv {key!r}")

    def save_kv(self, key: str, data: Mapping[str, Any]) -> None:
        text = _dumps_state(data)
        with self._tx("save_kv") as conn:
            conn.execute(_UPSERT_KV, (key, text, self._clock()))

    # -- audit ---------------------------------------------------------------

    def save_rule_and_audit(
        self,
        rule: str,
        data: Mapping[str, Any],
        entries: Sequence[AuditEntry],
        kv: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> list[int]:
        """The write-ahead step: the new cooldown, the host-wide state (``kv``: budget, shared cooldowns)
        and the "started" rows land together or not at all.

        If only the audit rows landed, a restart would not know about the
        cooldown and could repeat the action; if only the state landed, the
        action would leave no trace. Hence one transaction.
        """
        text = _dumps_state(data)
        blobs = [(key, _dumps_state(value)) for key, value in (kv or {}).items()]
        params = [_audit_params(e) for e in entries]
        with self._tx("save_rule_and_audit") as conn:
            now = self._clock()
            conn.execute(_UPSERT_RULE, (rule, text, now))
            for key, blob in blobs:
                conn.execute(_UPSERT_KV, (key, blob, now))
            ids = self._insert_audit(conn, params)
        self._note_audit(ids)
        return ids

    def save_kv_and_history(
        self,
        kv: Mapping[str, Mapping[str, Any]],
        entries: Sequence[AuditEntry],
        transitions: Sequence[RuleTransition] = (),
    ) -> list[int]:
        """Host-wide state (maintenance mode) with its audit rows and alert-history rows, in one transaction.

        Like ``save_rule_and_audit`` for what belongs to no rule: a
        maintenance that is on disk without its row (or the reverse) would
        be a change nobody can account for. Returns the audit rows' ids.
        """
        blobs = [(key, _dumps_state(value)) for key, value in kv.items()]
        params = [_audit_params(e) for e in entries]
        rows = [(r.ts, r.rule, r.kind, r.subject, r.value, _dumps_detail(r.detail)) for r in transitions]
        with self._tx("save_kv_and_history") as conn:
            now = self._clock()
            for key, blob in blobs:
                conn.execute(_UPSERT_KV, (key, blob, now))
            ids = self._insert_audit(conn, params)
            conn.executemany(
                "INSERT INTO transitions (ts, rule, kind, subject, value, detail) VALUES (?, ?, ?, ?, ?, ?)", rows
            )
        self._note_audit(ids)
        return ids

    def add_audit(self, entries: Sequence[AuditEntry]) -> list[int]:
        params = [_audit_params(e) for e in entries]
        if not params:
            return []
        with self._tx("add_audit") as conn:
            ids = self._insert_audit(conn, params)
        self._note_audit(ids)
        return ids

    @staticmethod
    def _insert_audit(conn: sqlite3.Connection, params: Sequence[tuple[object, ...]]) -> list[int]:
        ids: list[int] = []
        for p in params:
            rowid = conn.execute(_INSERT_AUDIT, p).lastrowid
            assert rowid is not None  # always set after a successful INSERT
            ids.append(rowid)
        return ids

    def finish_audit(
        self,
        entry_id: int,
        *,
        result: str,
        error: str | None,
        value_after: float | None,
        duration: float | None,
        detail: Mapping[str, Any] | None,
    ) -> None:
        """Complete a "started" row once the action returned.

        ``detail`` is merged into the row's existing detail (new keys win), so
        what the probe saw before the action stays next to what the action did;
        ``None`` leaves it as it is. An unknown id (pruned meanwhile) is logged,
        not raised: the action has already happened and the caller could not
        do anything better about it.
        """
        extra = _dumps_detail(detail) if detail is not None else None
        with self._tx("finish_audit") as conn:
            row = conn.execute("SELECT detail FROM audit WHERE id = ?", (entry_id,)).fetchone()
            if row is None:
                log.warning(
                    "finish_audit: audit row %d does not exist (pruned?); result %s lost", entry_id, result
                )
                return
            new_detail = row["detail"]
            if extra is not None:
                old = _loads_obj(row["detail"], f"audit row {entry_id} detail") or {}
                new_detail = json.dumps({**old, **json.loads(extra)}, allow_nan=True, separators=(",", ":"))
            conn.execute(
                "UPDATE audit SET result = ?, error = ?, value_after = ?, duration = ?, detail = ?"
                " WHERE id = ?",
                (result, error, value_after, duration, new_detail, entry_id),
            )

    def history(
        self,
        *,
        rule: str | None = None,
        since: float | None = None,
        limit: int = 100,
        decisions: Collection[Decision] | None = None,
    ) -> list[AuditEntry]:
        """Newest first. Filters combine with AND; an empty ``decisions`` matches nothing."""
        if decisions is not None and not decisions:
            return []
        where, args = _rule_since(rule, since)
        if decisions is not None:
            values = sorted({d.value for d in decisions})
            where.append(f"decision IN ({', '.join('?' * len(values))})")
            args.extend(values)
        args.append(max(1, min(int(limit), _MAX_HISTORY)))
        # Only constants and "?" placeholders are interpolated; values are bound.
        sql = (
            f"SELECT {_AUDIT_COLUMNS} FROM audit"  # noqa: S608
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY ts DESC, id DESC LIMIT ?"
        )
        with self._tx("history", write=False) as conn:
            rows = conn.execute(sql, args).fetchall()
        return [_row_to_entry(r) for r in rows]

    def last_actions(self) -> dict[tuple[str, str], AuditEntry]:
        """Newest ran/dry_run row per (rule, action): what status and metrics show as "last run"."""
        sql = (
            f"SELECT {_AUDIT_COLUMNS} FROM ("  # noqa: S608 (constants only)
            f" SELECT *, ROW_NUMBER() OVER (PARTITION BY rule, action ORDER BY ts DESC, id DESC) AS rn"
            f" FROM audit WHERE {_ACTED_SQL}"
            ") WHERE rn = 1"
        )
        with self._tx("last_actions", write=False) as conn:
            rows = conn.execute(sql).fetchall()
        return {(r["rule"], r["action"]): _row_to_entry(r) for r in rows}

    def add_transitions(self, rows: Sequence[RuleTransition]) -> None:
        params = [(r.ts, r.rule, r.kind, r.subject, r.value, _dumps_detail(r.detail)) for r in rows]
        if not params:
            return
        with self._tx("add_transitions") as conn:
            conn.executemany(
                "INSERT INTO transitions (ts, rule, kind, subject, value, detail) VALUES (?, ?, ?, ?, ?, ?)", params
            )

    def transitions(
        self, *, rule: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[RuleTransition]:
        """The alert history, newest first; filters combine with AND."""
        where, args = _rule_since(rule, since)
        args.append(max(1, min(int(limit), _MAX_HISTORY)))
        sql = (
            "SELECT id, ts, rule, kind, subject, value, detail FROM transitions"  # noqa: S608 (constants, "?")
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY ts DESC, id DESC LIMIT ?"
        )
        with self._tx("transitions", write=False) as conn:
            rows = conn.execute(sql, args).fetchall()
        return [
            RuleTransition(
                ts=row["ts"],
                rule=row["rule"],
                kind=row["kind"],
                subject=row["subject"],
                value=row["value"],
                detail=_loads_obj(row["detail"], f"transition {row['id']} detail") or {},
                id=row["id"],
            )
            for row in rows
        ]

    def prune(self, older_than: float) -> int:
        """Retention: drop audit and history rows with ``ts < older_than``. Rule state is never pruned."""
        with self._tx("prune") as conn:
            conn.execute("DELETE FROM transitions WHERE ts < ?", (older_than,))
            return conn.execute("DELETE FROM audit WHERE ts < ?", (older_than,)).rowcount

    # -- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        """Idempotent. The last close checkpoints the WAL back into the main file."""
        with self._lock:
            self._close_identity()
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                conn.execute("PRAGMA optimize")
            except sqlite3.Error as exc:  # only a planner hint; closing matters more
                log.debug("PRAGMA optimize failed: %s", exc)
            conn.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> Path:
        return self._path
