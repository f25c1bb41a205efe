"""Hostile clients for the storm tests and the bench: slow-loris over TCP, idle clients on a unix socket.

The attackers run in a child process (``python -m tests.integration.faults.clients_support``), so
they never share the GIL with the server under test: what a real attacker costs the daemon is what
its own event loop and threads pay, not what a Python thread in the same process would steal.
Every attacker reopens a connection as soon as the server drops it, the most hostile behaviour.
"""

from __future__ import annotations

import argparse
import http.client
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
TRICKLE_EVERY = 0.5
"""Seconds between the bytes a trickling slow-loris connection sends."""


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (a storm of 200 needs more than the usual 1024 in a busy test run)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --------------------------------------------------------------------------- the attackers (child process)


def _open_tcp(host: str, port: int, trickle: bool) -> socket.socket | None:
    try:
        sock = socket.create_connection((host, port), timeout=2)
        if trickle:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    except OSError:
        return None
    sock.setblocking(False)
    return sock


def _open_unix(path: str) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(2)
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    sock.setblocking(False)
    return sock


def attack(opener: Callable[[int], socket.socket | None], count: int, trickling: Callable[[int], bool]) -> None:
    """Hold ``count`` connections until stdin closes; print ``ready`` once all are open the first time."""
    socks: list[socket.socket | None] = [opener(index) for index in range(count)]
    print(f"ready {sum(s is not None for s in socks)} reopened 0", flush=True)
    reopened = 0
    with selectors.DefaultSelector() as selector:
        selector.register(sys.stdin, selectors.EVENT_READ)
        next_trickle = time.monotonic() + TRICKLE_EVERY
        while True:
            if selector.select(timeout=0.05):
                return  # stdin closed or written: the test is done with us
            trickle_now = time.monotonic() >= next_trickle
            if trickle_now:
                next_trickle += TRICKLE_EVERY
            for index, sock in enumerate(socks):
                if sock is None or _dropped(sock, trickle_now and trickling(index)):
                    if sock is not None:
                        sock.close()
                    socks[index] = opener(index)
                    reopened += 1
            if trickle_now:
                print(f"reopened {reopened}", flush=True)


def _dropped(sock: socket.socket, trickle: bool) -> bool:
    try:
        if trickle:
            sock.send(b"x")
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="kind", required=True)
    loris = sub.add_parser("slowloris")
    loris.add_argument("host")
    loris.add_argument("port", type=int)
    loris.add_argument("count", type=int)
    idle = sub.add_parser("idle-unix")
    idle.add_argument("path")
    idle.add_argument("count", type=int)
    args = parser.parse_args(argv)
    raise_nofile()
    if args.kind == "slowloris":
        # Half send nothing at all, half a head that never ends, one byte every TRICKLE_EVERY.
        attack(lambda i: _open_tcp(args.host, args.port, i % 2 == 1), args.count, lambda i: i % 2 == 1)
    else:
        attack(lambda i: _open_unix(args.path), args.count, lambda i: False)


# --------------------------------------------------------------------------- the test side


@dataclass
class Attackers:
    """The child process; ``reopened`` (connections the server dropped and the attackers reopened) is set at exit."""

    process: subprocess.Popen[str]
    reopened: int = 0


@contextmanager
def storm(*argv: str) -> Iterator[Attackers]:
    """Start the attackers, wait until every connection is open once, stop them (by pid) at the end."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.faults.clients_support", *argv],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    attackers = Attackers(child)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("ready"), f"the attackers did not start: {line!r}"
        yield attackers
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        out = child.stdout.read() if child.stdout is not None else ""
        counts = [int(line.split()[-1]) for line in out.splitlines() if line.startswith("reopened")]
        attackers.reopened = counts[-1] if counts else 0


@dataclass(frozen=True)
class Tally:
    attempts: int
    ok: int
    p50: float
    p99: float
    worst: float

    @property
    def rate(self) -> float:
        return self.ok / self.attempts if self.attempts else 0.0

    def line(self) -> str:
        return (f"{self.ok}/{self.attempts} ok ({100 * self.rate:.1f} %), p50 {1000 * self.p50:.1f} ms, "
                f"p99 {1000 * self.p99:.1f} ms, worst {1000 * self.worst:.1f} ms")


def tally(results: list[tuple[bool, float]]) -> Tally:
    latencies = sorted(latency for ok, latency in results if ok) or [0.0]
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    return Tally(len(results), sum(ok for ok, _ in results), statistics.median(latencies), p99, latencies[-1])


def scrape_once(host: str, port: int, timeout: float) -> tuple[bool, float]:
    """A fresh connection per scrape, as a Prometheus whose idle connection was closed would do."""
    started = time.monotonic()
    try:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            ok = response.status == 200 and b"watchdogd_" in response.read()
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        ok = False
    return ok, time.monotonic() - started


def every(period: float, duration: float, action: Callable[[], tuple[bool, float]]) -> list[tuple[bool, float]]:
    """Run ``action`` every ``period`` seconds for ``duration`` seconds, on a fixed schedule."""
    results = []
    start = time.monotonic()
    tick = 0
    while time.monotonic() - start < duration:
        results.append(action())
        tick += 1
        pause = start + tick * period - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    return results


if __name__ == "__main__":
    main()
