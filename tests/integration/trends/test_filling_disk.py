"""A trend rule on a real filling filesystem: the clean-up runs while the disk is still well below the line.

The test mounts a tmpfs of its own (32 MiB) and fills it steadily with
junk files from a thread; a daemon watches it with ``host.disk`` and
``predict: {above: 90, ...}`` and cleans the junk with ``files.clean``. A
plain threshold would act only at 90 %; the prediction must act earlier.
The proof is the filesystem's own usage, sampled by the writer at each
write (statvfs), at the moment the action's audit row was written, and
the row itself (the value it acted on was projected, not measured).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ctl, wait_until
from tests.integration.interfaces.conftest import DaemonFactory

pytestmark = pytest.mark.integration

SIZE_MIB = 32
CHUNK = 256 * 1024
STEP = 0.1  # seconds between chunks: 2.5 MiB/s, about 8 % of the volume per second
CAP = 97.0  # the writer stops here, so a test that fails does not fill the volume to ENOSPC
LINE = 90.0


def usage(path: Path) -> float:
    st = os.statvfs(path)
    return 100.0 * (st.f_blocks - st.f_bfree) / st.f_blocks


@pytest.fixture
def volume(short_dir: Path) -> Iterator[Path]:
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs of its own: it needs root and mount(8)")
    vol = short_dir / "vol"
    vol.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MIB}m,mode=0755", "tmpfs", str(vol)], check=True)
    try:
        yield vol
    finally:
        subprocess.run(["umount", "-l", str(vol)], check=False)


class Writer:
    """Fills the volume at a steady rate and records (wall time, usage %) after each write."""

    def __init__(self, vol: Path) -> None:
        self.vol = vol
        self.trace: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="filler", daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.wait(STEP):
            if usage(self.vol) < CAP:
                try:
                    (self.vol / f"junk-{n:05d}").write_bytes(b"\xa5" * CHUNK)
                except OSError:
                    pass  # the action may have deleted it, or the volume is full: the trace says which
                n += 1
            self.trace.append((time.time(), usage(self.vol)))

    def usage_at(self, ts: float) -> float:
        """The usage the writer saw last at or before ``ts``."""
        before = [u for t, u in self.trace if t <= ts]
        return before[-1] if before else 0.0


def test_a_filling_disk_is_cleaned_before_it_crosses_the_line(
    volume: Path, short_dir: Path, start_daemon: DaemonFactory
) -> None:
    config: dict[str, Any] = {
        "interval": "0.5s",
        "rules": {
            "filling": {
                "probe": "host.disk",
                "params": {"mountpoints": [str(volume)], "exclude_fstypes": []},
                "every": "0.5s",
                "predict": {"above": LINE, "within": "20s", "over": "5s", "min_samples": 5},
                "cooldown": "1m",
                "actions": [
                    {"files.clean": {"path": str(volume), "pattern": "junk-*", "older_than": "0s",
                                     "allowed_roots": [str(volume)], "max_files": 10_000}},
                ],
            }
        },
    }
    daemon = start_daemon(yaml.safe_dump(config))
    daemon.wait_for_log("started")
    writer = Writer(volume)
    writer.thread.start()
    try:
        row = wait_until(lambda: next(iter(ran(short_dir)), None), timeout=30, what="the clean-up to run")
        # The writer goes on: the volume must come back down, not reach the line.
        wait_until(lambda: len(writer.trace) > 5 and writer.trace[-1][0] > row["ts"] + 1.0, timeout=10,
                   what="the writer to go on after the clean-up")
    finally:
        writer.stop.set()
        writer.thread.join(5)

    acted_at = writer.usage_at(row["ts"])
    print(f"acted at {acted_at:.1f}% used, line {LINE}%, projected {row['value_before']:.1f}%, "
          f"crossing in {row['detail']['trend']['crosses_in']}s")
    peak = max(u for t, u in writer.trace if t <= row["ts"])
    assert peak < LINE, f"the volume reached {peak:.1f}% before the action ran"
    assert acted_at < LINE - 20, f"acted only at {acted_at:.1f}%: no earlier than a plain threshold would"
    assert row["value_before"] >= LINE  # the projection, past the line
    trend = row["detail"]["trend"]  # what was measured, and when the line would have been crossed
    assert trend["value_now"] < LINE and 0 < trend["crosses_in"] <= 20, trend
    assert abs(trend["value_now"] - acted_at) < 10, (trend, acted_at)
    deleted = [item for item in row["detail"].get("items", []) if item.get("ok")]
    assert deleted, row["detail"]


def ran(short_dir: Path) -> list[dict[str, Any]]:
    out = ctl("--socket", str(short_dir / "control.sock"), "history", "--actions", "--json")
    assert out.returncode == 0, out.stderr
    return [r for r in json.loads(out.stdout)["entries"] if r["decision"] == "ran" and r["result"] == "ok"]
