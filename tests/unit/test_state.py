"""StateStore against real SQLite files: it is an I/O module, so fakes would test nothing."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path
from types import MappingProxyType

import pytest

from watchdogd.engine.state import SCHEMA_VERSION, StateStore
from watchdogd.engine.statedir import StateError, StateLock
from watchdogd.model import AuditEntry, Decision

NOW = 1_700_000_000.0


class FakeClock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def entry(
    ts: float = NOW,
    rule: str = "disk-full",
    subject: str = "/",
    action: str = "files.clean",
    decision: Decision = Decision.RAN,
    result: str = "started",
    **kw: object,
) -> AuditEntry:
    return AuditEntry(
        ts=ts, rule=rule, subject=subject, action=action, decision=decision, result=result, **kw
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


@pytest.fixture
def store(db_path: Path):
    s = StateStore(db_path, FakeClock())
    yield s
    s.close()


def aside_files(path: Path) -> list[Path]:
    """The moved-aside databases, without their -wal/-shm companions."""
    return sorted(
        p
        for p in path.parent.glob(f"{path.name}.corrupt-*")
        if not p.name.endswith(("-wal", "-shm", "-journal"))
    )


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "watchdogd.engine.state"]


# -- rule state and kv --------------------------------------------------------


def test_rules_round_trip_and_survive_reopen(db_path: Path) -> None:
    data = {
        "subjects": {"/": {"status": "firing", "since": NOW - 60, "value": 93.5}},
        "cooldown_until": {"files.clean:/": NOW + 3600},
        "backoff": float("inf"),
        "gave_up": None,
        "attempts": [NOW - 10, NOW - 5],
    }
    with StateStore(db_path, FakeClock()) as s:
        s.save_rule("disk-full", data)
        s.save_rule("other", {"x": 1})
        s.save_rule("other", {"x": 2})  # upsert
        assert s.load_rules() == {"disk-full": data, "other": {"x": 2}}
    with StateStore(db_path, FakeClock()) as s:
        loaded = s.load_rules()
        assert loaded == {"disk-full": data, "other": {"x": 2}}
        assert math.isinf(loaded["disk-full"]["backoff"])
        s.delete_rule("other")
        s.delete_rule("never-existed")
        assert set(s.load_rules()) == {"disk-full"}


def test_rule_state_accepts_read_only_mappings(store: StateStore) -> None:
    store.save_rule("r", MappingProxyType({"inner": MappingProxyType({"a": 1})}))
    assert store.load_rules() == {"r": {"inner": {"a": 1}}}


def test_rule_state_that_is_not_json_raises_and_writes_nothing(store: StateStore) -> None:
    store.save_rule("r", {"v": 1})
    with pytest.raises(TypeError):
        store.save_rule("r", {"v": object()})
    assert store.load_rules() == {"r": {"v": 1}}


def test_kv_round_trip(store: StateStore) -> None:
    assert store.load_kv("budget") is None
    store.save_kv("budget", {"spent": [NOW - 1, NOW], "limit": 30})
    assert store.load_kv("budget") == {"spent": [NOW - 1, NOW], "limit": 30}
    store.save_kv("budget", {"spent": []})
    assert store.load_kv("budget") == {"spent": []}
    assert store.load_kv("other") is None


# -- audit ----------------------------------------------------------------------


def test_audit_entry_reads_back_equal_plus_id(store: StateStore) -> None:
    written = [
        entry(
            decision=Decision.RAN,
            result="started",
            value_before=93.5,
            detail={"items": [{"path": "/tmp/a", "ok": True}], "seen": {"free": 1.5}},
        ),
        entry(
            ts=NOW + 1,
            subject="/var",
            decision=Decision.SKIPPED_COOLDOWN,
            result="n/a",
            error="cooldown until later",
            value_before=float("inf"),
            value_after=-1.0,
            duration=0.25,
            detail={"limit": float("inf")},
        ),
        entry(ts=NOW + 2, decision=Decision.GAVE_UP, result="n/a"),
    ]
    ids = store.add_audit(written)
    assert len(ids) == 3 and len(set(ids)) == 3
    back = store.history()
    assert back == [dataclasses.replace(e, id=i) for e, i in reversed(list(zip(written, ids)))]
    assert all(isinstance(e.decision, Decision) for e in back)


def test_every_decision_value_round_trips(store: StateStore) -> None:
    ids = store.add_audit([entry(ts=NOW + i, decision=d) for i, d in enumerate(Decision)])
    back = {e.id: e.decision for e in store.history()}
    assert [back[i] for i in ids] == list(Decision)


def test_add_audit_with_no_entries(store: StateStore) -> None:
    assert store.add_audit([]) == []
    assert store.history() == []


def test_detail_that_is_not_json_is_kept_as_text_not_lost(store: StateStore) -> None:
    """detail is for humans: an odd value must not cost the row (or block the action)."""
    [i] = store.add_audit([entry(detail={"path": Path("/var/tmp"), "pids": {3, 1, 2}, "nan": math.nan})])
    [back] = store.history()
    assert back.id == i
    assert back.detail["path"] == repr(Path("/var/tmp"))
    assert back.detail["pids"] == [1, 2, 3]
    assert math.isnan(back.detail["nan"])
    [j] = store.add_audit([entry(detail={("tuple", "key"): 1})])
    assert "unserialisable_detail" in store.history(limit=1)[0].detail
    assert j > i


def test_save_rule_and_audit_writes_both(db_path: Path) -> None:
    with StateStore(db_path, FakeClock()) as s:
        ids = s.save_rule_and_audit(
            "disk-full",
            {"cooldown_until": NOW + 3600},
            [entry(action="docker.prune"), entry(action="files.clean")],
        )
    with StateStore(db_path, FakeClock()) as s:
        assert s.load_rules() == {"disk-full": {"cooldown_until": NOW + 3600}}
        assert sorted(e.id for e in s.history()) == sorted(ids)
        assert {e.result for e in s.history()} == {"started"}


def test_save_rule_and_audit_is_atomic_when_sqlite_fails_midway(store: StateStore, db_path: Path) -> None:
    """The rule upsert and the first audit insert have run when the second insert fails."""
    store.save_rule("disk-full", {"cooldown_until": 0})
    other = sqlite3.connect(db_path)
    other.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON audit WHEN NEW.subject = 'boom'"
        " BEGIN SELECT RAISE(ABORT, 'simulated failure'); END"
    )
    other.commit()
    other.close()
    with pytest.raises(StateError, match="simulated failure") as info:
        store.save_rule_and_audit(
            "disk-full", {"cooldown_until": NOW + 3600}, [entry(subject="/"), entry(subject="boom")]
        )
    assert str(db_path) in str(info.value)
    assert store.load_rules() == {"disk-full": {"cooldown_until": 0}}
    assert store.history() == []
    # The connection is usable afterwards (no transaction left open).
    assert len(store.save_rule_and_audit("disk-full", {"cooldown_until": 1}, [entry()])) == 1


def test_save_rule_and_audit_is_atomic_when_an_entry_is_bad(store: StateStore) -> None:
    store.save_rule("r", {"v": 1})
    bad = dataclasses.replace(entry(), decision="ran")  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        store.save_rule_and_audit("r", {"v": 2}, [entry(), bad])
    with pytest.raises(TypeError):
        store.save_rule_and_audit("r", {"v": object()}, [entry()])
    assert store.load_rules() == {"r": {"v": 1}}
    assert store.history() == []


def test_finish_audit_completes_the_started_row(store: StateStore) -> None:
    [started, other] = store.save_rule_and_audit(
        "r", {}, [entry(value_before=95.0, detail={"seen": 95.0, "items": []}), entry(subject="/var")]
    )
    store.finish_audit(
        started,
        result="ok",
        error=None,
        value_after=60.0,
        duration=1.5,
        detail={"items": [{"subject": "/tmp/x", "ok": True}]},
    )
    store.finish_audit(other, result="failed", error="EPERM", value_after=None, duration=0.1, detail=None)
    by_id = {e.id: e for e in store.history()}
    done = by_id[started]
    assert (done.result, done.error, done.value_before, done.value_after, done.duration) == (
        "ok",
        None,
        95.0,
        60.0,
        1.5,
    )
    assert done.detail == {"seen": 95.0, "items": [{"subject": "/tmp/x", "ok": True}]}
    failed = by_id[other]
    assert (failed.result, failed.error, failed.detail) == ("failed", "EPERM", {})


def test_finish_audit_of_unknown_id_warns(store: StateStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="watchdogd.engine.state")
    store.finish_audit(12345, result="ok", error=None, value_after=None, duration=None, detail=None)
    assert "12345" in caplog.text
    assert store.history() == []


# -- history -------------------------------------------------------------------------


@pytest.fixture
def populated(store: StateStore) -> StateStore:
    rows = []
    for i in range(10):
        rows.append(
            entry(ts=NOW + i, rule="a", decision=Decision.RAN if i % 2 else Decision.SKIPPED_COOLDOWN)
        )
        rows.append(entry(ts=NOW + i, rule="b", decision=Decision.DRY_RUN))
    store.add_audit(rows)
    return store


def test_history_is_newest_first_with_id_breaking_ties(populated: StateStore) -> None:
    rows = populated.history(limit=1000)
    assert len(rows) == 20
    keys = [(e.ts, e.id) for e in rows]
    assert keys == sorted(keys, reverse=True)
    assert rows[0].rule == "b" and rows[1].rule == "a"  # same ts, b inserted later


def test_history_filters_combine(populated: StateStore) -> None:
    assert {e.rule for e in populated.history(rule="a")} == {"a"}
    assert len(populated.history(rule="a")) == 10
    assert len(populated.history(since=NOW + 5)) == 10
    assert all(e.ts >= NOW + 5 for e in populated.history(since=NOW + 5))
    ran_a = populated.history(rule="a", since=NOW + 5, decisions=[Decision.RAN])
    assert [e.ts for e in ran_a] == [NOW + 9, NOW + 7, NOW + 5]
    both = populated.history(decisions={Decision.RAN, Decision.DRY_RUN})
    assert len(both) == 15
    assert populated.history(rule="b", decisions=[Decision.RAN]) == []
    assert populated.history(rule="nope") == []
    assert populated.history(decisions=[]) == []


def test_history_limit_is_clamped(populated: StateStore) -> None:
    assert len(populated.history(limit=3)) == 3
    assert [e.ts for e in populated.history(rule="a", limit=2)] == [NOW + 9, NOW + 8]
    assert len(populated.history(limit=0)) == 1
    assert len(populated.history(limit=-5)) == 1
    assert len(populated.history()) == 20


def test_history_limit_upper_bound(store: StateStore) -> None:
    store.add_audit([entry(ts=NOW + i) for i in range(10_005)])
    assert len(store.history(limit=1_000_000)) == 10_000


# -- last_actions and prune -----------------------------------------------------------


def test_last_actions_newest_ran_or_dry_run_per_rule_and_action(store: StateStore) -> None:
    store.add_audit(
        [
            entry(ts=NOW, rule="a", action="x", decision=Decision.RAN, result="ok"),
            entry(ts=NOW + 10, rule="a", action="x", decision=Decision.DRY_RUN, result="ok"),
            entry(ts=NOW + 20, rule="a", action="x", decision=Decision.SKIPPED_COOLDOWN, result="n/a"),
            entry(ts=NOW + 5, rule="a", action="y", decision=Decision.RAN, result="failed"),
            entry(ts=NOW + 30, rule="b", action="x", decision=Decision.SKIPPED_BUDGET, result="n/a"),
            entry(ts=NOW + 1, rule="c", action="x", decision=Decision.RAN, result="ok", subject="s1"),
            entry(ts=NOW + 1, rule="c", action="x", decision=Decision.RAN, result="ok", subject="s2"),
        ]
    )
    last = store.last_actions()
    assert set(last) == {("a", "x"), ("a", "y"), ("c", "x")}
    assert (last["a", "x"].ts, last["a", "x"].decision) == (NOW + 10, Decision.DRY_RUN)
    assert last["a", "y"].result == "failed"
    assert last["c", "x"].subject == "s2"  # same ts: the later row wins


def test_last_actions_empty(store: StateStore) -> None:
    assert store.last_actions() == {}


def test_prune_deletes_only_older_rows_and_ids_are_never_reused(store: StateStore) -> None:
    ids = store.add_audit([entry(ts=NOW + i) for i in range(10)])
    store.save_rule("r", {"keep": True})
    assert store.prune(NOW + 4) == 4
    assert sorted(e.ts for e in store.history()) == [NOW + i for i in range(4, 10)]
    assert store.prune(NOW + 4) == 0
    assert store.prune(NOW + 100) == 6
    assert store.history() == []
    assert store.load_rules() == {"r": {"keep": True}}
    [new] = store.add_audit([entry()])
    assert new > max(ids)


# -- files, modes, lifecycle ----------------------------------------------------------


def test_creates_dir_and_file_with_modes(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.db"
    old = os.umask(0o077)
    try:
        StateStore(path, FakeClock()).close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_schema_and_journal_mode(store: StateStore, db_path: Path) -> None:
    store.save_rule("r", {})
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_existing_empty_file_is_initialised(db_path: Path) -> None:
    db_path.parent.mkdir()
    db_path.touch()
    with StateStore(db_path, FakeClock()) as s:
        s.save_rule("r", {"a": 1})
        assert s.load_rules() == {"r": {"a": 1}}
    assert aside_files(db_path) == []


def test_path_with_uri_special_characters(tmp_path: Path) -> None:
    path = tmp_path / "we?ird #dir%20" / "state.db"
    with StateStore(path, FakeClock()) as s:
        s.save_rule("r", {"a": 1})
    with StateStore(path, FakeClock()) as s:
        assert s.load_rules() == {"r": {"a": 1}}
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.db"]


def test_closed_store_raises_and_close_is_idempotent(db_path: Path) -> None:
    s = StateStore(db_path, FakeClock())
    s.close()
    s.close()
    with pytest.raises(StateError, match="closed"):
        s.load_rules()


def test_in_memory_store(caplog: pytest.LogCaptureFixture) -> None:
    with StateStore.in_memory(FakeClock()) as s:
        [i] = s.save_rule_and_audit("r", {"c": 1}, [entry()])
        assert s.load_rules() == {"r": {"c": 1}}
        assert s.history()[0].id == i
        assert s.last_actions()[("disk-full", "files.clean")].id == i


def test_unwritable_location_raises_state_error_naming_the_path(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    path = afile / "state.db"
    with pytest.raises(StateError) as info:
        StateStore(path, FakeClock())
    assert str(afile) in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(StateError, match=str(afile)):
        StateStore(afile / "deeper" / "state.db", FakeClock())


def test_locked_database_is_reported_not_moved_aside(db_path: Path) -> None:
    """A lock is not corruption: moving the file aside would throw away good state."""
    db_path.parent.mkdir()
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StateError, match="locked"):
            StateStore(db_path, FakeClock(), busy_timeout=0.05)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert aside_files(db_path) == []


# -- corruption ---------------------------------------------------------------------


def assert_moved_aside_once(
    db_path: Path, caplog: pytest.LogCaptureFixture, original: bytes, why: str
) -> None:
    errors = error_records(caplog)
    assert len(errors) == 1, [r.getMessage() for r in errors]
    msg = errors[0].getMessage()
    [aside] = aside_files(db_path)
    assert aside.name == f"{db_path.name}.corrupt-20231114T221320Z"
    assert aside.read_bytes() == original
    assert str(db_path) in msg and str(aside) in msg and why in msg
    assert "\n" not in msg
    with StateStore(db_path, FakeClock()) as s:
        assert s.load_rules() == {}
        assert s.history() == []
        s.save_rule("r", {"fresh": True})
        s.add_audit([entry()])
    with StateStore(db_path, FakeClock()) as s:
        assert s.load_rules() == {"r": {"fresh": True}}
    assert len(aside_files(db_path)) == 1


def test_random_bytes_file_is_moved_aside_with_its_wal_and_shm(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db_path.parent.mkdir()
    garbage = os.urandom(8192)
    db_path.write_bytes(garbage)
    Path(f"{db_path}-wal").write_bytes(b"wal junk")
    Path(f"{db_path}-shm").write_bytes(b"shm junk")
    caplog.set_level(logging.INFO)
    StateStore(db_path, FakeClock()).close()
    [aside] = aside_files(db_path)
    # SQLite's naming is kept, so `sqlite3 <aside>` would pick up its WAL for a post-mortem.
    assert Path(f"{aside}-wal").read_bytes() == b"wal junk"
    assert Path(f"{aside}-shm").exists()  # only an index SQLite rebuilds: content not compared
    assert_moved_aside_once(db_path, caplog, garbage, "not a database")


def make_big_db(db_path: Path) -> None:
    with StateStore(db_path, FakeClock()) as s:
        s.add_audit([entry(ts=NOW + i, detail={"pad": "x" * 200, "i": i}) for i in range(2000)])
        for i in range(50):
            s.save_rule(f"rule-{i}", {"pad": "y" * 500})
    assert not Path(f"{db_path}-wal").exists()  # checkpointed on close: all data is in the main file


def test_garbled_db_is_moved_aside(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_big_db(db_path)
    raw = bytearray(db_path.read_bytes())
    page = 4096
    assert len(raw) > 40 * page
    for p in range(2, len(raw) // page, 3):  # garble b-tree pages, keep the header page
        raw[p * page : p * page + 64] = b"\xa5" * 64  # fixed, so the test is deterministic
    db_path.write_bytes(bytes(raw))
    caplog.set_level(logging.INFO)
    StateStore(db_path, FakeClock()).close()
    assert_moved_aside_once(db_path, caplog, bytes(raw), str(db_path))


def test_truncated_db_is_moved_aside(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_big_db(db_path)
    raw = db_path.read_bytes()
    truncated = raw[: len(raw) // 2]
    db_path.write_bytes(truncated)
    caplog.set_level(logging.INFO)
    StateStore(db_path, FakeClock()).close()
    assert_moved_aside_once(db_path, caplog, truncated, str(db_path))


def test_newer_schema_is_moved_aside(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with StateStore(db_path, FakeClock()) as s:
        s.save_rule("r", {"old": True})
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    original = db_path.read_bytes()
    caplog.set_level(logging.INFO)
    StateStore(db_path, FakeClock()).close()
    assert_moved_aside_once(db_path, caplog, original, f"schema version {SCHEMA_VERSION + 1} is newer")


def test_junk_journal_next_to_a_corrupt_file_does_not_survive_into_the_fresh_db(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db_path.parent.mkdir()
    db_path.write_bytes(os.urandom(8192))
    Path(f"{db_path}-journal").write_bytes(os.urandom(4096))
    caplog.set_level(logging.INFO)
    with StateStore(db_path, FakeClock()) as s:
        s.save_rule("r", {"fresh": True})
    assert len(error_records(caplog)) == 1
    assert not Path(f"{db_path}-journal").exists()
    with StateStore(db_path, FakeClock()) as s:
        assert s.load_rules() == {"r": {"fresh": True}}


def test_hot_rollback_journal_is_rolled_back_not_treated_as_corruption(
    tmp_path: Path, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A crash while the file was in rollback-journal mode leaves a hot journal.

    The read-only check cannot roll it back; the store must let SQLite do it
    instead of calling the file corrupt (or failing to start).
    """
    with StateStore(db_path, FakeClock()) as s:
        s.save_rule("r", {"committed": True})
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("PRAGMA cache_size = 1")  # spill to the file mid-transaction
    conn.execute("BEGIN")
    conn.execute("UPDATE rules SET data = '{\"committed\": false}'")
    for i in range(500):
        conn.execute("INSERT INTO kv (key, data, updated_at) VALUES (?, ?, 0)", (f"k{i}", "x" * 500))
    crash = tmp_path / "crash"
    crash.mkdir()
    for name in (db_path.name, f"{db_path.name}-journal"):
        (crash / name).write_bytes((db_path.parent / name).read_bytes())  # the on-disk image at a crash
    conn.execute("ROLLBACK")
    conn.close()
    crashed = crash / db_path.name
    assert Path(f"{crashed}-journal").stat().st_size > 0
    caplog.set_level(logging.INFO)
    with StateStore(crashed, FakeClock()) as s:
        assert s.load_rules() == {"r": {"committed": True}}
        assert s.load_kv("k0") is None
    assert error_records(caplog) == []
    assert aside_files(crashed) == []
    assert not Path(f"{crashed}-journal").exists()


def test_second_corruption_in_the_same_second_does_not_overwrite_the_first(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db_path.parent.mkdir()
    db_path.write_bytes(b"first" * 1000)
    StateStore(db_path, FakeClock()).close()
    db_path.write_bytes(b"second" * 1000)
    StateStore(db_path, FakeClock()).close()
    contents = {p.read_bytes()[:6] for p in aside_files(db_path)}
    assert contents == {b"firstf", b"second"}


# -- threads -------------------------------------------------------------------------------


def test_concurrent_writers_lose_nothing(store: StateStore) -> None:
    threads_n, per_thread = 8, 100
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []
    all_ids: list[list[int]] = [[] for _ in range(threads_n)]

    def work(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                if i % 2:
                    ids = store.save_rule_and_audit(
                        f"rule-{t}", {"i": i}, [entry(rule=f"rule-{t}", ts=NOW + i)]
                    )
                else:
                    ids = store.add_audit(
                        [entry(rule=f"rule-{t}", ts=NOW + i, decision=Decision.SKIPPED_GRACE)]
                    )
                    store.save_kv(f"kv-{t}", {"i": i})
                all_ids[t].extend(ids)
                store.history(rule=f"rule-{t}", limit=5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    flat = [i for ids in all_ids for i in ids]
    assert len(flat) == len(set(flat)) == threads_n * per_thread
    assert len(store.history(limit=10_000)) == threads_n * per_thread
    assert store.load_rules() == {f"rule-{t}": {"i": per_thread - 1} for t in range(threads_n)}
    assert all(store.load_kv(f"kv-{t}") == {"i": per_thread - 2} for t in range(threads_n))
    for t in range(threads_n):
        assert len(store.history(rule=f"rule-{t}", limit=10_000)) == per_thread


# -- startup recovery: interrupted rows, resets, a dedicated state_dir --------------------------------------
# Recovery runs only for the holder of the state_dir's StateLock (the daemon, --once); the other
# tests in this file open stores without it and see every row as it was written.


def locked_store(db_path: Path, clock: FakeClock | None = None) -> tuple[StateLock, StateStore]:
    lock = StateLock(db_path.parent)
    return lock, StateStore(db_path, clock or FakeClock())


def reopen_locked(db_path: Path, clock: FakeClock | None = None) -> StateStore:
    """Open as the daemon does after a restart, close, and return the (closed) store for its counters."""
    lock, s = locked_store(db_path, clock)
    s.close()
    lock.release()
    return s


def warnings_from_state(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "watchdogd.engine.state"
    ]


def test_started_rows_are_closed_as_interrupted_at_the_next_locked_start(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with StateStore(db_path, FakeClock()) as s:  # the "daemon" that dies: its rows stay as written
        [running, done, other] = s.add_audit(
            [entry(detail={"seen": 93.5}, value_before=93.5), entry(subject="/var"), entry(subject="/tmp")]
        )
        s.finish_audit(done, result="ok", error=None, value_after=1.0, duration=0.5, detail=None)
    caplog.set_level(logging.INFO)
    lock, s = locked_store(db_path, FakeClock(NOW + 60))
    with lock, s:
        rows = {e.id: e for e in s.history()}
    assert rows[done].result == "ok" and rows[done].error is None
    for row_id in (running, other):
        row = rows[row_id]
        assert (row.decision, row.result) == (Decision.RAN, "interrupted")
        assert row.error == "daemon died mid-action; it may or may not have taken effect"
        assert row.detail["interrupted"] == "daemon died before the action finished"
        assert row.detail["closed_at"] == NOW + 60
        assert row.duration is None and row.value_after is None
    assert rows[running].detail["seen"] == 93.5 and rows[running].value_before == 93.5  # the evidence stays
    [warning] = warnings_from_state(caplog)
    assert "2 audit rows" in warning and f"id {running}, {other}" in warning and "interrupted" in warning
    caplog.clear()
    reopen_locked(db_path)  # nothing left to close: no second warning
    assert warnings_from_state(caplog) == []


def test_a_store_opened_without_the_lock_leaves_started_rows_alone(db_path: Path) -> None:
    with StateStore(db_path, FakeClock()) as s:
        [row_id] = s.add_audit([entry()])
    with StateStore(db_path, FakeClock()) as s:  # a reader: the writer may still be mid-action
        assert s.history()[0].result == "started"
    assert not db_path.with_name("state.id").exists()  # and it writes no identity file either


def test_a_lock_held_by_another_process_is_not_ours(db_path: Path) -> None:
    """While a live daemon holds the lock its "started" rows are real: another opener must not close them."""
    with StateStore(db_path, FakeClock()) as s:
        s.add_audit([entry()])
    code = "import sys; from pathlib import Path; from watchdogd.engine.statedir import StateLock as L; " \
           "l = L(Path(sys.argv[1])); print('locked', flush=True); sys.stdin.read()"
    holder = subprocess.Popen([sys.executable, "-c", code, str(db_path.parent)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with StateStore(db_path, FakeClock()) as s:
            assert s.history()[0].result == "started"
    finally:
        holder.kill()
        holder.wait(timeout=10)
        for stream in (holder.stdin, holder.stdout):
            if stream is not None:
                stream.close()


def test_interrupted_rows_read_well_in_watchdogctl_history(db_path: Path) -> None:
    from watchdogd.faces import cli  # noqa: PLC0415 (only this test needs the CLI)
    from watchdogd.faces.control import audit_document  # noqa: PLC0415

    with StateStore(db_path, FakeClock()) as s:
        s.add_audit([entry(action="exec", subject="app")])
    lock, s = locked_store(db_path)
    with lock, s:
        [row] = s.history()
    text = cli.render_history([audit_document(row)], cli.Palette(False))
    assert "ran interrupted" in text
    assert "daemon died mid-action; it may or may not have taken effect" in text


def identity(db_path: Path) -> dict[str, object]:
    return dict(json.loads(db_path.with_name("state.id").read_text()))


def errors_from_state(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in error_records(caplog)]


def test_identity_file_follows_every_audit_commit(db_path: Path) -> None:
    lock, s = locked_store(db_path)
    with lock, s:
        first = identity(db_path)
        assert first["audit_max"] == 0 and first["resets"] == 0 and len(str(first["database"])) == 32
        [a] = s.add_audit([entry()])
        assert identity(db_path)["audit_max"] == a
        [b, c] = s.save_rule_and_audit("r", {"x": 1}, [entry(), entry(subject="/var")])
        assert identity(db_path) == {**first, "audit_max": c}
        s.prune(NOW + 1)  # ids are never reused, so the recorded maximum still holds after a prune
    assert reopen_locked(db_path).resets_total() == 0
    assert identity(db_path)["audit_max"] == c
    assert sorted(p.name for p in db_path.parent.iterdir()) == ["state.db", "state.id", "watchdogd.lock"]


def test_an_identity_file_deleted_while_running_comes_back_at_the_next_audit_write(db_path: Path) -> None:
    lock, s = locked_store(db_path)
    with lock, s:
        db_path.with_name("state.id").unlink()
        [a] = s.add_audit([entry()])
        assert identity(db_path)["audit_max"] == a


def test_a_zero_byte_database_is_logged_as_a_reset_and_counted(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lock, s = locked_store(db_path)
    with lock, s:
        s.save_rule_and_audit("r", {"cooldown_until": NOW + 3600}, [entry(), entry(subject="/var")])
        database = str(identity(db_path)["database"])
    db_path.write_bytes(b"")
    caplog.set_level(logging.INFO)
    reopened = reopen_locked(db_path)
    [error] = errors_from_state(caplog)
    assert error == (
        f"state database {db_path} was reset or replaced: expected database {database[:12]} with audit rows"
        " up to 2, found a new empty database; cooldowns, give-ups and history before now are lost"
        " (state resets so far: 1)"
    )
    assert reopened.resets_total() == 1
    assert identity(db_path)["database"] != database and identity(db_path)["audit_max"] == 0
    caplog.clear()
    assert reopen_locked(db_path).resets_total() == 1  # counted once, not at every start
    assert errors_from_state(caplog) == []
    with StateStore(db_path, FakeClock()) as reader:  # the count is in the database for any opener
        assert reader.resets_total() == 1


def test_lost_wal_commits_are_logged_as_a_reset(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The main file without its -wal: same database, but the newest committed audit rows are gone."""
    lock, s = locked_store(db_path)
    with lock, s:
        s.add_audit([entry(), entry()])
    lock, s = locked_store(db_path)
    with lock, s:
        s.add_audit([entry(), entry()])  # committed to the WAL; the main file still holds rows up to 2
        assert Path(f"{db_path}-wal").exists()
        main_file_only = db_path.read_bytes()
    db_path.write_bytes(main_file_only)  # what a deleted -wal leaves (the close checkpointed; undo that)
    caplog.set_level(logging.INFO)
    assert reopen_locked(db_path).resets_total() == 1
    [error] = errors_from_state(caplog)
    assert "with audit rows up to 4, found the same database with audit rows only up to 2" in error


def test_another_database_copied_over_is_a_reset(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ours, theirs = tmp_path / "ours" / "state.db", tmp_path / "theirs" / "state.db"
    for path in (ours, theirs):
        reopen_locked(path)
    with StateStore(theirs, FakeClock()) as s:
        s.add_audit([entry()])
    ours.write_bytes(theirs.read_bytes())
    caplog.set_level(logging.INFO)
    assert reopen_locked(ours).resets_total() == 1
    [error] = errors_from_state(caplog)
    assert f"found another database ({str(identity(theirs)['database'])[:12]}, audit rows up to 1)" in error


def test_a_corrupt_database_moved_aside_counts_as_a_reset_logged_once(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lock, s = locked_store(db_path)
    with lock, s:
        s.add_audit([entry()])
    db_path.write_bytes(b"not sqlite at all" * 500)
    caplog.set_level(logging.INFO)
    assert reopen_locked(db_path).resets_total() == 1
    [error] = errors_from_state(caplog)
    assert "moved it aside" in error  # the move-aside line says it; no second line for the same event
    db_path.write_bytes(b"")  # a second reset later: the count carries over the new database
    assert reopen_locked(db_path).resets_total() == 2


def test_a_garbled_identity_file_is_reported_and_rewritten(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reopen_locked(db_path)
    db_path.with_name("state.id").write_text("{half a" + "x" * 500)  # longer than a record: no stale tail
    caplog.set_level(logging.INFO)
    assert reopen_locked(db_path).resets_total() == 0
    assert any("state.id is not a valid identity file" in m for m in warnings_from_state(caplog))
    assert identity(db_path)["audit_max"] == 0


def test_the_identity_record_has_a_fixed_size_so_an_overwrite_leaves_no_stale_bytes(db_path: Path) -> None:
    """Rewritten in place: every record is padded to one size, whatever its digits."""
    lock, s = locked_store(db_path)
    with lock, s:
        s.add_audit([entry() for _ in range(12)])  # audit_max goes from one digit to two
        assert identity(db_path)["audit_max"] == 12
    raw = db_path.with_name("state.id").read_bytes()
    assert len(raw) == 128 and raw.endswith(b"\n")


def test_identity_file_that_cannot_be_written_costs_no_audit_row(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lock, s = locked_store(db_path)
    with lock, s:
        db_path.with_name("state.id").unlink()
        db_path.with_name("state.id").mkdir()  # opening it for writing fails from now on
        caplog.set_level(logging.INFO)
        ids = s.add_audit([entry()]) + s.add_audit([entry()])
        assert [e.id for e in s.history()] == sorted(ids, reverse=True)
    [warning] = warnings_from_state(caplog)  # once, not per write
    assert "cannot write" in warning and "state.id" in warning


# -- a dedicated state_dir ----------------------------------------------------------------------------------


def test_state_dir_holding_foreign_files_is_refused(tmp_path: Path) -> None:
    for name in ("passwd", "group", "hosts"):
        (tmp_path / name).write_text("x")
    with pytest.raises(StateError) as info:
        StateLock(tmp_path)
    assert str(info.value) == (
        f"state_dir {tmp_path} holds files that are not watchdogd's (group, hosts, passwd):"
        " state_dir must be a dedicated directory"
    )
    assert not (tmp_path / "watchdogd.lock").exists()  # refused before anything was written there


def test_many_foreign_files_are_listed_briefly(tmp_path: Path) -> None:
    for i in range(12):
        (tmp_path / f"f{i:02}").write_text("x")
    with pytest.raises(StateError, match=r"\(f00, f01, f02, f03, f04, \.\.\. \(12 in all\)\)"):
        StateLock(tmp_path)


def test_state_dir_with_only_watchdogds_own_files_is_accepted(tmp_path: Path) -> None:
    own = [
        "state.db", "state.db-wal", "state.db-shm", "state.db-journal", "state.id",
        "watchdogd.lock", "state.db.corrupt-20261203T131845Z", "state.db.corrupt-20261203T131845Z.2-wal",
    ]
    for name in own:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "lost+found").mkdir()  # state_dir as a mount point
    StateLock(tmp_path).release()
    StateLock(tmp_path / "missing").release()


def test_everything_a_store_creates_passes_the_dedicated_check(db_path: Path) -> None:
    """The allow-list and the names state.py writes must not drift apart."""
    lock, s = locked_store(db_path)
    with lock, s:
        s.add_audit([entry()])
    db_path.write_bytes(b"corrupt" * 100)
    reopen_locked(db_path)  # moves the corrupt file aside: every name a store can leave now exists
    StateLock(db_path.parent).release()
