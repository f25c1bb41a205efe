"""A container of the test's own crashes (its main process SIGKILLed from the host, not ``docker kill``):
``docker.containers`` fires, ``docker.start`` runs once and holds; when it crashes again inside the cooldown,
a second rule on the same container is held back by the first rule's cooldown (``held_by``).

Containers carry the ``watchdogd-test.run`` label and are removed at teardown; nothing else on the
shared engine is touched (the rules select the test's container by its unique name).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import run_once, wait_until, write_config
from tests.integration.outages.services import container_running, crash_container
from tests.integration.outages.watch import Watched, break_and_heal, history
from tests.support.dockerd import DEFAULT_URL

pytestmark = pytest.mark.integration

INTERVAL = 1.0
SLACK = 0.5
SECOND_FOR = 3.0  # the second rule fires only when the first one could not fix it in time


def config(name: str) -> str:
    return f"""\
        interval: 1s
        targets:
          docker:
            local: {{url: "{DEFAULT_URL}"}}
        rules:
          worker-down:
            probe: docker.containers
            params: {{names: ["{name}"]}}
            above: 0s
            severity: critical
            cooldown: 60s
            max_actions: {{count: 3, per: 1h}}
            actions:
              - docker.start: {{settle: 10s}}
          worker-stuck:
            probe: docker.containers
            params: {{names: ["{name}"]}}
            above: 0s
            for: {SECOND_FOR:g}s
            severity: warning
            cooldown: 60s
            actions:
              - docker.start: {{}}
          engine:
            probe: docker.engine
            above: 5s
            severity: critical
        """


def test_crashed_container_is_started_once_and_a_second_rule_respects_its_cooldown(
    containers: Any, watched: Callable[[str], Watched]
) -> None:
    cid = containers.create("worker", ["sleep", "3600"])
    name = containers.name("worker")
    api = containers.api
    with watched(config(name)) as w:
        tl = w.timeline
        for rule in ("worker-down", "worker-stuck", "engine"):
            tl.wait(rule, lambda s: s.state == "ok" and s.real_value, 30, what=f"{rule} to measure")

        out = break_and_heal(w, "worker-down", lambda: crash_container(api, cid), lambda: container_running(api, cid))
        print(f"\noutage docker (container crashed): -> firing {out.to_firing:.2f}s; -> docker.start finished "
              f"{out.to_action_finished:.2f}s; running again -> worker-down ok {out.back_to_ok:.2f}s\n"
              f"  worker-down: {tl.story('worker-down')}\n  worker-stuck: {tl.story('worker-stuck')}")
        assert out.to_firing <= INTERVAL + SLACK, tl.story("worker-down")
        assert out.action["result"] == "ok" and out.action["detail"]["held"] is True, out.action
        assert out.action["subject"] == name
        assert container_running(api, cid)
        assert out.back_to_ok <= INTERVAL + SLACK, tl.story("worker-down")

        # It crashes again inside the cooldown: neither rule may start it again.
        # The second rule saw the fix too (its pending from the first crash is over) before the next crash.
        tl.wait("worker-stuck", lambda s: s.state == "ok" and s.real_value, 10, after=out.back)
        again = time.time()
        crash_container(api, cid)
        skipped = wait_until(
            lambda: [e for e in history(w.socket, "worker-stuck") if e["decision"] == "skipped_cooldown"],
            SECOND_FOR + 10, "worker-stuck to be held back by the shared cooldown",
        )[0]
        own = [e for e in history(w.socket, "worker-down") if float(e["ts"]) >= again]
        print(f"  second crash: worker-stuck skipped {float(skipped['ts']) - again:.2f}s later, held_by "
              f"{skipped['detail'].get('held_by')}")

        held_by = skipped["detail"]["held_by"]
        assert held_by["rule"] == "worker-down" and held_by["action"] == "docker.start", skipped
        assert float(held_by["at"]) == pytest.approx(float(out.action["ts"]), abs=0.01), (held_by, out.action)
        assert float(held_by["until"]) >= float(held_by["at"]) + 60 - 0.01, held_by
        assert skipped["subject"] == name and skipped["action"] == "docker.start", skipped
        assert [e["decision"] for e in own] == ["skipped_cooldown"], own
        assert not container_running(api, cid)
        runs = [e for e in history(w.socket) if e["decision"] == "ran"]
        assert [(e["rule"], e["action"]) for e in runs] == [("worker-down", "docker.start")], runs
        assert tl.first("engine", lambda s: s.state != "ok", out.broken) is None, tl.story("engine")


def test_once_fires_when_the_engine_does_not_answer(docker_api: Any, tmp_path: Path) -> None:
    missing = tmp_path / "no-dockerd.sock"
    body = """\
        targets:
          docker:
            real: {{url: "{real}"}}
            gone: {{url: "unix://{missing}", timeout: 2s}}
        rules:
          engine:
            probe: docker.engine
            target: {target}
            above: 5s
            severity: critical
        """
    real = run_once(write_config(tmp_path, body.format(real=DEFAULT_URL, missing=missing, target="real")))
    assert real.returncode == 0 and "engine: ok" in real.stdout, real.stdout + real.stderr
    gone = run_once(write_config(tmp_path, body.format(real=DEFAULT_URL, missing=missing, target="gone")))
    assert gone.returncode == 1, gone.stdout + gone.stderr
    assert any(line.startswith("engine: firing") for line in gone.stdout.splitlines()), gone.stdout
