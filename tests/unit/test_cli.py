"""watchdogctl: rendering, exit codes, socket discovery and the unreachable-daemon messages."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import WATCHDOGCTL, write_config
from tests.unit.test_exporter import NOW, rule, snapshot
from watchdogd.faces import cli, control
from watchdogd.faces.control import status_document
from watchdogd.model import Cardinality, RuleStatus, Unit


def doc(*rules: Any, **changes: Any) -> dict[str, Any]:
    document = status_document(snapshot(*rules, **changes), pid=42, version="0.1.0")
    result: dict[str, Any] = json.loads(json.dumps(document))
    return result


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="wdcli-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- exit codes


def test_status_exit_codes() -> None:
    ok = rule(status=RuleStatus.OK, firing={})
    assert cli.status_exit(doc(ok)) == cli.EXIT_OK
    assert cli.status_exit(doc(ok, rule("b"))) == cli.EXIT_FIRING
    assert cli.status_exit(doc(rule("b", status=RuleStatus.GAVE_UP, gave_up_at=NOW))) == cli.EXIT_GAVE_UP
    assert cli.status_exit(doc(rule("c", status=RuleStatus.DOWN, up=False, firing={}))) == cli.EXIT_FIRING
    # Paused but still firing: the condition is there, the exit code says so.
    assert cli.status_exit(doc(rule("d", status=RuleStatus.PAUSED, paused_until=math.inf))) == cli.EXIT_FIRING


@pytest.mark.parametrize(
    ("rules", "code", "text"),
    [
        ([rule(status=RuleStatus.OK, firing={})], 0, "WATCHDOGD OK - 1 rule: 1 ok |"),
        ([rule("pg-idle", severity="warning")], 1, "WATCHDOGD WARNING - 1 firing: pg-idle"),
        (
            [rule("disk-full"), rule("pg-idle", severity="warning")],
            2,
            "WATCHDOGD CRITICAL - 2 firing: disk-full, pg-idle",
        ),
        ([rule("x", severity="warning", gave_up_at=NOW, status=RuleStatus.GAVE_UP)], 2, "1 gave up: x"),
        (
            [rule("y", up=False, error="t", firing={}, status=RuleStatus.DOWN)],
            1,
            "WARNING - 1 down: y; 1 rule: 1 down |",
        ),
        ([rule("i", severity="info")], 0, "WATCHDOGD OK"),
    ],
)
def test_nagios_line(rules: list[Any], code: int, text: str) -> None:
    got_code, line = cli.nagios(doc(*rules))
    assert got_code == code and text in line, line
    assert " | rules=" in line and "\n" not in line


def test_a_stalled_rule_is_a_nagios_warning_and_a_status_line() -> None:
    stalled = doc(rule(status=RuleStatus.DOWN, firing={}), stalled_rules=("nfs-logs",), stuck_probes=3)
    code, line = cli.nagios(stalled)
    assert code == 1 and "1 stalled (probe stuck past its interval): nfs-logs" in line, line
    assert stalled["daemon"]["stuck_probe_threads"] == 3
    text = cli.render_status(stalled, cli.Palette(False))
    assert "1 stalled (probe stuck past its interval): nfs-logs (3 probe thread(s) stuck" in text
    healthy = doc(rule(status=RuleStatus.OK, firing={}))
    assert cli.nagios(healthy)[0] == 0 and "stalled" not in cli.render_status(healthy, cli.Palette(False))


def test_failed_reload_is_a_nagios_warning() -> None:
    code, line = cli.nagios(doc(rule(status=RuleStatus.OK, firing={}), last_reload_error="1 problem(s): x"))
    assert code == 1 and "last reload failed" in line


# --------------------------------------------------------------------------- rendering


def test_status_table() -> None:
    pg = rule("pg-idle", unit=Unit.SECONDS, cardinality=Cardinality.HIGH, above=3600.0,
              readings={f"pid {n}": 100.0 * n for n in range(1, 51)}, firing={"pid 50": 5000.0, "pid 49": 4900.0},
              last_actions=(), actions=("postgres.terminate",), cooldown_until=None, severity="warning")
    text = cli.render_status(doc(rule(), pg), cli.Palette(False))
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("RULE"))
    assert header.split() == ["RULE", "STATE", "BREACHING", "VALUE", "LAST", "ACTION", "COOLDOWN", "EVERY/TIMEOUT"]
    disk = next(line for line in lines if line.startswith("disk-full"))
    assert "firing" in disk and "93.0% > 90.0%" in disk and "files.clean ok 1m ago" in disk and "10m" in disk
    pg_line = next(line for line in lines if line.startswith("pg-idle"))
    assert "2 of 50" in pg_line and "1.4h > 1.0h" in pg_line and "pid" not in pg_line
    assert "\x1b[" not in text
    assert "budget 27/30 actions per 1h" in text


def test_status_table_notes_errors_and_colours_only_when_asked() -> None:
    down = rule("down", up=False, error="timed out after 10s", readings={}, firing={}, status=RuleStatus.DOWN)
    text = cli.render_status(doc(down, last_reload_error="1 problem(s): bad key"), cli.Palette(True))
    assert "down: probe down: timed out after 10s" in text
    assert "last reload FAILED" in text
    assert "\x1b[31m" in text


def test_colour_decision() -> None:
    tty = io.StringIO()
    tty.isatty = lambda: True  # type: ignore[method-assign]
    assert cli.use_colour("auto", tty, {}) is True
    assert cli.use_colour("auto", tty, {"NO_COLOR": "1"}) is False
    assert cli.use_colour("auto", tty, {"TERM": "dumb"}) is False
    assert cli.use_colour("auto", io.StringIO(), {}) is False
    assert cli.use_colour("always", io.StringIO(), {"NO_COLOR": "1"}) is True
    assert cli.use_colour("never", tty, {}) is False


def test_age() -> None:
    assert [cli.age(s) for s in (5, 59.6, 61, 3600, 3720, 86400 + 7200)] == ["5s", "60s", "1m", "1h", "1h2m", "1d2h"]


def test_history_table_and_report() -> None:
    entry = {"ts": NOW, "rule": "disk-full", "action": "files.clean", "subject": "/", "decision": "ran",
             "result": "failed", "error": "permission\ndenied", "value_before": 95.0, "value_after": None,
             "value_before_text": "95.0%", "value_after_text": None}
    text = cli.render_history([entry], cli.Palette(False))
    assert "ran failed" in text and "95.0%" in text and "permission denied" in text
    assert cli.render_history([], cli.Palette(False)) == "no matching history"
    report = {"rule": "x", "state": "firing", "error": None, "firing": {"count": 30, "subjects": ["a"] * 20},
              "pending": {"count": 0, "subjects": []}, "audit": [dict(entry, result="ok", error=None)]}
    assert "(+10)" in cli.render_report(report) and "files.clean /: ran ok" in cli.render_report(report)
    assert cli.report_exit(report) == cli.EXIT_FIRING


# --------------------------------------------------------------------------- socket discovery


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("interval: 5s\ncontrol_socket: /run/x.sock\n", "/run/x.sock"),
        ("control_socket: /run/x.sock   # comment\n", "/run/x.sock"),
        ("control_socket: \"/run/quoted dir/x.sock\"\n", "/run/quoted dir/x.sock"),
        ("control_socket: '/run/single.sock'\n", "/run/single.sock"),
        ("rules: {}\n", None),
        ("# control_socket: /commented.sock\n", None),
    ],
)
def test_socket_from_config(tmp_path: Path, text: str, expected: str | None) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert cli.socket_from_config(str(path)) == expected


def test_socket_from_unreadable_config_falls_back(tmp_path: Path) -> None:
    args = cli.build_parser().parse_args(["--config", str(tmp_path / "absent.yaml"), "status"])
    assert cli.socket_path(args) == cli.DEFAULT_SOCKET
    args = cli.build_parser().parse_args(["status", "--socket", "/x.sock"])  # options after the command too
    assert cli.socket_path(args) == "/x.sock"


def test_status_path_does_not_import_heavy_modules() -> None:
    code = (
        "import sys\n"
        "from watchdogd.faces import cli\n"
        "try:\n    cli.main(['--socket', '/nonexistent.sock', 'status'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('pydantic', 'apscheduler', 'psutil', 'yaml', 'prometheus_client', "
        "'watchdogd.faces.control', 'logging') "
        "if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False)
    assert done.stdout.strip() == "", done.stdout


def test_client_and_server_speak_the_same_protocol_version() -> None:
    assert cli.PROTOCOL == control.PROTOCOL


# --------------------------------------------------------------------------- unreachable daemon (real sockets)


def run_ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*WATCHDOGCTL, *args], capture_output=True, text=True, timeout=30, check=False)


def test_missing_socket(short_dir: Path) -> None:
    path = short_dir / "control.sock"
    done = run_ctl("--socket", str(path), "status")
    assert done.returncode == 3
    assert done.stderr.strip() == f"watchdogctl: control socket {path} does not exist: watchdogd is not running " \
        "(or uses another control_socket)"
    check = run_ctl("--socket", str(path), "check")
    assert check.returncode == 3 and check.stdout.startswith("WATCHDOGD UNKNOWN - control socket")
    as_json = run_ctl("--socket", str(path), "status", "--json")
    assert as_json.returncode == 3 and json.loads(as_json.stdout)["error"]["reason"] == "missing"
    for command in (["pause", "x"], ["resume", "x"], ["run", "x"], ["reload"], ["history"]):
        assert run_ctl("--socket", str(path), *command).returncode == 3


def test_socket_from_config_is_used(short_dir: Path) -> None:
    config = write_config(short_dir, "rules: {}\n")
    done = run_ctl("--config", str(config), "status")
    assert done.returncode == 3 and str(short_dir / "control.sock") in done.stderr


def test_refused_socket(short_dir: Path) -> None:
    path = short_dir / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    done = run_ctl("--socket", str(path), "status")
    assert done.returncode == 3
    assert f"connection to {path} refused" in done.stderr and "not running" in done.stderr


def test_forbidden_socket(short_dir: Path) -> None:
    """A real 0660 root socket, and watchdogctl's main() in a child that dropped to nobody."""
    path = short_dir / "control.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    path.chmod(0o660)
    listener.listen(1)
    try:
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 99
            try:
                sys.stderr = os.fdopen(writer, "w")
                os.setgid(65534)
                os.setgroups([])
                os.setuid(65534)
                code = cli.main(["--socket", str(path), "status"])
            finally:
                sys.stderr.flush()
                os._exit(code)
        os.close(writer)
        with os.fdopen(reader) as pipe:
            stderr = pipe.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 3
        assert f"permission denied on {path}" in stderr and "0660" in stderr
        # control_group unset: root's socket. Never "join group 'root'": run as root or set control_group.
        assert "group 'root'" not in stderr and "as root" in stderr and "set control_group" in stderr
    finally:
        listener.close()


# --------------------------------------------------------------------------- check-config


def test_check_config_ok_and_errors(tmp_path: Path) -> None:
    good = write_config(tmp_path, """
        rules:
          mem: {probe: host.memory, above: 90}
        """)
    done = run_ctl("check-config", str(good))
    assert done.returncode == 0
    assert done.stdout.splitlines() == [
        f"OK: {good}: 1 rule: 1 enabled, 0 disabled; 0 actions, 0 targets",
        "  mem: every 15s, timeout 10s (probe_timeout), on_down hold",
    ]
    bad = write_config(tmp_path, """
        rules:
          mem: {probe: host.memroy, above: 90}
          disk: {probe: host.disk, abvoe: 90}
        """, name="bad.yaml")
    done = run_ctl("check-config", str(bad))
    assert done.returncode == 1 and not done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) >= 2 and all(line.startswith(f"{bad}:") for line in lines)
    assert "did you mean 'host.memory'" in done.stderr


def test_check_config_reports_interface_problems(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"""
        control_group: no-such-group
        web_config_file: {tmp_path}/absent-web.yml
        textfile_dir: {tmp_path}/absent-dir
        rules: {{}}
        """)
    done = run_ctl("check-config", str(config))
    assert done.returncode == 1
    assert "control_group: no group named 'no-such-group'" in done.stderr
    assert "cannot read web config" in done.stderr
    assert "textfile_dir:" in done.stderr and "is not a directory" in done.stderr


def test_check_config_unreadable_file(tmp_path: Path) -> None:
    done = run_ctl("check-config", str(tmp_path / "absent.yaml"))
    assert done.returncode == 1 and "cannot read config" in done.stderr and "Traceback" not in done.stderr


def test_status_says_absent_for_a_service_this_host_does_not_have() -> None:
    absent = rule("pg-up", up=False, error='role "watchdogd" does not exist', firing={}, status=RuleStatus.ABSENT)
    text = cli.render_status(doc(absent), cli.Palette(False))
    row = next(line for line in text.splitlines() if line.startswith("pg-up "))
    assert "absent (never answered on this host)" in row
    assert 'pg-up: absent (never answered on this host): role "watchdogd" does not exist' in text.splitlines()
