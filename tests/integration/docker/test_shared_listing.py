"""One container listing per engine per cycle, on the real engine (issue 17, Must 2)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_until
from tests.integration.docker.dockertest import RUN_LABEL, Containers
from watchdogd.clients import close_clients, open_clients
from watchdogd.config import parse_config
from watchdogd.engine.engine import Engine
from watchdogd.engine.state import StateStore
from watchdogd.families.docker.target import DockerEngine

pytestmark = pytest.mark.integration


def count_listings(engine: DockerEngine) -> list[dict[str, Any]]:
    """Wrap the engine's ``containers``: the filters of each ``GET /containers/json`` actually sent."""
    sent: list[dict[str, Any]] = []
    containers = engine.containers

    def counting(filters: Any, *, all_states: bool = True) -> Any:
        sent.append(dict(filters))
        return containers(filters, all_states=all_states)

    engine.containers = counting  # type: ignore[method-assign]
    return sent


def test_the_container_rules_of_one_engine_cycle_share_one_listing(
    tmp_path: Path, docker_url: str, containers: Containers
) -> None:
    crashed = containers.create("crashed", ["sh", "-c", "exit 3"])
    running = containers.create("up", ["sleep", "600"], labels={"tier": "web"})
    containers.wait_exited(crashed)
    wait_until(lambda: containers.state(running)["Running"], what="the container to run")
    mine = f"{RUN_LABEL}={containers.run_id}"
    text = f"""\
state_dir: {tmp_path}/state
targets:
  docker:
    local: {{url: "{docker_url}"}}
rules:
  crashes:
    probe: docker.containers
    params: {{names: ["{containers.prefix}-*"], labels: ["{mine}"]}}
    above: 0s
  web:
    probe: docker.containers
    params: {{names: ["{containers.prefix}-*"], labels: ["{mine}", "tier=web"]}}
    above: 0s
  memory:
    probe: docker.container_memory
    params: {{names: ["{containers.prefix}-*"], labels: ["{mine}"], include_unlimited: true}}
    above: 99
"""
    config = parse_config(text, tmp_path / "watchdogd.yaml")
    clients = open_clients(config)
    engine = clients[("docker", "local")]
    assert isinstance(engine, DockerEngine)
    store = StateStore(tmp_path / "state.db", time.time)
    rules = Engine(config, store, clients, time.time, grace=False)
    try:
        # The first cycle starts the event follower, whose replay rightly ends the first listing's reuse.
        rules.run_rule("crashes")
        wait_until(lambda: engine.events.synced, what="the event follower to be live")
        engine._listing.forget()  # as after max_age: the next cycle reads afresh
        sent = count_listings(engine)
        reports = {rule: rules.run_rule(rule) for rule in ("crashes", "web", "memory")}  # one cycle
        assert all(r.error is None for r in reports.values()), reports
        assert sent == [{}]  # one unfiltered listing served all three rules
        assert engine.listing_reads == 2  # the warm-up's and this cycle's
        assert reports["crashes"].firing == (containers.name("crashed"),)
        assert reports["web"].firing == ()  # selected by its label: only the running one, which is fine
    finally:
        rules.close()
        store.close()
        close_clients(clients, config.registry)
