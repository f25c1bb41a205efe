"""Docker probes: problem containers and reclaimable disk (memory and CPU live in ``docker_resources``).

Subjects are container names (the operator selects them, so they may be
metric labels). Every probe makes one listing call per run; what the list
cannot say is fetched only for the few containers that need it:

* ``docker.containers`` inspects only containers the list already shows in
  trouble (exited non-zero, dead, restarting, unhealthy) for the exit code,
  OOM flag, restart count and times; a healthy container costs nothing but
  its line in the list, and an exited one is inspected once (cached until
  the event stream says it started or died again).
* ``docker.disk`` is one ``system df`` call.
* ``docker.engine`` is one ``GET /_ping``: the availability probe a
  "restart dockerd" rule hangs off.

See ``docs/docker.md`` for how an operator's ``docker stop`` is told apart
from a crash (``events.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from watchdogd.contracts import Cardinality, Clock, Params, ProbeSpec, Reading, Unit
from watchdogd.families.docker.common import Selection, base_details, engine_of, parse_time, selected
from watchdogd.families.docker.events import CAUSE_OPERATOR, CAUSE_WATCHDOGD
from watchdogd.families.docker.resources import CpuParams, CpuProbe, MemoryParams, MemoryProbe
from watchdogd.units import Duration

if TYPE_CHECKING:
    from watchdogd.families.docker.events import EventHistory
    from watchdogd.families.docker.target import DockerEngine

SYNC_WAIT = 2.0
"""How long a probe waits for the event replay before classifying stops without it."""
MIN_PROBLEM_SECONDS = 0.001
"""A container in trouble reads at least this, so ``above: 0`` fires on it however fresh the trouble is."""

# Exit statuses of a process ended by SIGINT, SIGKILL (without the OOM flag) and SIGTERM: what `docker stop`
# and `docker kill` leave behind. Only used for stops that happened before the event history begins.
SIGNAL_EXIT_CODES = frozenset({130, 137, 143})
SELF_RESTARTING_POLICIES = frozenset({"always", "unless-stopped"})

Condition = Literal["exited", "oom_killed", "dead", "restarting", "unhealthy"]
ALL_CONDITIONS: tuple[Condition, ...] = ("exited", "oom_killed", "dead", "restarting", "unhealthy")


# --------------------------------------------------------------------------- status text

_EXIT_RE = re.compile(r"^(?:Exited|Restarting) \((-?\d+)\)")
_HEALTH_RE = re.compile(r"\((healthy|unhealthy|health: starting)\)")


@dataclass(frozen=True, slots=True)
class ListView:
    """What the list call alone says about a container."""

    state: str
    exit_code: int | None
    health: str | None


def list_view(row: Mapping[str, Any]) -> ListView:
    """Read State and the Status text ("Exited (3) 2 minutes ago", "Up 5 minutes (unhealthy)")."""
    status = str(row.get("Status") or "")
    exit_match = _EXIT_RE.match(status)
    health_match = _HEALTH_RE.search(status)
    health = health_match.group(1) if health_match else None
    return ListView(
        state=str(row.get("State") or "").lower(),
        exit_code=int(exit_match.group(1)) if exit_match else None,
        health="starting" if health == "health: starting" else health,
    )


def suspect(view: ListView, conditions: frozenset[str], ok_exit_codes: frozenset[int]) -> bool:
    """Whether the list shows a possible problem worth an inspect (the rest are fine without one)."""
    if view.state == "exited":
        if view.exit_code is not None and view.exit_code in ok_exit_codes:
            return False
        return bool(conditions & {"exited", "oom_killed"})
    if view.state in ("dead", "restarting"):
        return view.state in conditions
    return view.state == "running" and view.health == "unhealthy" and "unhealthy" in conditions


# --------------------------------------------------------------------------- docker.containers


class ContainersParams(Selection):
    conditions: list[Condition] = Field(default=list(ALL_CONDITIONS), min_length=1)
    ok_exit_codes: list[int] = [0]
    include_stopped_by_operator: bool = False


@dataclass(frozen=True, slots=True)
class Problem:
    """The verdict for one suspect container after inspecting it."""

    condition: str | None  # None: not a problem after all (operator stop, an ok code, a condition not watched)
    since: float | None
    details: dict[str, Any]


def assumed_operator_stop(exit_code: int | None, oom: bool, restart_policy: str) -> bool:
    """For a stop older than the event history: was it most likely deliberate?

    Docker itself restarts ``always``/``unless-stopped`` containers unless a
    person stopped them, and ``docker stop``/``docker kill`` leave exit 143
    or 137. A program's own failure exits with its own code (1, 3, 139...).
    """
    if oom:
        return False
    return restart_policy in SELF_RESTARTING_POLICIES or exit_code in SIGNAL_EXIT_CODES


def health_since(state: Mapping[str, Any], interval: float) -> float | None:
    """When the current failing streak began, from the health log (the last five checks) and the streak."""
    health = state.get("Health") or {}
    streak = int(health.get("FailingStreak") or 0)
    log = list(health.get("Log") or [])
    failing: list[Mapping[str, Any]] = []
    for entry in reversed(log):
        if int(entry.get("ExitCode") or 0) == 0:
            break
        failing.append(entry)
    if not failing:
        return None
    first = parse_time(str(failing[-1].get("Start") or ""))
    if first is None:
        return None
    missing = max(streak - len(failing), 0)  # checks older than the log keeps
    return first - missing * interval


def classify(
    view: ListView,
    info: Mapping[str, Any],
    params: ContainersParams,
    history: EventHistory | None,
) -> Problem:
    """Decide what a suspect container's trouble is, and since when.

    Pure: takes the list view, the inspect data and the event history.
    """
    state = info.get("State") or {}
    config = info.get("Config") or {}
    host_config = info.get("HostConfig") or {}
    cid = str(info.get("Id") or "")
    exit_code = state.get("ExitCode")
    policy = str((host_config.get("RestartPolicy") or {}).get("Name") or "no")
    finished = parse_time(state.get("FinishedAt"))
    oom = bool(state.get("OOMKilled")) or (history is not None and history.oom_killed(cid, finished))
    details: dict[str, Any] = {
        "exit_code": exit_code,
        "oom_killed": oom,
        "restart_count": info.get("RestartCount", 0),
        "restart_policy": policy,
    }
    conditions = set(params.conditions)
    status = str(state.get("Status") or view.state)
    if status == "exited":
        if isinstance(exit_code, int) and exit_code in params.ok_exit_codes and not oom:
            return Problem(None, None, details)
        condition = "oom_killed" if oom else "exited"
        if condition not in conditions:
            return Problem(None, None, details)
        if not oom:
            stopped_by = _stopped_by(cid, finished, exit_code, policy, history)
            if stopped_by is not None:
                details["stopped_by"] = stopped_by
                if stopped_by.startswith(CAUSE_OPERATOR) and not params.include_stopped_by_operator:
                    return Problem(None, finished, details)
        return Problem(condition, finished, details)
    if status in ("dead", "restarting"):
        return Problem(status if status in conditions else None, finished, details)
    health = state.get("Health") or {}
    if status == "running" and health.get("Status") == "unhealthy" and "unhealthy" in conditions:
        interval = float((config.get("Healthcheck") or {}).get("Interval") or 30e9) / 1e9
        since = (history.unhealthy_since(cid) if history is not None else None) or health_since(state, interval)
        log = list(health.get("Log") or [])
        details["failing_streak"] = health.get("FailingStreak")
        if log:
            details["health_output"] = " ".join(str(log[-1].get("Output") or "").split())[:200]
        return Problem("unhealthy", since, details)
    return Problem(None, None, details)


def _stopped_by(
    cid: str, finished: float | None, exit_code: Any, policy: str, history: EventHistory | None
) -> str | None:
    cause = history.stop_cause(cid, finished) if history is not None else None
    if cause == CAUSE_OPERATOR:
        return CAUSE_OPERATOR
    if cause == CAUSE_WATCHDOGD:
        return CAUSE_WATCHDOGD
    if cause is not None:
        return None  # the engine saw it exit by itself: a crash
    code = exit_code if isinstance(exit_code, int) else None
    if assumed_operator_stop(code, False, policy):
        return f"{CAUSE_OPERATOR} (assumed: stopped before the event history)"
    return None


class ContainersProbe:
    """Per selected container: seconds it has been in trouble (0 when fine).

    Trouble is one of ``conditions``: exited with a code not in
    ``ok_exit_codes`` (not by an operator, unless included), OOM-killed,
    dead, restarting (Docker's restart policy looping) or unhealthy. The
    value grows from the moment Docker says it happened (``FinishedAt``,
    the first failing health check), so ``above: 5m`` works across
    watchdogd restarts.
    """

    def __init__(self, params: ContainersParams, target: Any, clock: Clock) -> None:
        self._params = params
        self._engine = target
        self._clock = clock
        self._conditions = frozenset(params.conditions)
        self._ok_codes = frozenset(params.ok_exit_codes)
        self._cache: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}

    def measure(self) -> list[Reading]:
        engine = engine_of(self._engine)
        rows = selected(engine, self._params)
        history = engine.synced_history(min(SYNC_WAIT, engine.timeout))
        now = self._clock()
        readings: list[Reading] = []
        cache: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        for name, row in rows:
            details = base_details(row)
            view = list_view(row)
            if not suspect(view, self._conditions, self._ok_codes):
                readings.append(Reading(name, 0.0, details))
                continue
            info = self._inspect(engine, str(row.get("Id")), view, history, cache)
            if info is None:
                continue  # removed between the list and the inspect
            problem = classify(view, info, self._params, history)
            details.update(problem.details)
            if problem.condition is None:
                readings.append(Reading(name, 0.0, details))
                continue
            details["condition"] = problem.condition
            details["since"] = problem.since
            value = max(now - problem.since, MIN_PROBLEM_SECONDS) if problem.since else MIN_PROBLEM_SECONDS
            readings.append(Reading(name, value, details))
        self._cache = cache  # containers no longer listed drop out
        return readings

    def _inspect(
        self,
        engine: DockerEngine,
        cid: str,
        view: ListView,
        history: EventHistory | None,
        cache: dict[str, tuple[tuple[Any, ...], dict[str, Any]]],
    ) -> dict[str, Any] | None:
        """Inspect, reusing the last answer for a stopped container the event stream saw no change on."""
        stable = view.state in ("exited", "dead") and history is not None
        key = (view.state, view.exit_code, history.generation(cid) if history is not None else None)
        cached = self._cache.get(cid)
        if stable and cached is not None and cached[0] == key:
            cache[cid] = cached
            return cached[1]
        info = engine.inspect(cid)
        if info is not None and stable:
            cache[cid] = (key, info)
        return info


# --------------------------------------------------------------------------- docker.disk

DiskKind = Literal["containers", "images", "build_cache", "volumes"]


class DiskParams(Params):
    kinds: list[DiskKind] = Field(default=["containers", "images", "build_cache"], min_length=1)


def _is_dangling(image: Mapping[str, Any]) -> bool:
    tags = [t for t in image.get("RepoTags") or [] if t != "<none>:<none>"]
    return not tags


def reclaimable(df: Mapping[str, Any]) -> dict[str, tuple[float, int]]:
    """Bytes (and object count) per kind that ``docker.prune`` can free: what it removes, nothing more.

    Stopped containers' writable layers; dangling images no container uses;
    build cache neither in use nor shared; volumes no container references.
    """
    containers = [
        c for c in df.get("Containers") or [] if str(c.get("State", "")).lower() in ("exited", "dead", "created")
    ]
    images = [i for i in df.get("Images") or [] if _is_dangling(i) and int(i.get("Containers") or 0) <= 0]
    cache = [b for b in df.get("BuildCache") or [] if not b.get("InUse") and not b.get("Shared")]
    volumes = [
        v for v in df.get("Volumes") or [] if int((v.get("UsageData") or {}).get("RefCount", 1) or 0) == 0
    ]
    return {
        "containers": (_total(c.get("SizeRw") for c in containers), len(containers)),
        "images": (_total(_own_size(i) for i in images), len(images)),
        "build_cache": (_total(b.get("Size") for b in cache), len(cache)),
        "volumes": (_total((v.get("UsageData") or {}).get("Size") for v in volumes), len(volumes)),
    }


def _own_size(image: Mapping[str, Any]) -> float:
    size = float(image.get("Size") or 0)
    shared = float(image.get("SharedSize") or 0)
    return size - shared if 0 < shared <= size else size


def _total(values: Iterable[Any]) -> float:
    return float(sum(v for v in values if isinstance(v, int | float) and v > 0))


class DiskProbe:
    """Reclaimable bytes per kind (subjects ``containers``, ``images``, ``build_cache``, ``volumes``) and ``total``.

    One ``system df`` call, which the engine computes by walking layer
    sizes: on a big host it takes seconds, so give this rule ``every: 5m``.
    """

    def __init__(self, params: DiskParams, target: Any, clock: Clock) -> None:
        self._kinds = list(dict.fromkeys(params.kinds))
        self._engine = target

    def measure(self) -> list[Reading]:
        by_kind = reclaimable(engine_of(self._engine).df())
        readings = [Reading(kind, by_kind[kind][0], {"objects": by_kind[kind][1]}) for kind in self._kinds]
        total = sum(r.value for r in readings)
        readings.append(Reading("total", total, {"kinds": self._kinds}))
        return readings


# --------------------------------------------------------------------------- docker.engine


class EngineParams(Params):
    timeout: Duration = Field(default=5.0, gt=0, le=86400.0)
    """How long the engine may take to answer ``/_ping``; the engine is down after that."""


class EngineProbe:
    """Seconds for the engine to answer ``/_ping``; raises when it does not answer.

    An availability probe: the socket missing, refused, permission denied or
    no answer within ``timeout`` (a hung dockerd) is the finding, and the
    engine reports it on this target's subject (``on_down: fire``), so
    ``above: 2s`` fires on a slow engine and on a dead one, and a
    ``systemd.restart`` with ``unit: docker.service`` can hang off it. The
    subject is the target's URL: one engine, one stable subject.
    """

    def __init__(self, params: EngineParams, target: Any, clock: Clock) -> None:
        self._timeout = params.timeout
        self._engine = target
        self._subject = str(getattr(target, "url", "") or "docker")

    def outage_subjects(self) -> list[str]:
        return [self._subject]

    def measure(self) -> list[Reading]:
        seconds = engine_of(self._engine).ping(self._timeout)
        return [Reading(self._subject, seconds, {"url": self._subject})]


# --------------------------------------------------------------------------- table


PROBES: dict[str, ProbeSpec] = {
    "docker.containers": ProbeSpec(
        ContainersParams, ContainersProbe, Unit.SECONDS, Cardinality.LOW,
        "seconds each selected container has been exited, OOM-killed, dead, restarting or unhealthy (0 = fine)",
        target_kind="docker", subjects="container",
    ),
    "docker.container_memory": ProbeSpec(
        MemoryParams, MemoryProbe, Unit.PERCENT, Cardinality.LOW,
        "memory used percent of each running container's limit",
        target_kind="docker", subjects="container",
    ),
    "docker.container_cpu": ProbeSpec(
        CpuParams, CpuProbe, Unit.PERCENT, Cardinality.LOW,
        "CPU used percent of each running container's allowance, between two runs",
        target_kind="docker", subjects="container",
    ),
    "docker.disk": ProbeSpec(
        DiskParams, DiskProbe, Unit.BYTES, Cardinality.LOW,
        "bytes docker.prune could reclaim: stopped containers, dangling images, build cache, volumes",
        target_kind="docker", subjects="docker",
    ),
    "docker.engine": ProbeSpec(
        EngineParams, EngineProbe, Unit.SECONDS, Cardinality.LOW,
        "seconds for the Docker engine to answer /_ping; down (fires, on_down) when it does not answer",
        target_kind="docker", availability=True, subjects="docker",
    ),
}
