"""sd_notify as systemd sees it: a real AF_UNIX datagram socket set as NOTIFY_SOCKET."""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.interfaces.conftest import DaemonFactory
from tests.integration.interfaces.support import NotifyReceiver, free_port, wait_until
from watchdogd.engine.scheduler import MAX_WORKERS

pytestmark = pytest.mark.integration

ONE_FIRING = """
    interval: 1s
    rules:
      mem: {probe: host.memory, above: 0}
"""


def env(receiver: NotifyReceiver, watchdog_usec: int | None = None) -> dict[str, str]:
    values = {"NOTIFY_SOCKET": str(receiver.path)}
    if watchdog_usec is not None:
        values["WATCHDOG_USEC"] = str(watchdog_usec)
    return values


def pings(receiver: NotifyReceiver) -> list[float]:
    return [m.at for m in receiver.with_key("WATCHDOG", "1")]


def test_ready_status_and_watchdog_cadence(start_daemon: DaemonFactory, notify: NotifyReceiver) -> None:
    daemon = start_daemon(ONE_FIRING, env=env(notify, watchdog_usec=2_000_000))
    ready = notify.wait_for("READY", "1")
    assert ready.fields["STATUS"].startswith("1 rule: ")
    daemon.wait_for_log("firing", rule="mem")
    notify.wait_for("STATUS", "1 rule: 1 firing; 0 actions in the last hour", timeout=10)
    wait_until(lambda: len(pings(notify)) >= 5, 15, "five WATCHDOG=1 pings")
    times = pings(notify)
    gaps = [b - a for a, b in zip(times, times[1:])]
    # Half of WATCHDOG_USEC = 1 s between pings.
    assert all(0.6 < gap < 1.6 for gap in gaps), gaps
    assert times[0] >= ready.at  # no ping before READY


def test_no_pings_without_watchdog_usec(start_daemon: DaemonFactory, notify: NotifyReceiver) -> None:
    daemon = start_daemon(ONE_FIRING, env=env(notify))
    notify.wait_for("READY", "1")
    daemon.wait_for_log("firing", rule="mem")
    assert not pings(notify)


def test_reload_good_and_bad_config(start_daemon: DaemonFactory, notify: NotifyReceiver) -> None:
    daemon = start_daemon(ONE_FIRING, env=env(notify))
    first_ready = notify.wait_for("READY", "1")
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    daemon.signal(signal.SIGHUP)
    reloading = notify.wait_for("RELOADING", "1", after=first_ready.at)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert before <= int(reloading.fields["MONOTONIC_USEC"]) <= after
    ready = notify.wait_for("READY", "1", after=reloading.at)
    assert "reload failed" not in ready.fields["STATUS"]
    daemon.wait_for_log("reloaded")

    config: Path = daemon.config  # type: ignore[attr-defined]
    config.write_text(config.read_text().replace("above: 0", "above: plenty"))
    daemon.signal(signal.SIGHUP)
    reloading = notify.wait_for("RELOADING", "1", after=ready.at)
    failed = notify.wait_for("READY", "1", after=reloading.at)
    assert failed.fields["STATUS"].startswith("reload failed, running the previous config: 1 problem(s): ")
    assert "rules.mem.above" in failed.fields["STATUS"]
    daemon.wait_for_log("reload failed, keeping the running config")
    # The old config keeps running: the rule still runs and stays firing.
    assert daemon.returncode is None


def test_sigterm_sends_stopping_and_finishes_the_action_in_flight(
    start_daemon: DaemonFactory, notify: NotifyReceiver
) -> None:
    daemon = start_daemon("""
        interval: 1s
        rules:
          slow:
            probe: host.memory
            above: 0
            actions:
              - exec: {argv: [/bin/sleep, "2"], timeout: 20s}
        """, env=env(notify))
    notify.wait_for("READY", "1")
    daemon.wait_for_log("firing", rule="slow")  # the action starts in the same cycle
    sent = time.monotonic()
    daemon.signal(signal.SIGTERM)
    stopping = notify.wait_for("STOPPING", "1", timeout=5)
    assert stopping.at - sent < 2.0
    daemon.wait_for_log("action done", rule="slow", timeout=20)
    daemon.wait_for_log("stopped", timeout=20)
    assert daemon.proc is not None and daemon.proc.wait(timeout=10) == 0


def test_pings_stop_while_the_scheduler_is_not_progressing(
    start_daemon: DaemonFactory, notify: NotifyReceiver
) -> None:
    """An honest freeze: every scheduler worker is busy in a long action, so the canary rule cannot run.

    Each busy rule runs a different command: the same argv would be one thing in
    one shared cooldown, and only the first rule would run it.

    Each busy rule stays inside its own bound (its action timeout), so it is
    not stuck; the canary, queued behind them, is: its bound is a few
    seconds. Pings must stop while it waits and resume once it runs again;
    /healthz says 503 meanwhile.
    """
    port = free_port()
    busy = "".join(
        f"""
          busy-{n}:
            probe: host.memory
            above: 0
            cooldown: 1h
            actions:
              - exec: {{argv: [/bin/sleep, "{60 + n}"], timeout: 12s}}"""
        for n in range(MAX_WORKERS)
    )
    daemon = start_daemon(f"""
        interval: 1s
        listen: 127.0.0.1:{port}
        budget: {{actions: 1000, per: 1h}}
        rules:
          canary: {{probe: host.memory, above: 100}}{busy}
        """, env=env(notify, watchdog_usec=2_000_000))
    notify.wait_for("READY", "1")
    withheld = daemon.wait_for_log("withholding watchdog pings", timeout=20)
    assert "stuck=canary" in withheld
    stopped_at = time.monotonic()

    def healthz() -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    assert healthz() == 503
    daemon.wait_for_log("watchdog pings resumed", timeout=30)
    resumed = notify.wait_for("WATCHDOG", "1", after=stopped_at, timeout=10)
    silent = [t for t in pings(notify) if stopped_at < t < resumed.at]
    assert not silent
    assert resumed.at - stopped_at > 3.0  # several missed 1 s beats: systemd would have acted
    wait_until(lambda: healthz() == 200, 15, "/healthz back to 200")
