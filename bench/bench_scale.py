"""What watchdogd costs as its rules grow: 10, 100 and 1,000 mixed rules every 5 s, and 1,000 under contention.

Issue 17's scale table, taken on the real daemon (``python -m watchdogd.daemon``
with the interpreter running this script and the unit's flags, ``-OO`` with a
bytecode cache of the benchmark's own, compiled before the first row;
``--unoptimized`` leaves them out), one daemon per row in a temp dir of its
own, next to node_exporter and Monit measured in the same run.

Per row:

* **CPU % of one core**: utime+stime of all threads (``/proc/<pid>/stat``) over
  a steady window that starts once every rule has run once (60 s, ``--quick``
  20 s), while /metrics is scraped every 15 s as Prometheus would.
* **RSS MiB**: ``VmRSS`` at the end of the row, and the largest seen (sampled
  every second from the start of the daemon to its end).
* **status p50 / p90**: wall time of 20 ``python -m watchdogd.faces.cli --socket
  S status``, interpreter start included (what an operator waits for).
* **/metrics p50 / p99**: 50 scrapes after 10 warm-up on one keep-alive
  connection, Prometheus' Accept (OpenMetrics) and gzip.
* **render**: the daemon's own render-time metric when /metrics exposes one
  (otherwise the scrape p50, said so in the table), taken two ways: **after
  an interval** (a scrape, a pause of one interval and a half second so that
  every rule ran since, a scrape that renders every rule's change, and one
  more 0.6 s later that reads what that render took: what a Prometheus
  scraping every 15 s costs; p50 of 5, ``--quick`` 3) and **0.5 s apart**
  (p50 over the 50 back-to-back scrapes, each rendering what changed in the
  0.5 s the daemon reuses a page for). The target is judged on the first.
* **data age**: at 20 random moments, the moment the scrape was sent minus
  each rule's ``watchdogd_probe_last_run_timestamp_seconds``; the largest
  over rules and scrapes, against the rules' 5 s interval. The scrape's
  start is what Prometheus stamps the samples with (before 2026-12-06 the
  moment its answer arrived was used, which added the render and transfer,
  about 30 ms at 1,000 rules, to every age).

The "under contention" row runs one busy loop per core (child processes of
this script) from before the daemon starts until it is stopped.

The rules never act (no actions) and read only: host.disk, host.inodes,
host.file_age (files of this script's temp dir), host.memory, host.load,
process.* (redis-server, postgres and the daemon itself), net.tcp (a listener
of this script's own), postgres.* read-only probes on 127.0.0.1:5432 (role
``postgres``, trust auth), redis.* read-only probes on 127.0.0.1:6379, and
docker.* only when a Docker engine answers. A service that is not there drops
its family from the mix (the output says which families were in it).

Exit 0 when every target is met, 1 when one is missed or could not be
measured, 2 when the benchmark could not run, 130 when interrupted; daemons,
burners, listener and temp dirs are removed in every case.

Run: python bench/bench_scale.py [--quick] [--rules 10,100,1000] [--no-contention] [--window SECONDS]
     [--unoptimized]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.client
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from sidebyside import monitrc, procstats
from sidebyside.percentiles import percentile
from sidebyside.processes import BenchError, Child, free_port, wait_until
from sidebyside.provision import binary
from sidebyside.scrape import Scraper, fetch_text, probe_success
from sidebyside.steady import shipped_daemon

INTERVAL_S = 5.0
DEFAULT_RULES = (10, 100, 1000)
CONTENTION_RULES = 1000
WINDOW_S, QUICK_WINDOW_S = 60.0, 20.0
SCRAPE_EVERY_S = 15.0
STATUS_CALLS = 20
SCRAPES, WARMUP_SCRAPES = 50, 10
FULL_RENDERS, QUICK_FULL_RENDERS = 5, 3
READ_AFTER_S = 0.6
"""Past the daemon's 0.5 s page reuse, so the next scrape renders again and shows the previous render's time."""
FRESHNESS_MOMENTS = 20
READY_TIMEOUT_S = 300.0

CPU_TARGET = 3.0  # % of one core
RSS_TARGET = 60.0  # MiB
STATUS_TARGET = 100.0  # ms, p50
RENDER_TARGET = 20.0  # ms
AGE_TARGET = INTERVAL_S  # s

PG = ("127.0.0.1", 5432)
REDIS = ("127.0.0.1", 6379)
DOCKER_SOCKET = Path("/var/run/docker.sock")

LAST_RUN = re.compile(r'^watchdogd_probe_last_run_timestamp_seconds\{(?P<labels>[^}]*)\} (?P<value>\S+)', re.M)
RULE_LABEL = re.compile(r'(?:^|,)rule="(?P<rule>[^"]*)"')
RENDER_METRIC = re.compile(r'^(?P<name>watchdogd_\w*render\w*seconds)(?:\{[^}]*\})? (?P<value>\S+)', re.M)
"""A render-time figure, if the daemon exposes one (a gauge of the last render, or a summary's ``_sum``)."""
RENDER_CPU_METRIC = "watchdogd_exposition_render_cpu_seconds"
"""The render's own CPU time (its thread's), without its waits for the interpreter lock."""


# --- the mix -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Template:
    """One kind of rule in the mix: never acts, never fires on a healthy host, reads only."""

    probe: str
    params: str
    threshold: str
    needs: str = ""
    """The service it reads ("postgres", "redis", "docker"); empty: any host."""

    @property
    def family(self) -> str:
        return self.probe if self.probe.startswith("host.") else self.probe.split(".")[0] + ".*"


def templates(files_glob: str, tcp_port: int, own_cmdline: str) -> list[Template]:
    """The mix, families interleaved so that even 10 rules hold most of them."""
    return [
        Template("host.disk", "{}", "above: 99"),
        Template("process.count", "{name: [redis-server]}", "above: 100000"),
        Template("postgres.up", "{}", "above: 5s", "postgres"),
        Template("redis.up", "{}", "above: 5s", "redis"),
        Template("net.tcp", f"{{host: 127.0.0.1, port: {tcp_port}}}", "above: 5s"),
        Template("host.memory", "{}", "above: 99"),
        Template("host.file_age", f"{{path: '{files_glob}'}}", "above: 365d"),
        Template("process.rss", f"{{cmdline: '{own_cmdline}'}}", "above: 100GiB"),
        Template("postgres.connections", "{}", "above: 99", "postgres"),
        Template("redis.memory", "{}", "above: 99", "redis"),
        Template("host.inodes", "{}", "above: 99"),
        Template("host.load", "{period: 1}", "above: 1000"),
        Template("process.cpu", "{name: [postgres]}", "above: 100"),
        Template("postgres.idle", "{}", "above: 30d", "postgres"),
        Template("redis.clients", "{}", "above: 99", "redis"),
        Template("process.fds", "{name: [redis-server]}", "above: 99"),
        Template("postgres.long_query", "{}", "above: 30d", "postgres"),
        Template("redis.queue_length", "{keys: [watchdogd-bench-scale-absent]}", "above: 1000000000", "redis"),
        Template("process.age", "{name: [postgres]}", "above: 365d"),
        Template("host.disk", "{mountpoints: ['/']}", "above: 99"),
        Template("postgres.idle_in_transaction", "{}", "above: 30d", "postgres"),
        Template("redis.blocked_clients", "{}", "above: 100000", "redis"),
        Template("process.count", f"{{cmdline: '{own_cmdline}'}}", "above: 100000"),
        Template("postgres.blocking", "{}", "above: 100000", "postgres"),
        Template("docker.engine", "{}", "above: 5s", "docker"),
        Template("docker.containers", "{names: [watchdogd-bench-scale-absent]}", "above: 365d", "docker"),
    ]


def mix(count: int, kinds: Sequence[Template], available: frozenset[str]) -> list[Template]:
    """``count`` rules cycling through the kinds whose service is there."""
    usable = [t for t in kinds if not t.needs or t.needs in available]
    if not usable:
        raise ValueError("no rule kind is usable on this host")
    return [usable[n % len(usable)] for n in range(count)]


def family_counts(rules: Sequence[Template]) -> list[tuple[str, int]]:
    counts = Counter(t.family for t in rules)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def rule_name(index: int, template: Template) -> str:
    return f"r{index:04d}-{template.probe.replace('.', '-').replace('_', '-')}"


def config_text(workdir: Path, port: int, rules: Sequence[Template], available: frozenset[str]) -> str:
    """A policy of ``rules``; only state_dir, control_socket and listen moved, jitter left at its default."""
    lines = [
        f"interval: {INTERVAL_S:g}s",
        f"listen: 127.0.0.1:{port}",
        f"state_dir: {workdir / 'state'}",
        f"control_socket: {workdir / 'control.sock'}",
        "targets:",
    ]
    if "postgres" in available:
        lines += ["  postgres:", "    main:", f'      dsn: "postgresql://postgres@{PG[0]}:{PG[1]}/postgres"']
    if "redis" in available:
        lines += ["  redis:", "    cache:", f'      url: "redis://{REDIS[0]}:{REDIS[1]}/0"']
    if "docker" in available:
        lines += ["  docker:", "    local:", f'      url: "unix://{DOCKER_SOCKET}"']
    if lines[-1] == "targets:":
        lines[-1] = "targets: {}"
    lines.append("rules:")
    for index, template in enumerate(rules):
        lines += [f"  {rule_name(index, template)}:", f"    probe: {template.probe}",
                  f"    params: {template.params}", f"    {template.threshold}"]
    return "\n".join(lines) + "\n"


# --- what /metrics says --------------------------------------------------------------------------------

def last_runs(text: str) -> dict[str, float]:
    """rule -> its newest ``watchdogd_probe_last_run_timestamp_seconds`` (absent before its first run)."""
    found: dict[str, float] = {}
    for match in LAST_RUN.finditer(text):
        rule = RULE_LABEL.search(match["labels"])
        if rule is not None:
            found[rule["rule"]] = max(float(match["value"]), found.get(rule["rule"], float("-inf")))
    return found


def max_age(text: str, now: float, rules: int) -> float | None:
    """The oldest rule's data at ``now``, in seconds; None unless all ``rules`` have run."""
    runs = last_runs(text)
    if len(runs) < rules:
        return None
    return max(now - ts for ts in runs.values())


def render_metric(text: str) -> tuple[str, float] | None:
    """A render-time metric the daemon exposes, if any: (name, seconds), the largest of its samples."""
    found = [(m["name"], float(m["value"])) for m in RENDER_METRIC.finditer(text) if m["name"] != RENDER_CPU_METRIC]
    return max(found, key=lambda item: item[1]) if found else None


def render_cpu(text: str) -> float | None:
    """The daemon's ``watchdogd_exposition_render_cpu_seconds``, if it has one."""
    found = [float(m["value"]) for m in RENDER_METRIC.finditer(text) if m["name"] == RENDER_CPU_METRIC]
    return found[0] if found else None


def body_text(body: bytes) -> str:
    return (gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body).decode(errors="replace")


# --- the table -----------------------------------------------------------------------------------------

@dataclass
class Row:
    label: str
    rules: int
    contention: bool = False
    cpu_percent: float | None = None
    rss_end_mib: float | None = None
    rss_max_mib: float | None = None
    status_ms: tuple[float, float] | None = None  # p50, p90
    scrape_ms: tuple[float, float] | None = None  # p50, p99
    render_ms: float | None = None
    """p50 of the render-time metric over the back-to-back scrapes (0.5 s apart)."""
    render_full_ms: tuple[float, float] | None = None
    """p50 and max of renders after a whole interval (every rule changed), the target's figure."""
    render_full_cpu_ms: float | None = None
    """p50 of the same renders' CPU time (the rendering thread's), when the daemon exposes it."""
    render_source: str = ""
    render_metric: str = ""
    """The daemon's render-time metric the figure comes from; empty: the scrape p50 stands for it."""
    max_age_s: float | None = None
    age_p50_s: float | None = None
    probes_down: int = 0
    error: str = ""


@dataclass(frozen=True)
class Verdict:
    verdict: str  # PASS, MISS, N/A
    line: str


def _f(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def table_lines(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| rules (every 5 s) | CPU % of one core | RSS MiB end (max) | status p50 / p90 ms | "
        "/metrics p50 / p99 ms | render ms after an interval (max) / 0.5 s apart | max data age s (p50) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row.error:
            lines.append(f"| {row.label} | not measured: {row.error} | | | | | |")
            continue
        rss = "n/a" if row.rss_end_mib is None else f"{row.rss_end_mib:.1f} ({_f(row.rss_max_mib, '.1f')})"
        status = "-" if row.status_ms is None else f"{row.status_ms[0]:.0f} / {row.status_ms[1]:.0f}"
        scrape = "-" if row.scrape_ms is None else f"{row.scrape_ms[0]:.2f} / {row.scrape_ms[1]:.2f}"
        full = "-" if row.render_full_ms is None else f"{row.render_full_ms[0]:.2f} ({row.render_full_ms[1]:.2f})"
        if row.render_full_cpu_ms is not None:
            full += f" CPU {row.render_full_cpu_ms:.2f}"
        render = "-" if row.render_ms is None else f"{full} / {row.render_ms:.2f}{row.render_source}"
        age = "-" if row.max_age_s is None else f"{row.max_age_s:.1f} ({_f(row.age_p50_s, '.1f')})"
        lines.append(f"| {row.label} | {_f(row.cpu_percent, '.2f')} | {rss} | {status} | {scrape} | {render} | {age} |")
    return lines


def judge(rows: Sequence[Row]) -> list[Verdict]:
    """Every watchdogd row against the issue's targets; under contention only CPU and RSS are judged.

    Each line carries its figure next to ``(target <= N unit)``, the form
    bench/run reads to judge a scale script.
    """
    out: list[Verdict] = []
    for row in rows:
        if row.rules == 0:
            continue
        checks: list[tuple[str, float | None, float, str]] = [
            ("CPU", row.cpu_percent, CPU_TARGET, "%"),
            ("RSS max", row.rss_max_mib, RSS_TARGET, "MiB"),
        ]
        if not row.contention:
            checks += [
                ("status p50", None if row.status_ms is None else row.status_ms[0], STATUS_TARGET, "ms"),
                ("/metrics render after an interval",
                 None if row.render_full_ms is None else row.render_full_ms[0], RENDER_TARGET, "ms"),
                ("max data age", row.max_age_s, AGE_TARGET, "s"),
            ]
        for what, value, limit, unit in checks:
            head = f"{row.label}: {what}"
            if row.error or value is None:
                out.append(Verdict("N/A", f"{head}: not measured{': ' + row.error if row.error else ''}"))
            else:
                figure = f"{value:.2f} {unit}" if unit != "MiB" else f"{value:.1f} {unit}"
                out.append(Verdict("PASS" if value <= limit else "MISS",
                                   f"{head} {figure} (target <= {limit:g} {unit})"))
    return out


def parse_rules(text: str) -> tuple[int, ...]:
    """``10,100,1000`` -> (10, 100, 1000); a one-line error for anything else."""
    try:
        counts = tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rules takes counts separated by commas, got {text!r}") from None
    if not counts or any(n < 1 for n in counts):
        raise argparse.ArgumentTypeError(f"--rules takes positive counts, got {text!r}")
    return counts


def label(rules: int, contention: bool = False) -> str:
    return f"{rules:,}" + (" under contention" if contention else "")


# --- measuring ------------------------------------------------------------------------------------------

class RssWatch:
    """VmRSS of one process every second, in a thread, until stopped: the largest seen (and when), and the last."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.max_kib = 0
        self.max_after_s = 0.0
        """seconds from ``start`` to the largest reading: which phase of the row a peak belongs to"""
        self.last_kib = 0
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-watch", daemon=True)

    def start(self) -> RssWatch:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(1.0):
                return

    def sample(self) -> None:
        with contextlib.suppress(ProcessLookupError, ValueError, OSError):
            rss = procstats.sample(self.pid).rss_kib
            self.last_kib = rss
            if rss > self.max_kib:
                self.max_kib, self.max_after_s = rss, time.monotonic() - self._started

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class PhasePeaks:
    """The kernel's own high-water mark of RSS (VmHWM) per phase: every transient, not only those a sampler catches.

    Writing ``5`` to ``/proc/<pid>/clear_refs`` sets the mark back to the
    RSS of the moment, so each phase reads the largest RSS the process had
    within it, however briefly (a render, a status reply). Needs the right
    to write the daemon's ``clear_refs`` (the same user); without it the
    phases read None and the report says so.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peaks: list[tuple[str, float | None]] = []
        self._name = ""

    def _mark(self) -> float | None:
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{self.pid}/status").read_text()
            kib = procstats.parse_kib(status, "VmHWM")
            return None if kib is None else kib / 1024
        return None

    def begin(self, name: str) -> None:
        """End the phase under way (its peak) and start ``name`` from the RSS of now."""
        if self._name:
            self.peaks.append((self._name, self._mark()))
        self._name = name
        with contextlib.suppress(OSError):
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def line(self) -> str:
        return ", ".join(f"{name} {'?' if peak is None else f'{peak:.1f}'}" for name, peak in self.peaks)


class Listener:
    """A loopback TCP listener of our own for the net.tcp rules: accepts and closes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = int(self.sock.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, name="tcp-listener", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            conn.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@dataclass
class Settings:
    python: str
    daemon: list[str]
    """the daemon's interpreter, flags and module, as the unit starts it (or without -OO: --unoptimized)"""
    env: dict[str, str]
    window: float
    freshness_gap: tuple[float, float]
    full_renders: int
    shared: Path
    """files for host.file_age, shared by the rows"""
    available: frozenset[str]
    kinds: list[Template]
    keep: bool = False
    notes: list[str] = field(default_factory=list)


def answers(address: tuple[str, int], hello: bytes = b"", expect: bytes = b"") -> bool:
    try:
        with socket.create_connection(address, timeout=2.0) as sock:
            if not hello:
                return True
            sock.sendall(hello)
            return sock.recv(64).startswith(expect)
    except OSError:
        return False


def docker_answers() -> bool:
    if not DOCKER_SOCKET.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect(str(DOCKER_SOCKET))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b"200 OK" in sock.recv(256)
    except OSError:
        return False


def run_cli(settings: Settings, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([settings.python, "-m", "watchdogd.faces.cli", *args], capture_output=True, text=True,
                          env=settings.env, cwd=workdir, timeout=60, check=False)


def check_config(settings: Settings, workdir: Path, config: Path) -> None:
    done = run_cli(settings, workdir, "check-config", str(config))
    if done.returncode != 0:
        raise BenchError(f"check-config rejected {config}: {(done.stderr or done.stdout).strip()[:2000]}")


def imported_from(settings: Settings, workdir: Path) -> str:
    """Where the daemon's interpreter, with its environment and working dir, imports watchdogd from."""
    done = subprocess.run([settings.python, "-c", "import watchdogd; print(watchdogd.__file__)"],
                          capture_output=True, text=True, env=settings.env, cwd=workdir, timeout=60, check=False)
    return done.stdout.strip() or done.stderr.strip().splitlines()[-1]


def start_burners(stack: ExitStack, settings: Settings, workdir: Path) -> int:
    count = os.cpu_count() or 1
    for n in range(count):
        burner = Child(f"burner-{n}", [settings.python, "-c", "while True: pass"], workdir / f"burner-{n}.log",
                       cwd=workdir).start()
        stack.callback(burner.stop, 5.0)
    return count


def measure_row(settings: Settings, rules: int, contention: bool) -> Row:
    row = Row(label(rules, contention), rules, contention)
    workdir = Path(tempfile.mkdtemp(prefix="watchdogd-bench-scale-"))
    with ExitStack() as stack:
        if settings.keep:
            stack.callback(settings.notes.append, f"kept {workdir}")
        else:
            stack.callback(shutil.rmtree, workdir, True)
        port = free_port()
        chosen = mix(rules, settings.kinds, settings.available)
        config = workdir / "watchdogd.yaml"
        config.write_text(config_text(workdir, port, chosen, settings.available))
        config.chmod(0o600)
        check_config(settings, workdir, config)
        if contention:
            burners = start_burners(stack, settings, workdir)
            print(f"  {burners} CPU burners running (one per core)", flush=True)
        daemon = Child("watchdogd", [*settings.daemon, "--config", str(config)],
                       workdir / "watchdogd.log", env=settings.env, cwd=workdir).start()
        stack.callback(daemon.stop)
        rss = RssWatch(daemon.pid).start()
        stack.callback(rss.stop)
        started = time.monotonic()

        def all_ran() -> bool:
            daemon.check_alive()
            text = fetch_text(port)
            return text is not None and len(last_runs(text)) >= rules

        wait_until(all_ran, READY_TIMEOUT_S, f"all {rules} rules to run once (log: {daemon.log})", interval=0.5)
        print(f"  every rule ran once {time.monotonic() - started:.1f} s after start", flush=True)

        phases = [("start and first runs", 0.0)]
        peaks = PhasePeaks(daemon.pid)
        peaks.begin("start and first runs")

        def phase(name: str) -> None:
            phases.append((name, time.monotonic() - started))
            peaks.begin(name)

        phase("CPU window")
        row.cpu_percent = cpu_window(daemon, port, settings.window)
        phase("freshness")
        row.max_age_s, row.age_p50_s = freshness(port, rules, settings.freshness_gap)
        phase("status calls")
        row.status_ms = status_times(settings, workdir)
        phase("renders after an interval")
        row.render_full_ms, row.render_full_cpu_ms = renders_after_an_interval(port, settings.full_renders)
        phase("scrapes")
        scraper = Scraper("watchdogd", port)
        for _ in range(WARMUP_SCRAPES):
            scraper.scrape()
        scraper.times.clear()
        renders: list[tuple[str, float]] = []
        for _ in range(SCRAPES):
            scraper.scrape()
            rendered = render_metric(body_text(scraper.last_body))  # parsed between scrapes, not timed
            if rendered is not None:
                renders.append(rendered)
        row.scrape_ms = (percentile(scraper.times, 0.5) * 1000, percentile(scraper.times, 0.99) * 1000)
        text = body_text(scraper.last_body)
        scraper.close()
        if renders:
            values = [seconds * 1000 for _, seconds in renders]
            row.render_ms = percentile(values, 0.5)
            row.render_source, row.render_metric = f" (max {max(values):.2f})", renders[0][0]
        else:
            row.render_ms, row.render_source = row.scrape_ms[0], " (scrape p50)"
            row.render_full_ms = row.render_full_cpu_ms = None
        row.probes_down = sum(1 for value in probe_success(text).values() if value != 1.0)
        rss.sample()
        rss.stop()
        peaks.begin("")
        row.rss_end_mib, row.rss_max_mib = rss.last_kib / 1024, rss.max_kib / 1024
        during = [name for name, since in phases if since <= rss.max_after_s][-1]
        print(f"  RSS max {row.rss_max_mib:.1f} MiB {rss.max_after_s:.0f} s after start ({during}); "
              f"end {row.rss_end_mib:.1f}", flush=True)
        print(f"  RSS peak per phase (VmHWM, MiB): {peaks.line()}", flush=True)
    return row


def cpu_window(daemon: Child, port: int, seconds: float) -> float:
    """CPU % of one core over ``seconds``, with a Prometheus-like scrape every 15 s in it."""
    hz = procstats.clock_ticks()
    scraper = Scraper("watchdogd", port)
    before = procstats.sample(daemon.pid)
    end = before.at + seconds
    next_scrape = before.at
    while (now := time.monotonic()) < end:
        if now >= next_scrape:
            scraper.scrape()
            next_scrape += SCRAPE_EVERY_S
        daemon.check_alive()
        time.sleep(max(0.0, min(next_scrape, end) - time.monotonic()))  # a timed window, not an event
    after = procstats.sample(daemon.pid)
    scraper.close()
    return procstats.cpu_percent(before, after, hz)


def renders_after_an_interval(port: int, samples: int) -> tuple[tuple[float, float] | None, float | None]:
    """Renders that follow a whole interval (every rule changed): what a 15 s scrape costs.

    p50 and max ms of wall time, and p50 ms of CPU time; the page carries
    the previous render's time, so each render is read by one more scrape
    just past the daemon's page reuse. None for a figure the daemon does
    not expose.
    """
    scraper = Scraper("watchdogd", port)
    values: list[float] = []
    cpu: list[float] = []
    try:
        scraper.scrape()
        for _ in range(samples):
            time.sleep(INTERVAL_S + 0.5)  # a timed pause: every rule runs once in it
            scraper.scrape()
            time.sleep(READ_AFTER_S)
            scraper.scrape()
            text = body_text(scraper.last_body)
            rendered, cpu_seconds = render_metric(text), render_cpu(text)
            if rendered is None:
                return None, None
            values.append(rendered[1] * 1000)
            if cpu_seconds is not None:
                cpu.append(cpu_seconds * 1000)
    finally:
        scraper.close()
    return (percentile(values, 0.5), max(values)), (percentile(cpu, 0.5) if cpu else None)


def freshness(port: int, rules: int, gap: tuple[float, float]) -> tuple[float, float]:
    """Max and median, over 20 scrapes at random moments, of the oldest rule's data age."""
    scraper = Scraper("watchdogd", port)
    ages: list[float] = []
    rng = random.Random()
    for _ in range(FRESHNESS_MOMENTS):
        time.sleep(rng.uniform(*gap))  # a random moment of the rules' cycle
        asked = time.time()  # the scrape's moment, what Prometheus stamps its samples with
        scraper.scrape()
        age = max_age(body_text(scraper.last_body), asked, rules)
        if age is None:
            raise BenchError("a scrape lacked a rule's last-run timestamp")
        ages.append(age)
    scraper.close()
    return max(ages), percentile(ages, 0.5)


def status_times(settings: Settings, workdir: Path) -> tuple[float, float]:
    sock = str(workdir / "control.sock")
    times: list[float] = []
    for _ in range(STATUS_CALLS):
        started = time.perf_counter()
        done = run_cli(settings, workdir, "--socket", sock, "status")
        times.append((time.perf_counter() - started) * 1000)
        # exit 1/2 for a firing or given-up rule still prints the table; a crash prints nothing on stdout
        if done.returncode not in (0, 1, 2) or (done.returncode and not done.stdout.strip()):
            raise BenchError(f"watchdogctl status exited {done.returncode}: {done.stderr.strip()[:500]}")
    return percentile(times, 0.5), percentile(times, 0.9)


# --- the peers -----------------------------------------------------------------------------------------

@dataclass
class Peer:
    name: str
    source: str
    cpu_percent: float | None = None
    rss_end_mib: float | None = None
    rss_max_mib: float | None = None
    scrape_ms: tuple[float, float] | None = None
    error: str = ""


def measure_peers(window: float, keep: bool, notes: list[str]) -> list[Peer]:
    """node_exporter (default collectors) and Monit (a minimal monitrc, set daemon 5) over the same window."""
    node_bin, monit_bin = binary("prometheus-node-exporter"), binary("monit")
    peers = [Peer("node_exporter", f"{node_bin or 'prometheus-node-exporter: not installed'}, default collectors"),
             Peer("Monit", f"{monit_bin or 'monit: not installed'} -I, minimal monitrc (cpu, memory, /), set daemon 5")]
    workdir = Path(tempfile.mkdtemp(prefix="watchdogd-bench-scale-peers-"))
    with ExitStack() as stack:
        if keep:
            stack.callback(notes.append, f"kept {workdir}")
        else:
            stack.callback(shutil.rmtree, workdir, True)
        children: dict[str, Child] = {}
        node_port = free_port()
        if node_bin is not None:
            children["node_exporter"] = Child(
                "node_exporter", [node_bin, f"--web.listen-address=127.0.0.1:{node_port}"],
                workdir / "node_exporter.log", cwd=workdir)
        else:
            peers[0].error = "not installed"
        if monit_bin is not None:
            rc = workdir / "monitrc"
            rc.write_text(monitrc.render(workdir, [
                monitrc.Check("cpu", "host.cpu", 95, 0), monitrc.Check("memory", "host.memory", 95, 0),
                monitrc.Check("disk", "host.disk", 99, 0, mountpoints=("/",)),
            ], interval=5))
            rc.chmod(0o600)  # monit refuses a control file others can read
            children["Monit"] = Child("monit", [monit_bin, "-I", "-c", str(rc)], workdir / "monit.out", cwd=workdir)
        else:
            peers[1].error = "not installed"
        if not children:
            return peers
        watches: dict[str, RssWatch] = {}
        for name, child in children.items():
            child.start()
            stack.callback(child.stop)
            watches[name] = RssWatch(child.pid).start()
            stack.callback(watches[name].stop)
        if "node_exporter" in children:
            wait_until(lambda: (fetch_text(node_port) or "").find("node_cpu_seconds_total") >= 0, 60,
                       "node_exporter to answer /metrics")
        if "Monit" in children:
            wait_until(lambda: (workdir / "monit.log").exists()
                       and " started" in (workdir / "monit.log").read_text(errors="replace"), 60, "monit to start")
        hz = procstats.clock_ticks()
        before = {name: procstats.sample(child.pid) for name, child in children.items()}
        scraper = Scraper("node_exporter", node_port)
        end = time.monotonic() + window
        next_scrape = time.monotonic()
        while (now := time.monotonic()) < end:
            if "node_exporter" in children and now >= next_scrape:
                scraper.scrape()
                next_scrape += SCRAPE_EVERY_S
            for child in children.values():
                child.check_alive()
            time.sleep(max(0.0, min(next_scrape, end) - time.monotonic()))  # a timed window, not an event
        after = {name: procstats.sample(child.pid) for name, child in children.items()}
        if "node_exporter" in children:
            for _ in range(WARMUP_SCRAPES):
                scraper.scrape()
            scraper.times.clear()
            for _ in range(SCRAPES):
                scraper.scrape()
            peers[0].scrape_ms = (percentile(scraper.times, 0.5) * 1000, percentile(scraper.times, 0.99) * 1000)
        scraper.close()
        for peer in peers:
            if peer.name in children:
                watch = watches[peer.name]
                watch.sample()
                peer.cpu_percent = procstats.cpu_percent(before[peer.name], after[peer.name], hz)
                peer.rss_end_mib, peer.rss_max_mib = watch.last_kib / 1024, watch.max_kib / 1024
    return peers


def peer_lines(peers: Sequence[Peer]) -> list[str]:
    lines = []
    for peer in peers:
        if peer.error:
            lines.append(f"| {peer.name} | not measured: {peer.error} | | | | | |")
            continue
        rss = "n/a" if peer.rss_end_mib is None else f"{peer.rss_end_mib:.1f} ({_f(peer.rss_max_mib, '.1f')})"
        scrape = "-" if peer.scrape_ms is None else f"{peer.scrape_ms[0]:.2f} / {peer.scrape_ms[1]:.2f}"
        lines.append(f"| {peer.name} | {_f(peer.cpu_percent, '.2f')} | {rss} | - | {scrape} | - | - |")
    return lines


# --- the run -------------------------------------------------------------------------------------------

def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rules", type=parse_rules, default=DEFAULT_RULES, metavar="N,N,...",
                        help="rule counts, one row each (default 10,100,1000)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_WINDOW_S:g} s CPU window, shorter freshness")
    parser.add_argument("--window", type=float, metavar="SECONDS", help=f"CPU window ({WINDOW_S:g}; quick "
                                                                        f"{QUICK_WINDOW_S:g})")
    parser.add_argument("--no-contention", action="store_true", help="skip the 1,000 rules under contention row")
    parser.add_argument("--no-peers", action="store_true", help="skip node_exporter and Monit")
    parser.add_argument("--no-docker", action="store_true",
                        help="leave docker.* out of the mix even when an engine answers (runs to compare)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs (configs, daemon logs)")
    parser.add_argument("--unoptimized", action="store_true",
                        help="start the daemon without the unit's -OO and bytecode cache (to compare)")
    args = parser.parse_args(argv)
    if args.window is None:
        args.window = QUICK_WINDOW_S if args.quick else WINDOW_S
    if args.window <= 0:
        parser.error("--window must be positive")
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("bench_scale: interrupted; its daemons, burners and temp dirs are gone", file=sys.stderr)
        return 130
    except (BenchError, OSError, http.client.HTTPException, RuntimeError, subprocess.SubprocessError) as exc:
        print(f"bench_scale: could not run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    available = frozenset(name for name, ok in (
        ("postgres", answers(PG)),
        ("redis", answers(REDIS, b"PING\r\n", b"+PONG")),
        ("docker", not args.no_docker and docker_answers()),
    ) if ok)
    with ExitStack() as stack:
        shared = Path(tempfile.mkdtemp(prefix="watchdogd-bench-scale-files-"))
        stack.callback(shutil.rmtree, shared, True)
        for n in range(5):
            (shared / f"f{n}.txt").write_text("watchdogd bench_scale\n")
        listener = Listener()
        stack.callback(listener.close)
        # the daemon's own command line: its config path (each row's temp dir) under the common prefix
        own = r"watchdogd\.daemon --config /\S*watchdogd-bench-scale-"
        pycache = Path(tempfile.mkdtemp(prefix="watchdogd-bench-scale-pycache-"))
        stack.callback(shutil.rmtree, pycache, True)
        daemon = ([sys.executable, "-m", "watchdogd.daemon"] if args.unoptimized
                  else shipped_daemon(sys.executable, pycache))
        settings = Settings(
            python=sys.executable, daemon=daemon, env=dict(os.environ), window=args.window,
            freshness_gap=(0.2, 2.0) if args.quick else (0.2, INTERVAL_S - 0.2),
            full_renders=QUICK_FULL_RENDERS if args.quick else FULL_RENDERS, shared=shared,
            available=available, kinds=templates(str(shared / "f*.txt"), listener.port, own), keep=args.keep,
        )
        source = imported_from(settings, shared)
        plan = [(n, False) for n in args.rules]
        if not args.no_contention:
            plan.append((CONTENTION_RULES, True))
        biggest = max(n for n, _ in plan)
        missing = [f"{name} ({'--no-docker' if name == 'docker' and args.no_docker else 'no answer'})"
                   for name in sorted({"postgres", "redis", "docker"} - available)]
        print(f"bench_scale: {len(plan)} rows, CPU window {args.window:g} s, rules every {INTERVAL_S:g} s; "
              f"watchdogd from {source}; load {' '.join(load_before)} on {os.cpu_count()} CPUs", flush=True)
        print(f"daemon: {' '.join(daemon)}", flush=True)
        counts = ", ".join(f"{family} {count}" for family, count in
                           family_counts(mix(biggest, settings.kinds, available)))
        print(f"mix at {biggest:,} rules: {counts}"
              + (f"; not in the mix: {', '.join(missing)}" if missing else ""), flush=True)
        peers: list[Peer] = []
        if not args.no_peers:
            print("--- node_exporter and Monit", flush=True)
            peers = measure_peers(args.window, args.keep, settings.notes)
        rows: list[Row] = []
        for rules, contention in plan:
            print(f"--- {rules:,} rules{' under contention' if contention else ''}", flush=True)
            try:
                rows.append(measure_row(settings, rules, contention))
            except BenchError as exc:
                rows.append(Row(label(rules, contention), rules, contention, error=str(exc).splitlines()[0]))
                print(f"  not measured: {exc}", flush=True)
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    verdicts = judge(rows)
    metrics = sorted({r.render_metric for r in rows if r.render_metric})
    render_note = (f"render: the daemon's own {', '.join(metrics)}: p50 (max) of renders after an interval "
                   f"(every rule changed), then p50 (max) over the {SCRAPES} back-to-back scrapes" if metrics
                   else "render: /metrics exposes no render-time figure, so the scrape p50 stands for it")
    down = [f"{r.label}: {r.probes_down}" for r in rows if r.probes_down]
    lines = [
        "",
        f"scale: watchdogd rules every {INTERVAL_S:g} s, CPU over {args.window:g} s after every rule ran once, "
        f"RSS end (max of 1 s samples), {STATUS_CALLS} status calls, {SCRAPES} scrapes (keep-alive, OpenMetrics, "
        f"gzip), data age at {FRESHNESS_MOMENTS} random moments; load {' '.join(load_before)} -> "
        f"{' '.join(load_after)}",
        f"watchdogd from {source}; peers: " + ("; ".join(f"{p.name}: {p.source}" for p in peers)
                                                 or "not measured (--no-peers)"),
        render_note + ("; probes down at the end: " + ", ".join(down) if down else ""),
        *table_lines(rows),
        *peer_lines(peers),
        "",
        *(f"{v.verdict:4}  {v.line}" for v in verdicts),
        *settings.notes,
    ]
    print("\n".join(lines), flush=True)
    return 0 if verdicts and all(v.verdict == "PASS" for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
