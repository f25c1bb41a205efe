"""The fleet storm, CI form: 200 simulated hosts race for one group (N=2) while the coordinator is hurt.

The harness (tests/support/fleet_storm.py) runs the hosts in 4 worker
processes, each host its own real coordinator, and judges the run from
what was recorded: act intervals, fencing tokens, and the coordinator's
own view polled every 50 ms. The long form (1,000 hosts, 300 s, no-quorum
too) is ``bench/bench_fleet.py --storm``.

etcd: a private 3-member cluster (faults kill and freeze its members, so it
is nobody else's), 60 s with a follower killed and restarted, the leader
killed and restarted, and the leader frozen (SIGSTOP) for 5 s. Redis: a
private server with an append-only file, 20 s, restarted once.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.redis.server import REDIS_SERVER, RedisServer
from tests.support.etcd_cluster import ETCD, EtcdCluster, running_etcd_cluster
from tests.support.fleet_storm import (
    ETCD_FAULTS,
    REDIS_DURABLE,
    Fault,
    HostProfile,
    StormReport,
    StormRun,
    StormSpec,
    analyse,
    failures,
    format_report,
    run_storm,
    spread,
)

pytestmark = pytest.mark.integration

HOSTS = 200
PROCESSES = 4  # the CI machine has 2 cores: 50 host threads per process keeps it sane
# Enough crashes that the crash path is always exercised, and a few long acts (3-8 s, over the 3 s TTL) that
# a fault may cut short ("lost": holding turned false mid-action).
PROFILE = HostProfile(crash_share=0.05, long_share=0.05)
REDIS_PROFILE = HostProfile(crash_share=0.15, long_share=0.05)


@pytest.fixture(scope="module")
def storm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """A cluster of our own: the storm kills and freezes its members."""
    if not ETCD.exists():
        pytest.fail(f"{ETCD} not found: install the Debian package etcd-server", pytrace=False)
    with running_etcd_cluster(tmp_path_factory.mktemp("storm-etcd")) as cluster:
        yield cluster


@pytest.fixture
def storm_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which(REDIS_SERVER) is None:
        pytest.fail(f"{REDIS_SERVER} not found: install the Debian package redis-server", pytrace=False)
    with RedisServer(tmp_path / "redis", extra=REDIS_DURABLE) as server:
        yield server


def _judge(report: StormReport, run: StormRun) -> None:
    print(format_report(report))
    assert failures(report) == [], f"again: python -m tests.support.fleet_storm report {run.workdir}"
    assert report.endings.get("released", 0) > 10, "too few clean runs for the storm to mean anything"
    assert report.endings.get("crashed", 0) > 0, "no host crashed mid-action: the leak check saw no crash"


def _grants_after_each_fault(report: StormReport) -> None:
    """Every fault happened, and the fleet got slots again after each one was undone."""
    faults = [row for row in report.phases if row.name != "baseline" and not row.name.startswith("after ")]
    assert faults, "no fault ran"
    for row in faults:
        assert row.error is None, f"{row.name} did not run: {row.error}"
    for row in report.phases:
        if row.name.startswith("after ") or row.name == "baseline":
            assert row.outcomes.get("granted", 0) > 0, f"no grant in phase {row.name}"


@pytest.mark.timeout(240)
def test_etcd_storm_with_member_faults(storm_cluster: EtcdCluster, tmp_path: Path) -> None:
    duration = 60.0
    spec = StormSpec(
        "etcd", tuple(storm_cluster.endpoints), HOSTS, duration, processes=PROCESSES, max_hosts=2,
        max_runs=10, per=5.0, lease_ttl=3.0, timeout=1.0, profile=PROFILE,
    )
    run = run_storm(
        spec, tmp_path, faults=spread(ETCD_FAULTS, duration, down=5.0), target=storm_cluster,
        healthy=lambda: storm_cluster.wait_healthy(30.0), cluster=storm_cluster,
    )
    report = analyse(run)
    _judge(report, run)
    _grants_after_each_fault(report)
    assert len(run.elections) >= 2, f"the leader kill and freeze caused {len(run.elections)} elections"


@pytest.mark.timeout(120)
def test_redis_storm_with_a_restart(storm_redis: RedisServer, tmp_path: Path) -> None:
    duration = 20.0
    spec = StormSpec(
        "redis", (storm_redis.url,), HOSTS, duration, processes=PROCESSES, max_hosts=2, max_runs=10, per=5.0,
        lease_ttl=3.0, timeout=1.0, profile=REDIS_PROFILE,
    )
    run = run_storm(spec, tmp_path, faults=[Fault("server-restart", 10.0, 1.0)], target=storm_redis)
    report = analyse(run)
    _judge(report, run)
    _grants_after_each_fault(report)
