"""Composition root: wires config, state, clients, engine and scheduler; handles signals.

Everything with a lifetime (clients, stores, threads) is created here and
passed down, so no module holds global mutable state and tests can build the
same graph with their own clock and paths.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from watchdogd import __version__
from watchdogd.clients import close_clients, open_clients
from watchdogd.config import Config, ConfigError, env_config_path, load_config
from watchdogd.engine import Engine, RunReport
from watchdogd.logs import event, setup_logging
from watchdogd.model import Clock, RuleStatus
from watchdogd.scheduler import JobSpec, Scheduler
from watchdogd.state import StateError, StateStore

log = logging.getLogger("watchdogd")

EXIT_OK, EXIT_FIRING, EXIT_CONFIG = 0, 1, 2
PRUNE_EVERY = 3600.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="watchdogd",
        description="Self-healing watchdog: runs probes, compares them with the policy, takes bounded actions.",
    )
    parser.add_argument("--config", type=Path, default=env_config_path(), help="policy file (%(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="record what would be done, change nothing")
    parser.add_argument(
        "--once", action="store_true", help="run every rule once, print a summary, exit 0/1/2"
    )
    parser.add_argument("--version", action="version", version=f"watchdogd {__version__}")
    return parser.parse_args(argv)


def jobs_for(config: Config) -> list[JobSpec]:
    return [JobSpec(r.name, r.every, r.jitter) for r in config.rules.values() if r.enabled]


class Daemon:
    """The long-running process. ``run`` returns the exit code."""

    def __init__(self, config: Config, args: argparse.Namespace, clock: Clock = time.time) -> None:
        self.args = args
        self.clock = clock
        self.stop_event = threading.Event()
        self.reload_requested = threading.Event()
        self.store = StateStore(config.state_dir / "state.db", clock)
        self.clients = open_clients(config)
        self.engine = Engine(config, self.store, self.clients, clock, stop=self.stop_event)
        self.scheduler = Scheduler(self.engine.run_rule, clock)
        self._last_prune = 0.0

    @property
    def config(self) -> Config:
        return self.engine.config

    def run(self) -> int:
        self._install_signals()
        self.scheduler.start(jobs_for(self.config))
        event(
            log,
            logging.INFO,
            "started",
            version=__version__,
            config=str(self.config.path),
            summary=self.config.summary(),
        )
        while not self.stop_event.is_set():
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.reload()
            self._housekeeping()
            self.stop_event.wait(1.0)
        return self.shutdown()

    def reload(self) -> bool:
        """Re-read the config; a bad one keeps the running config and says why."""
        path = self.config.path
        try:
            config = load_config(path, force_dry_run=self.args.dry_run)
        except ConfigError as exc:
            self.engine.last_reload_error = f"{len(exc.problems)} problem(s): {exc.problems[0]}"
            for problem in exc.problems:
                event(log, logging.ERROR, "reload failed, keeping the running config", problem=problem)
            return False
        old_clients = self.clients
        self.clients = open_clients(config)
        self.engine.reconfigure(config, self.clients)
        self.scheduler.replace(jobs_for(config))
        close_clients(old_clients)
        setup_logging(config.log_format, config.log_level)
        event(log, logging.INFO, "reloaded", summary=config.summary())
        return True

    def _housekeeping(self) -> None:
        now = self.clock()
        if now - self._last_prune >= PRUNE_EVERY:
            self._last_prune = now
            removed = self.engine.prune_history()
            if removed:
                event(log, logging.INFO, "pruned history", rows=removed)

    def request_stop(self) -> None:
        self.stop_event.set()

    def shutdown(self) -> int:
        event(log, logging.INFO, "stopping")
        # wait=True lets an action in flight finish (each action is bounded by its own timeout).
        self.scheduler.shutdown(wait=True)
        self.engine.close()
        close_clients(self.clients)
        self.store.close()
        event(log, logging.INFO, "stopped")
        return EXIT_OK

    def _install_signals(self) -> None:
        def on_term(signum: int, frame: FrameType | None) -> None:
            self.request_stop()

        def on_hup(signum: int, frame: FrameType | None) -> None:
            self.reload_requested.set()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, on_hup)


def run_once(config: Config, clock: Clock = time.time) -> int:
    """``--once``: every enabled rule once, no grace (an explicit request), same state as the daemon."""
    store = StateStore(config.state_dir / "state.db", clock)
    clients = open_clients(config)
    engine = Engine(config, store, clients, clock, grace=False)
    try:
        reports = [engine.run_rule(name) for name, rule in config.rules.items() if rule.enabled]
    finally:
        engine.close()
        close_clients(clients)
        store.close()
    for report in reports:
        print(format_report(report))
    firing = [r.rule for r in reports if r.status in (RuleStatus.FIRING, RuleStatus.GAVE_UP)]
    print(f"{len(reports)} rules run, {len(firing)} firing" + (f": {', '.join(firing)}" if firing else ""))
    return EXIT_FIRING if firing else EXIT_OK


def format_report(report: RunReport) -> str:
    parts = [f"{report.rule}: {report.status.value}"]
    if report.error:
        parts.append(f"error: {report.error}")
    if report.firing:
        parts.append("firing: " + ", ".join(report.firing[:10]) + (" ..." if len(report.firing) > 10 else ""))
    if report.pending:
        parts.append(f"pending: {len(report.pending)}")
    for entry in report.audit:
        outcome = (
            entry.decision.value
            if entry.result in ("n/a", "dry_run")
            else f"{entry.decision.value} {entry.result}"
        )
        parts.append(f"{entry.action} {entry.subject}: {outcome}")
    return "; ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config, force_dry_run=args.dry_run)
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(config.log_format, config.log_level)
    try:
        if args.once:
            return run_once(config)
        return Daemon(config, args).run()
    except StateError as exc:
        print(f"watchdogd: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
