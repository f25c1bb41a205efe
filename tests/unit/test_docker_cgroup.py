"""Reading container cgroups (v1, v2, hybrid) from a file tree laid out as the kernel does."""

from __future__ import annotations

from pathlib import Path

import pytest

from watchdogd.families.docker.cgroup import CgroupFs, parse_cpuset

CID = "ab" * 32
V1_MOUNTINFO = """\
25 18 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / {root}/unified rw - cgroup2 cgroup2 rw
30 25 0:27 / {root}/memory rw - cgroup cgroup rw,memory
31 25 0:28 / {root}/cpu rw - cgroup cgroup rw,cpu
32 25 0:29 / {root}/cpuacct rw - cgroup cgroup rw,cpuacct
33 25 0:30 / {root}/cpuset rw - cgroup cgroup rw,cpuset
34 25 0:31 / {root}/systemd rw - cgroup cgroup rw,xattr,name=systemd
"""
V2_MOUNTINFO = "26 18 0:23 / {root} rw - cgroup2 cgroup2 rw,nsdelegate\n"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def v1(tmp_path: Path) -> CgroupFs:
    proc, cg = tmp_path / "proc", tmp_path / "cg"
    write(proc / "self" / "mountinfo", V1_MOUNTINFO.format(root=cg))
    write(proc / "42" / "cgroup", "".join(f"{n}:{c}:/docker/{CID}\n" for n, c in
                                          [(4, "memory"), (3, "cpuset"), (2, "cpuacct"), (1, "cpu"),
                                           (9, "name=systemd")]) + f"0::/docker/{CID}\n")
    memory, cpu, acct, cpuset = (cg / c / "docker" / CID for c in ("memory", "cpu", "cpuacct", "cpuset"))
    write(memory / "memory.usage_in_bytes", "1000\n")
    write(memory / "memory.limit_in_bytes", "4000\n")
    write(memory / "memory.stat", "cache 300\ntotal_inactive_file 200\n")
    write(acct / "cpuacct.usage", "5000000000\n")
    write(cpu / "cpu.cfs_quota_us", "50000\n")
    write(cpu / "cpu.cfs_period_us", "100000\n")
    write(cpu / "cpu.stat", "nr_periods 10\nnr_throttled 3\n")
    write(cpuset / "cpuset.cpus", "0-3\n")
    return CgroupFs(proc)


def test_v1(v1: CgroupFs) -> None:
    dirs = v1.locate(42, CID)
    assert dirs is not None and dirs.version == 1
    sample = v1.sample(dirs)
    assert (sample.used, sample.limit, sample.cpu_ns, sample.cpu_limit, sample.throttled) == (
        800.0, 4000.0, 5_000_000_000, 0.5, 3
    )


def test_v1_unlimited(v1: CgroupFs, tmp_path: Path) -> None:
    dirs = v1.locate(42, CID)
    assert dirs is not None
    (dirs.memory / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (dirs.cpu / "cpu.cfs_quota_us").write_text("-1\n")
    sample = v1.sample(dirs)
    assert sample.limit is None
    assert sample.cpu_limit == 4.0  # the cpuset still bounds it


def test_refuses_a_pid_that_is_not_the_container(v1: CgroupFs, tmp_path: Path) -> None:
    assert v1.locate(42, "cd" * 32) is None  # pid reused by another container, or another PID namespace
    assert v1.locate(43, CID) is None
    assert v1.locate(0, CID) is None  # not running


def test_a_vanished_cgroup_raises_oserror(v1: CgroupFs) -> None:
    dirs = v1.locate(42, CID)
    assert dirs is not None
    (dirs.memory / "memory.usage_in_bytes").unlink()
    with pytest.raises(OSError):
        v1.sample(dirs)


def test_v2_systemd_driver(tmp_path: Path) -> None:
    proc, cg = tmp_path / "proc", tmp_path / "cg"
    scope = f"/system.slice/docker-{CID}.scope"
    write(proc / "self" / "mountinfo", V2_MOUNTINFO.format(root=cg))
    write(proc / "7" / "cgroup", f"0::{scope}\n")
    d = cg / scope.lstrip("/")
    write(d / "memory.current", "1000\n")
    write(d / "memory.max", "max\n")
    write(d / "memory.stat", "anon 500\ninactive_file 100\n")
    write(d / "cpu.stat", "usage_usec 2500\nnr_throttled 1\n")
    write(d / "cpu.max", "150000 100000\n")
    write(d / "cpuset.cpus.effective", "0-7\n")
    fs = CgroupFs(proc)
    dirs = fs.locate(7, CID)
    assert dirs is not None and dirs.version == 2
    sample = fs.sample(dirs)
    assert (sample.used, sample.limit, sample.cpu_ns, sample.cpu_limit, sample.throttled) == (
        900.0, None, 2_500_000, 1.5, 1
    )


def test_parse_cpuset() -> None:
    assert parse_cpuset("0-3,6") == 5
    assert parse_cpuset("2") == 1
    assert parse_cpuset("") == 0
