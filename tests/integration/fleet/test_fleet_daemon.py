"""The fleet budget end to end: real daemons on a real 3-member etcd cluster, acting one at a time.

Two daemons stand for two hosts (``fleet.host``: h1, h2) sharing a group
with ``max_hosts: 1``. Each has a ``host.file_age`` rule on a file of its
own (made old to fire) whose ``exec`` action appends "start"/"end" lines
with CLOCK_MONOTONIC stamps (one clock for every process on this machine)
to one shared log, takes a second, then touches the file (the fix). The
proof is the log: the two runs never overlap, and the audit rows carry the
fencing tokens that allowed them, in grant order.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ctl, free_port, wait_until
from tests.integration.faults.notify_support import make_old, read_metrics, sample
from tests.integration.interfaces.conftest import DaemonFactory
from tests.support.etcd_cluster import EtcdCluster

pytestmark = pytest.mark.integration

ACT = """\
import os, sys, time
host, log, target = sys.argv[1], sys.argv[2], sys.argv[3]
with open(log, "a") as f:
    f.write(f"start {host} {time.monotonic()}\\n")
time.sleep(1.0)
with open(log, "a") as f:
    f.write(f"end {host} {time.monotonic()}\\n")
os.utime(target)
"""


def host_config(
    short_dir: Path, host: str, endpoints: list[str], prefix: str, *, on_unavailable: str = "skip", **extra: Any
) -> str:
    target = short_dir / f"{host}.stamp"
    target.touch()
    make_old(target)
    (short_dir / "act.py").write_text(ACT)
    state = short_dir / host
    prom = short_dir / f"{host}-prom"
    prom.mkdir(exist_ok=True)
    doc: dict[str, Any] = {
        "state_dir": str(state / "state"),
        "control_socket": str(state / "control.sock"),
        "textfile_dir": str(prom),
        "interval": "1s",
        "fleet": {
            "host": host,
            "coordinator": {"etcd": {"endpoints": endpoints, "prefix": prefix}, "lease_ttl": "6s", "timeout": "1s"},
            "groups": {"restarts": {"max_hosts": 1, "rules": ["stale"], "on_unavailable": on_unavailable}},
        },
        "rules": {
            "stale": {
                "probe": "host.file_age",
                "params": {"path": str(target)},
                "above": "10m",
                "every": "0.5s",
                "cooldown": "1m",
                "actions": [
                    {"exec": {"argv": [sys.executable, str(short_dir / "act.py"), host, str(short_dir / "acts.log"),
                                       str(target)], "timeout": "10s", "settle": "1s"}}
                ],
            }
        },
        **extra,
    }
    state.mkdir(exist_ok=True)
    return yaml.safe_dump(doc)


def acts(log: Path) -> list[tuple[str, str, float]]:
    if not log.exists():
        return []
    return [(kind, host, float(t)) for kind, host, t in (line.split() for line in log.read_text().splitlines())]


def history(sock: Path) -> list[dict[str, Any]]:
    out = ctl("--socket", str(sock), "history", "--actions", "--json")
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout)["entries"])


def test_two_hosts_in_a_group_of_one_act_one_after_the_other(
    etcd_cluster: EtcdCluster, fleet_prefix: str, short_dir: Path, start_daemon: DaemonFactory
) -> None:
    log = short_dir / "acts.log"
    daemons = {
        host: start_daemon(host_config(short_dir, host, etcd_cluster.endpoints, fleet_prefix), name=f"{host}.yaml")
        for host in ("h1", "h2")
    }
    for daemon in daemons.values():
        daemon.wait_for_log("started")
    done = wait_until(lambda: (a := acts(log)) and sum(k == "end" for k, _, _ in a) == 2 and a, timeout=40,
                      what="both hosts to act")
    # The runs never overlap: start, end, start, end, each end by the host that started.
    assert [k for k, _, _ in done] == ["start", "end", "start", "end"], done
    assert done[0][1] == done[1][1] and done[2][1] == done[3][1] and done[0][1] != done[2][1]
    assert done[1][2] <= done[2][2]

    first, second = done[0][1], done[2][1]
    rows = {host: history(short_dir / host / "control.sock") for host in daemons}
    ran = {host: [r for r in rows[host] if r["decision"] == "ran"] for host in daemons}
    tokens = {host: ran[host][0]["detail"]["fleet"]["token"] for host in daemons}
    assert tokens[first] < tokens[second]  # the fencing tokens follow the grant order
    assert all(r["detail"]["fleet"]["group"] == "restarts" for host in daemons for r in ran[host])
    waited = [r for r in rows[second] if r["decision"] == "skipped_fleet"]
    assert waited, rows[second]  # the second host was told the group was full, and by whom
    assert waited[0]["detail"]["fleet"]["holders"][0]["host"] == first

    out = ctl("--socket", str(short_dir / second / "control.sock"), "fleet", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    group = doc["groups"][0]
    assert doc["coordinator"] == "etcd" and doc["host"] == second
    assert group["name"] == "restarts" and group["max_hosts"] == 1 and group["holders"] == []
    assert group["answers"]["granted"] == 1 and group["answers"]["full"] >= 1
    text = ctl("--socket", str(short_dir / second / "control.sock"), "fleet")
    assert text.returncode == 0 and "restarts: slots 0/1" in text.stdout, text.stdout

    # The textfile is rewritten after each cycle: wait for one written after the run gave its slot back.
    samples = wait_until(
        lambda: (s := read_metrics(short_dir / f"{second}-prom"))
        and (sample(s, "watchdogd_fleet_acquires_total", group="restarts", result="granted") or 0) >= 1
        and sample(s, "watchdogd_fleet_slots_held", group="restarts") == 0
        and s,
        timeout=10, what="fleet metrics in the textfile after the run",
    )
    assert (sample(samples, "watchdogd_fleet_acquires_total", group="restarts", result="full") or 0) >= 1
    assert sample(samples, "watchdogd_fleet_info", coordinator="etcd", host=second) == 1


def test_an_unreachable_coordinator_skips_or_falls_back_as_the_group_says(
    fleet_prefix: str, short_dir: Path, start_daemon: DaemonFactory
) -> None:
    nowhere = [f"http://127.0.0.1:{free_port()}"]
    closed = start_daemon(host_config(short_dir, "h1", nowhere, fleet_prefix), name="h1.yaml")
    closed.wait_for_log("started")
    sock = short_dir / "h1" / "control.sock"
    skipped = wait_until(
        lambda: [r for r in history(sock) if r["decision"] == "skipped_fleet_unavailable"], timeout=20,
        what="a skip for an unavailable fleet budget",
    )
    assert "fleet budget unavailable" in skipped[0]["detail"]["fleet"]["detail"]
    assert nowhere[0].split("//")[1] in skipped[0]["detail"]["fleet"]["detail"]
    assert acts(short_dir / "acts.log") == []  # fail closed: nothing ran
    closed.stop()

    start_daemon(host_config(short_dir, "h2", nowhere, fleet_prefix, on_unavailable="host"), name="h2.yaml")
    done = wait_until(lambda: [a for a in acts(short_dir / "acts.log") if a[0] == "end"], timeout=20,
                      what="the fallback run")
    assert done[0][1] == "h2"
    ran = [r for r in history(short_dir / "h2" / "control.sock") if r["decision"] == "ran"]
    assert ran[0]["detail"]["fleet"]["fallback"] == "host"
