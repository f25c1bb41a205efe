"""Redis outages on a private redis-server (never the shared 6379): killed, and hung (SIGSTOP: the kernel
still accepts connections, nothing answers). ``redis.up`` fires on both, ``exec`` heals, verify holds."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import ctl, run_once, write_config
from tests.integration.outages.services import KILL, OwnRedis
from tests.integration.outages.watch import Watched, break_and_heal, history, number

pytestmark = pytest.mark.integration

INTERVAL = 1.0
FOR = 1.0  # the outage lasts long enough for the dependent rule to run during it
SLACK = 0.5  # scheduling jitter (0.1 s) and status polling (50 ms)


def target(server: OwnRedis) -> str:
    return f"""\
        targets:
          redis:
            own: {{url: "{server.url}"}}
        """


def killed_config(server: OwnRedis) -> str:
    return f"""\
        interval: 1s
        {target(server).strip()}
        rules:
          redis-up:
            probe: redis.up
            above: 1s
            for: 1s
            severity: critical
            cooldown: 30s
            max_actions: {{count: 3, per: 1h}}
            actions:
              - exec: {{argv: {json.dumps(server.restart_argv())}, timeout: 10s, settle: 10s}}
          redis-clients:
            probe: redis.clients
            above: 95
            depends_on: redis-up
        """


def test_killed_redis_fires_is_restarted_once_and_held(own_redis: OwnRedis, watched: Callable[[str], Watched]) -> None:
    with watched(killed_config(own_redis)) as w:
        tl = w.timeline
        tl.wait("redis-up", lambda s: s.state == "ok" and s.real_value, 20, what="redis-up to measure the server")
        tl.wait("redis-clients", lambda s: s.state == "ok" and s.real_value, 20, what="redis-clients to measure")
        killed_pid = own_redis.pid()

        out = break_and_heal(w, "redis-up", own_redis.kill, own_redis.answers, dependent="redis-clients")
        print(f"\noutage redis (killed): -> firing {out.to_firing:.2f}s; -> restart finished "
              f"{out.to_action_finished:.2f}s; answering again -> redis-up ok {out.back_to_ok:.2f}s, "
              f"-> redis-clients real values {out.back_to_dependent_ok:.2f}s\n"
              f"  redis-up: {tl.story('redis-up')}\n  redis-clients: {tl.story('redis-clients')}")
        print("\n".join(line for line in w.log().splitlines() if "redis-clients" in line))

        assert out.to_firing <= FOR + INTERVAL + SLACK, tl.story("redis-up")
        assert out.action["result"] == "ok", out.action
        assert out.action["detail"]["held"] is True, out.action
        assert number(out.action["value_before"]) == float("inf"), out.action
        # Really a new server: daemonized by the command watchdogd ran, on the same port.
        assert own_redis.answers()
        assert own_redis.pid() not in (None, killed_pid)
        assert any(s.state == "waiting" for s in tl.of("redis-clients") if out.broken <= s.t <= out.back), (
            tl.story("redis-clients")
        )
        assert not [s for s in tl.of("redis-clients") if s.t >= out.broken and s.state in ("down", "firing")], (
            tl.story("redis-clients")
        )
        assert out.back_to_dependent_ok is not None and out.back_to_dependent_ok <= INTERVAL + SLACK, (
            tl.story("redis-clients")
        )
        runs = [e for e in history(w.socket) if e["decision"] == "ran"]
        assert [(e["rule"], e["action"], e["result"]) for e in runs] == [("redis-up", "exec", "ok")], runs


def hung_config(server: OwnRedis, pid: int, timeout: float) -> str:
    return f"""\
        interval: 1s
        {target(server).strip()}
        rules:
          redis-up:
            probe: redis.up
            above: 1s
            timeout: {timeout:g}s
            severity: critical
            cooldown: 30s
            actions:
              - exec: {{argv: ["{KILL}", "-CONT", "{pid}"], timeout: 5s, settle: 10s}}
        """


def test_hung_redis_fires_within_the_probe_timeout_and_is_healed(
    own_redis: OwnRedis, watched: Callable[[str], Watched]
) -> None:
    timeout = 2.0
    pid = own_redis.pid()
    assert pid is not None
    with watched(hung_config(own_redis, pid, timeout)) as w:
        tl = w.timeline
        tl.wait("redis-up", lambda s: s.state == "ok" and s.real_value, 20, what="redis-up to measure the server")
        try:
            out = break_and_heal(w, "redis-up", own_redis.freeze, own_redis.answers)
        finally:
            own_redis.thaw()  # whatever happened: never leave a stopped process behind
        print(f"\noutage redis (SIGSTOP, timeout {timeout:g}s): -> firing {out.to_firing:.2f}s; -> SIGCONT finished "
              f"{out.to_action_finished:.2f}s; answering again -> redis-up ok {out.back_to_ok:.2f}s\n"
              f"  redis-up: {tl.story('redis-up')}")

        # A hang is detected by the probe timeout, not by a connection error: within timeout + one interval.
        assert out.to_firing <= timeout + INTERVAL + SLACK, tl.story("redis-up")
        assert out.action["result"] == "ok" and out.action["detail"]["held"] is True, out.action
        assert own_redis.pid() == pid and own_redis.answers()
        assert out.back_to_ok <= INTERVAL + SLACK, tl.story("redis-up")


def test_once_fires_on_a_stopped_redis(own_redis: OwnRedis, tmp_path: Path) -> None:
    body = f"""\
        {target(own_redis).strip()}
        rules:
          redis-up:
            probe: redis.up
            above: 1s
            severity: critical
          redis-clients:
            probe: redis.clients
            above: 95
            depends_on: redis-up
        """
    config = write_config(tmp_path, body)
    up = run_once(config)
    assert up.returncode == 0 and "redis-up: ok" in up.stdout, up.stdout + up.stderr
    own_redis.stop()
    down = run_once(config)
    assert down.returncode == 1, down.stdout + down.stderr
    assert any(line.startswith("redis-up: firing") for line in down.stdout.splitlines()), down.stdout
    assert any(line.startswith("redis-clients: waiting") for line in down.stdout.splitlines()), down.stdout
    check = ctl("check-config", str(config))
    assert check.returncode == 0, check.stderr
