"""The shipped policy is valid and runs on this host, whatever services it lacks."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.helpers import WATCHDOGD, run, run_once
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


SERVICE_PROBES = ("postgres.", "redis.", "docker.")


def test_a_host_without_postgresql_redis_or_docker_reads_ok(tmp_path: Path) -> None:
    """A fresh install on a host without the services: their rules are absent, nothing down, nothing waiting.

    A network and mount namespace is that host: no PostgreSQL or Redis on
    127.0.0.1, and a tmpfs over /run hides the Docker socket.
    """
    unshare = shutil.which("unshare")
    assert unshare, "unshare is missing: apt-get install util-linux"
    hide_run = 'mount -t tmpfs tmpfs /run && exec "$@"'
    result = run(
        [unshare, "--net", "--mount", "--propagation", "private", "/bin/sh", "-c", hide_run, "sh",
         *WATCHDOGD, "--config", str(local_copy(tmp_path)), "--once"],
        timeout=120,
    )
    assert "Traceback" not in result.stderr, result.stderr
    config = load_config(SHIPPED, check_permissions=False)
    states = dict(line.split(": ", 1)[0:2] for line in result.stdout.splitlines()[:-1])
    states = {name: text.split(";")[0] for name, text in states.items()}
    services = [name for name, rule in config.rules.items() if rule.enabled and rule.probe.startswith(SERVICE_PROBES)]
    assert services, "the shipped policy watches PostgreSQL, Redis and Docker"
    assert {name: states[name] for name in services} == dict.fromkeys(services, "absent"), result.stdout
    summary = result.stdout.splitlines()[-1]
    assert " down" not in summary and "waiting" not in summary, summary
    # Host rules measure this machine, which a busy CI run may load: only they may fire, and then exit 1.
    firing = [name for name, state in states.items() if state in ("firing", "pending")]
    assert not set(firing) & set(services), result.stdout
    assert result.returncode == (1 if any(states[name] == "firing" for name in firing) else 0), result.stdout
