"""Scrape latency of watchdogd's /metrics next to Debian's prometheus-node-exporter, in one run.

Targets (issue 3): watchdogd p50 <= 0.3x node_exporter's p50, p99 <= 0.5x.

* ``watchdogd``: the daemon as a process with production defaults, 50 rules
  on a 5 s interval, so its state changes about ten times a second: a
  scrape renders the page again when it is more than 0.5 s old (scrapes
  in between share the last render), as it would in production.
* ``node_exporter``: default collectors, on a free loopback port.

The two are scraped in interleaved rounds so machine noise hits both alike.
Every request carries Prometheus' own Accept and Accept-Encoding headers and
reuses one keep-alive connection per target, as Prometheus does.

Also printed: what one render costs (snapshot + collect + format, measured
in-process over the same config), which is the CPU the daemon spends per
refresh off the request path.

Run: python bench/bench_scrape.py [--scrapes 500]

``--scale`` (issue 17) measures instead, at 10, 100 and 1,000 rules on a 5 s
interval (``--rules`` to choose):

* **render**: one whole render in-process (engine snapshot, formatting and
  gzip, OpenMetrics as Prometheus asks), p50/p99 over ``--renders`` renders;
  one rule runs before each render, or every rule with ``--all-changed`` (as
  under a 15 s Prometheus scrape of 5 s rules: every view and most lines are
  made again);
* **scrape**: the daemon as a process, scraped over one keep-alive
  connection every ``--spacing`` seconds (0.6 s: past the reuse window, so
  every scrape may render), p50/p99;
* **age**: at each scrape, the oldest ``probe_last_run_timestamp`` on the
  page, as seconds before the scrape; p50 and max (5 s rules: at most 5 s
  plus the run when the page is fresh).

To compare with an older tree, run it with ``PYTHONPATH=/tmp/before`` (the
script only uses ``Exposition.render``, ``build_registry`` and the daemon).
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import logging
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from watchdogd import __version__
from watchdogd.config import load_config
from watchdogd.engine.engine import Engine
from watchdogd.engine.state import StateStore
from watchdogd.faces.exporter import Exposition, build_registry

RULES = 50
ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
HEADERS = {"Accept": ACCEPT, "Accept-Encoding": "gzip", "User-Agent": "Prometheus/2.42.0"}
P50_RATIO, P99_RATIO = 0.3, 0.5

PROBES = [
    ("host.memory", "{}", "above: 0"),  # fires: a rule with live state
    ("host.memory", "{}", "above: 95"),
    ("host.cpu", "{}", "above: 99"),
    ("host.load", "{}", "above: 50"),
    ("host.swap", "{}", "above: 90"),
    ("host.disk", '{mountpoints: ["/"]}', "above: 99"),
    ("host.inodes", '{mountpoints: ["/"]}', "above: 99"),
    ("host.file_age", "{path: /etc/hostname}", "above: 365d"),  # the longest duration a config takes
    ("host.dir_size", "{path: /etc/default}", "above: 1GiB"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config_text(directory: Path, port: int, count: int = RULES) -> str:
    rules = []
    for n in range(count):
        probe, params, threshold = PROBES[n % len(PROBES)]
        rules.append(f"  r{n:04d}-{probe.split('.')[1]}:\n    probe: {probe}\n    params: {params}\n    {threshold}\n")
    return textwrap.dedent(f"""\
        interval: 5s
        grace: 0s
        listen: 127.0.0.1:{port}
        state_dir: {directory / 'state'}
        control_socket: {directory / 'control.sock'}
        rules:
        """) + "".join(rules)


def node_exporter_binary() -> str:
    path = shutil.which("prometheus-node-exporter")
    if path is None:
        print("installing prometheus-node-exporter (apt-get)...", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-q", "prometheus-node-exporter"], check=True)
        path = shutil.which("prometheus-node-exporter")
    assert path, "prometheus-node-exporter is not installed"
    return path


def wait_http(port: int, path: str, ok: Callable[[bytes], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            conn.close()
            if response.status == 200 and ok(body):
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"port {port}{path} did not become ready within {timeout:g}s")


class Target:
    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.times: list[float] = []
        self.size = 0
        self.body = b""

    def scrape(self) -> None:
        started = time.perf_counter()
        self.conn.request("GET", "/metrics", headers=HEADERS)
        response = self.conn.getresponse()
        body = response.read()
        self.times.append(time.perf_counter() - started)
        if response.status != 200:
            raise SystemExit(f"{self.name}: HTTP {response.status}")
        self.size = len(body)
        self.body = body

    def series(self) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", "/metrics", headers={"Accept": "text/plain;version=0.0.4"})
        text = conn.getresponse().read()
        conn.close()
        text = gzip.decompress(text) if text[:2] == b"\x1f\x8b" else text
        return sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def render_cost(config_path: Path, state_dir: Path, rounds: int = 30, all_changed: bool = False) -> tuple[float, float]:
    """p50 and p99 milliseconds of one full render (snapshot, OpenMetrics as Prometheus asks, gzip), in-process."""
    config = load_config(config_path)
    store = StateStore(state_dir / "render-cost.db", time.time)
    engine = Engine(config, store, {}, grace=False)
    try:
        for name in config.rules:
            engine.run_rule(name)
        # Nothing reused between renders: every call renders (and compresses) the whole page again.
        exposition = Exposition(build_registry(engine.snapshot, __version__), min_spacing=0.0, max_age=0.0)
        names = list(config.rules)
        times = []
        for n in range(rounds):
            for name in names if all_changed else [names[n % len(names)]]:  # some state moved since the last render
                engine.run_rule(name)
            exposition.changed()
            started = time.perf_counter()
            exposition.render(ACCEPT, True)
            times.append(time.perf_counter() - started)
    finally:
        engine.close()
        store.close()
    return percentile(times, 0.5) * 1000, percentile(times, 0.99) * 1000


LAST_RUN = re.compile(rb"^watchdogd_probe_last_run_timestamp_seconds\{[^}]*\} (\S+)$", re.M)


def start_daemon(workdir: Path, port: int, count: int) -> tuple[subprocess.Popen[bytes], Path]:
    config = workdir / "watchdogd.yaml"
    config.write_text(config_text(workdir, port, count))
    config.chmod(0o600)
    proc = subprocess.Popen(
        [sys.executable, "-m", "watchdogd.daemon", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=(workdir / "watchdogd.log").open("wb"),
    )
    return proc, config


def scale_row(count: int, args: argparse.Namespace) -> str:
    """One line of the scale table: render in-process, scrape over HTTP, data age at the scrape."""
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-scrape-{count}-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        port = free_port()
        proc, config = start_daemon(workdir, port, count)
        wait_http(port, "/metrics", lambda body: body.count(b"watchdogd_probe_success{") == count, timeout=180)
        target = Target("watchdogd", port)
        ages: list[float] = []
        for _ in range(args.scrapes):
            time.sleep(args.spacing)  # the pause between scrapes, never part of a figure
            target.scrape()
            scraped = time.time()
            body = gzip.decompress(target.body) if target.body[:2] == b"\x1f\x8b" else target.body
            stamps = [float(value) for value in LAST_RUN.findall(body)]
            ages.append(scraped - min(stamps))
        scrape50, scrape99 = (percentile(target.times, q) * 1000 for q in (0.5, 0.99))
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        proc = None
        render50, render99 = render_cost(config, workdir, args.renders, args.all_changed)
        return (f"{count:>6} {render50:>9.2f} {render99:>9.2f} {scrape50:>9.2f} {scrape99:>9.2f} "
                f"{percentile(ages, 0.5):>8.2f} {max(ages):>8.2f} {target.size:>9}")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def scale(args: argparse.Namespace) -> int:
    print(f"rules every 5 s; {args.scrapes} scrapes {args.spacing:g} s apart over one keep-alive connection, "
          f"Prometheus 2.42 headers (OpenMetrics, gzip); {args.renders} in-process renders; {os.cpu_count()} CPUs; "
          f"loadavg {Path('/proc/loadavg').read_text().split()[0]}")
    print(f"{'rules':>6} {'render50':>9} {'render99':>9} {'scrape50':>9} {'scrape99':>9} {'age50 s':>8} "
          f"{'age max':>8} {'gz bytes':>9}   (ms unless said)")
    for count in args.rules:
        print(scale_row(count, args), flush=True)
    print(f"loadavg after: {Path('/proc/loadavg').read_text().split()[0]}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scrapes", type=int, default=500)
    parser.add_argument("--scale", action="store_true", help="render/scrape/age at 10, 100 and 1,000 rules")
    parser.add_argument("--rules", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--renders", type=int, default=30)
    parser.add_argument("--all-changed", action="store_true", help="--scale: run every rule before each render")
    parser.add_argument("--spacing", type=float, default=0.6)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # the in-process engine's "firing" lines are not figures
    if args.scale:
        return scale(args)
    workdir = Path(tempfile.mkdtemp(prefix="bench-scrape-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        port = free_port()
        config = workdir / "watchdogd.yaml"
        config.write_text(config_text(workdir, port))
        config.chmod(0o600)
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "watchdogd.daemon", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=(workdir / "watchdogd.log").open("wb"),
        ))
        wait_http(port, "/metrics", lambda body: body.count(b"watchdogd_probe_success{") == RULES)
        node_port = free_port()
        processes.append(subprocess.Popen(
            [node_exporter_binary(), f"--web.listen-address=127.0.0.1:{node_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        wait_http(node_port, "/metrics", lambda body: b"node_" in body)
        targets = [Target("watchdogd", port), Target("node_exporter", node_port)]
        for target in targets:  # warm-up: connections, page cache, first renders
            for _ in range(20):
                target.scrape()
            target.times.clear()
        for _ in range(args.scrapes):
            for target in targets:
                target.scrape()

        print(f"{args.scrapes} scrapes per target, interleaved; {RULES} rules; "
              f"headers as Prometheus 2.42 (OpenMetrics preferred, gzip); {os.cpu_count()} CPUs")
        print(f"{'target':20} {'series':>7} {'bytes':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        figures = {}
        for target in targets:
            p50, p90, p99 = (percentile(target.times, q) * 1000 for q in (0.5, 0.9, 0.99))
            figures[target.name] = (p50, p99)
            print(f"{target.name:20} {target.series():>7} {target.size:>8} {p50:>8.2f} {p90:>8.2f} {p99:>8.2f} "
                  f"{max(target.times) * 1000:>8.2f}")
        node_p50, node_p99 = figures["node_exporter"]
        p50, p99 = figures["watchdogd"]
        r50, r99 = p50 / node_p50, p99 / node_p99
        ok = r50 <= P50_RATIO and r99 <= P99_RATIO
        print(f"watchdogd: p50 {r50:.2f}x node_exporter (target <= {P50_RATIO}), "
              f"p99 {r99:.2f}x (target <= {P99_RATIO}): {'PASS' if ok else 'FAIL'}")
        print(f"mean scrape: watchdogd {statistics.mean(targets[0].times) * 1000:.2f} ms, "
              f"node_exporter {statistics.mean(targets[1].times) * 1000:.2f} ms")
        cost50, cost99 = render_cost(config, workdir)
        print(f"one render of the whole exposition with gzip (in-process): p50 {cost50:.1f} ms, "
              f"p99 {cost99:.1f} ms; done by a scrape that finds the engine changed, at most every 0.5 s")
        return 0 if ok else 1
    finally:
        for proc in processes:
            proc.send_signal(signal.SIGTERM)
        for proc in processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
