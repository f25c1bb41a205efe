"""Notification latency and outbox throughput on loopback (issue 15).

    python3 bench/bench_notify.py [--firings 20] [--pages 500] [--keep]

1. **Latency.** A real daemon with one ``host.file_age`` rule (``when: firing``,
   ``every: 0.2s``) and two sinks: a webhook receiver of its own (HMAC-signed)
   and a real Alertmanager (``prometheus-alertmanager``, its own port and
   storage). The file is made old ``--firings`` times (and fresh again after
   each): per firing, the time from the transition (the page's ``starts_at``,
   which is the alert-history row's ``ts``) to the webhook request's arrival,
   and to the alert being listed by Alertmanager's API (polled every ~2 ms);
   the same for the resolve (webhook arrival; alert gone from Alertmanager).
   The probe interval is not in these figures: they start at the transition.
2. **Throughput.** A second daemon with ``--pages`` rules firing at once while
   the receiver holds the first request unanswered, so the single deliverer
   is stuck and every other page waits in the outbox; then the receiver lets
   go and answers 200 to everything: pages drained per second, from the
   release to the last arrival.

Target printed next to the figure: firing -> Alertmanager <= 1 s (the max of the run). Everything
runs in a temporary directory it creates and removes (``--keep`` leaves it, with
the daemons' logs); the daemons and Alertmanager are stopped also on failure or
Ctrl-C. Exit status: 0 target met, 1 missed, 2 the benchmark could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
import traceback
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from tests.helpers import DaemonProcess, write_config  # noqa: E402
from tests.integration.faults.notify_support import (  # noqa: E402
    RecordingReceiver,
    make_fresh,
    make_old,
    percentile,
    signature,
    write_secret,
)
from tests.support.alertmanager import Alertmanager, running_alertmanager  # noqa: E402

TARGET_AM = 1.0
"""Seconds from the firing transition to the alert being visible in Alertmanager (every firing: the max)."""
SECRET = "bench-notify-key"
WAIT = 15.0
POLL = 0.002


def _wait(predicate: Callable[[], Any], timeout: float, what: str, interval: float = POLL) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def _am_has(am: Alertmanager, rule: str) -> bool:
    query = urllib.parse.urlencode([("filter", f'alertname="{rule}"')])
    status, body = am.get(f"/api/v2/alerts?{query}", timeout=2.0)
    return status == 200 and any(a["labels"].get("alertname") == rule for a in json.loads(body))


@contextlib.contextmanager
def _daemon(workdir: Path, body: str) -> Iterator[DaemonProcess]:
    config = write_config(workdir, body)
    daemon = DaemonProcess(config)
    daemon.start()
    try:
        daemon.wait_for_log("started", timeout=30)
        yield daemon
    finally:
        try:
            daemon.stop(timeout=30)
        finally:
            lines = list(daemon.lines)
            while not daemon._queue.empty():  # what no wait_for read
                line = daemon._queue.get()
                if line is not None:
                    lines.append(line)
            (workdir / "daemon.log").write_text("\n".join(lines) + "\n")


def _config(sinks: dict[str, Any], rules: dict[str, Any]) -> str:
    doc = {
        "interval": "1s",
        "notify": {"sinks": sinks, "default": {"when": "firing"}, "host": "bench"},
        "rules": rules,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def _rule(path: Path, every: str) -> dict[str, Any]:
    return {"probe": "host.file_age", "params": {"path": str(path)}, "above": "10m", "every": every}


def latency(workdir: Path, firings: int) -> dict[str, list[float]]:
    """Seconds from each transition to the webhook's arrival and to Alertmanager showing it (or not)."""
    workdir.mkdir()
    key = write_secret(workdir / "hook.key", SECRET)
    stamp = workdir / "latency.stamp"
    stamp.write_bytes(b"x")
    figures: dict[str, list[float]] = {"firing_hook": [], "firing_am": [], "resolved_hook": [], "resolved_am": []}
    with RecordingReceiver() as hook, running_alertmanager(workdir) as am:
        sinks = {
            "hook": {"webhook": {"url": f"{hook.url}/hook", "secret_file": str(key), "timeout": "5s"}},
            "am": {"alertmanager": {"url": am.url, "timeout": "5s"}},
        }
        with _daemon(workdir, _config(sinks, {"bench": _rule(stamp, "0.2s")})):
            for _ in range(firings):
                for kind, change, shown in (("firing", make_old, True), ("resolved", make_fresh, False)):
                    seen = len(hook.snapshot())
                    change(stamp)
                    am_at = _wait(lambda shown=shown: _am_has(am, "bench") == shown and time.time(), WAIT,
                                  f"Alertmanager to {'show' if shown else 'drop'} the alert")
                    arrivals = hook.wait_arrivals(lambda a, seen=seen: len(a) > seen, WAIT, f"the {kind} page")
                    arrival = arrivals[seen]
                    page = arrival.request.json()
                    if page["kind"] != kind or arrival.request.header("X-Watchdogd-Signature") != signature(
                            SECRET, arrival.request.body):
                        raise RuntimeError(f"unexpected page: {page['kind']} {arrival.request.headers}")
                    transition = page["starts_at"] if kind == "firing" else page["ends_at"]
                    figures[f"{kind}_hook"].append(arrival.at - transition)
                    figures[f"{kind}_am"].append(am_at - transition)
    return figures


def _outbox(database: Path) -> tuple[int, int]:
    """(rows, rows delivered) in the daemon's outbox, read-only: live, unlike the rendered metrics."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        rows, delivered = conn.execute("SELECT COUNT(*), COUNT(delivered_at) FROM outbox").fetchone()
    finally:
        conn.close()
    return int(rows), int(delivered)


def throughput(workdir: Path, pages: int) -> tuple[int, float, float]:
    """(pages drained, seconds from the release to the last arrival, seconds the outbox took to fill)."""
    workdir.mkdir()
    key = write_secret(workdir / "hook.key", SECRET)
    stamps = [workdir / f"t{i}.stamp" for i in range(pages)]
    for stamp in stamps:
        stamp.write_bytes(b"x")
    database = workdir / "state" / "state.db"
    with RecordingReceiver() as hook:
        sinks = {"hook": {"webhook": {"url": f"{hook.url}/hook", "secret_file": str(key), "timeout": "60s"}}}
        rules = {f"t{i}": _rule(stamp, "2s") for i, stamp in enumerate(stamps)}
        with _daemon(workdir, _config(sinks, rules)):
            hook.close_gate()
            began = time.monotonic()
            for stamp in stamps:
                make_old(stamp)
            _wait(lambda: _outbox(database)[0] >= pages, 60, f"{pages} pages in the outbox", 0.01)
            filled = time.monotonic() - began
            with hook.changed:
                if not hook.changed.wait_for(lambda: hook.held == 1, WAIT):
                    raise RuntimeError("the deliverer's first request never reached the receiver")
            released = time.time()
            hook.open_gate()
            arrivals = hook.wait_arrivals(lambda a: sum(x.status == 200 for x in a) >= pages, 120, "every page")
            _wait(lambda: _outbox(database)[1] >= pages, WAIT, "every row marked delivered", 0.05)
            keys = {a.key for a in arrivals}
            if len(keys) != pages:
                raise RuntimeError(f"{len(keys)} distinct keys arrived, expected {pages}")
            last = max(a.at for a in arrivals)
    return pages - 1, last - released, filled  # the held one was sent before the release


def _ms(values: list[float]) -> str:
    return " ".join(f"{percentile(values, q) * 1000:8.1f}" for q in (50, 95)) + f" {max(values) * 1000:8.1f}"


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--firings", type=int, default=20, help="firings (each with its resolve) timed")
    parser.add_argument("--pages", type=int, default=500, help="pages queued for the throughput figure")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs, daemon logs)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)  # stop the daemons and Alertmanager as for Ctrl-C
    workdir = Path(tempfile.mkdtemp(prefix="wd-notify-", dir="/tmp"))  # short: the control socket's path
    try:
        try:
            figures = latency(workdir / "latency", args.firings)
            drained, seconds, filled = throughput(workdir / "throughput", args.pages)
        except (RuntimeError, AssertionError, OSError) as exc:
            traceback.print_exc()
            print(f"bench_notify: could not run: {exc}", file=sys.stderr)
            return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    met = max(figures["firing_am"]) <= TARGET_AM
    print(f"notification latency, {args.firings} firings on loopback (transition -> arrival), ms")
    print(f"{'':28} {'p50':>8} {'p95':>8} {'max':>8}")
    print(f"{'firing -> webhook':28} {_ms(figures['firing_hook'])}")
    print(f"{'firing -> Alertmanager':28} {_ms(figures['firing_am'])}   target <= {TARGET_AM:g} s, every firing: "
          f"{'met' if met else 'MISSED'}")
    print(f"{'resolved -> webhook':28} {_ms(figures['resolved_hook'])}")
    print(f"{'resolved -> gone from AM':28} {_ms(figures['resolved_am'])}")
    print(f"outbox throughput: {drained} queued pages drained in {seconds:.2f} s = {drained / seconds:.0f} pages/s "
          f"(webhook answering 200, HMAC-signed, one connection each; {args.pages} rules fired and queued their "
          f"pages within {filled:.1f} s)")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
