"""The core engine as operators run it: the real ``watchdogd`` process on a temp directory."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import DaemonProcess, run_once, write_config
from watchdogd.engine.state import StateStore
from watchdogd.model import Decision

pytestmark = pytest.mark.integration

DAY = 86400


def make_tree(root: Path) -> tuple[list[Path], list[Path]]:
    """Old and new files, nested, plus a symlink to an old file outside the tree."""
    root.mkdir()
    (root / "sub").mkdir()
    old = [root / "a.log", root / "sub" / "b.log", root / "sub" / "c.log"]
    new = [root / "fresh.log", root / "sub" / "fresh2.log"]
    for path in old + new:
        path.write_text("x" * 100)
    for path in old:
        os.utime(path, (time.time() - 40 * DAY, time.time() - 40 * DAY))
    outside = root.parent / "outside.log"
    outside.write_text("keep")
    os.utime(outside, (time.time() - 40 * DAY, time.time() - 40 * DAY))
    (root / "link.log").symlink_to(outside)
    return old, new


def test_files_clean_deletes_exactly_the_old_files(tmp_path: Path) -> None:
    tree = tmp_path / "storage"
    old, new = make_tree(tree)
    config = write_config(
        tmp_path,
        f"""\
        interval: 1s
        rules:
          storage-full:
            probe: host.dir_size
            params: {{path: {tree}}}
            above: 1
            actions:
              - files.clean: {{path: {tree}, older_than: 30d, allowed_roots: [{tmp_path}]}}
    """,
    )
    with DaemonProcess(config) as daemon:
        daemon.wait_for_log("action done", rule="storage-full", action="files.clean")
    assert [p.exists() for p in old] == [False, False, False]
    assert [p.exists() for p in new] == [True, True]
    assert (tree / "link.log").is_symlink()
    assert (tmp_path / "outside.log").read_text() == "keep"
    [entry] = StateStore(tmp_path / "state" / "state.db", time.time).history(rule="storage-full")
    assert (entry.decision, entry.result, entry.detail["items_total"]) == (Decision.RAN, "ok", 3)


def test_exec_substitutes_inside_single_arguments(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    script = "import sys; open(sys.argv[1], 'w').write(repr(sys.argv[2:]))"
    watched = tmp_path / "watched dir; rm -rf"
    watched.mkdir()
    (watched / "f").write_text("data")
    config = write_config(
        tmp_path,
        f"""\
        rules:
          grow:
            probe: host.dir_size
            params: {{path: "{watched}"}}
            above: 1
            actions:
              - exec: {{argv: ["{sys.executable}", "-c", "{script}", "{out}", "--path={{subject}}", "{{value}}"]}}
    """,
    )
    result = run_once(config)
    assert result.returncode == 1, result.stderr
    assert out.read_text() == repr([f"--path={watched}", "4"])


def test_once_exit_codes_and_dry_run(tmp_path: Path) -> None:
    tree = tmp_path / "storage"
    old, _new = make_tree(tree)
    quiet = write_config(
        tmp_path,
        """\
        rules:
          cpu: {probe: host.cpu, above: 100}
    """,
        name="quiet.yaml",
    )
    assert run_once(quiet).returncode == 0
    loud = write_config(
        tmp_path,
        f"""\
        rules:
          storage-full:
            probe: host.dir_size
            params: {{path: {tree}}}
            above: 1
            actions:
              - files.clean: {{path: {tree}, older_than: 30d, allowed_roots: [{tmp_path}]}}
    """,
        name="loud.yaml",
    )
    result = run_once(loud, "--dry-run")
    assert result.returncode == 1
    assert f"storage-full: firing; firing: {tree}; files.clean {tree}: dry_run" in result.stdout
    assert all(p.exists() for p in old)
    [entry] = StateStore(tmp_path / "state" / "state.db", time.time).history()
    assert entry.decision is Decision.DRY_RUN
    would = sorted(item["subject"] for item in entry.detail["items"])
    assert would == sorted(str(p) for p in old)


def test_for_duration_reports_pending_in_once(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        """\
        rules:
          mem: {probe: host.memory, above: 0, for: 5m}
    """,
    )
    result = run_once(config)
    assert result.returncode == 0
    assert "mem: pending; pending: 1" in result.stdout


def test_kill_9_during_an_action_never_repeats_it_inside_the_cooldown(tmp_path: Path) -> None:
    """The action appends a line, then hangs; we SIGKILL the daemon mid-action and restart it."""
    marker = tmp_path / "runs.txt"
    pids = tmp_path / "pids.txt"
    script = (
        "import os, sys, time; open(sys.argv[1], 'a').write('run;');"
        " open(sys.argv[2], 'a').write(str(os.getpid()) + ' '); time.sleep(60)"
    )
    config = write_config(
        tmp_path,
        f"""\
        interval: 1s
        rules:
          mem:
            probe: host.memory
            above: 0
            cooldown: 1h
            actions:
              - exec: {{argv: ["{sys.executable}", "-c", "{script}", "{marker}", "{pids}"], timeout: 2m}}
    """,
    )
    daemon = DaemonProcess(config)
    daemon.start()
    try:
        daemon.wait_for(lambda line: "firing" in line and "rule=mem" in line)
        deadline = time.monotonic() + 30
        while not (marker.exists() and marker.read_text()):
            assert time.monotonic() < deadline, "action never started"
            time.sleep(0.05)
        daemon.kill9()
        daemon.start()
        daemon.wait_for_log("action skipped", rule="mem", reason="cooldown")
    finally:
        daemon.stop()
        for pid in pids.read_text().split() if pids.exists() else []:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert marker.read_text() == "run;"
    history = StateStore(tmp_path / "state" / "state.db", time.time).history(rule="mem")
    assert [(e.decision, e.result) for e in history] == [
        (Decision.SKIPPED_COOLDOWN, "n/a"),
        (Decision.RAN, "interrupted"),  # the row the killed daemon left, closed at the restart
    ]


def test_corrupt_state_is_moved_aside_and_the_daemon_starts_fresh(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "state.db").write_bytes(b"this is not sqlite" * 100)
    config = write_config(
        tmp_path,
        """\
        rules:
          cpu: {probe: host.cpu, above: 100}
    """,
    )
    result = run_once(config)
    assert result.returncode == 0, result.stderr
    assert "corrupt" in result.stderr.lower()
    assert len(list(state.glob("state.db.corrupt-*"))) == 1


def started_cpu_daemon(tmp_path: Path) -> DaemonProcess:
    config = write_config(
        tmp_path,
        """\
        rules:
          cpu: {probe: host.cpu, above: 100}
    """,
    )
    daemon = DaemonProcess(config)
    daemon.start()
    daemon.wait_for_log("started")
    return daemon


def test_sigterm_exits_zero(tmp_path: Path) -> None:
    assert started_cpu_daemon(tmp_path).stop() == 0


def test_a_storm_of_signals_never_wedges_the_main_loop(tmp_path: Path) -> None:
    """Handlers run between any two bytecodes of the main loop; one that took a lock the loop held (inside
    Event.wait) waited for ever, and SIGTERM then never stopped the daemon. A burst of SIGHUPs (each ending
    the loop's wait) and a SIGTERM must still end in a clean exit."""
    daemon = started_cpu_daemon(tmp_path)
    for _ in range(300):
        daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("reloaded")
    assert daemon.stop(timeout=30) == 0
