"""The real daemon keeps counting a log's ERROR lines across a rename rotation and a truncation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DaemonProcess, ctl, write_config
from tests.integration.services.servers import wait_until

pytestmark = pytest.mark.integration


def append(path: Path, *lines: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(f"{line}\n" for line in lines))


def test_log_count_survives_rotation_and_truncation(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    append(log, "ERROR from before the daemon started: not counted")
    config = write_config(tmp_path, f"""
        interval: 200ms
        rules:
          following:
            probe: log.count
            params: {{path: "{log}", pattern: "^READY$", window: 10m}}
            above: 0
          after-rotation:
            probe: log.count
            params: {{path: "{log}", pattern: "ERROR", window: 10m}}
            above: 3
          after-truncation:
            probe: log.count
            params: {{path: "{log}", pattern: "ERROR", window: 10m}}
            above: 5
        """)
    def rules() -> dict[str, dict[str, Any]]:
        out = ctl("--socket", str(tmp_path / "control.sock"), "status", "--json")
        if out.returncode == 3 or not out.stdout.strip():  # 3: the control socket is not up yet
            return {}
        return {rule["name"]: rule for rule in json.loads(out.stdout)["rules"]}

    def all_rules_ran() -> bool:
        found = rules()
        return bool(found) and all(rule["last_run"] for rule in found.values())

    def value(name: str) -> float | None:
        worst = rules().get(name, {}).get("worst")
        return None if worst is None else float(worst["value"])

    with DaemonProcess(config) as daemon:
        # A file is followed from where it ends when its rule first runs.
        wait_until(all_rules_ran, what="every rule's first run")
        append(log, "READY")
        daemon.wait_for_log("firing", rule="following")

        append(log, "ERROR one", "INFO fine", "ERROR two")
        log.rename(tmp_path / "app.log.1")
        append(log, "ERROR three (new file)", "ERROR four")
        daemon.wait_for_log("firing", rule="after-rotation")
        # Lines written before a truncation are lost to a reader that had not read them yet (that is
        # copytruncate's nature), so the second rule must have seen all four before the file is cut.
        wait_until(lambda: value("after-truncation") == 4.0, what="after-truncation to count four")

        with log.open("r+") as handle:
            handle.truncate(0)
        append(log, "ERROR five", "ERROR six")
        line = daemon.wait_for_log("firing", rule="after-truncation")
        assert "value=6.0" in line.split()
