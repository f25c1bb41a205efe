"""Host probes: CPU, memory, swap, load, filesystems, backup freshness, directory size.

Every probe here is cheap enough to run the whole family every few seconds
(see ``bench/bench_host_probes.py``: the budget is 5 ms for one of each).
That is why the mount table is read only when the kernel says it changed
(``MountTable``, shared by ``host.disk`` and ``host.inodes``), and why CPU
usage comes from our own ``cpu_times()`` deltas instead of a sleeping
sample.
"""

from __future__ import annotations

import fnmatch
import functools
import glob
import heapq
import os
import re
import select
import stat
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psutil

from watchdogd import inline
from watchdogd.contracts import (
    Cardinality,
    Clock,
    EvidenceLimits,
    NoParams,
    Params,
    ProbeError,
    ProbeSpec,
    Reading,
    Unit,
    local_probe,
)
from watchdogd.families.host import evidence
from watchdogd.sharedread import SharedRead
from watchdogd.spec import Field, field_validator

MOUNTINFO = "/proc/self/mountinfo"

PSEUDO_FSTYPES: tuple[str, ...] = (
    # Kernel and virtual filesystems: their "usage" is meaningless.
    "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devfs",
    "devpts", "devtmpfs", "efivarfs", "fusectl", "hugetlbfs", "mqueue", "nfsd", "nsfs",
    "proc", "pstore", "ramfs", "rootfs", "rpc_pipefs", "securityfs", "selinuxfs", "sysfs",
    "tmpfs", "tracefs",
    # Container layers: the backing filesystem is reported once, by itself.
    "overlay", "aufs",
    # Read-only images are always 100% full by construction (snaps, ISOs, composefs).
    "squashfs", "erofs", "iso9660", "udf",
    # FUSE helpers that mirror other data.
    "fuse.lxcfs", "fuse.gvfsd-fuse", "fuse.portal", "fuse.snapfuse",
)
"""Default ``exclude_fstypes``: filesystems an operator never means by "the disk is full"."""
_PSEUDO_FSTYPES_SET = frozenset(PSEUDO_FSTYPES)
"""The default exclusions as every probe that keeps them holds them: one set, not 2.2 KiB per rule (issue 17)."""


def _absolute(value: str, what: str) -> str:
    if not os.path.isabs(value):
        raise ValueError(f"{what} must be an absolute path, got {value!r}")
    return value


def _normalise(path: str) -> str:
    """Lexical normal form, so ``/data/`` and ``//data`` name the mountpoint ``/data`` as mountinfo does.

    ``os.path.normpath`` keeps a leading ``//`` (POSIX allows it a special
    meaning), which no Linux mount table ever shows.
    """
    return "/" + "/".join(part for part in os.path.normpath(path).split("/") if part)


# --------------------------------------------------------------------------- cpu


_CPU_IDLE_FIELDS = ("idle", "iowait")
_CPU_GUEST_FIELDS = ("guest", "guest_nice")  # already counted in user/nice by Linux
_CPU_DETAIL_FIELDS = ("user", "system", "iowait", "steal")


class CpuProbe:
    """Percent busy across all CPUs since the previous ``measure()``.

    psutil's ``cpu_percent(interval=None)`` keeps its last sample in module
    state, so two rules probing CPU would steal each other's interval; the
    snapshot lives in the instance instead. The busy/total arithmetic is
    psutil's own (idle and iowait are not busy; guest time is already inside
    user/nice).
    """

    inline = True  # /proc/stat: kernel counters, read without waiting on anything (``watchdogd.inline``)

    def __init__(self, params: NoParams, clock: Clock) -> None:
        self._last = psutil.cpu_times()._asdict()
        self._value = 0.0
        self._details: dict[str, float] = {}

    def measure(self) -> list[Reading]:
        now = psutil.cpu_times()._asdict()
        delta = {name: now[name] - self._last.get(name, 0.0) for name in now}
        total = sum(v for name, v in delta.items() if name not in _CPU_GUEST_FIELDS)
        # Two runs inside one kernel tick see no time pass: keep the old
        # snapshot so the next run measures the full interval, and repeat the
        # last known value rather than inventing a 0 %.
        if total > 0:
            idle = sum(delta.get(name, 0.0) for name in _CPU_IDLE_FIELDS)
            self._value = min(100.0, max(0.0, (total - idle) / total * 100.0))
            self._details = {
                name: round(min(100.0, max(0.0, delta[name] / total * 100.0)), 2)
                for name in _CPU_DETAIL_FIELDS
                if name in delta
            }
            self._last = now
        return [Reading("cpu", self._value, dict(self._details))]

    def describe(self, readings: Sequence[Reading], limits: EvidenceLimits) -> dict[str, Any]:
        """Who is using the CPU: top processes by CPU (and by memory, often the same culprit swapping)."""
        return evidence.fit(evidence.processes(limits), limits.max_bytes)


# --------------------------------------------------------------------------- memory, swap, load


class MemoryProbe:
    """Used percent by ``available``, which is what free(1) and the OOM risk follow.

    ``total - free`` would count page cache, which the kernel gives back on
    demand, and fire on every healthy file server.
    """

    inline = True  # /proc/meminfo: kernel counters, read without waiting on anything (``watchdogd.inline``)

    def __init__(self, params: NoParams, clock: Clock) -> None:
        pass

    def measure(self) -> list[Reading]:
        mem = psutil.virtual_memory()
        # Our own division: psutil rounds its percent to one decimal.
        value = (mem.total - mem.available) / mem.total * 100.0 if mem.total else 0.0
        return [Reading("memory", value, {"total": mem.total, "available": mem.available})]

    def describe(self, readings: Sequence[Reading], limits: EvidenceLimits) -> dict[str, Any]:
        """Where the memory went: free(1)'s breakdown, then the largest processes."""
        return _memory_evidence(limits)


def _memory_evidence(limits: EvidenceLimits) -> dict[str, Any]:
    sections = {"memory breakdown (bytes)": evidence.memory_breakdown(), **evidence.processes(limits)}
    return evidence.fit(sections, limits.max_bytes)


class SwapProbe:
    """Swap in use; a host without swap is 0 % rather than an error, so one rule fits every host."""

    inline = True  # /proc/meminfo and /proc/vmstat: kernel counters (``watchdogd.inline``)

    def __init__(self, params: NoParams, clock: Clock) -> None:
        pass

    def measure(self) -> list[Reading]:
        swap = psutil.swap_memory()
        # Our own division: psutil rounds its percent to one decimal.
        value = swap.used / swap.total * 100.0 if swap.total else 0.0
        return [Reading("swap", value, {"total": swap.total, "used": swap.used})]

    def describe(self, readings: Sequence[Reading], limits: EvidenceLimits) -> dict[str, Any]:
        """Swap fills when memory does: the same look as ``host.memory``."""
        return _memory_evidence(limits)


class LoadParams(Params):
    period: Literal[1, 5, 15] = 5


_LOAD_INDEX = {1: 0, 5: 1, 15: 2}


class LoadProbe:
    """Load average per logical core, so one threshold means the same on a 2- and a 64-core host."""

    inline = True  # getloadavg: a kernel counter (``watchdogd.inline``)

    def __init__(self, params: LoadParams, clock: Clock) -> None:
        self._index = _LOAD_INDEX[params.period]
        self._subject = f"load{params.period}"

    def measure(self) -> list[Reading]:
        load = os.getloadavg()[self._index]
        # Asked every time: CPU hotplug and cpuset changes happen under a long-lived daemon.
        cores = psutil.cpu_count(logical=True) or 1
        return [Reading(self._subject, load / cores, {"load": load, "cores": cores})]

    def describe(self, readings: Sequence[Reading], limits: EvidenceLimits) -> dict[str, Any]:
        """Load counts runnable processes and those stuck on I/O (state D): both kinds are shown."""
        return evidence.fit(evidence.processes(limits, uninterruptible=True), limits.max_bytes)


# --------------------------------------------------------------------------- filesystems


class FilesystemParams(Params):
    """Which filesystems ``host.disk`` and ``host.inodes`` look at.

    Named ``mountpoints`` are taken as given (an operator who names ``/run``
    means it, tmpfs or not); the excludes shape only the automatic "every
    real filesystem" selection.
    """

    mountpoints: list[str] | None = Field(default=None, min_length=1)
    exclude_mountpoints: list[str] = []
    exclude_fstypes: list[str] = list(PSEUDO_FSTYPES)

    @field_validator("mountpoints")
    @classmethod
    def _check_mountpoints(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        return [_normalise(_absolute(mp, "mountpoint")) for mp in value]


@dataclass(frozen=True, slots=True)
class Mount:
    mountpoint: str
    device: str
    fstype: str
    dev_id: str  # "major:minor": the same for every bind mount of one filesystem


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """The kernel writes space, tab, newline and backslash in mount paths as octal escapes."""
    if "\\" not in field:
        return field
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> dict[str, Mount]:
    """Mountpoint -> mount, later entries winning: an overmount hides what is below it.

    mountinfo rather than /proc/mounts because it carries major:minor, which
    tells bind mounts of one filesystem apart from distinct tmpfs instances
    that all call their device "tmpfs".
    """
    mounts: dict[str, Mount] = {}
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            mount = Mount(
                mountpoint=_unescape(fields[4]),
                device=_unescape(fields[sep + 2]),
                fstype=fields[sep + 1],
                dev_id=fields[2],
            )
        except (ValueError, IndexError):
            continue  # a format we do not know: skip the line rather than fail the host
        mounts.pop(mount.mountpoint, None)
        mounts[mount.mountpoint] = mount
    return mounts


def _depth_key(mount: Mount) -> tuple[int, str]:
    return (mount.mountpoint.count("/") if mount.mountpoint != "/" else 0, mount.mountpoint)


class MountTable:
    """The parsed mount table, re-read only after the kernel flags a change; shared by every filesystem rule.

    An open ``/proc/self/mountinfo`` is pollable: a mount or unmount in our
    namespace marks the descriptor with POLLPRI|POLLERR (proc_pid_mounts(5)).
    Each ``current()`` polls it with a zero timeout; the poll itself consumes
    the flag (the kernel records the event it reported), so a change is seen
    once and the table read again right after. A change between that poll
    and the read flags the descriptor again: at worst one extra read, never
    a missed change. Without ``select.poll``, or where polling the file fails,
    the table is read on every call, as before, and parsed only when its text
    changed.

    ``generation`` grows with every parse, so a rule recomputes its own
    selection only when the table moved. One lock serialises ``host.disk``
    and ``host.inodes`` running at once: one read and one parse serve both.
    """

    def __init__(self, path: str | None = None, poller: Callable[[], select.poll] | None = None) -> None:
        self._path = path if path is not None else MOUNTINFO
        self._make_poller = poller if poller is not None else getattr(select, "poll", None)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._closer: weakref.finalize[[int], MountTable] | None = None
        self._poll: select.poll | None = None
        self._raw = ""
        self._stale = False
        self._mounts: dict[str, Mount] = {}
        self._usage_lock = threading.Lock()
        self._usage: dict[str, SharedRead[os.statvfs_result]] = {}  # mountpoint -> its statvfs, one per cycle
        self.generation = 0
        self.reads = 0
        """How many times the table was read (for tests and benchmarks)."""

    def current(self) -> tuple[int, dict[str, Mount]]:
        """(generation, mountpoint -> mount) as of now. Raises ProbeError when the table cannot be read."""
        with self._lock:
            try:
                if self._fd is None:
                    inline.check("mount table")
                    self._open()
                    self._read()
                elif self._stale or self._poll is None or self._poll.poll(0):
                    self._stale = True  # the kernel flags a change to one poll only: kept until the table is read
                    inline.check("mount table")
                    self._read()
                    self._stale = False
            except OSError as exc:
                self._close()  # open afresh next time
                raise ProbeError(f"cannot read the mount table {self._path}: {exc}") from exc
            return self.generation, self._mounts

    def _open(self) -> None:
        fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        self._fd = fd
        self._closer = weakref.finalize(self, os.close, fd)  # closed with the table (the engine's lives on)
        self._poll = None
        if self._make_poller is not None:
            try:
                poll = self._make_poller()
                poll.register(fd, select.POLLPRI | select.POLLERR)
                poll.poll(0)
            except (OSError, ValueError):
                return  # not pollable here: read on every call
            self._poll = poll

    def _read(self) -> None:
        assert self._fd is not None
        os.lseek(self._fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(self._fd, 65536):
            chunks.append(chunk)
        self.reads += 1
        raw = b"".join(chunks).decode("utf-8", "surrogateescape")
        if raw != self._raw:
            self._raw, self._mounts = raw, parse_mountinfo(raw)
            self.generation += 1
            with self._usage_lock:  # the usage of mounts that went away is not kept
                self._usage = {mp: shared for mp, shared in self._usage.items() if mp in self._mounts}

    def usage(self, mountpoint: str) -> os.statvfs_result:
        """statvfs of one mount: one call serves every ``host.disk`` and ``host.inodes`` rule due in the same
        cycle (``SharedRead``: at most ``MAX_AGE`` old; a failure is not kept). A statvfs stuck on a hung network
        filesystem holds the rules that wait for it on their probe threads, as its own call did."""
        with self._usage_lock:
            shared = self._usage.get(mountpoint)
            if shared is None:
                shared = self._usage[mountpoint] = SharedRead(functools.partial(os.statvfs, mountpoint))
        return shared.get()

    @property
    def usage_reads(self) -> int:
        """statvfs calls made through ``usage`` for the mounts still in the table (tests and benchmarks)."""
        with self._usage_lock:
            return sum(shared.reads for shared in self._usage.values())

    def _close(self) -> None:
        if self._closer is not None:
            self._closer()  # runs once: a later collection cannot close a reused descriptor number
        self._fd, self._closer, self._poll = None, None, None


def mount_table(clock: Clock) -> MountTable:
    """``ProbeSpec.shared`` of ``host.disk`` and ``host.inodes``: one descriptor and one parse per engine."""
    return MountTable()


def _exclude_set(fstypes: Iterable[str]) -> frozenset[str]:
    """``exclude_fstypes`` as a set; the default's is the module's own, so 1,000 disk rules hold one."""
    wanted = frozenset(fstypes)
    return _PSEUDO_FSTYPES_SET if wanted == _PSEUDO_FSTYPES_SET else wanted


class _MountSelection:
    """The filesystems a probe reports, recomputed only when the shared mount table changes."""

    def __init__(self, params: FilesystemParams, table: MountTable | None) -> None:
        self.table = table if table is not None else MountTable()
        self._wanted = params.mountpoints
        self._exclude_fstypes = _exclude_set(params.exclude_fstypes)
        patterns = params.exclude_mountpoints
        self._exclude_mp = (
            re.compile("|".join(fnmatch.translate(p) for p in patterns)).match if patterns else None
        )
        self._generation = -1
        self._selected: list[Mount] = []

    def current(self) -> list[Mount]:
        generation, mounts = self.table.current()
        if generation != self._generation:
            selected = self._select(mounts)  # a missing mountpoint raises here, and again next run
            self._generation, self._selected = generation, selected
        return self._selected

    def _select(self, mounts: dict[str, Mount]) -> list[Mount]:
        if self._wanted is not None:
            missing = [mp for mp in self._wanted if mp not in mounts]
            if missing:
                raise ProbeError(f"not mounted: {', '.join(missing)}")
            return [mounts[mp] for mp in self._wanted]
        by_device: dict[str, Mount] = {}
        for mount in mounts.values():
            if mount.fstype in self._exclude_fstypes:
                continue
            if self._exclude_mp is not None and self._exclude_mp(mount.mountpoint):
                continue
            # Bind mounts of one filesystem share its usage: report it once, at its shortest path.
            known = by_device.get(mount.dev_id)
            if known is None or _depth_key(mount) < _depth_key(known):
                by_device[mount.dev_id] = mount
        return sorted(by_device.values(), key=lambda m: m.mountpoint)


def _statvfs_all(
    selection: _MountSelection, strict: bool
) -> Iterable[tuple[Mount, os.statvfs_result]]:
    """statvfs of every selected mount.

    A named mountpoint that cannot be read is an error; in the automatic
    selection one unreadable mount (another user's FUSE, a vanished
    automount) is skipped so it cannot blind the rule to the root disk.
    """
    table = selection.table
    for mount in selection.current():
        try:
            yield mount, table.usage(mount.mountpoint)
        except OSError as exc:
            if strict:
                raise ProbeError(f"cannot stat filesystem {mount.mountpoint}: {exc}") from exc


class DiskProbe:
    """Percent of space used as df(1) shows it: used / (used + free to unprivileged users).

    The root-reserved blocks count as neither, exactly like psutil.disk_usage,
    so 100 % means ordinary processes get ENOSPC.
    """

    inline = True  # reads the shared mount table and statvfs only (``watchdogd.inline``)

    def __init__(self, params: FilesystemParams, table: MountTable | None, clock: Clock) -> None:
        self._selection = _MountSelection(params, table)
        self._strict = params.mountpoints is not None

    def measure(self) -> list[Reading]:
        readings = []
        for mount, st in _statvfs_all(self._selection, self._strict):
            total = st.f_blocks * st.f_frsize
            used = (st.f_blocks - st.f_bfree) * st.f_frsize
            free = st.f_bavail * st.f_frsize
            usable = used + free
            value = used / usable * 100.0 if usable else 0.0
            details = {
                "device": mount.device, "fstype": mount.fstype, "total_bytes": total, "free_bytes": free,
            }
            readings.append(Reading(mount.mountpoint, value, details))
        return readings

    def describe(self, readings: Sequence[Reading], limits: EvidenceLimits) -> dict[str, Any]:
        """What fills each breaching filesystem: largest directories and files, the journal, deleted open files."""
        return evidence.filesystems([r.subject for r in readings], limits, by_inodes=False)


class InodesProbe:
    """Percent of inodes used: a disk can be "full" with free space when small files ate the inodes."""

    inline = True  # reads the shared mount table and statvfs only (``watchdogd.inline``)

    def __init__(self, params: FilesystemParams, table: MountTable | None, clock: Clock) -> None:
        self._selection = _MountSelection(params, table)
        self._strict = params.mountpoints is not None

    def measure(self) -> list[Reading]:
        readings = []
        for mount, st in _statvfs_all(self._selection, self._strict):
            if st.f_files == 0:
                continue  # btrfs and many network filesystems allocate inodes dynamically
            used = st.f_files - st.f_ffree
            details = {
                "device": mount.device, "fstype": mount.fstype, "total": st.f_files, "free": st.f_ffree,
            }
            readings.append(Reading(mount.mountpoint, used / st.f_files * 100.0, details))
        return readings

    def describe(self, readings: Sequence[Reading], limits: EvidenceLimits) -> dict[str, Any]:
        """Where the inodes went: the directories with the most entries (a session or cache directory, usually)."""
        return evidence.filesystems([r.subject for r in readings], limits, by_inodes=True)


# --------------------------------------------------------------------------- files


class FileAgeParams(Params):
    path: str = Field(description="absolute glob, e.g. /var/backups/db-*.sql.gz; ** recurses")

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        return _absolute(value, "path")


class FileAgeProbe:
    """Seconds since the newest match was modified: how stale the last backup is.

    No match at all reads as infinitely old rather than as a probe failure,
    because a missing backup is precisely what the alarm exists for, and a
    "down" probe is easy to overlook.
    """

    KEPT = 20
    """The newest matches kept (mtime, path, size) for ``describe``: the last few backups, not all of them."""

    def __init__(self, params: FileAgeParams, clock: Clock) -> None:
        self._pattern = params.path
        self._clock = clock
        self._newest: list[tuple[float, str, int]] = []

    def measure(self) -> list[Reading]:
        newest: list[tuple[float, str, int]] = []  # a heap: the oldest of the KEPT newest on top
        matches = 0
        for name in glob.iglob(self._pattern, recursive=True):
            try:
                st = os.stat(name)
            except OSError:
                continue  # rotated away between glob and stat, or a dangling symlink
            matches += 1
            if len(newest) < self.KEPT:
                heapq.heappush(newest, (st.st_mtime, name, st.st_size))
            elif st.st_mtime > newest[0][0]:
                heapq.heapreplace(newest, (st.st_mtime, name, st.st_size))
        self._newest = newest  # replaced whole: describe, in another thread, sees one run or the other
        if not newest:
            return [Reading(self._pattern, float("inf"), {"newest": None, "matches": 0})]
        newest_mtime, newest_name, _ = max(newest)
        # A clock step backwards must not produce a negative age.
        age = max(0.0, self._clock() - newest_mtime)
        return [Reading(self._pattern, age, {"newest": newest_name, "mtime": newest_mtime, "matches": matches})]

    def describe(self, readings: Sequence[Reading], limits: EvidenceLimits) -> dict[str, Any]:
        """The newest matches as the last run saw them, with dates and sizes: a stale backup, or a fresh one
        of 0 bytes. Kept by ``measure`` rather than globbed again: a ``**`` glob cannot be stopped at a
        deadline, and the last run is what the rule judged."""
        return evidence.newest_files(self._pattern, self._newest, limits)


class DirSizeParams(Params):
    path: str
    max_entries: int = Field(default=100_000, ge=1, le=100_000_000)

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        return _absolute(value, "path")


class DirSizeProbe:
    """Apparent size (sum of st_size) of the regular files in a tree.

    Symlinks are neither followed nor counted, so a link to / cannot turn one
    probe run into a walk of the host; hard links count once, as in du(1).
    ``max_entries`` bounds the walk: a truncated total is a lower bound, which
    is still the right direction for an "above" rule.
    """

    def __init__(self, params: DirSizeParams, clock: Clock) -> None:
        self._path = params.path
        self._max_entries = params.max_entries

    def measure(self) -> list[Reading]:
        # The top itself may be a symlink to a directory: the operator named it, so it is followed.
        if not os.path.isdir(self._path):
            raise ProbeError(f"{self._path} is not a directory")
        total = files = entries = errors = 0
        seen_links: set[tuple[int, int]] = set()
        pending = [self._path]
        truncated = False
        while pending and not truncated:
            directory = pending.pop()
            try:
                with os.scandir(directory) as it:
                    for entry in it:
                        entries += 1
                        if entries > self._max_entries:
                            truncated = True
                            break
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except OSError:
                            errors += 1
                            continue
                        if stat.S_ISDIR(st.st_mode):
                            pending.append(entry.path)
                        elif stat.S_ISREG(st.st_mode):
                            if st.st_nlink > 1:
                                key = (st.st_dev, st.st_ino)
                                if key in seen_links:
                                    continue
                                seen_links.add(key)
                            total += st.st_size
                            files += 1
            except OSError:
                if directory == self._path:
                    raise
                errors += 1  # an unreadable subdirectory: report what we could see
        details = {"files": files, "truncated": truncated, "errors": errors}
        return [Reading(self._path, float(total), details)]

    def describe(self, readings: Sequence[Reading], limits: EvidenceLimits) -> dict[str, Any]:
        """Which subdirectories and files hold the bytes."""
        return evidence.tree(self._path, limits, self._max_entries)


# --------------------------------------------------------------------------- table


PROBES: dict[str, ProbeSpec] = {
    "host.cpu": ProbeSpec(
        NoParams, local_probe(CpuProbe), Unit.PERCENT, Cardinality.LOW,
        "CPU busy percent since the previous run", subjects="host",
    ),
    "host.memory": ProbeSpec(
        NoParams, local_probe(MemoryProbe), Unit.PERCENT, Cardinality.LOW,
        "memory used percent (by available memory, like free)", subjects="host",
    ),
    "host.swap": ProbeSpec(
        NoParams, local_probe(SwapProbe), Unit.PERCENT, Cardinality.LOW,
        "swap used percent (0 without swap)", subjects="host",
    ),
    "host.load": ProbeSpec(
        LoadParams, local_probe(LoadProbe), Unit.COUNT, Cardinality.LOW,
        "load average per logical core", subjects="host",
    ),
    "host.disk": ProbeSpec(
        FilesystemParams, DiskProbe, Unit.PERCENT, Cardinality.LOW,
        "disk space used percent per mountpoint, as df shows it", subjects="mount", shared=mount_table,
    ),
    "host.inodes": ProbeSpec(
        FilesystemParams, InodesProbe, Unit.PERCENT, Cardinality.LOW,
        "inodes used percent per mountpoint", subjects="mount", shared=mount_table,
    ),
    "host.file_age": ProbeSpec(
        FileAgeParams, local_probe(FileAgeProbe), Unit.SECONDS, Cardinality.LOW,
        "age of the newest file matching a glob (backup freshness)", subjects="path",
    ),
    "host.dir_size": ProbeSpec(
        DirSizeParams, local_probe(DirSizeProbe), Unit.BYTES, Cardinality.LOW,
        "total bytes of regular files under a directory", subjects="path",
    ),
}
