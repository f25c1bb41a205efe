"""The mount table is read again exactly when the kernel flags a mount or unmount (a tmpfs in a private namespace)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CHILD = textwrap.dedent("""
    import subprocess, sys, time
    from watchdogd.families.host.probes import PROBES, MountTable

    point = sys.argv[1]
    table = MountTable()
    spec = PROBES["host.disk"]
    disk = spec.factory(spec.params(exclude_fstypes=[]), table, time.time)
    inodes = PROBES["host.inodes"].factory(spec.params(exclude_fstypes=[]), table, time.time)

    def subjects():
        found = {r.subject for r in disk.measure()}
        inodes.measure()
        return found

    assert point not in subjects() and table.reads == 1, table.reads
    assert point not in subjects() and table.reads == 1, table.reads      # nothing changed: not read
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", point], check=True)
    assert point in subjects() and table.reads == 2, table.reads          # flagged once, read once
    assert point in subjects() and table.reads == 2, table.reads
    subprocess.run(["umount", point], check=True)
    assert point not in subjects() and table.reads == 3, table.reads
    print("ok")
""")


def test_a_tmpfs_mount_and_unmount_are_each_read_once(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("this test needs root and unshare(1): it mounts a tmpfs in a private mount namespace")
    point = tmp_path / "mnt"
    point.mkdir()
    # --propagation private: the host's own mounts (containers starting) do not reach the namespace.
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", CHILD, str(point)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
