"""The scale figures: run the per-family ``bench/bench_*.py`` scripts and forward what they print.

Each script owns its setup (a throwaway PostgreSQL, a private redis-server,
thousands of processes...) and prints its own figures and verdicts; this
module runs them one at a time with the venv's interpreter, streams their
output, and picks one or two headline lines per script for the summary
table. A script that is not in the tree yet, or that fails, becomes a row
saying so; a new ``bench_*.py`` not in the table below is still run in full
mode, with its last lines as the headline.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sidebyside.processes import Child


@dataclass(frozen=True)
class Bench:
    script: str
    scale: str
    """What it scales over, for the table."""
    quick: bool = False
    """Cheap enough (a few seconds, nothing to install) for ``--quick``."""
    headline: Sequence[str] = ()
    """Regexes of the lines that summarise it; empty: its last two lines."""
    timeout: float = 900.0
    quick_args: Sequence[str] = ()
    """Arguments for its short form under ``--quick`` (a script without them runs as in full mode)."""


BENCHES: tuple[Bench, ...] = (
    Bench("bench_policy_guard.py", "rules (policy+guard, 10,000 subjects)", quick=True, headline=(r"^policy\+guard",)),
    Bench("bench_host_probes.py", "host probes", quick=True, headline=(r"^host probe cycle",)),
    Bench("bench_postgres.py", "PostgreSQL backends", headline=(r"^postgres\.idle over", r"^postgres\.terminate of")),
    Bench("bench_redis.py", "Redis clients and keys",
          headline=(r"^redis\.idle_clients:", r"^\s+per probe:", r"^redis\.delete_keys:", r"keys/s")),
    Bench("bench_docker.py", "containers",
          headline=(r"^docker\.containers, steady state", r"^docker\.container_cpu \(cgroup")),
    Bench("bench_process.py", "processes", headline=(r"^processes on the host", r"^worst")),
    Bench("bench_log.py", "log lines", headline=(r"^probe runs:", r"^verdict")),
    Bench("bench_rss.py", "daemon RSS over 1,000 cycles", headline=(r"^daemon RSS", r"^growth", r"^verdict")),
    Bench("bench_imports.py", "RSS by import group, per policy (issue 17's floor)",
          headline=(r"^daemon RSS", r"^Accounting:", r"^floor \(interpreter \+ required stack",
                    r"^where the daemon's memory", r"^config child", r"^floor with its start-up pages",
                    r"after it handed back its start-up pages")),
    Bench("bench_scrape.py", "/metrics with 50 rules", headline=(r"^watchdogd(-uncached)?: p50",)),
    Bench("bench_status.py", "watchdogctl status, 50 rules",
          headline=(r"^watchdogctl \(console script\)", r"^watchdogctl status p90")),
    Bench("bench_trend.py", "trend prediction, 2,100 synthetic curves", headline=(r"^trend:", r"^verdict")),
    Bench("bench_scale.py", "mixed rules every 5 s (issue 17 scale table)", quick=True,
          headline=(r"^scale:", r"^mix at", r"^watchdogd from", r"^render:", r"^\|", r"^(PASS|MISS|N/A) "),
          timeout=2400.0, quick_args=("--quick", "--rules", "10,1000", "--no-contention")),
)

FAILURE = re.compile(r"\bFAIL(ED)?\b")
OVER_TARGET = re.compile(
    r"(?<![\w.])(?P<value>\d[\d,]*(?:\.\d+)?)\s*(?P<unit>ms|s|MiB|%)(?!\w)[^()\d]*"
    r"\(target <= (?P<limit>\d[\d,]*(?:\.\d+)?)\s*(?P=unit)\)"
)
"""``46.0 MiB (target <= 35 MiB)``: a figure printed next to its target, in the same unit."""


@dataclass
class Outcome:
    bench: Bench
    status: str
    """ok, FAIL (a line said so), MISS (a figure over its printed target), exit N, timed out, not available...,
    not run in --quick"""
    seconds: float = 0.0
    lines: list[str] = field(default_factory=list)

    @property
    def headlines(self) -> list[str]:
        return headlines(self.bench, self.lines)


def headlines(bench: Bench, lines: Sequence[str]) -> list[str]:
    text = [line.rstrip() for line in lines if line.strip()]
    if bench.headline:
        picked = [line.strip() for line in text if any(re.search(p, line) for p in bench.headline)]
        if picked:
            return picked
    return [line.strip() for line in text[-2:]]


def verdict(returncode: int, lines: Sequence[str]) -> str:
    """A script's own verdict (exit status, a FAIL line), and then the figures it printed next to a target.

    A script that exits 0 but prints ``46.0 MiB (target <= 35 MiB)`` missed
    that target: ``MISS``, never ``ok``.
    """
    if returncode != 0:
        return f"exit {returncode}"
    if any(FAILURE.search(line) for line in lines):
        return "FAIL"
    return "MISS" if missed_targets(lines) else "ok"


def missed_targets(lines: Sequence[str]) -> list[str]:
    """The lines with a figure over the ``(target <= N unit)`` printed next to it."""
    missed = []
    for line in lines:
        for match in OVER_TARGET.finditer(line):
            value, limit = (float(match[key].replace(",", "")) for key in ("value", "limit"))
            if value > limit:
                missed.append(line.strip())
                break
    return missed


def plan(bench_dir: Path) -> list[Bench]:
    """The table, plus any bench_*.py on disk it does not know yet."""
    known = {b.script for b in BENCHES}
    extra = [Bench(p.name, p.stem.removeprefix("bench_")) for p in sorted(bench_dir.glob("bench_*.py"))
             if p.name not in known]
    return [*BENCHES, *extra]


def run_all(python: Path, repo: Path, workdir: Path, quick: bool, env: dict[str, str],
            say: Callable[[str], None] = print) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for bench in plan(repo / "bench"):
        script = repo / "bench" / bench.script
        if not script.exists():
            outcomes.append(Outcome(bench, f"not available: bench/{bench.script} is not in the tree yet"))
        elif quick and not bench.quick:
            outcomes.append(Outcome(bench, "not run in --quick"))
        else:
            say(f"--- bench/{bench.script} ({bench.scale})")
            outcomes.append(_run_one(bench, python, repo, workdir, env, say, bench.quick_args if quick else ()))
    return outcomes


def _run_one(bench: Bench, python: Path, repo: Path, workdir: Path, env: dict[str, str],
             say: Callable[[str], None], args: Sequence[str] = ()) -> Outcome:
    log = workdir / f"{bench.script}.log"
    child = Child(bench.script, [str(python), str(repo / "bench" / bench.script), *args], log, env=env, cwd=repo)
    started = time.monotonic()
    child.start()
    shown = 0
    status: str | None = None
    try:
        while child.proc is not None and child.proc.poll() is None:
            shown = _forward(log, shown, say)
            if time.monotonic() - started > bench.timeout:
                status = f"timed out after {bench.timeout:.0f}s"
                break
            time.sleep(0.2)  # forwarding output while the script runs
    finally:
        # SIGINT first: the scripts clean up (clusters, containers, children) in their finally blocks.
        child.stop(timeout=120.0, first=signal.SIGINT)
    _forward(log, shown, say, final=True)
    lines = log.read_text(errors="replace").splitlines()
    assert child.proc is not None
    return Outcome(bench, status or verdict(child.proc.returncode, lines), time.monotonic() - started, lines)


def _forward(log: Path, shown: int, say: Callable[[str], None], *, final: bool = False) -> int:
    """Print the log's complete lines after the first ``shown``; a half-written last line waits unless ``final``."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return shown
    if not final:
        text = text[: text.rfind("\n") + 1]
    lines = text.splitlines()
    for line in lines[shown:]:
        say(f"    | {line}")
    return len(lines)
