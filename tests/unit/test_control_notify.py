"""systemd notify: the ping decision over the scheduler's progress, and the notifier's messages."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.unit.test_exporter import rule, snapshot
from watchdogd.config import parse_config
from watchdogd.engine.scheduler import Progress
from watchdogd.faces import notify
from watchdogd.model import RuleStatus

CONFIG = textwrap.dedent("""
    interval: 10s
    jitter: 0s
    probe_timeout: 3s
    rules:
      quick: {probe: host.memory, above: 90}
      acting:
        probe: host.disk
        above: 90
        verify_after: 5s
        actions:
          - exec: {argv: [/bin/true], timeout: 60s}
          - exec: {argv: [/bin/true], timeout: 30s}
      sleeper: {probe: host.memory, above: 90, enabled: false}
""")


class FakeSender:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.fail = False

    def notify(self, state: str) -> None:
        if self.fail:
            raise ConnectionRefusedError("gone")
        self.sent.append(state)


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert notify.watchdog_interval({"WATCHDOG_USEC": "2000000"}, pid=7) == 1.0
    assert notify.watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "7"}, pid=7) == 1.0
    assert notify.watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "8"}, pid=7) is None
    assert notify.watchdog_interval({"WATCHDOG_USEC": "soon"}, pid=7) is None
    assert notify.watchdog_interval({"WATCHDOG_USEC": "0"}, pid=7) is None
    assert notify.watchdog_interval({}, pid=7) is None


def test_stuck_bounds_cover_each_rules_own_worst_case() -> None:
    config = parse_config(CONFIG, Path("x.yaml"))
    bounds = notify.stuck_after(config.rules.values())
    assert set(bounds) == {"quick", "acting"}  # disabled rules never run, so never count as stuck
    assert bounds["quick"] == pytest.approx(2 * 10 + 3 + notify.STUCK_SLACK)
    # probe + both action timeouts + verify delay + the longest settle + re-probe
    settle = max(action.settle for action in config.rules["acting"].actions)
    assert settle > 0
    assert bounds["acting"] == pytest.approx(2 * 10 + (3 + 60 + 30 + 5 + settle + 3) + notify.STUCK_SLACK)


def test_ping_decision_over_a_frozen_progress() -> None:
    """The unit-level twin of the integration test: a Progress whose rule stops finishing."""
    config = parse_config(CONFIG, Path("x.yaml"))
    bounds = notify.stuck_after(config.rules.values())
    now = [1000.0]
    progress = Progress(lambda: now[0])
    progress.mark("quick")
    progress.mark("acting")
    assert notify.should_ping(True, progress.late(bounds, factor=1.0))
    now[0] += bounds["quick"] + 0.5  # inside the +1 s tolerance of Progress.late
    assert notify.should_ping(True, progress.late(bounds, factor=1.0))
    now[0] += 1.0
    assert progress.late(bounds, factor=1.0) == ["quick"]
    assert not notify.should_ping(True, progress.late(bounds, factor=1.0))
    progress.mark("quick")  # it ran again: pings resume at once
    assert notify.should_ping(True, progress.late(bounds, factor=1.0))
    assert not notify.should_ping(False, [])  # a stopped scheduler never pings


def test_notifier_messages_and_cadence() -> None:
    sender = FakeSender()
    now = [0.0]
    notifier = notify.Notifier(sender=sender, interval=1.0, clock=lambda: now[0])
    notifier.ready("2 rules, 0 firing, 0 actions in the last hour")
    assert sender.sent == ["READY=1\nSTATUS=2 rules, 0 firing, 0 actions in the last hour"]
    notifier.status("2 rules, 0 firing, 0 actions in the last hour")  # unchanged: not resent
    notifier.status("2 rules, 1 firing, 0 actions in the last hour")
    assert sender.sent[-1] == "STATUS=2 rules, 1 firing, 0 actions in the last hour" and len(sender.sent) == 2
    assert notifier.watchdog(True) and sender.sent[-1] == "WATCHDOG=1"
    assert not notifier.watchdog(True)  # not due yet
    now[0] = 1.2
    assert not notifier.watchdog(False)  # due, but not progressing
    assert notifier.watchdog_due() == 0.0
    assert notifier.watchdog(True)  # goes out as soon as progress is back
    notifier.reloading()
    lines = sender.sent[-1].splitlines()
    assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC=") and int(lines[1].split("=")[1]) > 0
    notifier.stopping()
    assert sender.sent[-1].startswith("STOPPING=1\n")


def test_status_is_one_ascii_line_of_bounded_length() -> None:
    sender = FakeSender()
    notifier = notify.Notifier(sender=sender, interval=None)
    notifier.status("règle\nsur deux lignes " + "x" * 500)
    text = sender.sent[-1].removeprefix("STATUS=")
    assert "\n" not in text and text.isascii() and len(text) <= notify.STATUS_MAX


def test_a_dead_notify_socket_is_logged_once_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    sender = FakeSender()
    sender.fail = True
    notifier = notify.Notifier(sender=sender, interval=1.0, clock=lambda: 100.0)
    notifier.ready("x")
    notifier.watchdog(True)
    notifier.stopping()
    assert len([r for r in caplog.records if "sd_notify failed" in r.getMessage()]) == 1


def test_outside_systemd_everything_is_a_no_op() -> None:
    notifier = notify.Notifier.from_env({})
    assert not notifier.enabled and notifier.watchdog_due() is None
    notifier.ready("x")
    assert not notifier.watchdog(True)


def test_status_line() -> None:
    snap = snapshot(
        rule(),
        rule("ok", firing={}, status=RuleStatus.OK),
        rule("down", up=False, firing={}, status=RuleStatus.DOWN),
        rule("no-pg", up=False, firing={}, status=RuleStatus.ABSENT),
        actions_last_hour=3,
    )
    assert notify.status_line(snap) == "4 rules: 1 firing, 1 down, 1 absent, 1 ok; 3 actions in the last hour"
    failed = snapshot(rule(), last_reload_error="1 problem(s): x.yaml:3: bad", dry_run=True)
    assert notify.status_line(failed) == (
        "reload failed, running the previous config: 1 problem(s): x.yaml:3: bad; "
        "1 rule: 1 firing; 3 actions in the last hour (dry-run)"
    )
