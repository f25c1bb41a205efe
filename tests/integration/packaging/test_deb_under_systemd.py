"""The .deb installed for real, in a Debian 12 container with systemd as PID 1.

One container for the whole module, walked through a package's life in
order: install (enabled, started, READY with a STATUS line), the unit's
hardening (systemd-analyze security/verify, the capability set the kernel
really applied), watchdogctl and /metrics, a reload that takes effect, the
actions doing their job inside the sandbox, log priorities that journald files
(text and JSON), a broken reload that keeps the old policy, systemd's watchdog
restarting a frozen daemon, an upgrade that keeps the edited conffile, and
remove/purge. Each test leaves the service as the next one expects it, and the
container is removed whatever happens.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.packaging.support import Packages, PackagingTestError, wait_until
from tests.support.systemd_container import SystemdContainer, SystemdContainerError, ensure_image
from watchdogd.launch import SHIPPED_PYCACHE, SHIPPED_PYTHON, interpreter

# Builds (two packages, once per session) and a booted container take longer than the default timeout.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

UNIT = "watchdogd.service"
CONFIG = "/etc/watchdogd/watchdogd.yaml"
PKG_DIR = "/root/pkgs"  # not /tmp: that is a tmpfs in the container, which `docker cp` cannot reach
MAX_EXPOSURE = 4.5
OPERATOR = "alice"  # a member of group watchdogd, not root

# The unit's CapabilityBoundingSet, as bits of /proc/<pid>/status CapBnd (linux/capability.h).
CAPS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3, "CAP_KILL": 5,
        "CAP_SYS_PTRACE": 19}
EXPECTED_CAPBND = sum(1 << bit for bit in CAPS.values())


# --- the container ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def box(packages: Packages) -> Iterator[SystemdContainer]:
    try:
        container = SystemdContainer(ensure_image())
        container.start()
    except SystemdContainerError as exc:
        pytest.fail(f"cannot start the systemd container: {exc}")
    try:
        container.wait_booted()
        for deb in (packages.deb, packages.next_deb):
            container.copy_in(deb, f"{PKG_DIR}/{deb.name}")
        yield container
    finally:
        container.stop()


def inside(
    box: SystemdContainer, *argv: str, check: bool = True, timeout: float = 60.0, user: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run argv in the container (no shell)."""
    return box.exec(list(argv), check=check, timeout=timeout, user=user)


def show(box: SystemdContainer, *props: str, unit: str = UNIT) -> dict[str, str]:
    out = inside(box, "systemctl", "show", "--property", ",".join(props), unit).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def main_pid(box: SystemdContainer) -> int:
    return int(show(box, "MainPID")["MainPID"])


def apt_install(box: SystemdContainer, deb: Path) -> str:
    proc = box.exec(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "Dpkg::Options::=--force-confold",
         f"{PKG_DIR}/{deb.name}"],
        env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=300,
    )
    return proc.stdout + proc.stderr


def running_and_ready(box: SystemdContainer, *, not_pid: int = 0) -> dict[str, str] | None:
    """Type=notify: ActiveState=active only after READY=1; StatusText is the daemon's STATUS=.

    ``not_pid``: only once the main process is another one (a restart happened).
    """
    state = show(box, "ActiveState", "SubState", "MainPID", "StatusText")
    ok = (state["ActiveState"] == "active" and state["SubState"] == "running" and state["StatusText"]
          and int(state["MainPID"]) not in (0, not_pid))
    return state if ok else None


def reload_failed(box: SystemdContainer) -> dict[str, str] | None:
    state = show(box, "StatusText", "ActiveState")
    return state if state["StatusText"].startswith("reload failed") else None


def status_json(box: SystemdContainer, user: str | None = None) -> dict[str, Any]:
    proc = inside(box, "watchdogctl", "status", "--json", check=False, user=user)
    if proc.returncode not in (0, 1):
        raise PackagingTestError(f"watchdogctl status --json: exit {proc.returncode}: {proc.stderr}")
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def rule_names(doc: dict[str, Any]) -> set[str]:
    return {rule["name"] for rule in doc["rules"]}


def http_get(box: SystemdContainer, path: str) -> tuple[int, str]:
    """GET on the daemon's listen address with the container's own python3 (it has no curl)."""
    script = (
        "import sys, urllib.request\n"
        "with urllib.request.urlopen('http://127.0.0.1:19469' + sys.argv[1], timeout=10) as r:\n"
        "    sys.stdout.write(str(r.status) + '\\n' + r.read().decode())\n"
    )
    out = inside(box, "/usr/bin/python3", "-c", script, path).stdout
    status, _, body = out.partition("\n")
    return int(status), body


def proc_status(box: SystemdContainer, pid: int) -> dict[str, str]:
    text = inside(box, "cat", f"/proc/{pid}/status").stdout
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def journal(box: SystemdContainer) -> str:
    return inside(box, "journalctl", "--no-pager", "-o", "cat", "-u", UNIT).stdout


# The daemon's level word -> the PRIORITY= journald must file the line under (sd-daemon(3) prefixes).
PRIORITY_OF_LEVEL = {"debug": "7", "info": "6", "warning": "4", "error": "3", "critical": "2"}
TEXT_LINE = re.compile(r"^\S+Z (debug|info|warning|error|critical) ")
PREFIX_LEFT = re.compile(r"^<\d>")


def _level_written(message: str) -> str | None:
    """The level the daemon wrote in a text or JSON line; None for anything else (systemd's own lines)."""
    if message.startswith("{"):
        try:
            body = json.loads(message)
        except ValueError:
            return None
        return body.get("level") if isinstance(body, dict) else None
    found = TEXT_LINE.match(message)
    return found.group(1) if found else None


def daemon_lines(box: SystemdContainer, *args: str) -> list[tuple[str, str, str]]:
    """(level written, PRIORITY filed, MESSAGE) of each line the daemon wrote to stderr, oldest first."""
    out = inside(box, "journalctl", "--no-pager", "-o", "json", "-u", UNIT, *args).stdout
    lines = []
    for raw in out.splitlines():
        entry = json.loads(raw)
        message = entry.get("MESSAGE")
        if entry.get("_TRANSPORT") != "stdout" or not isinstance(message, str):
            continue
        assert not PREFIX_LEFT.match(message), f"journald kept the priority prefix: {message}"
        level = _level_written(message)
        if level is not None:
            lines.append((level, str(entry.get("PRIORITY")), message))
    return lines


def journal_cursor(box: SystemdContainer) -> str:
    """Where the unit's journal ends now: later queries pass --after-cursor to see only what follows."""
    last = inside(box, "journalctl", "--no-pager", "-o", "json", "-n", "1", "-u", UNIT).stdout
    return str(json.loads(last)["__CURSOR"])


def json_line(box: SystemdContainer, cursor: str, msg: str) -> tuple[str, str, str] | None:
    """The first JSON line with this ``msg`` the daemon logged after ``cursor``."""
    for line in daemon_lines(box, f"--after-cursor={cursor}"):
        if line[2].startswith("{") and json.loads(line[2]).get("msg") == msg:
            return line
    return None


# --- the policy the tests install -------------------------------------------------------------


def edited_policy(shipped: str, victim_pid: int) -> str:
    """The shipped policy plus what an operator would add: a control group, no grace, one more rule, and the
    start-up pages handed back a second after a reload rather than a minute.

    The extra rule fires on an old file and runs actions that each need
    something from the sandbox: a unit restart (uid 0 over systemd's socket),
    a signal to another user's process (CAP_KILL), deleting in another user's
    0700 directory under /var/log (CAP_DAC_OVERRIDE, ReadWritePaths), and in
    /home (ProtectHome=read-only: must fail with a clear error).
    """
    policy = yaml.safe_load(shipped)
    policy["control_group"] = "watchdogd"
    policy["grace"] = "0s"
    policy["release_start_pages_after"] = "1s"
    policy["rules"]["sandbox-check"] = {
        "probe": "host.file_age",
        "params": {"path": "/srv/trigger/*"},
        "above": "1d",
        "cooldown": "1s",
        "actions": [
            {"exec": {"argv": ["/usr/bin/systemctl", "restart", "dummy.service"], "per_subject": False}},
            {"exec": {"argv": ["/bin/kill", "-TERM", str(victim_pid)], "per_subject": False}},
            {"files.clean": {"path": "/var/log/sbx", "older_than": "30d", "max_files": 10}},
            {"files.clean": {"path": "/home/alice/junk", "older_than": "30d", "max_files": 10}},
        ],
    }
    return "# edited by the operator\n" + yaml.safe_dump(policy, sort_keys=False)


# --- the life of the package, in order ----------------------------------------------------------


def test_install_enables_and_starts_a_ready_service(box: SystemdContainer, packages: Packages) -> None:
    output = apt_install(box, packages.deb)
    assert f"Setting up watchdogd ({packages.version})" in output, output
    state = wait_until(lambda: running_and_ready(box), 30, "watchdogd active and READY")
    assert inside(box, "systemctl", "is-enabled", UNIT).stdout.strip() == "enabled"
    assert re.match(r"\d+ rules?: \d+ \w+", state["StatusText"]), state
    status = inside(box, "systemctl", "status", "--no-pager", UNIT, check=False).stdout
    assert f'Status: "{state["StatusText"]}"' in status, status
    assert "started version=" in journal(box)
    assert inside(box, "getent", "group", "watchdogd").returncode == 0
    assert inside(box, "stat", "-c", "%a %U:%G", CONFIG).stdout.strip() == "640 root:root"
    assert inside(box, "stat", "-c", "%a %U:%G", "/var/lib/watchdogd").stdout.strip() == "750 root:root"
    assert inside(box, "watchdogd", "--version").stdout.strip() == f"watchdogd {packages.version}"


def test_the_daemon_runs_optimized_from_the_cache_the_unit_lets_it_write(box: SystemdContainer) -> None:
    """-OO under ProtectSystem=strict: its bytecode can only go to CacheDirectory, and the first start put it there."""
    cmdline = inside(box, "cat", f"/proc/{main_pid(box)}/cmdline").stdout.split("\0")
    assert cmdline[:cmdline.index("-m")] == interpreter(SHIPPED_PYTHON, SHIPPED_PYCACHE), cmdline
    site = "/var/cache/watchdogd/pycache/opt/watchdogd/lib/python3.11/site-packages"
    assert inside(box, "test", "-s", f"{site}/watchdogd/daemon.cpython-311.opt-2.pyc", check=False).returncode == 0
    written = inside(box, "find", "/opt/watchdogd", "-name", "*.opt-2.pyc").stdout
    assert not written.strip(), f"the daemon wrote bytecode into the read-only tree: {written[:500]}"


def test_unit_is_hardened(box: SystemdContainer) -> None:
    security = inside(box, "systemd-analyze", "security", "--no-pager", UNIT).stdout
    found = re.search(r"Overall exposure level for watchdogd\.service: (\d+\.\d+)", security)
    assert found, security[-2000:]
    assert float(found.group(1)) <= MAX_EXPOSURE, security
    verify = inside(box, "systemd-analyze", "verify", "--man=no", UNIT, check=False)
    assert verify.returncode == 0 and not (verify.stdout + verify.stderr).strip(), verify.stdout + verify.stderr

    # What the kernel really applied to the running daemon: the unit's set, cut to what the
    # container itself has (Docker leaves out CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE).
    fields = proc_status(box, main_pid(box))
    expected = EXPECTED_CAPBND & int(proc_status(box, 1)["CapBnd"], 16)
    assert int(fields["CapBnd"], 16) == expected, f"CapBnd {fields['CapBnd']} != {expected:016x}"
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"
    assert fields["Uid"].split()[0] == "0"


def test_watchdogctl_and_metrics_answer(box: SystemdContainer) -> None:
    proc = inside(box, "watchdogctl", "status", check=False)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    assert "disk-full" in proc.stdout
    doc = status_json(box)
    assert doc["daemon"]["pid"] == main_pid(box)
    status, body = http_get(box, "/metrics")
    assert status == 200
    assert re.search(r"^watchdogd_build_info\{.*version=", body, re.M), body[:2000]
    assert "watchdogd_rule_firing" in body
    assert http_get(box, "/healthz")[0] == 200


@pytest.fixture(scope="module")
def fixtures_for_actions(box: SystemdContainer) -> dict[str, Any]:
    """A unit to restart, another user's process to signal, old files to clean, a trigger file."""
    box.write_file("/etc/systemd/system/dummy.service", "[Service]\nExecStart=/bin/sleep infinity\n")
    inside(box, "systemctl", "daemon-reload")
    inside(box, "systemctl", "start", "dummy.service")
    inside(box, "systemd-run", "--unit=victim", "--uid=nobody", "/bin/sleep", "10000")
    victim = wait_until(lambda: int(show(box, "MainPID", unit="victim.service")["MainPID"]), 10, "the victim process")
    inside(box, "useradd", "--create-home", "--groups", "watchdogd", OPERATOR)
    for directory in ("/srv/trigger", "/var/log/sbx", "/home/alice/junk"):
        inside(box, "mkdir", "-p", directory)
    for path in ("/srv/trigger/old", "/var/log/sbx/old.log", "/home/alice/junk/old.tmp"):
        inside(box, "touch", "-d", "40 days ago", path)
    inside(box, "chown", "-R", "nobody:nogroup", "/var/log/sbx")
    inside(box, "chmod", "0700", "/var/log/sbx")
    return {"victim": victim, "dummy": show(box, "InvocationID", unit="dummy.service")["InvocationID"]}


def test_reload_applies_an_edited_config(box: SystemdContainer, fixtures_for_actions: dict[str, Any]) -> None:
    pid = main_pid(box)
    policy = edited_policy(inside(box, "cat", CONFIG).stdout, fixtures_for_actions["victim"])
    box.write_file(CONFIG, policy, mode=0o640)
    assert inside(box, "watchdogctl", "check-config", CONFIG).returncode == 0
    inside(box, "systemctl", "reload", UNIT)
    wait_until(lambda: "sandbox-check" in rule_names(status_json(box)), 30, "the reloaded policy's new rule")
    assert main_pid(box) == pid, "a reload must not restart the daemon"
    assert inside(box, "stat", "-c", "%G %a", "/run/watchdogd/control.sock").stdout.split() == ["watchdogd", "660"]
    # control_group: an operator in group watchdogd uses watchdogctl without root.
    assert "sandbox-check" in rule_names(status_json(box, user=OPERATOR))
    assert inside(box, "watchdogctl", "status", user="nobody", check=False).returncode == 3


def test_start_pages_go_back_inside_the_sandbox(box: SystemdContainer) -> None:
    """madvise is in @system-service, and ProtectSystem=strict's read-only /usr does not stop the kernel
    reclaiming the pages of its libraries: every mapping is taken, none refused."""
    def handed_back() -> str | None:
        return next((line for line in journal(box).splitlines() if "handed back start-up pages" in line), None)

    wait_until(lambda: handed_back() is not None, 30, "the start-up pages handed back after the reload")
    fields = dict(part.split("=", 1) for part in str(handed_back()).split() if "=" in part)
    assert fields["refused"] == "0" and int(fields["mappings"]) > 50, fields
    assert float(fields["file_mib_after"]) < float(fields["file_mib_before"]), fields


def test_actions_work_inside_the_sandbox(box: SystemdContainer, fixtures_for_actions: dict[str, Any]) -> None:
    proc = inside(box, "watchdogctl", "run", "sandbox-check", "--json", check=False, timeout=120)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    assert show(box, "InvocationID", unit="dummy.service")["InvocationID"] != fixtures_for_actions["dummy"], \
        "systemctl restart from the sandbox did not restart the unit"
    wait_until(lambda: show(box, "ActiveState", unit="victim.service")["ActiveState"] != "active", 10,
               "another user's process to be signalled (CAP_KILL)")
    assert inside(box, "test", "-e", "/var/log/sbx/old.log", check=False).returncode == 1, \
        "files.clean could not delete in another user's 0700 directory under /var/log"
    assert inside(box, "test", "-e", "/home/alice/junk/old.tmp", check=False).returncode == 0
    history = json.loads(inside(box, "watchdogctl", "history", "--rule", "sandbox-check", "--json").stdout)
    entries = history if isinstance(history, list) else history.get("entries", [])
    home = [e for e in entries if "/home/alice/junk" in json.dumps(e.get("detail", {}))]
    assert home and "Read-only file system" in json.dumps(home[0]), \
        "a path outside ReadWritePaths must fail with a clear reason in the audit log"


def test_log_priorities_reach_the_journal(box: SystemdContainer) -> None:
    """`journalctl -p warning` finds the warnings (issue 19): sandbox-check's firing, not the info lines."""
    lines = daemon_lines(box)
    assert {level for level, _, _ in lines} >= {"info", "warning"}, lines
    wrong = [line for line in lines if line[1] != PRIORITY_OF_LEVEL[line[0]]]
    assert not wrong, f"filed under the wrong priority: {wrong}"
    warnings = inside(box, "journalctl", "--no-pager", "-o", "cat", "-p", "warning", "-u", UNIT).stdout
    assert re.search(r"Z warning firing rule=sandbox-check subject=/srv/trigger/\* ", warnings), warnings
    assert "started version=" in journal(box)
    assert "started version=" not in warnings and not re.search(r"Z info ", warnings), warnings


def test_json_log_lines_keep_their_priority_and_stay_json(box: SystemdContainer) -> None:
    """SyslogLevelPrefix= strips `<N>` from a JSON line and leaves the object whole."""
    good = inside(box, "cat", CONFIG).stdout
    policy = yaml.safe_load(good)
    policy["log_format"] = "json"
    cursor = journal_cursor(box)
    box.write_file(CONFIG, yaml.safe_dump(policy, sort_keys=False), mode=0o640)
    try:
        inside(box, "systemctl", "reload", UNIT)
        reloaded = wait_until(lambda: json_line(box, cursor, "reloaded"), 30, "the reload logged in JSON")
        # Not sandbox-check: a pause waits for the rule's lock, which its actions and settle hold.
        inside(box, "watchdogctl", "pause", "disk-full", "--for", "1m")
        inside(box, "watchdogctl", "resume", "disk-full")
        paused = wait_until(lambda: json_line(box, cursor, "rule paused"), 30, "the pause logged in JSON")
        assert reloaded[1] == "6" and json.loads(reloaded[2])["level"] == "info", reloaded
        assert paused[1] == "4" and json.loads(paused[2])["rule"] == "disk-full", paused
        # The whole journal, no cursor: journalctl 252's --after-cursor skips the first match when the
        # cursor's own entry (an info line) does not pass -p, and the pause line went missing that way.
        warnings = daemon_lines(box, "-p", "warning")
        assert paused in warnings and reloaded not in warnings, warnings
        assert all(level != "info" for level, _, _ in warnings), warnings
    finally:
        cursor = journal_cursor(box)
        box.write_file(CONFIG, good, mode=0o640)
        inside(box, "systemctl", "reload", UNIT)
    back = f"--after-cursor={cursor}"
    wait_until(lambda: any(re.search(r"Z info reloaded ", m) for _, _, m in daemon_lines(box, back)), 30,
               "the reload back to text logs")


def test_broken_config_reload_keeps_the_running_policy(box: SystemdContainer) -> None:
    good = inside(box, "cat", CONFIG).stdout
    pid = main_pid(box)
    box.write_file(CONFIG, good + "\ninterval: [not, a, duration\n", mode=0o640)
    try:
        inside(box, "systemctl", "reload", UNIT)
        state = wait_until(lambda: reload_failed(box), 30, "STATUS= to report the failed reload")
        assert state["ActiveState"] == "active"
        assert main_pid(box) == pid
        assert "sandbox-check" in rule_names(status_json(box)), "the previous policy must keep running"
        assert "reload failed, keeping the running config" in journal(box)
        ctl = inside(box, "watchdogctl", "reload", check=False)
        assert ctl.returncode == 1 and "previous config keeps running" in ctl.stderr, ctl.stderr
    finally:
        box.write_file(CONFIG, good, mode=0o640)
    inside(box, "systemctl", "reload", UNIT)
    wait_until(lambda: not show(box, "StatusText")["StatusText"].startswith("reload failed"), 30,
               "STATUS= to clear after a good reload")


def test_systemd_watchdog_restarts_a_frozen_daemon(box: SystemdContainer) -> None:
    dropin = "/etc/systemd/system/watchdogd.service.d/test-watchdog.conf"
    box.write_file(dropin, "[Service]\nWatchdogSec=3s\nRestartSec=1s\n")
    try:
        inside(box, "systemctl", "daemon-reload")
        inside(box, "systemctl", "restart", UNIT)
        wait_until(lambda: running_and_ready(box), 30, "watchdogd READY with WatchdogSec=3s")
        assert show(box, "WatchdogUSec")["WatchdogUSec"] == "3s"
        restarts = int(show(box, "NRestarts")["NRestarts"])
        frozen = main_pid(box)
        inside(box, "kill", "-STOP", str(frozen))
        wait_until(lambda: running_and_ready(box, not_pid=frozen), 40, "the watchdog to restart the frozen daemon")
        assert int(show(box, "NRestarts")["NRestarts"]) == restarts + 1
        assert "Watchdog timeout" in inside(box, "journalctl", "--no-pager", "-u", UNIT).stdout
    finally:
        inside(box, "rm", "-f", dropin)
        inside(box, "systemctl", "daemon-reload")
        inside(box, "systemctl", "restart", UNIT, check=False)
    wait_until(lambda: running_and_ready(box), 30, "watchdogd READY again without the drop-in")


def test_upgrade_keeps_the_edited_conffile_and_restarts(box: SystemdContainer, packages: Packages) -> None:
    edited = inside(box, "cat", CONFIG).stdout
    assert edited.startswith("# edited by the operator")
    pid = main_pid(box)
    output = apt_install(box, packages.next_deb)
    assert f"Unpacking watchdogd ({packages.next_version}) over ({packages.version})" in output, output
    version = inside(box, "dpkg-query", "-W", "-f=${Version}", "watchdogd").stdout
    assert version == packages.next_version
    assert inside(box, "cat", CONFIG).stdout == edited, "an upgrade must never overwrite the edited policy"
    state = wait_until(lambda: running_and_ready(box, not_pid=pid), 60, "the upgrade to restart watchdogd")
    assert "sandbox-check" in rule_names(status_json(box)), state


def test_remove_keeps_state_and_purge_removes_it(box: SystemdContainer) -> None:
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    box.exec(["apt-get", "remove", "-y", "-q", "watchdogd"], env=env, timeout=300)
    assert show(box, "ActiveState")["ActiveState"] in ("inactive", "failed")
    assert inside(box, "test", "-e", "/var/lib/watchdogd/state.db", check=False).returncode == 0
    assert inside(box, "test", "-e", CONFIG, check=False).returncode == 0, "remove keeps conffiles"
    assert inside(box, "test", "-e", "/opt/watchdogd", check=False).returncode == 1
    assert inside(box, "test", "-e", "/var/cache/watchdogd", check=False).returncode == 1, "remove keeps no cache"

    box.exec(["apt-get", "purge", "-y", "-q", "watchdogd"], env=env, timeout=300)
    for path in ("/var/lib/watchdogd", "/etc/watchdogd", "/opt/watchdogd", "/usr/bin/watchdogd",
                 "/lib/systemd/system/watchdogd.service",
                 "/etc/systemd/system/multi-user.target.wants/watchdogd.service"):
        assert inside(box, "test", "-e", path, check=False).returncode == 1, f"{path} left after purge"
    assert inside(box, "dpkg-query", "-W", "watchdogd", check=False).returncode != 0, "dpkg still knows watchdogd"
