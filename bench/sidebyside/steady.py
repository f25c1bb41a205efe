"""The three daemons at rest, side by side: watchdogd with the shipped policy, node_exporter, Monit.

All three start together and run the same steady-state window. During it,
both /metrics endpoints are scraped every 15 s, as the operator's
Prometheus would, so the CPU figures include serving those scrapes; Monit
has no such endpoint. The CPU figure is utime+stime over the window, which
starts once all three are ready, so start-up (imports, first render) is not
in it; RSS and PSS are read at the end of the window.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from sidebyside import monitrc, policy, procstats
from sidebyside.processes import BenchError, Child, free_port, tail, wait_until
from sidebyside.scrape import Scraper, fetch_text, probe_success

SCRAPE_EVERY = 15.0
READY_TIMEOUT = 90.0
MONIT_INTERVAL = 15


@dataclass(frozen=True)
class ProcFigures:
    name: str
    rss_kib: int
    pss_kib: int | None
    cpu_percent: float


@dataclass(frozen=True)
class SteadyResult:
    seconds: float
    procs: Sequence[ProcFigures]
    other_cores: float
    """CPU the rest of the machine used meanwhile, in cores: the noise the figures were taken in."""
    scrapers: Mapping[str, Scraper]
    """Still-open scrapers of watchdogd and node_exporter, for the latency run that follows."""
    probes_up: int
    probes_down: Sequence[str]
    """watchdogd's rules whose probe failed its last run at the end of the window."""


@dataclass
class Rig:
    watchdogd: Child
    watchdogd_port: int
    node_exporter: Child
    node_port: int
    monit: Child
    enabled_rules: int

    def children(self) -> dict[str, Child]:
        return {"watchdogd": self.watchdogd, "node_exporter": self.node_exporter, "monit": self.monit}


def daemon_env() -> dict[str, str]:
    """The environment a packaged daemon would have: none of this shell's Python settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}


def shipped_daemon(python: Path | str, pycache: Path) -> list[str]:
    """``python -m watchdogd.daemon`` with the unit's flags, its ``-OO`` bytecode compiled first.

    The flags are the measured version's own (its watchdogd.launch, asked
    through ``python``: this harness may run on an interpreter without
    watchdogd). ``pycache`` is the benchmark's own. It is compiled before the
    measured start, as every start after a host's first finds it: a cold one
    costs 0.7 s of CPU and a 65 MiB peak, once per installation.
    """
    ask = ("import json, sys; from watchdogd.launch import daemon_argv, warm_argv; "
           "print(json.dumps([warm_argv(sys.argv[1], sys.argv[2]), daemon_argv(sys.argv[1], sys.argv[2])]))")
    warm, daemon = json.loads(_daemon_python(python, [str(python), "-c", ask, str(python), str(pycache)],
                                             "say how it starts the daemon"))
    _daemon_python(python, warm, f"compile watchdogd into {pycache}")
    return [str(word) for word in daemon]


def _daemon_python(python: Path | str, argv: Sequence[str], what: str) -> str:
    done = subprocess.run(argv, env=daemon_env(), capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"{python} could not {what}: {last}")
    return done.stdout


def start(stack: ExitStack, *, python: Path, shipped: Path, workdir: Path, node_exporter: str, monit: str,
          checks: Sequence[monitrc.Check], enabled_rules: int, extra_args: Sequence[str] = (),
          rewrite: Callable[[str], str] = lambda text: text) -> Rig:
    """Start all three (each stopped by ``stack``) and wait until each is doing its job.

    ``rewrite`` changes the relocated policy text once more (the benchmark's own PostgreSQL role).
    """
    port = free_port()
    config = workdir / "watchdogd.yaml"
    config.write_text(rewrite(policy.relocate(shipped.read_text(), {
        "state_dir": str(workdir / "state"),
        "control_socket": str(workdir / "control.sock"),
        "listen": f"127.0.0.1:{port}",
    })))
    config.chmod(0o600)
    watchdogd = Child("watchdogd", [*shipped_daemon(python, workdir / "pycache"), "--config", str(config), *extra_args],
                      workdir / "watchdogd.log", env=daemon_env(), cwd=workdir)
    node_port = free_port()
    node = Child("node_exporter", [node_exporter, f"--web.listen-address=127.0.0.1:{node_port}"],
                 workdir / "node_exporter.log", cwd=workdir)
    rc = workdir / "monitrc"
    rc.write_text(monitrc.render(workdir, checks, interval=MONIT_INTERVAL))
    rc.chmod(0o600)  # monit refuses a control file others can read
    syntax = subprocess.run([monit, "-t", "-c", str(rc)], capture_output=True, text=True, check=False, timeout=30)
    if syntax.returncode != 0:
        raise BenchError(f"monit -t rejected the generated {rc}: {(syntax.stdout + syntax.stderr).strip()}")
    mon = Child("monit", [monit, "-I", "-c", str(rc)], workdir / "monit.out", cwd=workdir)
    rig = Rig(watchdogd, port, node, node_port, mon, enabled_rules)
    for child in rig.children().values():
        child.start()
        stack.callback(child.stop)

    def watchdogd_ready() -> bool:
        watchdogd.check_alive()
        text = fetch_text(port)
        return text is not None and len(probe_success(text)) >= enabled_rules

    def node_ready() -> bool:
        node.check_alive()
        text = fetch_text(node_port)
        return text is not None and "node_cpu_seconds_total" in text

    def monit_ready() -> bool:
        mon.check_alive()
        log = workdir / "monit.log"
        return log.exists() and " started" in log.read_text(errors="replace")

    wait_until(watchdogd_ready, READY_TIMEOUT, f"watchdogd to run all {enabled_rules} enabled rules "
               f"(log: {watchdogd.log})")
    wait_until(node_ready, READY_TIMEOUT, "node_exporter to answer /metrics")
    wait_until(monit_ready, READY_TIMEOUT, f"monit to start (log: {workdir / 'monit.log'})")
    return rig


def run_window(rig: Rig, seconds: float, progress: bool = True) -> SteadyResult:
    """Measure the three over ``seconds`` while Prometheus-like scrapes hit both exporters every 15 s."""
    hz = procstats.clock_ticks()
    children = rig.children()
    scrapers = {"watchdogd": Scraper("watchdogd", rig.watchdogd_port),
                "node_exporter": Scraper("node_exporter", rig.node_port)}
    host_before = procstats.host_cpu()
    before = {name: procstats.sample(child.pid) for name, child in children.items()}
    started = time.monotonic()
    end = started + seconds
    next_scrape = started
    next_report = started + 60.0
    while (now := time.monotonic()) < end:
        if now >= next_scrape:
            for scraper in scrapers.values():
                scraper.scrape()
            next_scrape += SCRAPE_EVERY
        if progress and now >= next_report:
            print(f"  steady state: {now - started:.0f}/{seconds:.0f} s", flush=True)
            next_report += 60.0
        for child in children.values():
            child.check_alive()
        time.sleep(max(0.0, min(next_scrape, end, next_report) - time.monotonic()))  # a timed window, not an event
    after = {name: procstats.sample(child.pid) for name, child in children.items()}
    host_after = procstats.host_cpu()
    wall = after["watchdogd"].at - before["watchdogd"].at
    ours = sum(after[n].ticks - before[n].ticks for n in children)
    other = max(0, host_after.busy - host_before.busy - ours) / hz / wall
    procs = [
        ProcFigures(name, after[name].rss_kib, after[name].pss_kib,
                    procstats.cpu_percent(before[name], after[name], hz))
        for name in children
    ]
    for scraper in scrapers.values():
        scraper.times.clear()  # the window's scrapes were for realism, not for the latency figures
    states = probe_success(fetch_text(rig.watchdogd_port) or "")
    down = sorted(rule for rule, value in states.items() if value != 1.0)
    return SteadyResult(wall, procs, other, scrapers, len(states) - len(down), down)


def versions(node_exporter: str, monit: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, argv in (("node_exporter", [node_exporter, "--version"]), ("monit", [monit, "-V"])):
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
        text = (proc.stdout + proc.stderr).strip().splitlines()
        out[name] = text[0].strip() if text else "unknown version"
    return out


def log_tail(child: Child) -> str:
    return tail(child.log)
