"""Process-wide memory tuning: glibc's malloc, set once at daemon start and trimmed now and then.

glibc gives each thread that contends for malloc its own arena (up to 8 per
core); with two thread pools that leaves several mostly-empty arenas resident.
Two arenas measured ~3 MiB less RSS for the daemon with no throughput
difference at our allocation rate (bench/bench_rss.py). Setting
MALLOC_ARENA_MAX in the unit file would do the same, but only for systemd
starts; this covers `scripts/run`, `--once` from cron and tests alike.

Freed memory in the middle of glibc's heaps stays resident until something
asks for it back: with 1,000 rules and a hundred worker threads on a loaded
host the daemon's main heap held 6-8 MiB of free pages (issue 17).
``release_free_memory`` gives them back; it walks the free lists (0.3-1 ms
at that size), so it is for a periodic timer or after a reload, not per run.

Blocks of 128 KiB and up come from mmap and go back at free, but glibc
raises that threshold (up to 32 MiB) each time such a block is freed: after
the first /metrics page (2 MiB of text at 1,000 rules) every later page was
made on the heap, and the daemon swung between 84.5 and 91.1 MiB between two
trims. A fixed threshold of 256 KiB keeps big, short-lived buffers in mmap:
measured flat at 85.0-85.3 MiB (issue 17), with no change in render time.

A start touches pages of shared libraries that the running daemon never
touches again: imports, pydantic-core building its validators, the config's
validation, psycopg's and OpenSSL's initialisation. They stay resident until
the kernel needs the memory, and they are 5-9 MiB of the daemon's RSS
(``bench/bench_imports.py``). ``release_file_pages`` asks the kernel to
reclaim them now (``MADV_PAGEOUT``, Linux 5.4+). Only clean pages of files
come back this way: anonymous memory is untouched (there is no swap to move
it to, and it would not be a saving if there were), pages another process
maps stay, and a page the daemon needs again is read back on its next touch.
That read is why it runs only around a start or a reload (before the first
runs and once every rule has run), never on a timer.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

M_ARENA_MAX = -8  # from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 * 1024
MADV_PAGEOUT = 21  # from linux/mman.h, Linux 5.4+
PROC_SELF = Path("/proc/self")


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library already loaded into this process, through the program's own symbol table.

    ``ctypes.util.find_library("c")`` would run ``ldconfig -p`` in a child at
    every start and return None where ldconfig is missing (slim containers),
    silently leaving malloc untuned; ``dlopen(NULL)`` needs neither.
    """
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def tune_malloc(arenas: int = 2, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Cap the arenas and fix the mmap threshold; False (and nothing changed) on a libc without mallopt (musl)."""
    libc = _libc()
    try:
        return (
            libc is not None
            and bool(libc.mallopt(M_ARENA_MAX, arenas))
            and bool(libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold))
        )
    except AttributeError:
        return False


def release_free_memory() -> bool:
    """Return free heap pages to the kernel (glibc ``malloc_trim(0)``); False where there is no such call."""
    libc = _libc()
    try:
        return libc is not None and bool(libc.malloc_trim(0))
    except AttributeError:
        return False


@dataclass(frozen=True)
class Released:
    """What one ``release_file_pages`` did: the process's resident file pages before and after, in KiB."""

    mappings: int
    refused: int
    file_kib_before: int
    file_kib_after: int
    seconds: float


def private_file_mappings(maps: str) -> Iterator[tuple[int, int]]:
    """(start, length) of each private mapping of a file in ``/proc/<pid>/maps`` text.

    Shared mappings are left alone (a page out of a written shared page is a
    write to its file), as are anonymous ones and the kernel's ``[vdso]``.
    """
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not fields[5].startswith("/") or fields[1][3:4] != "p" or fields[4] == "0":
            continue
        start, _, end = fields[0].partition("-")
        low, high = int(start, 16), int(end, 16)
        yield low, high - low


def resident_kib(key: str = "RssFile") -> int:
    """A line of ``/proc/self/status`` in KiB: ``RssFile`` (resident pages of mapped files), ``RssAnon``,
    ``VmRSS``; 0 where the kernel has no such line."""
    with (PROC_SELF / "status").open() as status:
        return next((int(line.split()[1]) for line in status if line.startswith(key + ":")), 0)


def release_file_pages(clock: Callable[[], float] = time.monotonic) -> Released | None:
    """Ask the kernel to reclaim this process's resident pages of files now (see the module's docstring).

    This process only: madvise acts on the caller's own address space.

    None where the call does not exist: not glibc, or a kernel older than
    5.4 (every mapping refused with EINVAL). A mapping the kernel will not
    page out (locked, a device) is counted in ``refused`` and skipped.
    """
    libc = _libc()
    madvise = getattr(libc, "madvise", None)
    if madvise is None:
        return None
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    started = clock()
    before = resident_kib()
    mappings = list(private_file_mappings((PROC_SELF / "maps").read_text()))
    refused = invalid = 0
    for start, length in mappings:
        if madvise(start, length, MADV_PAGEOUT) != 0:
            refused += 1
            invalid += ctypes.get_errno() == errno.EINVAL
    if mappings and invalid == len(mappings):
        return None
    return Released(len(mappings), refused, before, resident_kib(), clock() - started)
