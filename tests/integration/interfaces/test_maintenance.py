"""Maintenance mode end to end: a real daemon, the real watchdogctl, /metrics, a kill -9 and an expiry.

A ``host.file_age`` rule on a flag file in the test's directory whose action
re-creates the flag: removing the flag makes it fire (no match reads as
infinitely old), and the flag coming back is the proof the action ran. No
root, no sleeps: every wait is on a log line or a polled condition.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ctl, free_port, wait_until
from tests.integration.interfaces.conftest import DaemonFactory
from tests.integration.interfaces.support import http_get

pytestmark = pytest.mark.integration

CONFIG = """
    interval: 1s
    listen: 127.0.0.1:{port}
    rules:
      flag:
        probe: host.file_age
        params: {{path: {flag}}}
        above: 1h
        every: 0.25s
        cooldown: 1s
        actions:
          - exec: {{argv: [/usr/bin/touch, {flag}], settle: 3s}}
"""


def maintenance_metrics(port: int) -> dict[str, float]:
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, body[:500]
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name.startswith("watchdogd_maintenance")
    }


def control(sock: str, *args: str) -> Any:
    done = ctl("--socket", sock, *args, "--json")
    assert done.returncode in (0, 1), done.stdout + done.stderr  # status exits 1 while the rule fires
    return json.loads(done.stdout)


def test_maintenance_mode_end_to_end(start_daemon: DaemonFactory, short_dir: Path) -> None:
    flag = short_dir / "flag"
    flag.touch()
    port = free_port()
    daemon = start_daemon(CONFIG.format(port=port, flag=flag))
    sock = str(short_dir / "control.sock")
    daemon.wait_for_log("started")
    me = pwd.getpwuid(os.getuid()).pw_name

    paused = ctl("--socket", sock, "pause", "--all", "--for", "10m", "--reason", "kernel upgrade OPS-42")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.startswith("maintenance mode until ") and "no rule acts" in paused.stdout
    assert paused.stderr == ""  # an end was given: no warning
    daemon.wait_for(lambda line: "maintenance started" in line and 'reason="kernel upgrade OPS-42"' in line
                    and f"user={me}" in line.split())

    flag.unlink()  # the rule fires; its action would re-create the flag
    daemon.wait_for_log("firing", timeout=15, rule="flag")
    daemon.wait_for_log("action skipped", timeout=15, rule="flag", reason="maintenance")

    # status: the first line says who, until when and why; the rule itself fires as it would.
    status = ctl("--socket", sock, "status")
    assert status.returncode == 1, status.stdout + status.stderr
    first = status.stdout.splitlines()[0]
    assert re.match(rf"MAINTENANCE until \S+ \S+ \(\d+m left\) by {me} \(uid {os.getuid()}\) "
                    r"\(kernel upgrade OPS-42\)", first), first
    doc = control(sock, "status")
    since = doc["maintenance"]["since"]
    assert doc["maintenance"]["reason"] == "kernel upgrade OPS-42"
    assert doc["maintenance"]["by"]["uid"] == os.getuid() and doc["maintenance"]["until"] > time.time() + 500
    assert doc["rules"][0]["state"] == "firing"
    metrics = wait_until(lambda: (m := maintenance_metrics(port))["watchdogd_maintenance"] == 1.0 and m,
                         10, "watchdogd_maintenance 1")
    assert metrics["watchdogd_maintenance_until_timestamp_seconds"] == doc["maintenance"]["until"]

    # history: the operator row (who, why), the rule's skip naming the maintenance, the alert-history row.
    hist = control(sock, "history", "--since", "1h")
    start_row = next(e for e in hist["entries"] if e["action"] == "operator.pause_all")
    assert (start_row["rule"], start_row["decision"]) == ("*", "operator")
    assert start_row["detail"]["reason"] == "kernel upgrade OPS-42" and start_row["detail"]["by"]["user"] == me
    skip = next(e for e in hist["entries"] if e["decision"] == "skipped_maintenance")
    assert skip["rule"] == "flag" and skip["detail"]["maintenance"]["reason"] == "kernel upgrade OPS-42"
    assert any(t["kind"] == "maintenance_start" and t["rule"] == "*" for t in hist["transitions"])
    assert not flag.exists(), "no action ran during maintenance"

    # It survives kill -9: the restarted daemon is still in maintenance and skips again.
    daemon.kill9()
    # A new process object, not daemon.start(): the killed one's log reader may still be ending.
    daemon = start_daemon(CONFIG.format(port=port, flag=flag))
    daemon.wait_for_log("action skipped", timeout=15, rule="flag", reason="maintenance")
    assert control(sock, "status")["maintenance"]["since"] == since
    assert not flag.exists()

    # Shortened to 2 s (a replacement, recorded), it ends by itself and the action runs.
    short = ctl("--socket", sock, "pause", "--all", "--for", "2s")
    assert short.returncode == 0 and "replaces the maintenance since" in short.stdout, short.stdout + short.stderr
    daemon.wait_for_log("maintenance ended", timeout=15, ended="expired")
    daemon.wait_for_log("action done", timeout=15, rule="flag")
    assert flag.exists()
    assert control(sock, "status")["maintenance"] is None
    wait_until(lambda: maintenance_metrics(port)["watchdogd_maintenance"] == 0.0, 10, "watchdogd_maintenance 0")
    hist = control(sock, "history", "--since", "1h")
    actions = [e["action"] for e in hist["entries"] if e["rule"] == "*"]
    assert actions == ["maintenance.expired", "operator.pause_all", "operator.pause_all"], actions
    ran = next(e for e in hist["entries"] if e["rule"] == "flag" and e["decision"] == "ran")
    expired = next(e for e in hist["entries"] if e["action"] == "maintenance.expired")
    assert ran["ts"] >= expired["ts"]
    kinds = [t["kind"] for t in hist["transitions"] if t["rule"] == "*"]
    assert kinds == ["maintenance_end", "maintenance_change", "maintenance_start"], kinds
    alerts = ctl("--socket", sock, "history", "--alerts")
    assert "maintenance_end" in alerts.stdout and "expired; began" in alerts.stdout, alerts.stdout

    done = ctl("--socket", sock, "resume", "--all")
    assert done.returncode == 0 and done.stdout.strip() == "not in maintenance", done.stdout + done.stderr
    assert daemon.returncode is None
