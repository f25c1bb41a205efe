"""Fixtures for the fleet coordinators: a real 3-member etcd cluster on loopback, a fresh key prefix per test.

The cluster is started once per module (about 3 s) and shared; a test that
kills, freezes or restarts members uses ``etcd_cluster`` and gets every
member back (restarted, thawed, a leader agreed) before the next test.
Each test works under its own random key prefix, which is isolation enough.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.interfaces.conftest import short_dir, start_daemon  # noqa: F401 (the daemon tests' fixtures)
from tests.integration.redis.conftest import (  # noqa: F401 (private redis-servers, fail loudly without one)
    _redis_server_binary,
    admin,
    make_server,
    server,
)
from tests.support.etcd_cluster import ETCD, EtcdCluster, running_etcd_cluster
from watchdogd.fleet.etcd import EtcdCoordinator


@pytest.fixture(scope="module")
def etcd_cluster_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    if not ETCD.exists():
        pytest.fail(f"{ETCD} not found: install the Debian package etcd-server", pytrace=False)
    with running_etcd_cluster(Path(tmp_path_factory.mktemp("etcd"))) as cluster:
        yield cluster


@pytest.fixture
def etcd_cluster(etcd_cluster_module: EtcdCluster) -> Iterator[EtcdCluster]:
    """The module's cluster, made whole again after the test (killed members restarted, frozen ones thawed)."""
    yield etcd_cluster_module
    etcd_cluster_module.restore()


@pytest.fixture
def fleet_prefix() -> str:
    return f"/watchdogd-test/{uuid.uuid4().hex[:12]}/"


@pytest.fixture
def make_etcd_coordinator(etcd_cluster: EtcdCluster, fleet_prefix: str) -> Iterator[Callable[..., EtcdCoordinator]]:
    """``make_etcd_coordinator("web1", lease_ttl=3)``: an EtcdCoordinator on the cluster, closed at teardown."""
    made: list[EtcdCoordinator] = []

    def make(host: str, *, endpoints: list[str] | None = None, **kwargs: Any) -> EtcdCoordinator:
        kwargs.setdefault("prefix", fleet_prefix)
        kwargs.setdefault("lease_ttl", 3.0)
        kwargs.setdefault("timeout", 1.0)
        coordinator = EtcdCoordinator(endpoints or etcd_cluster.endpoints, host, **kwargs)
        made.append(coordinator)
        return coordinator

    yield make
    for coordinator in made:
        coordinator.close()
