"""APScheduler jobs, one per rule, and a record of whether they are making progress.

``max_instances=1`` and ``coalesce=True`` mean a slow rule skips a beat
instead of piling up runs; the probe timeout inside the engine bounds how
slow it can get. ``Progress`` is what the systemd watchdog ping and /healthz
trust: a scheduler thread that is alive but stuck stops the pings. It also
counts, from APScheduler's own events, the runs that did not happen (missed)
or started late, for ``watchdogd_rule_runs_missed_total`` and ``_late_total``.
"""

from __future__ import annotations

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

from watchdogd.model import Clock

log = logging.getLogger(__name__)

MAX_WORKERS = 64
"""Rule runs in progress at once. Threads start only when that many runs overlap.

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


class Scheduler:
    def __init__(self, run: Callable[[str], object], clock: Clock) -> None:
        self._run = run
        self.progress = Progress(clock)
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=MAX_WORKERS)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=UTC,
        )
        self._specs: dict[str, JobSpec] = {}
        self._scheduler.add_listener(
            self._on_event, EVENT_JOB_SUBMITTED | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
        )

    def start(self, jobs: Iterable[JobSpec]) -> None:
        self.replace(jobs)
        self._scheduler.start()

    def replace(self, jobs: Iterable[JobSpec]) -> None:
        """Install exactly these jobs (used at start and on reload)."""
        specs = {job.name: job for job in jobs}
        self._specs = specs  # first: the listener may hear of a new job's first run before the loop ends
        for job in self._scheduler.get_jobs():
            if job.id not in specs:
                job.remove()
        for spec in specs.values():
            # The first run comes soon after start, spread over the jitter, not all at the same instant.
            first = datetime.now(UTC) + timedelta(seconds=random.uniform(0.0, min(spec.jitter, 2.0)))  # noqa: S311
            self._scheduler.add_job(
                self._job,
                IntervalTrigger(seconds=spec.every, jitter=max(int(spec.jitter), 0) or None),
                args=[spec.name],
                id=spec.name,
                name=spec.name,
                replace_existing=True,
                next_run_time=first,
                misfire_grace_time=max(int(spec.every), 1),
            )
        self.progress.forget_except(specs)

    def _job(self, name: str) -> None:
        try:
            self._run(name)
        except KeyError:
            return  # rule removed by a reload while this run was queued
        except Exception:
            log.exception("rule run crashed", extra={"fields": {"rule": name}})
        self.progress.mark(name)

    def _on_event(self, event: SchedulerEvent) -> None:
        """APScheduler's word on a run: counted in ``progress`` (runs in the scheduler's or a job's thread).

        * ``EVENT_JOB_MISSED``: the run waited for a worker thread past its
          ``misfire_grace_time`` and was dropped without running.
        * ``EVENT_JOB_MAX_INSTANCES``: the run was due while the rule's
          previous run still went on (``max_instances=1``), and was skipped.
        * ``EVENT_JOB_SUBMITTED``: the run was handed to a worker thread; late
          if that was more than ``late_after`` past its scheduled time. A
          start delayed by the thread pool itself (more than ``MAX_WORKERS``
          runs at once) is not seen here; past the grace it counts as missed.

        Runs merged by ``coalesce`` (several intervals due at once, as after
        the scheduler thread stalled or the host was suspended) raise no event
        of their own and are not counted; /healthz reports the stall itself.
        """
        spec = self._specs.get(getattr(event, "job_id", ""))
        if spec is None:
            return  # a job a reload just removed
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
