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
"""

from __future__ import annotations

import ctypes
import functools

M_ARENA_MAX = -8  # from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 * 1024


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library already loaded into this process, through the program's own symbol table.

    ``ctypes.util.find_library("c")`` would run ``ldconfig -p`` in a child at
    every start and return None where ldconfig is missing (slim containers),
    silently leaving malloc untuned; ``dlopen(NULL)`` needs neither.
    """
    try:
        return ctypes.CDLL(None)
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
