"""kill -9 the real daemon at random points and check the ground truth against its audit log.

Shared by tests/integration/faults/test_kill9.py (CI: >= 50 kills) and bench/bench_kill9.py (500).

The daemon runs one rule that always fires (``host.memory above 0``) with an
``exec`` action: a small script that appends ``<time> <pid>`` to a truth file
of our own, then sleeps a random bit, so kills land before, during and after
actions. Between kills the daemon restarts on the same state_dir. Afterwards:

* a **repeat** is a run of the action the guard should have refused: two
  runs whose decisions (the ``ts`` of the write-ahead audit row each truth
  line belongs to) are less than the cooldown apart, or two truth lines for
  one row. A run counts once its write-ahead row committed: that is the
  moment the guard has booked the cooldown, before the command is spawned.
* a **lost row** is a truth line with no audit row before it, or a row
  still ``started`` after the final start (recovery must have closed it).

Everything is created under one working directory the caller owns; nothing
else is touched. Stray action children (they outlive a SIGKILLed daemon by
design: the daemon's death must not abort half an action) are waited for
and only ever killed by pid after checking their command line is our script.
"""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import WATCHDOGD

COOLDOWN = 3.0
"""Longer than a restart (~1 s): a cooldown lost in a kill shows as a run ~1 s after the last one.

Several kills land inside each cooldown, and each restarted daemon must honour it.
"""
SPAWN_SLACK = 0.5
"""Truth lines are stamped when the command runs, not when the guard decided: allow for spawn latency."""
ACTION_SLEEP_MAX = 0.3
"""The action sleeps up to this after writing its truth line: the window a mid-action kill aims at."""
START_TIMEOUT = 30.0
"""How long a restarted daemon may take to act before the round fails (a loaded 2-core CI box)."""
_TOLERANCE = 1e-3  # float rounding of ts + cooldown; a real repeat is off by far more

TRUTH_SCRIPT = """\
import os, random, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, f"{time.time():.6f} {os.getpid()}\\n".encode())  # one write: a line is whole or absent
os.close(fd)
time.sleep(random.uniform(0, float(sys.argv[2])))
"""

_INTERRUPTED_LOG = re.compile(r"(\d+) audit rows? left \"started\" by a watchdogd that died mid-action")


@dataclass
class Figures:
    """What one campaign did and found; ``problems`` says what would fail the test."""

    kills: int = 0
    kills_mid_action: int = 0
    kills_after_start: int = 0
    starts_logged: int = 0
    starts: int = 0
    action_runs: int = 0
    audit_rows: int = 0
    repeats: int = 0
    truth_repeats: int = 0
    lost_rows: int = 0
    started_left: int = 0
    interrupted_rows: int = 0
    interrupted_logged: int = 0
    interrupted_with_run: int = 0
    min_decision_gap: float | None = None
    min_truth_gap: float | None = None
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def table(self) -> str:
        gap = "-" if self.min_decision_gap is None else f"{self.min_decision_gap:.3f} s"
        truth_gap = "-" if self.min_truth_gap is None else f"{self.min_truth_gap:.3f} s"
        rows = [
            ("kills (kill -9)", str(self.kills)),
            ("  of which aimed mid-action", str(self.kills_mid_action)),
            ("  of which aimed at a daemon up inside the cooldown", str(self.kills_after_start)),
            ("daemon starts", str(self.starts)),
            ("action runs (ground truth)", str(self.action_runs)),
            ("ran audit rows", str(self.audit_rows)),
            ("repeats inside the cooldown", str(self.repeats)),
            (f"  truth lines < cooldown - {SPAWN_SLACK:g} s apart", str(self.truth_repeats)),
            ("lost audit rows", str(self.lost_rows)),
            ("rows left 'started'", str(self.started_left)),
            ("interrupted rows closed", str(self.interrupted_rows)),
            ("  of which the action had run", str(self.interrupted_with_run)),
            ("  logged as closed at restart", str(self.interrupted_logged)),
            (f"min decision gap (cooldown {COOLDOWN:g} s)", gap),
            ("min gap between truth lines", truth_gap),
            ("wall time", f"{self.seconds:.1f} s"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def write_config(workdir: Path) -> Path:
    script = workdir / "truth.py"
    script.write_text(TRUTH_SCRIPT, encoding="utf-8")
    argv = [sys.executable, str(script), str(workdir / "truth.txt"), str(ACTION_SLEEP_MAX)]
    config = workdir / "watchdogd.yaml"
    config.write_text(
        f"""\
state_dir: {workdir / "state"}
control_socket: {workdir / "control.sock"}
listen: null
grace: 0s
interval: 0.2s
jitter: 0s
budget: {{actions: 100000, per: 1h}}
rules:
  always:
    probe: host.memory
    above: 0
    cooldown: {COOLDOWN:g}s
    max_cooldown: {COOLDOWN:g}s
    max_actions: {{count: 100000, per: 1h}}
    actions:
      - exec: {{argv: {argv!r}, timeout: 20s, settle: 0s}}
""",
        encoding="utf-8",
    )
    return config


def truth_lines(workdir: Path) -> list[tuple[float, int]]:
    path = workdir / "truth.txt"
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        stamp, pid = line.split()
        out.append((float(stamp), int(pid)))
    return out


def _daemon(config: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [*WATCHDOGD, "--config", str(config), *extra],
            stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
        )


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.01)


def run_campaign(workdir: Path, rounds: int, seed: int) -> Figures:
    """``rounds`` kill -9s, then one clean ``--once`` start, then the comparison."""
    rng = random.Random(seed)
    config = write_config(workdir)
    log = workdir / "daemon.log"
    figures = Figures()
    began = time.monotonic()
    for _ in range(rounds):
        before = truth_lines(workdir)
        due = not before or time.time() - before[-1][0] > COOLDOWN - 1.5  # an action falls in this life
        proc = _daemon(config, log)
        figures.starts += 1
        try:
            if due and rng.random() < 0.7:  # aim just after an action started: the command is running
                _wait_for(lambda: len(truth_lines(workdir)) > len(before) or proc.poll() is not None,
                          START_TIMEOUT, "the restarted daemon to act")
                time.sleep(rng.uniform(0, ACTION_SLEEP_MAX))
                figures.kills_mid_action += 1
            elif rng.random() < 0.5:  # a daemon that is up inside the cooldown: it must skip, not act
                _wait_for(lambda: _starts_logged(log) > figures.starts_logged or proc.poll() is not None,
                          START_TIMEOUT, "the restarted daemon to log that it started")
                time.sleep(rng.uniform(0, 0.6))
                figures.kills_after_start += 1
            else:  # anywhere: imports, recovery, the probe, a skip inside the cooldown, the write-ahead, ...
                time.sleep(rng.uniform(0, 1.3))
            if proc.poll() is not None:
                tail = log.read_text(errors="replace").splitlines()[-15:]
                figures.problems.append(
                    f"the daemon exited by itself (code {proc.returncode}); the end of {log}:\n" + "\n".join(tail)
                )
                break
            proc.kill()
            figures.kills += 1
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
            figures.starts_logged = _starts_logged(log)
    once = _daemon(config, log, "--once")  # the next start: recovery closes what the last kill left
    figures.starts += 1
    code = once.wait(timeout=60)
    if code not in (0, 1):  # 1: the rule fires, as it always does
        figures.problems.append(f"the final --once exited {code}; see {log}")
    _reap_actions(workdir)
    figures.seconds = time.monotonic() - began
    _compare(workdir, log, figures)
    return figures


def _starts_logged(log: Path) -> int:
    """Daemons that got as far as logging "started" (state opened and recovered, scheduler running)."""
    return log.read_text(errors="replace").count(" started version=") if log.exists() else 0


def _reap_actions(workdir: Path) -> None:
    """Let orphaned action commands finish their sleep; kill (by pid, after checking) any that do not."""
    script = str(workdir / "truth.py")

    def ours(pid: int) -> bool:
        try:
            return script in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return False

    pids = [pid for _, pid in truth_lines(workdir)]
    deadline = time.monotonic() + ACTION_SLEEP_MAX + 5.0
    while any(ours(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in pids:
        if ours(pid):
            os.kill(pid, signal.SIGKILL)


def _compare(workdir: Path, log: Path, figures: Figures) -> None:
    truth = sorted(t for t, _ in truth_lines(workdir))
    database = workdir / "state" / "state.db"
    if not database.exists():
        figures.problems.append(f"no state database at {database}: the daemon never opened it; see {log}")
        return
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT id, ts, result FROM audit WHERE rule = 'always' AND decision = 'ran' ORDER BY ts, id"
        ).fetchall()
    finally:
        conn.close()
    figures.action_runs = len(truth)
    figures.audit_rows = len(rows)
    figures.started_left = sum(1 for _, _, result in rows if result == "started")
    figures.interrupted_rows = sum(1 for _, _, result in rows if result == "interrupted")
    figures.interrupted_logged = sum(int(m.group(1)) for m in _INTERRUPTED_LOG.finditer(log.read_text()))

    # Each truth line belongs to the newest ran row written before it (the write-ahead precedes the spawn).
    claimed: dict[int, list[float]] = {}
    decisions: list[float] = []
    for t in truth:
        before = [row for row in rows if row[1] <= t]
        if not before:
            figures.lost_rows += 1
            continue
        row_id, ts, _ = before[-1]
        claimed.setdefault(row_id, []).append(t)
        if len(claimed[row_id]) == 1:
            decisions.append(ts)
    figures.repeats = sum(len(ts) - 1 for ts in claimed.values())  # one decision, two runs
    gaps = [b - a for a, b in zip(decisions, decisions[1:], strict=False)]
    figures.repeats += sum(1 for gap in gaps if gap < COOLDOWN - _TOLERANCE)
    figures.min_decision_gap = min(gaps, default=None)
    truth_gaps = [b - a for a, b in zip(truth, truth[1:], strict=False)]
    figures.min_truth_gap = min(truth_gaps, default=None)
    figures.truth_repeats = sum(1 for gap in truth_gaps if gap < COOLDOWN - SPAWN_SLACK)
    figures.interrupted_with_run = sum(
        1 for row_id, _, result in rows if result == "interrupted" and row_id in claimed
    )
    # A row that says the command ran to completion must have its truth line.
    figures.lost_rows += sum(1 for row_id, _, result in rows if result == "ok" and row_id not in claimed)
    figures.lost_rows += figures.started_left

    checks = [
        (figures.repeats == 0, f"{figures.repeats} repeats inside the cooldown (by the guard's decisions)"),
        (figures.truth_repeats == 0,
         f"{figures.truth_repeats} truth lines closer than the cooldown (less {SPAWN_SLACK:g} s spawn latency)"),
        (figures.lost_rows == 0, f"{figures.lost_rows} lost audit rows"),
        (figures.interrupted_logged == figures.interrupted_rows,
         f"{figures.interrupted_rows} interrupted rows but {figures.interrupted_logged} logged as closed"),
        (figures.action_runs > 0, "the action never ran"),
    ]
    figures.problems.extend(message for ok, message in checks if not ok)
