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
from pathlib import Path

import pytest

from tests.helpers import DaemonProcess, write_config

pytestmark = pytest.mark.integration


def fields(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.split() if "=" in part)


def test_start_pages_go_back_once_after_the_start_and_again_after_a_reload(tmp_path: Path) -> None:
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
        handed = fields(daemon.wait_for_log("handed back start-up pages"))
        assert handed["refused"] == "0" and int(handed["mappings"]) > 50, handed
        assert float(handed["file_mib_before"]) >= float(handed["file_mib_after"]), handed
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("reloaded")
        again = fields(daemon.wait_for_log("handed back start-up pages"))
        assert again["refused"] == "0" and int(again["mappings"]) > 50, again
        # once per start or reload, never on the housekeeping's second-by-second loop
        assert sum("handed back start-up pages" in line for line in daemon.lines) == 2, daemon.lines
