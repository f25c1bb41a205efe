"""The shipped policy is valid and runs on this host, whatever services it lacks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import run_once
from watchdogd.config import load_config

pytestmark = pytest.mark.integration

SHIPPED = Path(__file__).resolve().parents[2] / "etc" / "watchdogd" / "watchdogd.yaml"


def local_copy(tmp_path: Path) -> Path:
    """The shipped file with its paths moved under tmp_path; nothing else changed."""
    text = SHIPPED.read_text()
    text = re.sub(r"(?m)^state_dir: .*$", f"state_dir: {tmp_path}/state", text)
    text = re.sub(r"(?m)^control_socket: .*$", f"control_socket: {tmp_path}/control.sock", text)
    text = re.sub(r"(?m)^listen: .*$", "listen: null", text)
    path = tmp_path / "watchdogd.yaml"
    path.write_text(text)
    path.chmod(0o640)
    return path


def test_shipped_policy_validates() -> None:
    config = load_config(SHIPPED, check_permissions=False)
    assert config.rules, "the shipped policy has rules"
    acting = [rule for rule in config.rules.values() if rule.enabled and rule.actions]
    assert acting, "the shipped policy has self-healing rules"
    # Enabled out of the box, they run in dry-run until the operator has read the audit log.
    assert [rule.name for rule in acting if not rule.dry_run] == []


def test_shipped_policy_runs_once_without_crashing(tmp_path: Path) -> None:
    result = run_once(local_copy(tmp_path), "--dry-run", timeout=120)
    assert result.returncode in (0, 1), result.stderr
    assert "Traceback" not in result.stderr
    config = load_config(SHIPPED, check_permissions=False)
    enabled = [name for name, rule in config.rules.items() if rule.enabled]
    reported = [line.split(":")[0] for line in result.stdout.splitlines()[:-1]]
    assert reported == enabled
