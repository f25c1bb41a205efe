"""Evidence end to end (issue 15): a firing page names the evidence, ``watchdogctl show`` prints it.

A real daemon with the real registry, an alert-only ``host.file_age`` rule
(``notify.default.when: firing``) and a webhook sink to the test's own
receiver. The test makes its file an hour old: the rule fires, the daemon
takes the family's evidence ("newest matching files") before the events go
out, and the page, ``watchdogctl show ID --json`` and the alert history all
name the same id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ctl, wait_until
from tests.integration.faults.notify_support import RecordingReceiver, history, make_old, write_secret
from tests.integration.interfaces.conftest import DaemonFactory
from tests.integration.interfaces.test_notify_daemon import SECRET, check_signed, config, file_rule, hook_sink, stamp

pytestmark = pytest.mark.integration


def test_a_firing_page_names_evidence_that_show_and_history_agree_on(
    start_daemon: DaemonFactory, short_dir: Path
) -> None:
    target = stamp(short_dir, "backup.stamp")
    key = write_secret(short_dir / "hook.key", SECRET)
    sock = short_dir / "control.sock"
    with RecordingReceiver() as hook:
        daemon = start_daemon(config(
            None, {"hook": hook_sink(hook.url, key)}, {"backup": file_rule(target)}, default={"when": "firing"},
        ))
        daemon.wait_for_log("started")
        make_old(target)

        [firing] = hook.wait_arrivals(lambda a: len(a) >= 1, 15, "the firing page")
        page = check_signed(firing.request, "firing")
        assert (page["rule"], page["subject"]) == ("backup", str(target))
        evidence = page["detail"]["evidence"]
        assert isinstance(evidence, int) and not isinstance(evidence, bool)
        assert page["detail"]["evidence_command"] == f"watchdogctl show {evidence}"

        shown = ctl("--socket", str(sock), "show", str(evidence), "--json")
        assert shown.returncode == 0, shown.stderr
        doc: dict[str, Any] = json.loads(shown.stdout)
        assert (doc["id"], doc["rule"], doc["reason"]) == (evidence, "backup", "firing")
        assert doc["subjects"] == [str(target)] and doc["error"] is None and doc["cut"] == []
        assert 0 < doc["bytes"] <= 64 * 1024 and 0 <= doc["duration_seconds"] < 2
        rows = doc["sections"]["newest matching files"]
        assert [row["path"] for row in rows] == [str(target)]
        assert rows[0]["bytes"] == 1
        assert doc["sections"]["pattern"] == str(target)

        text = ctl("--socket", str(sock), "show", str(evidence))
        assert text.returncode == 0, text.stderr
        assert text.stdout.startswith(f"evidence {evidence}: backup, firing, ")
        assert "== newest matching files" in text.stdout and str(target) in text.stdout

        def firing_row() -> dict[str, Any] | None:
            rows = [t for t in history(sock, "--rule", "backup", "--alerts")["transitions"] if t["kind"] == "firing"]
            return rows[0] if rows else None

        row = wait_until(firing_row, 10, "the firing transition in the alert history")
        assert row["detail"]["evidence"] == evidence
        assert page["starts_at"] == pytest.approx(row["ts"], abs=1e-6)
        assert daemon.returncode is None
