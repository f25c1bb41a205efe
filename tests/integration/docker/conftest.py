"""Fixtures for the Docker family: a real engine (started if needed), the busybox image, labelled containers.

The engine is shared with other test sessions on this host, so nothing here
touches objects it did not create: everything carries the session's
``watchdogd-test.run`` label, and teardown removes exactly those.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest

from tests.integration.docker.dockertest import RUN_LABEL, Containers
from tests.support.dockerd import DockerdError, ensure_busybox_image, ensure_dockerd
from watchdogd.families.docker.target import DockerEngine, DockerTargetParams


@pytest.fixture(scope="session")
def docker_url() -> str:
    try:
        return ensure_dockerd()
    except DockerdError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def busybox(docker_url: str) -> str:
    try:
        return ensure_busybox_image()
    except DockerdError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def api(docker_url: str, run_id: str) -> Iterator[docker.APIClient]:
    """The test's own client (not watchdogd's); sweeps anything of this session left behind at the end."""
    client = docker.APIClient(base_url=docker_url, version="auto", timeout=60)
    try:
        yield client
    finally:
        for row in client.containers(all=True, filters={"label": f"{RUN_LABEL}={run_id}"}):
            try:
                client.remove_container(row["Id"], force=True, v=True)
            except docker.errors.NotFound:
                pass
        client.close()


@pytest.fixture
def containers(api: docker.APIClient, busybox: str, run_id: str) -> Iterator[Containers]:
    made = Containers(api, busybox, run_id)
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture
def make_engine(docker_url: str) -> Iterator[Callable[..., DockerEngine]]:
    """watchdogd's own target client(s); each closed (event thread stopped) at teardown."""
    engines: list[DockerEngine] = []

    def make(**params: Any) -> DockerEngine:
        engine = DockerEngine(DockerTargetParams(**{"url": docker_url, **params}))
        engines.append(engine)
        return engine

    try:
        yield make
    finally:
        for engine in engines:
            engine.close()


@pytest.fixture
def engine(make_engine: Callable[..., DockerEngine]) -> DockerEngine:
    return make_engine()
