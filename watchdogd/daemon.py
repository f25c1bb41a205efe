"""Composition root: wires config, state, clients, engine and scheduler; handles signals.

Everything with a lifetime (clients, stores, threads) is created here and
passed down, so no module holds global mutable state and tests can build the
same graph with their own clock and paths.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from watchdogd import __version__, buildinfo
from watchdogd.clients import close_clients, open_clients
from watchdogd.configchild import load_config_in_child
from watchdogd.configtypes import DEFAULT_CONFIG_PATH, Config, ConfigError, env_config_path
from watchdogd.counting import count_line, tally
from watchdogd.engine.engine import Engine, RunReport
from watchdogd.engine.scheduler import JobSpec, Scheduler
from watchdogd.engine.state import StateStore
from watchdogd.engine.statedir import DB_NAME, StateError, StateLock
from watchdogd.faces import notify
from watchdogd.faces.control import ControlError, ControlServer, Handlers, resolve_group
from watchdogd.faces.exporter import Exposition, RuleGroups, build_registry, render_text
from watchdogd.faces.httpserver import (
    HttpLimits,
    ListenError,
    MetricsServer,
    WebConfig,
    WebConfigError,
    describe,
    load_web_config,
)
from watchdogd.faces.textfile import TextfileError, TextfileWriter, check_directory
from watchdogd.fleet.build import open_coordinator
from watchdogd.logs import event, setup_logging
from watchdogd.memory import Released, release_file_pages, release_free_memory, tune_malloc
from watchdogd.model import Clock, RuleStatus
from watchdogd.notifications.service import Notifications, NotifyConfigError, build_transports

log = logging.getLogger("watchdogd")

EXIT_OK, EXIT_FIRING, EXIT_CONFIG, EXIT_STOP_OVERDUE = 0, 1, 2, 3
STOP_DEADLINE = 75.0
"""Seconds a stop may take (actions in flight finishing): under the unit's TimeoutStopSec=90s."""
PRUNE_EVERY = 3600.0
TRIM_EVERY = 5.0
"""Seconds between handing free heap pages back to the kernel (glibc ``malloc_trim``): 0.2-1 ms each, and
about 14 MiB of RSS at 1,000 rules that glibc would otherwise keep after each cycle's garbage. Every 5 s
rather than every minute: under CPU contention runs pile up, and what they freed stayed resident for up to
the whole period (1,000 rules: 2-3 MiB more for most of each minute, issue 17); at 0.01-0.02 % of a core."""
FIRST_RUNS_PAGES_EVERY = 0.25
FIRST_RUNS_PAGES_WALKS = 20
"""While a start's or reload's first runs are under way, their file pages go back four times a second, twenty
times at most: 1,000 first runs touch 5 MiB of libraries (libpq, libssl...) within seconds, which stayed resident
until the last run finished. Under CPU contention that took 3-4 s and was the 1,000-rule row's largest reading:
60.0-60.8 MiB against 58.2-58.4 once settled; with walks every second 58.0-58.7 (issue 17, stop 37). A second
was still long enough for the psycopg and redis imports of the first runs to meet their libraries' pages at
once: started four times each, RSS sampled every 20 ms, the start's largest reading was 58.7-59.7 MiB with
walks every second and 57.7-58.5 every quarter second (stop 38). A walk is 4-9 ms; a rule that hangs in its
first run stops them after twenty, not at the deadline."""
STATUS_EVERY = 2.0
"""Seconds between sd_notify STATUS refreshes (sent only when the text changed)."""
INTERFACE_ERRORS = (ControlError, ListenError, WebConfigError, TextfileError)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="watchdogd",
        description="Self-healing watchdog: runs probes, compares them with the policy, takes bounded actions.",
    )
    env = os.environ.get("WATCHDOGD_CONFIG")
    parser.add_argument(
        "--config", type=Path, default=env_config_path(), metavar="PATH",
        help=f"policy file (default: $WATCHDOGD_CONFIG if set, else {DEFAULT_CONFIG_PATH})"
        + (f"; $WATCHDOGD_CONFIG is {env}" if env else ""),
    )
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
        self._inbox = _SignalInbox()  # SIGTERM, SIGINT, SIGHUP and stop requests end the main loop's wait at once
        transports = build_transports(config)  # first: an unusable sink stops the start before anything opens
        self.store = StateStore(config.state_dir / DB_NAME, clock)
        self.clients = open_clients(config)
        self.coordinator = open_coordinator(config.fleet)
        rule_groups = RuleGroups()  # the exporter's part of each view, prepared by the run that made it
        self.engine = Engine(
            config, self.store, self.clients, clock, stop=self.stop_event, coordinator=self.coordinator,
            on_view=rule_groups.add,
        )
        self.notifications = Notifications(self.engine, lambda: self.engine.config, clock, transports)
        self.scheduler = Scheduler(self._run_rule, clock)
        self.notifier = notify.Notifier.from_env()
        deliveries, runs = self.notifications.stats, self.scheduler.progress.run_counts
        self.build = buildinfo.current(__version__)  # once: files under .git are read at start only
        self.exposition = Exposition(
            build_registry(self.engine.snapshot, self.build, deliveries=deliveries, runs=runs, prepared=rule_groups),
            release_memory=release_free_memory,
        )
        self._textfile_registry = build_registry(
            self.engine.snapshot, self.build, process=False, deliveries=deliveries, runs=runs
        )
        self.http: MetricsServer | None = None
        self.control: ControlServer | None = None
        self.textfile: TextfileWriter | None = None
        self._reload_lock = threading.Lock()
        self._status_due = 0.0
        self._pings_withheld = False
        self._last_prune = 0.0
        self._last_trim = 0.0
        self._release_due: float | None = None
        self._first_runs_walks = 0
        self._first_runs_walked = 0.0
        self._await_first_runs(config)
        self.stop_deadline = STOP_DEADLINE

    @property
    def config(self) -> Config:
        return self.engine.config

    def run(self) -> int:
        self._install_signals()
        try:
            # Sockets are bound before the scheduler starts: a taken port or a bad group fails
            # the start before any rule could act.
            self._open_interfaces(self.config)
        except INTERFACE_ERRORS as exc:
            event(log, logging.ERROR, "cannot start", error=str(exc))
            self._close_interfaces()
            self.engine.close()
            close_clients(self.clients, self.config.registry)
            self.store.close()
            return EXIT_CONFIG
        self.notifications.start()  # settles what changed while down, before any rule runs
        if self._release_due is not None:
            # What importing and loading touched, before the first runs add their own pages on top of it;
            # what those touch goes back once every rule has run (``_housekeeping``).
            self._release_start_pages()
        self.scheduler.start(jobs_for(self.config))
        self._serve_interfaces()
        event(
            log,
            logging.INFO,
            "started",
            version=__version__,
            revision=self.build.revision,
            config=str(self.config.path),
            summary=self.config.summary(),
            http=f"{self.config.listen} ({describe(self.http.web)})" if self.http else None,
            control=str(self.config.control_socket),
            textfile=self.config.textfile_dir,
        )
        self.notifier.ready(self._status_text())
        while True:
            # Signals were only noted by their handlers; acted on here, where taking locks is safe.
            if self._inbox.take("stop"):
                self.stop_event.set()
            if self.stop_event.is_set():
                break
            if self._inbox.take("reload"):
                self.reload_requested.set()
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self._reload_guarded()
            self._housekeeping()
            self._tick_notify()
            self._inbox.wait(self._loop_wait())
        return self.shutdown()

    def _reload_guarded(self) -> None:
        """SIGHUP's reload: a failure past config loading is logged, never the end of the daemon."""
        try:
            self.reload()
        except Exception:
            log.exception("reload crashed; the daemon keeps running (config may be partly applied)")

    def reload(self) -> bool:
        """Re-read the config; a bad one keeps the running config and says why."""
        return self.reload_verbose()[0]

    def reload_verbose(self) -> tuple[bool, str]:
        """SIGHUP and `watchdogctl reload`: (ok, summary or every problem, one per line).

        systemd hears RELOADING=1 first and READY=1 after, whatever the
        outcome; STATUS= then says whether the reload failed.
        """
        with self._reload_lock:  # SIGHUP and the control socket may ask at the same time
            self.notifier.reloading()
            try:
                return self._reload()
            finally:
                self.notifier.ready(self._status_text())

    def _reload(self) -> tuple[bool, str]:
        path = self.config.path
        try:
            config = load_config_in_child(path, force_dry_run=self.args.dry_run)
        except ConfigError as exc:
            self.engine.last_reload_error = f"{len(exc.problems)} problem(s): {exc.problems[0]}"
            for problem in exc.problems:
                event(log, logging.ERROR, "reload failed, keeping the running config", problem=problem)
            return False, "\n".join(exc.problems)
        except Exception as exc:  # whatever a config does, the running daemon survives it
            problem = f"{path}: cannot load config: {type(exc).__name__}: {exc}"[:500]
            self.engine.last_reload_error = f"1 problem(s): {problem}"
            event(log, logging.ERROR, "reload failed, keeping the running config", problem=problem)
            return False, problem
        old_clients, old_coordinator, old_fleet = self.clients, self.coordinator, self.config.fleet
        previous = (old_fleet, old_coordinator) if old_fleet is not None and old_coordinator is not None else None
        try:
            swap = self._prepare_interfaces(config)
            transports = build_transports(config)
            coordinator = open_coordinator(config.fleet, previous)
        except (*INTERFACE_ERRORS, NotifyConfigError, ValueError) as exc:
            self.engine.last_reload_error = str(exc)
            event(log, logging.ERROR, "reload failed, keeping the running config", problem=str(exc))
            return False, str(exc)
        self.coordinator = coordinator
        self.clients = open_clients(config, reuse=old_clients, previous=self.config)
        self.engine.reconfigure(config, self.clients, self.coordinator)
        self.notifications.reconfigure(transports)
        self.scheduler.replace(jobs_for(config))
        self._commit_interfaces(config, swap)
        self._changed()
        close_clients(old_clients, config.registry, keep=self.clients)
        if old_coordinator is not None and old_coordinator is not self.coordinator:
            old_coordinator.close()  # its lease goes: a slot still held under it ends that run (docs/fleet.md)
        setup_logging(config.log_format, config.log_level)
        event(log, logging.INFO, "reloaded", summary=config.summary())
        release_free_memory()  # the old config's objects are gone: give their pages back now
        self._await_first_runs(config)  # the new rules' first runs touch pages again
        return True, config.summary()

    def _housekeeping(self) -> None:
        now = self.clock()
        if now - self._last_prune >= PRUNE_EVERY:
            self._last_prune = now
            removed = self.engine.prune_history()
            settled = self.notifications.outbox.prune(now - self.config.history_retention)
            if removed or settled:
                event(log, logging.INFO, "pruned history", rows=removed, notifications=settled)
        if now - self._last_trim >= TRIM_EVERY:
            self._last_trim = now
            release_free_memory()
        if self._release_due is not None and (now >= self._release_due or self.engine.every_rule_ran()):
            self._release_due = None  # once every rule has run, its first run's pages are touched: no need to wait
            self._release_start_pages()
        elif (self._release_due is not None and self._first_runs_walks
              and now - self._first_runs_walked >= FIRST_RUNS_PAGES_EVERY):
            self._first_runs_walks -= 1
            self._first_runs_walked = now
            self._release_first_runs_pages()

    def _await_first_runs(self, config: Config) -> None:
        """A start or reload: its pages go back once its first runs are done, walked every quarter second until then."""
        after = config.release_start_pages_after
        self._release_due = None if after is None else self.clock() + after
        self._first_runs_walks, self._first_runs_walked = FIRST_RUNS_PAGES_WALKS, self.clock()

    def _release_start_pages(self) -> None:
        """Around a start or reload only, never on the daemon's lifelong timers: a page handed back is read again
        from disk (or the page cache) on its next use; only the twenty walks of ``FIRST_RUNS_PAGES_EVERY`` come
        between."""
        released = release_file_pages()
        if released is None:
            event(log, logging.DEBUG, "cannot hand back start-up pages: no MADV_PAGEOUT (Linux 5.4+, glibc)")
            return
        event(log, logging.INFO, "handed back start-up pages", **_released_fields(released),
              mappings=released.mappings, refused=released.refused)

    def _release_first_runs_pages(self) -> None:
        """While the first runs are under way (``FIRST_RUNS_PAGES_EVERY``); the hand-back after them is logged."""
        released = release_file_pages()
        if released is not None:
            event(log, logging.DEBUG, "handed back the first runs' pages so far", **_released_fields(released))

    def shutdown(self) -> int:
        self.notifier.stopping()
        event(log, logging.INFO, "stopping")
        # Probe waits end at once on stop (engine); actions in flight get until the deadline.
        deadline = threading.Timer(self.stop_deadline, self._stop_overdue)
        deadline.daemon = True
        deadline.start()
        try:
            return self._shutdown()
        finally:
            deadline.cancel()

    def _stop_overdue(self) -> None:
        """Past the stop deadline: exit now rather than be SIGKILLed by systemd at TimeoutStopSec.

        Every committed state change is already on disk (write-ahead rows,
        cooldowns); an action cut short is closed as interrupted at the next
        start, exactly as after a crash.
        """
        event(log, logging.ERROR, "stop did not finish in time; exiting now", deadline_seconds=self.stop_deadline)
        logging.shutdown()
        os._exit(EXIT_STOP_OVERDUE)

    def _shutdown(self) -> int:
        if self.control is not None:
            self.control.close()  # no new requests; waits for a `watchdogctl run` in flight
            self.control = None
        # wait=True lets an action in flight finish (each action is bounded by its own timeout).
        self.scheduler.shutdown(wait=True)
        self._close_interfaces()  # after the last cycle, so the textfile holds the final state
        self.engine.close()  # drains the event sinks: the pager's last pages reach the outbox
        self.notifications.close()
        close_clients(self.clients, self.config.registry)
        if self.coordinator is not None:
            self.coordinator.close()
        self.store.close()
        event(log, logging.INFO, "stopped")
        return EXIT_OK

    def _install_signals(self) -> None:
        # A handler runs in the main thread between two bytecodes, possibly while the main loop holds
        # a lock (inside Event.wait or Event.set): taking any lock here could wait for ever. systemctl
        # stop hung that way under load until SIGKILL. So a handler only notes the signal.
        def on_term(signum: int, frame: FrameType | None) -> None:
            self._inbox.note("stop")

        def on_hup(signum: int, frame: FrameType | None) -> None:
            self._inbox.note("reload")

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, on_hup)

    # -- interfaces: HTTP, control socket, textfile, sd_notify ------------------

    def _run_rule(self, name: str) -> RunReport:
        """Scheduler and `watchdogctl run` entry: one cycle, then refresh the textfile."""
        try:
            return self.engine.run_rule(name)
        finally:
            self._changed()

    def _changed(self) -> None:
        """The engine's state moved: /metrics renders again at its next scrape; the textfile debounces."""
        self.exposition.changed()
        if self.textfile is not None:
            self.textfile.changed()

    def _pause(self, name: str, until: float, by: Mapping[str, Any] | None) -> None:
        self.engine.pause(name, until, by=by)
        self._changed()

    def _resume(self, name: str, reset: bool, by: Mapping[str, Any] | None) -> dict[str, Any]:
        outcome = self.engine.resume(name, reset=reset, by=by)
        self._changed()
        return outcome

    def _pause_all(self, until: float, reason: str | None, by: Mapping[str, Any] | None) -> dict[str, Any]:
        outcome = self.engine.pause_all(until, reason=reason, by=by)
        self._changed()
        return outcome

    def _resume_all(self, by: Mapping[str, Any] | None) -> dict[str, Any]:
        outcome = self.engine.resume_all(by=by)
        self._changed()
        if outcome["ended"] is not None:
            self.notifications.settle()  # what still fires pages now, not at the next tick
        return outcome

    def _handlers(self) -> Handlers:
        engine = self.engine
        return Handlers(
            snapshot=engine.snapshot,
            history=lambda rule, since, limit: engine.store.history(rule=rule, since=since, limit=limit),
            pause=self._pause,
            resume=self._resume,
            run=self._run_rule,
            reload=self.reload_verbose,
            rules=engine.rule_names,
            units=lambda: {name: rule.unit for name, rule in self.config.rules.items()},
            version=__version__,
            clock=self.clock,
            transitions=lambda rule, since, limit: engine.store.transitions(rule=rule, since=since, limit=limit),
            test_notify=self.notifications.test,
            fleet_views=self.engine.fleet_views,
            fleet_stats=self.engine.fleet_stats,
            evidence=engine.evidence.store.get,
            pause_all=self._pause_all,
            resume_all=self._resume_all,
        )

    def _health(self) -> tuple[bool, str]:
        """/healthz: the scheduler runs and every rule finished within two of its intervals."""
        if not self.scheduler.running:
            return False, "scheduler not running"
        late = sorted(self.scheduler.late())
        if late:
            return False, f"{len(late)} rule(s) did not run within two intervals: {_shown(late)}"
        stalled = sorted(self.engine.stalled())
        if stalled:
            return False, f"{len(stalled)} rule(s) stalled, probe stuck past its interval: {_shown(stalled)}"
        return True, f"ok: {count_line(self.engine.status_counts())}"

    def _render_textfile(self) -> bytes:
        return render_text(self._textfile_registry)

    def _open_interfaces(self, config: Config) -> None:
        web = load_web_config(config.web_config_file)
        textdir = check_directory(config.textfile_dir) if config.textfile_dir else None
        self.control = ControlServer(config.control_socket, config.control_group, self._handlers())
        if config.listen:
            limits = HttpLimits(keepalive_idle=config.http_keepalive_idle)
            self.http = MetricsServer(config.listen, web, self.exposition, self._health, limits)
        if textdir is not None:
            self.textfile = TextfileWriter(textdir, self._render_textfile)

    def _serve_interfaces(self) -> None:
        for server in (self.control, self.http, self.textfile):
            if server is not None:
                server.start()

    def _close_interfaces(self) -> None:
        for name in ("control", "http", "textfile"):
            server = getattr(self, name)
            if server is not None:
                try:
                    server.close()
                except Exception as exc:  # closing must not stop the shutdown
                    event(log, logging.WARNING, f"closing {name} failed", error=str(exc))
                setattr(self, name, None)

    def _prepare_interfaces(self, config: Config) -> _Swap:
        """Check and bind what a new config needs, without touching what runs (a reload may still fail)."""
        old = self.config
        swap = _Swap(
            web=load_web_config(config.web_config_file),
            textdir=check_directory(config.textfile_dir) if config.textfile_dir else None,
        )
        resolve_group(config.control_group)
        try:
            if config.control_socket != old.control_socket:
                swap.control = ControlServer(config.control_socket, config.control_group, self._handlers())
                swap.control_changed = True
            if config.listen != old.listen:
                swap.http_changed = True
                if config.listen:
                    swap.http = self._rebind_http(config.listen, swap.web, config.http_keepalive_idle)
        except INTERFACE_ERRORS:
            if swap.control is not None:
                swap.control.close()
            raise
        return swap

    def _rebind_http(self, listen: str, web: WebConfig, keepalive_idle: float) -> MetricsServer:
        limits = HttpLimits(keepalive_idle=keepalive_idle)
        try:
            return MetricsServer(listen, web, self.exposition, self._health, limits)
        except ListenError:
            if self.http is None:
                raise
        # The new address overlaps the old one (0.0.0.0:19469 -> 127.0.0.1:19469): free it and retry,
        # and put the old one back if that fails too.
        old = self.http
        old.close()
        self.http = None
        try:
            return MetricsServer(listen, web, self.exposition, self._health, limits)
        except ListenError:
            try:
                self.http = MetricsServer(old.listen, old.web, self.exposition, self._health, old.limits)
                self.http.start()
            except ListenError as exc:
                event(log, logging.ERROR, "cannot re-open the previous listen address", error=str(exc))
            raise

    def _commit_interfaces(self, config: Config, swap: _Swap) -> None:
        if swap.control_changed and swap.control is not None:
            swap.control.start()
            old_control, self.control = self.control, swap.control
            if old_control is not None:
                old_control.close(timeout=0.0)
        elif self.control is not None and config.control_group != self.control.group:
            try:
                self.control.set_group(config.control_group)
            except ControlError as exc:
                event(log, logging.ERROR, "cannot change the control socket's group", error=str(exc))
        if swap.http_changed:
            old_http, self.http = self.http, swap.http
            if self.http is not None:
                self.http.start()
            if old_http is not None:
                old_http.close()
        elif self.http is not None:
            self.http.update(swap.web, keepalive_idle=config.http_keepalive_idle)
        self._swap_textfile(swap.textdir)

    def _swap_textfile(self, textdir: Path | None) -> None:
        if textdir is None:
            if self.textfile is not None:
                self.textfile.close()
                self.textfile = None
        elif self.textfile is None:
            self.textfile = TextfileWriter(textdir, self._render_textfile)
            self.textfile.start()
        else:
            self.textfile.directory = textdir
            self.textfile.changed()

    def _status_text(self) -> str:
        try:
            return notify.status_line(self.engine.snapshot())
        except Exception as exc:  # STATUS is informational; never let it break start, reload or the loop
            return f"status unavailable: {exc}"

    def _progressing(self) -> bool:
        stuck = self.scheduler.progress.late(notify.stuck_after(self.config.rules.values()), factor=1.0)
        threads = self.engine.stuck_probes
        healthy = notify.should_ping(self.scheduler.running, stuck) and not notify.too_many_stuck(
            threads, self.config.stuck_probes_restart
        )
        if healthy == self._pings_withheld:  # log the edges, not every second
            self._pings_withheld = not healthy
            if healthy:
                event(log, logging.INFO, "scheduler progressing again; watchdog pings resumed")
            else:
                event(log, logging.ERROR, "scheduler not progressing; withholding watchdog pings",
                      running=self.scheduler.running, stuck=",".join(sorted(stuck)[:10]),
                      stuck_probe_threads=threads, stuck_probes_restart=self.config.stuck_probes_restart)
        return healthy

    def _tick_notify(self) -> None:
        if not self.notifier.enabled:
            return
        if self.notifier.interval is not None:
            self.notifier.watchdog(self._progressing())
        now = time.monotonic()
        if now >= self._status_due:
            self._status_due = now + STATUS_EVERY
            self.notifier.status(self._status_text())

    def _loop_wait(self) -> float:
        due = self.notifier.watchdog_due()
        wait = 1.0 if due is None else min(1.0, max(0.1, due))
        # While the start's pages wait for the last first run, look every 0.1 s (a walk of the rules, 50 us
        # at 1,000): the RSS until then is the start's peak, 1,000 runs' garbage on top of 16 MiB of file pages.
        return wait if self._release_due is None else min(wait, 0.1)


def _released_fields(released: Released) -> dict[str, str]:
    """What a hand-back's log line says of it: the resident file pages before and after, and its time."""
    return {"file_mib_before": f"{released.file_kib_before / 1024:.1f}",
            "file_mib_after": f"{released.file_kib_after / 1024:.1f}", "ms": f"{released.seconds * 1000:.1f}"}


class _SignalInbox:
    """What signal handlers tell the main loop, without a lock: counters and one byte on a pipe.

    ``note`` is safe in a signal handler (a counter bump and a non-blocking
    write); ``wait`` sleeps on the pipe until a note or the timeout;
    ``take`` says whether a note came since the last ``take``. A handler may
    run between any two bytecodes of ``take``: the counter only grows and
    ``take`` remembers the value it read, so a note is never lost.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._notes: dict[str, int] = {"stop": 0, "reload": 0}
        self._taken: dict[str, int] = {"stop": 0, "reload": 0}

    def note(self, what: str) -> None:
        self._notes[what] += 1
        with contextlib.suppress(OSError):  # a full pipe (BlockingIOError) already wakes the loop
            os.write(self._write, b"!")

    def take(self, what: str) -> bool:
        count = self._notes[what]
        noted = count != self._taken[what]
        self._taken[what] = count
        return noted

    def wait(self, timeout: float) -> None:
        ready, _, _ = select.select([self._read], [], [], max(timeout, 0.0))
        if ready:
            with contextlib.suppress(OSError):  # drained (BlockingIOError)
                while os.read(self._read, 512):
                    pass


def _shown(names: Sequence[str]) -> str:
    return ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")


@dataclass
class _Swap:
    """What a reload prepared for the interfaces; applied only once the whole reload is known good."""

    web: WebConfig
    textdir: Path | None
    control: ControlServer | None = None
    control_changed: bool = False
    http: MetricsServer | None = None
    http_changed: bool = False


def run_once(config: Config, clock: Clock = time.time) -> int:
    """``--once``: every enabled rule once, no grace (an explicit request), same state as the daemon."""
    transports = build_transports(config)
    store = StateStore(config.state_dir / DB_NAME, clock)
    clients = open_clients(config)
    coordinator = open_coordinator(config.fleet)  # --once acts too: the fleet's bound applies to it
    engine = Engine(config, store, clients, clock, grace=False, coordinator=coordinator)
    notifications = Notifications(engine, lambda: engine.config, clock, transports)
    try:
        reports = [engine.run_rule(name) for name in dependency_order(config)]
    finally:
        engine.close()
        notifications.flush()  # one attempt each; what fails waits in the outbox for the next run
        close_clients(clients, config.registry)
        if coordinator is not None:
            coordinator.close()
        store.close()
    for report in reports:
        print(format_report(report))
    firing = [r.rule for r in reports if r.status in (RuleStatus.FIRING, RuleStatus.GAVE_UP)]
    # A service that refuses connections right now fails the run even while its rule's `for` has
    # not passed: one run cannot wait out a `for`, and "0 firing" would read as "all is well".
    unreachable = [
        r.rule for r in reports
        if not r.up and r.status is RuleStatus.PENDING and config.rules[r.rule].on_down == "fire"
    ]
    disabled = [RuleStatus.DISABLED.value] * (len(config.rules) - len(reports))
    summary = count_line(tally([*(r.status.value for r in reports), *disabled]))
    if firing:
        summary += f"; firing: {', '.join(firing)}"
    if unreachable:
        summary += f"; unreachable (pending their `for`): {', '.join(unreachable)}"
    print(summary)
    return EXIT_FIRING if firing or unreachable else EXIT_OK


def dependency_order(config: Config) -> list[str]:
    """Enabled rules in config order, each after the rules it ``depends_on`` (config checks: no cycles).

    In one pass the rule that reports an outage must run before the rules
    that wait on it, or they would each report the outage themselves.
    """
    enabled = {name: rule for name, rule in config.rules.items() if rule.enabled}
    ordered: dict[str, None] = {}

    def visit(name: str) -> None:
        if name in ordered or name not in enabled:
            return
        for dep in enabled[name].depends_on:
            visit(dep)
        ordered[name] = None

    for name in enabled:
        visit(name)
    return list(ordered)


def format_report(report: RunReport) -> str:
    parts = [f"{report.rule}: {report.status.value}"]
    if report.waiting_on:
        parts.append(f"on {', '.join(report.waiting_on)}")
    elif report.error:
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
    tune_malloc()
    args = parse_args(argv)
    try:
        config = load_config_in_child(args.config, force_dry_run=args.dry_run)
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(config.log_format, config.log_level)
    try:
        # Held until the process exits: a second daemon or `--once` on this state_dir would act twice.
        with StateLock(config.state_dir):
            if args.once:
                return run_once(config)
            return Daemon(config, args).run()
    except (StateError, NotifyConfigError) as exc:
        print(f"watchdogd: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
