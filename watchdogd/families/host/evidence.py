"""What the host runbooks look at first when a host rule starts firing: who uses the CPU and memory, what fills a disk.

Called rarely (a rule starting to fire, an action about to run) in a worker
thread, so it may cost far more than a measure, but only within its
``EvidenceLimits``: every loop here checks the deadline and stops with what
it has, saying so, rather than being abandoned with nothing. All of it is
read-only and runs no shell: the one subprocess (``journalctl
--disk-usage``) is an argv with a timeout.

Command lines can carry secrets (``--password=...``, tokens in URLs), so
only argv[0] is shown unless ``show_queries`` is set.
"""

from __future__ import annotations

import heapq
import json
import os
import re
import shutil
import stat
import subprocess
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil

from watchdogd.contracts import EvidenceLimits

CUT = 200
"""Longest string in evidence (paths, command lines): enough to recognise, never a whole blob."""

SCAN_ENTRIES = 20_000
"""Directory entries one tree scan looks at, at most: a bounded ``du``, not a walk of a 10-million-file disk."""

OPEN_FDS = 20_000
"""Open file descriptors looked at, at most, for deleted files that still hold space."""

CPU_SAMPLE = 0.5
"""Seconds between the two samples of every process's CPU time (top's way: a rate, not a lifetime average)."""

JOURNAL_TIMEOUT = 2.0
JOURNAL_DIRS = ("/var/log/journal", "/run/log/journal")
_JOURNAL_USAGE = re.compile(r"take up (\S+)")


def short(text: str, limit: int = CUT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def soft_deadline(limits: EvidenceLimits) -> float:
    """When the loops stop: a little before the engine's deadline, to leave time to build the answer."""
    left = limits.deadline - time.monotonic()
    return limits.deadline - min(0.2, max(0.0, left) * 0.1)


def command(argv: list[str], name: str, show: bool) -> str:
    """argv[0] only unless ``show`` (``show_queries``): arguments are where passwords and tokens sit."""
    if not argv:
        return f"[{name}]"  # a kernel thread, or a process we may not look into
    if show:
        return short(" ".join(argv))
    return short(argv[0]) + (" <redacted>" if len(argv) > 1 else "")


# --------------------------------------------------------------------------- processes


@dataclass(slots=True)
class _Sample:
    proc: psutil.Process
    cpu: float  # seconds of CPU time at the first sample
    at: float  # monotonic time of the first sample
    percent: float = 0.0
    rss: int = 0
    status: str = ""


def _ps_rows(samples: list[_Sample], show: bool) -> list[dict[str, Any]]:
    rows = []
    for s in samples:
        try:
            with s.proc.oneshot():
                name = s.proc.name()
                user = s.proc.username()
                argv = s.proc.cmdline()
        except psutil.Error:
            continue  # gone since the sample
        rows.append({"pid": s.proc.pid, "name": short(name), "user": user, "cpu_percent": s.percent,
                     "rss_bytes": s.rss, "cmdline": command(argv, name, show)})
    return rows


def processes(limits: EvidenceLimits, *, uninterruptible: bool = False) -> dict[str, Any]:
    """Top processes by CPU and by resident memory, from two samples of the process table.

    CPU percent is of one core over the sample interval, as top(1) shows it.
    psutil.Process objects of our own, never ``process_iter``: its cache
    is module-wide, shared with any other thread that iterates.
    With ``uninterruptible``, also the processes in state D (waiting on
    I/O in the kernel), which count in the load average without using CPU.
    """
    stop = soft_deadline(limits)
    samples: list[_Sample] = []
    cut = None
    for pid in psutil.pids():
        if time.monotonic() >= stop:
            cut = "deadline"
            break
        try:
            proc = psutil.Process(pid)
            times = proc.cpu_times()
        except psutil.Error:
            continue
        samples.append(_Sample(proc, times.user + times.system, time.monotonic()))
    started = time.monotonic()
    interval = min(CPU_SAMPLE, (stop - started) / 3)
    if interval > 0.02:
        time.sleep(interval)  # the interval of the rate, not a wait for an event
    else:
        interval, cut = 0.0, "deadline"
    live = []
    for s in samples:
        if time.monotonic() >= stop:
            cut = "deadline"
            break
        try:
            with s.proc.oneshot():
                times = s.proc.cpu_times()
                s.rss = s.proc.memory_info().rss
                s.status = s.proc.status()
        except psutil.Error:
            continue
        elapsed = time.monotonic() - s.at
        if interval:
            # A pid reused within the interval reads as a negative delta: 0, not nonsense.
            s.percent = round(max(0.0, (times.user + times.system - s.cpu) / elapsed * 100.0), 1)
        live.append(s)
    n = limits.max_items
    show = limits.show_queries
    # Idle processes and kernel threads (no memory of their own) are not "top" anything.
    by_cpu = heapq.nlargest(n, (s for s in live if s.percent > 0), key=lambda s: s.percent)
    by_rss = heapq.nlargest(n, (s for s in live if s.rss > 0), key=lambda s: s.rss)
    sections: dict[str, Any] = {
        "process sample": {
            "processes": len(live),
            "cpu_interval_seconds": round(interval, 2),
            "cpu_percent_is": "of one core over the interval, as top shows it",
            "cut": cut,
        },
        "top processes by CPU": _ps_rows(by_cpu, show) if interval else [],
        "top processes by memory": _ps_rows(by_rss, show),
    }
    if uninterruptible:
        waiting = [s for s in live if s.status == psutil.STATUS_DISK_SLEEP][:n]
        sections["processes waiting on I/O (state D)"] = _ps_rows(waiting, show)
    return sections


def memory_breakdown() -> dict[str, Any]:
    """Where the memory is, in bytes: what free(1) shows, with swap."""
    mem = psutil.virtual_memory()
    swap = psutil.swap_memory()
    fields = ("total", "available", "used", "free", "buffers", "cached", "shared", "slab")
    breakdown: dict[str, Any] = {name: getattr(mem, name) for name in fields if hasattr(mem, name)}
    breakdown.update(swap_total=swap.total, swap_used=swap.used, swap_free=swap.free,
                     swapped_in_since_boot=swap.sin, swapped_out_since_boot=swap.sout)
    return breakdown


# --------------------------------------------------------------------------- trees


@dataclass
class Scan:
    """What a bounded ``du`` of one tree saw: totals per directory (their whole subtree) and the largest files."""

    root: str
    entries: int = 0
    errors: int = 0
    cut: str | None = None
    unscanned: int = 0  # directories found but not read when the scan stopped
    bytes: dict[str, int] = field(default_factory=dict)  # directory -> allocated bytes below it
    inodes: dict[str, int] = field(default_factory=dict)  # directory -> entries below it
    direct: dict[str, int] = field(default_factory=dict)  # directory -> entries directly in it
    files: list[tuple[int, str, float]] = field(default_factory=list)  # heap of (bytes, path, mtime)


class _TreeScan:
    """One breadth-first scan; ``run`` fills a ``Scan``. See ``scan_tree``."""

    def __init__(self, root: str, stop: float, max_files: int, one_filesystem: bool, max_entries: int) -> None:
        self.scan = Scan(root)
        self._stop = stop
        self._max_files = max_files
        self._max_entries = max_entries
        self._dev = os.stat(root).st_dev if one_filesystem else None
        self._parents: dict[str, str] = {}
        self._own: dict[str, int] = {root: 0}  # directory -> bytes of itself and the files directly in it
        self._seen: set[tuple[int, int]] = set()
        self._pending: deque[str] = deque([root])

    def run(self) -> Scan:
        scan = self.scan
        while self._pending and scan.cut is None:
            if time.monotonic() >= self._stop:
                scan.cut = "deadline"
                break
            directory = self._pending.popleft()
            try:
                self._read(directory)
            except OSError:
                if directory == scan.root:
                    raise
                scan.errors += 1
        scan.unscanned = len(self._pending)
        # A directory's total is its own plus its subdirectories' totals. ``_own`` holds every directory
        # after its parent (found when the parent was read): in reverse, children come before parents.
        scan.bytes = dict(self._own)
        scan.inodes = dict(scan.direct)
        for directory in reversed(self._own):
            parent = self._parents.get(directory)
            if parent is not None:
                scan.bytes[parent] += scan.bytes[directory]
                scan.inodes[parent] = scan.inodes.get(parent, 0) + scan.inodes.get(directory, 0)
        return scan

    def _read(self, directory: str) -> None:
        scan = self.scan
        count = 0
        try:
            with os.scandir(directory) as it:
                for entry in it:
                    if scan.entries >= self._max_entries:
                        scan.cut = f"entry limit ({self._max_entries})"
                        break
                    if scan.entries % 256 == 255 and time.monotonic() >= self._stop:
                        scan.cut = "deadline"  # a slow filesystem: one stat can take milliseconds
                        break
                    scan.entries += 1
                    count += 1
                    self._entry(directory, entry)
        finally:
            scan.direct[directory] = count

    def _entry(self, directory: str, entry: os.DirEntry[str]) -> None:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            self.scan.errors += 1
            return
        if self._dev is not None and st.st_dev != self._dev:
            return  # a mountpoint below: another filesystem's space
        used = st.st_blocks * 512
        if stat.S_ISDIR(st.st_mode):
            self._parents[entry.path] = directory
            self._own[entry.path] = used
            self._pending.append(entry.path)
            return
        if st.st_nlink > 1:
            if (st.st_dev, st.st_ino) in self._seen:
                return
            self._seen.add((st.st_dev, st.st_ino))
        self._own[directory] += used
        if stat.S_ISREG(st.st_mode):
            files = self.scan.files
            item = (used, entry.path, st.st_mtime)
            if len(files) < self._max_files:
                heapq.heappush(files, item)
            elif used > files[0][0]:
                heapq.heapreplace(files, item)


def scan_tree(root: str, stop: float, *, max_files: int, one_filesystem: bool,
              max_entries: int = SCAN_ENTRIES) -> Scan:
    """A bounded ``du`` of ``root``, stopping at ``stop`` (monotonic) or after ``max_entries`` entries.

    Breadth first, so a cut scan has seen every top-level directory rather
    than one deep corner. Space is allocated bytes (``st_blocks``, as du
    counts), because sparse files do not fill disks; hard links count once;
    symlinks are not followed; with ``one_filesystem`` other filesystems
    mounted below are not entered (they are not what fills this one).
    Raises OSError only when ``root`` itself cannot be read.
    """
    return _TreeScan(root, stop, max_files, one_filesystem, max_entries).run()


def scan_sections(scan: Scan, limits: EvidenceLimits, *, by_inodes: bool) -> dict[str, Any]:
    n = limits.max_items
    below = [d for d in scan.bytes if d != scan.root]
    summary = {
        "entries": scan.entries,
        "bytes_seen": scan.bytes.get(scan.root, 0),
        "errors": scan.errors,
        "partial": scan.cut,
        "directories_not_scanned": scan.unscanned,
    }
    if by_inodes:
        dirs = heapq.nlargest(n, below, key=lambda d: scan.inodes.get(d, 0))
        crowded = heapq.nlargest(n, scan.direct, key=lambda d: scan.direct[d])
        return {
            f"scan of {scan.root}": summary,
            f"directories with most entries under {scan.root}": [
                {"path": short(d), "entries": scan.inodes.get(d, 0), "directly_in_it": scan.direct.get(d, 0)}
                for d in dirs
            ],
            f"directories with most entries directly in them under {scan.root}": [
                {"path": short(d), "entries": scan.direct[d]} for d in crowded if scan.direct[d]
            ],
        }
    dirs = heapq.nlargest(n, below, key=lambda d: scan.bytes[d])
    files = sorted(scan.files, reverse=True)[:n]
    return {
        f"scan of {scan.root}": summary,
        f"largest directories under {scan.root}": [
            {"path": short(d), "bytes": scan.bytes[d], "entries": scan.inodes.get(d, 0)} for d in dirs
        ],
        f"largest files under {scan.root}": [
            {"path": short(path), "bytes": used, "modified": iso(mtime)} for used, path, mtime in files
        ],
    }


def deleted_open_files(devices: set[int], stop: float, limits: EvidenceLimits) -> dict[str, Any]:
    """Files deleted but still held open (``lsof +L1``): the space df counts and no scan finds.

    Another user's descriptors need root; those processes are skipped and counted.
    """
    found: dict[tuple[int, int], tuple[int, int, str, str]] = {}  # (dev, inode) -> (bytes, pid, name, path)
    looked = denied = 0
    cut = None
    for pid in _pids():
        if time.monotonic() >= stop or looked >= OPEN_FDS:
            cut = "deadline" if looked < OPEN_FDS else f"descriptor limit ({OPEN_FDS})"
            break
        base = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(base)
        except PermissionError:
            denied += 1
            continue
        except OSError:
            continue
        for fd in fds:
            looked += 1
            try:
                target = os.readlink(f"{base}/{fd}")
                if not target.endswith(" (deleted)"):
                    continue
                st = os.stat(f"{base}/{fd}")  # the open file itself, deleted or not
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if st.st_nlink == 0 and st.st_dev in devices and stat.S_ISREG(st.st_mode) and key not in found:
                found[key] = (st.st_blocks * 512, pid, _comm(pid), target.removesuffix(" (deleted)"))
    holding = sorted((f for f in found.values() if f[0] > 0), reverse=True)
    return {
        "deleted files still open": [
            {"path": short(path), "bytes": used, "pid": pid, "process": name}
            for used, pid, name, path in holding[: limits.max_items]
        ],
        "deleted files search": {
            "descriptors_looked_at": looked,
            "processes_not_readable": denied,
            "deleted_open_files": len(found),
            "total_bytes": sum(f[0] for f in holding),
            "cut": cut,
        },
    }


def _pids() -> Iterator[int]:
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return "?"


def journal_usage(devices: set[int], stop: float) -> dict[str, Any] | None:
    """``journalctl --disk-usage`` when the journal lives on one of ``devices``; None when it does not."""
    where = []
    for directory in JOURNAL_DIRS:
        try:
            if os.stat(directory).st_dev in devices:
                where.append(directory)
        except OSError:
            continue
    if not where:
        return None
    found: dict[str, Any] = {"directories": where}
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        return {**found, "error": "journalctl is not installed"}
    timeout = min(JOURNAL_TIMEOUT, stop - time.monotonic())
    if timeout <= 0:
        return {**found, "error": "no time left (deadline)"}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""}
    try:
        done = subprocess.run([journalctl, "--disk-usage"], capture_output=True, text=True, timeout=timeout,
                              check=False, env=env)
    except subprocess.TimeoutExpired:
        return {**found, "error": f"journalctl did not answer within {timeout:.1f}s"}
    except OSError as exc:
        return {**found, "error": f"cannot run journalctl: {exc.strerror}"}
    match = _JOURNAL_USAGE.search(done.stdout)
    said = " ".join((done.stdout or done.stderr).split())
    return {**found, "usage": match.group(1) if match else None, "journalctl_said": short(said)}


def filesystems(mountpoints: list[str], limits: EvidenceLimits, *, by_inodes: bool) -> dict[str, Any]:
    """For ``host.disk``/``host.inodes``: the journal's share, deleted files still open, then a scan per mount.

    The two quick looks get at most a quarter of the time each; the scans
    share the rest equally, so the second of two full disks is not left
    with nothing.
    """
    stop = soft_deadline(limits)
    sections: dict[str, Any] = {}
    devices: dict[str, int] = {}
    for mountpoint in mountpoints[: limits.max_items]:
        try:
            devices[mountpoint] = os.stat(mountpoint).st_dev
        except OSError as exc:
            sections[f"scan of {mountpoint}"] = {"error": f"cannot stat: {exc.strerror}"}
    on = set(devices.values())
    journal = journal_usage(on, min(stop, time.monotonic() + (stop - time.monotonic()) / 4))
    if journal is not None:
        sections["journal disk usage"] = journal
    sections.update(deleted_open_files(on, time.monotonic() + (stop - time.monotonic()) / 4, limits))
    for index, mountpoint in enumerate(devices):
        share = (stop - time.monotonic()) / (len(devices) - index)
        try:
            scan = scan_tree(mountpoint, time.monotonic() + share, max_files=limits.max_items, one_filesystem=True)
        except OSError as exc:
            sections[f"scan of {mountpoint}"] = {"error": f"cannot read: {exc.strerror}"}
            continue
        sections.update(scan_sections(scan, limits, by_inodes=by_inodes))
    return fit(sections, limits.max_bytes)


def tree(path: str, limits: EvidenceLimits, max_entries: int) -> dict[str, Any]:
    """For ``host.dir_size``: where the bytes are below the directory (across mounts, as the probe counts)."""
    scan = scan_tree(path, soft_deadline(limits), max_files=limits.max_items, one_filesystem=False,
                     max_entries=min(SCAN_ENTRIES, max_entries))
    return fit(scan_sections(scan, limits, by_inodes=False), limits.max_bytes)


def newest_files(pattern: str, newest: list[tuple[float, str, int]], limits: EvidenceLimits) -> dict[str, Any]:
    """For ``host.file_age``: the newest matches (mtime, path, size) that the probe's last run kept."""
    rows = [
        {"path": short(path), "modified": iso(mtime), "bytes": size}
        for mtime, path, size in sorted(newest, reverse=True)[: limits.max_items]
    ]
    return fit({"newest matching files": rows, "pattern": short(pattern)}, limits.max_bytes)


# --------------------------------------------------------------------------- size


def _size(sections: dict[str, Any]) -> int:
    return len(json.dumps(sections, default=str))


def fit(sections: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """Leave rows out, from the ends of the longest lists, until the JSON fits in ``max_bytes``.

    The engine would drop the largest section whole; a shorter list keeps
    its first (largest, busiest) rows, which is what the reader wants.
    What was left out is said in a "cut short" section.
    """
    dropped: dict[str, int] = {}
    size = _size(sections)
    while size > max_bytes:
        lists = [(len(v), k) for k, v in sections.items() if isinstance(v, list) and v]
        if not lists:
            break
        length, name = max(lists)
        rows = sections[name]
        average = max(1, _size({name: rows}) // length)
        drop = min(max(1, length // 4), max(1, -(-(size - max_bytes) // average)))
        sections[name] = rows[: length - drop]
        dropped[name] = dropped.get(name, 0) + drop
        note = {k: f"{n} rows left out to stay within {max_bytes} bytes" for k, n in dropped.items()}
        size = _size({**sections, "cut short": note})
    if dropped:
        sections["cut short"] = {k: f"{n} rows left out to stay within {max_bytes} bytes" for k, n in dropped.items()}
    return sections
