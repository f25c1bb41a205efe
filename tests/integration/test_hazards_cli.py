"""check-config, the real command, refuses the issue-20 configs with one line each and a failing exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import write_config

pytestmark = pytest.mark.integration

CASES: list[tuple[str, str, str]] = [
    (
        "shell with subject",
        """\
        rules:
          r:
            probe: host.disk
            above: 90
            actions:
              - exec: {argv: [/bin/sh, -c, "rm -rf /var/cache/{subject}"]}
        """,
        "rules.r.actions[0].exec: exec: a shell (sh -c) with {subject} in its script lets a subject name run commands",
    ),
    (
        "clean of the state_dir",
        """\
        rules:
          r:
            probe: host.disk
            above: 90
            actions:
              - files.clean: {path: {state}, older_than: 0s, allowed_roots: [{root}]}
        """,
        "rules.r.actions[0].files.clean.path: path {state} is state_dir {state}; watchdogd never cleans its own files",
    ),
    (
        "state_dir in /etc",
        "state_dir: /etc\n",
        "state_dir: /etc is /etc; use a directory of its own such as /var/lib/watchdogd",
    ),
    (
        "subject mismatch",
        """\
        rules:
          r:
            probe: host.cpu
            above: 90
            actions:
              - process.signal: {}
        """,
        "rules.r.actions[0].process.signal: action process.signal acts on single processes (pid); "
        "probe host.cpu measures the host (host)",
    ),
]


@pytest.mark.parametrize(("name", "body", "expected"), CASES, ids=[case[0] for case in CASES])
def test_check_config_refuses_with_one_line(tmp_path: Path, name: str, body: str, expected: str) -> None:
    state = tmp_path / "state"
    body = body.replace("{state}", str(state)).replace("{root}", str(tmp_path))
    config = write_config(tmp_path, body)
    result = subprocess.run(
        [sys.executable, "-m", "watchdogd.faces.cli", "check-config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode != 0, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{config}:"), result.stderr
    assert expected.replace("{state}", str(state)) in lines[0], lines[0]
    assert "Traceback" not in result.stderr
