"""What a process costs, read from /proc: CPU ticks, RSS and PSS.

RSS is what ``ps`` and most dashboards show; PSS (``smaps_rollup``) splits
shared pages (libc, the Python interpreter mapped by several processes)
between their users, so it is the fairer "what would I get back" figure
when the daemons share libraries with the rest of the host.

CPU is utime+stime of all threads (``/proc/<pid>/stat`` fields 14 and 15),
so a Go runtime's or a Python thread pool's work is all counted.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

UTIME_INDEX = 11
"""Index of utime in the fields after ``comm``'s closing parenthesis (field 3, ``state``, is index 0)."""


@dataclass(frozen=True)
class Sample:
    """One look at a process: CPU ticks so far, memory now, and when (monotonic seconds)."""

    ticks: int
    rss_kib: int
    pss_kib: int | None
    at: float


def parse_stat_ticks(text: str) -> int:
    """utime + stime in clock ticks from a ``/proc/<pid>/stat`` line.

    ``comm`` may contain spaces and parentheses, so fields are counted from
    the last ``)``.
    """
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[UTIME_INDEX]) + int(fields[UTIME_INDEX + 1])


def parse_kib(text: str, key: str) -> int | None:
    """The ``key:  1234 kB`` value of /proc/<pid>/status or smaps_rollup, in KiB."""
    prefix = key + ":"
    for line in text.splitlines():
        if line.startswith(prefix):
            return int(line.split()[1])
    return None


def cpu_percent(before: Sample, after: Sample, hz: int) -> float:
    """CPU used between two samples, as percent of one core."""
    wall = after.at - before.at
    if wall <= 0:
        raise ValueError("samples must be taken in order and apart")
    return (after.ticks - before.ticks) / hz / wall * 100.0


def clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def sample(pid: int) -> Sample:
    """Read one sample; raises ProcessLookupError when the process is gone."""
    base = Path(f"/proc/{pid}")
    try:
        at = time.monotonic()
        ticks = parse_stat_ticks((base / "stat").read_text())
        rss = parse_kib((base / "status").read_text(), "VmRSS")
        try:
            pss = parse_kib((base / "smaps_rollup").read_text(), "Pss")
        except (FileNotFoundError, PermissionError):
            pss = None  # kernels before 4.14, or not our process
    except FileNotFoundError as exc:
        raise ProcessLookupError(f"process {pid} is gone") from exc
    if rss is None:
        raise ProcessLookupError(f"process {pid} has no VmRSS (a zombie?)")
    return Sample(ticks, rss, pss, at)


@dataclass(frozen=True)
class HostCpu:
    """Jiffies of the whole machine from the ``cpu`` line of /proc/stat."""

    busy: int
    total: int


def parse_host_cpu(text: str) -> HostCpu:
    """busy = everything but idle and iowait; guest time is already inside user/nice."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]]
            user, nice, system, idle, iowait, irq, softirq, steal = (values + [0] * 8)[:8]
            busy = user + nice + system + irq + softirq + steal
            return HostCpu(busy, busy + idle + iowait)
    raise ValueError("no cpu line in /proc/stat")


def host_cpu() -> HostCpu:
    return parse_host_cpu(Path("/proc/stat").read_text())
