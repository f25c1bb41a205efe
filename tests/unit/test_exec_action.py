"""The exec action with real processes: argv safety, exit status, timeouts, output limits, dry-run."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from watchdogd.families.exec.actions import ACTIONS, ExecAction, ExecParams, substitute
from watchdogd.model import Reading

PY = sys.executable
SPEC = ACTIONS["exec"]


def action(**params: Any) -> ExecAction:
    return SPEC.factory(SPEC.params(**params), None, time.time)  # type: ignore[return-value]


def echo_argv() -> list[str]:
    """A command that prints its arguments as JSON, so tests see exactly what argv it got."""
    return [PY, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))"]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_table() -> None:
    assert SPEC.params is ExecParams
    assert SPEC.target_kind is None


def test_placeholder_stays_inside_one_argument() -> None:
    nasty = "my app; rm -rf / $(id)"
    result = action(argv=[*echo_argv(), "--name={subject}", "{value}", "x{{y}}"]).run(
        [Reading(nasty, 93.5)], dry_run=False
    )
    assert result.ok, result
    [item] = result.items
    assert item.subject == nasty
    assert json.loads(item.detail) == [f"--name={nasty}", "93.5", "x{y}"]
    assert item.info["exit_status"] == 0
    assert item.info["duration"] >= 0


def test_per_subject_runs_once_each() -> None:
    subjects = [Reading("a", 1.0), Reading("b b", 2.0)]
    result = action(argv=[*echo_argv(), "{subject}", "{value}", "{subjects}"]).run(subjects, dry_run=False)
    assert [json.loads(i.detail) for i in result.items] == [["a", "1", "a,b b"], ["b b", "2", "a,b b"]]


def test_once_per_run_with_subjects() -> None:
    subjects = [Reading("a", 1.0), Reading("b", 2.0), Reading("c", 3.0)]
    result = action(argv=[*echo_argv(), "--only={subjects}"], per_subject=False).run(subjects, dry_run=False)
    [item] = result.items
    assert json.loads(item.detail) == ["--only=a,b,c"]


def test_minimal_environment_and_cwd(tmp_path: Path) -> None:
    script = "import json, os; print(json.dumps([dict(os.environ), os.getcwd()]))"
    result = action(argv=[PY, "-c", script], env={"APP": "x"}, cwd=str(tmp_path)).run(
        [Reading("s", 0.0)], dry_run=False
    )
    env, cwd = json.loads(result.items[0].detail)
    env.pop("LC_CTYPE", None)  # Python may set it itself for C.UTF-8
    assert env == {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "APP": "x"}
    assert cwd == str(tmp_path)


def test_nonzero_exit_fails_the_item() -> None:
    result = action(argv=[PY, "-c", "import sys; print('boom'); sys.exit(3)"]).run(
        [Reading("s", 0.0)], dry_run=False
    )
    assert not result.ok
    assert result.error == "1 of 1 commands failed"
    [item] = result.items
    assert not item.ok
    assert item.info["exit_status"] == 3
    assert "boom" in item.detail


def test_stderr_is_captured_with_stdout() -> None:
    script = "import sys; print('out', flush=True); print('err', file=sys.stderr)"
    result = action(argv=[PY, "-c", script]).run([Reading("s", 0.0)], dry_run=False)
    assert result.items[0].detail.split() == ["out", "err"]


def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    # The command starts a grandchild that would outlive it, then blocks.
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(child.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    result = action(argv=[PY, "-c", script], timeout="1s").run([Reading("s", 0.0)], dry_run=False)
    assert time.monotonic() - started < 10
    [item] = result.items
    assert not item.ok
    assert item.detail.startswith("timed out after 1s")
    assert "started" in item.detail
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while pid_alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(grandchild)


def test_timeout_when_a_grandchild_holds_the_pipe() -> None:
    # The command exits at once but leaves a background child holding stdout open.
    script = "import subprocess; subprocess.Popen(['sleep', '60']); print('bye')"
    started = time.monotonic()
    result = action(argv=[PY, "-c", script], timeout="1s").run([Reading("s", 0.0)], dry_run=False)
    assert time.monotonic() - started < 10
    assert result.items[0].detail.startswith("timed out")


def test_action_timeout_bounds_the_whole_run() -> None:
    subjects = [Reading(str(i), 0.0) for i in range(3)]
    # The first command takes ~1.2 s of the 2 s, the second runs out of time, the third never starts.
    sleeper = action(argv=[PY, "-c", "import time; time.sleep(1.2)"], timeout="2s")
    result = sleeper.run(subjects, dry_run=False)
    assert [i.ok for i in result.items] == [True, False, False]
    assert result.items[1].detail.startswith("timed out")
    assert result.items[2].detail.startswith("not run")


def test_output_truncated_and_marked() -> None:
    result = action(argv=[PY, "-c", "print('x' * 100000)"], max_output="1KiB").run(
        [Reading("s", 0.0)], dry_run=False
    )
    [item] = result.items
    assert item.ok
    assert item.detail.startswith("x" * 1024 + "\n[output truncated: ")
    assert "x" * 1025 not in item.detail


def test_program_that_does_not_exist(tmp_path: Path) -> None:
    result = action(argv=[str(tmp_path / "missing")]).run([Reading("s", 0.0)], dry_run=False)
    assert not result.ok
    assert result.items[0].detail.startswith("cannot run:")


def test_dry_run_does_not_execute(tmp_path: Path) -> None:
    marker = tmp_path / "created"
    result = action(argv=["/usr/bin/touch", str(marker), "--reference={subject}"]).run(
        [Reading("app", 1.0)], dry_run=True
    )
    assert result.ok
    assert not marker.exists()
    [item] = result.items
    assert item.detail == f"would run: ['/usr/bin/touch', '{marker}', '--reference=app']"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["touch", "/tmp/x"], "argv[0] must be an absolute path"),
        (["./script.sh"], "argv[0] must be an absolute path"),
        (["/bin/echo", "{pid}"], "unknown placeholder {pid}"),
        (["/bin/echo", "{0.__class__}"], None),  # not a placeholder at all: stays literal
        (["/bin/{subject}"], "argv[0] must not contain placeholders"),
        ([], "at least 1"),
    ],
)
def test_argv_validation(argv: list[str], message: str | None) -> None:
    if message is None:
        assert SPEC.params(argv=argv).argv == argv  # type: ignore[attr-defined]
        return
    with pytest.raises(ValidationError, match=re.escape(message)):
        SPEC.params(argv=argv)


def test_unknown_placeholder_message_lists_allowed() -> None:
    with pytest.raises(ValidationError) as info:
        SPEC.params(argv=["/bin/echo", "--x={subjet}"])
    text = str(info.value)
    assert "{subjet}" in text and "{subject}" in text and "{subjects}" in text and "{value}" in text


def test_per_subject_placeholders_need_per_subject() -> None:
    with pytest.raises(ValidationError, match="per_subject"):
        SPEC.params(argv=["/bin/echo", "{subject}"], per_subject=False)


def test_other_params_validation() -> None:
    with pytest.raises(ValidationError, match="cwd"):
        SPEC.params(argv=["/bin/true"], cwd="relative")
    with pytest.raises(ValidationError):
        SPEC.params(argv=["/bin/true"], env={"A=B": "x"})
    with pytest.raises(ValidationError):
        SPEC.params(argv=["/bin/true"], shell=True)
    assert SPEC.params(argv=["/bin/true"], max_output="2KiB").max_output == 2048  # type: ignore[attr-defined]


def test_substitute_braces() -> None:
    values = {"subject": "s"}
    assert substitute("{{subject}}", values) == "{subject}"
    assert substitute("{{{subject}}}", values) == "{s}"
    assert substitute("awk {print $1}", values) == "awk {print $1}"
