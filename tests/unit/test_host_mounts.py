"""The shared mount table: read again only when the (fake) poll flags a change; shared by host.disk and host.inodes."""

from __future__ import annotations

import select
import time
from pathlib import Path
from typing import Any

import pytest

from watchdogd import inline
from watchdogd.contracts import ProbeError
from watchdogd.families.host import probes as host
from watchdogd.families.host.probes import PROBES, MountTable

ROOT = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"


class FakePoll:
    """Stands in for ``select.poll()``: reports a change when told to, once, as the kernel does."""

    def __init__(self) -> None:
        self.flagged = False
        self.registered: list[tuple[int, int]] = []

    def register(self, fd: int, events: int) -> None:
        self.registered.append((fd, events))

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        assert timeout == 0
        if not self.flagged:
            return []
        self.flagged = False
        return [(self.registered[0][0], select.POLLPRI | select.POLLERR)]


class Unpollable:
    def register(self, fd: int, events: int) -> None:
        raise OSError("not pollable")


@pytest.fixture
def table_file(tmp_path: Path) -> Path:
    path = tmp_path / "mountinfo"
    path.write_text(ROOT)
    return path


def make(kind: str, table: MountTable, **params: Any) -> Any:
    spec = PROBES[kind]
    return spec.factory(spec.params(**params), table, time.time)


def test_read_again_only_after_the_poll_flags_a_change(table_file: Path, tmp_path: Path) -> None:
    poll = FakePoll()
    table = MountTable(str(table_file), poller=lambda: poll)
    generation, mounts = table.current()
    assert list(mounts) == ["/"] and table.reads == 1
    assert poll.registered[0][1] == select.POLLPRI | select.POLLERR
    table_file.write_text(ROOT + f"2 1 0:99 / {tmp_path} rw - xfs /dev/sdb1 rw\n")
    assert table.current() == (generation, mounts) and table.reads == 1  # not flagged: not read
    poll.flagged = True
    new_generation, new_mounts = table.current()
    assert table.reads == 2 and new_generation == generation + 1 and str(tmp_path) in new_mounts
    poll.flagged = True  # a change and its undoing between two runs: read again, nothing to parse
    assert table.current() == (new_generation, new_mounts) and table.reads == 3


def test_without_poll_the_table_is_read_every_time(table_file: Path) -> None:
    table = MountTable(str(table_file), poller=Unpollable)
    generation, _ = table.current()
    assert table.current()[0] == generation and table.reads == 2


def test_disk_and_inodes_share_one_read_and_reselect_on_change(table_file: Path, tmp_path: Path) -> None:
    poll = FakePoll()
    table = MountTable(str(table_file), poller=lambda: poll)
    disk, inodes = make("host.disk", table), make("host.inodes", table)
    assert [r.subject for r in disk.measure()] == ["/"]
    inodes.measure()
    assert table.reads == 1
    table_file.write_text(ROOT + f"2 1 0:99 / {tmp_path} rw - xfs /dev/sdb1 rw\n")
    poll.flagged = True
    assert [r.subject for r in disk.measure()] == ["/", str(tmp_path)]
    inodes.measure()
    assert table.reads == 2


def test_a_missing_named_mountpoint_fails_every_run(table_file: Path) -> None:
    poll = FakePoll()
    table = MountTable(str(table_file), poller=lambda: poll)
    disk = make("host.disk", table, mountpoints=["/data"])
    for _ in range(2):
        with pytest.raises(ProbeError, match="not mounted: /data"):
            disk.measure()


def test_an_unreadable_table_is_a_probe_error_and_is_opened_again(tmp_path: Path) -> None:
    path = tmp_path / "mountinfo"
    table = MountTable(str(path), poller=FakePoll)
    with pytest.raises(ProbeError, match="cannot read the mount table"):
        table.current()
    path.write_text(ROOT)
    assert list(table.current()[1]) == ["/"]


def test_disk_and_inodes_name_one_shared_table() -> None:
    assert PROBES["host.disk"].shared is PROBES["host.inodes"].shared is host.mount_table
    assert isinstance(host.mount_table(time.time), MountTable)



def test_disk_and_inodes_of_one_cycle_share_one_statvfs_per_mount(table_file: Path) -> None:
    poll = FakePoll()
    table = MountTable(str(table_file), poller=lambda: poll)
    probes = [make("host.disk", table), make("host.inodes", table), make("host.disk", table, mountpoints=["/"])]
    for probe in probes:
        probe.measure()
    assert table.usage_reads == 1  # "/" once for all three rules


def test_disk_runs_inline_only_on_a_fresh_usage(table_file: Path, tmp_path: Path) -> None:
    poll = FakePoll()
    table = MountTable(str(table_file), poller=lambda: poll)
    disk = make("host.disk", table)
    assert disk.inline
    with inline.only(), pytest.raises(inline.WouldBlock):
        disk.measure()  # neither the table nor the usage was read yet
    disk.measure()
    with inline.only():
        assert [r.subject for r in disk.measure()] == ["/"]
    table_file.write_text(ROOT + f"2 1 0:99 / {tmp_path} rw - xfs /dev/sdb1 rw\n")
    poll.flagged = True  # the table changed: reading it again is refused on the rule's thread
    with inline.only(), pytest.raises(inline.WouldBlock):
        disk.measure()
    # The kernel flags a change to one poll only: the refused run's poll took it, and the run on a probe
    # thread must still read the table again.
    assert [r.subject for r in disk.measure()] == ["/", str(tmp_path)]
