"""systemd.unit, systemd.restarts, systemd.restart/reload, log.matches on a journal and journal.vacuum,
against a real systemd running as PID 1 in a Debian 12 container, with watchdogd installed inside it.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from tests.integration.services.servers import wait_until

pytestmark = pytest.mark.integration

WATCHDOGD = "/opt/watchdogd/bin/watchdogd"

UNITS = {
    # Killed by the tests; Restart=no, so only watchdogd can bring it back.
    "app.service": """
        [Unit]
        Description=the service the runbook restarts
        [Service]
        ExecStart=/bin/sleep infinity
        Restart=no
    """,
    # Crashes at once, forever: systemd's own Restart= counts up NRestarts.
    "flappy.service": """
        [Unit]
        Description=crash loop
        StartLimitIntervalSec=0
        [Service]
        ExecStart=/bin/false
        Restart=always
        RestartSec=200ms
    """,
    # Logs three ERROR lines to the journal at start, then idles; SIGHUP (reload) writes a marker.
    "noisy.service": """
        [Unit]
        Description=writes errors
        [Service]
        ExecStart=/usr/bin/python3 -u /opt/noisy.py
        ExecReload=/bin/kill -HUP $MAINPID
    """,
}
NOISY = """
    import pathlib, signal, time
    signal.signal(signal.SIGHUP, lambda *_: pathlib.Path("/run/noisy-reloaded").write_text("yes"))
    for i in range(3):
        print(f"ERROR boom {i}")
    print("INFO fine")
    while True:
        time.sleep(1)
"""
HEADER = """
    state_dir: /var/lib/watchdogd-test
    control_socket: /run/watchdogd-test.sock
    listen: null
    grace: 0s
"""


@pytest.fixture(scope="module")
def box(systemd_box: Any) -> Any:
    for name, text in UNITS.items():
        systemd_box.write_file(f"/etc/systemd/system/{name}", textwrap.dedent(text))
    systemd_box.write_file("/opt/noisy.py", textwrap.dedent(NOISY))
    systemd_box.exec(["systemctl", "daemon-reload"])
    systemd_box.exec(["systemctl", "start", "app.service", "flappy.service", "noisy.service"])
    return systemd_box


def prop(box: Any, unit: str, name: str) -> str:
    return str(box.exec(["systemctl", "show", f"--property={name}", "--value", unit]).stdout.strip())


def write_config(box: Any, path: str, body: str) -> str:
    box.write_file(path, textwrap.dedent(HEADER) + textwrap.dedent(body), mode=0o600)
    return path


def once(box: Any, config: str, *extra: str) -> Any:
    return box.exec([WATCHDOGD, "--config", config, "--once", *extra], check=False, timeout=120)


def statuses(stdout: str) -> dict[str, str]:
    found = {}
    for line in stdout.splitlines():
        name, sep, rest = line.partition(": ")
        if sep and " " not in name:
            found[name] = rest.split(";")[0]
    return found


def test_unit_states_restarts_and_journal_matches(box: Any) -> None:
    wait_until(lambda: int(prop(box, "flappy.service", "NRestarts") or 0) > 2, what="flappy to crash-loop")
    wait_until(lambda: "ERROR boom 2" in box.exec(["journalctl", "-u", "noisy", "-o", "cat"]).stdout,
               what="noisy's errors in the journal")
    config = write_config(box, "/etc/watchdogd/probes.yaml", """
        rules:
          app-up:
            probe: systemd.unit
            params: {units: [app]}
            above: 0
          typo:
            probe: systemd.unit
            params: {units: [no-such-unit]}
            above: 0
          crash-loop:
            probe: systemd.restarts
            params: {units: ["flap*.service"]}
            above: 2
          noisy-errors:
            probe: log.count
            params: {unit: noisy.service, pattern: "^ERROR", window: 10m}
            above: 2
          noisy-rate:
            probe: log.matches
            params: {unit: noisy.service, pattern: "^ERROR", window: 10m}
            above: 0.1
        """)
    result = once(box, config)
    assert result.returncode == 1, result.stdout + result.stderr
    assert statuses(result.stdout) == {
        "app-up": "ok", "typo": "firing", "crash-loop": "firing", "noisy-errors": "firing", "noisy-rate": "ok",
    }, result.stdout + result.stderr
    assert "subject=no-such-unit.service value=1.0" in result.stderr
    assert "firing rule=noisy-errors subject=unit:noisy.service value=3.0" in result.stderr


def test_daemon_restarts_a_unit_that_failed(box: Any) -> None:
    box.exec(["systemctl", "kill", "--signal=KILL", "app.service"])
    wait_until(lambda: prop(box, "app.service", "ActiveState") == "failed", what="app to fail")
    config = write_config(box, "/etc/watchdogd/restart.yaml", """
        interval: 1s
        rules:
          app-down:
            probe: systemd.unit
            params: {units: [app]}
            above: 0
            cooldown: 1m
            actions:
              - systemd.restart: {timeout: 30s}
        """)
    # Run the daemon as a service of this systemd, the way the package runs it.
    box.exec(["systemd-run", "--unit=watchdogd", "--property=Type=exec", WATCHDOGD, "--config", config])
    try:
        wait_until(lambda: prop(box, "app.service", "ActiveState") == "active", timeout=30, what="app restarted")
        assert int(prop(box, "app.service", "MainPID")) > 0

        def logged() -> str:
            out = str(box.exec(["journalctl", "-u", "watchdogd", "-o", "cat"]).stdout)
            return out if "action done" in out else ""

        log = wait_until(logged, what="the daemon's 'action done' line")
        assert "rule=app-down action=systemd.restart" in log
        assert "restarted 1 unit(s)" in log
    finally:
        box.exec(["systemctl", "stop", "watchdogd"], check=False)


def test_reload_and_refusing_to_restart_itself(box: Any) -> None:
    config = write_config(box, "/etc/watchdogd/reload.yaml", """
        rules:
          noisy-errors:
            probe: log.count
            params: {unit: noisy.service, pattern: "^ERROR", window: 10m}
            above: 2
            actions:
              - systemd.reload: {unit: noisy}
              - systemd.restart: {unit: watchdogd-self}
        """)
    # watchdogd-self.service is the unit this --once run lives in: restarting it must be refused.
    box.exec(["systemd-run", "--unit=watchdogd-self", "--wait", "--collect", "--property=Type=exec",
              WATCHDOGD, "--config", config, "--once"], check=False, timeout=120)
    wait_until(lambda: box.exec(["cat", "/run/noisy-reloaded"], check=False).stdout == "yes",
               what="noisy to receive its reload")
    log = box.exec(["journalctl", "-u", "watchdogd-self", "-o", "cat"]).stdout
    assert "action done rule=noisy-errors action=systemd.reload" in log, log
    assert "action failed rule=noisy-errors action=systemd.restart" in log, log
    assert "refused: watchdogd runs in watchdogd-self.service" in log, log


def test_journal_vacuum_dry_run_then_real(box: Any) -> None:
    box.exec(["journalctl", "--rotate"])  # makes the current files archived: something to vacuum
    config = write_config(box, "/etc/watchdogd/vacuum.yaml", """
        rules:
          journal-big:
            probe: systemd.unit
            params: {units: [no-such-unit]}
            above: 0
            cooldown: 0s
            actions:
              - journal.vacuum: {max_age: 1s}
        """)
    dry = once(box, config, "--dry-run")
    assert "action would run rule=journal-big action=journal.vacuum" in dry.stderr, dry.stderr
    assert "would run journalctl --vacuum-time=1s" in dry.stderr
    real = once(box, config)
    assert "action done rule=journal-big action=journal.vacuum" in real.stderr, real.stderr
    assert "deleted " in real.stderr and "archived journal file(s)" in real.stderr
