"""The real ``watchdogd`` process with a real engine: restart what crashed, leave what an operator stopped,
back off on a crash loop and give up."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.helpers import DaemonProcess, write_config
from tests.integration.docker.dockertest import Containers, wait_until
from watchdogd.engine.state import StateStore
from watchdogd.model import Decision

pytestmark = pytest.mark.integration

# Exits 3 the first time; once restarted (same writable layer, /ran exists) it keeps running.
CRASH_ONCE = ["sh", "-c", "test -f /ran && exec sleep 600; touch /ran; exit 3"]
# `docker stop` makes it exit 3 too, so only the event stream can tell it was stopped on purpose.
TRAPS_TERM = ["sh", "-c", "trap 'exit 3' TERM; sleep 600 & wait"]


def audit(tmp_path: Path, rule: str) -> list:  # type: ignore[type-arg]
    with StateStore(tmp_path / "state" / "state.db", time.time) as store:
        return list(reversed(store.history(rule=rule, limit=1000)))


def test_exited_container_is_restarted_and_an_operator_stop_is_left_alone(
    tmp_path: Path, docker_url: str, containers: Containers
) -> None:
    stopped = containers.create("stopped", TRAPS_TERM)
    wait_until(lambda: containers.state(stopped)["Running"], what="the container to run")
    containers.api.stop(stopped, timeout=5)  # before watchdogd starts: it learns this from the replay
    crashed = containers.create("crashed", CRASH_ONCE)
    containers.wait_exited(crashed)
    config = write_config(
        tmp_path,
        f"""\
        interval: 1s
        targets:
          docker:
            local: {{url: "{docker_url}"}}
        rules:
          workers:
            probe: docker.containers
            params: {{names: ["{containers.prefix}-*"]}}
            above: 0s
            cooldown: 10s
            actions:
              - docker.start: {{}}
        """,
    )

    with DaemonProcess(config) as daemon:
        daemon.wait_for_log("action done", rule="workers", action="docker.start")
        daemon.wait_for_log("resolved", rule="workers", subject=containers.name("crashed"))

    assert containers.state(crashed)["Running"]
    assert containers.state(stopped)["Status"] == "exited"
    assert not [line for line in daemon.lines if containers.name("stopped") in line]
    rows = audit(tmp_path, "workers")
    assert [(r.subject, r.decision, r.result) for r in rows] == [(containers.name("crashed"), Decision.RAN, "ok")]


def test_crash_loop_backs_off_then_gives_up(tmp_path: Path, docker_url: str, containers: Containers) -> None:
    looping = containers.create("loop", ["sh", "-c", "exit 3"])
    containers.wait_exited(looping)
    config = write_config(
        tmp_path,
        f"""\
        interval: 200ms
        targets:
          docker:
            local: {{url: "{docker_url}"}}
        rules:
          loop:
            probe: docker.containers
            params: {{names: ["{containers.name('loop')}"]}}
            timeout: 5s                 # not cut at the 200 ms interval when the host is busy
            above: 0s
            cooldown: 1s
            max_cooldown: 4s
            stable_for: 1m
            max_actions: {{count: 4, per: 1h}}
            actions:
              - docker.start: {{}}
        """,
    )

    with DaemonProcess(config) as daemon:
        daemon.wait_for_log("rule gave up", rule="loop", timeout=30)
        last_start = containers.api.inspect_container(looping)["State"]["StartedAt"]
        # A later cycle records that it skipped because the rule gave up: it measured, and did not act.
        wait_until(lambda: any(r.decision is Decision.SKIPPED_GAVE_UP for r in audit(tmp_path, "loop")),
                   what="a cycle after the give-up")

    rows = audit(tmp_path, "loop")
    ran = [r.ts for r in rows if r.decision is Decision.RAN]
    assert len(ran) == 4
    assert [r.decision for r in rows][-2:] == [Decision.GAVE_UP, Decision.SKIPPED_GAVE_UP]
    gaps = [b - a for a, b in zip(ran, ran[1:], strict=False)]
    # Kubernetes-style: 1 s, then 2 s, then 4 s (the cap) between attempts; each at least its cooldown.
    for gap, floor in zip(gaps, (1.0, 2.0, 4.0), strict=True):
        assert floor <= gap < floor + 2.0, gaps
    assert gaps[0] < gaps[1] < gaps[2]
    assert containers.api.inspect_container(looping)["State"]["StartedAt"] == last_start
