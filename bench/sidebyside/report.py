"""The one table: every figure of the run, then the issue's targets with PASS / MISS.

Pure: takes the figures, returns lines. A figure that could not be taken
makes its target "N/A" with the reason; it never counts as a pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sidebyside.families import FAILURE, Outcome, missed_targets
from sidebyside.percentiles import median
from sidebyside.reaction import Figure
from sidebyside.steady import ProcFigures

RSS_RATIO = 2.0
CPU_PERCENT = 0.5
SCRAPE_P50_RATIO = 0.3
REACTION_SLACK = 1.0


@dataclass(frozen=True)
class ScrapeFigure:
    name: str
    p50_ms: float
    p99_ms: float
    body_bytes: int
    series: int


@dataclass(frozen=True)
class Target:
    verdict: str  # PASS, MISS, N/A
    what: str
    detail: str


def _mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f}"


def steady_lines(procs: Sequence[ProcFigures]) -> list[str]:
    lines = [f"  {'':16}{'RSS MiB':>9}{'PSS MiB':>9}{'CPU % of one core':>20}"]
    lines += [f"  {p.name:16}{_mib(p.rss_kib):>9}{_mib(p.pss_kib):>9}{p.cpu_percent:>20.3f}" for p in procs]
    return lines


def scrape_lines(figures: Sequence[ScrapeFigure]) -> list[str]:
    lines = [f"  {'':16}{'p50 ms':>9}{'p99 ms':>9}{'bytes':>9}{'samples':>9}"]
    lines += [f"  {f.name:16}{f.p50_ms:>9.2f}{f.p99_ms:>9.2f}{f.body_bytes:>9}{f.series:>9}" for f in figures]
    return lines


def reaction_lines(figures: Sequence[Figure]) -> list[str]:
    width = max([len(f"({f.key}) {f.title}") for f in figures] + [10])
    lines = [f"  {'':{width}}{'rule every':>12}{'median s':>10}{'max s':>8}"]
    for f in figures:
        name = f"({f.key}) {f.title}"
        every = f"{f.interval:g} s"
        if f.unavailable is not None:
            lines.append(f"  {name:{width}}{every:>12}  not available: {f.unavailable}")
        elif not f.samples:
            lines.append(f"  {name:{width}}{every:>12}  no samples")
        else:
            lines.append(f"  {name:{width}}{every:>12}{median(f.samples):>10.2f}{max(f.samples):>8.2f}"
                         + (f"  ({f.note})" if f.note else ""))
    return lines


def family_lines(outcomes: Sequence[Outcome]) -> list[str]:
    width = max([len(o.bench.scale) for o in outcomes] + [10])
    lines: list[str] = []
    for outcome in outcomes:
        head = f"  {outcome.bench.scale:{width}}  "
        if outcome.status.startswith(("not ", "timed out")):
            lines.append(head + outcome.status)
            continue
        picked = outcome.headlines or ["(printed nothing)"]
        lines.append(head + f"[{outcome.status}, {outcome.seconds:.0f} s] {picked[0]}")
        lines += [" " * len(head) + line for line in picked[1:]]
    return lines


def targets(procs: Sequence[ProcFigures], scrapes: Sequence[ScrapeFigure],
            reactions: Sequence[Figure], outcomes: Sequence[Outcome] = ()) -> list[Target]:
    by_proc = {p.name: p for p in procs}
    by_scrape = {s.name: s for s in scrapes}
    out: list[Target] = []
    wd, node = by_proc.get("watchdogd"), by_proc.get("node_exporter")
    what = f"watchdogd RSS <= {RSS_RATIO:g} x node_exporter's"
    if wd is None or node is None:
        out.append(Target("N/A", what, "steady state not measured"))
    else:
        limit = RSS_RATIO * node.rss_kib
        out.append(Target(_verdict(wd.rss_kib <= limit), what,
                          f"{_mib(wd.rss_kib)} MiB vs limit {_mib(int(limit))} MiB "
                          f"({wd.rss_kib / node.rss_kib:.2f} x)"))
    what = f"watchdogd CPU <= {CPU_PERCENT:g}% of one core"
    if wd is None:
        out.append(Target("N/A", what, "steady state not measured"))
    else:
        out.append(Target(_verdict(wd.cpu_percent <= CPU_PERCENT), what, f"{wd.cpu_percent:.3f}%"))
    what = f"scrape p50 <= {SCRAPE_P50_RATIO:g} x node_exporter's"
    ws, ns = by_scrape.get("watchdogd"), by_scrape.get("node_exporter")
    if ws is None or ns is None:
        out.append(Target("N/A", what, "scrapes not measured"))
    else:
        out.append(Target(_verdict(ws.p50_ms <= SCRAPE_P50_RATIO * ns.p50_ms), what,
                          f"{ws.p50_ms:.2f} ms vs limit {SCRAPE_P50_RATIO * ns.p50_ms:.2f} ms "
                          f"({ws.p50_ms / ns.p50_ms:.2f} x)"))
    for figure in reactions:
        limit = figure.interval + REACTION_SLACK
        what = f"reaction ({figure.key}) <= rule every + {REACTION_SLACK:g} s"
        if figure.unavailable is not None or not figure.samples:
            out.append(Target("N/A", what, f"not available: {figure.unavailable or 'no samples'}"))
        else:
            worst = max(figure.samples)
            out.append(Target(_verdict(worst <= limit), what, f"max {worst:.2f} s vs {limit:g} s "
                                                               f"(median {median(figure.samples):.2f} s)"))
    return out + family_targets(outcomes)


def family_targets(outcomes: Sequence[Outcome]) -> list[Target]:
    """One row per scale script that ran: PASS only if it met every target it set itself.

    Its own verdict (exit status, a FAIL line) and any figure printed over
    its ``(target <= N)`` both count: the host-only RSS figure over 35 MiB is
    a MISS even though the script exited 0. Scripts not run (``--quick``, not
    in the tree) have no row: they are listed as such above.
    """
    out: list[Target] = []
    for outcome in outcomes:
        if outcome.status.startswith(("not run", "not available")):
            continue
        what = f"scale: {outcome.bench.scale}"
        missed = missed_targets(outcome.lines) or [line.strip() for line in outcome.lines if FAILURE.search(line)]
        if outcome.status == "ok" and not missed:
            picked = outcome.headlines
            out.append(Target("PASS", what, picked[0] if picked else "met its targets"))
        else:
            out.append(Target("MISS", what, f"[{outcome.status}] " + (missed[0] if missed else
                                                                       (outcome.headlines or ["no output"])[0])))
    return out


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def target_lines(found: Sequence[Target]) -> list[str]:
    width = max(len(t.what) for t in found)
    return [f"  {t.verdict:5} {t.what:{width}}  {t.detail}" for t in found]
