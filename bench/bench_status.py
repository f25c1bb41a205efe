"""Wall time of `watchdogctl status` against a running daemon with 50 rules (target: <= 150 ms).

Measures the command operators and Nagios run: the installed ``watchdogctl``
console script (what the package ships), and for comparison ``python -m
watchdogd.faces.cli``. Wall time includes interpreter start, imports, the socket
round trip, the daemon building the status document, and printing the table.
Also printed: the CPU time (user + sys) of each command, which load on the
machine does not inflate the way it does wall time; the bare interpreter
start (``python -c pass``) as the floor no code of ours can go below; and the
socket round trip alone (in-process ``call``), i.e. the daemon's share.

Run: python bench/bench_status.py [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from watchdogd.faces.cli import call

RULES = 50
TARGET_MS = 150.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def config_text(directory: Path) -> str:
    rules = "".join(
        f"  r{n:02d}:\n    probe: host.memory\n    above: {0 if n % 10 == 0 else 95}\n" for n in range(RULES)
    )
    return (
        f"interval: 5s\ngrace: 0s\nlisten: null\nstate_dir: {directory / 'state'}\n"
        f"control_socket: {directory / 'control.sock'}\nrules:\n{rules}"
    )


def timed(variants: dict[str, list[str]], runs: int) -> dict[str, tuple[list[float], list[float]]]:
    """Wall and CPU (user + sys) milliseconds per run, variants interleaved so load hits all alike."""
    out: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in variants}
    for _ in range(runs):
        for name, argv in variants.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            done = subprocess.run(argv, capture_output=True, timeout=30, check=False)
            out[name][0].append((time.perf_counter() - started) * 1000)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            out[name][1].append((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000)
            # status exits 1 or 2 for firing or gave-up rules, with its table on stdout; a crash
            # (a stale console script, say) exits 1 too, but prints nothing there.
            if done.returncode not in (0, 1, 2) or (done.returncode and not done.stdout.strip()):
                raise SystemExit(f"{argv}: exit {done.returncode}: {done.stderr.decode()}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-status-", dir="/tmp"))
    config = workdir / "watchdogd.yaml"
    config.write_text(config_text(workdir))
    config.chmod(0o600)
    daemon = subprocess.Popen(
        [sys.executable, "-m", "watchdogd.daemon", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        sock = str(workdir / "control.sock")
        deadline = time.monotonic() + 60
        while True:
            try:
                doc = call(sock, "status")
                if all(rule["last_run"] for rule in doc["rules"]):
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the daemon did not come up")
            time.sleep(0.1)
        script = shutil.which("watchdogctl") or str(Path(sys.executable).parent / "watchdogctl")
        variants = {
            "watchdogctl (console script)": [script, "--config", str(config), "status"],
            "python -m watchdogd.faces.cli": [
                sys.executable, "-m", "watchdogd.faces.cli", "--config", str(config), "status",
            ],
            "python -c pass (floor)": [sys.executable, "-c", "pass"],
        }
        timed(variants, 3)  # warm the page cache
        round_trip = []
        for _ in range(args.runs):
            started = time.perf_counter()
            call(sock, "status")
            round_trip.append((time.perf_counter() - started) * 1000)
        print(f"{RULES} rules, {args.runs} runs each; target: status <= {TARGET_MS:g} ms wall; "
              f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        print(f"{'variant':32} {'wall p50':>9} {'wall p90':>9} {'wall max':>9} {'cpu p50':>8}   (ms)")
        ok = True
        for name, (wall, cpu) in timed(variants, args.runs).items():
            p50, p90 = percentile(wall, 0.5), percentile(wall, 0.9)
            print(f"{name:32} {p50:>9.1f} {p90:>9.1f} {max(wall):>9.1f} {percentile(cpu, 0.5):>8.1f}")
            if name.startswith("watchdogctl"):
                ok = p90 <= TARGET_MS
        print(f"{'socket round trip only':32} {percentile(round_trip, 0.5):>9.1f} "
              f"{percentile(round_trip, 0.9):>9.1f} {max(round_trip):>9.1f}")
        print(f"watchdogctl status p90 <= {TARGET_MS:g} ms: {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            daemon.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
