"""Redis probes: latency, memory, clients, idle clients, queues, hit ratio, evictions, slowlog, replication.

Every probe reads through the shared :class:`~watchdogd.families.redis.target.RedisTarget`
(one pool per target, reconnect with backoff) and uses only read-only
commands: PING, INFO, CLIENT LIST, SCAN, TYPE, LLEN/XLEN/ZCARD/SCARD and
SLOWLOG GET. ``redis`` itself is never imported here.

Rate probes keep the previous INFO sample in the probe instance, so two
rules watching one server never share (and disturb) an interval. Their
first run, and the run after a restart or ``CONFIG RESETSTAT``, returns no
reading: there is no interval to speak of, and an alarm needs evidence.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from watchdogd.contracts import Cardinality, Clock, NoParams, Params, Probe, ProbeError, ProbeSpec, Reading, Unit
from watchdogd.families.redis import counters
from watchdogd.families.redis.clients import (
    CLIENT_FIELDS,
    ClientDetails,
    ClientFilter,
    ClientFilterParams,
    client_rows,
    unprotected,
)
from watchdogd.families.redis.target import RedisTarget

SCAN_COUNT = 1000
"""SCAN's COUNT hint: big enough for few round trips, small enough that one call stays well under 1 ms."""

InfoSection = dict[str, Any]


# --------------------------------------------------------------------------- helpers


def parse_info(raw: bytes | str) -> InfoSection:
    """INFO text -> dict. redis-py already does this by default; kept for the raw reply it may not parse."""
    text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
    section: InfoSection = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition(":")
            section[key] = value
    return section


def as_info(reply: Any) -> InfoSection:
    """An INFO reply as a dict, whether redis-py parsed it or not."""
    return reply if isinstance(reply, dict) else parse_info(reply)


def read_info(target: RedisTarget, *sections: str) -> list[InfoSection]:
    """Several INFO sections in one round trip (multi-section INFO needs Redis 7; a pipeline works on all)."""
    return [as_info(reply) for reply in target.pipeline([("INFO", name) for name in sections])]


def number(info: Mapping[str, Any], name: str) -> float:
    try:
        return counters.info_number(info, name)
    except ValueError as exc:
        raise ProbeError(str(exc)) from None


def text(value: Any) -> str:
    """A reply value as text; key names are binary-safe in Redis, so undecodable bytes are escaped."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def _factory(build: Callable[[Any, RedisTarget, Clock], Probe]) -> Callable[[Any, Any, Clock], Probe]:
    """Refuse to build a Redis probe without its client: a wiring bug, not a runtime condition."""

    def factory(params: Any, target: Any, clock: Clock) -> Probe:
        if not isinstance(target, RedisTarget):
            raise TypeError(f"a Redis probe needs a RedisTarget, got {type(target).__name__}")
        return build(params, target, clock)

    return factory


# --------------------------------------------------------------------------- instance probes


class PingProbe:
    """Round-trip time of PING on a warm connection, in seconds.

    Two PINGs, the second one timed: the first may have paid for a new TCP
    (and TLS) handshake and AUTH, which is not the latency clients see.

    An availability probe: no answer (refused, or a server that accepts and
    then says nothing, such as a SIGSTOPped one, within the target's
    ``socket_timeout``) raises, and the engine reports this server down on
    the subject below (``on_down: fire``).
    """

    SUBJECT = "ping"

    def __init__(self, params: NoParams, target: RedisTarget, clock: Clock) -> None:
        self._target = target

    def outage_subjects(self) -> list[str]:
        return [self.SUBJECT]

    def measure(self) -> list[Reading]:
        def ping_twice(client: Any) -> float:
            client.ping()
            started = time.perf_counter()
            client.ping()
            return time.perf_counter() - started

        seconds = self._target.run(ping_twice)
        return [Reading(self.SUBJECT, seconds, {"server": self._target.name})]


class MemoryProbe:
    """``used_memory`` as a percent of ``maxmemory``, which is where Redis starts evicting or refusing writes.

    Without a maxmemory (the default), the ceiling is the machine's RAM
    (``total_system_memory``), where the OOM killer takes over: a 90 % rule
    still means "close to the edge" instead of comparing bytes with 90.
    """

    def __init__(self, params: NoParams, target: RedisTarget, clock: Clock) -> None:
        self._target = target

    def measure(self) -> list[Reading]:
        (memory,) = read_info(self._target, "memory")
        used = number(memory, "used_memory")
        maxmemory = number(memory, "maxmemory")
        basis = "maxmemory"
        ceiling = maxmemory
        if ceiling <= 0:
            basis = "total_system_memory"
            ceiling = float(memory.get("total_system_memory") or 0)
        if ceiling <= 0:
            raise ProbeError("maxmemory is not set and Redis reports no total_system_memory; use redis.memory_bytes")
        return [Reading("memory", used / ceiling * 100.0, {**_memory_details(memory), "basis": basis})]


class MemoryBytesProbe:
    """``used_memory`` in bytes, for servers whose limit is not maxmemory (containers, shared hosts)."""

    def __init__(self, params: NoParams, target: RedisTarget, clock: Clock) -> None:
        self._target = target

    def measure(self) -> list[Reading]:
        (memory,) = read_info(self._target, "memory")
        return [Reading("memory", number(memory, "used_memory"), _memory_details(memory))]


def _memory_details(memory: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: memory[name]
        for name in ("used_memory", "used_memory_rss", "maxmemory", "maxmemory_policy",
                     "mem_fragmentation_ratio", "total_system_memory")
        if name in memory
    }


class ClientsProbe:
    """Connected clients as a percent of ``maxclients``: past 100 % Redis refuses new connections."""

    def __init__(self, params: NoParams, target: RedisTarget, clock: Clock) -> None:
        self._target = target

    def measure(self) -> list[Reading]:
        (clients,) = read_info(self._target, "clients")
        connected = number(clients, "connected_clients")
        maxclients = number(clients, "maxclients")
        details = {"connected_clients": connected, "maxclients": maxclients,
                   "blocked_clients": clients.get("blocked_clients")}
        return [Reading("clients", connected / maxclients * 100.0 if maxclients else 0.0, details)]


class BlockedClientsProbe:
    """Clients blocked in BLPOP/XREAD BLOCK/WAIT...: many means consumers are waiting on a producer."""

    def __init__(self, params: NoParams, target: RedisTarget, clock: Clock) -> None:
        self._target = target

    def measure(self) -> list[Reading]:
        (clients,) = read_info(self._target, "clients")
        return [Reading("blocked_clients", number(clients, "blocked_clients"),
                        {"connected_clients": clients.get("connected_clients")})]


class ReplicationProbe:
    """Seconds the replica's link to its master has been down; 0 when up, and on a master.

    Redis reports ``master_link_down_since_seconds: -1`` when the link never
    came up since start; then the link has been down for the whole uptime.
    """

    def __init__(self, params: NoParams, target: RedisTarget, clock: Clock) -> None:
        self._target = target

    def measure(self) -> list[Reading]:
        server, replication = read_info(self._target, "server", "replication")
        role = str(replication.get("role", ""))
        details: dict[str, Any] = {"role": role}
        if role != "slave":
            return [Reading("master_link", 0.0, details)]
        details.update({
            name: replication[name]
            for name in ("master_host", "master_port", "master_link_status", "master_last_io_seconds_ago",
                         "master_sync_in_progress")
            if name in replication
        })
        if replication.get("master_link_status") == "up":
            return [Reading("master_link", 0.0, details)]
        down = float(replication.get("master_link_down_since_seconds", -1))
        if down < 0:
            down = number(server, "uptime_in_seconds")
        return [Reading("master_link", down, details)]


# --------------------------------------------------------------------------- clients


class IdleClientsParams(ClientFilterParams):
    pass


_ID, _IDLE = CLIENT_FIELDS.index("id"), CLIENT_FIELDS.index("idle")


class IdleClientsProbe:
    """Idle seconds of every normal client (CLIENT LIST), minus the protected and the filtered out.

    ``CLIENT LIST TYPE normal`` leaves out replicas, the master link and
    pub/sub clients on the server side (less to parse); the protected-flag
    check runs anyway, because a normal client can be blocked, in MONITOR,
    or us. The server's run id travels in each reading so client_kill can
    tell that an id still means the same connection.
    """

    def __init__(self, params: IdleClientsParams, target: RedisTarget, clock: Clock) -> None:
        self._target = target
        self._filter = ClientFilter(params)

    def measure(self) -> list[Reading]:
        raw, server = self._target.pipeline([("CLIENT", "LIST", "TYPE", "normal"), ("INFO", "server")])
        run_id = str(as_info(server).get("run_id", ""))
        rows = self._filter.select(unprotected(client_rows(raw), self._target.client_name))
        # One reading per client, thousands per run: the details are a lazy view of the row.
        return [Reading("id:" + row[_ID], float(row[_IDLE]), ClientDetails(row, run_id)) for row in rows]


# --------------------------------------------------------------------------- queues


LENGTH_COMMANDS: Mapping[str, str] = {
    "list": "LLEN",
    "stream": "XLEN",
    "zset": "ZCARD",
    "set": "SCARD",
}
"""How long a queue is, by the key's type: Celery/RQ/Sidekiq lists, streams, delayed-job sorted sets."""


class QueueLengthParams(Params):
    keys: list[str] = []
    patterns: list[str] = []
    max_scan: int = Field(default=10_000, ge=1, le=10_000_000)
    max_keys: int = Field(default=100, ge=1, le=1000)

    @model_validator(mode="after")
    def _some_keys(self) -> QueueLengthParams:
        if not self.keys and not self.patterns:
            raise ValueError("set 'keys' (queue names, e.g. [celery]) or 'patterns' (e.g. ['queue:*']), or both")
        return self


@dataclass(frozen=True, slots=True)
class _Found:
    keys: list[bytes]
    complete: bool


class QueueLengthProbe:
    """Length of each named queue key, and of the longest keys matching the patterns.

    A named key that does not exist is an empty queue (Celery and RQ delete
    the list when it drains), so it reads 0 and its alert resolves. Keys found
    by pattern are capped twice: SCAN stops after about ``max_scan`` keys
    examined per pattern, and only the ``max_keys`` longest become subjects,
    so a pattern can never flood the policy engine or the metrics.
    """

    def __init__(self, params: QueueLengthParams, target: RedisTarget, clock: Clock) -> None:
        self._params = params
        self._target = target

    def measure(self) -> list[Reading]:
        named = [key.encode() for key in self._params.keys]
        found = self._scan()
        named_set = set(named)
        scanned = [key for key in dict.fromkeys(found.keys) if key not in named_set]
        keys = [*named, *scanned]
        if not keys:
            return []
        types = [text(t) for t in self._target.pipeline([("TYPE", key) for key in keys])]
        for key, kind in zip(named, types, strict=False):
            if kind != "none" and kind not in LENGTH_COMMANDS:
                raise ProbeError(
                    f"key {text(key)!r} is a {kind}, not a queue (list, stream, sorted set or set)"
                )
        measured = [(key, kind) for key, kind in zip(keys, types, strict=True) if kind in LENGTH_COMMANDS]
        lengths = dict(zip(
            (key for key, _ in measured),
            self._target.pipeline([(LENGTH_COMMANDS[kind], key) for key, kind in measured]) if measured else [],
            strict=True,
        ))
        kinds = dict(zip(keys, types, strict=True))
        readings = [
            Reading(text(key), float(lengths.get(key, 0)), {"type": kinds[key]})
            for key in named
        ]
        by_length = sorted(
            (key for key in scanned if key in lengths), key=lambda key: (-lengths[key], key)
        )[: self._params.max_keys]
        readings.extend(
            Reading(text(key), float(lengths[key]), {"type": kinds[key], "scan_complete": found.complete})
            for key in by_length
        )
        return readings

    def _scan(self) -> _Found:
        keys: list[bytes] = []
        complete = True
        count = min(SCAN_COUNT, self._params.max_scan)
        for pattern in self._params.patterns:
            cursor, examined = 0, 0
            while True:
                cursor, batch = self._target.command("SCAN", cursor, "MATCH", pattern, "COUNT", count)
                keys.extend(batch)
                examined += count
                if int(cursor) == 0:
                    break
                if examined >= self._params.max_scan:
                    complete = False
                    break
        return _Found(keys, complete)


# --------------------------------------------------------------------------- rates


class _Counters:
    """The previous INFO counter sample of one probe instance (never shared between rules)."""

    def __init__(self, target: RedisTarget, clock: Clock, names: Sequence[str]) -> None:
        self._target = target
        self._clock = clock
        self._names = tuple(names)
        self._previous: counters.CounterSample | None = None

    def next_delta(self) -> counters.CounterDelta | None:
        server, stats = read_info(self._target, "server", "stats")
        try:
            current = counters.sample(server, stats, self._names, self._clock())
        except ValueError as exc:
            raise ProbeError(str(exc)) from None
        previous, self._previous = self._previous, current
        return counters.delta(previous, current)


class HitRatioParams(Params):
    min_lookups: int = Field(default=100, ge=1, le=10**15)


class HitRatioProbe:
    """Keyspace hits / (hits + misses) over the last interval, 0..1.

    An interval with fewer than ``min_lookups`` lookups returns no reading:
    two misses out of three lookups at night is noise, not a cold cache.
    """

    def __init__(self, params: HitRatioParams, target: RedisTarget, clock: Clock) -> None:
        self._params = params
        self._counters = _Counters(target, clock, ("keyspace_hits", "keyspace_misses"))

    def measure(self) -> list[Reading]:
        delta = self._counters.next_delta()
        if delta is None:
            return []
        hits = delta.increase["keyspace_hits"]
        misses = delta.increase["keyspace_misses"]
        if hits + misses < self._params.min_lookups:
            return []
        details = {"hits": hits, "misses": misses, "interval": round(delta.seconds, 3)}
        return [Reading("keyspace", hits / (hits + misses), details)]


class CounterRateProbe:
    """Per-second increase of one INFO stats counter over the last interval."""

    def __init__(self, field: str, subject: str, target: RedisTarget, clock: Clock) -> None:
        self._field = field
        self._subject = subject
        self._counters = _Counters(target, clock, (field,))

    def measure(self) -> list[Reading]:
        delta = self._counters.next_delta()
        if delta is None:
            return []
        details = {self._field: delta.increase[self._field], "interval": round(delta.seconds, 3)}
        return [Reading(self._subject, delta.rate(self._field), details)]


def _rate(field: str, subject: str) -> Callable[[Any, Any, Clock], Probe]:
    def build(params: NoParams, target: RedisTarget, clock: Clock) -> Probe:
        return CounterRateProbe(field, subject, target, clock)

    return _factory(build)


# --------------------------------------------------------------------------- slowlog


class SlowlogParams(Params):
    max_entries: int = Field(default=128, ge=1, le=10_000)


@dataclass(frozen=True, slots=True)
class SlowEntry:
    id: int
    duration: float  # seconds
    command: str  # the command name only: arguments may hold customer data


def parse_slowlog(reply: Sequence[Any]) -> list[SlowEntry]:
    entries = []
    for item in reply:
        if isinstance(item, dict):  # redis-py's parsed form
            args = item.get("command", b"")
            name = text(args).split(" ", 1)[0] if args else ""
            entries.append(SlowEntry(int(item["id"]), int(item["duration"]) / 1e6, name.upper()))
            continue
        args = item[3] if len(item) > 3 else []
        entries.append(SlowEntry(int(item[0]), int(item[2]) / 1e6, text(args[0]).upper() if args else ""))
    return entries


class SlowlogProbe:
    """New SLOWLOG entries since the previous run: the worst one's duration, or how many.

    Entry ids grow by one per entry for the life of the server, so the count
    of new entries is exact even when more happened than ``max_entries``
    fetched; the worst duration is over the fetched ones. Only command names
    are kept (arguments may be customer data).
    """

    def __init__(self, measure: Literal["worst", "count"], params: SlowlogParams, target: RedisTarget) -> None:
        self._measure = measure
        self._params = params
        self._target = target
        self._last: tuple[str, int] | None = None  # (run_id, newest id seen)

    def measure(self) -> list[Reading]:
        reply, server = self._target.pipeline([("SLOWLOG", "GET", self._params.max_entries), ("INFO", "server")])
        run_id = str(as_info(server).get("run_id", ""))
        entries = parse_slowlog(reply)
        newest = max((entry.id for entry in entries), default=-1)
        previous, self._last = self._last, (run_id, newest)
        if previous is None or previous[0] != run_id:
            return []  # first run or restart: a baseline, not news
        last_id = previous[1]
        if newest < last_id:  # SLOWLOG RESET does not rewind ids, but be safe
            return []
        new = [entry for entry in entries if entry.id > last_id]
        count = newest - last_id
        worst = max(new, key=lambda entry: entry.duration, default=None)
        details: dict[str, Any] = {"new_entries": count}
        if worst is not None:
            details.update(worst_seconds=worst.duration, worst_command=worst.command, worst_id=worst.id)
        value = float(count) if self._measure == "count" else (worst.duration if worst else 0.0)
        return [Reading("slowlog", value, details)]


def _slowlog(measure: Literal["worst", "count"]) -> Callable[[Any, Any, Clock], Probe]:
    def build(params: SlowlogParams, target: RedisTarget, clock: Clock) -> Probe:
        return SlowlogProbe(measure, params, target)

    return _factory(build)


# --------------------------------------------------------------------------- the table


def _simple(cls: Callable[[Any, RedisTarget, Clock], Probe]) -> Callable[[Any, Any, Clock], Probe]:
    return _factory(cls)


PROBES: dict[str, ProbeSpec] = {
    "redis.up": ProbeSpec(
        NoParams, _simple(PingProbe), Unit.SECONDS, Cardinality.LOW,
        "PING round-trip time on a warm connection; down (fires, on_down) when Redis does not answer",
        target_kind="redis", availability=True, subjects="redis",
    ),
    "redis.memory": ProbeSpec(
        NoParams, _simple(MemoryProbe), Unit.PERCENT, Cardinality.LOW,
        "used memory percent of maxmemory (of system RAM when no maxmemory is set)", target_kind="redis",
        subjects="redis",
    ),
    "redis.memory_bytes": ProbeSpec(
        NoParams, _simple(MemoryBytesProbe), Unit.BYTES, Cardinality.LOW,
        "used memory in bytes", target_kind="redis", subjects="redis",
    ),
    "redis.clients": ProbeSpec(
        NoParams, _simple(ClientsProbe), Unit.PERCENT, Cardinality.LOW,
        "connected clients percent of maxclients", target_kind="redis", subjects="redis",
    ),
    "redis.blocked_clients": ProbeSpec(
        NoParams, _simple(BlockedClientsProbe), Unit.COUNT, Cardinality.LOW,
        "clients blocked in BLPOP, XREAD BLOCK, WAIT...", target_kind="redis", subjects="redis",
    ),
    "redis.idle_clients": ProbeSpec(
        IdleClientsParams, _simple(IdleClientsProbe), Unit.SECONDS, Cardinality.HIGH,
        "idle seconds per client (replicas, subscribers, blocked and watchdogd never listed)",
        target_kind="redis", subjects="redis_client",
    ),
    "redis.queue_length": ProbeSpec(
        QueueLengthParams, _simple(QueueLengthProbe), Unit.COUNT, Cardinality.LOW,
        "length of queue keys (LLEN, XLEN, ZCARD or SCARD by type), by name or SCAN pattern",
        target_kind="redis", subjects="redis_key",
    ),
    "redis.hit_ratio": ProbeSpec(
        HitRatioParams, _simple(HitRatioProbe), Unit.RATIO, Cardinality.LOW,
        "keyspace hit ratio over the last interval", target_kind="redis", subjects="redis",
    ),
    "redis.evictions": ProbeSpec(
        NoParams, _rate("evicted_keys", "evictions"), Unit.PER_SECOND, Cardinality.LOW,
        "keys evicted per second over the last interval", target_kind="redis", subjects="redis",
    ),
    "redis.rejected_connections": ProbeSpec(
        NoParams, _rate("rejected_connections", "rejected_connections"), Unit.PER_SECOND, Cardinality.LOW,
        "connections refused (maxclients) per second over the last interval", target_kind="redis", subjects="redis",
    ),
    "redis.slowlog": ProbeSpec(
        SlowlogParams, _slowlog("worst"), Unit.SECONDS, Cardinality.LOW,
        "worst duration among SLOWLOG entries new since the last run (0 when none)", target_kind="redis",
        subjects="redis",
    ),
    "redis.slowlog_entries": ProbeSpec(
        SlowlogParams, _slowlog("count"), Unit.COUNT, Cardinality.LOW,
        "number of SLOWLOG entries new since the last run", target_kind="redis", subjects="redis",
    ),
    "redis.replication": ProbeSpec(
        NoParams, _simple(ReplicationProbe), Unit.SECONDS, Cardinality.LOW,
        "seconds the replica's master link has been down (0 when up or on a master)", target_kind="redis",
        subjects="redis",
    ),
}
