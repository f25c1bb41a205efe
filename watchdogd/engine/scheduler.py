"""APScheduler jobs, one per interval bucket, and a record of whether they are making progress.

``max_instances=1`` and ``coalesce=True`` mean a slow rule skips a beat
instead of piling up runs; the probe timeout inside the engine bounds how
slow it can get. ``Progress`` is what the systemd watchdog ping and /healthz
trust: a scheduler thread that is alive but stuck stops the pings. It also
counts, from APScheduler's own events, the runs that did not happen (missed)
or started late, for ``watchdogd_rule_runs_missed_total`` and ``_late_total``.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobExecutionEvent,
    JobSubmissionEvent,
    SchedulerEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from watchdogd.engine.rulepool import RulePool
from watchdogd.model import Clock

log = logging.getLogger(__name__)

MAX_WORKERS = 64
"""Rule runs in progress at once (the rule pool). Threads beyond a few start only while runs wait behind
slow ones (``engine.rulepool``).

A run holds its thread while it waits on its probe (up to the rule's
timeout) and while its actions and verify run. With 8, eight rules whose
probes time out at the same moment (an app that accepts and never answers)
made every other rule wait; a rule never holds more than one thread
(``max_instances=1``), so below 64 rules no run ever waits for another.
"""


LATE_MIN = 1.0
LATE_FRACTION = 0.25


def late_after(every: float) -> float:
    """Seconds past its scheduled time after which a run counts as late: max(1 s, a quarter interval).

    The floor keeps the scheduler's own wake-up slack (milliseconds, more on
    a loaded host) from counting on one-second rules; a quarter interval is
    late enough that the rule's ``for`` and alerts noticeably lag.
    """
    return max(LATE_MIN, LATE_FRACTION * every)


@dataclass(frozen=True)
class JobSpec:
    name: str
    every: float
    jitter: float


@dataclass(frozen=True, slots=True)
class RunCounts:
    """Per rule, scheduled runs since start that never ran (``missed``) or started ``late``."""

    missed: Mapping[str, int]
    late: Mapping[str, int]


class Progress:
    """When each job last finished, on the wall clock we were given; and its missed and late runs.

    Written by the job threads (``mark``) and the scheduler's event listener
    (``missed``, ``submitted``), read by /healthz, the watchdog ping and
    /metrics: everything under one lock.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._finished: dict[str, float] = {}
        self._started_at = clock()
        self._missed: Counter[str] = Counter()
        self._late: Counter[str] = Counter()

    def mark(self, name: str) -> None:
        with self._lock:
            self._finished[name] = self._clock()

    def forget_except(self, names: Iterable[str]) -> None:
        """A (re)load installed exactly ``names``: their missed and late counts start at 0 if new.

        Counts of rules a reload removed stay, as ``watchdogd_actions_total``'s
        do: a counter must not vanish and come back at 0 within one process.
        """
        keep = set(names)
        with self._lock:
            self._finished = {k: v for k, v in self._finished.items() if k in keep}
            self._started_at = self._clock()
            for name in keep:
                self._missed.setdefault(name, 0)
                self._late.setdefault(name, 0)

    def missed(self, name: str, runs: int = 1) -> None:
        with self._lock:
            self._missed[name] += runs

    def submitted(self, name: str, scheduled: float, every: float) -> None:
        """A run was handed to a worker thread now; ``scheduled``: when it was due (Unix time, jitter included)."""
        now = self._clock()
        if now - scheduled > late_after(every):
            with self._lock:
                self._late[name] += 1

    def run_counts(self) -> RunCounts:
        with self._lock:
            return RunCounts(dict(self._missed), dict(self._late))

    def late(self, every: Mapping[str, float], factor: float = 2.0) -> list[str]:
        """Rules that have not finished within ``factor`` of their interval (counting from start)."""
        now = self._clock()
        with self._lock:
            return [
                name
                for name, interval in every.items()
                if now - self._finished.get(name, self._started_at) > factor * interval + 1.0
            ]

    def last(self, name: str) -> float | None:
        with self._lock:
            return self._finished.get(name)


BUCKET_WORKERS = 2
"""Threads for the buckets' ticks. A tick only hands its rules to the rule pool and returns."""


def bucket_id(every: float, jitter: float) -> str:
    return f"every {every:g}s jitter {jitter:g}s"


class Scheduler:
    """One APScheduler job per interval bucket, not per rule: the rules of a bucket run in the same cycle.

    Per job, APScheduler does a fair amount of work on every run (next fire
    time with jitter, events, its executor's bookkeeping): at 1,000 rules that
    was half of the daemon's CPU, while the rules of one interval can share a
    tick. A bucket is (interval, jitter): the tick hands each of its rules to
    the rule pool (``MAX_WORKERS`` threads), so one slow rule never delays the
    others of its bucket, and rules due in the same cycle can share work (one
    /proc scan, one ``pg_stat_activity`` read) inside the families' max age.

    The jitter is drawn per bucket and tick: it still spreads hosts of a
    fleet and rules of different intervals, but no longer the rules of one
    interval against each other; that is the point (their shared reads).

    A rule whose previous run is still going when its bucket ticks skips
    that beat (counted as missed, as ``max_instances=1`` did per job).
    """

    def __init__(self, run: Callable[[str], object], clock: Clock) -> None:
        self._run = run
        self.progress = Progress(clock)
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=BUCKET_WORKERS)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=UTC,
        )
        self._pool = RulePool(max_threads=MAX_WORKERS)
        self._specs: dict[str, JobSpec] = {}
        self._buckets: dict[str, tuple[JobSpec, ...]] = {}
        self._lock = threading.Lock()  # the running set
        self._running: set[str] = set()
        self._scheduler.add_listener(
            self._on_event, EVENT_JOB_SUBMITTED | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
        )

    def start(self, jobs: Iterable[JobSpec]) -> None:
        self.replace(jobs)
        self._scheduler.start()

    def replace(self, jobs: Iterable[JobSpec]) -> None:
        """Install exactly these rules (used at start and on reload); every bucket runs again soon.

        As before buckets, a reload runs every rule soon after, spread over
        its jitter (at most 2 s), so a changed rule shows its new state at once.
        """
        specs = {job.name: job for job in jobs}
        buckets: dict[str, list[JobSpec]] = {}
        for spec in specs.values():
            buckets.setdefault(bucket_id(spec.every, spec.jitter), []).append(spec)
        # First: the listener and the ticks may run before the loop below ends.
        self._specs, self._buckets = specs, {key: tuple(members) for key, members in buckets.items()}
        for job in self._scheduler.get_jobs():
            if job.id not in buckets:
                job.remove()
        for key, members in buckets.items():
            every, jitter = members[0].every, members[0].jitter
            first = datetime.now(UTC) + timedelta(seconds=random.uniform(0.0, min(jitter, 2.0)))  # noqa: S311
            self._scheduler.add_job(
                self._tick,
                IntervalTrigger(seconds=every, jitter=max(int(jitter), 0) or None),
                args=[key],
                id=key,
                name=key,
                replace_existing=True,
                next_run_time=first,
                misfire_grace_time=max(int(every), 1),
            )
        self.progress.forget_except(specs)

    def _tick(self, key: str) -> None:
        """Hand every rule of the bucket to the pool, skipping (and counting) those still running."""
        for spec in self._buckets.get(key, ()):
            with self._lock:
                busy = spec.name in self._running
                if not busy:
                    self._running.add(spec.name)
            if busy:
                self.progress.missed(spec.name)
                continue
            try:
                self._pool.submit(functools.partial(self._job, spec.name))
            except RuntimeError:  # shutting down
                with self._lock:
                    self._running.discard(spec.name)
                return

    def _job(self, name: str) -> None:
        try:
            self._run(name)
        except KeyError:
            return  # rule removed by a reload while this run was queued
        except Exception:
            log.exception("rule run crashed", extra={"fields": {"rule": name}})
        finally:
            with self._lock:
                self._running.discard(name)
        self.progress.mark(name)

    def _on_event(self, event: SchedulerEvent) -> None:
        """APScheduler's word on a bucket's tick, counted for each of its rules in ``progress``.

        * ``EVENT_JOB_MISSED``: the tick waited for a thread past its
          ``misfire_grace_time`` and was dropped: none of its rules ran.
        * ``EVENT_JOB_MAX_INSTANCES``: the tick was due while the previous
          one still went on (a stalled tick thread): skipped for all its rules.
        * ``EVENT_JOB_SUBMITTED``: the tick was handed to a thread; its rules
          are late if that was more than ``late_after`` past its scheduled
          time. A start delayed by the rule pool itself (more than
          ``MAX_WORKERS`` runs at once) is not seen here.

        Ticks merged by ``coalesce`` (several intervals due at once, as after
        the scheduler thread stalled or the host was suspended) raise no event
        of their own and are not counted; /healthz reports the stall itself.
        """
        members = self._buckets.get(getattr(event, "job_id", ""))
        if members is None:
            return  # a bucket a reload just removed
        for spec in members:
            if isinstance(event, JobExecutionEvent) and event.code == EVENT_JOB_MISSED:
                self.progress.missed(spec.name)
            elif isinstance(event, JobSubmissionEvent) and event.code == EVENT_JOB_MAX_INSTANCES:
                self.progress.missed(spec.name, len(event.scheduled_run_times))
            elif isinstance(event, JobSubmissionEvent) and event.scheduled_run_times:
                self.progress.submitted(spec.name, event.scheduled_run_times[-1].timestamp(), spec.every)

    def late(self) -> list[str]:
        return self.progress.late({name: spec.every for name, spec in self._specs.items()})

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def shutdown(self, wait: bool = True) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)
        self._pool.shutdown(wait=wait)
