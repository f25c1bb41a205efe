"""One scan of ``/proc`` shared by every ``process.*`` rule of the engine.

Each rule used to list and read all of ``/proc`` on its own: ~25 ms per
run at 2,000 processes, so twenty process rules due in the same second
cost half a second of CPU for twenty copies of the same facts. The
``ProcessTable`` scans once and hands every rule the same immutable
``Snapshot``; what a rule keeps between runs (CPU and RSS samples, its
selection's criteria) stays in the rule.

Freshness: a snapshot taken less than ``max_age`` (1 s) before a run is
reused, so a reading may be up to one second older than the run that
reports it. That is well inside the shortest sensible interval of a
process rule (a few seconds) and far cheaper than a scan per rule; rates
(``process.cpu``, ``process.rss_growth``) are computed over the snapshots'
own times, so a reused snapshot never distorts them. A rule is never
handed the same snapshot twice: its re-probe right after an action (the
verify) or a sub-second interval scans afresh rather than reading what
it saw before the action.

The slow facts of a process (its command line, its owner) are read only
when some rule needs them, once per process, and shared by every rule:
``name: nginx`` never reads the argv of a process whose kernel name is
``bash``. They are read again while the process is young (a daemon forks,
then sets its title and drops privileges in its first moments) and after
an ``exec`` (its kernel name changes).
"""

from __future__ import annotations

import os
import pwd
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from watchdogd import inline
from watchdogd.contracts import Clock, ProbeError
from watchdogd.families.process import procfs

SETTLE_SECONDS = 5.0
"""Facts about a process younger than this are read again after the next scan."""

MAX_AGE = 1.0
"""Seconds a snapshot serves every rule before the next run scans again."""

SCAN_WAIT = 60.0
"""Longest a rule waits for another rule's scan. Reading ``/proc`` does not block in practice, but if one
did, the waiting rules fail and free their threads instead of piling up behind it forever."""


TRUNCATED = 15
"""Length at which the kernel has cut a process's name (``comm``): argv[0] may tell the rest."""


def process_name(comm: str, argv: tuple[str, ...]) -> str:
    """The kernel truncates names to 15 characters; like ps and psutil, complete them from argv[0]."""
    if len(comm) >= TRUNCATED and argv:
        base = os.path.basename(argv[0])
        if base.startswith(comm):
            return base
    return comm


class Facts:
    """What rarely changes about one process, read on first need and then kept.

    Filled lazily by probe threads without a lock: two threads needing the
    same fact at once both read it and store equal values, which is cheaper
    than making every lookup wait on a lock.
    """

    __slots__ = ("_command", "_uid", "comm", "pid", "settled", "start_ticks")

    def __init__(self, pid: int, start_ticks: int, comm: str, settled: bool) -> None:
        self.pid = pid
        self.start_ticks = start_ticks
        self.comm = comm
        self.settled = settled
        self._command: tuple[str, str, bool] | None = None
        self._uid: int | None = None

    def command(self, proc: str) -> tuple[str, str, bool]:
        """(name completed from argv, command line, whether it has an argv at all)."""
        command = self._command
        if command is None:
            inline.check("command line")  # reading another process's argv can wait on its memory map lock
            argv = procfs.read_cmdline(self.pid, proc)
            cmdline = " ".join(argv) if argv else f"[{self.comm}]"
            command = self._command = (process_name(self.comm, argv), cmdline, bool(argv))
        return command

    def uid(self, proc: str) -> int | None:
        """Effective uid; None when the process is gone (asked again next time)."""
        uid = self._uid
        if uid is None:
            inline.check("owner")
            uid = self._uid = procfs.read_uid(self.pid, proc)
        return uid


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every live user-space process at one instant, with the clocks the probes measure against."""

    taken: float  # monotonic time the scan began: rates are computed between snapshots' ``taken``
    uptime: float  # seconds since boot at the scan, on the clock of ``Stat.start_ticks``
    boot_time: float  # wall-clock boot time, for humans
    processes: tuple[tuple[procfs.Stat, Facts], ...]  # kernel threads and zombies left out
    _by_name: Mapping[str, tuple[int, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Positions by kernel name, built once per scan: a name selector then looks at its own processes
        # (and the truncated names) instead of every process, once for each of its rules.
        index: dict[str, list[int]] = {}
        for position, (stat, _) in enumerate(self.processes):
            key = stat.comm if len(stat.comm) < TRUNCATED else ""
            index.setdefault(key, []).append(position)
        object.__setattr__(self, "_by_name", {name: tuple(positions) for name, positions in index.items()})

    def candidates(self, names: frozenset[str] | None) -> Iterable[tuple[procfs.Stat, Facts]]:
        """In scan order, the processes a selector of these kernel names can match; all without names.

        A name the kernel truncated (15 characters) may still match on
        argv[0], so those processes are always candidates.
        """
        if names is None:
            return self.processes
        positions = sorted({p for name in (*names, "") for p in self._by_name.get(name, ())})
        return [self.processes[position] for position in positions]


class ProcessTable:
    """The engine's one view of ``/proc``: scanned at most once per ``max_age``, shared by every process rule.

    Concurrent callers during a scan wait for it (one lock) rather than
    scanning twice; callers after it get the same snapshot until it is
    ``max_age`` old. ``monotonic`` ages snapshots (the wall clock may step).
    """

    def __init__(
        self,
        proc: str = procfs.PROC,
        max_age: float = MAX_AGE,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.proc = proc
        self._max_age = max_age
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._facts: dict[int, Facts] = {}
        self._users: dict[int, str] = {}
        self.scans = 0
        """How many times ``/proc`` was read in full (for tests and benchmarks)."""

    def scan(self, after: float | None = None) -> Snapshot:
        """The current snapshot, scanning ``/proc`` if the last one is ``max_age`` old or not taken after ``after``.

        ``after``: the ``taken`` of the snapshot the caller used last, which it must not get again.
        Raises OSError when ``/proc`` cannot be listed, ProbeError when another scan outlasts ``SCAN_WAIT``.
        """
        snapshot = self._fresh(after)
        if snapshot is not None:
            return snapshot
        inline.check("process table scan")
        if not self._lock.acquire(timeout=SCAN_WAIT):
            raise ProbeError(f"another rule's scan of {self.proc} has not finished in {SCAN_WAIT:g}s")
        try:
            snapshot = self._fresh(after)
            if snapshot is not None:
                return snapshot  # another rule scanned while this one waited
            snapshot = self._scan()
            self._snapshot = snapshot
            return snapshot
        finally:
            self._lock.release()

    def _fresh(self, after: float | None) -> Snapshot | None:
        snapshot = self._snapshot
        if snapshot is None or (after is not None and snapshot.taken <= after):
            return None
        return snapshot if self._monotonic() - snapshot.taken < self._max_age else None

    def instant(self) -> Snapshot:
        """The clocks alone, read now: for a selection that reads one pid itself (a pidfile)."""
        return Snapshot(self._monotonic(), procfs.uptime(self.proc), procfs.boot_time(self.proc), ())

    def facts(self, stat: procfs.Stat, uptime: float) -> Facts:
        """The kept facts of one process read outside a scan, if they are still its own."""
        facts = self._facts.get(stat.pid)
        if facts is None or facts.start_ticks != stat.start_ticks or facts.comm != stat.comm or not facts.settled:
            facts = _new_facts(stat, uptime)
        return facts

    def user_name(self, uid: int) -> str:
        if uid not in self._users:
            inline.check("user name")  # NSS may ask a directory server
        return user_name(uid, self._users)

    def _scan(self) -> Snapshot:
        taken = self._monotonic()
        up = procfs.uptime(self.proc)
        boot = procfs.boot_time(self.proc)
        old, facts = self._facts, {}
        processes = []
        for pid in procfs.list_pids(self.proc):
            stat = procfs.read_stat(pid, self.proc)
            if stat is None or stat.kernel_thread or stat.zombie:
                continue
            known = old.get(pid)
            if known is None or known.start_ticks != stat.start_ticks or known.comm != stat.comm or not known.settled:
                known = _new_facts(stat, up)
            facts[pid] = known
            processes.append((stat, known))
        self._facts = facts  # the facts of exited processes go with the old dict
        self.scans += 1
        return Snapshot(taken, up, boot, tuple(processes))


def _new_facts(stat: procfs.Stat, uptime: float) -> Facts:
    age = uptime - stat.start_ticks / procfs.CLOCK_TICKS
    return Facts(stat.pid, stat.start_ticks, stat.comm, age >= SETTLE_SECONDS)


def user_name(uid: int, names: dict[int, str]) -> str:
    """``uid``'s user name, or the uid itself where NSS has none; ``names`` keeps each answer, so a uid asks
    NSS (maybe a directory server) once for as long as the caller keeps ``names``."""
    if uid not in names:
        try:
            names[uid] = pwd.getpwuid(uid).pw_name
        except KeyError:
            names[uid] = str(uid)
    return names[uid]


def process_table(clock: Clock) -> ProcessTable:
    """``ProbeSpec.shared`` of every ``process.*`` probe: one table per engine (ages run on the monotonic clock)."""
    return ProcessTable()
