"""The real ``watchdogd`` process against real PostgreSQL: the runbooks end to end."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import DaemonProcess, run_once, write_config
from tests.integration.postgres.pgenv import Cluster, PgEnv, free_port, wait_until
from tests.integration.postgres.sessions import busy
from watchdogd.engine.state import StateStore
from watchdogd.model import Decision

pytestmark = pytest.mark.integration


def history(tmp_path: Path, rule: str) -> list:  # type: ignore[type-arg]
    with StateStore(tmp_path / "state" / "state.db", time.time) as store:
        return store.history(rule=rule)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:  # noqa: S310
        return response.read().decode()


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_for_rules(daemon: DaemonProcess, message: str, rules: list[str], timeout: float = 30) -> dict[str, str]:
    """The first ``message`` line of each rule, in whatever order the rules' jobs log them."""
    seen: dict[str, str] = {}

    def match(line: str) -> bool:
        fields = line.split()
        for rule in rules:
            if message in line and f"rule={rule}" in fields:
                seen.setdefault(rule, line)
        return len(seen) == len(rules)

    daemon.wait_for(match, timeout)
    return seen


def wait_for_events(
    daemon: DaemonProcess, wanted: set[tuple[str, str]], timeout: float = 30
) -> dict[tuple[str, str], str]:
    """The first line of each (message, rule) in ``wanted``, in whatever order the rules' jobs log them."""
    seen: dict[tuple[str, str], str] = {}

    def match(line: str) -> bool:
        fields = line.split()
        for message, rule in wanted:
            if message in line and f"rule={rule}" in fields:
                seen.setdefault((message, rule), line)
        return len(seen) == len(wanted)

    daemon.wait_for(match, timeout)
    return seen


def test_daemon_terminates_exactly_the_connections_idle_too_long(pg: PgEnv, tmp_path: Path) -> None:
    watchdog = pg.role("watchdog", "pg_monitor", "pg_signal_backend")
    app, other, sup = pg.role("app"), pg.role("other"), pg.role("sup", superuser=True)
    stale = [pg.connect(app), pg.connect(app)]
    excluded = pg.connect(other)
    superuser = pg.connect(sup)
    active = pg.connect(app)
    port = free_port()
    config = write_config(tmp_path, f"""\
        interval: 1s
        listen: 127.0.0.1:{port}
        targets:
          postgres:
            main: {{dsn: "{pg.dsn(watchdog)}"}}
        rules:
          pg-idle:
            probe: postgres.idle
            params: {{users: ["{pg.prefix}*"], exclude_users: ["{other}"]}}
            above: 2s
            actions:
              - postgres.terminate: {{max_per_run: 10}}
    """)
    stale_pids = set(pg.pids(*stale))
    kept_pids = set(pg.pids(excluded, superuser, active))
    with busy(pg, active, "SELECT pg_sleep(60)"), DaemonProcess(config) as daemon:
        daemon.wait_for_log("action done", rule="pg-idle", action="postgres.terminate", timeout=30)
        wait_until(lambda: not any(pg.alive(pid) for pid in stale_pids), 10, "the stale backends to exit")
        # Every kept backend has been idle (or running) past 2s by now, so it was measured and spared.
        wait_until(lambda: metric(scrape(port), "watchdogd_probe_success", rule="pg-idle") == 1, 10, "a scrape")
        metrics = scrape(port)
        assert daemon.returncode is None
    assert all(pg.alive(pid) for pid in kept_pids)
    rows = [e for e in history(tmp_path, "pg-idle") if e.decision is Decision.RAN]
    assert {e.subject for e in rows} == {f"pid:{pid}" for pid in stale_pids}
    assert {e.result for e in rows} == {"ok"}
    runs = len({e.ts for e in rows})
    assert metric(metrics, "watchdogd_actions_total", rule="pg-idle", action="postgres.terminate",
                  result="ok") == runs
    for entry in rows:
        [item] = entry.detail["items"]
        assert item["pid"] == int(entry.subject.removeprefix("pid:"))
        assert (item["user"], item["database"], item["client"], item["check"]) == (app, "postgres", "127.0.0.1",
                                                                                  "idle")
        assert item["seconds"] > 2
        assert item["detail"].startswith("terminated")
        assert entry.value_before is not None and entry.value_before > 2


def test_missing_pg_signal_backend_is_a_failed_action_not_a_crash(pg: PgEnv, tmp_path: Path) -> None:
    weak = pg.role("weak", "pg_monitor")
    victim = pg.connect(pg.role("app"))
    config = write_config(tmp_path, f"""\
        targets:
          postgres:
            main: {{dsn: "{pg.dsn(weak)}"}}
        rules:
          pg-idle:
            probe: postgres.idle
            params: {{users: ["{pg.prefix}app"]}}
            above: 0s
            actions:
              - postgres.terminate: {{}}
    """)
    result = run_once(config)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"postgres.terminate pid:{victim.info.backend_pid}: ran failed" in result.stdout
    assert "action failed" in result.stderr and "permission denied" in result.stderr
    [entry] = history(tmp_path, "pg-idle")
    assert entry.result == "failed"
    assert entry.error is not None and entry.error.startswith(f"permission denied: role {weak} needs pg_signal_backend")
    assert pg.alive(victim.info.backend_pid)


def test_postgres_stopped_mid_run_probes_down_daemon_up_then_recovers(cluster: Cluster, tmp_path: Path) -> None:
    config = write_config(tmp_path, f"""\
        interval: 1s
        targets:
          postgres:
            main: {{dsn: "{cluster.dsn()}", max_backoff: 2s}}
        rules:
          pg-up:
            probe: postgres.up
            above: 5s
          pg-idle:
            probe: postgres.idle
            above: 1h
          pg-conns:
            probe: postgres.connections
            above: 0
    """)
    with DaemonProcess(config) as daemon:
        daemon.wait_for_log("firing", rule="pg-conns", timeout=20)  # a cycle that reached the server
        cluster.stop()
        # postgres.up is an availability probe: the outage is its finding (on_down: fire), not a down probe.
        down = wait_for_events(daemon, {("probe down", "pg-idle"), ("probe down", "pg-conns"),
                                        ("target unreachable", "pg-up"), ("firing", "pg-up")})
        # The backoff is capped at half the interval (retry_within), so the waits are fractions of a second.
        idle = down[("probe down", "pg-idle")]
        assert re.search(r'error="(connection lost: .*|reconnecting in [\d.]+s: .*)"', idle), down
        assert "value=inf" in down[("firing", "pg-up")]
        assert daemon.returncode is None
        cluster.start()
        wait_for_rules(daemon, "probe up again", ["pg-up", "pg-idle", "pg-conns"])
        assert daemon.returncode is None
