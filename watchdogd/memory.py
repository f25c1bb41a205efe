"""Process-wide memory tuning applied once at daemon start.

glibc gives each thread that contends for malloc its own arena (up to 8 per
core); with two thread pools that leaves several mostly-empty arenas resident.
Two arenas measured ~3 MiB less RSS for the daemon with no throughput
difference at our allocation rate (bench/bench_rss.py). Setting
MALLOC_ARENA_MAX in the unit file would do the same, but only for systemd
starts; this covers `scripts/run`, `--once` from cron and tests alike.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_ARENA_MAX = -8  # from glibc's malloc.h


def limit_malloc_arenas(count: int = 2) -> bool:
    """Return False (and change nothing) on a libc without mallopt, e.g. musl."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_ARENA_MAX, count))
    except (OSError, AttributeError):
        return False
