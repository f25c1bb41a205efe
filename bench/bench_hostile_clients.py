"""Benchmark: scrapes and ``watchdogctl status`` during slow-loris and idle-client storms (issue 20, Must 4).

Long form of tests/integration/faults/test_hostile_clients.py. The attackers (a child process)
come from 127.0.0.1 like the scraper, and reopen every connection the server drops. ``--old``
also measures the servers at a git revision (read with ``git show`` into a temporary module; the working
tree is not touched). Starts its own servers on a free port and a temporary socket; touches
nothing else.

    python bench/bench_hostile_clients.py [--seconds 10] [--storms 64,200,500] [--idle 100] [--old REV]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.faults.clients_support import Tally, every, raise_nofile, scrape_once, storm, tally
from tests.unit.test_control import FakeDaemon
from tests.unit.test_exporter import rule, snapshot
from watchdogd.faces import control, httpserver
from watchdogd.faces.cli import call
from watchdogd.faces.exporter import Exposition, build_registry

ROOT = Path(__file__).resolve().parents[1]


def old_module(name: str, workdir: Path, rev: str) -> ModuleType:
    """``watchdogd/<name>.py`` as committed at ``rev``, imported under another name."""
    source = subprocess.run(["git", "show", f"{rev}:watchdogd/{name}.py"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout
    path = workdir / f"old_{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"old_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def http_storm(module: Any, connections: int, seconds: float) -> Tally:
    exposition = Exposition(build_registry(lambda: snapshot(rule()), "1", process=False))
    server = module.MetricsServer("127.0.0.1:0", module.WebConfig(), exposition, lambda: (True, "ok"))
    server.start()
    try:
        host, port = server.address
        with storm("slowloris", host, str(port), str(connections)):
            return tally(every(0.1, seconds, lambda: scrape_once(host, port, timeout=2.0)))
    finally:
        server.close()


def control_storm(module: Any, clients: int, seconds: float, workdir: Path) -> Tally:
    server = module.ControlServer(workdir / f"c{clients}.sock", None, FakeDaemon().handlers())
    server.start()

    def status() -> tuple[bool, float]:
        started = time.monotonic()
        try:
            ok = call(str(server.path), "status", timeout=2)["schema"] == 1
        except Exception:
            ok = False
        return ok, time.monotonic() - started

    try:
        with storm("idle-unix", str(server.path), str(clients)):
            return tally(every(0.1, seconds, status))
    finally:
        server.close(timeout=5.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each storm")
    parser.add_argument("--storms", default="64,200,500", help="slow-loris connection counts")
    parser.add_argument("--idle", default="17,100", help="idle control-socket client counts")
    parser.add_argument("--old", metavar="REV", help="also measure the servers as committed at REV "
                        "(0694ea4: before the issue-20 rewrite)")
    args = parser.parse_args()
    print(f"RLIMIT_NOFILE soft: {raise_nofile()}")
    rows: list[tuple[str, str, int, Tally]] = []
    with tempfile.TemporaryDirectory(prefix="wdb-", dir="/tmp") as tmp:
        workdir = Path(tmp)
        versions: list[tuple[str, Any, Any]] = [("new", httpserver, control)]
        if args.old:
            versions.append((args.old, old_module("httpserver", workdir, args.old),
                             old_module("control", workdir, args.old)))
        runs: list[tuple[str, str, int, Callable[[], Tally]]] = []
        for label, http_mod, control_mod in versions:
            for count in map(int, args.storms.split(",")):
                runs.append((label, "scrape /metrics vs slow-loris", count,
                             partial(http_storm, http_mod, count, args.seconds)))
            for count in map(int, args.idle.split(",")):
                runs.append((label, "status vs idle control clients", count,
                             partial(control_storm, control_mod, count, args.seconds, workdir)))
        for label, what, count, run in runs:
            figures = run()
            rows.append((label, what, count, figures))
            print(f"{label:4} {what:31} x{count:<4} {figures.line()}", flush=True)
    print()
    print(f"{'code':4} | {'storm':31} | {'conns':>5} | {'ok':>9} | {'rate':>6} | {'p50 ms':>7} | {'p99 ms':>7}")
    for label, what, count, figures in rows:
        print(f"{label:4} | {what:31} | {count:>5} | {figures.ok:>4}/{figures.attempts:<4} | "
              f"{100 * figures.rate:5.1f}% | {1000 * figures.p50:7.1f} | {1000 * figures.p99:7.1f}")


if __name__ == "__main__":
    main()
