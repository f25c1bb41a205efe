"""Host probes against this machine's real /proc and real files in tmp_path."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from pydantic import ValidationError

from watchdogd.contracts import ProbeError
from watchdogd.families.host import probes as host
from watchdogd.families.host.probes import PROBES, parse_mountinfo
from watchdogd.model import Cardinality, Reading, Unit


def make(kind: str, clock: Any = time.time, **params: Any) -> Any:
    spec = PROBES[kind]
    return spec.factory(spec.params(**params), None, clock)


def measure(kind: str, **params: Any) -> list[Reading]:
    return make(kind, **params).measure()


def test_table_declares_every_probe() -> None:
    assert set(PROBES) == {
        "host.cpu", "host.memory", "host.swap", "host.load",
        "host.disk", "host.inodes", "host.file_age", "host.dir_size",
    }
    for spec in PROBES.values():
        assert spec.cardinality is Cardinality.LOW
        assert spec.target_kind is None
        assert spec.summary
    assert PROBES["host.file_age"].unit is Unit.SECONDS
    assert PROBES["host.dir_size"].unit is Unit.BYTES
    assert PROBES["host.load"].unit is Unit.COUNT


@pytest.mark.parametrize(
    ("kind", "subject"), [("host.cpu", "cpu"), ("host.memory", "memory"), ("host.swap", "swap")]
)
def test_single_percent_probes(kind: str, subject: str) -> None:
    [reading] = measure(kind)
    assert reading.subject == subject
    assert isinstance(reading.value, float)
    assert 0.0 <= reading.value <= 100.0


def test_memory_details() -> None:
    [reading] = measure("host.memory")
    assert reading.details["total"] > 0
    assert 0 < reading.details["available"] <= reading.details["total"]


def test_cpu_delta_is_per_instance() -> None:
    probe = make("host.cpu")
    other = make("host.cpu")
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # burn CPU so the interval is not empty
        sum(range(1000))
    [first] = probe.measure()
    assert 0.0 < first.value <= 100.0  # busy: this process spun for the whole interval
    # Another rule's probe measuring meanwhile must not reset this one's interval.
    other.measure()
    time.sleep(0.05)
    [second] = probe.measure()
    assert 0.0 <= second.value <= 100.0
    assert set(second.details) >= {"user", "system", "iowait"}


def test_load_per_core() -> None:
    [reading] = measure("host.load", period=15)
    assert reading.subject == "load15"
    cores = os.cpu_count() or 1
    assert reading.value == pytest.approx(os.getloadavg()[2] / cores, abs=0.5)
    assert reading.details["cores"] == cores
    with pytest.raises(ValidationError):
        PROBES["host.load"].params(period=10)


def test_disk_all_real_filesystems_include_root() -> None:
    readings = measure("host.disk")
    by_subject = {r.subject: r for r in readings}
    # In a container / is an overlay, which host.disk leaves out on purpose (it is the image, not a disk).
    root_fs = next(p.fstype for p in psutil.disk_partitions(all=True) if p.mountpoint == "/")
    assert ("/" in by_subject) == (root_fs != "overlay"), root_fs
    for reading in readings:
        assert 0.0 <= reading.value <= 100.0
        assert reading.details["fstype"] not in {"tmpfs", "proc", "sysfs", "overlay", "cgroup2"}
        assert set(reading.details) >= {"device", "fstype", "total_bytes", "free_bytes"}
    assert len({r.subject for r in readings}) == len(readings)
    assert [r.subject for r in readings] == sorted(r.subject for r in readings)


def test_disk_explicit_root_matches_df_semantics() -> None:
    [reading] = measure("host.disk", mountpoints=["/"])
    assert reading.subject == "/"
    st = os.statvfs("/")
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    expected = used / (used + st.f_bavail * st.f_frsize) * 100
    assert reading.value == pytest.approx(expected, abs=0.5)
    assert reading.details["total_bytes"] == st.f_blocks * st.f_frsize


def test_disk_explicit_tmpfs_is_taken_as_given() -> None:
    mounts = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    tmpfs = next((mp for mp, m in mounts.items() if m.fstype == "tmpfs"), None)
    if tmpfs is None:
        pytest.skip("no tmpfs mounted here")
    [reading] = measure("host.disk", mountpoints=[tmpfs])
    assert reading.details["fstype"] == "tmpfs"


def test_disk_unmounted_mountpoint_is_named(tmp_path: Path) -> None:
    probe = make("host.disk", mountpoints=["/", str(tmp_path)])
    with pytest.raises(ProbeError, match=str(tmp_path)):
        probe.measure()


def test_disk_exclude_mountpoints_glob() -> None:
    readings = measure("host.disk", exclude_mountpoints=["/"])
    assert "/" not in {r.subject for r in readings}


def test_disk_mountpoint_normalised() -> None:
    params = PROBES["host.disk"].params(mountpoints=["//", "/var/"])
    assert params.mountpoints == ["/", "/var"]  # type: ignore[attr-defined]


def test_disk_params_validation() -> None:
    spec = PROBES["host.disk"]
    with pytest.raises(ValidationError, match="absolute"):
        spec.params(mountpoints=["var"])
    with pytest.raises(ValidationError):
        spec.params(mountpoints=[])
    with pytest.raises(ValidationError):
        spec.params(mountpoint=["/"])  # unknown key


def test_inodes() -> None:
    readings = measure("host.inodes", mountpoints=["/"])
    st = os.statvfs("/")
    if st.f_files == 0:
        assert readings == []
        return
    [reading] = readings
    assert 0.0 < reading.value <= 100.0
    assert reading.value == pytest.approx((st.f_files - st.f_ffree) / st.f_files * 100, abs=0.5)
    for reading in measure("host.inodes"):
        assert 0.0 <= reading.value <= 100.0


def test_parse_mountinfo_bind_mounts_and_escapes() -> None:
    text = (
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "23 22 8:1 /srv/data /mnt/my\\040data rw shared:2 master:1 - ext4 /dev/sda1 rw\n"
        "24 22 0:5 / /run rw - tmpfs tmpfs rw\n"
        "garbage line\n"
    )
    mounts = parse_mountinfo(text)
    assert set(mounts) == {"/", "/mnt/my data", "/run"}
    assert mounts["/mnt/my data"].dev_id == "8:1"
    assert mounts["/run"].fstype == "tmpfs"


def set_mtime(path: Path, mtime: float) -> None:
    os.utime(path, (mtime, mtime))


def test_file_age_picks_newest(tmp_path: Path) -> None:
    now = 1_700_000_000.0
    for name, age in [("db-1.sql.gz", 3 * 86400), ("db-2.sql.gz", 3600), ("db-3.sql.gz", 2 * 86400)]:
        (tmp_path / name).write_bytes(b"x")
        set_mtime(tmp_path / name, now - age)
    newer_other = tmp_path / "other.txt"
    newer_other.write_bytes(b"x")
    set_mtime(newer_other, now - 10)
    pattern = str(tmp_path / "db-*.sql.gz")
    [reading] = measure_at("host.file_age", now, path=pattern)
    assert reading.subject == pattern
    assert reading.value == pytest.approx(3600.0)
    assert reading.details["newest"] == str(tmp_path / "db-2.sql.gz")
    assert reading.details["matches"] == 3


def measure_at(kind: str, now: float, **params: Any) -> list[Reading]:
    return make(kind, lambda: now, **params).measure()


def test_file_age_no_match_is_infinite(tmp_path: Path) -> None:
    [reading] = measure("host.file_age", path=str(tmp_path / "backup-*.tar"))
    assert math.isinf(reading.value) and reading.value > 0
    assert reading.details["newest"] is None


def test_file_age_future_mtime_is_zero(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    set_mtime(tmp_path / "f", 2_000_000_000.0)
    [reading] = measure_at("host.file_age", 1_000_000_000.0, path=str(tmp_path / "f"))
    assert reading.value == 0.0


def test_file_age_requires_absolute_path() -> None:
    with pytest.raises(ValidationError, match="absolute"):
        PROBES["host.file_age"].params(path="backups/*.gz")
    with pytest.raises(ValidationError):
        PROBES["host.file_age"].params()


def test_dir_size_sums_regular_files_only(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 100)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"y" * 250)
    os.link(tmp_path / "sub" / "b", tmp_path / "b-hardlink")  # counted once
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "big").write_bytes(b"z" * 10_000)
    (tmp_path / "link-dir").symlink_to(outside)  # not followed
    (tmp_path / "link-file").symlink_to(outside / "big")  # not counted
    [reading] = measure("host.dir_size", path=str(tmp_path))
    assert reading.subject == str(tmp_path)
    assert reading.value == 350.0
    assert reading.details["files"] == 2
    assert reading.details["truncated"] is False


def test_dir_size_truncates(tmp_path: Path) -> None:
    for i in range(20):
        (tmp_path / f"f{i}").write_bytes(b"x" * 10)
    [reading] = measure("host.dir_size", path=str(tmp_path), max_entries=5)
    assert reading.details["truncated"] is True
    assert reading.value == 50.0


def test_dir_size_missing_directory_fails(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="not a directory"):
        measure("host.dir_size", path=str(tmp_path / "nope"))


def test_dir_size_params_validation() -> None:
    spec = PROBES["host.dir_size"]
    with pytest.raises(ValidationError, match="absolute"):
        spec.params(path="relative/dir")
    with pytest.raises(ValidationError):
        spec.params(path="/tmp", max_entries=0)
    with pytest.raises(ValidationError):
        spec.params(path="/tmp", follow=True)


def test_params_are_frozen() -> None:
    params = PROBES["host.load"].params(period=1)
    with pytest.raises(AttributeError, match="frozen"):  # the plain form the daemon holds (watchdogd.spec)
        params.period = 5  # type: ignore[attr-defined]
    assert params.period == 1  # type: ignore[attr-defined]


def test_disk_dedups_bind_mounts_only_in_automatic_selection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Real bind mounts need root and leak into the host; a mount table file exercises the same code.
    bind = tmp_path / "bind"
    other = tmp_path / "other"
    bind.mkdir()
    other.mkdir()
    table = tmp_path / "mountinfo"
    table.write_text(
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
        f"2 1 8:1 /srv {bind} rw - ext4 /dev/sda1 rw\n"
        f"3 1 0:99 / {other} rw - xfs /dev/sdb1 rw\n"
        "4 1 0:20 / /dev/shm rw - tmpfs tmpfs rw\n"
    )
    monkeypatch.setattr(host, "MOUNTINFO", str(table))
    assert [r.subject for r in measure("host.disk")] == ["/", str(other)]
    assert [r.subject for r in measure("host.disk", exclude_fstypes=[])] == ["/", "/dev/shm", str(other)]
    [reading] = measure("host.disk", mountpoints=[str(bind)])
    assert reading.subject == str(bind)
    assert reading.details == {**reading.details, "device": "/dev/sda1", "fstype": "ext4"}
