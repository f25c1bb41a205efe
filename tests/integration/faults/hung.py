"""Hung probes on demand, and a canary observer: shared by the fault test and bench/bench_hung_probes.py.

A hung probe is a ``net.http`` rule against a server that accepts and never
answers, with a client timeout (60 s) far past the rule's: the probe thread
stays stuck in ``recv`` long after the engine gave up on it. Canaries are
cheap host rules whose run times show whether anything else was held up.
Stdlib only, plus ``watchdogd.faces.cli.call``.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watchdogd.faces.cli import call


class BlackHole:
    """Accepts and holds connections until closed; an HTTP client with a long timeout waits on it."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = int(self._sock.getsockname()[1])
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._held.append(conn)

    @property
    def connections(self) -> int:
        return len(self._held)

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked in the thread
        except OSError:
            pass
        self._sock.close()
        for conn in self._held:
            conn.close()


def hung_rules(port: int, count: int, interval: float) -> str:
    """YAML for ``count`` rules whose probes hang on the black hole at ``port`` (rule timeout 0.5 s)."""
    return "".join(
        f"""
  hung-{n}:
    probe: net.http
    params: {{url: "http://127.0.0.1:{port}/{n}", timeout: 60s}}
    above: 2s
    every: {interval}s
    timeout: 0.5s"""
        for n in range(count)
    )


def canary_rules(count: int, interval: float) -> str:
    return "".join(
        f"""
  canary-{n}: {{probe: host.memory, above: 100, every: {interval}s}}"""
        for n in range(count)
    )


def rules(sock: Path) -> dict[str, dict[str, Any]]:
    return {rule["name"]: rule for rule in call(str(sock), "status")["rules"]}


@dataclass
class CanaryRuns:
    """Each canary's run times (its ``last_run`` as status showed it) and how often it was seen down."""

    interval: float
    runs: dict[str, list[float]] = field(default_factory=dict)
    downs: int = 0

    @property
    def gaps(self) -> list[float]:
        return [b - a for seen in self.runs.values() for a, b in zip(seen, seen[1:], strict=False)]

    @property
    def lateness(self) -> float:
        """The longest wait between two runs of one canary beyond its interval."""
        return max(self.gaps) - self.interval

    def line(self) -> str:
        gaps = sorted(self.gaps)
        p99 = gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))]
        return (
            f"{sum(map(len, self.runs.values()))} canary runs, gap p50 {statistics.median(gaps):.3f}s"
            f" p99 {p99:.3f}s max {gaps[-1]:.3f}s (lateness {self.lateness:.3f}s), down samples {self.downs}"
        )


def observe(sock: Path, names: list[str], interval: float, seconds: float) -> CanaryRuns:
    """Sample status every 50 ms for ``seconds``; the sampling period of an observer, not a wait for an event."""
    seen = CanaryRuns(interval, {name: [] for name in names})
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        current = rules(sock)
        for name, runs in seen.runs.items():
            rule = current[name]
            seen.downs += rule["up"] is False
            if rule["last_run"] is not None and (not runs or rule["last_run"] != runs[-1]):
                runs.append(rule["last_run"])
        time.sleep(0.05)
    return seen
