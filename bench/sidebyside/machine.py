"""The machine the figures were taken on, and how busy it was: figures mean little without it."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def describe() -> str:
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return (f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {mem_kib / 1024 / 1024:.1f} GiB RAM, "
            f"Linux {platform.release()} {platform.machine()}")


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
