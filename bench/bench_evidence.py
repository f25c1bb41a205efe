"""Evidence (issue 15): how long each family's ``describe`` takes, and how big it is, in a typical case.

Per family this machine can reach without changing anything the benchmark
did not create: the describe time (p50, p95, max over N calls) and the
largest JSON size, with the default limits (``evidence.timeout`` 2 s,
``evidence.max_bytes`` 64 KiB). Target: p95 <= 2 s and size <= 64 KiB (the
engine would abandon a slower describe and cut a bigger one).

What it reaches: host.cpu, host.memory, host.disk on "/", process.count (this
process's name), log.count on a temporary file it writes, net.http and net.tcp
against a local http.server it starts, postgres at 127.0.0.1:5432 (trust,
read-only describe), redis on its own redis-server with a few keys, docker
when a dockerd socket answers (read-only), systemd.unit when systemctl works.
The rest is printed as skipped. Everything it starts or writes is removed.

Run: PYTHONPATH=$PWD python3 bench/bench_evidence.py [-n 20]
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from tests.integration.faults.notify_support import percentile
from tests.integration.redis.server import RedisServer
from watchdogd.contracts import EvidenceLimits
from watchdogd.model import Reading
from watchdogd.registry import DEFAULT

TIMEOUT = 2.0  # evidence.timeout default
MAX_BYTES = 64 * 1024  # evidence.max_bytes default


@dataclass
class Case:
    family: str
    kind: str
    setup: str  # what the describe looked at
    times: list[float]
    sizes: list[int]
    sections: list[str]


class Skipped(Exception):
    pass


def probe_for(kind: str, target: Any = None, **params: Any) -> Any:
    spec = DEFAULT.probes[kind]
    return spec.factory(spec.params(**params), target, time.time)


@contextmanager
def connected(kind: str, **params: Any) -> Iterator[Any]:
    spec = DEFAULT.targets[kind]
    client = spec.connect(spec.params(**params))
    try:
        yield client
    finally:
        spec.close(client)


def run_case(family: str, kind: str, setup: str, probe: Any, readings: list[Reading], n: int) -> Case:
    if not readings:
        raise Skipped(f"{kind}: the probe measured no subjects")
    case = Case(family, kind, setup, [], [], [])
    for _ in range(n):
        started = time.monotonic()
        limits = EvidenceLimits(deadline=started + TIMEOUT, max_bytes=MAX_BYTES)
        sections = probe.describe(readings, limits)
        case.times.append(time.monotonic() - started)
        case.sizes.append(len(json.dumps(sections, default=str, separators=(",", ":")).encode()))
        case.sections = list(sections)
    return case


# --------------------------------------------------------------------------- local servers the bench starts


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = 128  # socketserver's 5 overflows under net.tcp's bare connects: 1 s SYN retries


@contextmanager
def http_server(root: Path) -> Iterator[int]:
    (root / "index.html").write_text("<html><body>" + "ok " * 600 + "</body></html>\n")
    handler = lambda *a, **k: _Quiet(*a, directory=str(root), **k)  # noqa: E731
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --------------------------------------------------------------------------- the families


def host_cases(n: int) -> Iterator[Case]:
    for kind, params, setup in (
        ("host.cpu", {}, "whole host"),
        ("host.memory", {}, "whole host"),
        ("host.disk", {"mountpoints": ["/"]}, 'mountpoint "/"'),
    ):
        probe = probe_for(kind, **params)
        yield run_case("host", kind, setup, probe, probe.measure(), n)


def process_case(n: int) -> Case:
    with open(f"/proc/{os.getpid()}/comm") as f:
        name = f.read().strip()
    probe = probe_for("process.count", name=[name])
    return run_case("process", "process.count", f"name {name}", probe, probe.measure(), n)


def log_case(n: int, tmp: Path) -> Case:
    path = tmp / "app.log"
    path.write_text("")
    probe = probe_for("log.count", path=str(path), pattern="ERROR")
    probe.measure()
    with path.open("a") as f:
        for i in range(500):
            level = "ERROR" if i % 5 == 0 else "INFO"
            f.write(f"2026-12-03T03:12:{i % 60:02d}Z {level} worker-{i % 7} request {i} took {i * 3} ms\n")
    readings = probe.measure()
    return run_case("logs", "log.count", "temp file, 100 of 500 lines match", probe, readings, n)


def net_cases(n: int, port: int) -> Iterator[Case]:
    probe = probe_for("net.http", url=f"http://127.0.0.1:{port}/index.html")
    yield run_case("net", "net.http", "local http.server, 1.8 KB page", probe, probe.measure(), n)
    probe = probe_for("net.tcp", host="localhost", port=port)
    yield run_case("net", "net.tcp", "localhost (each address)", probe, probe.measure(), n)


def postgres_case(n: int) -> Case:
    dsn = "host=127.0.0.1 port=5432 dbname=postgres user=postgres connect_timeout=3"
    try:
        with ExitStack() as own, connected("postgres", dsn=dsn) as client:
            # A few sessions of the bench's own (closed after), so the sections have rows to show.
            sessions = [own.enter_context(psycopg.connect(dsn, autocommit=True, application_name="bench-evidence"))
                        for _ in range(3)]
            sessions[0].autocommit = False
            sessions[0].execute("SELECT 1")  # idle in transaction
            probe = probe_for("postgres.connections", client)
            readings = probe.measure()
            return run_case("postgres", "postgres.connections", "127.0.0.1:5432 + 3 own sessions (read-only)",
                            probe, readings, n)
    except Skipped:
        raise
    except Exception as exc:
        raise Skipped(f"postgres: {' '.join(str(exc).split())[:120]}") from None


def redis_case(n: int, tmp: Path) -> Case:
    if shutil.which("redis-server") is None:
        raise Skipped("redis: no redis-server")
    with RedisServer(tmp) as server:
        seed = server.client()
        for i in range(50):
            seed.set(f"session:{i}", "x" * (100 * i))
            seed.rpush(f"queue:{i % 5}", *[f"job-{j}" for j in range(20)])
        seed.hset("big", mapping={f"f{j}": "v" * 50 for j in range(500)})
        seed.expire("big", 3600)
        with connected("redis", url=server.url) as target:
            probe = probe_for("redis.memory", target)
            readings = probe.measure()
            return run_case("redis", "redis.memory", "own redis-server, 56 keys", probe, readings, n)


def docker_case(n: int) -> Case:
    socket_path = "/var/run/docker.sock"
    if not os.path.exists(socket_path):
        raise Skipped("docker: skipped: no docker engine")
    try:
        with connected("docker") as engine:
            probe = probe_for("docker.engine", engine)
            readings = probe.measure()
            return run_case("docker", "docker.engine", "the machine's dockerd (read-only)", probe, readings, n)
    except Skipped:
        raise
    except Exception as exc:
        raise Skipped(f"docker: skipped: no docker engine ({' '.join(str(exc).split())[:100]})") from None


def systemd_case(n: int) -> Case:
    try:
        works = subprocess.run(["systemctl", "list-units", "--no-pager", "--no-legend", "-q"],
                               check=False, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        works = False
    if not works:
        raise Skipped("systemd.unit: skipped: systemctl does not work here (systemd is not PID 1)")
    probe = probe_for("systemd.unit", units=["*.service"])
    return run_case("systemd", "systemd.unit", "*.service", probe, probe.measure(), n)


# --------------------------------------------------------------------------- report


def report(cases: list[Case], skipped: list[str], n: int) -> bool:
    print(f"evidence describe, default limits (timeout {TIMEOUT:g} s, max_bytes {MAX_BYTES // 1024} KiB), "
          f"N={n} calls each, {os.cpu_count()} logical cores")
    print("target: p95 <= 2 s, size <= 64 KiB")
    print(f"{'probe':<22} {'p50':>8} {'p95':>8} {'max':>8} {'size max':>10}  {'verdict':<7}  typical case")
    ok = True
    for c in cases:
        p95, size = percentile(c.times, 95), max(c.sizes)
        good = p95 <= TIMEOUT and size <= MAX_BYTES
        ok = ok and good
        print(f"{c.kind:<22} {percentile(c.times, 50) * 1000:6.1f}ms {p95 * 1000:6.1f}ms "
              f"{max(c.times) * 1000:6.1f}ms {size / 1024:7.1f}KiB  "
              f"{'ok' if good else 'OVER':<7}  {c.setup}")
    for line in skipped:
        print(f"  {line}")
    print("sections:")
    for c in cases:
        print(f"  {c.kind}: {', '.join(c.sections)}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="describe calls per family (default 20)")
    n = parser.parse_args().n
    cases: list[Case] = []
    skipped: list[str] = []

    def attempt(make: Callable[[], Case | Iterator[Case]]) -> None:
        try:
            made = make()
            cases.extend([made] if isinstance(made, Case) else list(made))
        except Skipped as exc:
            skipped.append(f"skipped: {exc}" if "skipped" not in str(exc) else str(exc))

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wd-bench-evidence-")))
        (tmp / "www").mkdir()
        port = stack.enter_context(http_server(tmp / "www"))
        attempt(lambda: host_cases(n))
        attempt(lambda: process_case(n))
        attempt(lambda: log_case(n, tmp))
        attempt(lambda: net_cases(n, port))
        attempt(lambda: postgres_case(n))
        attempt(lambda: redis_case(n, tmp))
        attempt(lambda: docker_case(n))
        attempt(lambda: systemd_case(n))
    return 0 if report(cases, skipped, n) else 1


if __name__ == "__main__":
    raise SystemExit(main())
