"""Run watchdogd as a real process on a temp directory.

Tests wait on events (a log line, a file, a socket), never on fixed sleeps:
``DaemonProcess.wait_for_log`` reads the daemon's stderr line by line with a
deadline.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watchdogd.launch import daemon_argv, interpreter

DAEMON_PYCACHE = Path(__file__).resolve().parents[1] / "build" / "daemon-pycache"
"""The test daemons' ``-OO`` bytecode (the unit's: /var/cache/watchdogd), in the checkout, not the interpreter's."""
DAEMON_PYTHON = interpreter(sys.executable, DAEMON_PYCACHE)
"""The interpreter as the unit starts the daemon's (watchdogd.launch): every test daemon runs with ``-OO``."""
WATCHDOGD = daemon_argv(sys.executable, DAEMON_PYCACHE)
WATCHDOGCTL = [sys.executable, "-m", "watchdogd.faces.cli"]


def write_config(directory: Path, body: str, *, name: str = "watchdogd.yaml", mode: int = 0o640) -> Path:
    """Write a config whose state/socket live under ``directory``; ``body`` is YAML (dedented).

    ``listen: null`` unless the body sets it, so parallel tests never fight over a port.
    """
    text = textwrap.dedent(body)
    defaults = {
        "state_dir": str(directory / "state"),
        "control_socket": str(directory / "control.sock"),
        "listen": "null",
        "grace": "0s",
    }
    header = "".join(f"{key}: {value}\n" for key, value in defaults.items() if f"\n{key}:" not in f"\n{text}")
    path = directory / name
    path.write_text(header + text, encoding="utf-8")
    path.chmod(mode)
    return path


def run(
    argv: list[str], *, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, check=False
    )


def run_once(config: Path, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run([*WATCHDOGD, "--config", str(config), "--once", *extra], timeout=timeout)


def ctl(
    *args: str, timeout: float = 30, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run([*WATCHDOGCTL, *args], timeout=timeout, env=env)


class DaemonProcess:
    """``with DaemonProcess(config) as d: d.wait_for_log("firing", rule="x")``."""

    def __init__(self, config: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.argv = [*WATCHDOGD, "--config", str(config), *extra]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()

    def __enter__(self) -> DaemonProcess:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        self.lines = []
        self._queue = queue.Queue()
        self.proc = subprocess.Popen(
            self.argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=self.env
        )
        # The reader gets its own queue: after a kill -9 and start() again, the old reader's end-of-stream
        # marker must land in the old queue, not read as "the new daemon exited".
        threading.Thread(target=self._pump, args=(self.proc, self._queue), daemon=True).start()

    @staticmethod
    def _pump(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 30.0) -> str:
        """Return the first new stderr line matching ``predicate``; fail with the log so far."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    "timed out waiting for a log line; log so far:\n" + "\n".join(self.lines)
                )
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError("daemon exited; log:\n" + "\n".join(self.lines))
            self.lines.append(line)
            if predicate(line):
                return line

    def wait_for_log(self, message: str, timeout: float = 30.0, **fields: str) -> str:
        """Wait for a line whose message contains ``message`` and whose key=value fields match."""
        wanted = [f"{key}={value}" for key, value in fields.items()]
        return self.wait_for(lambda line: message in line and all(w in line.split() for w in wanted), timeout)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()


def wait_until(
    predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition", *, interval: float = 0.05
) -> Any:
    """Poll ``predicate`` until it returns something truthy and return that; fail naming ``what`` at the deadline.

    For conditions outside the daemon's log (a process gone, a key deleted, a port open): a bounded
    poll, never a fixed sleep.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def free_port() -> int:
    """A loopback port that was free a moment ago (tests bind it right after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
