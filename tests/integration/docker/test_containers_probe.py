"""``docker.containers`` against a real engine: crashes, operator stops, OOM, health, selection."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.integration.docker.dockertest import RUN_LABEL, Containers, health, wait_until
from watchdogd.families.docker.common import COMPOSE_PROJECT, COMPOSE_SERVICE
from watchdogd.families.docker.probes import ContainersParams, ContainersProbe
from watchdogd.families.docker.target import DockerEngine
from watchdogd.model import Reading

pytestmark = pytest.mark.integration


def probe(engine: DockerEngine, containers: Containers, **params: Any) -> ContainersProbe:
    params.setdefault("names", [f"{containers.prefix}-*"])
    return ContainersProbe(ContainersParams(**params), engine, time.time)


def by_name(readings: list[Reading], containers: Containers) -> dict[str, Reading]:
    return {r.subject.removeprefix(containers.prefix + "-"): r for r in readings}


def test_crash_is_a_problem_clean_exit_and_running_are_not(engine: DockerEngine, containers: Containers) -> None:
    crashed = containers.create("crash", ["sh", "-c", "exit 3"])
    clean = containers.create("clean", ["sh", "-c", "exit 0"])
    containers.create("up", ["sleep", "600"])
    containers.wait_exited(crashed)
    containers.wait_exited(clean)

    readings = by_name(probe(engine, containers).measure(), containers)

    assert set(readings) == {"crash", "clean", "up"}
    crash = readings["crash"]
    assert crash.value > 0
    assert crash.details["condition"] == "exited"
    assert crash.details["exit_code"] == 3
    assert crash.details["id"] == crashed
    assert "stopped_by" not in crash.details
    assert crash.details["since"] <= time.time()
    assert readings["clean"].value == 0
    assert readings["up"].value == 0
    assert readings["up"].details["state"] == "running"


def test_docker_stop_and_kill_are_operator_stops(engine: DockerEngine, containers: Containers) -> None:
    stopped = containers.create("stopped", ["sleep", "600"])
    killed = containers.create("killed", ["sleep", "600"])
    check = probe(engine, containers)
    check.measure()  # the event follower is running before the operator acts
    containers.api.stop(stopped, timeout=1)
    containers.api.kill(killed)
    containers.wait_exited(killed)

    readings = by_name(check.measure(), containers)

    for short in ("stopped", "killed"):
        assert readings[short].value == 0, readings[short]
        assert readings[short].details["stopped_by"] == "operator"
    included = by_name(probe(engine, containers, include_stopped_by_operator=True).measure(), containers)
    assert included["stopped"].value > 0
    assert included["killed"].details["condition"] == "exited"


def test_operator_stop_is_remembered_across_a_watchdogd_restart(
    engine: DockerEngine, make_engine: Any, containers: Containers
) -> None:
    """A trap turns SIGTERM into exit 3, so only the replayed events (not the exit code) can tell it was a stop."""
    cid = containers.create("trap", ["sh", "-c", "trap 'exit 3' TERM; sleep 600 & wait"])
    wait_until(lambda: containers.state(cid)["Running"], what="the container to run")
    containers.api.stop(cid, timeout=5)
    assert containers.state(cid)["ExitCode"] == 3

    fresh = make_engine()  # a new watchdogd process: it only knows what the engine replays
    readings = by_name(probe(fresh, containers).measure(), containers)

    assert readings["trap"].value == 0
    assert readings["trap"].details["stopped_by"] == "operator"


def test_a_stop_by_watchdogd_is_not_an_operator_stop(engine: DockerEngine, containers: Containers) -> None:
    cid = containers.create("ours", ["sh", "-c", "trap 'exit 3' TERM; sleep 600 & wait"])
    wait_until(lambda: containers.state(cid)["Running"], what="the container to run")
    check = probe(engine, containers)
    check.measure()
    engine.history.expect_own(cid, 60)  # what docker.restart announces before it stops a container
    containers.api.stop(cid, timeout=5)

    reading = by_name(check.measure(), containers)["ours"]

    assert reading.value > 0
    assert reading.details["stopped_by"] == "watchdogd"


def test_oom_kill_is_its_own_condition(engine: DockerEngine, containers: Containers) -> None:
    cid = containers.create("oom", ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"], mem_limit="16m")
    containers.wait_exited(cid)
    check = probe(engine, containers)

    def oom() -> Reading | None:
        # dockerd learns of the OOM kill from its own containerd event, which can land just after the
        # exit under load (seen once in a full CI run: exited, OOMKilled false); it is set moments later.
        reading = by_name(check.measure(), containers)["oom"]
        return reading if reading.details["condition"] == "oom_killed" else None

    reading = wait_until(oom, what="the container to be reported as OOM-killed")

    assert reading.details["condition"] == "oom_killed", reading
    assert reading.details["oom_killed"] is True
    assert reading.details["exit_code"] == 137
    assert reading.value > 0
    only_exits = by_name(probe(engine, containers, conditions=["exited"]).measure(), containers)
    assert only_exits["oom"].value == 0


def test_unhealthy_container_with_its_check_output(engine: DockerEngine, containers: Containers) -> None:
    containers.create("sick", ["sleep", "600"], healthcheck=health("echo db down; exit 1"))
    containers.create("well", ["sleep", "600"], healthcheck=health("exit 0"))
    check = probe(engine, containers)

    def sick() -> Reading | None:
        reading = by_name(check.measure(), containers)["sick"]
        return reading if reading.value > 0 else None

    reading = wait_until(sick, what="the container to turn unhealthy")
    assert reading.details["condition"] == "unhealthy"
    assert reading.details["health_output"] == "db down"
    assert reading.details["failing_streak"] >= 1
    assert by_name(check.measure(), containers)["well"].value == 0


def test_restarting_under_docker_restart_policy(engine: DockerEngine, containers: Containers) -> None:
    containers.create("loop", ["sh", "-c", "exit 1"], restart_policy={"Name": "always"})
    check = probe(engine, containers)

    def restarting() -> Reading | None:
        reading = by_name(check.measure(), containers).get("loop")
        return reading if reading is not None and reading.details.get("condition") == "restarting" else None

    reading = wait_until(restarting, what="docker's restart policy to be seen restarting")
    assert reading.details["restart_count"] >= 1
    assert reading.details["restart_policy"] == "always"


def test_selection_by_label_compose_and_opt_out(engine: DockerEngine, containers: Containers) -> None:
    compose = {COMPOSE_PROJECT: f"shop-{containers.run_id}", COMPOSE_SERVICE: "worker"}
    containers.create("worker", ["sleep", "600"], labels={**compose, "watchdogd.enable": "true"})
    containers.create("web", ["sleep", "600"], labels={**compose, COMPOSE_SERVICE: "web"})
    containers.create("optout", ["sleep", "600"], labels={"watchdogd.enable": "false"})

    assert set(by_name(probe(engine, containers).measure(), containers)) == {"worker", "web"}
    opted_in = probe(engine, containers, labels=["watchdogd.enable=true"]).measure()
    assert set(by_name(opted_in, containers)) == {"worker"}
    project = probe(engine, containers, names=["*"], compose_project=compose[COMPOSE_PROJECT],
                    compose_services=["web"]).measure()
    assert set(by_name(project, containers)) == {"web"}
    excluded = probe(engine, containers, exclude_names=["*-web"]).measure()
    assert set(by_name(excluded, containers)) == {"worker"}
    everything = probe(engine, containers, exclude_labels=[], labels=[f"{RUN_LABEL}={containers.run_id}"]).measure()
    assert {"worker", "web", "optout"} <= set(by_name(everything, containers))
