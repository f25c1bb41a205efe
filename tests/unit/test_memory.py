"""glibc malloc tuning: the calls exist on this (glibc) host and a freed heap does shrink."""

from __future__ import annotations

import ctypes
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from watchdogd.memory import release_free_memory, tune_malloc

ROOT = Path(__file__).resolve().parents[2]
GLIBC = platform.libc_ver()[0] == "glibc"


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@pytest.mark.skipif(not GLIBC, reason="mallopt/malloc_trim are glibc's")
def test_arena_limit_and_mmap_threshold_are_accepted() -> None:
    assert tune_malloc(2) is True


NO_CHILDREN = """
import subprocess
def refuse(*args, **kwargs):
    raise OSError("no child may run: " + repr(args[:1]))
subprocess.Popen = refuse  # ctypes.util.find_library runs ldconfig (and gcc, ld) through it
from watchdogd.memory import release_free_memory, tune_malloc
assert tune_malloc(2) is True and release_free_memory() is True
"""


@pytest.mark.skipif(not GLIBC, reason="mallopt/malloc_trim are glibc's")
def test_tuning_needs_no_ldconfig() -> None:
    """Found through the process's own symbols: where ldconfig cannot run (a slim container, a sandbox
    without it) malloc is tuned all the same, and a start spawns nothing for it."""
    done = subprocess.run([sys.executable, "-c", NO_CHILDREN], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


BIG_BUFFERS = """
from tests.unit.test_memory import rss_kib
from watchdogd.memory import tune_malloc
assert tune_malloc(2) is True
for _ in range(3):
    before = rss_kib()
    buffer = bytearray(2 * 1024 * 1024)
    buffer[::4096] = b"x" * len(buffer[::4096])  # touch every page
    grown = rss_kib()
    del buffer
    assert grown - before >= 1800 and rss_kib() - before < 512, (before, grown, rss_kib())
"""


@pytest.mark.skipif(not GLIBC, reason="mallopt/malloc_trim are glibc's")
def test_a_big_buffer_goes_back_to_the_kernel_at_free_even_after_another() -> None:
    """With glibc's sliding threshold the second 2 MiB buffer would stay on the heap after its free.

    In a fresh interpreter: glibc serves even a big request from a free chunk
    of the heap when one fits, and after a thousand tests one often does.
    """
    done = subprocess.run([sys.executable, "-c", BIG_BUFFERS], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


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

