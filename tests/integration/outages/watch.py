"""Watching a running daemon from outside: its control socket, polled in a thread, as a timeline.

Outage tests measure durations ("killed -> firing", "accepting again -> rule
ok"), so they need the moment a state was first seen, not just that it was
seen eventually. ``Timeline`` asks the daemon for its status document every
50 ms (the control protocol, version 1, as documented in
docs/interfaces.md; in-process, so a poll costs about a millisecond rather
than a ``watchdogctl`` start-up) and keeps every change of each rule's state
with the daemon's own timestamp (``now``). ``Availability`` does the same
for "does the service answer", so both sides of a measurement come from one
clock.

Also used by ``bench/bench_outage.py``: stdlib only, plus ``tests.helpers``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import DaemonProcess, wait_until, write_config

PROTOCOL = 1
POLL = 0.05


class ControlError(RuntimeError):
    """The daemon answered ``ok: false`` (the message carries its error code)."""


def request(sock: Path | str, cmd: str, timeout: float = 10.0, **args: Any) -> Any:
    """One control request (``{"v": 1, "cmd": ..., "args": ...}``); the reply's ``result``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(str(sock))
        conn.sendall(json.dumps({"v": PROTOCOL, "cmd": cmd, "args": args}).encode() + b"\n")
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    reply = json.loads(b"".join(chunks))
    if not reply.get("ok"):
        raise ControlError(f"{cmd}: {reply.get('error')}")
    return reply["result"]


def status(sock: Path | str) -> dict[str, Any]:
    return dict(request(sock, "status"))


def rule_doc(doc: Mapping[str, Any], name: str) -> dict[str, Any]:
    for rule in doc["rules"]:
        if rule["name"] == name:
            return dict(rule)
    raise AssertionError(f"rule {name!r} not in the status document: {[r['name'] for r in doc['rules']]}")


def history(sock: Path | str, rule: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """Audit entries, oldest first (the socket gives newest first)."""
    args: dict[str, Any] = {"limit": limit}
    if rule is not None:
        args["rule"] = rule
    return list(reversed(request(sock, "history", **args)["entries"]))


def finished_at(entry: Mapping[str, Any]) -> float:
    """When an action's run ended: its row is written when it starts (``ts``) and finished later."""
    return float(entry["ts"]) + float(entry.get("duration_seconds") or 0.0)


def number(value: Any) -> float | None:
    """A JSON number, or the protocol's ``"+Inf"``/``"-Inf"``/``"NaN"`` strings."""
    if value is None:
        return None
    if isinstance(value, str):
        return float(value.replace("Inf", "inf"))
    return float(value)


@dataclass(frozen=True)
class Sample:
    """One rule's condition as a status document showed it."""

    t: float  # the daemon's clock (status ``now``)
    state: str
    up: bool | None
    waiting_on: tuple[str, ...]
    worst: float | None
    last_run: float | None

    @property
    def real_value(self) -> bool:
        """Measured, not waiting, not an outage stand-in: a real reading again."""
        return (
            self.up is True
            and not self.waiting_on
            and self.state not in ("waiting", "down")
            and self.worst is not None
            and self.worst != float("inf")
        )


def _sample(doc: Mapping[str, Any], rule: Mapping[str, Any]) -> Sample:
    worst = rule.get("worst")
    return Sample(
        t=float(doc["now"]),
        state=str(rule["state"]),
        up=rule.get("up"),
        waiting_on=tuple(rule.get("waiting_on") or ()),
        worst=None if worst is None else number(worst.get("value")),
        last_run=number(rule.get("last_run")),
    )


class Timeline:
    """``with Timeline(sock) as tl: ... tl.wait("pg-up", lambda s: s.state == "firing")``.

    Keeps every sample (20 a second, a few thousand in a test), so "first
    seen ok after t" is exact to one poll. A state shorter than a poll (a
    rule that fires, restarts and verifies within 50 ms) can be missed:
    the audit rows are the evidence for those.
    """

    def __init__(self, source: Path | str | Callable[[], dict[str, Any]], period: float = POLL) -> None:
        """``source``: the control socket, or a function returning a status document (a daemon in a container)."""
        self.fetch: Callable[[], dict[str, Any]] = (
            source if callable(source) else lambda: status(source)
        )
        self.period = period
        self.samples: dict[str, list[Sample]] = {}
        self.last_doc: dict[str, Any] | None = None
        self.errors = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)

    def __enter__(self) -> Timeline:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                doc = self.fetch()
                if "rules" not in doc:
                    raise ControlError(f"not a status document: {doc}")
            except (OSError, ValueError, KeyError, ControlError):
                self.errors += 1  # not up yet, or going away: the next poll tells
            else:
                self._record(doc)
            self._stop.wait(self.period)

    def _record(self, doc: dict[str, Any]) -> None:
        with self._lock:
            self.last_doc = doc
            for rule in doc["rules"]:
                self.samples.setdefault(rule["name"], []).append(_sample(doc, rule))

    def of(self, rule: str) -> list[Sample]:
        with self._lock:
            return list(self.samples.get(rule, ()))

    def first(self, rule: str, predicate: Callable[[Sample], bool], after: float = 0.0) -> Sample | None:
        return next((s for s in self.of(rule) if s.t >= after and predicate(s)), None)

    def wait(
        self, rule: str, predicate: Callable[[Sample], bool], timeout: float, *, after: float = 0.0, what: str = ""
    ) -> Sample:
        try:
            found: Sample = wait_until(
                lambda: self.first(rule, predicate, after), timeout, what or f"rule {rule}", interval=0.02
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{rule} states seen: {self.story(rule)}") from None
        return found

    def changes(self, rule: str) -> list[Sample]:
        """The samples whose (state, up, waiting_on, real value) differ from the one before."""
        out: list[Sample] = []
        for sample in self.of(rule):
            key = (sample.state, sample.up, sample.waiting_on, sample.real_value)
            if not out or (out[-1].state, out[-1].up, out[-1].waiting_on, out[-1].real_value) != key:
                out.append(sample)
        return out

    def story(self, rule: str) -> str:
        """``31.20 ok/up, 32.21 firing/down, 33.90 ok/up`` (seconds mod 100): for figures and failure messages."""
        return ", ".join(
            f"{s.t % 100:.2f} {s.state}{'/up' if s.up else '/down' if s.up is False else ''}"
            + (f" on {','.join(s.waiting_on)}" if s.waiting_on else "")
            for s in self.changes(rule)
        )


class Availability:
    """Polls ``check()`` (does the service answer?) every 20 ms in a thread; records every flip with its time."""

    def __init__(self, check: Callable[[], bool], period: float = 0.02) -> None:
        self.check = check
        self.period = period
        self.flips: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="availability", daemon=True)

    def __enter__(self) -> Availability:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                up = bool(self.check())
            except Exception:  # a check that raises means "does not answer"
                up = False
            now = time.time()
            if not self.flips or self.flips[-1][1] != up:
                self.flips.append((now, up))
            self._stop.wait(self.period)

    def back_after(self, t: float) -> float | None:
        """When it answered again after having stopped answering at or after ``t``."""
        down = next((when for when, up in self.flips if when >= t and not up), None)
        if down is None:
            return None
        return next((when for when, up in self.flips if when > down and up), None)

    def went_down_after(self, t: float) -> bool:
        return any(when >= t and not up for when, up in self.flips)

    def up_now(self) -> bool:
        return bool(self.flips) and self.flips[-1][1]

    def wait_back(self, t: float, timeout: float, *, healed_at: float | None = None) -> float:
        """When it answered again after ``t``. ``healed_at``: when the fix finished; if no poll ever saw the
        service down (it was restarted within one poll), that moment stands for "back"."""

        def back() -> float | None:
            found = self.back_after(t)
            if found is not None:
                return found
            if healed_at is not None and not self.went_down_after(t) and self.up_now() \
                    and time.time() > healed_at + 10 * self.period:
                return healed_at
            return None

        when: float = wait_until(back, timeout, "the service to answer again")
        return when


# --------------------------------------------------------------------------- the daemon and one outage


class Observed:
    """A daemon seen from outside: a ``Timeline`` of its status, its audit log, its log lines."""

    timeline: Timeline

    def history(self, rule: str | None = None) -> list[dict[str, Any]]:
        raise NotImplementedError

    def log(self) -> str:
        return ""

    def verified_action(self, rule: str, timeout: float, *, after: float = 0.0) -> dict[str, Any]:
        """The rule's first ``ran`` audit row (at or after ``after``) once its verify is done (``detail.held``)."""

        def verified() -> dict[str, Any] | None:
            rows = [e for e in self.history(rule) if e["decision"] == "ran" and float(e["ts"]) >= after]
            return rows[0] if rows and "held" in (rows[0].get("detail") or {}) else None

        try:
            row: dict[str, Any] = wait_until(verified, timeout, f"{rule}'s action to run and be verified", interval=0.1)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\n{rule}: {self.timeline.story(rule)}\nhistory: {self.history()}\nlog:\n{self.log()}"
            ) from None
        return row


class Watched(Observed):
    """A daemon on a config of the caller's own (``write_config``), with a ``Timeline`` over its socket."""

    def __init__(self, directory: Path, body: str) -> None:
        self.config = write_config(directory, body)
        self.socket = directory / "control.sock"
        self.daemon = DaemonProcess(self.config)
        self.timeline = Timeline(self.socket)

    def __enter__(self) -> Watched:
        self.daemon.start()
        self.timeline.__enter__()
        try:
            wait_until(self._answers, 30, "watchdogd's control socket", interval=0.05)
        except AssertionError as exc:
            self.__exit__()
            raise AssertionError(f"{exc}\nlog:\n{self.log()}") from None
        return self

    def _answers(self) -> bool:
        if self.daemon.returncode is not None:
            raise AssertionError(f"watchdogd exited with {self.daemon.returncode}:\n{self.log()}")
        try:
            status(self.socket)
        except (OSError, ValueError, ControlError):
            return False
        return True

    def __exit__(self, *exc: object) -> None:
        self.timeline.__exit__()
        self.daemon.stop()

    def history(self, rule: str | None = None) -> list[dict[str, Any]]:
        return history(self.socket, rule)

    def log(self) -> str:
        """Everything the daemon logged so far (its stderr is read on demand)."""
        with contextlib.suppress(AssertionError):
            self.daemon.wait_for(lambda line: False, timeout=0.2)
        return "\n".join(self.daemon.lines)


@dataclass(frozen=True)
class Outage:
    """What one break-and-heal looked like from outside, on one clock."""

    broken: float  # just before the service was killed / frozen
    fired: float  # the rule first seen firing, or its action's decision (whichever is first)
    action: dict[str, Any]  # its verified ``ran`` audit row
    back: float  # the service answered again
    rule_ok: Sample  # the rule first seen ok with a real value after that
    dependent_ok: Sample | None  # the same for a rule that ``depends_on`` it

    @property
    def to_firing(self) -> float:
        return self.fired - self.broken

    @property
    def to_action_finished(self) -> float:
        return finished_at(self.action) - self.broken

    @property
    def back_to_ok(self) -> float:
        return self.rule_ok.t - self.back

    @property
    def back_to_dependent_ok(self) -> float | None:
        return None if self.dependent_ok is None else self.dependent_ok.t - self.back


def break_and_heal(
    w: Observed,
    rule: str,
    break_it: Callable[[], object],
    answers: Callable[[], bool],
    *,
    dependent: str | None = None,
    timeout: float = 60.0,
    poll: float = 0.02,
) -> Outage:
    """Break the service while ``answers()`` is watched; wait for: firing, the verified action, the service
    answering again, the rule (and ``dependent``) back to ok with real values."""
    tl = w.timeline
    with Availability(answers, poll) as seen:
        broken = time.time()
        break_it()
        action = w.verified_action(rule, timeout, after=broken)
        back = seen.wait_back(broken, timeout, healed_at=finished_at(action))
    # The row is written when the guard lets the action run, in the run that found the rule firing:
    # its ts is that run's time, exact even when fire -> act -> verified took less than one poll.
    seen_firing = tl.first(rule, lambda s: s.state == "firing", broken)
    fired = min(float(action["ts"]), seen_firing.t if seen_firing is not None else float("inf"))
    rule_ok = tl.wait(rule, lambda s: s.state == "ok" and s.real_value, timeout, after=back)
    dependent_ok = None
    if dependent is not None:
        dependent_ok = tl.wait(dependent, lambda s: s.state == "ok" and s.real_value, timeout, after=back)
    return Outage(broken, fired, action, back, rule_ok, dependent_ok)
