"""systemd notifications: READY, STATUS, WATCHDOG, RELOADING and STOPPING.

systemd restarts the daemon when the WATCHDOG=1 pings stop, so a ping must
mean "rules are being evaluated", not merely "the main thread is alive": a
main loop that pings on a timer would keep a wedged scheduler alive forever.
The decision is a pure function over the scheduler's progress so it can be
tested without a frozen process.

Nothing here raises into the daemon: a notify socket that goes away is
logged once and then ignored, because losing systemd's bookkeeping must
never stop the rules.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from watchdogd.counting import count_line, tally
from watchdogd.logs import event

if TYPE_CHECKING:
    from watchdogd.configtypes import Rule
    from watchdogd.engine.snapshot import EngineSnapshot

log = logging.getLogger(__name__)

STATUS_MAX = 200
"""systemctl status shows one line; a long STATUS only gets cut there."""

STUCK_SLACK = 2.0
"""Seconds added to a rule's own bound before it counts as stuck (scheduler wake-up, GC, slow disk)."""


class _Sender(Protocol):
    def notify(self, state: str) -> None: ...


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between pings (half of WATCHDOG_USEC), or None when systemd expects none from us.

    WATCHDOG_PID names the process the watchdog is meant for; a child that
    inherited the environment must not ping on its parent's behalf.
    """
    raw = env.get("WATCHDOG_USEC", "")
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(pid):
        return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 1e6 / 2.0


def cycle_bound(rule: Rule) -> float:
    """The longest one run of ``rule`` may legitimately take.

    Probe under its timeout, then each action under its own timeout, the
    verify delay and the re-probe. A docker prune that runs for ten minutes
    inside its timeout is work, not a hang: systemd must not kill the daemon
    in the middle of it.
    """
    if not rule.actions:
        return rule.timeout
    actions = sum(action.params.timeout for action in rule.actions)
    settle = max(action.settle for action in rule.actions)
    return rule.timeout + actions + rule.verify_after + settle + rule.timeout


def stuck_after(rules: Iterable[Rule]) -> dict[str, float]:
    """Per enabled rule: seconds without a finished run after which the scheduler is not progressing.

    Two intervals (a late start and a skipped beat are normal), the start
    jitter, the rule's own worst case and some slack. This is deliberately
    looser than /healthz's "ran within two intervals": /healthz reports,
    the watchdog kills.
    """
    enabled = {rule.name: rule for rule in rules if rule.enabled}
    return {
        name: 2.0 * rule.every + rule.jitter + _with_dependencies(rule, enabled) + STUCK_SLACK
        for name, rule in enabled.items()
    }


def _with_dependencies(rule: Rule, rules: Mapping[str, Rule]) -> float:
    """A dependent whose probe fails runs the rules it depends on in its own run (engine: recheck)."""
    return cycle_bound(rule) + sum(
        _with_dependencies(rules[dep], rules) for dep in rule.depends_on if dep in rules
    )


def should_ping(running: bool, stuck: Iterable[str]) -> bool:
    """The whole watchdog policy: ping only while the scheduler runs and no rule is stuck."""
    return running and not any(True for _ in stuck)


def too_many_stuck(threads: int, limit: int) -> bool:
    """Past ``limit`` stuck probe threads (0: no limit) only a restart helps: stop pinging, systemd restarts us.

    One stuck probe is an outage of what it watches and the rule reports it;
    a growing number is threads and sockets the daemon will never get back.
    """
    return limit > 0 and threads >= limit


def status_line(snapshot: EngineSnapshot) -> str:
    """``12 rules: 1 firing, 11 ok; 3 actions in the last hour`` (+ dry-run, + a failed reload)."""
    counts = count_line(tally(rule.status.value for rule in snapshot.rules))
    text = f"{counts}; {snapshot.actions_last_hour} actions in the last hour"
    if snapshot.dry_run:
        text += " (dry-run)"
    if snapshot.last_reload_error:
        text = f"reload failed, running the previous config: {snapshot.last_reload_error}; {text}"
    return text


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as systemd wants it with RELOADING=1."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _clean(text: str) -> str:
    # One line, and ASCII: the datagram is a newline-separated list of assignments,
    # and sdnotify encodes as latin-1, which would raise on other characters.
    flat = " ".join(text.split())
    if len(flat) > STATUS_MAX:
        flat = flat[: STATUS_MAX - 3] + "..."
    return flat.encode("ascii", "replace").decode("ascii")


@dataclass
class Notifier:
    """sd_notify for the daemon; every method is a no-op outside systemd."""

    sender: _Sender | None
    interval: float | None
    clock: Callable[[], float] = time.monotonic
    _next_ping: float = 0.0
    _last_status: str | None = None
    _broken: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        if not env.get("NOTIFY_SOCKET"):
            return cls(sender=None, interval=None)
        try:
            import sdnotify  # noqa: PLC0415 (lazy: only under systemd)

            sender: _Sender | None = sdnotify.SystemdNotifier(debug=True)
        except Exception as exc:
            event(log, logging.ERROR, "cannot open NOTIFY_SOCKET; systemd will not hear from us",
                  socket=env.get("NOTIFY_SOCKET"), error=str(exc))
            sender = None
        return cls(sender=sender, interval=watchdog_interval(env, os.getpid()))

    @property
    def enabled(self) -> bool:
        return self.sender is not None

    def _send(self, *assignments: str) -> None:
        if self.sender is None or self._broken:
            return
        try:
            self.sender.notify("\n".join(assignments))
        except Exception as exc:
            # Once: a receiver that went away would otherwise log every second.
            self._broken = True
            event(log, logging.ERROR, "sd_notify failed; no more notifications will be sent", error=str(exc))

    def ready(self, status: str) -> None:
        self._last_status = _clean(status)
        self._send("READY=1", f"STATUS={self._last_status}")

    def status(self, text: str) -> None:
        """Send STATUS only when it changed: systemd keeps the last one anyway."""
        cleaned = _clean(text)
        if cleaned != self._last_status:
            self._last_status = cleaned
            self._send(f"STATUS={cleaned}")

    def reloading(self) -> None:
        self._send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}", "STATUS=reloading the config")
        self._last_status = None

    def stopping(self) -> None:
        self._send("STOPPING=1", "STATUS=stopping: finishing the action in flight")

    def watchdog_due(self) -> float | None:
        """Seconds until the next ping is due (0 when overdue); None without a watchdog."""
        if self.sender is None or self.interval is None:
            return None
        return max(0.0, self._next_ping - self.clock())

    def watchdog(self, healthy: bool) -> bool:
        """Ping if due and ``healthy``; returns whether a ping went out.

        An unhealthy tick does not push the schedule back, so the ping goes
        out the moment progress resumes.
        """
        if self.sender is None or self.interval is None or not healthy:
            return False
        now = self.clock()
        if now < self._next_ping:
            return False
        self._next_ping = now + self.interval
        self._send("WATCHDOG=1")
        return True
