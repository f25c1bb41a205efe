"""Paths of the shipped monitoring files and what their queries name."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
MONITORING = REPO / "monitoring"
RULES = MONITORING / "prometheus" / "watchdogd.rules.yml"
RULE_TESTS = MONITORING / "prometheus" / "watchdogd.rules.test.yml"
DASHBOARD = MONITORING / "grafana" / "watchdogd.json"
GENERATOR = MONITORING / "grafana" / "dashboard.py"
README = MONITORING / "README.md"

# A metric name of the daemon's, not the tail of a recording rule's name (level:metric:operation).
WATCHDOGD_NAME = re.compile(r"(?<![:\w])watchdogd_[a-z0-9_]+")


def binary(name: str) -> str:
    """Fail loudly: a missing promtool must not turn these tests into skips."""
    path = shutil.which(name)
    assert path, f"{name} is missing: apt-get install prometheus (scripts/test installs it)"
    return path


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    return groups


def alerts() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def rule_exprs() -> list[str]:
    return [rule["expr"] for group in rule_groups() for rule in group["rules"]]


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def names_in(exprs: list[str]) -> set[str]:
    return {name for expr in exprs for name in WATCHDOGD_NAME.findall(expr)}


def exported_names(body: str) -> set[str]:
    """Sample names of a /metrics body (``_total``, ``_count`` included, as PromQL sees them)."""
    return {re.split(r"[{ ]", line, maxsplit=1)[0] for line in body.splitlines() if line and not line.startswith("#")}
