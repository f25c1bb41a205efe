"""Fixtures for the outage tests: services of the test's own that the test kills, and the daemon watching them.

Every service here is made for one test and removed at teardown whatever
happened (also the copy watchdogd itself started again): an own PostgreSQL
cluster on a free port, an own redis-server, a hanging HTTP endpoint,
labelled busybox containers, a systemd-as-PID-1 container.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.integration.docker.dockertest import RUN_LABEL, Containers
from tests.integration.outages.services import HangingHttpServer, OwnCluster, OwnRedis
from tests.integration.outages.watch import Watched
from tests.integration.redis.server import REDIS_SERVER
from tests.support.dockerd import BUSYBOX_TAG, DockerdError, ensure_busybox_image, ensure_dockerd
from tests.support.systemd_container import booted_watchdogd_box


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[Callable[[str], Watched]]:
    """``with watched(yaml_body) as w:``: the daemon is stopped at teardown even if the test fails."""
    made: list[Watched] = []

    def make(body: str) -> Watched:
        w = Watched(tmp_path, body)
        made.append(w)
        return w

    try:
        yield make
    finally:
        for w in made:
            w.__exit__()


@pytest.fixture
def own_cluster() -> Iterator[OwnCluster]:
    """A running throwaway PostgreSQL on a free port (never the shared 5432), destroyed at teardown."""
    cluster = OwnCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """A running private redis-server (never the shared 6379); whichever copy runs is killed at teardown."""
    if shutil.which(REDIS_SERVER) is None:
        pytest.fail(f"redis-server not found at {REDIS_SERVER}: install the redis-server package", pytrace=False)
    server = OwnRedis(tmp_path / "redis")
    try:
        server.start()
        yield server
    finally:
        server.close()  # SIGCONT first, so a frozen server dies too


@pytest.fixture
def hanging_http(tmp_path: Path) -> Iterator[HangingHttpServer]:
    server = HangingHttpServer(tmp_path / "healthy")
    server.heal()
    try:
        yield server.start()
    finally:
        server.close()


# --------------------------------------------------------------------------- docker


@pytest.fixture(scope="session")
def docker_run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def docker_api(docker_run_id: str) -> Iterator[Any]:
    """The test's own Docker client; at the end, removes any container this session labelled and left behind."""
    try:
        url = ensure_dockerd()
        ensure_busybox_image()
    except DockerdError as exc:
        pytest.fail(str(exc), pytrace=False)
    client = docker.APIClient(base_url=url, version="auto", timeout=60)
    try:
        yield client
    finally:
        for row in client.containers(all=True, filters={"label": f"{RUN_LABEL}={docker_run_id}"}):
            try:
                client.remove_container(row["Id"], force=True, v=True)
            except docker.errors.NotFound:
                pass
        client.close()


@pytest.fixture
def containers(docker_api: Any, docker_run_id: str) -> Iterator[Any]:
    """``dockertest.Containers``: labelled busybox containers, every one removed at teardown."""
    made = Containers(docker_api, BUSYBOX_TAG, docker_run_id)
    try:
        yield made
    finally:
        made.cleanup()


# --------------------------------------------------------------------------- systemd


@pytest.fixture(scope="module")
def systemd_box() -> Iterator[Any]:
    """A booted Debian 12 container, systemd as PID 1, this tree's watchdogd in /opt/watchdogd (cached image)."""
    with booted_watchdogd_box() as box:
        yield box
