"""Wall time of `watchdogctl status` against a running daemon with 10, 100 and 1,000 rules (target: p50 <= 100 ms).

Measures the command operators and Nagios run: the installed ``watchdogctl``
console script (what the package ships), and for comparison ``python -m
watchdogd.faces.cli``. Wall time includes interpreter start, imports, the socket
round trip, the daemon building the status document, and printing the table.
The daemon runs cheap mixed rules (``host.file_age`` on a few temp files,
``host.memory``, ``host.load``) every 5 s, so at 1,000 rules it is busy the way
a real one is while watchdogctl asks it.

Besides the wall time, each size prints where the time goes:

* the bare interpreter start (``python -c pass``): the floor no code of ours can go below;
* the CPU time (user + sys) of the command, which load inflates less than wall time;
* in-process figures (this process, no start-up): the daemon's share (a ``status``
  request as the default view sends it, and the full ``status --json`` document,
  each a socket round trip), the reply's size, and the CLI's decode + formatting.

Run: python bench/bench_status.py [--rules 10,100,1000] [--runs 20]
Before/after: PYTHONPATH=/path/to/old/tree python bench/bench_status.py (it only uses
``watchdogd.faces.cli.call`` and ``main``, which every version has).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from watchdogd.faces import cli

TARGET_MS = 100.0
MIX = (
    "probe: host.file_age\n    params: {{path: {files}/f{k}}}\n    above: 1h",
    "probe: host.memory\n    above: {memory}",
    "probe: host.load\n    above: 50",
)
"""Cheap probes; one memory rule in ten fires (``above: 0``), so status has firing subjects to list."""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def config_text(directory: Path, rules: int) -> str:
    files = directory / "files"
    body = "".join(
        f"  r{n:04d}:\n    "
        + MIX[n % len(MIX)].format(files=files, k=n % 3, memory=0 if n % 30 == 1 else 95)
        + "\n"
        for n in range(rules)
    )
    return (
        f"interval: 5s\ngrace: 0s\nlisten: null\nstate_dir: {directory / 'state'}\n"
        f"control_socket: {directory / 'control.sock'}\nrules:\n{body}"
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


def raw_request(path: str, request: dict[str, object]) -> bytes:
    """One request as bytes on the wire, the reply as bytes: the daemon's share without any decoding."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(path)
        sock.sendall(json.dumps(request).encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    return b"".join(chunks)


def default_request() -> dict[str, object]:
    """The request plain ``watchdogctl status`` sends (a summary view where this version has one)."""
    args = getattr(cli, "STATUS_VIEW_ARGS", {})
    return {"v": cli.PROTOCOL, "cmd": "status", "args": dict(args)}


def in_process(sock: str, runs: int) -> dict[str, list[float]]:
    """Milliseconds of each share, measured in this process (no interpreter start, imports done)."""
    shares: dict[str, list[float]] = {"daemon: status (default view)": [], "daemon: status --json (full)": [],
                                      "cli: decode + format": [], "cli: main() in-process": []}
    full = {"v": cli.PROTOCOL, "cmd": "status", "args": {}}
    for _ in range(runs):
        started = time.perf_counter()
        reply = raw_request(sock, default_request())
        shares["daemon: status (default view)"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        raw_request(sock, full)
        shares["daemon: status --json (full)"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        doc = json.loads(reply)["result"]
        cli.render_status(doc, cli.Palette(False))
        shares["cli: decode + format"].append((time.perf_counter() - started) * 1000)
        sink = io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stdout(sink):
            cli.main(["--socket", sock, "--color", "never", "status"])
        shares["cli: main() in-process"].append((time.perf_counter() - started) * 1000)
    return shares


def wait_until_up(sock: str, rules: int, daemon: subprocess.Popen[bytes]) -> None:
    """Every rule has run once (a status before that would list rules with nothing to show)."""
    deadline = time.monotonic() + 120
    while True:
        with contextlib.suppress(Exception):
            doc = cli.call(sock, "status", timeout=30)
            if len(doc["rules"]) == rules and all(rule["last_run"] for rule in doc["rules"]):
                return
        if daemon.poll() is not None:
            raise SystemExit(f"the daemon exited with {daemon.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit("the daemon did not come up (or did not run every rule) within 120 s")
        time.sleep(0.2)  # polling a process we do not control: there is no event to await


def measure(rules: int, runs: int, say: Callable[[str], None]) -> tuple[float, float]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-status-", dir="/tmp"))
    (workdir / "files").mkdir()
    for k in range(3):
        (workdir / "files" / f"f{k}").write_text("x")
    config = workdir / "watchdogd.yaml"
    config.write_text(config_text(workdir, rules))
    config.chmod(0o600)
    daemon = subprocess.Popen(
        [sys.executable, "-m", "watchdogd.daemon", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        sock = str(workdir / "control.sock")
        wait_until_up(sock, rules, daemon)
        script = str(Path(sys.executable).parent / "watchdogctl")
        if not os.access(script, os.X_OK):
            script = shutil.which("watchdogctl") or script
        variants = {
            "watchdogctl (console script)": [script, "--config", str(config), "status"],
            "python -m watchdogd.faces.cli": [
                sys.executable, "-m", "watchdogd.faces.cli", "--config", str(config), "status",
            ],
            "python -c pass (floor)": [sys.executable, "-c", "pass"],
        }
        timed(variants, 2)  # warm the page cache
        results = timed(variants, runs)
        shares = in_process(sock, runs)
        size = len(raw_request(sock, default_request()))
        full = len(raw_request(sock, {"v": cli.PROTOCOL, "cmd": "status", "args": {}}))
        say(f"\n{rules} rules, {runs} runs each; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
            f"on {os.cpu_count()} CPUs; reply {size / 1024:.0f} KiB (status --json {full / 1024:.0f} KiB)")
        say(f"  {'variant':34} {'wall p50':>9} {'wall p90':>9} {'wall max':>9} {'cpu p50':>8}   (ms)")
        for name, (wall, cpu) in results.items():
            say(f"  {name:34} {percentile(wall, 0.5):>9.1f} {percentile(wall, 0.9):>9.1f} {max(wall):>9.1f} "
                f"{percentile(cpu, 0.5):>8.1f}")
        for name, values in shares.items():
            say(f"  {name:34} {percentile(values, 0.5):>9.1f} {percentile(values, 0.9):>9.1f} {max(values):>9.1f}")
        wall = results["watchdogctl (console script)"][0]
        return percentile(wall, 0.5), percentile(wall, 0.9)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def sizes(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected rule counts like 10,100,1000, got {text!r}") from None
    if not values or any(not 1 <= value <= 10_000 for value in values):
        raise argparse.ArgumentTypeError(f"rule counts must be from 1 to 10000, got {text!r}")
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=sizes, default=[10, 100, 1000], help="rule counts (default: 10,100,1000)")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    figures = {rules: measure(rules, args.runs, print) for rules in args.rules}
    print()
    for rules, (p50, p90) in figures.items():
        # bench/run's table reads these lines; the figure next to its target makes a miss a MISS.
        print(f"watchdogctl status at {rules} rules: p50 {p50:.1f} ms (target <= {TARGET_MS:g} ms), p90 {p90:.1f}")
    ok = all(p50 <= TARGET_MS for p50, _ in figures.values())
    print(f"watchdogctl status p50 <= {TARGET_MS:g} ms at every size: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
