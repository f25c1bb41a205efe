"""The control socket and watchdogctl against a real daemon process."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import WATCHDOGD, ctl, write_config
from tests.integration.interfaces.conftest import DaemonFactory
from tests.integration.interfaces.support import free_port, http_get, wait_until
from watchdogd.faces.cli import Refused, call

pytestmark = pytest.mark.integration

FIRING = textwrap.dedent("""
    interval: 1s
    rules:
      mem:
        probe: host.memory
        above: 0
        severity: critical
      calm:
        probe: host.memory
        above: 100
""")


def status(short_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return ctl("--socket", str(short_dir / "control.sock"), "status", *extra)


def status_json(short_dir: Path) -> dict[str, Any]:
    done = status(short_dir, "--json")
    assert done.returncode != 3, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def rule_doc(short_dir: Path, name: str) -> dict[str, Any]:
    return next(r for r in status_json(short_dir)["rules"] if r["name"] == name)


def test_status_exit_codes_follow_the_rules(start_daemon: DaemonFactory, short_dir: Path) -> None:
    daemon = start_daemon("""
        interval: 1s
        rules:
          calm: {probe: host.memory, above: 100}
        """)
    daemon.wait_for_log("started")
    wait_until(lambda: rule_doc(short_dir, "calm")["last_run"], 10, "the first run")
    done = status(short_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "calm" in done.stdout and "ok" in done.stdout and "\x1b[" not in done.stdout  # no tty: no colour
    check = ctl("--socket", str(short_dir / "control.sock"), "check")
    assert check.returncode == 0 and check.stdout.startswith("WATCHDOGD OK - 1 rule: 1 ok |")


def test_firing_rule_status_check_run_pause_resume(start_daemon: DaemonFactory, short_dir: Path) -> None:
    daemon = start_daemon(FIRING)
    daemon.wait_for_log("firing", rule="mem")
    sock = str(short_dir / "control.sock")
    done = status(short_dir)
    assert done.returncode == 1
    mem_line = next(line for line in done.stdout.splitlines() if line.startswith("mem "))
    assert "firing" in mem_line and "> 0.0%" in mem_line
    check = ctl("--socket", sock, "check")
    assert check.returncode == 2
    assert check.stdout.startswith("WATCHDOGD CRITICAL - 1 firing: mem; 2 rules: 1 firing, 1 ok |"), check.stdout

    run = ctl("--socket", sock, "run", "mem")
    assert run.returncode == 1 and run.stdout.startswith("mem: firing")
    run_json = json.loads(ctl("--socket", sock, "run", "calm", "--json").stdout)
    assert run_json["state"] == "ok"

    paused = ctl("--socket", sock, "pause", "mem", "--for", "30m")
    assert paused.returncode == 0 and "paused mem until" in paused.stdout
    doc = rule_doc(short_dir, "mem")
    assert doc["state"] == "paused" and isinstance(doc["paused_until"], float)
    assert ctl("--socket", sock, "resume", "mem").returncode == 0
    assert rule_doc(short_dir, "mem")["paused_until"] is None

    forever = ctl("--socket", sock, "pause", "mem")
    assert forever.returncode == 0 and "no expiry" in forever.stdout
    assert rule_doc(short_dir, "mem")["paused_until"] == "+Inf"

    unknown = ctl("--socket", sock, "pause", "nope")
    assert unknown.returncode == 4 and "unknown rule 'nope'" in unknown.stderr and "mem" in unknown.stderr
    bad_duration = ctl("--socket", sock, "pause", "mem", "--for", "soon")
    assert bad_duration.returncode == 2 and "--for" in bad_duration.stderr and "Traceback" not in bad_duration.stderr
    bad_since = ctl("--socket", sock, "history", "--since", "yesterday")
    assert bad_since.returncode == 2 and "--since" in bad_since.stderr
    pauses = [e for e in json.loads(ctl("--socket", sock, "history", "--rule", "mem", "--json").stdout)["entries"]
              if e["action"] == "operator.pause"]
    assert [e["detail"]["until"] for e in pauses][0] == "+Inf" and isinstance(pauses[1]["detail"]["until"], float)
    assert daemon.returncode is None


def test_status_views_against_a_real_daemon(start_daemon: DaemonFactory, short_dir: Path) -> None:
    """The table asks for the summary view; the old request and ``--json`` still get the whole document."""
    daemon = start_daemon(FIRING)
    daemon.wait_for_log("firing", rule="mem")
    sock = str(short_dir / "control.sock")
    full, summary = call(sock, "status"), call(sock, "status", {"view": "summary"})
    assert "view" not in full and summary["view"] == "summary"
    assert [(r["name"], r["state"]) for r in summary["rules"]] == [(r["name"], r["state"]) for r in full["rules"]]
    assert summary["summary"]["firing"] == full["summary"]["firing"] == ["mem"]
    assert "last_run" in full["rules"][0] and "last_run" not in summary["rules"][0]
    assert status_json(short_dir)["rules"][0].keys() == full["rules"][0].keys()
    with pytest.raises(Refused, match="^status: view must be one of full, summary, got 'tiny'$"):
        call(sock, "status", {"view": "tiny"})
    done = status(short_dir)
    assert done.returncode == 1 and done.stderr == ""
    assert next(line for line in done.stdout.splitlines() if line.startswith("mem ")).split()[1] == "firing"
    assert daemon.returncode is None


def test_gave_up_rule_exits_2_and_only_resume_reset_clears_it(start_daemon: DaemonFactory, short_dir: Path) -> None:
    daemon = start_daemon("""
        interval: 1s
        rules:
          flappy:
            probe: host.memory
            above: 0
            cooldown: 1s
            max_actions: {count: 1, per: 1h}
            actions:
              - exec: {argv: [/bin/true]}
        """)
    daemon.wait_for_log("rule gave up", timeout=30, rule="flappy")
    wait_until(lambda: status(short_dir).returncode == 2, 10, "status exit 2")
    done = status(short_dir)
    assert "gave_up" in done.stdout and "watchdogctl resume flappy --reset" in done.stdout
    sock = str(short_dir / "control.sock")
    check = ctl("--socket", sock, "check")
    assert check.returncode == 2 and "1 gave up: flappy" in check.stdout
    plain = ctl("--socket", sock, "resume", "flappy")
    assert plain.returncode == 0 and "still GIVEN UP" in plain.stdout and "--reset" in plain.stdout
    assert rule_doc(short_dir, "flappy")["gave_up_at"] is not None  # a resume alone never re-arms it
    reset = ctl("--socket", sock, "resume", "flappy", "--reset")
    assert reset.returncode == 0 and "give-up lifted" in reset.stdout, reset.stdout + reset.stderr
    assert rule_doc(short_dir, "flappy")["gave_up_at"] is None

    history = ctl("--socket", sock, "history", "--rule", "flappy", "--since", "1h", "--json")
    entries = json.loads(history.stdout)["entries"]
    assert history.returncode == 0 and any(e["decision"] == "ran" and e["result"] == "ok" for e in entries)
    assert all(e["rule"] == "flappy" for e in entries)
    # Operator actions are audit rows too, naming who asked (SO_PEERCRED).
    resumes = [e for e in entries if e["action"] == "operator.resume"]
    assert [e["detail"]["reset"] for e in resumes] == [True, False]  # newest first
    assert all(e["decision"] == "operator" and e["subject"] == "-" for e in resumes)
    assert all(e["detail"]["by"]["uid"] == os.getuid() for e in resumes)
    assert resumes[0]["detail"]["gave_up_lifted"] is True and resumes[1]["detail"]["gave_up_at"] is not None
    table = ctl("--socket", sock, "history", "--rule", "flappy")
    reset_row, plain_row = (line for line in table.stdout.splitlines() if "operator.resume" in line)
    assert f"(uid {os.getuid()})" in plain_row and "still gave up" in plain_row, table.stdout
    assert "--reset" in reset_row and "lifted the give-up" in reset_row, table.stdout
    table = ctl("--socket", sock, "history", "--limit", "1")
    assert table.returncode == 0 and len(table.stdout.strip().splitlines()) == 2  # header + 1 row


def test_reload_through_the_socket(start_daemon: DaemonFactory, short_dir: Path) -> None:
    daemon = start_daemon(FIRING)
    daemon.wait_for_log("started")
    sock = str(short_dir / "control.sock")
    done = ctl("--socket", sock, "reload")
    assert done.returncode == 0 and done.stdout.startswith("reloaded: 2 rules")
    config: Path = daemon.config  # type: ignore[attr-defined]
    config.write_text(config.read_text().replace("above: 100", "above: lots"))
    failed = ctl("--socket", sock, "reload")
    assert failed.returncode == 1
    assert "reload failed" in failed.stderr and "rules.calm.above" in failed.stderr
    doc = status_json(short_dir)
    assert "rules.calm.above" in doc["daemon"]["last_reload_error"]
    assert {r["name"] for r in doc["rules"]} == {"mem", "calm"}  # the old config keeps running


def test_hostile_clients_do_not_hurt_the_daemon(start_daemon: DaemonFactory, short_dir: Path) -> None:
    daemon = start_daemon(FIRING)
    daemon.wait_for_log("firing", rule="mem")  # status exits 1 from here on
    path = str(short_dir / "control.sock")

    def exchange(payload: bytes, half_close: bool = True) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(15)
            sock.connect(path)
            try:
                sock.sendall(payload)
                if half_close:
                    sock.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        reply: dict[str, Any] = json.loads(data)
        return reply

    assert exchange(b"GET / HTTP/1.1\r\n\r\n")["error"]["code"] == "bad_request"
    assert exchange(os.urandom(200_000))["error"]["code"] in ("too_large", "bad_request")
    assert exchange(b'{"v": 1, "cmd": "status"')["error"]["code"] == "bad_request"  # half-closed, truncated
    assert exchange(b'{"v": 1, "cmd": "status"}')["ok"] is True  # half-closed, complete
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:  # connects and says nothing
        idle.connect(path)
        assert status(short_dir).returncode == 1  # others are still served meanwhile
    assert daemon.returncode is None
    assert status(short_dir).returncode == 1


def test_socket_mode_and_group(start_daemon: DaemonFactory, short_dir: Path) -> None:
    daemon = start_daemon("control_group: daemon\n" + FIRING)
    daemon.wait_for_log("started")
    st = os.stat(short_dir / "control.sock")
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == 1
    assert daemon.stop() == 0
    assert not (short_dir / "control.sock").exists()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("control_group: no-such-group\n", "control_group: no group named 'no-such-group'"),
        ("web_config_file: /nonexistent/web.yml\n", "cannot read web config"),
        ("textfile_dir: /nonexistent/dir\n", "textfile_dir: /nonexistent/dir is not a directory"),
    ],
)
def test_bad_interface_settings_stop_the_start_with_one_line(short_dir: Path, body: str, expected: str) -> None:
    config = write_config(short_dir, body + "rules: {}\n")
    done = subprocess.run(
        [*WATCHDOGD, "--config", str(config)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if " error " in line]
    assert len(errors) == 1 and expected in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (short_dir / "control.sock").exists()


def test_taken_port_stops_the_start_before_any_rule_runs(short_dir: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", free_port()))
    holder.listen(1)
    try:
        port = holder.getsockname()[1]
        config = write_config(short_dir, f"listen: 127.0.0.1:{port}\n" + FIRING)
        done = subprocess.run(
            [*WATCHDOGD, "--config", str(config)], capture_output=True, text=True, timeout=30, check=False
        )
    finally:
        holder.close()
    assert done.returncode == 2
    assert f"listen: cannot bind 127.0.0.1:{port}" in done.stderr and "firing" not in done.stderr


def test_reload_moves_the_listen_address_and_the_socket(start_daemon: DaemonFactory, short_dir: Path) -> None:
    old_port, new_port = free_port(), free_port()
    daemon = start_daemon(f"listen: 127.0.0.1:{old_port}\n" + FIRING)
    daemon.wait_for_log("started")
    assert http_get(f"http://127.0.0.1:{old_port}/healthz")[0] in (200, 503)
    config: Path = daemon.config  # type: ignore[attr-defined]
    new_socket = short_dir / "moved.sock"
    config.write_text(
        config.read_text()
        .replace(f"listen: 127.0.0.1:{old_port}", f"listen: 127.0.0.1:{new_port}")
        .replace(f"control_socket: {short_dir / 'control.sock'}", f"control_socket: {new_socket}")
    )
    done = ctl("--socket", str(short_dir / "control.sock"), "reload")
    assert done.returncode == 0, done.stderr
    # The new socket answers; `mem` fires once it has run (its first run may still be due: nothing above
    # waited for it, and a reload runs every rule again within its jitter).
    wait_until(lambda: ctl("--socket", str(new_socket), "status").returncode == 1, 20, "mem firing at the new socket")
    assert not (short_dir / "control.sock").exists()
    assert http_get(f"http://127.0.0.1:{new_port}/metrics")[0] == 200
    assert http_get(f"http://127.0.0.1:{old_port}/metrics")[0] == 0  # closed
