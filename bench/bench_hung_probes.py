"""Benchmark: how late unrelated rules run while N probes hang (issue 20, probe isolation).

    python3 bench/bench_hung_probes.py [--hung 0,12,100,200] [--canaries 10] [--seconds 20]

Per N: a watchdogd of its own (own state dir and control socket under a temp dir, no HTTP) with N
``net.http`` rules against a black hole (accepts, never answers; client timeout 60 s, rule timeout
0.5 s: each probe thread stays stuck) and ``--canaries`` host.memory rules, all every 0.5 s. After
every hung rule is down, status is sampled every 50 ms for ``--seconds``; a canary's lateness is the
longest gap between two of its runs beyond its interval. Also printed: the daemon's thread count and
RSS at the end, and how long SIGTERM took. Only what it creates is touched (temp dir, its daemon,
its black hole).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers import DaemonProcess, wait_until, write_config
from tests.integration.faults.hung import BlackHole, canary_rules, hung_rules, observe, rules

INTERVAL = 0.5


def proc_status(pid: int, key: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].strip()
    return "?"


def one(hung: int, canaries: int, seconds: float) -> str:
    with tempfile.TemporaryDirectory(prefix="wdh-", dir="/tmp") as tmp:
        directory = Path(tmp)
        hole = BlackHole()
        try:
            config = write_config(
                directory,
                f"interval: 1s\nstuck_probes_restart: 0\n"
                f"rules:{hung_rules(hole.port, hung, INTERVAL)}{canary_rules(canaries, INTERVAL)}\n",
            )
            daemon = DaemonProcess(config)
            daemon.start()
            try:
                daemon.wait_for_log("started")
                sock = directory / "control.sock"
                wait_until(
                    lambda: all(rules(sock)[f"hung-{n}"]["up"] is False for n in range(hung)),
                    60, "every hung rule down",
                )
                seen = observe(sock, [f"canary-{n}" for n in range(canaries)], INTERVAL, seconds)
                assert daemon.proc is not None
                pid = daemon.proc.pid
                threads, rss = proc_status(pid, "Threads"), proc_status(pid, "VmRSS")
                started = time.monotonic()
                code = daemon.stop(timeout=60)
                stop = time.monotonic() - started
            finally:
                if daemon.returncode is None:
                    daemon.stop(timeout=30)
        finally:
            hole.close()
    return f"| {hung} | {seen.line()} | {threads} | {rss} | {stop:.2f}s (exit {code}) |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hung", default="0,12,100,200")
    parser.add_argument("--canaries", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    print(f"canaries: {args.canaries} host.memory rules every {INTERVAL}s, observed {args.seconds:g}s each")
    print("| hung probes | canaries | daemon threads | RSS | SIGTERM -> exit |")
    print("|---|---|---|---|---|")
    for hung in (int(n) for n in args.hung.split(",")):
        print(one(hung, args.canaries, args.seconds), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
