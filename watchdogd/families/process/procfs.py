"""Just enough of Linux ``/proc`` to select, measure and safely signal processes.

Why not psutil here: a ``process_iter`` over 2,000 processes with the
attributes we need costs 130-300 ms (several files per process, Python
objects per process, and a module-wide cache that concurrent probe threads
would share). One ``/proc/<pid>/stat`` read per process gives the name,
state, parent, CPU ticks, start time and RSS at once, in about 15 us.

A process is identified by ``(pid, start_ticks)``: the start time in clock
ticks since boot, straight from the kernel. Unlike psutil's float
``create_time`` (boot time + ticks, where the kernel's boot time can move by
a second after an NTP step) it compares exactly, which is what "never
signal a reused pid" needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

PROC = "/proc"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PF_KTHREAD = 0x00200000  # include/linux/sched.h: the task is a kernel thread

# Indexes into the fields that follow ``comm)`` in /proc/<pid>/stat (proc(5) field number - 3).
_STATE, _PPID, _FLAGS, _UTIME, _STIME, _THREADS, _START, _RSS = 0, 1, 6, 11, 12, 17, 19, 21


@dataclass(frozen=True, slots=True)
class Stat:
    """One process as ``/proc/<pid>/stat`` shows it at one instant."""

    pid: int
    comm: str  # the kernel's name: at most 15 characters
    state: str  # R, S, D, Z, T, ...
    ppid: int
    flags: int
    cpu_ticks: int  # user + system, in CLOCK_TICKS
    threads: int
    start_ticks: int  # since boot, in CLOCK_TICKS: with pid, the identity of a process
    rss: int  # bytes

    @property
    def kernel_thread(self) -> bool:
        return bool(self.flags & PF_KTHREAD)

    @property
    def zombie(self) -> bool:
        return self.state in ("Z", "X")


def parse_stat(pid: int, data: bytes) -> Stat:
    """Parse the text of ``/proc/<pid>/stat``.

    ``comm`` may itself contain spaces and parentheses, so it is whatever lies
    between the first ``(`` and the *last* ``)``.
    """
    close = data.rindex(b")")
    comm = data[data.index(b"(") + 1 : close].decode("utf-8", "replace")
    fields = data[close + 2 :].split()
    return Stat(
        pid=pid,
        comm=comm,
        state=fields[_STATE].decode(),
        ppid=int(fields[_PPID]),
        flags=int(fields[_FLAGS]),
        cpu_ticks=int(fields[_UTIME]) + int(fields[_STIME]),
        threads=int(fields[_THREADS]),
        start_ticks=int(fields[_START]),
        rss=int(fields[_RSS]) * PAGE_SIZE,
    )


def read_stat(pid: int, proc: str = PROC) -> Stat | None:
    """The process's stat, or None when it is gone (or was never there)."""
    try:
        fd = os.open(f"{proc}/{pid}/stat", os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None  # ESRCH: it exited between open and read
    finally:
        os.close(fd)
    try:
        return parse_stat(pid, data)
    except (ValueError, IndexError):
        return None  # an empty read from a process that is being reaped


def list_pids(proc: str = PROC) -> list[int]:
    return [int(name) for name in os.listdir(proc) if name.isdigit()]


def read_cmdline(pid: int, proc: str = PROC) -> tuple[str, ...]:
    """argv as the process shows it now (processes may rewrite it); empty when unreadable or gone."""
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as handle:
            raw = handle.read(65536)
    except OSError:
        return ()
    if not raw:
        return ()
    parts = raw.rstrip(b"\0").split(b"\0")
    if len(parts) == 1 and b" " in parts[0]:
        # setproctitle-style titles ("postgres: checkpointer") overwrite argv with one string.
        parts = parts[0].split(b" ")
    return tuple(part.decode("utf-8", "surrogateescape") for part in parts)


def read_uid(pid: int, proc: str = PROC) -> int | None:
    """Effective uid (what ps shows as USER); None when the process is gone."""
    try:
        with open(f"{proc}/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"Uid:"):
                    return int(line.split()[2])
    except (OSError, ValueError, IndexError):
        return None
    return None


def count_fds(pid: int, proc: str = PROC) -> int:
    """Open file descriptors; raises PermissionError for another user's process without privileges."""
    return len(os.listdir(f"{proc}/{pid}/fd"))


def nofile_soft_limit(pid: int, proc: str = PROC) -> int | None:
    """The soft RLIMIT_NOFILE of ``pid`` (None = unlimited), from the world-readable limits file."""
    fd = os.open(f"{proc}/{pid}/limits", os.O_RDONLY)
    try:
        data = os.read(fd, 8192)
    finally:
        os.close(fd)
    at = data.find(b"Max open files")
    if at < 0:
        return None
    soft = data[at + len(b"Max open files") :].split(None, 1)[0]
    return None if soft == b"unlimited" else int(soft)


def uptime(proc: str = PROC) -> float:
    """Seconds since boot, on the same clock as ``start_ticks``."""
    with open(f"{proc}/uptime", encoding="ascii") as handle:
        return float(handle.read().split()[0])


def boot_time(proc: str = PROC) -> float:
    """Wall-clock time of boot (``btime``), to turn start ticks into a timestamp for humans."""
    with open(f"{proc}/stat", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("btime "):
                return float(line.split()[1])
    raise OSError(f"no btime line in {proc}/stat")


def ancestors(pid: int, proc: str = PROC) -> frozenset[int]:
    """``pid``, its parent, its parent's parent... up to init: the processes we must never signal."""
    chain = {pid}
    current = read_stat(pid, proc)
    while current is not None and current.ppid > 0 and current.ppid not in chain:
        chain.add(current.ppid)
        current = read_stat(current.ppid, proc)
    return frozenset(chain)
