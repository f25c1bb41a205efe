"""The real daemon finds a leaking child by RSS growth and signals it; its siblings are left alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DaemonProcess, ctl, write_config
from tests.integration.services.servers import IDLE, LEAK, Children, wait_until
from watchdogd.families.process import procfs

pytestmark = pytest.mark.integration


def test_leaking_child_is_found_and_terminated_siblings_are_not(
    tmp_path: Path, children: Children, token: str
) -> None:
    siblings = [children.start(IDLE, token, f"worker-{i}") for i in range(2)]
    leaker = children.start(LEAK, token, "worker-leaky")
    config = write_config(tmp_path, f"""
        interval: 500ms
        rules:
          worker-leak:
            probe: process.rss_growth
            params: {{cmdline: "{token}", window: 4s, min_span: 1500ms}}
            above: 1GiB          # per hour: the leaker grows ~40 MiB/s, the siblings not at all
            cooldown: 1m
            actions:
              - process.signal: {{grace: 3s, max_per_run: 5}}
        """)
    with DaemonProcess(config) as daemon:
        daemon.wait_for_log("firing", rule="worker-leak", subject=f"pid:{leaker.pid}")
        done = daemon.wait_for_log("action done", rule="worker-leak", action="process.signal")
        assert "subjects=1" in done.split()
        assert leaker.wait(timeout=10) == -15  # SIGTERM was enough
        for sibling in siblings:
            stat = procfs.read_stat(sibling.pid)
            assert sibling.poll() is None and stat is not None and not stat.zombie

        def finished_rows() -> list[dict[str, Any]]:
            out = ctl("--socket", str(tmp_path / "control.sock"), "history", "--json")
            if out.returncode != 0:
                return []
            rows = [row for row in json.loads(out.stdout)["entries"] if row.get("action") == "process.signal"]
            # The row is written as "started" before the signal goes out; wait for the outcome.
            return rows if rows and all(row["result"] != "started" for row in rows) else []

        rows = wait_until(finished_rows, what="the process.signal audit row to be finished")
    assert [row["subject"] for row in rows] == [f"pid:{leaker.pid}"], rows
    item = rows[0]["detail"]["items"][0]
    assert item["pid"] == leaker.pid and token in item["cmdline"] and "sent SIGTERM" in item["detail"]
