"""The shipped rules and dashboard against real daemons: two hosts with one policy, scraped by a real Prometheus.

One module-wide set of processes (two daemons, one Prometheus) keeps the directory to seconds: every test
here only reads them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DaemonProcess, free_port, wait_until, write_config
from tests.integration.interfaces.support import Service, http_get
from tests.integration.monitoring.support import (
    DASHBOARD,
    RULES,
    binary,
    dashboard_exprs,
    exported_names,
    names_in,
    rule_exprs,
)

pytestmark = pytest.mark.integration

# One policy for both hosts. flappy (critical) fires at once, acts once (budget of 1: spent), its fix does not
# hold, and it gives up; `missing` (warning) fires on a file that is not there. The webhook and the fleet's
# Redis are dead ports on purpose: the outbox and fleet families are exported (the dashboard reads them),
# and `on_unavailable: host` lets the action run anyway.
POLICY = """
    interval: 1s
    listen: 127.0.0.1:{port}
    budget: {{actions: 1, per: 1h}}
    notify:
      sinks:
        hook:
          webhook: {{url: "http://127.0.0.1:{dead}/hook"}}
    fleet:
      host: {host}
      coordinator:
        redis: {{url: "redis://127.0.0.1:{dead}/0"}}
      groups:
        restarts: {{max_hosts: 1, rules: [flappy], on_unavailable: host}}
    rules:
      flappy:
        probe: host.memory
        above: 0
        severity: critical
        cooldown: 1s
        max_actions: {{count: 1, per: 1h}}
        actions:
          - exec: {{argv: [/bin/true], settle: 1s}}
      missing:
        probe: host.file_age
        params: {{path: /nonexistent/watchdogd-monitoring}}
        above: 1d
"""


@dataclass(frozen=True)
class Fleet:
    instances: tuple[str, ...]
    prometheus: str  # base URL


def _api(base: str, path: str, **params: str) -> Any:
    status, body = http_get(f"{base}{path}?{urllib.parse.urlencode(params)}")
    return json.loads(body)["data"] if status == 200 else None


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    root = Path(tempfile.mkdtemp(prefix="wdm-", dir="/tmp"))
    daemons: list[DaemonProcess] = []
    dead = free_port()
    try:
        instances = []
        for host in ("a", "b"):
            home = root / host
            home.mkdir()
            port = free_port()
            daemon = DaemonProcess(write_config(home, POLICY.format(port=port, dead=dead, host=host)))
            daemons.append(daemon)
            daemon.start()
            instances.append(f"127.0.0.1:{port}")
        for daemon in daemons:
            daemon.wait_for_log("rule gave up", rule="flappy")
        prom_port = free_port()
        config = root / "prometheus.yml"
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "watchdogd", "static_configs": [{"targets": instances}]}],
        }))
        argv = [
            binary("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={root / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn",
        ]
        with Service(argv, root / "prometheus.log") as prometheus:
            base = f"http://127.0.0.1:{prom_port}"

            def ready() -> bool:
                assert prometheus.alive(), prometheus.output()
                return http_get(f"{base}/-/ready")[0] == 200

            wait_until(ready, 30, "Prometheus to be ready")
            yield Fleet(tuple(instances), base)
            assert prometheus.alive(), prometheus.output()
    finally:
        for daemon in daemons:
            try:
                daemon.stop(timeout=30)
            except Exception:  # a hung daemon is killed by stop(); keep cleaning the other
                pass
        shutil.rmtree(root, ignore_errors=True)


def test_dashboard_and_rules_name_only_metrics_the_daemon_exports(fleet: Fleet) -> None:
    used = names_in(dashboard_exprs(json.loads(DASHBOARD.read_text()))) | names_in(rule_exprs())
    assert len(used) > 20

    def missing() -> set[str]:
        status, body = http_get(f"http://{fleet.instances[0]}/metrics")
        return used - exported_names(body.decode()) if status == 200 else used

    left = missing()
    if left:  # /metrics is rendered ahead of scrapes: give the next render a moment
        wait_until(lambda: not missing(), 15, f"/metrics to export {sorted(missing())}")


def test_real_prometheus_loads_the_rules_and_they_evaluate_cleanly(fleet: Fleet) -> None:
    def evaluated() -> list[dict[str, Any]] | None:
        data = _api(fleet.prometheus, "/api/v1/rules")
        if not data or not data["groups"]:
            return None
        rules = [rule for group in data["groups"] for rule in group["rules"]]
        return rules if all(rule["health"] != "unknown" for rule in rules) else None

    rules = wait_until(evaluated, 30, "every shipped rule to be evaluated")
    assert {group["file"] for group in _api(fleet.prometheus, "/api/v1/rules")["groups"]} == {str(RULES)}
    bad = [(rule["name"], rule["health"], rule.get("lastError")) for rule in rules
           if rule["health"] != "ok" or rule.get("lastError")]
    assert not bad, bad
    assert len(rules) == 19


def test_alerts_go_pending_and_firing_once_per_host(fleet: Fleet) -> None:
    expected = {
        ("WatchdogdGaveUp", "flappy", "firing"),
        ("WatchdogdRuleFiring", "flappy", "pending"),  # critical: for 15m
        ("WatchdogdRuleFiring", "missing", "pending"),  # warning: for 1h
        ("WatchdogdFixDidNotHold", "flappy", "pending"),
        ("WatchdogdBudgetExhausted", "", "pending"),
    }
    wanted = {(name, instance, rule, state) for name, rule, state in expected for instance in fleet.instances}

    def active() -> list[dict[str, Any]]:
        data = _api(fleet.prometheus, "/api/v1/alerts")
        return data["alerts"] if data else []

    def seen() -> set[tuple[str, str, str, str]]:
        return {(a["labels"]["alertname"], a["labels"]["instance"], a["labels"].get("rule", ""), a["state"])
                for a in active()}

    wait_until(lambda: wanted <= seen(), 30, f"alerts {sorted(wanted)}")
    alerts = active()
    keys = [(a["labels"]["alertname"], a["labels"]["instance"], a["labels"].get("rule", "")) for a in alerts]
    assert len(keys) == len(set(keys)), keys  # one alert per host and rule, never merged or doubled
    names = {a["labels"]["alertname"] for a in alerts}
    # A healthy daemon whose rules run trips none of these (Stale would be pending if its expression held).
    assert not names & {"WatchdogdStale", "WatchdogdAbsent", "WatchdogdProbeDown", "WatchdogdActionFailing",
                        "WatchdogdReloadFailed", "WatchdogdProbesStuck"}, names
    gave_up = next(a for a in alerts if a["labels"]["alertname"] == "WatchdogdGaveUp")
    instance = gave_up["labels"]["instance"]
    assert gave_up["labels"]["severity"] == "critical" and gave_up["labels"]["job"] == "watchdogd"
    assert gave_up["annotations"]["summary"] == f"watchdogd gave up on flappy on {instance}"
    assert gave_up["annotations"]["runbook"] == "monitoring/README.md#watchdogdgaveup"
