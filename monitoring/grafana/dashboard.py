#!/usr/bin/env python3
"""Writes watchdogd.json, the Grafana dashboard, from the panel table below.

A table in Python rather than hand-edited JSON: grid positions, datasource
references and the instance filter are derived, so a new panel is one row and
cannot come out half-wired. Standard library only: no runtime dependency of the
package, and no grafanalib/foundation-sdk to pin. The JSON is kept in the repo
(operators import that file); a test checks it is what this script writes.

    python3 monitoring/grafana/dashboard.py > monitoring/grafana/watchdogd.json
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

UID = "watchdogd-overview"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'instance=~"$instance"'
"""Every query filters on the instance variable; `{SEL}` in a query is replaced by it."""
WIDTH = 24


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # Grafana panel type: timeseries, stat, table, bargauge
    queries: tuple[Query, ...]
    description: str
    width: int = 8
    height: int = 8
    unit: str = "short"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


def q(expr: str, legend: str = "", *, instant: bool = False) -> Query:
    return Query(expr.replace("{SEL}", SEL), legend, instant)


STAT = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "background"}
TABLE = {"showHeader": True}

ROWS: tuple[Row, ...] = (
    Row("Rules", (
        Panel("Rules by state", "bargauge",
              (q("sum by (state) (watchdogd_rule_state{{SEL}})", "{{state}}", instant=True),),
              "How many rules are in each state, over the selected hosts.",
              options={"displayMode": "basic", "orientation": "horizontal"}),
        Panel("Firing by severity", "timeseries",
              (q("sum by (severity) (watchdogd_rule_firing{{SEL}})", "{{severity}}"),),
              "Rules with at least one firing subject, per severity (the rule's own severity)."),
        Panel("Firing subjects per rule", "timeseries",
              (q("watchdogd_rule_firing_subjects{{SEL}} > 0", "{{instance}} {{rule}}"),),
              "Subjects past the threshold for the rule's 'for', per host and rule."),
        Panel("Rules not ok", "table",
              (q('watchdogd_rule_state{{SEL}, state!="ok"} == 1', instant=True),),
              "Every rule of the selected hosts whose state is not ok: firing, pending, paused, gave_up, down, "
              "waiting, absent, disabled.", width=24, options=TABLE),
    )),
    Row("Actions", (
        Panel("Actions by result", "timeseries",
              (q("sum by (result) (increase(watchdogd_actions_total{{SEL}}[$__rate_interval]))", "{{result}}"),),
              "Action runs: ok, failed, dry_run."),
        Panel("Actions in the last 24h", "table",
              (q("sum by (instance, rule, action, result) (increase(watchdogd_actions_total{{SEL}}[24h])) > 0",
                 instant=True),),
              "Which rules acted, with what, and how it went.", options=TABLE),
        Panel("Transitions", "timeseries",
              (q("sum by (kind) (increase(watchdogd_transitions_total{{SEL}}[$__rate_interval]))", "{{kind}}"),),
              "Subjects pending/firing/resolved, probes down/back, rules gave_up/resumed."),
        Panel("Budget remaining", "timeseries",
              (q("watchdogd_budget_remaining_actions{{SEL}}", "{{instance}} remaining"),
               q("watchdogd_budget_actions{{SEL}}", "{{instance}} per window")),
              "Actions each host may still run in its budget window; at 0 nothing acts there."),
        Panel("Cooldowns and give-ups", "table",
              (q("(watchdogd_rule_cooldown_until_timestamp_seconds{{SEL}} - time()) > 0", instant=True),
               q("watchdogd_rule_gave_up_timestamp_seconds{{SEL}} > 0", instant=True)),
              "Rules in cooldown (seconds left) and rules that gave up (since when).", options=TABLE),
        Panel("Maintenance and dry run", "stat",
              (q("max by (instance) (watchdogd_maintenance{{SEL}})", "{{instance}} maintenance"),
               q("max by (instance) (watchdogd_dry_run{{SEL}})", "{{instance}} dry run")),
              "1: the host does not act (maintenance mode, watchdogctl pause --all) or only records (dry run).",
              options=STAT),
    )),
    Row("Probes", (
        Panel("Probe success", "timeseries",
              (q("min by (instance, rule) (watchdogd_probe_success{{SEL}})", "{{instance}} {{rule}}"),),
              "1 if the rule's last probe run succeeded; 0: the rule cannot see.", options={}),
        Panel("Probe duration", "timeseries",
              (q("watchdogd_probe_duration_seconds{{SEL}}", "{{instance}} {{rule}}"),),
              "How long each rule's last probe run took.", unit="s"),
        Panel("Probe age in intervals", "timeseries",
              (q("(time() - watchdogd_probe_last_run_timestamp_seconds{{SEL}}) / ignoring (probe, target) "
                 "watchdogd_rule_interval_seconds{{SEL}}", "{{instance}} {{rule}}"),),
              "Time since each probe last finished, in its rule's intervals: above 3 the rule is stale."),
        Panel("Stuck and abandoned probes", "timeseries",
              (q("watchdogd_probe_threads_stuck{{SEL}}", "{{instance}} stuck"),
               q("increase(watchdogd_probes_abandoned_total{{SEL}}[$__rate_interval])", "{{instance}} abandoned")),
              "Probe threads past their timeout (only a restart frees them), and probes given up on."),
    )),
    Row("Notifications", (
        Panel("Outbox", "timeseries",
              (q("watchdogd_notification_outbox_pending{{SEL}}", "{{instance}} {{sink}} pending"),),
              "Pages waiting in the durable outbox, per sink."),
        Panel("Oldest waiting page", "timeseries",
              (q("watchdogd_notification_outbox_oldest_seconds{{SEL}}", "{{instance}} {{sink}}"),),
              "How long the oldest undelivered page has waited.", unit="s"),
        Panel("Deliveries", "timeseries",
              (q("sum by (sink) (increase(watchdogd_notifications_delivered_total{{SEL}}[$__rate_interval]))",
                 "{{sink}} delivered"),
               q("sum by (sink) (increase(watchdogd_notifications_retried_total{{SEL}}[$__rate_interval]))",
                 "{{sink}} retried"),
               q("sum by (sink) (increase(watchdogd_notifications_failed_total{{SEL}}[$__rate_interval]))",
                 "{{sink}} failed")),
              "Pages accepted, retried and given up."),
    )),
    Row("Fleet", (
        Panel("Fleet slots", "timeseries",
              (q("sum by (group) (watchdogd_fleet_slots_held{{SEL}})", "{{group}} held"),
               q("max by (group) (watchdogd_fleet_group_max_hosts{{SEL}})", "{{group}} max hosts")),
              "Slots held across the selected hosts against the group's limit."),
        Panel("Rules waiting for a slot", "timeseries",
              (q("watchdogd_fleet_waiting_rules{{SEL}} > 0", "{{instance}} {{group}}"),),
              "Rules denied a slot and still asking."),
        Panel("Slot answers", "timeseries",
              (q("sum by (result) (increase(watchdogd_fleet_acquires_total{{SEL}}[$__rate_interval]))",
                 "{{result}}"),
               q("sum(increase(watchdogd_fleet_coordinator_errors_total{{SEL}}[$__rate_interval]))",
                 "coordinator errors")),
              "granted; full, rate (denied); unavailable, fallback (no answer); lost (mid-run)."),
    )),
    Row("Daemons", (
        Panel("Uptime", "stat",
              (q("time() - watchdogd_start_time_seconds{{SEL}}", "{{instance}}"),),
              "Since each daemon started.", unit="s", options=STAT),
        Panel("Config reload", "stat",
              (q("watchdogd_config_last_reload_successful{{SEL}}", "{{instance}}"),),
              "0: the last reload failed and an older config runs.", options=STAT),
        Panel("Versions", "table",
              (q("watchdogd_build_info{{SEL}}", instant=True),),
              "The version each host runs.", options=TABLE),
    )),
)


def _target(query: Query, ref: int) -> dict[str, Any]:
    target: dict[str, Any] = {"datasource": DATASOURCE, "expr": query.expr, "refId": chr(ord("A") + ref)}
    if query.legend:
        target["legendFormat"] = query.legend
    if query.instant:
        target.update(instant=True, range=False, format="table")
    return target


def _panels() -> list[dict[str, Any]]:
    """Rows and panels with ids and grid positions: panels fill a row left to right, then wrap."""
    out: list[dict[str, Any]] = []
    y = 0
    for row in ROWS:
        out.append({"type": "row", "title": row.title, "id": len(out) + 1, "collapsed": False,
                    "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y}, "panels": []})
        y += 1
        x, height = 0, 0
        for panel in row.panels:
            if x + panel.width > WIDTH:
                x, y = 0, y + height
            out.append({
                "type": panel.kind,
                "title": panel.title,
                "description": panel.description,
                "id": len(out) + 1,
                "datasource": DATASOURCE,
                "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
                "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                "options": panel.options,
                "targets": [_target(query, i) for i, query in enumerate(panel.queries)],
            })
            x, height = x + panel.width, max(height, panel.height)
        y += height
    return out


def dashboard() -> dict[str, Any]:
    return {
        "uid": UID,
        "title": "watchdogd",
        "description": "watchdogd: rule states, actions, probes, budget, notifications, fleet slots. "
                       "Shipped in /usr/share/watchdogd/monitoring/grafana/.",
        "tags": ["watchdogd"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1},
            {"name": "instance", "label": "Host", "type": "query", "datasource": DATASOURCE,
             "query": {"query": "label_values(watchdogd_build_info, instance)", "refId": "instance"},
             "definition": "label_values(watchdogd_build_info, instance)",
             "multi": True, "includeAll": True, "allValue": ".+", "current": {}, "refresh": 2, "sort": 1,
             "hide": 0},
        ]},
        "annotations": {"list": []},
        "panels": _panels(),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
