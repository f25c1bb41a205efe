"""PostgreSQL outage: an own cluster's postmaster is killed; ``postgres.up`` fires, ``exec`` starts it again,
the fix is verified, and the rule that depends on it waits instead of raising its own alarm.

The cluster is a throwaway one (``pgenv.Cluster``, initdb on a free port),
never the shared server on 5432.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import ctl, run_once, write_config
from tests.integration.outages.services import OwnCluster
from tests.integration.outages.watch import Watched, break_and_heal, history, number

pytestmark = pytest.mark.integration

INTERVAL = 1.0
FOR = 2.0  # above the ~1 s this host's init takes to reap a killed postmaster (pg_ctl start needs it gone)
SLACK = 0.5  # scheduling jitter (0.1 s) and status polling (50 ms); the figures are printed


def targets(cluster: OwnCluster) -> str:
    return f"""\
        targets:
          postgres:
            own: {{dsn: "host=127.0.0.1 port={cluster.port} user=postgres dbname=postgres", connect_timeout: 1s}}
        """


def healing_config(cluster: OwnCluster) -> str:
    argv = json.dumps(cluster.start_argv())
    return f"""\
        interval: 1s
        {targets(cluster).strip()}
        rules:
          pg-up:
            probe: postgres.up
            above: 2s
            for: {FOR:g}s
            severity: critical
            cooldown: 30s
            max_actions: {{count: 3, per: 1h}}
            actions:
              - exec: {{argv: {argv}, timeout: 40s, settle: 15s}}
          pg-conn:
            probe: postgres.connections
            above: 95
            severity: warning
            depends_on: pg-up
        """


def test_killed_postmaster_fires_is_restarted_once_and_dependents_wait(
    own_cluster: OwnCluster, watched: Callable[[str], Watched]
) -> None:
    with watched(healing_config(own_cluster)) as w:
        tl = w.timeline
        tl.wait("pg-up", lambda s: s.state == "ok" and s.real_value, 20, what="pg-up to measure the cluster")
        tl.wait("pg-conn", lambda s: s.state == "ok" and s.real_value, 20, what="pg-conn to measure the cluster")

        out = break_and_heal(w, "pg-up", own_cluster.kill_postmaster, own_cluster.accepting, dependent="pg-conn")
        ran = out.action
        print(f"\noutage postgres: killed -> firing {out.to_firing:.2f}s (for {FOR:g}s + interval {INTERVAL:g}s);"
              f" -> restart finished {out.to_action_finished:.2f}s; accepting again -> pg-up ok "
              f"{out.back_to_ok:.2f}s, -> pg-conn real values {out.back_to_dependent_ok:.2f}s; "
              f"verify settled after {ran['detail'].get('settled_after')}s\n  killed at {out.broken % 100:.2f}, "
              f"accepting at {out.back % 100:.2f}; pg-up: {tl.story('pg-up')}\n  pg-conn: {tl.story('pg-conn')}")

        # Fired on the outage itself, within `for` + one interval.
        assert out.to_firing <= FOR + INTERVAL + SLACK, tl.story("pg-up")
        # The restart: one run, ok, verified as held, on the outage value.
        assert ran["result"] == "ok", ran
        assert ran["detail"]["held"] is True, ran
        assert isinstance(ran["detail"]["settled_after"], (int, float)), ran
        assert number(ran["value_before"]) == float("inf"), ran
        assert own_cluster.accepting()
        # One outage, one alert: the dependent rule waited on pg-up, never reported its own "down".
        during = [s for s in tl.of("pg-conn") if out.broken <= s.t <= out.back]
        assert any(s.state == "waiting" and s.waiting_on == ("pg-up",) for s in during), tl.story("pg-conn")
        assert not [s for s in tl.of("pg-conn") if s.t >= out.broken and s.state in ("down", "firing")], (
            tl.story("pg-conn")
        )
        # Recovery within one interval of the server accepting again.
        assert out.back_to_dependent_ok is not None
        assert out.back_to_dependent_ok <= INTERVAL + SLACK, tl.story("pg-conn")

        # The CLI's history shows the same single restart, and nothing else acted.
        shown = ctl("--socket", str(w.socket), "history", "--rule", "pg-up", "--json")
        assert shown.returncode == 0, shown.stderr
        entries = json.loads(shown.stdout)
        entries = entries["entries"] if isinstance(entries, dict) else entries
        runs = [e for e in entries if e["decision"] == "ran"]
        assert [(e["action"], e["result"]) for e in runs] == [("exec", "ok")], entries
        assert not [e for e in history(w.socket) if e["rule"] == "pg-conn"]
        # All clear again: Nagios says OK.
        check = ctl("--socket", str(w.socket), "check")
        assert check.returncode == 0, check.stdout + check.stderr


def alert_config(cluster: OwnCluster, severity: str) -> str:
    return f"""\
        interval: 1s
        {targets(cluster).strip()}
        rules:
          pg-up:
            probe: postgres.up
            above: 2s
            severity: {severity}
          pg-conn:
            probe: postgres.connections
            above: 95
            severity: warning
            depends_on: pg-up
        """


def test_stopped_cluster_once_exit_codes_and_check_by_severity(
    own_cluster: OwnCluster, tmp_path: Path, watched: Callable[[str], Watched]
) -> None:
    for name in ("up", "down"):
        (tmp_path / name).mkdir()
    up = run_once(write_config(tmp_path / "up", alert_config(own_cluster, "critical")))
    assert up.returncode == 0, up.stdout + up.stderr
    assert "pg-up: ok" in up.stdout, up.stdout

    own_cluster.stop("immediate")
    once = run_once(write_config(tmp_path / "down", alert_config(own_cluster, "critical")))
    assert once.returncode == 1, once.stdout + once.stderr
    lines = once.stdout.splitlines()
    assert any(line.startswith("pg-up: firing") for line in lines), once.stdout
    assert any(line.startswith("pg-conn: waiting") for line in lines), once.stdout
    assert lines[-1] == "2 rules: 1 firing, 1 waiting; firing: pg-up", once.stdout

    for severity, code, word in (("critical", 2, "CRITICAL"), ("warning", 1, "WARNING")):
        with watched(alert_config(own_cluster, severity)) as w:
            w.timeline.wait("pg-up", lambda s: s.state == "firing", 20)
            w.timeline.wait("pg-conn", lambda s: s.state == "waiting", 20)
            check = ctl("--socket", str(w.socket), "check")
            status = ctl("--socket", str(w.socket), "status", "--json")
        assert check.returncode == code, (severity, check.stdout, check.stderr)
        assert check.stdout.startswith(f"WATCHDOGD {word}"), check.stdout
        assert "pg-up" in check.stdout, check.stdout
        doc = json.loads(status.stdout)
        assert doc["summary"]["firing"] == ["pg-up"], doc["summary"]
        assert "pg-conn" not in doc["summary"]["down"], doc["summary"]
        conn = next(r for r in doc["rules"] if r["name"] == "pg-conn")
        assert conn["state"] == "waiting" and conn["waiting_on"] == ["pg-up"], conn
