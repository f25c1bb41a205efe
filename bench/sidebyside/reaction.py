"""Reaction time: from the moment a condition exists to the moment the fix is visible, for ``for: 0s``.

One watchdogd (the venv's, as a process) runs one rule per scenario at
``every: 1s``. Each scenario creates its condition, knows the exact instant
it began, and watches for the fix from the outside, the way the affected
client would see it:

(a) an idle PostgreSQL connection passes ``above: 2s``: from its
    ``state_change`` + 2 s (read back from pg_stat_activity, same host
    clock) to the moment its own socket turns readable with the server's
    "terminating connection" message (``postgres.terminate``);
(b) a container exits by itself with status 3: from Docker's ``FinishedAt``
    to the moment an inspect shows it running again (``docker.restart``);
(c) a directory passes ``above: 1MiB``: from the end of the write that
    passes the size to the moment no file is left (``files.clean``).

Everything a scenario creates is named with a fresh random prefix and the
rules select only that (a role and an application name, a container name
glob, a temp dir), so nothing else on this host is ever acted on.
A scenario whose family is missing (no server, probe or action unknown to
``check-config``) is reported "not available: <reason>".
"""

from __future__ import annotations

import random
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sidebyside import policy
from sidebyside.processes import BenchError, Child, free_port, wait_until
from sidebyside.scrape import fetch_text, probe_success
from sidebyside.steady import daemon_env, shipped_daemon

RULE_EVERY = 1.0
READY_TIMEOUT = 60.0
REACTION_TIMEOUT = 20.0
"""Longest a single reaction may take before it counts as failed (targets are ~2 s)."""
VICTIM_APP = "watchdogd-bench-victim"


class Unavailable(Exception):
    """The scenario cannot run on this host or tree; the message is the reason."""


@dataclass(frozen=True)
class Plan:
    rule_name: str
    rule: dict[str, Any]
    targets: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Figure:
    key: str
    title: str
    interval: float
    samples: Sequence[float] = ()
    unavailable: str | None = None
    note: str = ""


class Scenario(Protocol):
    key: str
    title: str

    def prepare(self, stack: ExitStack, workdir: Path) -> Plan: ...

    def measure(self, attempt: int) -> float: ...


def parse_docker_time(text: str) -> float:
    """Docker's RFC 3339 timestamps carry nanoseconds, which ``fromisoformat`` (3.11) rejects beyond micro."""
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1]
    if "." in text:
        head, frac = text.split(".", 1)
        offset = ""
        for sign in ("+", "-"):
            if sign in frac:
                frac, tz = frac.split(sign, 1)
                offset = sign + tz
        text = f"{head}.{(frac + '000000')[:6]}{offset}"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _repo_on_path(repo: Path) -> None:
    """The test support modules (dockerd, pgenv) are reused, so the bench starts services like the tests do."""
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))


# --------------------------------------------------------------------------- (a) PostgreSQL


class IdleConnection:
    key = "a"
    title = "PostgreSQL connection idle > 2s -> postgres.terminate"

    def __init__(self, repo: Path) -> None:
        self._repo = repo
        self._env: Any = None
        self._victim = ""

    def prepare(self, stack: ExitStack, workdir: Path) -> Plan:
        _repo_on_path(self._repo)
        try:
            from tests.integration.postgres import pgenv  # noqa: PLC0415 (psycopg only when this scenario runs)

            pgenv.ensure_machine_server()
            env = pgenv.PgEnv()
        except Exception as exc:  # any reason the server is not usable makes the row "not available"
            raise Unavailable(f"PostgreSQL on 127.0.0.1:5432: {type(exc).__name__}: {exc}") from exc
        stack.callback(env.cleanup)
        self._env = env
        self._victim = env.role("victim")
        # The daemon's role is the least-privileged one docs/postgres.md prescribes.
        watcher = env.role("watcher", "pg_monitor", "pg_signal_backend")
        return Plan(
            "bench-pg-idle",
            policy.reaction_rule("postgres.idle", {"users": [self._victim], "application_names": [VICTIM_APP]},
                                 "2s", "postgres.terminate", {"max_per_run": 1}),
            {"postgres": {"bench": {"dsn": env.dsn(watcher)}}},
        )

    def measure(self, attempt: int) -> float:
        env = self._env
        conn = env.connect(self._victim, application_name=VICTIM_APP)
        conn.execute("SELECT 1")
        pid = conn.info.backend_pid

        def idle_since() -> float | None:
            row = env.admin.execute(
                "SELECT state, extract(epoch FROM state_change)::float8 FROM pg_stat_activity WHERE pid = %s", [pid]
            ).fetchone()
            return float(row[1]) if row and row[0] == "idle" else None

        limit_at = wait_until(idle_since, 10, f"backend {pid} to be idle") + 2.0
        deadline = limit_at + REACTION_TIMEOUT
        while True:
            ready, _, _ = select.select([conn.fileno()], [], [], max(0.0, deadline - time.time()))
            if ready:
                seen = time.time()
                break
            if time.time() >= deadline:
                raise BenchError(f"backend {pid} was not terminated within {REACTION_TIMEOUT:g}s of passing 2s idle")
        wait_until(lambda: not env.alive(pid), 10, f"backend {pid} to be gone after its socket closed")
        return seen - limit_at


# --------------------------------------------------------------------------- (b) Docker

CRASH_ONCE = "if [ -e /tmp/ran ]; then exec sleep 3600; fi; touch /tmp/ran; sleep 1; exit 3"
"""Exits 3 (a crash, not an operator stop) on its first run; after the restart it stays up."""


class ContainerExit:
    key = "b"
    title = "container exits (status 3) -> docker.restart"

    def __init__(self, repo: Path) -> None:
        self._repo = repo
        self._client: Any = None
        self._image = ""
        self._network = "none"
        self._prefix = f"wdbench-{uuid.uuid4().hex[:8]}"

    def prepare(self, stack: ExitStack, workdir: Path) -> Plan:
        _repo_on_path(self._repo)
        try:
            import docker  # noqa: PLC0415

            from tests.support import dockerd  # noqa: PLC0415

            url = dockerd.ensure_dockerd()
            self._image = dockerd.ensure_busybox_image()
            self._network = dockerd.NETWORK_MODE
            client = docker.DockerClient(base_url=url, timeout=60)
        except Exception as exc:
            raise Unavailable(f"Docker engine: {type(exc).__name__}: {exc}") from exc
        stack.callback(client.close)
        stack.callback(self._remove_all)
        self._client = client
        return Plan(
            "bench-container-exit",
            policy.reaction_rule("docker.containers", {"names": [f"{self._prefix}-*"]}, "0s", "docker.restart",
                                 {"max_per_run": 1, "stop_timeout": "1s"}),
            {"docker": {"bench": {"url": url}}},
        )

    def _remove_all(self) -> None:
        for container in self._client.containers.list(all=True, filters={"name": self._prefix}):
            container.remove(force=True)

    def measure(self, attempt: int) -> float:
        container = self._client.containers.run(
            self._image, ["sh", "-c", CRASH_ONCE], name=f"{self._prefix}-{attempt}", detach=True,
            network_mode=self._network,
        )
        try:
            def exited() -> float | None:
                container.reload()
                state = container.attrs["State"]
                return parse_docker_time(state["FinishedAt"]) if state["Status"] == "exited" else None

            finished = wait_until(exited, 30, f"container {container.name} to exit", interval=0.01)

            def running_again() -> float | None:
                container.reload()
                state = container.attrs["State"]
                if state["Status"] == "running" and parse_docker_time(state["StartedAt"]) > finished:
                    return time.time()
                return None

            seen = wait_until(running_again, REACTION_TIMEOUT, f"container {container.name} to run again",
                              interval=0.01)
        finally:
            container.remove(force=True)
        return seen - finished


# --------------------------------------------------------------------------- (c) files


class DirectoryFull:
    key = "c"
    title = "directory passes 1 MiB -> files.clean"

    def __init__(self) -> None:
        self._dir = Path()

    def prepare(self, stack: ExitStack, workdir: Path) -> Plan:
        self._dir = workdir / "reaction-files"
        self._dir.mkdir()
        return Plan(
            "bench-dir-size",
            policy.reaction_rule("host.dir_size", {"path": str(self._dir)}, "1MiB", "files.clean",
                                 {"path": str(self._dir), "older_than": "0s", "max_files": 1000,
                                  "allowed_roots": [str(workdir)]}),
        )

    def measure(self, attempt: int) -> float:
        blob = self._dir / f"blob-{attempt}"
        with blob.open("wb") as out:
            out.write(b"\0" * (2 << 20))
        written = time.time()
        seen = wait_until(lambda: None if any(self._dir.iterdir()) else time.time(), REACTION_TIMEOUT,
                          f"{self._dir} to be cleaned", interval=0.01)
        return seen - written


# --------------------------------------------------------------------------- the run


def scenarios(repo: Path) -> list[Scenario]:
    return [IdleConnection(repo), ContainerExit(repo), DirectoryFull()]


def check_config(python: Path, path: Path) -> str | None:
    """None if ``watchdogctl check-config`` accepts the file, else its first complaint."""
    proc = subprocess.run([str(python), "-m", "watchdogd.faces.cli", "check-config", str(path)], capture_output=True,
                          text=True, check=False, timeout=60, env=daemon_env())
    if proc.returncode == 0:
        return None
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[0] if lines else f"check-config exited {proc.returncode}"


def run(python: Path, repo: Path, workdir: Path, repeat: int,
        say: Callable[[str], None] = print) -> list[Figure]:
    results: dict[str, Figure] = {}
    plans: dict[str, tuple[Scenario, Plan]] = {}
    with ExitStack() as stack:
        for scenario in scenarios(repo):
            try:
                plan = scenario.prepare(stack, workdir)
            except Unavailable as exc:
                results[scenario.key] = Figure(scenario.key, scenario.title, RULE_EVERY, unavailable=str(exc))
                continue
            alone = workdir / f"check-{scenario.key}.yaml"
            write_config(alone, workdir, 0, {plan.rule_name: plan.rule}, plan.targets)
            problem = check_config(python, alone)
            if problem is not None:
                results[scenario.key] = Figure(scenario.key, scenario.title, RULE_EVERY, unavailable=problem)
                continue
            plans[scenario.key] = (scenario, plan)
        if plans:
            results.update(_measure(stack, python, workdir, plans, repeat, say))
    return [results[s.key] for s in scenarios(repo) if s.key in results]


def write_config(path: Path, workdir: Path, port: int, rules: dict[str, dict[str, Any]],
                 targets: dict[str, dict[str, dict[str, Any]]]) -> None:
    path.write_text(policy.reaction_config(
        state_dir=str(workdir / "reaction-state"), control_socket=str(workdir / "reaction.sock"),
        listen=f"127.0.0.1:{port or free_port()}", targets=targets, rules=rules,
    ))
    path.chmod(0o600)


def _measure(stack: ExitStack, python: Path, workdir: Path, plans: dict[str, tuple[Scenario, Plan]],
             repeat: int, say: Callable[[str], None]) -> dict[str, Figure]:
    port = free_port()
    config = workdir / "reaction.yaml"
    targets: dict[str, dict[str, dict[str, Any]]] = {}
    for _, plan in plans.values():
        for kind, named in plan.targets.items():
            targets.setdefault(kind, {}).update(named)
    write_config(config, workdir, port, {plan.rule_name: plan.rule for _, plan in plans.values()}, targets)
    daemon = Child("watchdogd (reaction)", [*shipped_daemon(python, workdir / "pycache"), "--config", str(config)],
                   workdir / "reaction-watchdogd.log", env=daemon_env(), cwd=workdir)
    daemon.start()
    stack.callback(daemon.stop)  # stopped before the scenarios' own cleanup (LIFO)
    rules = {plan.rule_name for _, plan in plans.values()}

    def ready() -> dict[str, float] | None:
        daemon.check_alive()
        text = fetch_text(port)
        found = probe_success(text) if text else {}
        return found if rules <= found.keys() else None

    states = wait_until(ready, READY_TIMEOUT, f"the reaction daemon's first run of every rule ({daemon.log})")

    def all_up() -> dict[str, float] | None:
        found = ready()
        return found if found and all(found[r] == 1.0 for r in rules) else None

    # A probe that is down now may come up (a connection being made): give it a few more cycles.
    try:
        states = wait_until(all_up, 10, "every reaction probe up")
    except BenchError:
        states = ready() or states
    results: dict[str, Figure] = {}
    for key, (scenario, plan) in plans.items():
        if states.get(plan.rule_name) != 1.0:
            results[key] = Figure(key, scenario.title, RULE_EVERY,
                                  unavailable=f"probe down: {_last_error(daemon.log, plan.rule_name)}")
            continue
        samples: list[float] = []
        try:
            for attempt in range(repeat):
                # A random phase against the rule's 1 s ticks: otherwise every attempt would start at the
                # same point of the cycle and report the same, unrepresentative delay.
                time.sleep(random.uniform(0.0, RULE_EVERY))
                samples.append(scenario.measure(attempt))
                say(f"  reaction ({key}) {attempt + 1}/{repeat}: {samples[-1]:.2f} s")
        except Exception as exc:  # one scenario failing must not cost the others their figures
            results[key] = Figure(key, scenario.title, RULE_EVERY, samples,
                                  unavailable=f"failed: {type(exc).__name__}: {exc}; daemon said: "
                                              f"{_last_error(daemon.log, plan.rule_name)}")
            continue
        # The fix is seen before the action returns (a terminated backend's socket closes first): wait for the log.
        done = _wait_count(daemon.log, plan.rule_name, repeat)
        results[key] = Figure(key, scenario.title, RULE_EVERY, samples,
                              note=f"{done} 'action done' log lines for {repeat} conditions")
    return results


def _rule_lines(log: Path, rule: str) -> list[str]:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if f"rule={rule}" in line.split()]


def _wait_count(log: Path, rule: str, wanted: int, timeout: float = 10.0) -> int:
    """'action done' lines for ``rule``, once there are ``wanted`` of them or ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    while (found := _count(log, "action done", rule)) < wanted and time.monotonic() < deadline:
        time.sleep(0.05)  # polling the log with a deadline
    return found


def _count(log: Path, message: str, rule: str) -> int:
    return sum(1 for line in _rule_lines(log, rule) if message in line)


def _last_error(log: Path, rule: str) -> str:
    bad = [line for line in _rule_lines(log, rule) if "down" in line or "failed" in line or "error" in line]
    return bad[-1] if bad else "nothing logged for this rule"
