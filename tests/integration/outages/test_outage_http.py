"""A health endpoint that accepts and never answers: ``net.http`` fires within its probe timeout, ``exec``
heals it, verify holds. ``net.tcp`` on the same port stays ok throughout: only the HTTP check sees a hang."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import run_once, write_config
from tests.integration.outages.services import TRUE, HangingHttpServer
from tests.integration.outages.watch import Watched, break_and_heal, history, number

pytestmark = pytest.mark.integration

INTERVAL = 1.0
TIMEOUT = 1.0
SLACK = 0.5  # scheduling jitter (0.1 s) and status polling (50 ms)


def config(server: HangingHttpServer, *, actions: bool = True) -> str:
    heal = f"""
            cooldown: 30s
            actions:
              - exec: {{argv: {json.dumps(server.heal_argv())}, timeout: 5s, settle: 10s}}""" if actions else ""
    return f"""\
        interval: 1s
        rules:
          app-health:
            probe: net.http
            params: {{url: "{server.url()}"}}
            above: 2s
            timeout: {TIMEOUT:g}s
            severity: critical{heal}
          app-port:
            probe: net.tcp
            params: {{port: {server.port}}}
            above: 1s
        """


def test_hanging_endpoint_fires_within_the_timeout_and_is_healed(
    hanging_http: HangingHttpServer, watched: Callable[[str], Watched]
) -> None:
    with watched(config(hanging_http)) as w:
        tl = w.timeline
        tl.wait("app-health", lambda s: s.state == "ok" and s.real_value, 20, what="app-health to measure")
        out = break_and_heal(w, "app-health", hanging_http.hang, lambda: hanging_http.answers(0.3))
        print(f"\noutage http (accepts, never answers; timeout {TIMEOUT:g}s): -> firing {out.to_firing:.2f}s; "
              f"-> heal finished {out.to_action_finished:.2f}s; answering again -> app-health ok "
              f"{out.back_to_ok:.2f}s\n  app-health: {tl.story('app-health')}\n  app-port: {tl.story('app-port')}")

        assert out.to_firing <= TIMEOUT + INTERVAL + SLACK, tl.story("app-health")
        assert out.action["result"] == "ok" and out.action["detail"]["held"] is True, out.action
        assert number(out.action["value_before"]) == float("inf"), out.action
        assert hanging_http.healthy and hanging_http.answers()
        assert out.back_to_ok <= INTERVAL + SLACK, tl.story("app-health")
        # The port kept accepting: a TCP check is blind to this outage.
        assert {s.state for s in tl.of("app-port") if s.t >= out.broken} == {"ok"}, tl.story("app-port")
        runs = [e for e in history(w.socket) if e["decision"] == "ran"]
        assert [(e["rule"], e["action"], e["result"]) for e in runs] == [("app-health", "exec", "ok")], runs


def test_once_fires_on_a_hanging_endpoint(hanging_http: HangingHttpServer, tmp_path: Path) -> None:
    path = write_config(tmp_path, config(hanging_http, actions=False))
    up = run_once(path)
    assert up.returncode == 0 and "app-health: ok" in up.stdout, up.stdout + up.stderr
    hanging_http.hang()
    started = time.monotonic()
    down = run_once(path)
    print(f"\n--once against the hanging endpoint (rule timeout {TIMEOUT:g}s) took {time.monotonic() - started:.2f}s")
    assert down.returncode == 1, down.stdout + down.stderr
    lines = down.stdout.splitlines()
    assert any(line.startswith("app-health: firing") for line in lines), down.stdout
    assert any(line.startswith("app-port: ok") for line in lines), down.stdout
    assert "timed out after 1s" in down.stdout + down.stderr, down.stdout + down.stderr


def test_a_fix_that_does_not_heal_is_recorded_as_not_held_with_the_reason(
    hanging_http: HangingHttpServer, watched: Callable[[str], Watched]
) -> None:
    hanging_http.hang()
    body = f"""\
        interval: 1s
        rules:
          app-health:
            probe: net.http
            params: {{url: "{hanging_http.url()}"}}
            above: 2s
            timeout: {TIMEOUT:g}s
            cooldown: 60s
            actions:
              - exec: {{argv: ["{TRUE}"], timeout: 5s, settle: 2s}}
        """
    with watched(body) as w:
        row = w.verified_action("app-health", 30)
        print(f"\nnot held: {row['detail']}")
    assert row["result"] == "ok", row  # the command itself worked...
    assert row["detail"]["held"] is False, row  # ...the endpoint still hangs
    reason = str(row["detail"].get("verify") or "")
    assert reason and any(word in reason for word in ("down", "timed out", "hung", "still above")), row
    assert not hanging_http.answers(0.3)
