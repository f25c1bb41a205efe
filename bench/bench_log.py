"""``log.matches`` over a file growing by 10,000 lines per second: does it keep up, and at what CPU cost?

The budget (issue 7) is 10 % of one core. A writer process appends
``--rate`` lines per second (one in ten matches the pattern) for
``--seconds`` and renames the file away halfway through, like logrotate;
this process runs the probe every ``--interval`` seconds and measures the
CPU time of its own thread while it does. At the end every matching line
written must have been counted, across the rotation.

    python bench/bench_log.py [--rate 10000] [--seconds 20] [--interval 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from watchdogd.families.logs.probes import PROBES

BUDGET_PERCENT = 10.0

WRITER = textwrap.dedent(
    """
    import json, os, sys, time
    path, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    written = matched = 0
    rotated = False
    start = time.monotonic()
    out = open(path, "a", buffering=1 << 20)
    while (elapsed := time.monotonic() - start) < seconds:
        if not rotated and elapsed >= seconds / 2:
            out.close()
            os.rename(path, path + ".1")
            out = open(path, "a", buffering=1 << 20)
            rotated = True
        lines = []
        for _ in range(per_tick):
            written += 1
            if written % 10 == 0:
                matched += 1
                lines.append(f"2024-01-01T00:00:00Z app[123]: ERROR request {written} failed: upstream timeout\\n")
            else:
                lines.append(f"2024-01-01T00:00:00Z app[123]: INFO request {written} served in 12ms\\n")
        out.write("".join(lines))
        out.flush()
        next_tick = start + (written / per_tick) * tick
        delay = next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    out.close()
    print(json.dumps({"written": written, "matched": matched, "seconds": time.monotonic() - start}))
    """
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "app.log"
        path.touch()
        spec = PROBES["log.count"]
        params = spec.params.model_validate({"path": str(path), "pattern": r"ERROR .* failed", "window": "1h"})
        probe = spec.factory(params, None, time.time)
        probe.measure()  # starts following at the (empty) end
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(args.rate), str(args.seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        cpu = 0.0
        runs = 0
        worst_run = 0.0
        wall_start = time.monotonic()
        try:
            while writer.poll() is None:
                time.sleep(args.interval)  # the daemon's schedule, not a wait for an event
                started = time.thread_time()
                probe.measure()
                spent = time.thread_time() - started
                cpu += spent
                worst_run = max(worst_run, spent)
                runs += 1
            started = time.thread_time()
            reading = probe.measure()[0]  # the last lines written
            cpu += time.thread_time() - started
            runs += 1
        finally:
            if writer.poll() is None:
                writer.kill()
            stdout, _ = writer.communicate()
        wall = time.monotonic() - wall_start
        written = json.loads(stdout)
        counted = int(reading.value)
        percent = cpu / wall * 100.0
        print(f"lines written: {written['written']} in {written['seconds']:.1f}s "
              f"({written['written'] / written['seconds']:.0f}/s), one rotation halfway")
        print(f"matching lines written: {written['matched']}, counted by the probe: {counted}")
        print(f"probe runs: {runs} every {args.interval:g}s, CPU {cpu * 1000:.0f} ms over {wall:.1f}s wall"
              f" = {percent:.2f}% of one core (budget {BUDGET_PERCENT:.0f}%), slowest run {worst_run * 1000:.1f} ms")
        keeps_up = counted == written["matched"]
        print("verdict:", "ok" if keeps_up and percent <= BUDGET_PERCENT else "FAILED")
        return 0 if keeps_up and percent <= BUDGET_PERCENT else 1


if __name__ == "__main__":
    raise SystemExit(main())
