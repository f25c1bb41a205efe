"""systemd evidence against a real systemd as PID 1: ``describe`` of a unit that failed, run inside the box."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

from tests.integration.services.servers import wait_until

pytestmark = pytest.mark.integration

PYTHON = "/opt/watchdogd/bin/python"
CRASHY = """
    [Unit]
    Description=prints, complains and fails
    [Service]
    ExecStart=/bin/sh -c 'for i in 1 2 3; do echo hello $i; done; echo bad >&2; exit 3'
    Restart=no
"""
# Builds systemd.unit as the registry does, measures once, describes what fired; prints the lot as JSON.
DESCRIBE = """
import json, sys, time
from watchdogd.contracts import EvidenceLimits
from watchdogd.families.systemd.probes import PROBES, UnitParams
probe = PROBES["systemd.unit"].factory(UnitParams(units=["crashy", "no-such-unit"]), None, time.time)
firing = [r for r in probe.measure() if r.value > 0]
started = time.monotonic()
sections = probe.describe(firing, EvidenceLimits(deadline=started + 2.0, max_bytes=65536))
took = time.monotonic() - started
print(json.dumps({"firing": [r.subject for r in firing], "sections": sections, "took": took}))
"""


def journal_of(box: Any, unit: str) -> str:
    return str(box.exec(["journalctl", "--no-pager", "-u", unit, "-o", "cat"]).stdout)


def test_a_failed_unit_is_described_with_its_status_and_journal(systemd_box: Any) -> None:
    box = systemd_box
    box.write_file("/etc/systemd/system/crashy.service", textwrap.dedent(CRASHY))
    box.exec(["systemctl", "daemon-reload"])
    box.exec(["systemctl", "start", "crashy.service"], check=False)
    wait_until(lambda: "Failed with result 'exit-code'" in journal_of(box, "crashy.service"),
               what="crashy to fail and systemd to log it")

    result = json.loads(box.exec([PYTHON, "-c", DESCRIBE]).stdout)

    print(f"systemd.unit describe in the box: {result['took'] * 1000:.1f} ms,"
          f" {len(json.dumps(result['sections']))} bytes")
    assert result["firing"] == ["crashy.service", "no-such-unit.service"]
    sections = result["sections"]
    assert set(sections) == {"unit status", "last journal lines"}
    crashy, missing = sections["unit status"]
    assert (crashy["active_state"], crashy["result"], crashy["main_exit"]) == ("failed", "exit-code", "exited 3")
    assert crashy["exec_main_status"] == 3 and crashy["restarts"] == 0 and crashy["main_pid"] is None
    assert crashy["main_exited_at"] is not None
    assert missing["load_state"] == "not-found"
    lines = sections["last journal lines"]["crashy.service"]
    assert [line.split(": ", 1)[1] for line in lines if ": hello" in line or ": bad" in line] == [
        "hello 1", "hello 2", "hello 3", "bad",
    ]
    assert lines[-1].endswith("crashy.service: Failed with result 'exit-code'.")
    assert lines[0][:4].isdigit() and "T" in lines[0][:11]  # short-iso: 2026-12-03T18:04:27+0000
    assert sections["last journal lines"]["no-such-unit.service"] == []
    assert result["took"] < 2.0
