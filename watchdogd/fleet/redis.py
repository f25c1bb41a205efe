"""The fleet budget kept on one Redis server: slots as keys taken with NX, one Lua script per step.

Why Redis at all, when etcd is the primary coordinator: many sites already
run a Redis and no etcd, and a bound that holds while the server is up is
worth much more than no bound. Why it is *weaker* than etcd, and what that
means for an operator:

- Redis replication is asynchronous. A failover to a replica can lose a slot
  taken just before it (the replica never saw the SET), so two hosts can hold
  "the same" slot, and the per-group token counter can go back, so fencing
  tokens are not comparable across a failover. A restart without persistence
  has the same effect (every slot and the counter are gone).
- Therefore: one Redis instance only. No Cluster (a group's keys would need a
  hash tag and the scripts a single slot) and no Sentinel in this version.

Layout, for a group ``g`` under the prefix (``watchdogd:fleet:``):

- ``g:slot:<i>`` for ``i`` in ``0..max_hosts-1``: a JSON value
  ``{"host","rule","since","nonce","token"}`` with a PX expiry of the lease
  TTL; it is taken only when absent, so Redis never records more than
  ``max_hosts`` holders.
- ``g:token``: INCR'd by each grant, in the same script: the fencing token
  (only grows while the server keeps its data).
- ``g:runs``: a ZSET of grants scored by the server's clock (``TIME``, never
  a host's), trimmed to the last ``per`` seconds: the run window.

Every step is one script, so it is atomic on the server: acquire checks the
window, finds a free slot (starting at an index derived from the host name,
so a host tends to reuse "its" slot), takes it, counts the run and returns
the token. Release and refresh compare the whole stored value (it carries a
random nonce and the token) before DEL/PEXPIRE, so a host never frees or
extends a slot that has meanwhile passed to someone else.

Deadlines: every socket operation (connect, each request, each reply) is
bounded by ``min(timeout, deadline - now)``. redis-py's pooled client
connects a connection before a caller could shorten its timeout, so this
module keeps its own small free list of redis-py connections and arms each
one with the time left just before it is used (and refuses to start when
fewer than ``MIN_CALL`` seconds are left). The first connect on a fresh
connection runs a short handshake (AUTH, CLIENT SETNAME, SELECT); each of its
round trips has the same bound, so only a server that answers each one just
in time could make a call overrun by a few round trips. Retries are off:
redis-py's default retry would multiply every timeout.

Lease: one :class:`~watchdogd.fleet.keeper.LeaseKeeper` per coordinator.
Its refresh is one script over the slots this host holds ("PEXPIRE if the
value is still ours"). A slot that is missing is lost on its own: that
grant's ``holding`` turns false and ``stats.leases_lost`` counts it, while
the other grants stay valid (each slot has its own expiry here, unlike an
etcd lease). A grant taken while the lease is already running does not push
the lease's deadline: it is valid until ``sent + ttl`` of its own acquire
until a refresh has covered it, so no holding ever outlives its key.

An acquire that times out after the server ran it (a frozen or slow
server that wakes up) leaves a slot that no grant knows: nobody refreshes
it, so it costs the group one slot (and one run of its window) for at most
one TTL.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import secrets
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from watchdogd.fleet.coordinator import (
    CoordinatorError,
    CoordinatorStats,
    Denial,
    Grant,
    GroupLimits,
    GroupView,
    Holder,
)
from watchdogd.fleet.keeper import LeaseKeeper
from watchdogd.units import format_duration

log = logging.getLogger(__name__)

CLIENT_NAME = "watchdogd"
"""CLIENT SETNAME of our connections: the Redis family's kill actions never touch a client of this name."""

MIN_CALL = 0.005
"""Seconds: with less time than this before the deadline, a call is not started (it could not finish)."""

MAX_IDLE = 4
"""Idle connections kept for reuse; a burst beyond it opens more and closes them afterwards."""

MAX_VALUE = 4096
"""Bytes of a slot value we parse; a longer (foreign) value is shown as holder ``unknown``."""

MAX_FIELD = 128
"""Characters of a holder's host or rule shown in a denial; the rest is cut."""

UNKNOWN = "unknown"
_SCHEMES = ("redis", "rediss", "unix")

# --------------------------------------------------------------------------- scripts

_ACQUIRE = """
local n = #KEYS - 2
local token_key, runs_key = KEYS[n + 1], KEYS[n + 2]
local max_runs, per_ms, ttl_ms = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local start = tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if max_runs > 0 then
  redis.call('ZREMRANGEBYSCORE', runs_key, '-inf', now - per_ms)
  local used = redis.call('ZCARD', runs_key)
  if used >= max_runs then
    return {'rate', used}
  end
end
local free = nil
for i = 0, n - 1 do
  local index = (start + i) % n
  if redis.call('EXISTS', KEYS[index + 1]) == 0 then
    free = index
    break
  end
end
if free == nil then
  local out = {'full'}
  for i = 1, n do
    out[i + 1] = redis.call('GET', KEYS[i])
  end
  return out
end
local token = redis.call('INCR', token_key)
local value = string.sub(ARGV[4], 1, -2) .. ',"token":' .. string.format('%d', token) .. '}'
redis.call('SET', KEYS[free + 1], value, 'PX', ttl_ms)
if max_runs > 0 then
  redis.call('ZADD', runs_key, now, token)
  redis.call('PEXPIRE', runs_key, per_ms)
end
return {'ok', free, token, value}
"""
"""KEYS: the slots, the token counter, the runs ZSET. ARGV: max_runs (0: none), per_ms, ttl_ms, value, start."""

_LOOK = """
local n = #KEYS - 1
local out = {-1}
if ARGV[2] == '1' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  out[1] = redis.call('ZCOUNT', KEYS[n + 1], '(' .. (now - tonumber(ARGV[1])), '+inf')
end
for i = 1, n do
  out[i + 1] = redis.call('GET', KEYS[i])
end
return out
"""
"""Read-only. KEYS: the slots, the runs ZSET. ARGV: per_ms, count runs ('1'/'0'). Returns {runs, values...}."""

_REFRESH = """
local out = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i + 1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""
"""KEYS: slots this host holds. ARGV: ttl_ms, then each slot's value. Returns 1 (renewed) or 0 (gone) per key."""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
"""KEYS: one slot. ARGV: the value this grant stored. Deletes only our own value."""


@dataclass(frozen=True, slots=True)
class _Script:
    body: str
    sha: str


def _script(body: str) -> _Script:
    return _Script(body, hashlib.sha1(body.encode(), usedforsecurity=False).hexdigest())


ACQUIRE = _script(_ACQUIRE)
LOOK = _script(_LOOK)
REFRESH = _script(_REFRESH)
RELEASE = _script(_RELEASE)

Arg = str | int

# --------------------------------------------------------------------------- connections


class _Link:
    """redis-py connections to one server, each armed with the caller's remaining time before use.

    Thread-safe: acquires from rule workers and the keeper's refresh share it.
    A connection that failed in any way is dropped (its reply state is
    unknown); one that the server closed while idle is noticed on checkout and
    reconnected, so a restarted server costs no failed call.
    """

    def __init__(self, url: str, options: dict[str, Any], timeout: float, monotonic: Callable[[], float]) -> None:
        pool = redis.ConnectionPool.from_url(url, **options)  # used only to parse the URL into connection kwargs
        self._new = functools.partial(pool.connection_class, **pool.connection_kwargs)
        self._timeout = timeout
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._idle: list[Any] = []
        self._closed = False

    def call(self, script: _Script, keys: Sequence[str], args: Sequence[Arg], deadline: float) -> Any:
        """Run ``script`` (EVALSHA, EVAL when the server does not know it yet); raises redis-py errors."""
        if deadline - self._monotonic() < MIN_CALL:
            raise CoordinatorError("no time left before the deadline")
        conn = self._checkout()
        try:
            self._arm(conn, deadline)
            conn.connect()
            self._arm(conn, deadline)
            reply = self._evalsha(conn, script, keys, args, deadline)
        except BaseException:
            conn.disconnect()
            raise
        self._checkin(conn)
        return reply

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.disconnect()

    def _evalsha(self, conn: Any, script: _Script, keys: Sequence[str], args: Sequence[Arg], deadline: float) -> Any:
        conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return conn.read_response()
        except redis.exceptions.NoScriptError:
            self._arm(conn, deadline)
            conn.send_command("EVAL", script.body, len(keys), *keys, *args)  # also caches it for EVALSHA
            return conn.read_response()

    def _arm(self, conn: Any, deadline: float) -> None:
        seconds = min(self._timeout, deadline - self._monotonic())
        if seconds < MIN_CALL:
            raise CoordinatorError("no time left before the deadline")
        conn.socket_timeout = seconds  # used for the socket once connect() has connected it
        conn.socket_connect_timeout = seconds
        sock = getattr(conn, "_sock", None)  # redis-py has no public setter for a live socket's timeout
        if sock is not None:
            sock.settimeout(seconds)

    def _checkout(self) -> Any:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            return self._new()
        try:
            stale = conn.can_read(timeout=0)  # pending bytes or EOF: the server closed it (restart, timeout)
        except (redis.RedisError, OSError):
            stale = True
        if stale:
            conn.disconnect()
        return conn

    def _checkin(self, conn: Any) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < MAX_IDLE:
                self._idle.append(conn)
                return
        conn.disconnect()


# --------------------------------------------------------------------------- the coordinator


@dataclass(slots=True)
class _Held:
    """A slot this coordinator holds: what to compare on the server, and until when it is safe."""

    key: str
    value: str
    generation: int
    until: float  # monotonic; +inf once a refresh covered it, -inf once the server lost it


class RedisCoordinator:
    """The :class:`~watchdogd.fleet.coordinator.Coordinator` contract on one Redis server (see module docstring)."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        host: str,
        *,
        prefix: str = "watchdogd:fleet:",
        lease_ttl: float = 15.0,
        timeout: float = 2.0,
        password: str | None = None,
        ca_file: str | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = _public_url(url)
        _check_settings(url, self.endpoint, lease_ttl=lease_ttl, timeout=timeout, password=password, ca_file=ca_file)
        self.host = host
        self.stats = CoordinatorStats(endpoint=self.endpoint)
        self._prefix = prefix
        self._ttl_ms = max(1, round(lease_ttl * 1000))
        self._timeout = timeout
        self._clock = clock
        self._monotonic = monotonic
        self._secrets = _secrets_in(url, password)
        self._link = _Link(url, _client_options(timeout, password, ca_file, url), timeout, monotonic)
        self._keeper = LeaseKeeper(self._refresh, lease_ttl, monotonic, self.stats, timeout=timeout,
                                   name="fleet-keeper-redis")
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}  # by handle (the stored value: unique, it carries a nonce)
        self._closed = False
        self._down = False  # whether the last call failed: a change is logged once, not every call
        self._stats_lock = threading.Lock()  # stats are written by rule workers and the keeper at once

    # --- the contract ----------------------------------------------------------------------------------------
    def acquire(self, group: GroupLimits, rule: str, deadline: float) -> Grant | Denial:
        if self._closed:
            return self._unavailable(group, CoordinatorError(f"redis {self.endpoint}: coordinator closed"))
        since = self._clock()
        value = json.dumps(
            {"host": self.host, "rule": rule, "since": since, "nonce": secrets.token_hex(8)}, separators=(",", ":")
        )
        keys = [*self._slot_keys(group), self._key(group.name, "token"), self._key(group.name, "runs")]
        start = zlib.crc32(self.host.encode()) % max(1, group.max_hosts)
        args: list[Arg] = [group.max_runs or 0, self._per_ms(group), self._ttl_ms, value, start]
        sent = self._monotonic()
        try:
            reply = self._call(ACQUIRE, keys, args, deadline)
            return self._acquired(group, rule, since, sent, reply)
        except _BadReply as exc:
            return self._unavailable(group, self._failed(f"unexpected reply to acquire: {exc}"))
        except CoordinatorError as exc:
            return self._unavailable(group, exc)

    def peek(self, group: GroupLimits, deadline: float) -> Denial | None:
        try:
            holders, used = self._look(group, deadline)
        except CoordinatorError as exc:
            return self._unavailable(group, exc)
        if group.max_runs and used >= group.max_runs:
            return self._rate(group, used)
        if len(holders) >= group.max_hosts:
            return self._full(group, holders)
        return None

    def holding(self, grant: Grant) -> bool:
        with self._lock:
            held = self._held.get(grant.handle)
            if held is None or self._monotonic() >= held.until:
                return False
        return self._keeper.valid(held.generation)

    def release(self, grant: Grant, deadline: float) -> None:
        with self._lock:
            held = self._held.pop(grant.handle, None)
        if held is not None:
            self._keeper.unhold()
        if not grant.handle:
            return
        try:
            self._call(RELEASE, [self._key(grant.group, f"slot:{grant.slot}")], [grant.handle], deadline)
        except CoordinatorError as exc:
            log.warning(
                "fleet slot not released (it expires with the lease)",
                extra={"fields": {"group": grant.group, "slot": grant.slot, "error": str(exc)}},
            )

    def view(self, group: GroupLimits, deadline: float) -> GroupView:
        holders, used = self._look(group, deadline)
        return GroupView(
            group=group.name, max_hosts=group.max_hosts, holders=holders, max_runs=group.max_runs,
            runs_in_window=used if group.max_runs else None, per=group.per,
        )

    def close(self) -> None:
        """Stop refreshing, then delete our slots (best effort, one ``timeout`` in all): others need not wait."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            held, self._held = list(self._held.values()), {}
        self._keeper.close()
        deadline = self._monotonic() + self._timeout
        for entry in held:
            try:
                self._call(RELEASE, [entry.key], [entry.value], deadline)
            except CoordinatorError as exc:
                log.warning("fleet slot not released at close", extra={"fields": {"key": entry.key, "error": str(exc)}})
        self._link.close()

    # --- acquire's answer ------------------------------------------------------------------------------------
    def _acquired(self, group: GroupLimits, rule: str, since: float, sent: float, reply: Any) -> Grant | Denial:
        kind = _item(reply, 0)
        if kind == b"rate":
            return self._rate(group, _int(_item(reply, 1)))
        if kind == b"full":
            return self._full(group, self._holders(group, list(reply)[1:]))
        if kind != b"ok":
            raise _BadReply(f"{kind!r:.40}")
        slot, token, value = _int(_item(reply, 1)), _int(_item(reply, 2)), _text(_item(reply, 3))
        key = self._key(group.name, f"slot:{slot}")
        with self._lock:
            if self._keeper.remaining() <= 0:
                generation = self._keeper.renewed(sent, new_lease=True)
            else:  # the running lease's deadline stands: it is no later than our other slots' expiry
                generation = self._keeper.generation
            self._held[value] = _Held(key, value, generation, sent + self._keeper.ttl)
        self._keeper.hold()
        return Grant(group=group.name, slot=slot, host=self.host, rule=rule, since=since, token=token, handle=value)

    def _rate(self, group: GroupLimits, used: int) -> Denial:
        detail = f"{group.name}: {used} runs in the last {format_duration(group.per)}, limit {group.max_runs}"
        return Denial(group=group.name, reason="rate", detail=detail)

    def _full(self, group: GroupLimits, holders: tuple[Holder, ...]) -> Denial:
        now = self._clock()
        named = ", ".join(f"{h.host} (rule {h.rule}, {_age(now, h.since)})" for h in holders) or "nobody"
        detail = f"{group.name} full: {len(holders)}/{group.max_hosts} held by {named}"
        return Denial(group=group.name, reason="full", detail=detail, holders=holders)

    def _unavailable(self, group: GroupLimits, exc: CoordinatorError) -> Denial:
        return Denial(group=group.name, reason="unavailable", detail=f"fleet budget unavailable: {exc}")

    # --- reading a group -------------------------------------------------------------------------------------
    def _look(self, group: GroupLimits, deadline: float) -> tuple[tuple[Holder, ...], int]:
        if self._closed:
            raise CoordinatorError(f"redis {self.endpoint}: coordinator closed")
        keys = [*self._slot_keys(group), self._key(group.name, "runs")]
        reply = self._call(LOOK, keys, [self._per_ms(group), "1" if group.max_runs else "0"], deadline)
        if not isinstance(reply, list) or len(reply) != group.max_hosts + 1 or not isinstance(reply[0], int):
            raise self._failed(f"unexpected reply to a group read: {type(reply).__name__}")
        return self._holders(group, reply[1:]), max(0, reply[0])

    def _holders(self, group: GroupLimits, values: Sequence[Any]) -> tuple[Holder, ...]:
        slots = enumerate(values[: group.max_hosts])
        return tuple(_holder(group.name, slot, raw) for slot, raw in slots if raw is not None)

    # --- the keeper's refresh --------------------------------------------------------------------------------
    def _refresh(self, deadline: float) -> bool:
        """Renew every current slot; a missing one is lost on its own (see the module docstring)."""
        with self._lock:
            generation = self._keeper.generation
            entries = [e for e in self._held.values() if e.generation == generation and e.until > -math.inf]
        if not entries:
            return True
        reply = self._call(REFRESH, [e.key for e in entries], [self._ttl_ms, *(e.value for e in entries)], deadline)
        flags = list(reply) if isinstance(reply, list) else []
        if len(flags) != len(entries):
            raise self._failed(f"unexpected reply to a lease refresh: {type(reply).__name__}")
        with self._lock:
            for entry, flag in zip(entries, flags, strict=True):
                entry.until = math.inf if flag == 1 else -math.inf
        for entry in (e for e, flag in zip(entries, flags, strict=True) if flag != 1):
            self.stats.leases_lost += 1
            log.warning("fleet slot lost: its key expired or changed on the server",
                        extra={"fields": {"key": entry.key, "endpoint": self.endpoint}})
        return True

    # --- I/O and its bookkeeping -----------------------------------------------------------------------------
    def _call(self, script: _Script, keys: Sequence[str], args: Sequence[Arg], deadline: float) -> Any:
        with self._stats_lock:
            self.stats.requests += 1
        try:
            reply = self._link.call(script, keys, args, deadline)
        except CoordinatorError as exc:  # the caller's deadline ran out: no news about the server
            raise self._failed(str(exc), server=False) from None
        except (redis.RedisError, OSError) as exc:
            raise self._failed(_reason(exc)) from None
        with self._stats_lock:
            was_down, self._down = self._down, False
        if was_down:
            log.info("fleet coordinator answers again", extra={"fields": {"endpoint": self.endpoint}})
        return reply

    def _failed(self, reason: str, *, server: bool = True) -> CoordinatorError:
        """The one-line error for ``reason``, counted; the server's failures are logged when they start."""
        for secret in self._secrets:
            reason = reason.replace(secret, "***")
        message = f"redis {self.endpoint}: {reason[:200]}"
        with self._stats_lock:
            self.stats.errors += 1
            self.stats.last_error = message
            self.stats.last_error_at = self._clock()
            was_down, self._down = self._down, self._down or server
        if server and not was_down:
            log.warning("fleet coordinator unavailable", extra={"fields": {"endpoint": self.endpoint,
                                                                           "error": message}})
        return CoordinatorError(message)

    def _key(self, group: str, name: str) -> str:
        return f"{self._prefix}{group}:{name}"

    def _slot_keys(self, group: GroupLimits) -> list[str]:
        return [self._key(group.name, f"slot:{i}") for i in range(group.max_hosts)]

    @staticmethod
    def _per_ms(group: GroupLimits) -> int:
        return max(1, round(group.per * 1000))


# --------------------------------------------------------------------------- helpers


def _check_settings(
    url: str, endpoint: str, *, lease_ttl: float, timeout: float, password: str | None, ca_file: str | None
) -> None:
    """Refuse settings that could only fail later, with the URL shown without its password."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ValueError(f"fleet redis url must start with redis://, rediss:// or unix://, got {endpoint!r}")
    if lease_ttl <= 0 or timeout <= 0:
        raise ValueError("fleet redis lease_ttl and timeout must be positive")
    if password is not None and (parts.password is not None or "password" in dict(parse_qsl(parts.query))):
        raise ValueError("the fleet redis url already carries a password: set it in one place")
    if ca_file is not None and parts.scheme != "rediss":
        raise ValueError("a CA file needs a rediss:// url (TLS)")


def _client_options(timeout: float, password: str | None, ca_file: str | None, url: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),  # one attempt per call: the deadline is the caller's, not redis-py's
        "protocol": 2,
        "client_name": CLIENT_NAME,
    }
    if password is not None:
        options["password"] = password
    if url.startswith("rediss://") and ca_file is not None:
        options["ssl_ca_certs"] = ca_file
    return options


def _public_url(url: str) -> str:
    """The URL as shown in messages: no password (nor a query, which may carry one)."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        port = ""
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


def _secrets_in(url: str, password: str | None) -> tuple[str, ...]:
    """Every password we could be handed, to scrub from error texts (redis-py never shows one; belt and braces)."""
    parts = urlsplit(url)
    found = [password, parts.password, dict(parse_qsl(parts.query)).get("password")]
    return tuple(s for s in found if s)


def _reason(exc: BaseException) -> str:
    """One short line for a redis-py or socket error: the OS's words when there are some."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, redis.TimeoutError):
        return "timed out"
    text = " ".join(str(exc).split()).rstrip(".")
    return text or type(exc).__name__


def _holder(group: str, slot: int, raw: Any) -> Holder:
    """A slot value as a holder; anything not ours (or not JSON) is holder ``unknown``, never a traceback."""
    data: Any = None
    if isinstance(raw, bytes) and len(raw) <= MAX_VALUE:
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            data = None
    if not isinstance(data, dict):
        return Holder(group=group, slot=slot, host=UNKNOWN, rule=UNKNOWN, since=0.0, token=0)
    since = data.get("since")
    token = data.get("token")
    return Holder(
        group=group, slot=slot, host=_field(data.get("host")), rule=_field(data.get("rule")),
        since=float(since) if isinstance(since, int | float) and math.isfinite(since) else 0.0,
        token=token if isinstance(token, int) and not isinstance(token, bool) and token >= 0 else 0,
    )


def _field(value: Any) -> str:
    if not isinstance(value, str) or not value:
        return UNKNOWN
    return "".join(c if c.isprintable() else "?" for c in value[:MAX_FIELD])


def _age(now: float, since: float) -> str:
    """How long a holder has held, for a denial (wall clocks of two hosts: shown, never compared)."""
    if since <= 0:
        return "?"
    seconds = max(0.0, now - since)
    for unit, size, above in (("h", 3600.0, 7200.0), ("m", 60.0, 120.0)):
        if seconds >= above:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:.0f}s"


class _BadReply(ValueError):
    """A script's reply had an unexpected shape (a foreign script under our SHA, a proxy in between)."""


def _item(reply: Any, index: int) -> Any:
    if not isinstance(reply, list) or len(reply) <= index:
        raise _BadReply(type(reply).__name__)
    return reply[index]


def _int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _BadReply(f"expected an integer, got {type(value).__name__}")


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise _BadReply(f"expected a string, got {type(value).__name__}")
