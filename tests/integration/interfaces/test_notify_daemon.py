"""Notifications end to end (issue 15): a real daemon, a real Alertmanager and a webhook receiver, all the test's own.

The rules are ``host.file_age`` on a file in the test's directory: the test
makes a file old (``os.utime`` an hour back) to make its rule fire and fresh
to clear it. Actions are ``exec``: ``/usr/bin/touch <file>`` fixes the
condition, ``/bin/true`` does not. No root, no fake probes: the daemon runs
with the real registry.

"No page was sent" is checked after a barrier, not after a sleep: metrics
rendered after the moment in question in which the pager (a queued event
sink) has handled every event the inline log sink saw (``settled``), so any
page it decided would be in the outbox (``outbox_pending``) or delivered
(``delivered_total``) by then. The metrics are read from the daemon's
textfile (``textfile_dir``, the same registry as ``/metrics``, rewritten
after each rule cycle): see ``notify_support.read_metrics`` for why.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import WATCHDOGD, ctl, free_port, run, wait_until, write_config
from tests.integration.faults.notify_support import (
    RecordingReceiver,
    figures,
    history,
    make_fresh,
    make_old,
    read_metrics,
    settled,
    signature,
    wait_figures,
    write_secret,
)
from tests.integration.interfaces.conftest import DaemonFactory
from tests.support.alertmanager import running_alertmanager

pytestmark = pytest.mark.integration

SECRET = "e2e-webhook-key"
HOST = "e2e-host"
EXIT_CONFIG = 2


def hook_sink(url: str, key: Path, timeout: str = "2s") -> dict[str, Any]:
    return {"webhook": {"url": f"{url}/hook", "secret_file": str(key), "timeout": timeout}}


def am_sink(url: str) -> dict[str, Any]:
    return {"alertmanager": {"url": url, "timeout": "2s"}}


def file_rule(path: Path, *, actions: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {"probe": "host.file_age", "params": {"path": str(path)}, "above": "10m", "every": "0.5s"}
    if actions:
        rule["actions"] = actions
    rule.update(extra)
    return rule


QUIET = {"delivered": 0, "retried": 0, "failed": 0, "reminders": 0, "pending": 0, "oldest": 0}


def config(prom: Path | None, sinks: dict[str, Any], rules: dict[str, Any], **notify: Any) -> str:
    """The daemon's config; ``prom``: a directory for its metrics textfile (created here)."""
    if prom is not None:
        prom.mkdir(exist_ok=True)
    doc: dict[str, Any] = {
        "interval": "1s",
        "textfile_dir": str(prom) if prom is not None else None,
        "notify": {"sinks": sinks, "host": HOST, **notify},
        "rules": rules,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def stamp(short_dir: Path, name: str) -> Path:
    path = short_dir / name
    path.write_bytes(b"x")
    return path


def check_signed(arrival_request: Any, kind: str) -> dict[str, Any]:
    """The webhook request as documented: POST, signed body, Idempotency-Key = the body's key, the kind header."""
    body: dict[str, Any] = arrival_request.json()
    assert arrival_request.method == "POST" and arrival_request.path == "/hook"
    assert arrival_request.header("Content-Type") == "application/json"
    assert arrival_request.header("User-Agent").startswith("watchdogd/")
    assert arrival_request.header("X-Watchdogd-Signature") == signature(SECRET, arrival_request.body)
    assert arrival_request.header("Idempotency-Key") == body["key"] and len(body["key"]) >= 16
    assert arrival_request.header("X-Watchdogd-Kind") == kind == body["kind"]
    assert body["version"] == 1 and body["host"] == HOST
    return body


# 1 -------------------------------------------------------------------------------------------------------------


def test_act_first_a_fix_that_holds_pages_no_one(start_daemon: DaemonFactory, short_dir: Path, tmp_path: Path) -> None:
    target = stamp(short_dir, "fixable.stamp")
    key = write_secret(short_dir / "hook.key", SECRET)
    prom = short_dir / "prom"
    sock = short_dir / "control.sock"
    with RecordingReceiver() as hook, running_alertmanager(tmp_path) as am:
        fix = {"exec": {"argv": ["/usr/bin/touch", str(target)], "settle": "3s"}}
        daemon = start_daemon(config(
            prom, {"hook": hook_sink(hook.url, key), "am": am_sink(am.url)},
            {"fixable": file_rule(target, actions=[fix])}, default={"when": "act_first"},
        ))
        daemon.wait_for_log("started")
        make_old(target)

        def verified() -> list[dict[str, Any]]:
            return [e for e in history(sock, "--rule", "fixable", "--actions")["entries"] if "held" in e["detail"]]

        [entry] = wait_until(verified, 15, "the action's verified audit row")
        assert (entry["action"], entry["decision"], entry["result"]) == ("exec", "ran", "ok")
        assert entry["detail"]["held"] is True and entry["detail"]["items"][0]["argv"][0] == "/usr/bin/touch"
        # It did fire (and the fix cleared it): act_first held the page back, not a quiet rule. (The alert
        # history is written by a queued sink: its rows may land a moment after the audit row.)
        wait_until(lambda: [t["kind"] for t in history(sock, "--rule", "fixable", "--alerts")["transitions"]]
                   == ["resolved", "firing"], 10, "the firing and resolved rows in the alert history")

        samples = settled(prom, after=time.time())  # FixNotHeld, had there been one, came before the row
        for sink in ("hook", "am"):
            assert figures(samples, sink) == QUIET, sink
        assert hook.snapshot() == []
        assert am.alerts() == [] and am.gone(alertname="fixable")
        assert (am.metric("alertmanager_alerts_received_total", status="firing", version="v2") or 0.0) == 0.0
        assert daemon.returncode is None


# 2 -------------------------------------------------------------------------------------------------------------


def test_act_first_a_fix_that_does_not_hold_pages_then_resolves(
    start_daemon: DaemonFactory, short_dir: Path, tmp_path: Path
) -> None:
    target = stamp(short_dir, "unfixable.stamp")
    key = write_secret(short_dir / "hook.key", SECRET)
    prom = short_dir / "prom"
    sock = short_dir / "control.sock"
    with RecordingReceiver() as hook, running_alertmanager(tmp_path) as am:
        noop = {"exec": {"argv": ["/bin/true"], "settle": "1s"}}
        daemon = start_daemon(config(
            prom, {"hook": hook_sink(hook.url, key), "am": am_sink(am.url)},
            {"unfixable": file_rule(target, actions=[noop], severity="critical")},
        ))
        daemon.wait_for_log("started")
        make_old(target)

        [page] = hook.wait_arrivals(lambda a: len(a) >= 1, 15, "the not_held page")
        body = check_signed(page.request, "not_held")
        assert page.status == 200
        assert (body["rule"], body["subject"], body["severity"]) == ("unfixable", str(target), "critical")
        assert body["summary"].startswith(
            f"unfixable: {target}: exec ran but the fix did not hold (still above 600 after 1s settle")
        assert body["detail"]["action"] == "exec" and "after 1s settle" in body["detail"]["reason"]
        assert body["ends_at"] is None and body["value"] >= 3600 and body["value_text"] == "1.0h"

        [alert] = wait_until(lambda: am.find(alertname="unfixable"), 5, "the alert in Alertmanager")
        assert alert["labels"] == {"alertname": "unfixable", "rule": "unfixable", "subject": str(target),
                                   "severity": "critical", "instance": HOST, "job": "watchdogd"}
        assert alert["annotations"]["watchdogd_kind"] == "not_held"
        assert alert["annotations"]["summary"] == body["summary"]
        assert alert["status"]["state"] == "active"
        [entry] = history(sock, "--rule", "unfixable", "--actions")["entries"]
        assert entry["detail"]["held"] is False
        assert entry["detail"]["verify"].startswith("still above 600 after 1s settle (value 36")

        make_fresh(target)  # the test fixes it itself
        arrivals = hook.wait_arrivals(lambda a: len(a) >= 2, 10, "the resolved page")
        resolved = check_signed(arrivals[1].request, "resolved")
        assert (resolved["rule"], resolved["subject"]) == ("unfixable", str(target))
        assert resolved["key"] != body["key"] and resolved["ends_at"] is not None
        assert resolved["summary"] == f"unfixable: {target} resolved"
        wait_until(lambda: am.gone(alertname="unfixable"), 5, "the alert to leave Alertmanager")

        def both_delivered() -> bool:
            samples = settled(prom, after=time.time())
            return all(figures(samples, sink) == {**QUIET, "delivered": 2} for sink in ("hook", "am"))

        wait_until(both_delivered, 10, "two deliveries per sink, nothing pending")
        assert len(hook.snapshot()) == 2  # one page, one resolve: nothing for the cooldown's skips
        assert daemon.returncode is None


def test_a_resolve_says_when_its_condition_began(start_daemon: DaemonFactory, short_dir: Path) -> None:
    # Found by this test: a resolve used to carry the moment it cleared as starts_at too; it now carries
    # when the condition began (the open alert's since), and a not_held page when the subject began firing.
    target = stamp(short_dir, "began.stamp")
    key = write_secret(short_dir / "hook.key", SECRET)
    with RecordingReceiver() as hook:
        start_daemon(config(None, {"hook": hook_sink(hook.url, key)},
                            {"began": file_rule(target, notify={"when": "firing"})}))
        make_old(target)
        [firing] = hook.wait_arrivals(lambda a: len(a) >= 1, 15, "the firing page")
        make_fresh(target)
        arrivals = hook.wait_arrivals(lambda a: len(a) >= 2, 10, "the resolved page")
        opened, closed = firing.request.json(), arrivals[1].request.json()
        assert closed["kind"] == "resolved"
        assert closed["starts_at"] == opened["starts_at"] < closed["ends_at"]


# 3 -------------------------------------------------------------------------------------------------------------


def test_when_firing_pages_on_firing_and_resolved_with_its_latency(
    start_daemon: DaemonFactory, short_dir: Path, tmp_path: Path
) -> None:
    target = stamp(short_dir, "alert-only.stamp")
    key = write_secret(short_dir / "hook.key", SECRET)
    sock = short_dir / "control.sock"
    with RecordingReceiver() as hook, running_alertmanager(tmp_path) as am:
        start_daemon(config(
            None, {"hook": hook_sink(hook.url, key), "am": am_sink(am.url)},
            {"backup": file_rule(target, notify={"when": "firing", "labels": {"team": "e2e"},
                                                 "annotations": {"runbook": "https://example.invalid/rb"}})},
        )).wait_for_log("started")
        make_old(target)
        [firing] = hook.wait_arrivals(lambda a: len(a) >= 1, 15, "the firing page")
        opened = check_signed(firing.request, "firing")
        assert opened["summary"] == f"backup: {target} firing: 1.0h above 10.0m"
        assert opened["labels"] == {"team": "e2e"} and opened["annotations"] == {"runbook": "https://example.invalid/rb"}
        [alert] = wait_until(lambda: am.find(alertname="backup"), 5, "the firing alert in Alertmanager")
        assert alert["labels"]["team"] == "e2e" and alert["annotations"]["runbook"] == "https://example.invalid/rb"
        assert alert["labels"]["subject"] == str(target) and alert["labels"]["instance"] == HOST

        make_fresh(target)
        arrivals = hook.wait_arrivals(lambda a: len(a) >= 2, 10, "the resolved page")
        closed = check_signed(arrivals[1].request, "resolved")
        wait_until(lambda: am.gone(alertname="backup"), 5, "the alert to leave Alertmanager")

        def both() -> list[dict[str, Any]] | None:
            found = history(sock, "--rule", "backup", "--alerts")["transitions"]
            return found if [t["kind"] for t in found] == ["resolved", "firing"] else None

        resolved_row, firing_row = wait_until(both, 10, "both rows in the alert history")
        # The page is about the very transition the history recorded.
        assert opened["starts_at"] == pytest.approx(firing_row["ts"], abs=1e-6)
        assert closed["ends_at"] == pytest.approx(resolved_row["ts"], abs=1e-6)
        to_firing = firing.at - firing_row["ts"]
        to_resolved = arrivals[1].at - resolved_row["ts"]
        print(f"\nlatency transition -> webhook: firing {to_firing * 1000:.1f} ms, "
              f"resolved {to_resolved * 1000:.1f} ms")
        assert 0 <= to_firing < 5 and 0 <= to_resolved < 5


# 4 -------------------------------------------------------------------------------------------------------------


def test_a_failing_receiver_gets_the_page_again_under_the_same_key(
    start_daemon: DaemonFactory, short_dir: Path
) -> None:
    target = stamp(short_dir, "flaky.stamp")
    key = write_secret(short_dir / "hook.key", SECRET)
    prom = short_dir / "prom"
    with RecordingReceiver(503, 503, 200) as hook:
        start_daemon(config(prom, {"hook": hook_sink(hook.url, key)}, {"flaky": file_rule(target)}))
        t0 = time.time()
        make_old(target)  # no actions: act_first pages on firing
        # Every state the metrics show until it is delivered: the third attempt comes 2 s after the second
        # (backoff 1, 2, 4 ... s) and the textfile is rewritten every second, so the state in between shows.
        states: list[dict[str, float]] = []

        def delivered() -> dict[str, float] | None:
            samples = read_metrics(prom)
            if not samples:
                return None
            now = figures(samples, "hook")
            if not states or {**states[-1], "oldest": 0} != {**now, "oldest": 0}:
                states.append(now)
            return now if now["delivered"] == 1 else None

        wait_until(delivered, 15, "delivered_total 1")
        arrivals = hook.wait_arrivals(lambda a: len(a) >= 3, 1, "the three attempts")
        final = wait_figures(prom, "hook", lambda f: f["pending"] == 0, 5, "an empty outbox")
        assert final == {**QUIET, "delivered": 1, "retried": 2}
        between = [f for f in states if f["retried"] == 2 and f["delivered"] == 0]
        assert between and between[0]["pending"] == 1 and between[0]["oldest"] > 0, states
        assert all(f["failed"] == 0 for f in states), states
        assert [a.status for a in arrivals] == [503, 503, 200]
        assert len({a.key for a in arrivals}) == 1 and len({a.request.body for a in arrivals}) == 1
        for arrival in arrivals:
            check_signed(arrival.request, "firing")
        gaps = [b.at - a.at for a, b in zip(arrivals, arrivals[1:])]
        print(f"\nretry gaps {gaps}, first attempt {arrivals[0].at - t0:.2f}s after the file went old")
        assert 0.9 <= gaps[0] < 4 and 1.9 <= gaps[1] < 5, gaps
        assert len(hook.snapshot()) == 3  # delivered once: no fourth attempt


# 5 -------------------------------------------------------------------------------------------------------------


def test_watchdogctl_test_notify(start_daemon: DaemonFactory, short_dir: Path, tmp_path: Path) -> None:
    target = stamp(short_dir, "calm.stamp")
    key = write_secret(short_dir / "hook.key", SECRET)
    dead_port = free_port()  # nothing listens there
    sock = str(short_dir / "control.sock")
    with RecordingReceiver() as hook, running_alertmanager(tmp_path) as am:
        sinks = {
            "hook": hook_sink(hook.url, key),
            "am": am_sink(am.url),
            "dead": {"webhook": {"url": f"http://127.0.0.1:{dead_port}/hook", "timeout": "1s"}},
        }
        start_daemon(config(None, sinks, {"calm": file_rule(target, above="1h")})).wait_for_log("started")

        done = ctl("--socket", sock, "test-notify", "hook")
        assert (done.returncode, done.stdout, done.stderr) == (0, "delivered a test notification to hook\n", "")
        [arrival] = hook.snapshot()
        body = check_signed(arrival.request, "test")
        assert body["rule"] == "watchdogd" and body["subject"] == "-" and body["key"].startswith("test-")
        assert body["summary"] == f"watchdogd test notification from {HOST}"

        done = ctl("--socket", sock, "test-notify", "am")
        assert done.returncode == 0 and done.stdout == "delivered a test notification to am\n"
        [alert] = wait_until(lambda: am.find(alertname="WatchdogdTest"), 5, "the test alert in Alertmanager")
        assert alert["labels"]["instance"] == HOST and alert["annotations"]["watchdogd_kind"] == "test"

        began = time.monotonic()
        down = ctl("--socket", sock, "test-notify", "dead")
        took = time.monotonic() - began
        assert down.returncode not in (0, None) and down.stdout == ""
        [line] = down.stderr.strip().splitlines()
        assert "'dead'" in line and f"127.0.0.1:{dead_port}" in line and "refused" in line, line
        assert took < 10

        unknown = ctl("--socket", sock, "test-notify", "nope")
        assert unknown.returncode not in (0, None) and unknown.stdout == ""
        [line] = unknown.stderr.strip().splitlines()
        assert "'nope'" in line and "am, dead, hook" in line, line
        assert "Traceback" not in down.stderr + unknown.stderr
        assert len(hook.snapshot()) == 1


# 6 -------------------------------------------------------------------------------------------------------------


def test_a_sink_with_a_missing_secret_file_fails_start_check_config_and_reload(
    start_daemon: DaemonFactory, short_dir: Path
) -> None:
    target = stamp(short_dir, "calm.stamp")
    key = write_secret(short_dir / "hook.key", SECRET)
    missing = short_dir / "no-such.key"
    sock = short_dir / "control.sock"
    with RecordingReceiver() as hook:
        good = config(None, {"hook": hook_sink(hook.url, key)}, {"calm": file_rule(target, above="1h")})
        bad = config(None, {"hook": hook_sink(hook.url, missing)},
                     {"calm": file_rule(target, above="1h"), "added": file_rule(target, above="2h")})

        # The start: the config error's exit code, one line naming the file and the sink's key.
        bad_path = write_config(short_dir, bad, name="bad.yaml")
        started = run([*WATCHDOGD, "--config", str(bad_path)], timeout=30)
        assert started.returncode == EXIT_CONFIG, started.stderr
        [line] = started.stderr.strip().splitlines()
        assert str(bad_path) in line and "notify.sinks.hook" in line and str(missing) in line, line
        assert not sock.exists()  # it stopped before opening anything

        checked = ctl("check-config", str(bad_path))
        assert checked.returncode != 0 and "OK" not in checked.stdout
        [line] = checked.stderr.strip().splitlines()
        assert str(bad_path) in line and "notify.sinks.hook" in line and str(missing) in line, line

        # A reload to such a config keeps the running one: its rules and its sink's key.
        daemon = start_daemon(good)
        daemon.wait_for_log("started")
        path = write_config(short_dir, bad)  # over the running daemon's own file
        assert path == daemon.config  # type: ignore[attr-defined]
        reloaded = ctl("--socket", str(sock), "reload")
        assert reloaded.returncode != 0 and "previous config keeps running" in reloaded.stderr
        assert "notify.sinks.hook" in reloaded.stderr and str(missing) in reloaded.stderr
        daemon.wait_for_log("reload failed, keeping the running config", timeout=10)  # that one's log line

        daemon.signal(signal.SIGHUP)
        line = daemon.wait_for_log("reload failed, keeping the running config", timeout=10)
        assert "notify.sinks.hook" in line and str(missing) in line, line

        assert daemon.returncode is None
        status = json.loads(ctl("--socket", str(sock), "status", "--json").stdout)
        assert [r["name"] for r in status["rules"]] == ["calm"]
        sent = ctl("--socket", str(sock), "test-notify", "hook")
        assert sent.returncode == 0, sent.stderr
        [arrival] = hook.snapshot()
        assert arrival.request.header("X-Watchdogd-Signature") == signature(SECRET, arrival.request.body)
