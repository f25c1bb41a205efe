"""Hung probes cost their own rules only: others run on time, /healthz and systemd see it, stop is bounded.

Each hung probe is an ``net.http`` rule against a server that accepts and never
answers, with a client timeout (60 s) far past the rule's (0.5 s): the probe
thread stays stuck in ``recv`` long after the engine gave up on it. Twelve of
them is more than the old fixed pool of eight workers, which made every other
rule time out behind them ("all 13 rules down, /healthz 200 ok").
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import DAEMON_PYTHON, WATCHDOGD, free_port, wait_until, write_config
from tests.integration.faults.hung import BlackHole, canary_rules, hung_rules, observe, rules
from tests.integration.interfaces.conftest import DaemonFactory
from tests.integration.interfaces.support import NotifyReceiver
from watchdogd.faces.cli import call
from watchdogd.faces.cli import nagios as check_line

pytestmark = pytest.mark.integration

HUNG = 12
CANARIES = 3
INTERVAL = 0.5
OBSERVE = 8.0


@pytest.fixture
def blackhole() -> Iterator[BlackHole]:
    server = BlackHole()
    try:
        yield server
    finally:
        server.close()


def healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_hung_probes_cost_only_their_own_rules(start_daemon: DaemonFactory, blackhole: BlackHole) -> None:
    port = free_port()
    daemon = start_daemon(
        f"interval: 1s\nlisten: 127.0.0.1:{port}\nstuck_probes_restart: 0\n"
        f"rules:{hung_rules(blackhole.port, HUNG, INTERVAL)}{canary_rules(CANARIES, INTERVAL)}\n"
    )
    daemon.wait_for_log("started")
    sock = Path(str(daemon.config)).parent / "control.sock"  # type: ignore[attr-defined]
    wait_until(lambda: blackhole.connections >= HUNG, 20, "every hung rule connected to the black hole")

    names = [f"canary-{n}" for n in range(CANARIES)]
    wait_until(lambda: all(rules(sock)[f"hung-{n}"]["up"] is False for n in range(HUNG)), 20, "hung rules down")
    seen = observe(sock, names, INTERVAL, OBSERVE)
    print(f"\nhung probes: {HUNG} stuck net.http rules; {CANARIES} canaries every {INTERVAL}s over {OBSERVE:g}s: "
          + seen.line())
    assert seen.downs == 0, "a canary went down behind the hung probes"
    assert all(len(runs) >= OBSERVE / INTERVAL * 0.6 for runs in seen.runs.values()), seen.runs
    assert seen.lateness < 1.0, f"a canary ran {seen.lateness:.2f}s late"

    code, body = healthz(port)
    assert code == 503 and "stalled" in body, (code, body)
    document = call(str(sock), "status")
    assert set(document["summary"]["stalled"]) == {f"hung-{n}" for n in range(HUNG)}
    assert document["daemon"]["stuck_probe_threads"] >= HUNG
    nagios, line = check_line(document)
    assert nagios == 1 and f"{HUNG} stalled" in line, line
    assert all(rules(sock)[f"hung-{n}"]["error"] for n in range(HUNG))
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    stuck = next(line for line in metrics.splitlines() if line.startswith("watchdogd_probe_threads_stuck "))
    assert float(stuck.split()[1]) >= HUNG, stuck

    stop_started = time.monotonic()
    assert daemon.stop(timeout=20) == 0
    print(f"SIGTERM with {HUNG} probes stuck: stopped in {time.monotonic() - stop_started:.2f}s")
    assert time.monotonic() - stop_started < 10


def test_pings_stop_once_too_many_probe_threads_are_stuck(
    start_daemon: DaemonFactory, notify: NotifyReceiver, blackhole: BlackHole
) -> None:
    daemon = start_daemon(
        f"interval: 1s\nstuck_probes_restart: 4\nrules:{hung_rules(blackhole.port, 6, INTERVAL)}"
        f"{canary_rules(1, INTERVAL)}\n", env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"})
    notify.wait_for("READY", "1")
    withheld = daemon.wait_for_log("withholding watchdog pings", timeout=30)
    assert "stuck_probe_threads=" in withheld
    threads = int(withheld.split("stuck_probe_threads=")[1].split()[0])
    assert threads >= 4, withheld
    stopped_at = time.monotonic()
    # No ping for several watchdog intervals: systemd (WatchdogSec) would restart the daemon now.
    time.sleep(3.0)  # the absence of an event cannot be awaited; 6 watchdog half-periods
    late_pings = [n for n in notify.with_key("WATCHDOG", "1") if n.at > stopped_at + 0.6]
    print(f"\n{threads} probe threads stuck (limit 4): watchdog pings after withholding: {len(late_pings)}")
    assert not late_pings


def test_once_and_sigterm_finish_whatever_a_probe_does(short_dir: Path, blackhole: BlackHole) -> None:
    fifo = short_dir / "app.fifo"
    os.mkfifo(fifo)
    config = write_config(
        short_dir,
        f"rules:{hung_rules(blackhole.port, 3, INTERVAL)}\n"
        f"  fifo-log: {{probe: log.matches, params: {{path: '{fifo}', pattern: ERROR}}, above: 0}}\n",
    )
    started = time.monotonic()
    done = subprocess.run([*WATCHDOGD, "--config", str(config), "--once"], capture_output=True, text=True,
                          timeout=60, check=False)
    took = time.monotonic() - started
    print(f"\n--once with 3 stuck probes and a FIFO log: exit {done.returncode} in {took:.2f}s")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "timed out after 0.5s" in done.stdout
    assert "FIFO, not a regular file" in done.stdout
    assert took < 20


def test_stop_past_its_deadline_exits_instead_of_waiting(short_dir: Path) -> None:
    """An action longer than the stop deadline: the daemon exits at the deadline (code 3), not at SIGKILL."""
    marker = short_dir / "began"
    config = write_config(short_dir, f"""
        rules:
          slow-fix:
            probe: host.memory
            above: 0
            every: 0.5s
            actions:
              - exec: {{argv: [/bin/sh, -c, "touch {marker}; exec sleep 120"], timeout: 150s}}
        """)
    runner = "import sys, watchdogd.daemon as d; d.STOP_DEADLINE = 2.0; sys.exit(d.main(sys.argv[1:]))"
    proc = subprocess.Popen([*DAEMON_PYTHON, "-c", runner, "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(marker.exists, 30, "the slow action started")
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        took = time.monotonic() - sent
        err = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(f"\nstop with an action in flight past a 2 s deadline: exit {code} after {took:.2f}s")
    assert code == 3, err
    assert "stop did not finish in time" in err
    assert took < 10
