"""Benchmark: how fast a service that goes down is restarted, and how fast the rule sees it back (issue 12).

    python3 bench/bench_outage.py [--rounds 3] [--families postgres,redis,http,docker[,systemd]]

Per family, a service of the benchmark's own, a watchdogd (interval 1 s, ``for: 0s``) whose availability
rule restarts it, and ``--rounds`` outages, each started at a random phase of the rule's 1 s cycle:

- postgres: an own cluster (initdb, free port) stopped with ``pg_ctl stop -m immediate``; ``postgres.up``
  + ``exec`` of ``pg_ctl start``.
- redis: an own redis-server SIGKILLed; ``redis.up`` + ``exec`` of ``redis-server --daemonize yes``.
- http: an own endpoint that starts accepting and never answering; ``net.http`` (``timeout: 1s``) + ``exec``
  of the command that unblocks it.
- docker: an own busybox container whose main process is SIGKILLed from the host (a crash);
  ``docker.containers`` + ``docker.start``.
- systemd (only when asked: it boots a systemd container): a unit's main process SIGKILLed;
  ``systemd.unit`` + ``systemd.restart``, watchdogd running inside as a service.

Figures, one clock for all (the host's; containers share it):

- **stopped -> restart finished**: from just before the service is stopped to the end of the restart
  action (its audit row's start + duration). Includes detection (up to one interval; for http the probe
  timeout too) and the restart itself.
- **back -> rule ok**: from the service answering again (polled every 20 ms; 50 ms for systemd, through
  ``docker exec``) to the daemon's status first showing the rule ok with a real value (polled every 50 ms;
  100 ms for systemd). A service that was back before any poll saw it down counts as back when the
  restart action finished.

Only what it creates is touched: the cluster, server, endpoint, container (labelled
``watchdogd-test.run``) and systemd container are its own and removed at exit, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker as docker_sdk

from tests.integration.docker.dockertest import Containers
from tests.integration.outages.box import AppUnit, BoxDaemon, install_app, write
from tests.integration.outages.services import (
    HangingHttpServer,
    OwnCluster,
    OwnRedis,
    container_running,
    crash_container,
)
from tests.integration.outages.watch import Observed, Outage, Watched, break_and_heal
from tests.support.dockerd import BUSYBOX_TAG, DEFAULT_URL, ensure_busybox_image, ensure_dockerd
from tests.support.systemd_container import SystemdContainer, ensure_deps_image

INTERVAL = 1.0
GUARD = """\
            cooldown: 1s
            max_cooldown: 1s
            stable_for: 1s
            max_actions: {count: 1000, per: 1h}"""
HEADER = """\
        interval: 1s
        budget: {actions: 1000, per: 1h}
"""


@dataclass
class Family:
    """One service and the daemon that heals it; ``setup`` yields once both are running and measured ok."""

    name: str
    outage: str  # what is done to the service, for the table
    rule: str
    setup: Callable[[Path], contextlib.AbstractContextManager[tuple[Observed, Callable[[], object],
                                                                    Callable[[], bool]]]]
    poll: float = 0.02


def _wait_ok(observed: Observed, rule: str) -> None:
    observed.timeline.wait(rule, lambda s: s.state == "ok" and s.real_value, 60, what=f"{rule} to measure")


@contextlib.contextmanager
def postgres(work: Path) -> Iterator[tuple[Observed, Callable[[], object], Callable[[], bool]]]:
    cluster = OwnCluster()
    try:
        cluster.start()
        body = HEADER + f"""\
        targets:
          postgres:
            own: {{dsn: "host=127.0.0.1 port={cluster.port} user=postgres dbname=postgres", connect_timeout: 1s}}
        rules:
          pg-up:
            probe: postgres.up
            above: 2s
{GUARD}
            actions:
              - exec: {{argv: {json.dumps(cluster.start_argv())}, timeout: 40s, settle: 15s}}
        """
        with Watched(work, body) as w:
            _wait_ok(w, "pg-up")
            yield w, cluster.stop_immediate, cluster.accepting
    finally:
        cluster.destroy()


@contextlib.contextmanager
def redis(work: Path) -> Iterator[tuple[Observed, Callable[[], object], Callable[[], bool]]]:
    server = OwnRedis(work / "redis")
    try:
        server.start()
        body = HEADER + f"""\
        targets:
          redis:
            own: {{url: "{server.url}"}}
        rules:
          redis-up:
            probe: redis.up
            above: 1s
{GUARD}
            actions:
              - exec: {{argv: {json.dumps(server.restart_argv())}, timeout: 10s, settle: 10s}}
        """
        with Watched(work, body) as w:
            _wait_ok(w, "redis-up")
            yield w, server.kill, server.answers
    finally:
        server.close()


@contextlib.contextmanager
def http(work: Path) -> Iterator[tuple[Observed, Callable[[], object], Callable[[], bool]]]:
    server = HangingHttpServer(work / "healthy")
    server.heal()
    with server:  # started here, closed at exit
        body = HEADER + f"""\
        rules:
          app-health:
            probe: net.http
            params: {{url: "{server.url()}"}}
            above: 2s
            timeout: 1s
{GUARD}
            actions:
              - exec: {{argv: {json.dumps(server.heal_argv())}, timeout: 5s, settle: 10s}}
        """
        with Watched(work, body) as w:
            _wait_ok(w, "app-health")
            yield w, server.hang, lambda: server.answers(0.3)


@contextlib.contextmanager
def docker(work: Path) -> Iterator[tuple[Observed, Callable[[], object], Callable[[], bool]]]:
    url = ensure_dockerd()
    ensure_busybox_image()
    api = docker_sdk.APIClient(base_url=url, version="auto", timeout=60)
    made = Containers(api, BUSYBOX_TAG, f"bench-outage-{uuid.uuid4().hex[:8]}")
    try:
        cid = made.create("worker", ["sleep", "86400"])
        body = HEADER + f"""\
        targets:
          docker:
            local: {{url: "{DEFAULT_URL}"}}
        rules:
          worker-down:
            probe: docker.containers
            params: {{names: ["{made.name('worker')}"]}}
            above: 0s
{GUARD}
            actions:
              - docker.start: {{settle: 10s}}
        """
        with Watched(work, body) as w:
            _wait_ok(w, "worker-down")
            yield w, lambda: crash_container(api, cid), lambda: container_running(api, cid)
    finally:
        made.cleanup()
        api.close()


@contextlib.contextmanager
def systemd(work: Path) -> Iterator[tuple[Observed, Callable[[], object], Callable[[], bool]]]:
    with SystemdContainer(ensure_deps_image()) as box:
        box.wait_booted()
        box.install_watchdogd()
        install_app(box)
        config = write(box, "/etc/watchdogd/bench-outage.yaml", HEADER + f"""\
        rules:
          app-down:
            probe: systemd.unit
            params: {{units: [app]}}
            above: 0
{GUARD}
            actions:
              - systemd.restart: {{settle: 10s}}
        """)
        with BoxDaemon(box, config) as d:
            _wait_ok(d, "app-down")
            app = AppUnit(box)
            yield d, app.kill, app.answers


FAMILIES: dict[str, Family] = {
    "postgres": Family("postgres", "own cluster, pg_ctl stop -m immediate", "pg-up", postgres),
    "redis": Family("redis", "own redis-server, SIGKILL", "redis-up", redis),
    "http": Family("http", "endpoint accepts, never answers", "app-health", http),
    "docker": Family("docker", "container's process SIGKILLed", "worker-down", docker),
    "systemd": Family("systemd", "unit's main process SIGKILLed", "app-down", systemd, poll=0.05),
}
DEFAULT_FAMILIES = "postgres,redis,http,docker"


def measure(family: Family, rounds: int, work: Path) -> list[Outage]:
    outages: list[Outage] = []
    with family.setup(work) as (observed, break_it, answers):
        for index in range(rounds):
            # A random phase of the 1 s cycle, and past the 1 s cooldown of the previous round's restart.
            time.sleep(INTERVAL + random.uniform(0.0, INTERVAL))
            out = break_and_heal(observed, family.rule, break_it, answers, poll=family.poll)
            outages.append(out)
            result = out.action["result"]
            print(f"  {family.name} round {index + 1}: stopped -> firing {out.to_firing:.2f}s, "
                  f"-> restart finished {out.to_action_finished:.2f}s ({out.action['action']} {result}, "
                  f"held after {out.action['detail'].get('settled_after')}s); back -> rule ok {out.back_to_ok:.2f}s",
                  flush=True)
    return outages


def cell(values: list[float]) -> str:
    return f"{statistics.median(values):5.2f} / {max(values):5.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="outages per family (default 3)")
    parser.add_argument("--families", default=DEFAULT_FAMILIES,
                        help=f"comma-separated, of {', '.join(FAMILIES)} (default {DEFAULT_FAMILIES})")
    args = parser.parse_args()
    names = [name.strip() for name in args.families.split(",") if name.strip()]
    unknown = [name for name in names if name not in FAMILIES]
    if unknown or args.rounds < 1:
        parser.error(f"unknown families {unknown}" if unknown else "--rounds must be at least 1")

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)  # bench/run stops children with SIGINT, then SIGTERM
    results: dict[str, list[Outage]] = {}
    errors: dict[str, str] = {}
    print(f"outage reaction: interval {INTERVAL:g}s, for 0s, {args.rounds} round(s) per family", flush=True)
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"wd-bench-outage-{name}-") as tmp:
            try:
                results[name] = measure(FAMILIES[name], args.rounds, Path(tmp))
            except KeyboardInterrupt:
                print("interrupted: everything started was stopped and removed", file=sys.stderr)
                return 130
            except (AssertionError, RuntimeError, OSError) as exc:  # one family's trouble does not hide the rest
                errors[name] = " ".join(str(exc).split())[:300]
                print(f"  {name}: could not be measured: {errors[name]}", flush=True)

    print()
    print(f"{'family':<9} {'outage':<38} {'stopped -> firing':>18} {'stopped -> restart done':>24} "
          f"{'back -> rule ok':>16}   (median / max s, n={args.rounds})")
    for name in names:
        family = FAMILIES[name]
        if name in errors:
            print(f"{name:<9} {family.outage:<38} not measured: {errors[name][:80]}")
            continue
        outs = results[name]
        print(f"{name:<9} {family.outage:<38} {cell([o.to_firing for o in outs]):>18} "
              f"{cell([o.to_action_finished for o in outs]):>24} {cell([o.back_to_ok for o in outs]):>16}")
    done = [o for outs in results.values() for o in outs]
    if done:
        print(f"outage: stopped -> restart finished max {max(o.to_action_finished for o in done):.2f}s, "
              f"back -> rule ok max {max(o.back_to_ok for o in done):.2f}s over {len(results)} families "
              f"({'all measured' if not errors else 'not measured: ' + ', '.join(errors)})")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
