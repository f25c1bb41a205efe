"""``bench/run``: the order of the benchmark, and the guarantee that it cleans up after itself.

Two stages. The first (this module, stdlib only) runs under whatever
``python3`` started it: it installs the Debian packages and builds the clean
venv, then re-executes ``bench/run`` with the venv's interpreter. The second
(``measure``) takes the figures and prints the table.

Exit status: 0 every target met, 1 a target missed or could not be
measured, 2 the benchmark itself could not run, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sidebyside import provision

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "bench" / "run"

FULL = {"steady": 600.0, "scrapes": 200, "repeat": 5}
QUICK = {"steady": 30.0, "scrapes": 50, "repeat": 2}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description="watchdogd side by side with node_exporter and Monit: RSS, CPU, /metrics latency, "
                    "reaction time and the per-family scale figures, in one run and one table.",
    )
    parser.add_argument("--quick", action="store_true",
                        help="about a minute: 30 s steady state, 50 scrapes, 2 reactions each, cheap scale benches")
    parser.add_argument("--steady", type=float, metavar="SECONDS", help="steady-state window (600; quick 30)")
    parser.add_argument("--scrapes", type=int, metavar="N", help="scrapes per exporter for latency (200; quick 50)")
    parser.add_argument("--repeat", type=int, metavar="N", help="reactions per scenario (5; quick 2)")
    parser.add_argument("--no-families", action="store_true", help="skip the per-family scale benchmarks")
    parser.add_argument("--venv", type=Path, help="the clean venv to build/reuse (~/.cache/watchdogd-bench/venv)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs) for a post-mortem")
    parser.add_argument("--in-venv", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.steady <= 0 or args.scrapes < 1 or args.repeat < 1:
        parser.error("--steady, --scrapes and --repeat must be positive")
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if not args.in_venv:
        return bootstrap(args, argv)
    from sidebyside import measure  # noqa: PLC0415 (needs the venv: yaml, psycopg, docker, watchdogd)

    return measure.main(args)


def bootstrap(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Install, build the venv, then become the venv's interpreter (never returns on success)."""
    notes: list[str] = []
    try:
        provision.ensure_packages(notes)
        venv = provision.ensure_venv(REPO, args.venv or provision.default_venv_dir(), notes)
    except provision.ProvisionError as exc:
        print(f"bench/run: cannot prepare: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"bench/run: {note}", flush=True)
    python = str(venv.python)
    os.execv(python, [python, str(RUN), *argv, "--in-venv"])
    return 2  # not reached: execv replaces this process


