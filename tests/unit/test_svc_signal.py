"""process.signal against real child processes: TERM, KILL after grace, identity checks, refusals."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from watchdogd.families.process import procfs
from watchdogd.families.process.actions import ACTIONS, SignalAction, SignalParams
from watchdogd.families.process.probes import PROBES
from watchdogd.model import Reading

IDLE = "import time\nprint('ready', flush=True)\nwhile True: time.sleep(1)"
STUBBORN = (
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\nwhile True: time.sleep(1)"
)
# os.write, not print: a SIGHUP landing while print('ready') is still inside the buffered writer would
# make the handler's print a reentrant call (seen once in a container) and kill the child.
HUP_ECHO = (
    "import os, signal, sys, time\n"
    "signal.signal(signal.SIGHUP, lambda *_: os.write(1, b'reloaded\\n'))\n"
    "print('ready', flush=True)\nwhile True: time.sleep(1)"
)


@pytest.fixture
def token() -> str:
    return f"svc-signal-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    children: list[subprocess.Popen[bytes]] = []

    def start(code: str, *args: str) -> subprocess.Popen[bytes]:
        child = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE)
        children.append(child)
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        return child

    yield start
    for child in children:
        child.kill()
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()


def readings(token: str) -> dict[int, Reading]:
    spec = PROBES["process.rss"]
    probe = spec.factory(spec.params.model_validate({"cmdline": token}), None, time.time)
    return {r.details["pid"]: r for r in probe.measure()}


def action(**params: Any) -> SignalAction:
    spec = ACTIONS["process.signal"]
    built = spec.factory(spec.params.model_validate(params), None, time.time)
    assert isinstance(built, SignalAction)
    return built


def alive(child: subprocess.Popen[bytes]) -> bool:
    stat = procfs.read_stat(child.pid)
    return stat is not None and not stat.zombie


def test_term_reaches_only_the_given_process(spawn: Callable[..., Any], token: str) -> None:
    target, sibling = spawn(IDLE, token, "a"), spawn(IDLE, token, "b")
    result = action(grace="5s").run([readings(token)[target.pid]], dry_run=False)
    assert result.ok, result
    [item] = result.items
    assert item.subject == f"pid:{target.pid}"
    assert "sent SIGTERM" in item.detail and "exited after" in item.detail
    assert item.info["pid"] == target.pid and item.info["signal"] == "TERM"
    assert target.wait(timeout=5) == -15
    assert alive(sibling)


def test_kill_after_grace_for_a_process_ignoring_term(spawn: Callable[..., Any], token: str) -> None:
    stubborn = spawn(STUBBORN, token)
    started = time.monotonic()
    result = action(grace="0.5s", timeout="10s").run(list(readings(token).values()), dry_run=False)
    assert result.ok, result
    assert "still running after 0.5s" in result.items[0].detail and "sent SIGKILL" in result.items[0].detail
    assert stubborn.wait(timeout=5) == -9
    assert time.monotonic() - started >= 0.5


def test_without_escalation_a_survivor_is_a_failure(spawn: Callable[..., Any], token: str) -> None:
    stubborn = spawn(STUBBORN, token)
    result = action(grace="0.3s", kill_after_grace=False).run(list(readings(token).values()), dry_run=False)
    assert not result.ok
    assert "still running after 0.3s" in result.items[0].detail
    assert alive(stubborn)


def test_a_reused_pid_is_never_signalled(spawn: Callable[..., Any], token: str) -> None:
    child = spawn(IDLE, token)
    real = readings(token)[child.pid]
    # The same pid, but the process the probe measured started at another time: a different process.
    impostor = Reading(real.subject, real.value, {**real.details, "start_ticks": real.details["start_ticks"] - 1})
    result = action().run([impostor], dry_run=False)
    assert result.ok
    assert "now belongs to another process" in result.items[0].detail
    assert alive(child)


def test_exited_process_is_reported_not_signalled(spawn: Callable[..., Any], token: str) -> None:
    child = spawn(IDLE, token)
    reading = readings(token)[child.pid]
    child.kill()
    child.wait()
    result = action().run([reading], dry_run=False)
    assert result.ok and "already exited" in result.items[0].detail


def test_dry_run_reports_and_signals_nothing(spawn: Callable[..., Any], token: str) -> None:
    child = spawn(IDLE, token)
    result = action(grace="3s").run(list(readings(token).values()), dry_run=True)
    assert result.ok and result.detail.startswith("would signal 1 of 1")
    assert result.items[0].detail == (
        f"would send SIGTERM to pid {child.pid} and wait up to 3s for it to exit, then SIGKILL if still running"
    )
    assert alive(child)


def test_never_signals_init_itself_or_its_ancestors() -> None:
    me = procfs.read_stat(os.getpid())
    assert me is not None
    protected = []
    for pid in (1, os.getpid(), os.getppid()):
        stat = procfs.read_stat(pid)
        assert stat is not None
        protected.append(Reading(f"pid:{pid}", 1.0, {"pid": pid, "start_ticks": stat.start_ticks}))
    result = action().run(protected, dry_run=False)
    assert not result.ok
    details = [item.detail for item in result.items]
    assert details == [
        "refused: pid 1 is init",
        f"refused: pid {os.getpid()} is watchdogd itself",
        f"refused: pid {os.getppid()} is an ancestor of watchdogd",
    ]


def test_a_reading_without_a_process_is_refused() -> None:
    result = action().run([Reading("name=nginx", 0.0, {"pids": [1, 2]})], dry_run=False)
    assert not result.ok
    assert "names no process" in result.items[0].detail


def test_hup_is_sent_without_waiting(spawn: Callable[..., Any], token: str) -> None:
    child = spawn(HUP_ECHO, token)
    result = action(signal="HUP").run(list(readings(token).values()), dry_run=False)
    assert result.ok and result.items[0].detail == "sent SIGHUP"
    assert child.stdout is not None and child.stdout.readline() == b"reloaded\n"
    assert alive(child)


def test_fallback_without_pidfds(monkeypatch: pytest.MonkeyPatch, spawn: Callable[..., Any], token: str) -> None:
    """Kernels before 5.3: identity re-checked right before kill(), exit found by polling /proc."""
    monkeypatch.delattr(os, "pidfd_open")
    stubborn = spawn(STUBBORN, token)
    result = action(grace="0.3s").run(list(readings(token).values()), dry_run=False)
    assert result.ok, result
    assert "sent SIGKILL" in result.items[0].detail
    assert stubborn.wait(timeout=5) == -9


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"signal": "HUP", "kill_after_grace": True}, "only TERM, INT or QUIT escalate"),
        ({"grace": "2m"}, "must be shorter than the action's timeout"),
        ({"signal": "STOP"}, "Input should be"),
        ({"max_per_run": 0}, "greater than or equal to 1"),
    ],
)
def test_bad_params(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SignalParams.model_validate(params)
