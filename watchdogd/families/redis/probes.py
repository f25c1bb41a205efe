"""Redis probes: latency, memory, clients, idle clients, queues, hit ratio, evictions, slowlog, replication.

Every probe reads through the shared :class:`~watchdogd.families.redis.target.RedisTarget`
(one pool per target, reconnect with backoff) and uses only read-only
commands: PING, INFO, CLIENT LIST, SCAN, TYPE, LLEN/XLEN/ZCARD/SCARD and
SLOWLOG GET (and, for the evidence, MEMORY USAGE, TYPE, TTL and O(1)
lengths). ``redis`` itself is never imported here.

Rate probes keep the previous INFO sample (or, with ``params.window``, a
window of them) in the probe instance, so two rules watching one server
never share (and disturb) an interval. Their first run returns no reading:
there is nothing to compare with yet. A run that has nothing to say about
a subject that is there (a window too quiet for a ratio, a restart or
``CONFIG RESETSTAT`` with no usable step left) returns "no data", which
holds the rule's state: quiet is not recovery, and a restart is no
evidence either way.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from watchdogd.contracts import (
    Cardinality,
    Clock,
    EvidenceLimits,
    NoParams,
    Params,
    Probe,
    ProbeError,
    ProbeSpec,
    Reading,
    Unit,
    no_data,
)
from watchdogd.evidencefit import fit
from watchdogd.families.redis import counters
from watchdogd.families.redis.clients import (
    CLIENT_FIELDS,
    ClientDetails,
    ClientFilter,
    ClientFilterParams,
    client_rows,
    summarize_clients,
    unprotected,
)
from watchdogd.families.redis.target import RedisCommandError, RedisTarget
from watchdogd.spec import Field, model_validator
from watchdogd.units import DAY, Duration

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
    """Several INFO sections in one round trip (multi-section INFO needs Redis 7; a pipeline works on all).

    From the server's snapshot shared by every probe due in the same cycle
    (``RedisTarget.info``); each section is a copy, so no probe sees
    another's changes.
    """
    return [dict(as_info(reply)) for reply in target.info(sections)]


def read_info_fresh(target: RedisTarget, *sections: str) -> list[InfoSection]:
    """``read_info`` in a round trip of its own: for evidence, which must show the server as it is now."""
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


# --------------------------------------------------------------------------- evidence


KEY_CHARS = 100
"""Key names in evidence are cut here. They are data, not secrets, and the operator needs them to act."""
ARGS_CHARS = 200
"""Slowlog command arguments (only with ``evidence.show_queries``) are cut here, all arguments together."""
REDACTED = "<redacted>"
BIGKEYS_SCAN = 1000
"""Keys examined at most for the biggest-keys sample: a bounded look, never a walk of the whole keyspace."""
BIGKEYS_COUNT = 100
"""SCAN's COUNT for that sample: ten short round trips, each a small pipeline of MEMORY USAGE."""

INFO_FIELDS: Mapping[str, tuple[str, ...]] = {
    "server": ("redis_version", "redis_mode", "uptime_in_seconds", "role", "connected_slaves",
               "master_link_status"),
    "clients": ("connected_clients", "blocked_clients", "maxclients", "client_recent_max_input_buffer",
                "client_recent_max_output_buffer"),
    "memory": ("used_memory", "used_memory_peak", "used_memory_rss", "maxmemory", "maxmemory_policy",
               "mem_fragmentation_ratio", "total_system_memory"),
    "stats": ("instantaneous_ops_per_sec", "total_commands_processed", "keyspace_hits", "keyspace_misses",
              "evicted_keys", "expired_keys", "rejected_connections", "total_connections_received"),
}
"""The INFO fields the runbooks read first, per section (``role`` and the link come from INFO replication)."""

LENGTH_OF_TYPE: Mapping[str, str] = {
    "list": "LLEN", "stream": "XLEN", "zset": "ZCARD", "set": "SCARD", "hash": "HLEN", "string": "STRLEN",
}
"""Element count (bytes for a string) by type, every one O(1)."""

INFO_SECTIONS = ("server", "clients", "memory", "stats", "keyspace")
SECTION_CLIENTS = "client list summary"
SECTION_BIGKEYS = "biggest keys (sample)"
SECTION_SLOWLOG = "slowlog"


def _info_sections(target: RedisTarget, max_items: int) -> dict[str, Any]:
    server, clients, memory, stats, replication, keyspace = read_info_fresh(
        target, "server", "clients", "memory", "stats", "replication", "keyspace")
    server = {**server, **{name: replication[name] for name in ("role", "connected_slaves", "master_link_status")
                           if name in replication}}
    sections: dict[str, Any] = {
        name: {field: _plain(info[field]) for field in INFO_FIELDS[name] if field in info}
        for name, info in (("server", server), ("clients", clients), ("memory", memory), ("stats", stats))
    }
    dbs = sorted(((str(name), value) for name, value in keyspace.items() if isinstance(value, dict)),
                 key=lambda item: -int(item[1].get("keys", 0) or 0))
    sections["keyspace"] = {name: {k: _plain(v) for k, v in value.items()} for name, value in dbs[:max_items]}
    return sections


def _plain(value: Any) -> Any:
    """An INFO value as JSON: numbers stay numbers, anything else becomes short text."""
    return value if isinstance(value, int | float) else text(value)[:200]


def _client_summary(target: RedisTarget, max_items: int) -> dict[str, Any]:
    return summarize_clients(client_rows(target.command("CLIENT", "LIST")), target.client_name, max_items)


def _slowlog_entries(target: RedisTarget, limits: EvidenceLimits) -> dict[str, Any]:
    """The latest entries, newest first: command name, duration, client address; arguments only if allowed.

    Entry ids count every entry since the server started, so the newest id
    says how many there have been without SLOWLOG LEN (which the documented
    least-privilege ACL does not grant).
    """
    return {"latest": slowlog_evidence(target.command("SLOWLOG", "GET", limits.max_items), limits)}


def slowlog_evidence(reply: Sequence[Any], limits: EvidenceLimits) -> list[dict[str, Any]]:
    """SLOWLOG GET entries as evidence rows, raw or as redis-py parses them (see ``parse_slowlog``)."""
    entries = []
    for item in reply[:limits.max_items]:
        if isinstance(item, dict):
            ident, when, micros = item["id"], item.get("start_time", 0), item["duration"]
            name, _, rest = text(item.get("command", b"")).partition(" ")
            client = item.get("client_address")
        else:
            ident, when, micros = item[0], item[1], item[2]
            args = [text(arg) for arg in (item[3] if len(item) > 3 else [])]
            name, rest = (args[0], " ".join(args[1:])) if args else ("", "")
            client = item[4] if len(item) > 4 else None
        entry: dict[str, Any] = {
            "id": int(ident),
            "unix_time": int(when),
            "duration_seconds": int(micros) / 1e6,
            "command": name.upper()[:50],
            "args": rest[:ARGS_CHARS] if limits.show_queries else REDACTED,
        }
        if client is not None:
            entry["client"] = text(client)[:100]  # ip:port; the client's name is left out
        entries.append(entry)
    return entries


def _biggest_keys(target: RedisTarget, limits: EvidenceLimits) -> dict[str, Any]:
    """The largest keys (MEMORY USAGE) among at most ``BIGKEYS_SCAN`` keys SCANned from the start.

    A sample, not the keyspace: on a big database it finds the big keys only
    if they are common, which is when they matter most (a leak of huge keys)
    and when ``redis-cli --bigkeys`` would be the next step. MEMORY USAGE
    samples 5 elements of an aggregate, so it is an estimate, and cheap.
    """
    sizes: list[tuple[int, bytes]] = []
    cursor, scanned, cut = 0, 0, None
    while True:
        if time.monotonic() >= limits.deadline - _REDIS_MARGIN:
            cut = "deadline"
            break
        cursor, batch = target.command("SCAN", cursor, "COUNT", BIGKEYS_COUNT)
        batch = list(dict.fromkeys(batch))  # SCAN may return a key twice
        if batch:
            usages = target.pipeline([("MEMORY", "USAGE", key) for key in batch])
            sizes.extend((int(used), key) for key, used in zip(batch, usages, strict=True) if used is not None)
        scanned += len(batch)
        if int(cursor) == 0:
            break
        if scanned >= BIGKEYS_SCAN:
            cut = "sample"
            break
    top = heapq.nlargest(limits.max_items, sizes)
    keys = [{"key": text(key)[:KEY_CHARS], "bytes": used} for used, key in top]
    section: dict[str, Any] = {"scanned": scanned, "keys": keys}
    if top and time.monotonic() >= limits.deadline - _REDIS_MARGIN:
        cut = cut or "deadline"  # the sizes are in, their types and lengths are not
    elif top:
        try:
            _add_type_length_ttl(target, keys, [key for _, key in top])
        except RedisCommandError as exc:  # e.g. an ACL without TTL or HLEN: the sizes still stand
            section["details_error"] = str(exc)[:300]
    if cut == "sample":
        section["sample"] = f"the first {scanned} keys SCAN returned, not the whole database"
    elif cut is not None:
        section["cut"] = cut
    return section


def _add_type_length_ttl(target: RedisTarget, entries: list[dict[str, Any]], keys: list[bytes]) -> None:
    """Type, element count and TTL of the biggest keys: what decides between waiting, trimming and deleting."""
    described = target.pipeline([cmd for key in keys for cmd in (("TYPE", key), ("TTL", key))])
    kinds = [text(kind) for kind in described[0::2]]
    measured = [(key, kind) for key, kind in zip(keys, kinds, strict=True) if kind in LENGTH_OF_TYPE]
    lengths = dict(zip((key for key, _ in measured),
                       target.pipeline([(LENGTH_OF_TYPE[kind], key) for key, kind in measured]), strict=True))
    for entry, key, kind, ttl in zip(entries, keys, kinds, described[1::2], strict=True):
        entry.update(type=kind, length=lengths.get(key), ttl_seconds=int(ttl) if int(ttl) >= 0 else None)


_REDIS_MARGIN = 0.05
"""Seconds before the deadline at which no further round trip is started."""


def describe_server(target: RedisTarget, limits: EvidenceLimits) -> dict[str, Any]:
    """What the Redis runbooks look at first, the same for every ``redis.*`` probe.

    INFO's server, clients, memory, stats and keyspace; who is connected
    (CLIENT LIST as counts); the slowlog (command names; arguments only with
    ``show_queries``); and the biggest keys of a bounded SCAN sample. Read
    only (INFO, CLIENT LIST, SLOWLOG GET/LEN, SCAN, MEMORY USAGE, TYPE, TTL
    and O(1) lengths), cheapest first. A section the server refuses (an ACL
    without MEMORY or CLIENT) says so and the others are still taken; a
    server that does not answer raises. Sections the deadline left out say
    ``{"cut": "deadline"}``.
    """
    sections: dict[str, Any] = {}
    steps: list[tuple[str | None, Callable[[], dict[str, Any]]]] = [
        (None, lambda: _info_sections(target, limits.max_items)),
        (SECTION_CLIENTS, lambda: _client_summary(target, limits.max_items)),
        (SECTION_SLOWLOG, lambda: _slowlog_entries(target, limits)),
        (SECTION_BIGKEYS, lambda: _biggest_keys(target, limits)),
    ]
    for name, step in steps:
        if time.monotonic() >= limits.deadline - _REDIS_MARGIN:
            sections.update({key: {"cut": "deadline"} for key in ([name] if name else INFO_SECTIONS)})
            continue
        try:
            found = step()
        except RedisCommandError as exc:  # refused (ACL, renamed command): this section only
            found = {"error": str(exc)[:300]}
        if name is None:
            sections.update(found)
        else:
            sections[name] = found
    return fit(sections, limits.max_bytes)


class _DescribesServer:
    """``describe`` for every Redis probe: the runbook's first look at the whole server."""

    _target: RedisTarget

    def describe(self, readings: Sequence[Reading], limits: EvidenceLimits) -> dict[str, Any]:
        return describe_server(self._target, limits)


# --------------------------------------------------------------------------- instance probes


class PingProbe(_DescribesServer):
    """Round-trip time of PING on a warm connection, in seconds (``RedisTarget.ping``: one measurement serves
    every ``redis.up`` rule of the server due in the same cycle).

    An availability probe: no answer (refused, or a server that accepts and
    then says nothing, such as a SIGSTOPped one, within the target's
    ``socket_timeout``) raises, and the engine reports this server down on
    the subject below (``on_down: fire``).
    """

    SUBJECT = "ping"
    inline = True  # reads the server's shared ping only (``watchdogd.inline``)

    def __init__(self, params: NoParams, target: RedisTarget, clock: Clock) -> None:
        self._target = target

    def outage_subjects(self) -> list[str]:
        return [self.SUBJECT]

    def measure(self) -> list[Reading]:
        return [Reading(self.SUBJECT, self._target.ping(), {"server": self._target.name})]


class MemoryProbe(_DescribesServer):
    """``used_memory`` as a percent of ``maxmemory``, which is where Redis starts evicting or refusing writes.

    Without a maxmemory (the default), the ceiling is the machine's RAM
    (``total_system_memory``), where the OOM killer takes over: a 90 % rule
    still means "close to the edge" instead of comparing bytes with 90.
    """

    inline = True  # reads the server's shared INFO only (``watchdogd.inline``)

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


class MemoryBytesProbe(_DescribesServer):
    """``used_memory`` in bytes, for servers whose limit is not maxmemory (containers, shared hosts)."""

    inline = True  # reads the server's shared INFO only (``watchdogd.inline``)

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


class ClientsProbe(_DescribesServer):
    """Connected clients as a percent of ``maxclients``: past 100 % Redis refuses new connections."""

    inline = True  # reads the server's shared INFO only (``watchdogd.inline``)

    def __init__(self, params: NoParams, target: RedisTarget, clock: Clock) -> None:
        self._target = target

    def measure(self) -> list[Reading]:
        (clients,) = read_info(self._target, "clients")
        connected = number(clients, "connected_clients")
        maxclients = number(clients, "maxclients")
        details = {"connected_clients": connected, "maxclients": maxclients,
                   "blocked_clients": clients.get("blocked_clients")}
        return [Reading("clients", connected / maxclients * 100.0 if maxclients else 0.0, details)]


class BlockedClientsProbe(_DescribesServer):
    """Clients blocked in BLPOP/XREAD BLOCK/WAIT...: many means consumers are waiting on a producer."""

    inline = True  # reads the server's shared INFO only (``watchdogd.inline``)

    def __init__(self, params: NoParams, target: RedisTarget, clock: Clock) -> None:
        self._target = target

    def measure(self) -> list[Reading]:
        (clients,) = read_info(self._target, "clients")
        return [Reading("blocked_clients", number(clients, "blocked_clients"),
                        {"connected_clients": clients.get("connected_clients")})]


class ReplicationProbe(_DescribesServer):
    """Seconds the replica's link to its master has been down; 0 when up, and on a master.

    Redis reports ``master_link_down_since_seconds: -1`` when the link never
    came up since start; then the link has been down for the whole uptime.
    """

    inline = True  # reads the server's shared INFO only (``watchdogd.inline``)

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


class IdleClientsProbe(_DescribesServer):
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


class QueueLengthProbe(_DescribesServer):
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
    """The INFO counter samples of one probe instance (never shared between rules)."""

    def __init__(self, target: RedisTarget, clock: Clock, names: Sequence[str], window: float | None) -> None:
        self._target = target
        self._clock = clock
        self._names = tuple(names)
        self._tracker = counters.Tracker(window)

    def next(self) -> counters.Observed | counters.Gap:
        # A round trip of its own, not the shared snapshot: a rate needs a new sample on every run, whatever
        # the timing of the runs (a re-measure right after the run, a test) and the snapshot's reuse.
        server, stats = read_info_fresh(self._target, "server", "stats")
        try:
            current = counters.sample(server, stats, self._names, self._clock())
        except ValueError as exc:
            raise ProbeError(str(exc)) from None
        return self._tracker.add(current)


def _gap(subject: str, gap: counters.Gap) -> list[Reading]:
    """The first run says nothing at all; any later gap is "no data" for the subject, which holds its state."""
    return [] if gap.first else [no_data(subject, gap.details())]


class RateParams(Params):
    window: Duration | None = Field(default=None, gt=0, le=DAY)
    """Judge over this sliding window instead of the last interval."""


class HitRatioParams(RateParams):
    min_lookups: int = Field(default=100, ge=1, le=10**15)


class HitRatioProbe(_DescribesServer):
    """Keyspace hits / (hits + misses), 0..1, over the last interval or over ``window``.

    With a window, the ratio is over the part of it observed so far (from
    the second run on), so bursty traffic is judged by its bursts however
    quiet the intervals between them.

    No data: fewer than ``min_lookups`` lookups in the interval (or in the
    whole window), since two misses out of three lookups at night are noise,
    not a cold cache; or a Redis restart / ``CONFIG RESETSTAT`` that left no
    usable step. The rule's state (and its ``for`` timer) is held.
    """

    SUBJECT = "keyspace"

    def __init__(self, params: HitRatioParams, target: RedisTarget, clock: Clock) -> None:
        self._params = params
        self._target = target
        self._counters = _Counters(target, clock, ("keyspace_hits", "keyspace_misses"), params.window)

    def measure(self) -> list[Reading]:
        seen = self._counters.next()
        if isinstance(seen, counters.Gap):
            return _gap(self.SUBJECT, seen)
        hits = seen.increase["keyspace_hits"]
        misses = seen.increase["keyspace_misses"]
        details = {"hits": hits, "misses": misses, **seen.details()}
        if hits + misses < self._params.min_lookups:
            reason = f"{hits + misses:.0f} lookups, fewer than min_lookups ({self._params.min_lookups})"
            return [no_data(self.SUBJECT, {**details, "reason": reason})]
        return [Reading(self.SUBJECT, hits / (hits + misses), details)]


class CounterRateProbe(_DescribesServer):
    """Per-second increase of one INFO stats counter over the last interval or over ``window``.

    A quiet interval is a rate of 0, a real answer. No data: a Redis restart
    or ``CONFIG RESETSTAT`` that left no usable step (per interval: the run
    right after it), so a restart never looks like a burst nor like recovery.
    """

    def __init__(self, field: str, subject: str, params: RateParams, target: RedisTarget, clock: Clock) -> None:
        self._field = field
        self._subject = subject
        self._target = target
        self._counters = _Counters(target, clock, (field,), params.window)

    def measure(self) -> list[Reading]:
        seen = self._counters.next()
        if isinstance(seen, counters.Gap):
            return _gap(self._subject, seen)
        details = {self._field: seen.increase[self._field], **seen.details()}
        return [Reading(self._subject, seen.rate(self._field), details)]


def _rate(field: str, subject: str) -> Callable[[Any, Any, Clock], Probe]:
    def build(params: RateParams, target: RedisTarget, clock: Clock) -> Probe:
        return CounterRateProbe(field, subject, params, target, clock)

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


class SlowlogProbe(_DescribesServer):
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
        "keyspace hit ratio over the last interval or params.window; too few lookups is no data (holds state)",
        target_kind="redis", subjects="redis",
    ),
    "redis.evictions": ProbeSpec(
        RateParams, _rate("evicted_keys", "evictions"), Unit.PER_SECOND, Cardinality.LOW,
        "keys evicted per second over the last interval or params.window", target_kind="redis", subjects="redis",
    ),
    "redis.rejected_connections": ProbeSpec(
        RateParams, _rate("rejected_connections", "rejected_connections"), Unit.PER_SECOND, Cardinality.LOW,
        "connections refused (maxclients) per second over the last interval or params.window", target_kind="redis",
        subjects="redis",
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
