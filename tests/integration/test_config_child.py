"""The running daemon checks its config in a child and never maps pydantic itself (watchdogd.configchild).

Read from the real process's ``/proc/<pid>/maps``: pydantic-core is a shared
library, so a daemon that imported pydantic (at start, on a reload, or through
a model checked at run time) maps ``_pydantic_core``.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest

from tests.helpers import DaemonProcess, ctl, wait_until, write_config

pytestmark = pytest.mark.integration

SHIPPED = Path(__file__).resolve().parents[2] / "etc" / "watchdogd" / "watchdogd.yaml"


def maps_pydantic(pid: int) -> bool:
    return "_pydantic_core" in Path(f"/proc/{pid}/maps").read_text()


def test_the_daemon_never_loads_pydantic_at_start_on_reload_or_on_a_bad_reload(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        """\
        rules:
          cpu: {probe: host.cpu, above: 100}
          disk: {probe: host.disk, above: 0, every: 1s}
    """,
    )
    with DaemonProcess(config) as daemon:
        daemon.wait_for_log("started")
        assert daemon.proc is not None
        pid = daemon.proc.pid
        daemon.wait_for_log("firing", rule="disk")  # a rule has run and judged
        assert not maps_pydantic(pid)

        config.write_text(config.read_text().replace("above: 0, every: 1s", "above: 1, every: 1s"))
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("reloaded")
        assert not maps_pydantic(pid)

        config.write_text(config.read_text() + "  bad: {probe: host.disk, abve: 1}\n")
        daemon.signal(signal.SIGHUP)
        line = daemon.wait_for_log("reload failed, keeping the running config")
        assert "rules.bad.abve: unknown key" in line, line
        assert not maps_pydantic(pid)
        assert daemon.proc.poll() is None


def test_the_shipped_policy_runs_every_rule_without_loading_pydantic(tmp_path: Path) -> None:
    """Every family the shipped policy uses (host, PostgreSQL, Redis, Docker, dry-run actions) at run time."""
    text = re.sub(r"(?m)^(\s*)every: .*$", r"\1every: 1s", SHIPPED.read_text())
    for key, value in (("interval", "1s"), ("state_dir", f"{tmp_path}/state"),
                       ("control_socket", f"{tmp_path}/control.sock"), ("listen", "null")):
        text = re.sub(rf"(?m)^{key}: .*$", f"{key}: {value}", text)
    config = tmp_path / "watchdogd.yaml"
    config.write_text(text)
    config.chmod(0o640)
    with DaemonProcess(config, "--dry-run") as daemon:
        daemon.wait_for_log("started")
        assert daemon.proc is not None

        def not_run_yet() -> list[str]:
            status = json.loads(ctl("--socket", str(tmp_path / "control.sock"), "status", "--json").stdout)
            return [doc["name"] for doc in status["rules"] if doc["enabled"] and doc["last_run"] is None]

        wait_until(lambda: not not_run_yet(), timeout=60, what="every enabled rule's first run")
        assert not maps_pydantic(daemon.proc.pid)
