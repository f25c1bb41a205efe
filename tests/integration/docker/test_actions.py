"""``docker.start``/``docker.restart`` on real containers: what they do, what they leave alone, dry-run."""

from __future__ import annotations

import time
from pathlib import Path

import docker.types
import pytest

from tests.helpers import run_once, write_config
from tests.integration.docker.dockertest import Containers, health, wait_until
from watchdogd.engine.state import StateStore
from watchdogd.families.docker.actions import (
    ContainerAction,
    RestartParams,
    StartParams,
    _restart_factory,
    _start_factory,
)
from watchdogd.families.docker.probes import ContainersParams, ContainersProbe
from watchdogd.families.docker.target import DockerEngine
from watchdogd.model import Decision, Reading

pytestmark = pytest.mark.integration


def start_action(engine: DockerEngine, **params: float) -> ContainerAction:
    return _start_factory(StartParams(**params), engine, time.time)


def restart_action(engine: DockerEngine, **params: float) -> ContainerAction:
    return _restart_factory(RestartParams(**params), engine, time.time)


def firing(engine: DockerEngine, containers: Containers, short: str) -> Reading:
    probe = ContainersProbe(ContainersParams(names=[containers.name(short)]), engine, time.time)
    [reading] = probe.measure()
    assert reading.value > 0, reading
    return reading


def test_unhealthy_container_is_restarted_by_the_daemon(
    tmp_path: Path, docker_url: str, containers: Containers
) -> None:
    cid = containers.create("sick", ["sleep", "600"], healthcheck=health("exit 1"))
    before = wait_until(
        lambda: (s := containers.state(cid)).get("Health", {}).get("Status") == "unhealthy" and s,
        what="the container to turn unhealthy",
    )
    config = write_config(
        tmp_path,
        f"""\
        targets:
          docker:
            local: {{url: "{docker_url}"}}
        rules:
          unhealthy:
            probe: docker.containers
            params: {{names: ["{containers.name('sick')}"], conditions: [unhealthy]}}
            above: 0s
            actions:
              - docker.restart: {{stop_timeout: 1s}}
        """,
    )

    result = run_once(config)

    # 0: the re-probe after the restart found it fine, so the rule ends the run resolved.
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"firing rule=unhealthy subject={containers.name('sick')}" in result.stderr
    assert f"docker.restart {containers.name('sick')}: ran ok" in result.stdout
    after = containers.state(cid)
    assert after["Running"] and after["StartedAt"] != before["StartedAt"]
    [entry] = StateStore(tmp_path / "state" / "state.db", time.time).history(rule="unhealthy")
    assert (entry.decision, entry.result) == (Decision.RAN, "ok")
    [item] = entry.detail["items"]
    assert (item["id"], item["condition"], item["state_before"]) == (cid, "unhealthy", "running")


def test_dry_run_inspects_but_changes_nothing(engine: DockerEngine, containers: Containers) -> None:
    cid = containers.create("crash", ["sh", "-c", "exit 3"])
    containers.wait_exited(cid)
    reading = firing(engine, containers, "crash")

    result = start_action(engine).run([reading], dry_run=True)

    assert result.ok
    [item] = result.items
    assert item.subject == containers.name("crash")
    assert item.detail == "would start (exited with 3)"
    assert item.info["id"] == cid
    assert containers.state(cid)["Status"] == "exited"


def test_start_and_restart_do_their_job(engine: DockerEngine, containers: Containers) -> None:
    crashed = containers.create("crash", ["sh", "-c", "test -f /ran && exec sleep 600; touch /ran; exit 3"])
    containers.wait_exited(crashed)
    reading = firing(engine, containers, "crash")

    started = start_action(engine).run([reading], dry_run=False)

    assert started.ok, started
    assert started.items[0].detail == "started (was exited with 3)"
    assert containers.state(crashed)["Running"]
    before = containers.state(crashed)["StartedAt"]
    restarted = restart_action(engine, stop_timeout=1).run([reading], dry_run=False)
    assert restarted.ok, restarted
    assert containers.state(crashed)["StartedAt"] != before


def test_left_alone_running_gone_and_stopped_by_an_operator_meanwhile(
    engine: DockerEngine, containers: Containers
) -> None:
    running = containers.create("running", ["sleep", "600"])
    gone = containers.create("gone", ["sh", "-c", "exit 3"])
    later = containers.create("later", ["sh", "-c", "trap 'exit 3' TERM; sleep 600 & wait"])
    containers.wait_exited(gone)
    gone_reading = firing(engine, containers, "gone")
    containers.api.remove_container(gone)
    later_reading = Reading(containers.name("later"), 1.0, {"id": later})  # measured while it still ran
    wait_until(lambda: containers.state(later)["Running"], what="the container to run")
    engine.synced_history(5)
    containers.api.stop(later, timeout=5)  # an operator stops it between the probe and the action

    result = start_action(engine).run(
        [Reading(containers.name("running"), 1.0, {"id": running}), gone_reading, later_reading], dry_run=False
    )

    assert result.ok
    details = [item.detail for item in result.items]
    assert details == [
        "left alone: already running",
        "left alone: the container no longer exists",
        "left alone: stopped by an operator since it was measured",
    ]
    assert containers.state(later)["Status"] == "exited"


def test_unreachable_engine_is_a_clear_failed_item(tmp_path: Path, make_engine: object) -> None:
    dead = make_engine(url=f"unix://{tmp_path}/no.sock")  # type: ignore[operator]
    result = restart_action(dead).run([Reading("web", 1.0, {"id": "abc"})], dry_run=False)
    assert not result.ok
    [item] = result.items
    assert item.detail == (
        f"Docker engine unreachable at unix://{tmp_path}/no.sock:"
        f" socket {tmp_path}/no.sock does not exist (is dockerd running?)"
    )


def test_a_restart_by_watchdogd_that_fails_half_way_is_not_an_operator_stop(
    engine: DockerEngine, containers: Containers, tmp_path: Path
) -> None:
    """The restart's stop succeeds, its start fails (the bind source is gone): the container stays down,
    and the next probe must still see a problem to fix, not a container an operator stopped."""
    source = tmp_path / "data"
    source.mkdir()
    cid = containers.create("half", ["sh", "-c", "trap 'exit 3' TERM; sleep 600 & wait"],
                            mounts=[docker.types.Mount("/data", str(source), type="bind")])
    wait_until(lambda: containers.state(cid)["Running"], what="the container to run")
    engine.synced_history(5)
    source.rmdir()

    result = restart_action(engine, stop_timeout=5).run([Reading(containers.name("half"), 1.0, {"id": cid})],
                                                        dry_run=False)

    assert not result.ok
    assert result.items[0].detail.startswith(f"restarting container {cid}: ")
    assert "\n" not in result.items[0].detail
    assert containers.state(cid)["Status"] == "exited"
    probe = ContainersProbe(ContainersParams(names=[containers.name("half")]), engine, time.time)
    [reading] = wait_until(lambda: [r for r in probe.measure() if r.details.get("stopped_by")],
                           what="the stop to be attributed")
    assert reading.details["stopped_by"] == "watchdogd"
    assert reading.value > 0
