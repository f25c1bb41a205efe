"""Snapshot readers never wait on a disk sync: ``Engine.snapshot()`` latency while rules write ahead.

What it shows: status and /metrics are built from ``Engine.snapshot()``. The
gate writes each action's write-ahead (rule state, budget, holds and the
"started" rows, one SQLite transaction with ``synchronous=FULL``, so an
fsync) under its own lock; a snapshot reads memory only and takes no lock
that is held across that write. Before issue 14, ``snapshot()`` read the
last actions from SQLite (behind the store's lock, held by every write) and
took the engine lock, which was held across the write-ahead; a reader then
queued behind the writers' fsyncs.

The load: N rules (default 20) whose fake probe always breaches (one subject
per rule, so no shared cooldown) and whose fake action returns ok and does
nothing; ``cooldown: 0.1s`` and ``max_cooldown`` the same (no backoff), so
each rule acts up to 10 times a second and both versions get the same number
of writes (``--cooldown 0s``: every run acts, as many writes as the disk
takes); a budget and ``max_actions`` far above what a run can spend,
``grace: 0s``, ``settle: 0s`` (one verify re-probe). W writer threads
(default 4) call ``engine.run_rule`` on their share of the rules in a loop
for ``--seconds``; one reader thread calls ``engine.snapshot()`` every
``--every`` seconds (default 10 ms; 0 = back to back) and records how long
each took. The store is a real ``StateStore`` on disk in a temporary
directory the benchmark creates and removes; the write-ahead time is the
time spent in ``store.save_rule_and_audit`` (wrapped on the instance).

``--old REV`` runs the same load against the engine as committed at REV too
(for instance 6290245, before issue 14), from a temporary ``git worktree``
removed afterwards; the working tree is not touched. Each version runs in a
fresh interpreter (this file with ``--as-old`` or ``--as-new``).

    python bench/bench_snapshot_writes.py [--rules 20] [--writers 4] [--seconds 10] [--every 0.01]
                                          [--cooldown 0.1s] [--old REV]

Prints figures only: no target, exit status 0 unless a run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULT = "RESULT "


def config_text(state_dir: Path, names: Sequence[str], cooldown: str) -> str:
    """The same YAML for both versions: fake kinds ``fake.percent`` and ``fake.fix``, keyed by rule."""
    rules = "".join(
        f"  {name}:\n"
        f"    probe: fake.percent\n"
        f"    params: {{key: {name}}}\n"
        f"    above: 90\n"
        f"    timeout: 1s\n"
        f"    cooldown: {cooldown}\n"
        f"    max_cooldown: {cooldown}\n"
        f"    max_actions: {{count: 100000, per: 1h}}\n"
        f"    actions:\n"
        f"      - fake.fix: {{key: {name}, settle: 0s}}\n"
        for name in names
    )
    return f"state_dir: {state_dir}\ngrace: 0s\nbudget: {{actions: 100000, per: 1h}}\nrules:\n{rules}"


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --------------------------------------------------------------------------- the load (either version)


def drive(engine: Any, store: Any, names: Sequence[str], calls: Callable[[], int], args: argparse.Namespace,
          db: Path) -> dict[str, Any]:
    """Writers run the rules, a reader takes snapshots; returns the figures (seconds)."""
    write_ahead: list[float] = []
    inner = store.save_rule_and_audit

    def timed_write_ahead(*a: Any, **k: Any) -> Any:
        started = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            write_ahead.append(time.perf_counter() - started)

    store.save_rule_and_audit = timed_write_ahead
    for name in names:  # warm up: every rule built, probed and acted on once
        engine.run_rule(name)
    engine.snapshot()
    write_ahead.clear()
    calls_before = calls()

    stop = threading.Event()
    errors: list[str] = []
    runs = [0] * args.writers

    def writer(index: int) -> None:
        mine = list(names[index :: args.writers])
        if not mine:
            return
        try:
            while not stop.is_set():
                for name in mine:
                    engine.run_rule(name)
                    runs[index] += 1
        except Exception as exc:  # reported, and the run counts as failed
            errors.append(f"writer {index}: {exc!r}")

    latencies: list[float] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                started = time.perf_counter()
                engine.snapshot()
                took = time.perf_counter() - started
                latencies.append(took)
                if args.every > 0:
                    stop.wait(max(args.every - took, 0.0))
        except Exception as exc:
            errors.append(f"reader: {exc!r}")

    threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(args.writers)]
    threads.append(threading.Thread(target=reader, daemon=True))
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    stop.wait(args.seconds)
    stop.set()
    for thread in threads:
        thread.join(30)
    elapsed = time.perf_counter() - began
    engine.close()
    store.close()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        audit_rows = conn.execute("SELECT count(*) FROM audit").fetchone()[0]
    return {
        "snapshots": latencies,
        "write_ahead": write_ahead,
        "action_runs": calls() - calls_before,
        "rule_runs": sum(runs),
        "audit_rows": audit_rows,
        "elapsed": elapsed,
        "errors": errors,
    }


class FakeProbe:
    """Always breaching: one subject at 95 (the rules fire above 90)."""

    def __init__(self, reading: Callable[[], Any]) -> None:
        self._reading = reading

    def measure(self) -> list[Any]:
        return [self._reading()]


class FakeAction:
    """Returns ok and does nothing; counts its runs."""

    def __init__(self, result: Callable[[Sequence[Any]], Any]) -> None:
        self._result = result
        self.calls = 0

    def run(self, subjects: Sequence[Any], *, dry_run: bool) -> Any:
        self.calls += 1
        return self._result(subjects)


def fakes(names: Sequence[str]) -> tuple[dict[str, FakeProbe], dict[str, FakeAction]]:
    from watchdogd.model import ActionResult, ItemResult, Reading  # noqa: PLC0415 (same in both versions)

    # One subject per rule, named after it: a shared subject would be one shared cooldown (hold) for all.
    probes = {name: FakeProbe(lambda name=name: Reading(f"{name}-x", 95.0)) for name in names}
    actions = {
        name: FakeAction(lambda subjects: ActionResult(ok=True, items=tuple(ItemResult(s.subject, True, "ok")
                                                                             for s in subjects)))
        for name in names
    }
    return probes, actions


def as_new(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The engine of this checkout, on the fake family of tests/support."""
    sys.path.insert(0, str(REPO))
    from tests.support.fake_family import fake_registry  # noqa: PLC0415 (the version is chosen by PYTHONPATH)
    from watchdogd.config import parse_config  # noqa: PLC0415
    from watchdogd.engine.engine import Engine  # noqa: PLC0415
    from watchdogd.engine.state import StateStore  # noqa: PLC0415

    names = [f"r{n:02d}" for n in range(args.rules)]
    probes, actions = fakes(names)
    text = config_text(workdir / "state", names, args.cooldown)
    config = parse_config(text, workdir / "w.yaml", registry=fake_registry(probes, actions))
    db = workdir / "state.db"
    store = StateStore(db, time.time)
    engine = Engine(config, store, {}, time.time, grace=False)
    return drive(engine, store, names, lambda: sum(a.calls for a in actions.values()), args, db)


def as_old(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The engine before issue 14 (run with PYTHONPATH at its tree): no registry parameter, so the fake
    kinds go into its plain ``registry.PROBES``/``ACTIONS`` dicts before the config is parsed."""
    # These four modules exist only in the old tree (ruff sorts them as third-party for that reason).
    from watchdogd.actions.base import ActionParams  # noqa: PLC0415
    from watchdogd.probes.base import Params  # noqa: PLC0415
    from watchdogd.state import StateStore  # noqa: PLC0415

    from watchdogd import registry  # noqa: PLC0415
    from watchdogd.config import parse_config  # noqa: PLC0415
    from watchdogd.engine import Engine  # noqa: PLC0415
    from watchdogd.model import Cardinality, Unit  # noqa: PLC0415
    from watchdogd.spec import ANY_SUBJECT, ActionSpec, ProbeSpec  # noqa: PLC0415

    class FakeParams(Params):
        key: str

    class FakeActionParams(ActionParams):
        key: str

    names = [f"r{n:02d}" for n in range(args.rules)]
    probes, actions = fakes(names)
    registry.PROBES["fake.percent"] = ProbeSpec(  # type: ignore[index]
        FakeParams, lambda p, _c, _k: probes[p.key], Unit.PERCENT, Cardinality.LOW, "bench", subjects="host"
    )
    registry.ACTIONS["fake.fix"] = ActionSpec(  # type: ignore[index]
        FakeActionParams, lambda p, _c, _k: actions[p.key], "bench", settle=0.0, accepts=ANY_SUBJECT
    )
    text = config_text(workdir / "state", names, args.cooldown)
    config = parse_config(text, workdir / "w.yaml")
    db = workdir / "state.db"
    store = StateStore(db, time.time)
    engine = Engine(config, store, {}, time.time, grace=False)
    return drive(engine, store, names, lambda: sum(a.calls for a in actions.values()), args, db)


def child(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="bench-snapshot-", dir=args.tmp))
    try:
        figures = (as_old if args.as_old else as_new)(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    import watchdogd  # noqa: PLC0415

    figures["code"] = str(Path(watchdogd.__file__).resolve().parent)
    print(RESULT + json.dumps(figures), flush=True)
    return 1 if figures["errors"] else 0


# --------------------------------------------------------------------------- the parent


def git(*argv: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *argv], check=True, capture_output=True, text=True).stdout.strip()


def run_side(label: str, flag: str, pythonpath: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    argv = [
        sys.executable, str(Path(__file__).resolve()), flag, "--rules", str(args.rules), "--writers",
        str(args.writers), "--seconds", str(args.seconds), "--every", str(args.every), "--cooldown", args.cooldown,
    ]
    if args.tmp:
        argv += ["--tmp", args.tmp]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=args.seconds + 300, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if not lines:
        raise SystemExit(f"{label}: no result (exit {done.returncode}):\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(lines[-1][len(RESULT) :])
    figures["label"] = label
    for error in figures["errors"]:
        print(f"{label}: {error}", file=sys.stderr)
    return figures


def report(sides: Sequence[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"{args.rules} rules always firing, cooldown {args.cooldown}, {args.writers} writer threads, "
          f"one snapshot reader every {args.every * 1000:g} ms, {args.seconds:g} s; SQLite synchronous=FULL "
          f"in {args.tmp or tempfile.gettempdir()}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    head = (f"{'version':24} {'snapshots':>9} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} "
            f"{'action runs':>11} {'audit rows':>10} {'write-ahead p50/p99 ms':>23}")
    print(head)
    for side in sides:
        snaps = [s * 1000 for s in side["snapshots"]]
        wa = [s * 1000 for s in side["write_ahead"]]
        print(f"{side['label']:24} {len(snaps):>9} {percentile(snaps, 0.5):>7.2f} {percentile(snaps, 0.9):>7.2f} "
              f"{percentile(snaps, 0.99):>7.2f} {max(snaps, default=float('nan')):>7.2f} "
              f"{side['action_runs']:>11} {side['audit_rows']:>10} "
              f"{percentile(wa, 0.5):>11.2f} / {percentile(wa, 0.99):<9.2f}")
    for side in sides:
        print(f"  {side['label']}: code from {side['code']}; {side['rule_runs']} rule runs in {side['elapsed']:.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=20)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=0.01, help="seconds between snapshots (0: back to back)")
    parser.add_argument("--cooldown", default="0.1s", help="each rule's cooldown and max_cooldown (0s: act every run)")
    parser.add_argument("--old", metavar="REV", help="also measure the engine as committed at REV")
    parser.add_argument("--tmp", help="directory for the temporary state (default: the system's temp dir)")
    parser.add_argument("--as-old", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--as-new", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.as_old or args.as_new:
        return child(args)

    head = git("rev-parse", "--short", "HEAD")
    sides = []
    if args.old:
        rev = git("rev-parse", "--short", args.old)
        parent = Path(tempfile.mkdtemp(prefix="bench-snapshot-old-"))
        tree = parent / "tree"
        try:
            git("worktree", "add", "--detach", str(tree), rev)
            sides.append(run_side(f"old {rev}", "--as-old", tree, args))
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                           capture_output=True, check=False)
            shutil.rmtree(parent, ignore_errors=True)
    sides.append(run_side(f"new (HEAD {head})", "--as-new", REPO, args))
    report(sides, args)
    return 1 if any(side["errors"] for side in sides) else 0


if __name__ == "__main__":
    sys.exit(main())
