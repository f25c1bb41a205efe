"""glibc malloc tuning: the calls exist on this (glibc) host and a freed heap does shrink."""

from __future__ import annotations

import ctypes
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from watchdogd.memory import private_file_mappings, release_free_memory, tune_malloc

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



MAPS = """\
5581c0a00000-5581c0a1f000 r--p 00000000 fe:00 1835223                    /usr/bin/python3.11
5581c0a1f000-5581c0cf2000 r-xp 0001f000 fe:00 1835223                    /usr/bin/python3.11
5581c2400000-5581c2600000 rw-p 00000000 00:00 0                          [heap]
7f3a10000000-7f3a10021000 rw-p 00000000 00:00 0
7f3a14000000-7f3a14008000 rw-s 00000000 fe:00 524300                     /var/lib/watchdogd/state.db-shm
7f3a18000000-7f3a18004000 rw-s 00000000 00:01 1030                       /memfd:x (deleted)
7f3a1c000000-7f3a1c100000 r-xp 00000000 fe:00 1836000                    /usr/lib/old lib.so (deleted)
7ffd5e7f1000-7ffd5e7f3000 r-xp 00000000 00:00 0                          [vdso]
"""


def test_only_private_mappings_of_files_are_chosen() -> None:
    """Shared mappings (SQLite's -shm: a page out of a written page is a write), the heap, anonymous memory
    and the vdso are never asked for; a library deleted by an upgrade while mapped still is."""
    assert list(private_file_mappings(MAPS)) == [
        (0x5581C0A00000, 0x1F000), (0x5581C0A1F000, 0x2D3000), (0x7F3A1C000000, 0x100000),
    ]


RELEASE = """
import json, mmap, sys
from watchdogd.memory import release_file_pages
def resident(key):
    with open('/proc/self/status') as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key + ':'))
# A file of this test's own, mapped privately and read: its pages are clean, resident and mapped by no other
# process (a page another process maps stays; the test run's own interpreters map every library we load).
with open(sys.argv[1], 'rb') as f:
    mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
sum(mapped[offset] for offset in range(0, len(mapped), 4096))
before = resident('RssAnon')
released = release_file_pages()
print(json.dumps(None if released is None else {**released.__dict__, 'anon_before': before,
                                                'anon_after': resident('RssAnon')}))
"""


def file_system_type(path: Path) -> str:
    """The type of the mount ``path`` is on (the longest mount point that holds it), from /proc/self/mountinfo."""
    best, kind = "", ""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        point, fstype = fields[4], fields[fields.index("-") + 1]
        if str(path).startswith(point.rstrip("/") + "/") and len(point) >= len(best):
            best, kind = point, fstype
    return kind


@pytest.mark.skipif(not GLIBC, reason="madvise through glibc")
def test_the_pages_of_files_go_back_and_nothing_else_moves(tmp_path: Path) -> None:
    """On this kernel (5.4+) the call exists: None here would be a daemon that never hands anything back."""
    if file_system_type(tmp_path.resolve()) == "tmpfs":
        pytest.skip(f"{tmp_path} is on tmpfs: its pages are shared memory, which goes only to swap")
    data = tmp_path / "data"
    with data.open("wb") as out:
        out.write(b"x" * (16 * 2**20))
        os.fsync(out.fileno())  # clean pages: a dirty one would wait for writeback, not go at once
    done = subprocess.run([sys.executable, "-c", RELEASE, str(data)], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, check=True)
    released = json.loads(done.stdout)
    assert released is not None, f"MADV_PAGEOUT refused on kernel {platform.release()}"
    assert released["refused"] == 0 and released["mappings"] > 10
    assert released["file_kib_before"] - released["file_kib_after"] > 12 * 1024, released  # of the 16 MiB
    assert abs(released["anon_after"] - released["anon_before"]) < 1024, released  # anonymous memory stays
