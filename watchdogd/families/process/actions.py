"""``process.signal``: TERM the breaching processes, then KILL the ones still there after a grace.

The danger of signalling by pid is pid reuse: the leaking worker exits on its
own, the kernel hands its pid to something else, and a late SIGKILL hits an
innocent process. So every target is identified by ``(pid, start_ticks)``
from the probe's reading, and each signal goes through a pidfd opened and
then re-verified against that identity: once a pidfd refers to the right
process it cannot refer to any other, so nothing between the check and the
signal can redirect it. (Kernels without pidfds, before 5.3, fall back to
re-checking the identity immediately before ``kill``.)

Never signalled, whatever a rule says: pid 1, watchdogd itself and every one
of its ancestors, kernel threads.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from watchdogd.contracts import ActionParams, ActionResult, ActionSpec, Clock, ItemResult, Reading
from watchdogd.families.process import procfs
from watchdogd.spec import model_validator
from watchdogd.units import Duration

SignalName = Literal["TERM", "INT", "QUIT", "HUP", "USR1", "USR2", "KILL"]
SIGNALS: dict[str, signal.Signals] = {
    "TERM": signal.SIGTERM, "INT": signal.SIGINT, "QUIT": signal.SIGQUIT, "HUP": signal.SIGHUP,
    "USR1": signal.SIGUSR1, "USR2": signal.SIGUSR2, "KILL": signal.SIGKILL,
}
ENDS_PROCESS = frozenset({"TERM", "INT", "QUIT", "KILL"})
"""Signals after which we wait for the process to exit; the others (HUP: reload) just get sent."""
ESCALATES = frozenset({"TERM", "INT", "QUIT"})

POLL_INTERVAL = 0.02  # the fallback without pidfds re-reads /proc this often while waiting


class SignalParams(ActionParams):
    signal: SignalName = "TERM"
    grace: Duration = 10.0
    kill_after_grace: bool | None = None

    @model_validator(mode="after")
    def _check(self) -> SignalParams:
        if self.kill_after_grace and self.signal not in ESCALATES:
            raise ValueError(
                f"kill_after_grace: only TERM, INT or QUIT escalate to KILL, not {self.signal}"
            )
        if self.signal in ENDS_PROCESS and self.grace >= self.timeout:
            raise ValueError(
                f"grace ({self.grace:g}s) must be shorter than the action's timeout ({self.timeout:g}s),"
                " which also has to cover the KILL"
            )
        return self

    @property
    def escalate(self) -> bool:
        if self.kill_after_grace is None:
            return self.signal in ESCALATES
        return self.kill_after_grace


@dataclass
class _Target:
    """One process we were asked to signal, and what happened to it."""

    reading: Reading
    pid: int
    start_ticks: int
    info: dict[str, Any]
    pidfd: int | None = None
    steps: list[str] = field(default_factory=list)
    ok: bool = True
    done: bool = False  # no further signal: exited, refused, failed
    exited_after: float | None = None

    def finish(self, ok: bool, step: str) -> None:
        self.ok, self.done = ok, True
        self.steps.append(step)

    def result(self) -> ItemResult:
        return ItemResult(self.reading.subject, self.ok, "; ".join(self.steps), self.info)


class SignalAction:
    def __init__(
        self,
        params: SignalParams,
        clock: Clock,
        *,
        proc: str = procfs.PROC,
        self_pid: Callable[[], int] = os.getpid,
    ) -> None:
        self._params = params
        self._proc = proc
        self._self_pid = self_pid
        self._signal = SIGNALS[params.signal]

    def thing(self, reading: Reading) -> str:
        """The process by pid *and* start time (``NamesThing``): a reused pid is another process."""
        pid, start = reading.details.get("pid"), reading.details.get("start_ticks")
        if not isinstance(pid, int) or not isinstance(start, int):
            return reading.subject  # run() refuses it anyway
        return f"pid {pid} started {start}"

    def run(self, subjects: Sequence[Reading], *, dry_run: bool) -> ActionResult:
        deadline = time.monotonic() + self._params.timeout
        protected = procfs.ancestors(self._self_pid(), self._proc) | {1}
        targets: list[_Target] = []
        items: list[ItemResult] = []
        for reading in subjects:
            target_or_item = self._target(reading, protected)
            if isinstance(target_or_item, ItemResult):
                items.append(target_or_item)
            else:
                targets.append(target_or_item)
        if dry_run:
            items += [self._dry_item(t) for t in targets]
        else:
            try:
                self._signal_all(targets, deadline)
            finally:
                for target in targets:
                    if target.pidfd is not None:
                        os.close(target.pidfd)
            items += [t.result() for t in targets]
        return self._summary(items, dry_run)

    # -- checks ----------------------------------------------------------------------------

    def _target(self, reading: Reading, protected: frozenset[int]) -> _Target | ItemResult:
        """The checked target, or the item explaining why it gets no signal."""
        pid, start = reading.details.get("pid"), reading.details.get("start_ticks")
        if not isinstance(pid, int) or not isinstance(start, int):
            return ItemResult(reading.subject, False,
                              "not signalled: the reading names no process (use a process.* probe)")
        info = {key: reading.details.get(key) for key in ("pid", "start_ticks", "name", "user", "cmdline")}
        info["signal"] = self._params.signal
        if pid in protected:
            who = "init" if pid == 1 else "watchdogd itself" if pid == self._self_pid() else "an ancestor of watchdogd"
            return ItemResult(reading.subject, False, f"refused: pid {pid} is {who}", info)
        gone = self._gone(pid, start)
        if gone is not None:
            return ItemResult(reading.subject, True, f"not signalled: {gone}", info)
        return _Target(reading, pid, start, info)

    def _gone(self, pid: int, start: int) -> str | None:
        """Why ``(pid, start)`` is not a live process we may signal, or None when it is."""
        stat = procfs.read_stat(pid, self._proc)
        if stat is None:
            return f"pid {pid} has already exited"
        if stat.start_ticks != start:
            return f"pid {pid} now belongs to another process (started later than the one measured)"
        if stat.zombie:
            return f"pid {pid} has already exited (zombie, waiting for its parent)"
        if stat.kernel_thread:
            return f"pid {pid} is a kernel thread"
        return None

    def _dry_item(self, target: _Target) -> ItemResult:
        p = self._params
        text = f"would send SIG{p.signal} to pid {target.pid}"
        if p.signal in ENDS_PROCESS:
            text += f" and wait up to {p.grace:g}s for it to exit"
            if p.escalate:
                text += ", then SIGKILL if still running"
        return ItemResult(target.reading.subject, True, text, target.info)

    # -- signalling ------------------------------------------------------------------------

    def _signal_all(self, targets: list[_Target], deadline: float) -> None:
        p = self._params
        for target in targets:
            self._send(target, self._signal)
        if p.signal not in ENDS_PROCESS:
            return  # HUP, USR1, USR2: delivered is all there is to it
        started = time.monotonic()
        self._wait(targets, min(deadline, started + p.grace), started)
        survivors = [t for t in targets if not t.done]
        if not survivors:
            return
        if not p.escalate or self._signal is signal.SIGKILL:
            for target in survivors:
                target.finish(False, f"still running after {p.grace:g}s")
            return
        for target in survivors:
            target.steps.append(f"still running after {p.grace:g}s")
            self._send(target, signal.SIGKILL)
        self._wait(survivors, deadline, started)
        for target in survivors:
            if not target.done:
                target.finish(False, f"still running after SIGKILL, at the action's timeout"
                              f" of {p.timeout:g}s (stuck in the kernel?)")

    def _send(self, target: _Target, sig: signal.Signals) -> None:
        name = sig.name
        try:
            if target.pidfd is None:
                target.pidfd = self._open_pidfd(target)
            if target.done:
                return
            if target.pidfd is not None:
                signal.pidfd_send_signal(target.pidfd, sig)
            else:
                gone = self._gone(target.pid, target.start_ticks)
                if gone is not None:
                    target.finish(True, f"not signalled: {gone}")
                    return
                os.kill(target.pid, sig)
        except ProcessLookupError:
            target.finish(True, f"pid {target.pid} exited before {name}")
            return
        except PermissionError:
            target.finish(False, f"permission denied sending {name} to pid {target.pid}"
                          f" (user {target.info.get('user')}): watchdogd needs root or CAP_KILL")
            return
        except OSError as exc:
            target.finish(False, f"sending {name} to pid {target.pid} failed: {exc.strerror}")
            return
        target.steps.append(f"sent {name}")

    def _open_pidfd(self, target: _Target) -> int | None:
        """A pidfd for exactly the measured process, or None when this kernel has none."""
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is None or not hasattr(signal, "pidfd_send_signal"):
            return None
        try:
            pidfd: int = pidfd_open(target.pid)
        except ProcessLookupError:
            target.finish(True, f"pid {target.pid} has already exited")
            return None
        except OSError as exc:
            if exc.errno in (errno.ENOSYS, errno.EINVAL):
                return None
            raise
        # The pidfd now pins whatever process has this pid; make sure it is ours.
        gone = self._gone(target.pid, target.start_ticks)
        if gone is not None:
            os.close(pidfd)
            target.finish(True, f"not signalled: {gone}")
            return None
        return pidfd

    def _wait(self, targets: list[_Target], until: float, started: float) -> None:
        """Mark the targets that exit before ``until``: pidfds poll readable when their process ends."""
        waiting = {t.pidfd: t for t in targets if not t.done and t.pidfd is not None}
        fallback = [t for t in targets if not t.done and t.pidfd is None]
        poller = select.poll()
        for fd in waiting:
            poller.register(fd, select.POLLIN)
        while (waiting or fallback) and (left := until - time.monotonic()) > 0:
            timeout = min(left, POLL_INTERVAL) if fallback else left
            for fd, _events in poller.poll(max(1, int(timeout * 1000))):
                target = waiting.pop(fd, None)
                if target is not None:
                    poller.unregister(fd)
                    self._exited(target, started)
            for target in list(fallback):
                if self._gone(target.pid, target.start_ticks) is not None:
                    fallback.remove(target)
                    self._exited(target, started)

    @staticmethod
    def _exited(target: _Target, started: float) -> None:
        target.exited_after = time.monotonic() - started
        target.finish(True, f"exited after {target.exited_after:.2f}s")

    # -- result ----------------------------------------------------------------------------

    def _summary(self, items: list[ItemResult], dry_run: bool) -> ActionResult:
        failed = [item for item in items if not item.ok]
        verb = "would signal" if dry_run else "signalled"
        detail = f"{verb} {len(items) - len(failed)} of {len(items)} process(es) with SIG{self._params.signal}"
        if failed:
            detail += f"; {len(failed)} failed, first: {failed[0].detail}"
        error = f"{len(failed)} process(es) not handled" if failed else None
        return ActionResult(ok=not failed, items=tuple(items), detail=detail, error=error)


def _factory(params: SignalParams, _target: object, clock: Clock) -> SignalAction:
    return SignalAction(params, clock)


ACTIONS: dict[str, ActionSpec] = {
    "process.signal": ActionSpec(
        SignalParams, _factory,
        "signal the breaching processes (TERM, then KILL after a grace), checking each is still the same process",
        settle=10.0, accepts=frozenset({"pid"}),
    ),
}

