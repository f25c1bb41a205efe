"""Process probes: how many, and per process CPU, RSS, RSS growth (leaks), open files, age.

One probe name per measure (``process.cpu``, ``process.rss``...) rather than
one ``process`` probe with a ``measure:`` switch, because a probe name fixes
the unit its thresholds are parsed with and whether its subjects may become
metric labels: ``process.rss`` takes ``above: 2GiB``, ``process.age``
``above: 7d``, and ``process.count`` has one low-cardinality subject while
the others have one ``pid:<pid>`` subject per process. The selection
parameters (name, cmdline, user, pidfile) are the same for all of them.

Every process rule of the engine reads the same scan of ``/proc``
(``table.ProcessTable``, the family's ``ProbeSpec.shared`` object): a
reading may be up to one second older than the run reporting it, and
twenty rules due in the same second cost one scan, not twenty.

Rates (CPU, RSS growth) are measured between the times of the snapshots
they come from, on ``time.monotonic()``, which is the clock the kernel's
accounting follows; the wall clock may step under NTP.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from watchdogd.contracts import Cardinality, Clock, EvidenceLimits, Probe, ProbeError, ProbeSpec, Reading, Unit
from watchdogd.families.process import procfs
from watchdogd.families.process.select import Proc, ProcessSelection, ProcessSelector, process_name
from watchdogd.families.process.table import ProcessTable, Snapshot, process_table, user_name
from watchdogd.spec import Field, model_validator
from watchdogd.units import Duration


class ProcessParams(ProcessSelector):
    pass


class RssGrowthParams(ProcessSelector):
    window: Duration = Field(default=3600.0, gt=0)
    min_span: Duration | None = None

    @model_validator(mode="after")
    def _check_span(self) -> RssGrowthParams:
        if self.min_span is not None and self.min_span > self.window:
            raise ValueError("min_span must not be longer than window")
        return self

    @property
    def span_needed(self) -> float:
        """Growth over less history than this is noise (a cache warming up), so it is not reported."""
        return self.min_span if self.min_span is not None else self.window / 2


class _ProcessProbe:
    """A selection over the engine's shared process table (a private one when built without it)."""

    inline = True
    """Its reads all go through the shared table, which refuses to read on a rule's thread (``watchdogd.inline``)."""

    def __init__(self, params: ProcessSelector, table: ProcessTable | None = None) -> None:
        self._selection = ProcessSelection(params, table)

    def _select(self) -> tuple[list[Proc], Snapshot]:
        try:
            return self._selection.select()
        except OSError as exc:
            raise ProbeError(f"cannot list processes: {exc}") from exc

    def describe(self, readings: Sequence[Reading], limits: EvidenceLimits) -> dict[str, Any]:
        """The processes the readings name, as ps and top would show them now.

        Only the pids the readings carry are looked at (the selection's cache
        belongs to ``measure``, which may run meanwhile), and each is checked
        to be the same process (``start_ticks``) as when it was measured.
        """
        return describe_processes(readings, limits)


class CountProbe(_ProcessProbe):
    """How many processes match: ``below: 1`` is "the service is not running"."""

    MAX_PIDS_IN_DETAILS = 20

    def __init__(self, params: ProcessParams, table: ProcessTable | None = None) -> None:
        super().__init__(params, table)
        self._subject = params.describe()

    def measure(self) -> list[Reading]:
        procs, _ = self._select()
        pids = sorted(p.pid for p in procs)
        details = {"pids": pids[: self.MAX_PIDS_IN_DETAILS], "truncated": len(pids) > self.MAX_PIDS_IN_DETAILS}
        return [Reading(self._subject, float(len(pids)), details)]


class RssProbe(_ProcessProbe):
    """Resident memory per process, in bytes."""

    def measure(self) -> list[Reading]:
        procs, at = self._select()
        return [Reading(f"pid:{p.pid}", float(p.stat.rss), p.details(at.boot_time)) for p in procs]


class AgeProbe(_ProcessProbe):
    """Seconds since each process started (on the boot clock, so a wall-clock step cannot skew it)."""

    def measure(self) -> list[Reading]:
        procs, at = self._select()
        return [
            Reading(
                f"pid:{p.pid}", max(0.0, at.uptime - p.stat.start_ticks / procfs.CLOCK_TICKS), p.details(at.boot_time)
            )
            for p in procs
        ]


class CpuProbe(_ProcessProbe):
    """Percent of one CPU core per process since the previous run, as top(1) shows it.

    A process using three cores reads 300. On its first sighting there is no
    previous sample, so the value is its lifetime average (as ps(1) shows it)
    rather than nothing: ``--once`` and a freshly started daemon still see a
    process that has been spinning for an hour.

    The interval is between the scans the two runs read (``Snapshot.taken``),
    not between the runs, so a shared snapshot cannot skew the rate.
    """

    def __init__(self, params: ProcessParams, table: ProcessTable | None = None) -> None:
        super().__init__(params, table)
        self._last: dict[tuple[int, int], tuple[int, float]] = {}

    def measure(self) -> list[Reading]:
        procs, at = self._select()
        now = at.taken
        previous, self._last = self._last, {}
        readings = []
        for p in procs:
            ticks = p.stat.cpu_ticks
            before = previous.get(p.key)
            if before is not None and now > before[1]:
                seconds, sample = now - before[1], "interval"
                used = (ticks - before[0]) / procfs.CLOCK_TICKS
            else:
                seconds, sample = at.uptime - p.stat.start_ticks / procfs.CLOCK_TICKS, "lifetime"
                used = ticks / procfs.CLOCK_TICKS
            percent = max(0.0, used / seconds * 100.0) if seconds > 0 else 0.0
            self._last[p.key] = (ticks, now)
            details = p.details(at.boot_time)
            details.update(sample=sample, threads=p.stat.threads)
            readings.append(Reading(f"pid:{p.pid}", percent, details))
        return readings


@dataclass(slots=True)
class RssHistory:
    """RSS samples of one process over a window, with a least-squares slope.

    At most ``max_points`` samples are kept, spaced at least ``window /
    max_points`` apart (the newest one floats, so the slope always includes
    the latest value): memory stays bounded on a host with thousands of
    processes and a long window. The sums are Python integers (milliseconds,
    bytes), so adding and evicting samples is O(1) and never drifts.
    """

    window_ms: int
    step_ms: int
    base: float = -1.0
    points: deque[tuple[int, int]] = field(default_factory=deque)
    n: int = 0
    st: int = 0
    sr: int = 0
    stt: int = 0
    str_: int = 0
    last_fixed: bool = True

    @classmethod
    def create(cls, window: float, max_points: int = 64) -> RssHistory:
        window_ms = max(1, int(window * 1000))
        return cls(window_ms=window_ms, step_ms=max(1, window_ms // max_points))

    def _add(self, t: int, r: int) -> None:
        self.points.append((t, r))
        self.n += 1
        self.st += t
        self.sr += r
        self.stt += t * t
        self.str_ += t * r

    def _remove(self, t: int, r: int) -> None:
        self.n -= 1
        self.st -= t
        self.sr -= r
        self.stt -= t * t
        self.str_ -= t * r

    def add(self, now: float, rss: int) -> None:
        if self.base < 0:
            self.base = now
        t = int((now - self.base) * 1000)
        if self.points and not self.last_fixed:
            self._remove(*self.points.pop())  # the floating newest sample is replaced
        previous = self.points[-1][0] if self.points else None
        self._add(t, rss)
        self.last_fixed = previous is None or t - previous >= self.step_ms
        while self.points and self.points[0][0] < t - self.window_ms:
            self._remove(*self.points.popleft())

    def span(self) -> float:
        return (self.points[-1][0] - self.points[0][0]) / 1000.0 if len(self.points) > 1 else 0.0

    def per_hour(self) -> float:
        """Slope of RSS over time, bytes per hour (0 with fewer than two distinct times)."""
        denominator = self.n * self.stt - self.st * self.st
        if self.n < 2 or denominator == 0:
            return 0.0
        per_ms = (self.n * self.str_ - self.st * self.sr) / denominator
        return per_ms * 3_600_000.0


class RssGrowthProbe(_ProcessProbe):
    """RSS growth in bytes per hour over ``window``: a leak, not a big-but-stable process.

    The slope is a least-squares fit, so a garbage collector's sawtooth does
    not read as a leak the way "last minus first" would. A process is
    reported once its samples span ``min_span`` (default half the window);
    before that there is not enough history to call anything a trend, so
    ``--once`` reports no subjects.
    """

    def __init__(self, params: RssGrowthParams, table: ProcessTable | None = None) -> None:
        super().__init__(params, table)
        self._window = params.window
        self._span_needed = params.span_needed
        self._history: dict[tuple[int, int], RssHistory] = {}

    def measure(self) -> list[Reading]:
        procs, at = self._select()
        now = at.taken
        previous, self._history = self._history, {}
        readings = []
        for p in procs:
            history = previous.get(p.key) or RssHistory.create(self._window)
            history.add(now, p.stat.rss)
            self._history[p.key] = history
            span = history.span()
            if span < self._span_needed:
                continue
            details = p.details(at.boot_time)
            details.update(rss=p.stat.rss, span=round(span, 1), samples=history.n)
            readings.append(Reading(f"pid:{p.pid}", history.per_hour(), details))
        return readings


class FdsProbe(_ProcessProbe):
    """Open file descriptors as a percent of the process's soft RLIMIT_NOFILE.

    Counting another user's descriptors needs root (or CAP_SYS_PTRACE);
    processes we may not look into are skipped, and if that leaves none of
    the matched ones the probe is down with the reason rather than silently
    reporting nothing. The limit is re-read every ``LIMIT_TTL`` seconds only:
    it changes about never (a process raising its own limit does so at
    start), and reading it every run doubles the cost of a host-wide rule.
    """

    LIMIT_TTL = 60.0
    inline = False  # counts each process's descriptors itself: a directory read per process

    def __init__(self, params: ProcessParams, table: ProcessTable | None = None) -> None:
        super().__init__(params, table)
        self._limits: dict[tuple[int, int], tuple[int | None, float]] = {}

    def _limit(self, p: Proc, now: float) -> int | None:
        cached = self._limits.get(p.key)
        if cached is not None and now - cached[1] < self.LIMIT_TTL:
            return cached[0]
        limit = procfs.nofile_soft_limit(p.pid)
        self._limits[p.key] = (limit, now)
        return limit

    def measure(self) -> list[Reading]:
        procs, at = self._select()
        now = at.taken
        readings = []
        denied: list[int] = []
        for p in procs:
            try:
                fds = procfs.count_fds(p.pid)
                limit = self._limit(p, now)
            except PermissionError:
                denied.append(p.pid)
                continue
            except OSError:
                continue  # exited meanwhile
            percent = fds / limit * 100.0 if limit else 0.0
            details: dict[str, Any] = p.details(at.boot_time)
            details.update(fds=fds, soft_limit=limit if limit is not None else "unlimited")
            readings.append(Reading(f"pid:{p.pid}", percent, details))
        live = {p.key for p in procs}
        self._limits = {key: value for key, value in self._limits.items() if key in live}
        if denied and not readings:
            raise ProbeError(
                f"permission denied reading the open files of {len(denied)} matched process(es)"
                f" (pid {denied[0]}...): run watchdogd as root or with CAP_SYS_PTRACE"
            )
        return readings


# --------------------------------------------------------------------------- evidence


EVIDENCE_CUT = 200
"""Longest string in evidence (names, command lines)."""

CPU_SAMPLE = 0.5
"""Seconds between the two samples of the processes' CPU ticks: a current rate, as top shows it."""


def _wanted(readings: Sequence[Reading], max_items: int) -> list[tuple[int, int | None]]:
    """(pid, start_ticks or None) for the readings, the highest value first, at most ``max_items``.

    Per-process readings carry their pid and start ticks; ``process.count``
    carries the (first 20) pids of its selection.
    """
    wanted: dict[int, int | None] = {}
    for reading in sorted(readings, key=lambda r: r.value, reverse=True):
        details = reading.details
        if isinstance(details.get("pid"), int):
            ticks = details.get("start_ticks")
            wanted.setdefault(details["pid"], ticks if isinstance(ticks, int) else None)
        for pid in details.get("pids") or ():
            if isinstance(pid, int):
                wanted.setdefault(pid, None)
    return list(wanted.items())[:max_items]


def _command(argv: tuple[str, ...], name: str, show: bool) -> str:
    """argv[0] only unless ``show_queries``: arguments are where passwords and tokens sit."""
    if not argv:
        return f"[{name}]"
    if show:
        return " ".join(argv)[:EVIDENCE_CUT]
    return argv[0][:EVIDENCE_CUT] + (" <redacted>" if len(argv) > 1 else "")


def _user(pid: int, names: dict[int, str]) -> str | None:
    """The process owner's name; ``names`` lives for one describe: a uid asks NSS once, not once per row,
    inside the evidence deadline."""
    uid = procfs.read_uid(pid)
    return None if uid is None else user_name(uid, names)


def _fds(pid: int) -> tuple[int | None, int | str | None]:
    """(open descriptors, soft limit); None where we may not look (another user's process, without root)."""
    try:
        fds: int | None = procfs.count_fds(pid)
    except OSError:
        fds = None
    try:
        limit = procfs.nofile_soft_limit(pid)
    except OSError:
        return fds, None
    return fds, limit if limit is not None else "unlimited"


def describe_processes(readings: Sequence[Reading], limits: EvidenceLimits) -> dict[str, Any]:
    """Rows of pid, name, user, state, CPU (sampled now), RSS, age, threads, open files, command."""
    stop = limits.deadline - min(0.2, max(0.0, limits.deadline - time.monotonic()) * 0.1)
    first: dict[int, tuple[procfs.Stat, float]] = {}
    gone: list[int] = []
    for pid, ticks in _wanted(readings, limits.max_items):
        st = procfs.read_stat(pid)
        if st is None or (ticks is not None and st.start_ticks != ticks):
            gone.append(pid)  # exited, or the pid now belongs to another process
        else:
            first[pid] = (st, time.monotonic())
    interval = min(CPU_SAMPLE, (stop - time.monotonic()) / 3)
    if first and interval > 0.02:
        time.sleep(interval)  # the interval of the rate, not a wait for an event
    else:
        interval = 0.0
    rows = []
    cut = None
    up = procfs.uptime()
    users: dict[int, str] = {}
    for pid, (before, at) in first.items():
        if time.monotonic() >= stop:
            cut = "deadline"
            break
        st = procfs.read_stat(pid)
        if st is None or st.start_ticks != before.start_ticks:
            gone.append(pid)
            continue
        elapsed = time.monotonic() - at
        percent = (st.cpu_ticks - before.cpu_ticks) / procfs.CLOCK_TICKS / elapsed * 100.0 if interval else None
        fds, limit = _fds(pid)
        argv = procfs.read_cmdline(pid)
        name = process_name(st.comm, argv)
        rows.append({
            "pid": pid,
            "name": name,
            "user": _user(pid, users),
            "state": st.state,
            "cpu_percent": round(percent, 1) if percent is not None else None,
            "rss_bytes": st.rss,
            "age_seconds": round(max(0.0, up - st.start_ticks / procfs.CLOCK_TICKS)),
            "threads": st.threads,
            "fds": fds,
            "fd_limit": limit,
            "cmdline": _command(argv, name, limits.show_queries),
        })
    sections: dict[str, Any] = {
        "matching processes": rows,
        "process sample": {
            "cpu_interval_seconds": round(interval, 2),
            "cpu_percent_is": "of one core over the interval, as top shows it",
            "gone_since_measured": gone,
            "cut": cut,
        },
    }
    return _fit_rows(sections, "matching processes", limits.max_bytes)


def _fit_rows(sections: dict[str, Any], key: str, max_bytes: int) -> dict[str, Any]:
    """Leave rows of ``sections[key]`` out from its end until the JSON fits, and say how many."""
    rows: list[Any] = sections[key]
    kept = len(rows)
    while kept and len(json.dumps(sections, default=str)) > max_bytes:
        kept -= max(1, kept // 4)
        sections[key] = rows[:kept]
        sections["cut short"] = {key: f"{len(rows) - kept} rows left out to stay within {max_bytes} bytes"}
    return sections


def _factory(cls: Callable[[Any, ProcessTable | None], Probe]) -> Callable[[Any, Any, Clock], Probe]:
    """The engine hands every process probe its shared ``ProcessTable`` in place of a target client."""

    def build(params: Any, table: Any, _clock: Clock) -> Probe:
        return cls(params, table)

    return build


PROBES: dict[str, ProbeSpec] = {
    "process.count": ProbeSpec(
        ProcessParams, _factory(CountProbe), Unit.COUNT, Cardinality.LOW,
        "number of matching processes (below: 1 = not running)", subjects="process", shared=process_table,
    ),
    "process.cpu": ProbeSpec(
        ProcessParams, _factory(CpuProbe), Unit.PERCENT, Cardinality.HIGH,
        "CPU percent of one core per matching process, since the previous run",
        subjects="pid", shared=process_table,
    ),
    "process.rss": ProbeSpec(
        ProcessParams, _factory(RssProbe), Unit.BYTES, Cardinality.HIGH,
        "resident memory per matching process", subjects="pid", shared=process_table,
    ),
    "process.rss_growth": ProbeSpec(
        RssGrowthParams, _factory(RssGrowthProbe), Unit.BYTES, Cardinality.HIGH,
        "resident memory growth per hour over a window, per matching process (leaks)",
        subjects="pid", shared=process_table,
    ),
    "process.fds": ProbeSpec(
        ProcessParams, _factory(FdsProbe), Unit.PERCENT, Cardinality.HIGH,
        "open file descriptors as percent of the soft limit, per matching process",
        subjects="pid", shared=process_table,
    ),
    "process.age": ProbeSpec(
        ProcessParams, _factory(AgeProbe), Unit.SECONDS, Cardinality.HIGH,
        "seconds since each matching process started", subjects="pid", shared=process_table,
    ),
}
