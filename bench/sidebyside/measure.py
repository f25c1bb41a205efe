"""The measuring stage of ``bench/run`` (inside the clean venv): every figure, then the table.

Order: the three daemons at rest (steady window, then the scrape latency
while they are still warm), the reaction daemon, the per-family scripts.
They run one after another, not at once, so no part loads the machine
while another is being measured. Everything started is registered on one
ExitStack, which SIGINT and SIGTERM unwind: children, containers,
PostgreSQL roles and sessions, the temp dir.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.metadata
import shutil
import signal
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import watchdogd
from sidebyside import families, machine, reaction, report, shipped, steady
from sidebyside.percentiles import percentile
from sidebyside.processes import BenchError
from sidebyside.provision import binary
from sidebyside.scrape import HOW, interleaved

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "etc" / "watchdogd" / "watchdogd.yaml"
WARMUP_SCRAPES = 10
RULE = "=" * 100


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(args: argparse.Namespace) -> int:
    # Both explicitly: a shell starting bench/run in the background hands it SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="watchdogd-bench-"))
    try:
        with ExitStack() as stack:
            if args.keep:
                stack.callback(print, f"bench/run: kept {workdir}")
            else:
                stack.callback(shutil.rmtree, workdir, True)
            return run(args, workdir)
    except KeyboardInterrupt:
        print("\nbench/run: interrupted; everything it started has been stopped and removed", file=sys.stderr)
        return 130
    except (BenchError, OSError, http.client.HTTPException, RuntimeError) as exc:
        print(f"bench/run: failed: {type(exc).__name__}: {exc} (run with --keep to look at the logs)",
              file=sys.stderr)
        return 2


def run(args: argparse.Namespace, workdir: Path) -> int:
    started = machine.now()
    load_before = machine.load()
    node_bin, monit_bin = binary("prometheus-node-exporter"), binary("monit")
    if node_bin is None or monit_bin is None:
        raise BenchError("prometheus-node-exporter or monit is missing (the first stage installs them)")
    python = Path(sys.executable)
    header = _header(python, node_bin, monit_bin)
    policy = shipped.read(SHIPPED, workdir)
    mode = "quick" if args.quick else "full"
    print(f"bench/run: {mode} mode in {workdir}; watchdogd, node_exporter and monit side by side for "
          f"{args.steady:.0f} s", flush=True)

    with ExitStack() as stack:
        prepared = shipped.prepare_targets(stack, SHIPPED)
        target_notes = prepared.notes
        extra = ["--dry-run"] if policy.acting else []
        rig = steady.start(stack, python=python, shipped=SHIPPED, workdir=workdir, node_exporter=node_bin,
                           monit=monit_bin, checks=policy.checks, enabled_rules=policy.enabled, extra_args=extra,
                           rewrite=prepared.apply)
        rest = steady.run_window(rig, args.steady)
        print(f"bench/run: /metrics latency, {args.scrapes} scrapes each", flush=True)
        scrapers = list(rest.scrapers.values())
        interleaved(scrapers, args.scrapes, WARMUP_SCRAPES)
        scrapes = [
            report.ScrapeFigure(s.name, percentile(s.times, 0.5) * 1000, percentile(s.times, 0.99) * 1000,
                                s.body_bytes, s.series())
            for s in scrapers
        ]
        for scraper in scrapers:
            scraper.close()
    load_after_steady = machine.load()

    print(f"bench/run: reaction times, {args.repeat} per scenario", flush=True)
    reactions = reaction.run(python, REPO, workdir, args.repeat)

    outcomes: list[families.Outcome] = []
    if not args.no_families:
        print("bench/run: per-family scale benchmarks", flush=True)
        env = {**steady.daemon_env(), "PYTHONUNBUFFERED": "1"}
        outcomes = families.run_all(python, REPO, workdir, args.quick, env)

    record = Record(args.quick, args.scrapes, args.repeat, started, (load_before, load_after_steady, machine.load()),
                    header, policy, target_notes, rest, scrapes, reactions, outcomes)
    lines = table(record)
    print("\n".join(lines), flush=True)
    return 0 if all(t.verdict == "PASS" for t in record.targets) else 1


@dataclass(frozen=True)
class Record:
    """Everything one run measured, for the table."""

    quick: bool
    scrape_count: int
    repeat: int
    started: str
    loads: tuple[str, str, str]
    header: list[str]
    policy: shipped.Shipped
    target_notes: list[str]
    rest: steady.SteadyResult
    scrapes: list[report.ScrapeFigure]
    reactions: list[reaction.Figure]
    outcomes: list[families.Outcome]

    @property
    def targets(self) -> list[report.Target]:
        return report.targets(self.rest.procs, self.scrapes, self.reactions, self.outcomes)


def table(r: Record) -> list[str]:
    policy, rest = r.policy, r.rest
    if policy.acting:
        acting = f"acting rules: {', '.join(policy.acting)} -> the daemon ran with --dry-run"
    else:
        acting = "acting rules: none (the shipped actions are dry-run)"
    probes = f"probes at the end: {rest.probes_up} up"
    if rest.probes_down:
        probes += f", {len(rest.probes_down)} down ({', '.join(rest.probes_down)})"
    return [
        "",
        RULE,
        f"watchdogd side by side with node_exporter and Monit  (bench/run{' --quick' if r.quick else ''})",
        f"date       {r.started}",
        f"machine    {machine.describe()}",
        f"load       {r.loads[0]} at start, {r.loads[1]} after the steady state, {r.loads[2]} at the end "
        f"(1/5/15 min)",
        f"noise      the rest of the machine used {rest.other_cores:.2f} cores on average during the steady state",
        *r.header,
        f"policy     {SHIPPED.relative_to(REPO)} as shipped ({policy.summary}); only state_dir, control_socket and "
        f"listen moved to a temp dir, and a PostgreSQL DSN's role swapped for the benchmark's own",
        *(f"           {note}" for note in r.target_notes),
        f"           {acting}; {probes}",
        "           Monit: the same host CPU, memory, swap, load, disk and inode tests" + _monit_gap(policy),
        "",
        f"Steady state: {rest.seconds:.0f} s{' (full mode: 600 s)' if r.quick else ''}; rules every 15 s, "
        f"Monit 'set daemon 15'; both /metrics scraped every 15 s meanwhile; RSS/PSS at the end",
        *report.steady_lines(rest.procs),
        "",
        f"/metrics latency: {r.scrape_count} sequential scrapes each after {WARMUP_SCRAPES} warm-up, interleaved; "
        f"{HOW}",
        *report.scrape_lines(r.scrapes),
        "",
        f"Reaction: condition created -> fix seen by the bench, for: 0s, n = {r.repeat} each",
        *report.reaction_lines(r.reactions),
        "",
        "Scale figures (bench/bench_*.py; their full output is above)" if r.outcomes
        else "Scale figures: skipped (--no-families)",
        *report.family_lines(r.outcomes),
        "",
        "Targets",
        *report.target_lines(r.targets),
        RULE,
    ]


def _monit_gap(policy: shipped.Shipped) -> str:
    if not policy.unsupported:
        return ""
    families_ = sorted({probe.split(".")[0] + ".*" for probe in policy.unsupported})
    return f"; it has none for the {len(policy.unsupported)} other rules ({', '.join(families_)})"


def _header(python: Path, node_bin: str, monit_bin: str) -> list[str]:
    dists = sum(1 for _ in importlib.metadata.distributions())
    peers = steady.versions(node_bin, monit_bin)
    return [
        f"watchdogd  {watchdogd.__version__} from {Path(watchdogd.__file__).parent}",
        f"python     {python} (Python {sys.version.split()[0]}; venv {sys.prefix}, {dists} distributions)",
        f"peers      {peers['node_exporter']} ({node_bin}, default collectors); {peers['monit']} ({monit_bin})",
    ]
