"""APScheduler jobs, one per rule, and a record of whether they are making progress.

``max_instances=1`` and ``coalesce=True`` mean a slow rule skips a beat
instead of piling up runs; the probe timeout inside the engine bounds how
slow it can get. ``Progress`` is what the systemd watchdog ping and /healthz
trust: a scheduler thread that is alive but stuck stops the pings.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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


@dataclass(frozen=True)
class JobSpec:
    name: str
    every: float
    jitter: float


class Progress:
    """When each job last finished, on the wall clock we were given."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._finished: dict[str, float] = {}
        self._started_at = clock()

    def mark(self, name: str) -> None:
        with self._lock:
            self._finished[name] = self._clock()

    def forget_except(self, names: Iterable[str]) -> None:
        keep = set(names)
        with self._lock:
            self._finished = {k: v for k, v in self._finished.items() if k in keep}
            self._started_at = self._clock()

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

    def start(self, jobs: Iterable[JobSpec]) -> None:
        self.replace(jobs)
        self._scheduler.start()

    def replace(self, jobs: Iterable[JobSpec]) -> None:
        """Install exactly these jobs (used at start and on reload)."""
        specs = {job.name: job for job in jobs}
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
        self._specs = specs
        self.progress.forget_except(specs)

    def _job(self, name: str) -> None:
        try:
            self._run(name)
        except KeyError:
            return  # rule removed by a reload while this run was queued
        except Exception:
            log.exception("rule run crashed", extra={"fields": {"rule": name}})
        self.progress.mark(name)

    def late(self) -> list[str]:
        return self.progress.late({name: spec.every for name, spec in self._specs.items()})

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def shutdown(self, wait: bool = True) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)
