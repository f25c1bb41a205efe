"""The shipped rules and dashboard as files: promtool accepts and unit-tests the rules; the dashboard is generated."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.integration.monitoring.support import (
    DASHBOARD,
    GENERATOR,
    README,
    RULE_TESTS,
    RULES,
    alerts,
    binary,
    dashboard_exprs,
)

pytestmark = pytest.mark.integration


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary("promtool"), *args], capture_output=True, text=True, timeout=60, check=False,
                          cwd=RULES.parent)


def test_promtool_check_rules_accepts_the_shipped_rules() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout and "WARNING" not in done.stdout + done.stderr, done.stdout + done.stderr


def test_promtool_unit_tests_pass_including_two_hosts_with_one_policy() -> None:
    text = RULE_TESTS.read_text()
    assert 'instance="a:19469"' in text and 'instance="b:19469"' in text  # the two-host series sets are there
    done = promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def test_every_alert_has_severity_annotations_and_a_runbook_section() -> None:
    headings = {line[4:].strip() for line in README.read_text().splitlines() if line.startswith("### ")}
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    names = set()
    for alert in alerts():
        name = alert["alert"]
        names.add(name)
        assert alert["labels"]["severity"] in ("critical", "warning"), name
        assert {"summary", "description", "runbook"} <= alert["annotations"].keys(), name
        assert alert["annotations"]["runbook"] == f"monitoring/README.md#{name.lower()}", name
        assert name in headings, f"{name}: no '### {name}' runbook section in monitoring/README.md"
    assert names == tested, f"alerts without a promtool unit test: {names - tested}"


def test_dashboard_is_valid_json_and_what_the_generator_writes() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    done = subprocess.run([sys.executable, str(GENERATOR)], capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout == DASHBOARD.read_text(), "run: python3 monitoring/grafana/dashboard.py > " + str(DASHBOARD)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["type"] == "query"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
    exprs = dashboard_exprs(dashboard)
    assert all('instance=~"$instance"' in expr for expr in exprs), [e for e in exprs if "$instance" not in e]
    for needed in ("watchdogd_rule_state", "watchdogd_rule_firing", "watchdogd_actions_total",
                   "watchdogd_probe_duration_seconds", "watchdogd_probe_success", "watchdogd_budget_remaining_actions",
                   "watchdogd_notification_outbox_pending", "watchdogd_fleet_slots_held"):
        assert any(needed in expr for expr in exprs), needed
