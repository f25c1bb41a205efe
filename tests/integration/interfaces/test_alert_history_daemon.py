"""The alert history of a real daemon, through the real watchdogctl and /metrics.

An alert-only ``host.file_age`` rule on a file in the test's directory: the
test makes it fire by setting the file's mtime two hours back and clear it
by touching the file, so no root and no timing luck is involved.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ctl, free_port, wait_until
from tests.integration.interfaces.conftest import DaemonFactory
from tests.integration.interfaces.support import http_get

pytestmark = pytest.mark.integration

RULE = """
    interval: 1s
    listen: 127.0.0.1:{port}
    rules:
      backup-age:
        probe: host.file_age
        params: {{path: {path}}}
        above: 1h
        every: 1s
"""


def history(sock: str, *flags: str) -> dict[str, Any]:
    done = ctl("--socket", sock, "history", "--rule", "backup-age", "--json", *flags)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def transitions_total(port: int) -> dict[tuple[str, str], float]:
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, body[:500]
    return {
        (sample.labels["rule"], sample.labels["kind"]): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == "watchdogd_transitions_total"
    }


def test_an_alert_only_rule_that_fires_and_clears_is_in_history_and_metrics(
    start_daemon: DaemonFactory, short_dir: Path
) -> None:
    backup = short_dir / "backup.tar"
    backup.write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    os.utime(backup, (two_hours_ago, two_hours_ago))
    port = free_port()
    daemon = start_daemon(RULE.format(port=port, path=backup))
    sock = str(short_dir / "control.sock")

    daemon.wait_for_log("firing", timeout=15, rule="backup-age")
    os.utime(backup)  # a fresh backup: age ~0s
    daemon.wait_for_log("resolved", timeout=15, rule="backup-age")

    # The history sink is queued: its rows land on disk a moment after the log line.
    def kinds() -> list[str] | None:
        found = [t["kind"] for t in history(sock, "--alerts")["transitions"]]
        return found if "resolved" in found else None

    assert wait_until(kinds, 10, "the resolved row in the alert history") == ["resolved", "firing"]  # newest first

    alerts = history(sock, "--alerts")
    assert alerts["entries"] == []
    resolved, firing = alerts["transitions"]
    assert all(t["rule"] == "backup-age" and t["subject"] == str(backup) for t in (resolved, firing))
    assert firing["ts"] < resolved["ts"]
    assert 7200 <= firing["value"] < 7200 + 60 and firing["value_text"].endswith("h")  # the rule's unit: seconds
    assert firing["detail"] == {"from": "ok", "severity": "warning", "evidence": firing["detail"]["evidence"]}
    assert isinstance(firing["detail"]["evidence"], int)  # host.file_age describes: evidence was taken
    assert resolved["value"] < 60 and resolved["detail"]["from"] == "firing"
    assert isinstance(firing["id"], int) and isinstance(resolved["id"], int)

    merged = history(sock)
    assert merged["transitions"] == alerts["transitions"]
    assert merged["entries"] == []  # alert-only: nothing was decided about an action, so no audit row
    assert history(sock, "--actions") == {"entries": [], "transitions": []}

    table = ctl("--socket", sock, "history", "--rule", "backup-age")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.strip().splitlines()
    assert header.split() == ["TIME", "RULE", "ACTION", "SUBJECT", "OUTCOME", "VALUE", "ERROR"]
    assert [row.split()[2:6] for row in rows] == [
        ["backup-age", "(state)", str(backup), "resolved"],
        ["backup-age", "(state)", str(backup), "firing"],
    ]
    only_actions = ctl("--socket", sock, "history", "--rule", "backup-age", "--actions")
    assert only_actions.returncode == 0 and only_actions.stdout.strip() == "no matching history"
    both = ctl("--socket", sock, "history", "--actions", "--alerts")
    assert both.returncode == 2 and "not allowed with" in both.stderr and "Traceback" not in both.stderr

    counts = transitions_total(port)
    assert counts[("backup-age", "firing")] >= 1 and counts[("backup-age", "resolved")] >= 1
    assert {kind for rule, kind in counts if rule == "backup-age"} == {"pending", "firing", "resolved", "down",
                                                                        "back"}
    assert counts[("backup-age", "pending")] == 0 and counts[("backup-age", "down")] == 0

    status = ctl("--socket", sock, "status", "--json")
    [doc] = [r for r in json.loads(status.stdout)["rules"] if r["name"] == "backup-age"]
    assert doc["last_change"] == {"kind": "resolved", "ts": resolved["ts"], "subject": str(backup),
                                  "value": resolved["value"]}
    assert daemon.returncode is None
