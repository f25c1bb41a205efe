"""Docker actions: start or restart the containers a probe found in trouble, and reclaim disk.

``docker.start``/``docker.restart`` act per container (subject = container
name, the reading's ``id`` pins the exact container). The backoff between
attempts is the engine guard's per-subject cooldown (``cooldown: 10s``,
``max_cooldown: 5m``, reset after ``stable_for``) and the crash-loop stop is
its ``max_actions`` give-up: Kubernetes' CrashLoopBackOff, with a limit
and an audit trail. Before acting each container is inspected again (in
dry-run too) so one that was started, removed or stopped by an operator in
the meantime is left alone.

``docker.prune`` removes exactly what it listed (stopped containers and
dangling images older than ``older_than``, optionally unused volumes, plus
build cache), one object at a time, so dry-run shows the very objects a
real run would remove and a run is bounded by ``max_items``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from watchdogd.contracts import ANY_SUBJECT, ActionParams, ActionResult, ActionSpec, Clock, ItemResult, Reading, Unit
from watchdogd.families.docker.common import OPT_OUT_LABEL, check_labels, container_name, label_matches, parse_time
from watchdogd.families.docker.events import CAUSE_OPERATOR
from watchdogd.families.docker.target import DockerError
from watchdogd.spec import Field, field_validator, model_validator
from watchdogd.units import Duration, format_value

if TYPE_CHECKING:
    from watchdogd.families.docker.target import DockerEngine

OWN_STOP_SLACK = 30.0
"""Extra seconds after the stop timeout during which a kill event is still ours, not an operator's."""


def _engine(target: Any) -> DockerEngine:
    if target is None:
        raise DockerError("no Docker target client (is targets.docker configured?)")
    engine: DockerEngine = target
    return engine


def _timed_out(subject: str) -> ItemResult:
    return ItemResult(subject, False, "not attempted: the action's timeout was reached")


def _ref(reading: Reading) -> str:
    """How an action names the reading's container: its id when the probe gave one, else the subject (a name)."""
    return str(reading.details.get("id") or reading.subject)


def _url(target: Any) -> str:
    """The engine's URL for a thing key; no I/O, and no failure for a missing target (``run`` reports that)."""
    return str(getattr(target, "url", "") or "docker")


# --------------------------------------------------------------------------- start / restart


class StartParams(ActionParams):
    pass


class RestartParams(ActionParams):
    stop_timeout: Duration = Field(default=10.0, ge=0)

    @model_validator(mode="after")
    def _fits(self) -> RestartParams:
        if self.stop_timeout >= self.timeout:
            raise ValueError(
                f"stop_timeout ({self.stop_timeout:g}s) must be shorter than the action's timeout ({self.timeout:g}s)"
            )
        return self


@dataclass(frozen=True, slots=True)
class _Verb:
    name: str  # "start" / "restart"
    done: str
    would: str
    needs_stopped: bool  # start skips a running container; restart acts on any


_START = _Verb("start", "started", "would start", needs_stopped=True)
_RESTART = _Verb("restart", "restarted", "would restart", needs_stopped=False)


class ContainerAction:
    """Start or restart each given container, re-checking it first."""

    def __init__(self, verb: _Verb, params: StartParams | RestartParams, target: Any, clock: Clock) -> None:
        self._verb = verb
        self._params = params
        self._engine = target
        self._clock = clock
        self._stop_timeout = params.stop_timeout if isinstance(params, RestartParams) else 0.0

    def run(self, subjects: Sequence[Reading], *, dry_run: bool) -> ActionResult:
        try:
            engine = _engine(self._engine)
        except DockerError as exc:
            return ActionResult(ok=False, detail=str(exc), error=str(exc))
        deadline = time.monotonic() + self._params.timeout
        items = []
        for reading in subjects:
            if time.monotonic() >= deadline:
                items.append(_timed_out(reading.subject))
                continue
            items.append(self._one(engine, reading, dry_run))
        acted = sum(1 for item in items if item.ok and item.info.get("acted"))
        failed = sum(1 for item in items if not item.ok)
        verb = self._verb.would if dry_run else self._verb.done
        summary = f"{verb} {acted} of {len(items)} container(s)"
        if failed:
            summary += f"; {failed} failed"
        return ActionResult(
            ok=not failed, items=tuple(items), detail=summary,
            error=f"{failed} container(s) could not be {self._verb.done}" if failed else None,
        )

    def thing(self, reading: Reading) -> str:
        """The container this reading makes us act on (``NamesThing``), on this engine."""
        return f"container {_ref(reading)} on {_url(self._engine)}"

    def _one(self, engine: DockerEngine, reading: Reading, dry_run: bool) -> ItemResult:
        subject = reading.subject
        ref = _ref(reading)
        try:
            info = engine.inspect(ref)
        except DockerError as exc:
            return ItemResult(subject, False, str(exc), {"id": ref})
        if info is None:
            return ItemResult(subject, True, "left alone: the container no longer exists", {"id": ref})
        state = info.get("State") or {}
        facts: dict[str, Any] = {
            "id": info.get("Id"),
            "image": (info.get("Config") or {}).get("Image"),
            "state_before": state.get("Status"),
            "exit_code": state.get("ExitCode"),
            "restart_count": info.get("RestartCount"),
            "condition": reading.details.get("condition"),
        }
        reason = self._leave_alone(engine, reading, info)
        if reason is not None:
            return ItemResult(subject, True, f"left alone: {reason}", facts)
        if dry_run:
            return ItemResult(subject, True, f"{self._verb.would} ({self._describe(state)})", {**facts, "acted": True})
        try:
            if self._verb is _START:
                engine.start(str(info["Id"]))
            else:
                # Announced first, so the kill and stop events this causes are not taken for an operator's.
                engine.history.expect_own(str(info["Id"]), self._stop_timeout + engine.timeout + OWN_STOP_SLACK)
                engine.events.ensure_started()
                engine.restart(str(info["Id"]), self._stop_timeout)
        except DockerError as exc:
            return ItemResult(subject, False, str(exc), facts)
        return ItemResult(subject, True, f"{self._verb.done} (was {self._describe(state)})", {**facts, "acted": True})

    def _leave_alone(self, engine: DockerEngine, reading: Reading, info: dict[str, Any]) -> str | None:
        """Why this container must not be touched now, or None."""
        state = info.get("State") or {}
        if state.get("Paused"):
            return "the container is paused (an operator paused it; docker unpause to resume)"
        if self._verb.needs_stopped and state.get("Running"):
            return "already running"
        if state.get("Status") == "removing":
            return "the container is being removed"
        if not state.get("Running") and not str(reading.details.get("stopped_by", "")).startswith(CAUSE_OPERATOR):
            # Stopped by a person between the probe and now: the probe did not include it, so neither do we.
            finished = parse_time(state.get("FinishedAt"))
            if engine.history.stop_cause(str(info.get("Id")), finished) == CAUSE_OPERATOR:
                return "stopped by an operator since it was measured"
        return None

    @staticmethod
    def _describe(state: dict[str, Any]) -> str:
        status = str(state.get("Status") or "unknown")
        if status == "exited":
            oom = ", OOM-killed" if state.get("OOMKilled") else ""
            return f"exited with {state.get('ExitCode')}{oom}"
        health = (state.get("Health") or {}).get("Status")
        return f"{status}, {health}" if health else status


def _start_factory(params: StartParams, target: Any, clock: Clock) -> ContainerAction:
    return ContainerAction(_START, params, target, clock)


def _restart_factory(params: RestartParams, target: Any, clock: Clock) -> ContainerAction:
    return ContainerAction(_RESTART, params, target, clock)


# --------------------------------------------------------------------------- prune


class PruneParams(ActionParams):
    older_than: Duration = 86_400.0
    containers: bool = True
    images: bool = True
    build_cache: bool = True
    volumes: bool = False
    labels: list[str] = []
    exclude_labels: list[str] = [OPT_OUT_LABEL]
    max_items: int = Field(default=500, ge=1, le=100_000)

    @field_validator("labels", "exclude_labels")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        return check_labels(value)

    @model_validator(mode="after")
    def _something(self) -> PruneParams:
        if not (self.containers or self.images or self.build_cache or self.volumes):
            raise ValueError("nothing to prune: enable at least one of containers, images, build_cache, volumes")
        return self


@dataclass(frozen=True, slots=True)
class _Candidate:
    kind: str  # container / image / volume
    ref: str  # what the remove call takes
    label: str  # what the audit shows
    age: float
    size: float | None


class PruneAction:
    """Remove old stopped containers, dangling images, (opt-in) unused volumes and old build cache."""

    def __init__(self, params: PruneParams, target: Any, clock: Clock) -> None:
        self._params = params
        self._engine = target
        self._clock = clock

    def thing(self, reading: Reading) -> str:
        """The engine's disk, whatever the subject (``NamesThing``): two rules pruning it share a cooldown."""
        return f"engine {_url(self._engine)}"

    def run(self, subjects: Sequence[Reading], *, dry_run: bool) -> ActionResult:
        """Prune once, whatever and however many subjects fired (they only say space is short)."""
        deadline = time.monotonic() + self._params.timeout
        try:
            engine = _engine(self._engine)
            candidates = self._candidates(engine)
        except DockerError as exc:
            return ActionResult(ok=False, detail=str(exc), error=str(exc))
        chosen, left = candidates[: self._params.max_items], len(candidates) - self._params.max_items
        items: list[ItemResult] = []
        for cand in chosen:
            if time.monotonic() >= deadline:
                items.append(_timed_out(f"{cand.kind}/{cand.label}"))
                continue
            items.append(self._remove(engine, cand, dry_run))
        cache_item = self._build_cache(engine, dry_run) if self._params.build_cache else None
        if cache_item is not None:
            items.append(cache_item)
        failed = sum(1 for item in items if not item.ok)
        summary = self._summary(items, dry_run, max(left, 0))
        return ActionResult(
            ok=not failed, items=tuple(items), detail=summary,
            error=f"{failed} object(s) could not be removed" if failed else None,
        )

    def _candidates(self, engine: DockerEngine) -> list[_Candidate]:
        """Everything eligible, oldest first; every call here is read-only (dry-run runs it all)."""
        now = self._clock()
        found: list[_Candidate] = []
        if self._params.containers:
            found += self._containers(engine, now)
        if self._params.images:
            found += self._images(engine, now)
        if self._params.volumes:
            found += self._volumes(engine, now)
        return sorted(found, key=lambda c: -c.age)

    def _wanted(self, labels: dict[str, str] | None) -> bool:
        labels = labels or {}
        if not all(label_matches(spec, labels) for spec in self._params.labels):
            return False
        return not any(label_matches(spec, labels) for spec in self._params.exclude_labels)

    def _label_filter(self) -> dict[str, list[str]]:
        return {"label": list(self._params.labels)} if self._params.labels else {}

    def _containers(self, engine: DockerEngine, now: float) -> list[_Candidate]:
        rows = engine.containers({"status": ["exited", "dead", "created"], **self._label_filter()})
        found = []
        for row in rows:
            if not self._wanted(row.get("Labels")):
                continue
            info = engine.inspect(str(row["Id"]))
            if info is None:
                continue
            state = info.get("State") or {}
            # Age since it stopped (not since it was created, as `docker container prune --filter until`
            # counts): a month-old container that crashed a minute ago keeps its logs for the post-mortem.
            since = parse_time(state.get("FinishedAt")) or parse_time(info.get("Created"))
            if since is None or now - since < self._params.older_than:
                continue
            found.append(_Candidate("container", str(row["Id"]), container_name(row), now - since, None))
        return found

    def _images(self, engine: DockerEngine, now: float) -> list[_Candidate]:
        found = []
        for image in engine.images({"dangling": ["true"], **self._label_filter()}):
            if not self._wanted(image.get("Labels")):
                continue
            created = float(image.get("Created") or 0)
            if now - created < self._params.older_than:
                continue
            ref = str(image["Id"])
            found.append(_Candidate("image", ref, ref.removeprefix("sha256:")[:12], now - created,
                                    float(image.get("Size") or 0)))
        return found

    def _volumes(self, engine: DockerEngine, now: float) -> list[_Candidate]:
        found = []
        for volume in engine.volumes({"dangling": ["true"], **self._label_filter()}):
            if not self._wanted(volume.get("Labels")):
                continue
            created = parse_time(volume.get("CreatedAt"))
            if created is None or now - created < self._params.older_than:
                continue
            name = str(volume["Name"])
            found.append(_Candidate("volume", name, name, now - created, None))
        return found

    def _remove(self, engine: DockerEngine, cand: _Candidate, dry_run: bool) -> ItemResult:
        subject = f"{cand.kind}/{cand.label}"
        info: dict[str, Any] = {"kind": cand.kind, "id": cand.ref, "age": round(cand.age, 1)}
        if cand.size is not None:
            info["size"] = cand.size
        age = format_value(cand.age, Unit.SECONDS)
        if dry_run:
            return ItemResult(subject, True, f"would remove ({age} old)", {**info, "removed": True})
        removers = {"container": engine.remove_container, "image": engine.remove_image, "volume": engine.remove_volume}
        try:
            removers[cand.kind](cand.ref)
        except DockerError as exc:
            if exc.status == 404:
                return ItemResult(subject, True, "already gone", info)
            if exc.status == 409:  # started again, or in use by a container: the engine refused, as it should
                return ItemResult(subject, True, f"kept: {exc}", info)
            return ItemResult(subject, False, str(exc), info)
        return ItemResult(subject, True, f"removed ({age} old)", {**info, "removed": True})

    def _build_cache(self, engine: DockerEngine, dry_run: bool) -> ItemResult | None:
        if self._params.labels:
            # Build cache carries no labels: a label-scoped prune must not reach outside its scope.
            return None
        try:
            if dry_run:
                cutoff = self._clock() - self._params.older_than
                entries = [
                    b for b in engine.df().get("BuildCache") or []
                    if not b.get("InUse") and not b.get("Shared")
                    and (parse_time(b.get("LastUsedAt")) or parse_time(b.get("CreatedAt")) or 0) <= cutoff
                ]
                size = float(sum(int(b.get("Size") or 0) for b in entries))
                return ItemResult("build_cache", True, f"would free {format_value(size, Unit.BYTES)}",
                                  {"kind": "build_cache", "size": size, "entries": len(entries)})
            result = engine.prune_build_cache(self._params.older_than)
        except DockerError as exc:
            return ItemResult("build_cache", False, str(exc), {"kind": "build_cache"})
        size = float(result.get("SpaceReclaimed") or 0)
        return ItemResult("build_cache", True, f"freed {format_value(size, Unit.BYTES)}",
                          {"kind": "build_cache", "size": size, "entries": len(result.get("CachesDeleted") or [])})

    @staticmethod
    def _summary(items: Sequence[ItemResult], dry_run: bool, left: int) -> str:
        counts: dict[str, int] = {}
        for item in items:
            if item.info.get("removed"):
                kind = str(item.info.get("kind"))
                counts[kind] = counts.get(kind, 0) + 1
        freed = sum(float(item.info.get("size") or 0) for item in items if item.info.get("removed")
                    or item.info.get("kind") == "build_cache")
        verb = "would remove" if dry_run else "removed"
        # A fixed order (the order `docker system prune` reports in) so summaries compare across runs.
        order = {kind: index for index, kind in enumerate(("container", "image", "volume", "build_cache"))}
        ordered = sorted(counts.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))
        parts = ", ".join(f"{n} {kind}(s)" for kind, n in ordered) or "nothing"
        text = f"{verb} {parts}; {'would free' if dry_run else 'freed'} at least {format_value(freed, Unit.BYTES)}"
        if left:
            text += f"; {left} more eligible object(s) left for the next run (max_items)"
        return text


def _prune_factory(params: PruneParams, target: Any, clock: Clock) -> PruneAction:
    return PruneAction(params, target, clock)


ACTIONS: dict[str, ActionSpec] = {
    "docker.start": ActionSpec(
        StartParams, _start_factory, "start stopped containers (not ones an operator stopped)", target_kind="docker",
        settle=30.0,  # the process inside may need its own start-up before a health check passes
        accepts=frozenset({"container"}),
    ),
    "docker.restart": ActionSpec(
        RestartParams, _restart_factory, "restart containers (stop with a timeout, then start)", target_kind="docker",
        settle=30.0, accepts=frozenset({"container"}),
    ),
    "docker.prune": ActionSpec(
        PruneParams, _prune_factory,
        "remove old stopped containers, dangling images, build cache and (opt-in) unused volumes",
        target_kind="docker", settle=10.0,  # system df can lag the removals
        accepts=ANY_SUBJECT,
    ),
}
