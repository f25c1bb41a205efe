"""Issue 13, with real processes: one watchdogd per state directory, however the first one runs or dies."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import WATCHDOGD, DaemonProcess, run, run_once, wait_until, write_config

pytestmark = pytest.mark.integration

QUIET = """\
interval: 1s
rules:
  calm: {probe: host.memory, above: 100}
"""


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Unix socket paths are limited to 107 bytes, which pytest's tmp_path can exceed."""
    path = Path(tempfile.mkdtemp(prefix="wdl-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def second_config(directory: Path, state: Path) -> Path:
    """Another socket, another file, the same state_dir: what issue 13 saw act twice."""
    return write_config(directory, f"state_dir: {state}\ncontrol_socket: {directory / 'other.sock'}\n" + QUIET,
                        name="other.yaml")


def assert_refused(done: subprocess.CompletedProcess[str], state: Path, pid: int) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"state directory {state} is in use" in lines[0] and f"pid {pid}" in lines[0], lines[0]


def test_a_second_daemon_or_once_on_the_same_state_dir_is_refused_at_once(short_dir: Path) -> None:
    first = write_config(short_dir, QUIET)
    state = short_dir / "state"
    other = second_config(short_dir, state)
    with DaemonProcess(first) as daemon:
        daemon.wait_for_log("started")
        assert daemon.proc is not None
        pid = daemon.proc.pid
        started = time.monotonic()
        second = run([*WATCHDOGD, "--config", str(other)], timeout=30)
        assert_refused(second, state, pid)
        assert time.monotonic() - started < 15  # refused at start, not after a timeout
        assert not (short_dir / "other.sock").exists()  # nothing of it was set up
        assert_refused(run_once(first), state, pid)
        assert_refused(run_once(other, "--dry-run"), state, pid)
        assert daemon.returncode is None  # the first one carries on
    # Stopped cleanly: the directory is free again.
    assert run_once(other).returncode == 0


def test_a_killed_daemon_never_blocks_the_next_start(short_dir: Path) -> None:
    """A lock, not a pid file: the file (with the dead pid in it) stays, and it does not matter."""
    config = write_config(short_dir, QUIET)
    daemon = DaemonProcess(config)
    daemon.start()
    try:
        daemon.wait_for_log("started")
        assert daemon.proc is not None
        dead = daemon.proc.pid
    finally:
        daemon.kill9()
    lock = short_dir / "state" / "watchdogd.lock"
    assert lock.read_text().strip() == str(dead)  # stale, and harmless
    with DaemonProcess(config) as again:
        again.wait_for_log("started")
        assert again.proc is not None
        assert lock.read_text().strip() == str(again.proc.pid)


def test_once_holds_the_lock_and_an_action_child_does_not_inherit_it(short_dir: Path) -> None:
    """`--once` in the middle of an action keeps a daemon out; killed there, its still-running child
    (the action's process) must not keep the lock alive."""
    marker = short_dir / "acting"
    config = write_config(short_dir, f"""\
        rules:
          busy:
            probe: host.memory
            above: 0
            actions:
              - exec: {{argv: [/bin/sh, -c, "echo $$ > {marker}.tmp && mv {marker}.tmp {marker} && exec sleep 30"],
                        timeout: 60s}}
        """)
    once = subprocess.Popen([*WATCHDOGD, "--config", str(config), "--once"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(marker.exists, 30, "the --once action to start")
        other = second_config(short_dir, short_dir / "state")
        assert_refused(run([*WATCHDOGD, "--config", str(other)], timeout=30), short_dir / "state", once.pid)
        once.kill()  # SIGKILL the --once only; its action's `sleep` (own session) lives on
        once.wait(timeout=10)
        assert Path(f"/proc/{marker.read_text().strip()}").exists()
        with DaemonProcess(other) as daemon:
            daemon.wait_for_log("started")
    finally:
        if once.poll() is None:
            once.kill()
            once.wait(timeout=10)
        if marker.exists():  # the orphaned `sleep` of the killed --once, ended by its own pid
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(marker.read_text().strip()), signal.SIGKILL)


# --------------------------------------------------------------------------- bench/run and the cluster it finds


def test_bench_creates_and_drops_only_a_role_of_its_own(tmp_path: Path) -> None:
    """bench/run once created and then dropped the role `watchdogd` itself, breaking any daemon using it."""
    psycopg = pytest.importorskip("psycopg")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from sidebyside import shipped  # noqa: PLC0415 (bench code, on its own path)

    try:
        admin = psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", autocommit=True,
                                connect_timeout=5)
    except psycopg.Error as exc:
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432: {exc}")

    def role(name: str) -> Any:
        return admin.execute(
            "SELECT r.rolcanlogin, r.rolsuper, array(SELECT b.rolname FROM pg_auth_members m JOIN pg_roles b"
            " ON b.oid = m.roleid WHERE m.member = r.oid ORDER BY 1) FROM pg_roles r WHERE r.rolname = %s",
            [name]).fetchone()

    shipped_dsn = "postgresql://watchdogd@127.0.0.1:5432/postgres"
    policy = tmp_path / "w.yaml"
    policy.write_text(f'targets:\n  postgres:\n    main:\n      dsn: "{shipped_dsn}"\nrules: {{}}\n')
    theirs = role("watchdogd")  # whatever it is (or is not) on this machine, it must stay exactly so
    own = shipped.bench_role_names()[0]
    try:
        with ExitStack() as stack:
            prepared = shipped.prepare_targets(stack, policy)
            assert own in prepared.notes[0] and "never touched" in prepared.notes[0], prepared.notes
            assert role(own) == (True, False, ["pg_monitor", "pg_signal_backend"])
            with psycopg.connect(prepared.dsns[shipped_dsn], connect_timeout=5) as conn:
                assert conn.execute("SELECT current_user").fetchone()[0] == own
            assert own in prepared.apply(policy.read_text()) and "watchdogd@" not in prepared.apply(policy.read_text())
            assert role("watchdogd") == theirs
        assert role(own) is None  # dropped with the run
        assert role("watchdogd") == theirs
    finally:
        admin.close()
