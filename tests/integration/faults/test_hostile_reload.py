"""A hostile config on reload (SIGHUP) never kills the running daemon nor blows up its memory.

Before the fix a 1.3 KB alias bomb took a running daemon from 47 MB to 1.76 GB in 12 s and killed it.
Each hostile file is swapped in, SIGHUP sent, and the daemon must log the failed reload, keep its old
rules running (the canary keeps being evaluated) and stay under a memory bound.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.integration.interfaces.conftest import DaemonFactory
from watchdogd.faces.cli import call

pytestmark = pytest.mark.integration

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + n)}: &{chr(98 + n)} [{', '.join([f'*{chr(97 + n)}'] * 9)}]\n" for n in range(8)
)
HOSTILE = {
    "alias bomb": ALIAS_BOMB,
    "deep nesting": "rules: " + "[" * 20000 + "]" * 20000 + "\n",
    "huge interval": "interval: 1e300s\nrules: {}\n",
    "zero interval": "interval: 0s\nrules: {}\n",
    "not yaml": "\x00\x01\x02: [\n",
    "huge file": "# " + "x" * (4 * 1024 * 1024) + "\n",
}
RSS_LIMIT_KB = 200 * 1024


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # the peak: a blow-up that was freed again still counts
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_hostile_configs_on_sighup_keep_the_old_config_running(start_daemon: DaemonFactory) -> None:
    daemon = start_daemon("""
        interval: 0.5s
        rules:
          canary: {probe: host.memory, above: 100}
        """)
    daemon.wait_for_log("started")
    config = Path(str(daemon.config))  # type: ignore[attr-defined]
    good = config.read_text()
    sock = str(config.parent / "control.sock")
    assert daemon.proc is not None
    pid = daemon.proc.pid
    for name, text in HOSTILE.items():
        config.write_text(text)
        started = time.monotonic()
        daemon.signal(signal.SIGHUP)
        failed = daemon.wait_for_log("reload failed, keeping the running config", timeout=30)
        took = time.monotonic() - started
        assert "Traceback" not in "\n".join(daemon.lines)
        before = call(sock, "status")["rules"][0]["last_run"]
        wait_until(lambda b=before: call(sock, "status")["rules"][0]["last_run"] != b, 10, "the canary ran again")
        peak = rss_kb(pid)
        print(f"\nreload of {name}: refused in {took:.2f}s, peak RSS {peak / 1024:.1f} MiB: {failed[-160:]}")
        assert peak < RSS_LIMIT_KB, f"{name}: peak RSS {peak} kB"
        assert daemon.returncode is None
        # Back to the good file: also reads past every line the failed reload logged.
        config.write_text(good)
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("reloaded", timeout=30)
