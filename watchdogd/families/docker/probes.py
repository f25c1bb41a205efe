"""Docker probes: problem containers and reclaimable disk (memory and CPU live in ``docker_resources``).

Subjects are container names (the operator selects them, so they may be
metric labels). The container probes of one engine share one listing per
cycle (``DockerEngine.listing``, filtered here per rule); what the list
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

Evidence (``describe``, when a rule starts firing or before it acts) shows
what ``docker inspect`` and ``docker logs --tail 20`` would: per subject
container its state, exit code, OOM flag, restarts, times, health checks
and last log lines; for the engine and disk probes the engine's version
and the ``docker system df`` summary. Each read is bounded by the evidence
deadline (``DockerEngine.read``) and never counts as an engine outage.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from watchdogd.contracts import (
    Cardinality,
    Clock,
    EvidenceLimits,
    Params,
    ProbeError,
    ProbeSpec,
    Reading,
    Unit,
)
from watchdogd.evidencefit import fit_lines
from watchdogd.families.docker.common import (
    Selection,
    base_details,
    container_name,
    engine_of,
    parse_time,
    selected,
)
from watchdogd.families.docker.events import CAUSE_OPERATOR, CAUSE_WATCHDOGD, MATCH_SLACK
from watchdogd.families.docker.resources import CpuParams, CpuProbe, MemoryParams, MemoryProbe
from watchdogd.spec import Field
from watchdogd.units import Duration

if TYPE_CHECKING:
    from watchdogd.families.docker.events import EventHistory
    from watchdogd.families.docker.target import DockerEngine

SYNC_WAIT = 2.0
"""How long a probe waits for the event replay before classifying stops without it."""
FRESH_STOP = MATCH_SLACK
"""A container that stopped this recently may have its ``die`` event still in flight: the probe waits for it."""
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


def _await_fresh_die(history: EventHistory, info: Mapping[str, Any], now: float, budget: float) -> None:
    """Give the event stream a moment to deliver the ``die`` of a container that has only just stopped."""
    finished = parse_time((info.get("State") or {}).get("FinishedAt"))
    if finished is None or now - finished > FRESH_STOP or budget <= 0:
        return
    history.wait_for_die(str(info.get("Id") or ""), finished, budget)


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
        wait_until = time.monotonic() + min(SYNC_WAIT, engine.timeout)  # shared by all fresh stops of this run
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
            if history is not None and view.state == "exited":
                _await_fresh_die(history, info, now, wait_until - time.monotonic())
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

    def describe(self, readings: Sequence[Reading], limits: EvidenceLimits) -> dict[str, Any]:
        """Inspect and log tail of each container concerned: why it exited, whether it was OOM-killed, what it said."""
        return describe_containers(engine_of(self._engine), readings, limits)

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
        self._digest: tuple[float, dict[str, Any]] | None = None

    def measure(self) -> list[Reading]:
        df = engine_of(self._engine).df()
        by_kind = reclaimable(df)
        readings = [Reading(kind, by_kind[kind][0], {"objects": by_kind[kind][1]}) for kind in self._kinds]
        total = sum(r.value for r in readings)
        readings.append(Reading("total", total, {"kinds": self._kinds}))
        # What describe shows, kept small (not the whole answer): the evidence is taken right after the run
        # that fired, and a second ``system df`` would cost as much again, and fail while this one runs.
        self._digest = (time.monotonic(), {"disk use (system df)": disk_summary(df), **largest(df, LARGEST)})
        return readings

    def describe(self, readings: Sequence[Reading], limits: EvidenceLimits) -> dict[str, Any]:
        """The engine, the ``system df`` summary and the largest images, container layers and volumes.

        The ``system df`` part is the rule's own last run's when there is
        one (see ``measure``); only without it is the engine asked again.
        """
        return describe_engine(engine_of(self._engine), limits, largest_rows=True, measured=self._digest)


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

    def describe(self, readings: Sequence[Reading], limits: EvidenceLimits) -> dict[str, Any]:
        """The engine's version and counts and the ``system df`` summary; the errors say it when it does not answer."""
        return describe_engine(engine_of(self._engine), limits, largest_rows=False)


# --------------------------------------------------------------------------- evidence

LOG_LINES = 20
"""``docker logs --tail``: what the runbook looks at first, capped further by ``max_items``."""
LINE_CHARS = 200
HEALTH_CHECKS = 5
"""Docker keeps the last five health check results; all of them are shown (within ``max_items``)."""
LARGEST = 10
"""Rows of each "largest ..." list of the disk evidence (within ``max_items``)."""
MARGIN = 0.05
"""Seconds kept back from the deadline, so describe returns before it rather than at it."""
REDACTED = "<redacted>"


def _short(text: Any, limit: int = LINE_CHARS) -> str:
    return " ".join(str(text or "").split())[:limit]


def _when(text: Any) -> str | None:
    """Docker's RFC 3339 time to the second ("2024-05-01T10:00:00Z"); None for its "never" (year 1)."""
    raw = str(text or "")
    if not raw or raw.startswith("0001-"):
        return None
    return re.sub(r"\.\d+", "", raw)


def _left(limits: EvidenceLimits) -> float:
    return limits.deadline - time.monotonic() - MARGIN


def container_state(name: str, info: Mapping[str, Any], limits: EvidenceLimits) -> dict[str, Any]:
    """What ``docker inspect`` says first about a container in trouble; no environment, no secrets.

    The command is shown only with ``show_queries`` (it may carry
    passwords); health check outputs are cut to one short line each.
    """
    state = info.get("State") or {}
    config = info.get("Config") or {}
    host = info.get("HostConfig") or {}
    row: dict[str, Any] = {
        "container": name,
        "image": config.get("Image"),
        "status": state.get("Status"),
        "exit_code": state.get("ExitCode"),
        "oom_killed": bool(state.get("OOMKilled")),
        "error": _short(state.get("Error")) or None,
        "restart_count": info.get("RestartCount", 0),
        "restart_policy": str((host.get("RestartPolicy") or {}).get("Name") or "no"),
        "started_at": _when(state.get("StartedAt")),
        "finished_at": _when(state.get("FinishedAt")),
        "memory_limit_bytes": host.get("Memory") or None,
    }
    if limits.show_queries:
        row["command"] = _short(" ".join(str(a) for a in [info.get("Path") or "", *(info.get("Args") or [])]))
    else:
        row["command"] = REDACTED
    health = state.get("Health")
    if health:
        checks = list(health.get("Log") or [])[-max(1, min(HEALTH_CHECKS, limits.max_items)):]
        row["health"] = {
            "status": health.get("Status"),
            "failing_streak": health.get("FailingStreak"),
            "last checks": [
                {"ended": _when(c.get("End")), "exit_code": c.get("ExitCode"), "output": _short(c.get("Output"))}
                for c in checks
            ],
        }
    return row


def log_rows(lines: Sequence[tuple[str, str]], count: int) -> list[str]:
    """The last ``count`` lines, each cut to ``LINE_CHARS``; stderr lines marked, as an operator reads them."""
    rows = []
    for stream, text in lines[-count:] if count > 0 else []:
        prefix = "" if stream == "stdout" else f"[{stream}] "
        rows.append((prefix + text)[:LINE_CHARS])
    return rows


def describe_containers(engine: DockerEngine, readings: Sequence[Reading], limits: EvidenceLimits) -> dict[str, Any]:
    """``docker inspect`` and ``docker logs --tail 20`` of each container concerned, within the limits.

    A container is found by the id its reading carries (a rename between
    the reading and now does not lose it), else by its name (the engine's
    outage readings carry no details). One failing container does not stop
    the others: its error is shown in its place.
    """
    refs: dict[str, str] = {}
    for reading in readings:
        refs.setdefault(reading.subject, str(reading.details.get("id") or reading.subject))
    names = list(refs)
    shown = names[: limits.max_items]
    states: list[dict[str, Any]] = []
    logs: dict[str, Any] = {}
    cut: dict[str, Any] = {}
    if len(names) > len(shown):
        cut["max_items"] = f"{len(names) - len(shown)} more container(s) not described"
    tail = min(LOG_LINES, limits.max_items)
    for index, name in enumerate(shown):
        if _left(limits) <= 0:
            cut["deadline"] = f"{len(shown) - index} container(s) not described: {', '.join(shown[index:])}"[:300]
            break
        try:
            info = engine.inspect_within(refs[name], _left(limits))
        except ProbeError as exc:
            states.append({"container": name, "error": _short(exc, 300)})
            continue
        if info is None:
            states.append({"container": name, "error": "no longer exists"})
            continue
        states.append(container_state(name, info, limits))
        if _left(limits) <= 0:
            rest = f"; not described: {', '.join(shown[index + 1:])}" if shown[index + 1:] else ""
            cut["deadline"] = f"log lines of {name} not read{rest}"[:300]
            break
        try:
            lines, truncated = engine.logs(str(info.get("Id") or refs[name]), tail=tail, timeout=_left(limits))
        except ProbeError as exc:
            logs[name] = {"error": _short(exc, 300)}
            continue
        logs[name] = log_rows(lines, tail)
        if truncated:
            cut.setdefault("log read", f"the log read of {name} stopped early (size or deadline)")
    sections: dict[str, Any] = {"containers": states, "last log lines": logs, "cut": cut}
    dropped = fit_lines(sections, "last log lines", limits.max_bytes, "log lines")
    if dropped:
        cut["max_bytes"] = ", ".join(f"{count} {what}" for what, count in dropped.items()) + " dropped to fit"
    if not cut:
        del sections["cut"]
    return sections


def disk_summary(df: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``docker system df`` per kind: how many, how big, how many in use, and what ``docker.prune`` could free.

    ``prunable_bytes`` is ``docker.prune``'s measure (dangling images,
    stopped containers, unused and unshared build cache, unreferenced
    volumes), not the engine's wider "reclaimable" column.
    """
    images = list(df.get("Images") or [])
    containers = list(df.get("Containers") or [])
    volumes = list(df.get("Volumes") or [])
    cache = list(df.get("BuildCache") or [])
    prunable = reclaimable(df)
    layers = df.get("LayersSize")
    return {
        "images": {
            "count": len(images),
            "in use": sum(1 for i in images if int(i.get("Containers") or 0) > 0),
            "bytes": int(layers) if isinstance(layers, int | float) else int(_total(i.get("Size") for i in images)),
            "prunable_bytes": int(prunable["images"][0]),
        },
        "containers": {
            "count": len(containers),
            "running": sum(1 for c in containers if str(c.get("State", "")).lower() == "running"),
            "bytes": int(_total(c.get("SizeRw") for c in containers)),
            "prunable_bytes": int(prunable["containers"][0]),
        },
        "volumes": {
            "count": len(volumes),
            "in use": sum(1 for v in volumes if int((v.get("UsageData") or {}).get("RefCount") or 0) > 0),
            "bytes": int(_total((v.get("UsageData") or {}).get("Size") for v in volumes)),
            "prunable_bytes": int(prunable["volumes"][0]),
        },
        "build cache": {
            "count": len(cache),
            "in use": sum(1 for b in cache if b.get("InUse")),
            "bytes": int(_total(b.get("Size") for b in cache)),
            "prunable_bytes": int(prunable["build_cache"][0]),
        },
    }


def largest(df: Mapping[str, Any], rows: int) -> dict[str, list[dict[str, Any]]]:
    """The biggest images, container writable layers and volumes: where the disk went, as ``system df -v``."""

    def top(items: list[Mapping[str, Any]], size: Any) -> list[Mapping[str, Any]]:
        return sorted(items, key=lambda item: float(size(item) or 0), reverse=True)[:rows]

    images = top(list(df.get("Images") or []), lambda i: i.get("Size"))
    containers = top(list(df.get("Containers") or []), lambda c: c.get("SizeRw"))
    volumes = top(list(df.get("Volumes") or []), lambda v: (v.get("UsageData") or {}).get("Size"))
    return {
        "largest images": [
            {
                "image": next((t for t in i.get("RepoTags") or [] if t != "<none>:<none>"), None)
                or str(i.get("Id") or "")[:19],
                "bytes": i.get("Size"),
                "containers": i.get("Containers"),
                "dangling": _is_dangling(i),
            }
            for i in images
        ],
        "largest container layers": [
            {"container": container_name(c), "bytes": c.get("SizeRw") or 0, "state": c.get("State")}
            for c in containers
        ],
        "largest volumes": [
            {
                "volume": _short(v.get("Name"), 80),
                "bytes": (v.get("UsageData") or {}).get("Size"),
                "containers": (v.get("UsageData") or {}).get("RefCount"),
            }
            for v in volumes
        ],
    }


def engine_summary(version: Mapping[str, Any], info: Mapping[str, Any] | None, max_items: int) -> dict[str, Any]:
    """The engine's version and what it runs; only named fields (``/info`` also holds proxies with passwords)."""
    row: dict[str, Any] = {
        "version": version.get("Version"),
        "api_version": version.get("ApiVersion"),
        "os": version.get("Os"),
        "arch": version.get("Arch"),
        "kernel": version.get("KernelVersion"),
    }
    if info is not None:
        row.update({
            "containers running": info.get("ContainersRunning"),
            "containers stopped": info.get("ContainersStopped"),
            "containers paused": info.get("ContainersPaused"),
            "images": info.get("Images"),
            "storage_driver": info.get("Driver"),
            "logging_driver": info.get("LoggingDriver"),
            "cgroup_version": info.get("CgroupVersion"),
            "root_dir": info.get("DockerRootDir"),
            "cpus": info.get("NCPU"),
            "memory_bytes": info.get("MemTotal"),
            "warnings": [_short(w) for w in list(info.get("Warnings") or [])[:max_items]],
        })
    return row


def describe_engine(
    engine: DockerEngine,
    limits: EvidenceLimits,
    *,
    largest_rows: bool,
    measured: tuple[float, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The engine (``docker version``/``info``) and ``docker system df``, each step within the deadline.

    A step that fails (the engine down, ``system df`` slower than the
    deadline on a big host) leaves its error in its section and the
    steps before it stand. ``measured``: (monotonic time, sections) of a
    ``system df`` the probe made itself, shown instead of asking again.
    """
    sections: dict[str, Any] = {}
    cut: dict[str, str] = {}
    engine_row: dict[str, Any] = {"url": engine.url}
    sections["engine"] = engine_row
    if _left(limits) > 0:
        try:
            version = engine.version(_left(limits))
            info = engine.info(_left(limits)) if _left(limits) > 0 else None
            engine_row.update(engine_summary(version, info, limits.max_items))
        except ProbeError as exc:
            engine_row["error"] = _short(exc, 300)
    else:
        cut["deadline"] = "the engine was not asked"
    rows = min(LARGEST, limits.max_items)
    if measured is not None:
        taken, digest = measured
        sections.update({name: list(value[:rows]) if isinstance(value, list) else value
                         for name, value in digest.items()})
        sections["system df taken"] = f"{time.monotonic() - taken:.0f}s before, by the rule's own run"
    elif "error" in engine_row:
        pass  # the engine did not answer: system df would only repeat why
    elif _left(limits) <= 0:
        cut["deadline"] = "the engine was not asked" if "version" not in engine_row else "system df not read"
    else:
        try:
            df = engine.df(_left(limits))
        except ProbeError as exc:
            sections["disk use (system df)"] = {"error": _short(exc, 300)}
        else:
            sections["disk use (system df)"] = disk_summary(df)
            if largest_rows:
                sections.update(largest(df, rows))
    sections["cut"] = cut
    dropped = fit_lines(sections, "", limits.max_bytes, "log lines")
    if dropped:
        cut["max_bytes"] = f"{dropped.get('rows', 0)} rows dropped to fit"
    if not cut:
        del sections["cut"]
    return sections


class _DescribesContainers:
    """``describe`` for the resource probes (``resources.py``), whose subjects are containers too."""

    _engine: Any

    def describe(self, readings: Sequence[Reading], limits: EvidenceLimits) -> dict[str, Any]:
        """The container's state and last log lines: a container near its memory limit says so in its logs."""
        return describe_containers(engine_of(self._engine), readings, limits)


class ContainerMemoryProbe(_DescribesContainers, MemoryProbe):
    """``docker.container_memory``: ``resources.MemoryProbe`` measures, the container evidence describes."""


class ContainerCpuProbe(_DescribesContainers, CpuProbe):
    """``docker.container_cpu``: ``resources.CpuProbe`` measures, the container evidence describes."""


# --------------------------------------------------------------------------- table


PROBES: dict[str, ProbeSpec] = {
    "docker.containers": ProbeSpec(
        ContainersParams, ContainersProbe, Unit.SECONDS, Cardinality.LOW,
        "seconds each selected container has been exited, OOM-killed, dead, restarting or unhealthy (0 = fine)",
        target_kind="docker", subjects="container",
    ),
    "docker.container_memory": ProbeSpec(
        MemoryParams, ContainerMemoryProbe, Unit.PERCENT, Cardinality.LOW,
        "memory used percent of each running container's limit",
        target_kind="docker", subjects="container",
    ),
    "docker.container_cpu": ProbeSpec(
        CpuParams, ContainerCpuProbe, Unit.PERCENT, Cardinality.LOW,
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
