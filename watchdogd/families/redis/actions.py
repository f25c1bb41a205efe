"""Redis actions: ``redis.client_kill`` and ``redis.delete_keys``.

Both act through the shared :class:`~watchdogd.families.redis.target.RedisTarget`
and never import ``redis``. Both re-read the server before changing it, so
what they do is decided by the server's state now, not by a reading that may
be seconds old; in dry-run they do exactly that reading and stop short of
the change. FLUSHDB and FLUSHALL are never sent by anything in watchdogd.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from watchdogd.contracts import ANY_SUBJECT, ActionParams, ActionResult, ActionSpec, Clock, ItemResult, Reading
from watchdogd.families.redis.clients import client_details, parse_client_list, protected_reason
from watchdogd.families.redis.probes import as_info, text
from watchdogd.families.redis.target import RedisCommandError, RedisError, RedisPermissionError, RedisTarget
from watchdogd.spec import Field, field_validator

SAMPLE_KEYS = 100
"""How many deleted key names an audit row lists (the engine keeps at most 100 items per row)."""


def _target(target: Any) -> RedisTarget:
    if not isinstance(target, RedisTarget):
        raise TypeError(f"a Redis action needs a RedisTarget, got {type(target).__name__}")
    return target


# --------------------------------------------------------------------------- client_kill


class ClientKillParams(ActionParams):
    pass


def _run_id(reply: Any) -> str:
    return str(as_info(reply).get("run_id", ""))


class ClientKillAction:
    """``CLIENT KILL ID`` for each breaching client of ``redis.idle_clients``.

    Just before killing, each client is looked up again (``CLIENT LIST ID``)
    and kept when the server restarted (ids start again from 1), the client
    is gone, it became protected (subscribed, blocked, a replica), or it has
    run a command since the probe (its idle time went down). The window left
    between that check and the kill is one round trip.
    """

    def __init__(self, params: ClientKillParams, target: RedisTarget) -> None:
        self._params = params
        self._target = target

    def thing(self, reading: Reading) -> str:
        """The connection by id *and* server run (``NamesThing``): ids start again at 1 after a restart."""
        client_id = reading.details.get("id")
        if not isinstance(client_id, int):
            return f"{reading.subject} on {self._target.name}"  # run() refuses it anyway
        return f"client {client_id} of run {reading.details.get('run_id', '')} on {self._target.name}"

    def run(self, subjects: Sequence[Reading], *, dry_run: bool) -> ActionResult:
        wanted = [r for r in subjects if isinstance(r.details.get("id"), int)]
        items = [
            ItemResult(r.subject, False, "not a Redis client reading (use this action with redis.idle_clients)")
            for r in subjects
            if not isinstance(r.details.get("id"), int)
        ]
        try:
            current, run_id = self._lookup([int(r.details["id"]) for r in wanted])
        except RedisError as exc:
            items += [ItemResult(r.subject, False, f"not killed: {exc}", _info(r.details)) for r in wanted]
            return ActionResult(ok=False, items=tuple(items), detail=str(exc), error=str(exc))
        items += [self._one(r, current.get(str(r.details["id"])), run_id, dry_run) for r in wanted]
        killed = sum(item.ok and item.detail.startswith(("killed", "would kill")) for item in items)
        failed = sum(not item.ok for item in items)
        did = "would kill" if dry_run else "killed"
        summary = f"{did} {killed} of {len(subjects)} client(s) on {self._target.name}"
        if len(subjects) - killed - failed:
            summary += f", kept {len(subjects) - killed - failed}"
        error = f"{failed} client(s) could not be killed" if failed else None
        return ActionResult(ok=not failed, items=tuple(items), detail=summary, error=error)

    def _lookup(self, ids: list[int]) -> tuple[dict[str, Mapping[str, str]], str]:
        """The named clients as the server sees them now, and its run id."""
        if not ids:
            return {}, ""
        try:
            raw, server = self._target.pipeline([("CLIENT", "LIST", "ID", *ids), ("INFO", "server")])
        except RedisPermissionError:
            raise
        except RedisCommandError:
            # CLIENT LIST ID needs Redis 6.2: read them all instead.
            raw, server = self._target.pipeline([("CLIENT", "LIST"), ("INFO", "server")])
        clients: dict[str, Mapping[str, str]] = {c.get("id", ""): c for c in parse_client_list(raw)}
        return clients, _run_id(server)

    def _one(self, reading: Reading, now: Mapping[str, str] | None, run_id: str, dry_run: bool) -> ItemResult:
        then = reading.details
        info = _info(then)
        if then.get("run_id") != run_id:
            return ItemResult(reading.subject, True, "kept: Redis restarted since the probe, the id means "
                                                     "another connection now", info)
        if now is None:
            return ItemResult(reading.subject, True, "already gone", info)
        info = _info(client_details(now, run_id))
        reason = self._keep_reason(then, now)
        if reason is not None:
            return ItemResult(reading.subject, True, f"kept: {reason}", info)
        label = _label(info)
        if dry_run:
            return ItemResult(reading.subject, True, f"would kill {label}", info)
        try:
            self._target.forget_info()  # the next probe counts the clients afresh
            gone = self._target.command("CLIENT", "KILL", "ID", info["id"])
        except RedisError as exc:
            return ItemResult(reading.subject, False, f"not killed: {exc}", info)
        if int(gone) == 0:
            return ItemResult(reading.subject, True, "already gone", info)
        return ItemResult(reading.subject, True, f"killed {label}", info)

    def _keep_reason(self, then: Mapping[str, Any], now: Mapping[str, str]) -> str | None:
        protected = protected_reason(now.get("flags", ""), now.get("name", ""), self._target.client_name)
        if protected is not None:
            return f"it is {protected}"
        if now.get("addr") != then.get("addr"):
            return f"the id now belongs to {now.get('addr')}, not {then.get('addr')}"
        idle_now = int(now.get("idle", "0"))
        if idle_now < int(then.get("idle", 0)):
            return f"it ran a command since the probe (idle {idle_now}s now)"
        return None


def _info(details: Mapping[str, Any]) -> dict[str, Any]:
    return {key: details[key] for key in ("id", "addr", "name", "user", "idle", "age", "cmd") if key in details}


def _label(info: Mapping[str, Any]) -> str:
    name = f" name={info['name']}" if info.get("name") else ""
    return f"client id={info.get('id')} addr={info.get('addr')}{name} idle={info.get('idle')}s"


# --------------------------------------------------------------------------- delete_keys


KeyType = Literal["string", "list", "set", "zset", "hash", "stream"]


def has_literal(pattern: str) -> bool:
    """Whether a Redis glob has at least one plain character outside ``*``, ``?`` and ``[...]``.

    A pattern made only of wildcards matches every key: that is FLUSHDB
    under another name, which this action refuses to be.
    """
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            return True
        if char == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("^", "]") else i + 1)
            i = len(pattern) if end < 0 else end + 1
            continue
        if char not in "*?":
            return True
        i += 1
    return False


class DeleteKeysParams(ActionParams):
    match: str
    max_keys: int = Field(default=1000, ge=1, le=10_000_000)
    batch: int = Field(default=250, ge=1, le=10_000)
    type: KeyType | None = None

    @field_validator("match")
    @classmethod
    def _not_everything(cls, value: str) -> str:
        if not has_literal(value):
            raise ValueError(
                f"pattern {value!r} matches every key; give it a literal part like 'search:*'"
                " (deleting a whole database is not something watchdogd does)"
            )
        return value


@dataclass(slots=True)
class _Progress:
    """Counts kept outside the loop, so a failure half-way still reports what was done."""

    submitted: int = 0  # keys sent to UNLINK (or that would be)
    deleted: int = 0  # keys UNLINK reports as removed
    round_trips: int = 0
    more: bool = False  # SCAN had not finished when the run stopped
    timed_out: bool = False
    sample: list[str] = field(default_factory=list)


class DeleteKeysAction:
    """SCAN MATCH + UNLINK in pipelined batches, at most ``max_keys`` keys per run.

    Each round trip carries the UNLINK of the previous batch and the next
    SCAN, so the server does a small, bounded amount of work per request
    (UNLINK frees large values in a background thread) and other clients'
    commands interleave between them: Redis stays responsive (see
    ``bench/bench_redis.py``). Keys that SCAN returns twice are sent twice
    and count twice against ``max_keys``, which errs on deleting fewer.
    """

    def __init__(self, params: DeleteKeysParams, target: RedisTarget) -> None:
        self._params = params
        self._target = target

    def thing(self, reading: Reading) -> str:
        """The keys the pattern names, whatever the subject (``NamesThing``): one sweep, one cooldown."""
        kind = f" of type {self._params.type}" if self._params.type else ""
        return f"keys {self._params.match}{kind} on {self._target.name}"

    def run(self, subjects: Sequence[Reading], *, dry_run: bool) -> ActionResult:
        """Delete once per run, however many subjects breached: the pattern, not the subject, says what."""
        progress = _Progress()
        deadline = time.monotonic() + self._params.timeout
        if not dry_run:
            self._target.forget_info()  # the next probe sees the memory freed
        try:
            self._sweep(progress, deadline, dry_run)
        except RedisError as exc:
            return ActionResult(
                ok=False, items=self._items(progress, dry_run),
                detail=f"{self._summary(progress, dry_run)}; stopped: {exc}", error=str(exc),
            )
        return ActionResult(ok=True, items=self._items(progress, dry_run), detail=self._summary(progress, dry_run))

    def _scan_args(self, cursor: int) -> tuple[str | int, ...]:
        params = self._params
        extra = ("TYPE", params.type) if params.type else ()
        return ("SCAN", cursor, "MATCH", params.match, "COUNT", params.batch, *extra)

    def _sweep(self, progress: _Progress, deadline: float, dry_run: bool) -> None:
        limit = self._params.max_keys
        cursor: int | None = None  # None: SCAN not started yet
        batch: list[bytes] = []
        while True:
            commands: list[tuple[str | int | bytes, ...]] = []
            if batch and not dry_run:
                commands.append(("UNLINK", *batch))
            scanning = cursor != 0 and progress.submitted < limit
            if scanning and time.monotonic() > deadline:
                progress.timed_out, scanning = True, False
            if scanning:
                commands.append(self._scan_args(cursor or 0))
            if not commands:
                break
            replies = self._target.pipeline(commands)
            progress.round_trips += 1
            if batch and not dry_run:
                progress.deleted += int(replies[0])
            batch = []
            if scanning:
                next_cursor, found = replies[-1]
                cursor = int(next_cursor)
                batch = list(found[: limit - progress.submitted])
                progress.more = len(found) > len(batch)  # this reply held more than the limit allowed
                progress.submitted += len(batch)
                room = SAMPLE_KEYS - len(progress.sample)
                progress.sample.extend(text(key) for key in batch[: max(room, 0)])
        progress.more = progress.more or cursor not in (0, None)
        if dry_run:
            progress.deleted = progress.submitted

    def _summary(self, progress: _Progress, dry_run: bool) -> str:
        params = self._params
        did = "would unlink" if dry_run else "unlinked"
        kind = f" of type {params.type}" if params.type else ""
        summary = (
            f"{did} {progress.deleted} key(s){kind} matching {params.match!r} on {self._target.name}"
            f" (max_keys {params.max_keys}, {progress.round_trips} round trips)"
        )
        if not dry_run and progress.submitted > progress.deleted:
            summary += f"; {progress.submitted - progress.deleted} were already gone"
        if progress.more:
            summary += "; more matching keys may remain for the next run"
        if progress.timed_out:
            summary += f"; stopped at the action's timeout of {params.timeout:g}s"
        return summary

    def _items(self, progress: _Progress, dry_run: bool) -> tuple[ItemResult, ...]:
        detail = "would unlink" if dry_run else "unlinked"
        return tuple(ItemResult(key, True, detail, {"key": key}) for key in progress.sample)


# --------------------------------------------------------------------------- the table


def _client_kill(params: ClientKillParams, target: Any, clock: Clock) -> ClientKillAction:
    return ClientKillAction(params, _target(target))


def _delete_keys(params: DeleteKeysParams, target: Any, clock: Clock) -> DeleteKeysAction:
    return DeleteKeysAction(params, _target(target))


ACTIONS: dict[str, ActionSpec] = {
    "redis.client_kill": ActionSpec(
        ClientKillParams, _client_kill,
        "CLIENT KILL ID per breaching client of redis.idle_clients, re-checked just before", target_kind="redis",
        settle=5.0, accepts=frozenset({"redis_client"}),
    ),
    "redis.delete_keys": ActionSpec(
        DeleteKeysParams, _delete_keys,
        "SCAN MATCH + UNLINK in batches, at most max_keys per run (never FLUSHDB/FLUSHALL)", target_kind="redis",
        settle=5.0, accepts=ANY_SUBJECT,
    ),
}
