"""glibc malloc tuning: the calls exist on this (glibc) host and a freed heap does shrink."""

from __future__ import annotations

import ctypes
import platform

import pytest

from watchdogd.memory import limit_malloc_arenas, release_free_memory

GLIBC = platform.libc_ver()[0] == "glibc"


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@pytest.mark.skipif(not GLIBC, reason="mallopt/malloc_trim are glibc's")
def test_arena_limit_is_accepted() -> None:
    assert limit_malloc_arenas(2) is True


@pytest.mark.skipif(not GLIBC, reason="mallopt/malloc_trim are glibc's")
def test_freed_heap_pages_go_back_to_the_kernel() -> None:
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    # Small blocks come from the heap, not from mmap; the last one stays so the heap cannot shrink from its top.
    blocks = [libc.malloc(4096) for _ in range(8192)]
    for block in blocks:
        ctypes.memset(block, 1, 4096)
    for block in blocks[:-1]:
        libc.free(block)
    before = rss_kib()
    assert release_free_memory() is True
    assert before - rss_kib() > 16 * 1024  # of 32 MiB freed, most is given back
    libc.free(blocks[-1])
