"""The daemon hands back the pages of shared libraries it touched only while starting (memory.release_file_pages).

The real ``watchdogd`` process. How much goes depends on who else maps the
same libraries: the kernel keeps a page another process maps, and this test
run's own interpreters map everything the daemon loads. So this checks that
the release happens when it should and that the kernel took every mapping;
tests/unit/test_memory.py shows the pages going, on a file only its child maps,
and bench/bench_imports.py measures the daemon alone (5-9 MiB).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.helpers import DaemonProcess, write_config
from tests.integration.faults.hung import BlackHole

pytestmark = pytest.mark.integration


def fields(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.split() if "=" in part)


def test_start_pages_go_back_as_soon_as_every_rule_has_run(tmp_path: Path) -> None:
    """The default deadline is a minute; rules that all run within seconds of the start do not wait for it."""
    config = write_config(
        tmp_path,
        """\
        rules:
          cpu: {probe: host.cpu, above: 100}
          disk: {probe: host.disk, above: 100, every: 1h}
    """,
    )
    with DaemonProcess(config) as daemon:
        daemon.wait_for_log("started")
        started = time.monotonic()
        daemon.wait_for_log("handed back start-up pages", timeout=30.0)
        assert time.monotonic() - started < 30.0


def test_a_rule_still_in_its_first_run_holds_the_hand_back_until_the_deadline(tmp_path: Path) -> None:
    """A probe hanging on a server that never answers keeps its rule from having run: the deadline decides,
    and until then the pages the other runs touched go back four times a second."""
    hole = BlackHole()
    try:
        config = write_config(
            tmp_path,
            f"""\
            release_start_pages_after: 4s
            log_level: debug
            rules:
              cpu: {{probe: host.cpu, above: 100}}
              slow:
                probe: net.http
                params: {{url: "http://127.0.0.1:{hole.port}/", timeout: 60s}}
                above: 2s
                every: 1m
                timeout: 40s
        """,
        )
        with DaemonProcess(config) as daemon:
            daemon.wait_for_log("started")
            started = time.monotonic()
            daemon.wait_for_log("handed back start-up pages", timeout=30.0)
            assert time.monotonic() - started >= 2.5  # the 4 s deadline (set before "started" was logged)
            assert hole.connections == 1  # the slow rule's first run was still waiting on its answer
            # Meanwhile what the first runs touched went back every quarter second (FIRST_RUNS_PAGES_EVERY).
            walks = [line for line in daemon.lines if "handed back the first runs' pages so far" in line]
            assert len(walks) >= 2, daemon.lines
    finally:
        hole.close()


def test_start_pages_go_back_at_the_start_and_again_after_a_reload(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        """\
        release_start_pages_after: 1s
        rules:
          cpu: {probe: host.cpu, above: 100}
          disk: {probe: host.disk, above: 100}
    """,
    )
    with DaemonProcess(config) as daemon:
        daemon.wait_for_log("started")
        before_runs = [line for line in daemon.lines if "handed back start-up pages" in line]
        assert len(before_runs) == 1, daemon.lines  # what imports and loading touched, before the first runs
        handed = fields(daemon.wait_for_log("handed back start-up pages"))  # once the rules have run
        assert handed["refused"] == "0" and int(handed["mappings"]) > 50, handed
        assert float(handed["file_mib_before"]) >= float(handed["file_mib_after"]), handed
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("reloaded")
        again = fields(daemon.wait_for_log("handed back start-up pages"))
        assert again["refused"] == "0" and int(again["mappings"]) > 50, again
        # twice per start (before and after the first runs), once per reload, never on the housekeeping's loop
        assert sum("handed back start-up pages" in line for line in daemon.lines) == 3, daemon.lines
