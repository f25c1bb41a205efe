"""kill -9 against a real writer process: the write-ahead row must be there afterwards.

The child acknowledges each write on stdout only after ``StateStore`` returned;
the test synchronises on those lines (no sleeps) and then SIGKILLs it, so
anything acknowledged must be visible to a fresh store.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from watchdogd.engine.state import StateStore
from watchdogd.engine.statedir import StateLock
from watchdogd.model import Decision

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LINE_TIMEOUT = 30.0

WRITE_AHEAD_CHILD = """
import sys, time
from pathlib import Path
from watchdogd.model import AuditEntry, Decision
from watchdogd.engine.state import StateStore

store = StateStore(Path(sys.argv[1]), time.time)
entry = AuditEntry(
    ts=1700000000.0, rule="disk-full", subject="/", action="files.clean",
    decision=Decision.RAN, result="started", value_before=93.5, detail={"seen": 93.5},
)
[row_id] = store.save_rule_and_audit("disk-full", {"cooldown_until": 1700003600.0}, [entry])
print("written", row_id, flush=True)
sys.stdin.read()  # hold the connection open until the test kills us
"""

LOCKED_CHILD = """
import sys, time
from pathlib import Path
from watchdogd.model import AuditEntry, Decision
from watchdogd.engine.state import StateStore
from watchdogd.engine.statedir import StateLock

path = Path(sys.argv[1])
lock = StateLock(path.parent)  # as the daemon: the lock first, then the store
store = StateStore(path, time.time)
entries = [
    AuditEntry(ts=time.time(), rule="disk-full", subject=s, action="files.clean",
               decision=Decision.RAN, result="started", value_before=93.5)
    for s in sys.argv[2:]
]
ids = store.save_rule_and_audit("disk-full", {"cooldown_until": time.time() + 3600}, entries)
print("written", *ids, flush=True)
sys.stdin.read()
"""

LOOP_CHILD = """
import sys, threading, time
from pathlib import Path
from watchdogd.model import AuditEntry, Decision
from watchdogd.engine.state import StateStore

store = StateStore(Path(sys.argv[1]), time.time)
out = threading.Lock()

def work(t):
    i = 0
    while True:
        entry = AuditEntry(
            ts=time.time(), rule=f"rule-{t}", subject="s", action="a",
            decision=Decision.RAN if i % 2 else Decision.SKIPPED_COOLDOWN, result="started",
            detail={"t": t, "i": i, "pad": "x" * 300},
        )
        if i % 3:
            store.save_rule_and_audit(f"rule-{t}", {"i": i}, [entry])
        else:
            store.add_audit([entry])
            store.save_rule(f"rule-{t}", {"i": i})
        with out:
            print(t, i, flush=True)
        i += 1

print("ready", flush=True)  # store opened (and migrated) before any writer starts
for t in range(int(sys.argv[2])):
    threading.Thread(target=work, args=(t,), daemon=True).start()
sys.stdin.read()
"""


class Child:
    """A subprocess whose stdout lines arrive on a queue, so every wait is bounded."""

    def __init__(self, code: str, *args: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def readline(self) -> str:
        try:
            line = self.lines.get(timeout=LINE_TIMEOUT)
        except queue.Empty:
            self.kill()
            pytest.fail(f"child printed nothing for {LINE_TIMEOUT}s")
        if line is None:
            self.proc.wait()
            assert self.proc.stderr is not None
            pytest.fail(f"child exited ({self.proc.returncode}): {self.proc.stderr.read()}")
        return line

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=LINE_TIMEOUT)
        assert self.proc.returncode == -signal.SIGKILL
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def quick_check(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("PRAGMA quick_check")]
    finally:
        conn.close()


def no_corruption_logged(caplog: pytest.LogCaptureFixture, path: Path) -> None:
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert list(path.parent.glob("*.corrupt-*")) == []


def test_write_ahead_row_survives_sigkill(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state" / "state.db"
    child = Child(WRITE_AHEAD_CHILD, str(path))
    word, row_id = child.readline().split()
    assert word == "written"
    assert Path(f"{path}-wal").exists()  # still open: the row lives in the WAL, not yet checkpointed
    child.kill()

    caplog.set_level(logging.INFO)
    with StateStore(path, lambda: 1_700_000_100.0) as store:
        assert store.load_rules() == {"disk-full": {"cooldown_until": 1_700_003_600.0}}
        [row] = store.history()
        assert row.id == int(row_id)
        assert (row.rule, row.action, row.decision, row.result) == (
            "disk-full",
            "files.clean",
            Decision.RAN,
            "started",
        )
        assert row.value_before == 93.5 and row.detail == {"seen": 93.5}
    no_corruption_logged(caplog, path)
    assert quick_check(path) == ["ok"]


@pytest.mark.parametrize("round_", range(4))
def test_sigkill_during_a_write_loop_loses_nothing_acknowledged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, round_: int
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    threads = 1 if round_ == 0 else 4
    kill_after = rng.randint(20, 300)
    path = tmp_path / "state" / "state.db"
    child = Child(LOOP_CHILD, str(path), str(threads))
    assert child.readline() == "ready"
    acked: set[tuple[int, int]] = set()
    while len(acked) < kill_after:
        t, i = child.readline().split()
        acked.add((int(t), int(i)))
    child.kill()  # the writers are mid-loop: some commit is usually in flight
    why = f"seed={seed} threads={threads} kill_after={kill_after}"

    assert quick_check(path) == ["ok"], why
    caplog.set_level(logging.INFO)
    with StateStore(path, lambda: 1_700_000_000.0) as store:
        rows = store.history(limit=10_000)
        assert len(rows) >= len(acked), why
        seen = {(e.detail["t"], e.detail["i"]) for e in rows}
        assert acked <= seen, (why, sorted(acked - seen)[:5])
        rules = store.load_rules()
        for t in range(threads):
            newest_acked = max((i for tt, i in acked if tt == t), default=None)
            if newest_acked is not None:
                assert rules[f"rule-{t}"]["i"] >= newest_acked, why
        # The reopened store keeps working.
        store.save_rule("after", {"ok": True})
        assert store.load_rules()["after"] == {"ok": True}
    no_corruption_logged(caplog, path)
    assert quick_check(path) == ["ok"], why


def test_started_rows_of_a_sigkilled_lock_holder_are_closed_as_interrupted_at_the_next_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state" / "state.db"
    child = Child(LOCKED_CHILD, str(path), "/", "/var")
    word, *ids = child.readline().split()
    assert word == "written"
    child.kill()
    caplog.set_level(logging.INFO)
    with StateLock(path.parent), StateStore(path, time.time) as store:
        rows = store.history()
    assert sorted(r.id for r in rows) == sorted(int(i) for i in ids)
    assert {(r.decision, r.result) for r in rows} == {(Decision.RAN, "interrupted")}
    assert all(r.detail["interrupted"] == "daemon died before the action finished" for r in rows)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 audit rows" in warnings[0], warnings
    no_corruption_logged(caplog, path)


def test_a_wal_deleted_after_sigkill_is_logged_as_a_reset_not_a_silent_fresh_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 20's finding: two committed audit rows lost without a word."""
    path = tmp_path / "state" / "state.db"
    child = Child(LOCKED_CHILD, str(path), "/", "/var")
    word, *ids = child.readline().split()
    assert word == "written" and len(ids) == 2
    child.kill()
    Path(f"{path}-wal").unlink()  # the committed rows lived only there
    Path(f"{path}-shm").unlink(missing_ok=True)
    caplog.set_level(logging.INFO)
    with StateLock(path.parent), StateStore(path, time.time) as store:
        assert store.history() == []  # the rows are gone: nothing can bring them back...
        assert store.resets_total() == 1  # ...but the loss is counted
    [error] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert f"state database {path} was reset or replaced" in error
    assert f"with audit rows up to {max(int(i) for i in ids)}, found a new empty database" in error
