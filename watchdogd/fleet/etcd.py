"""The fleet budget kept in etcd v3: slots are keys taken only when absent, attached to the host's lease.

Why etcd: its transactions compare-and-put atomically on a linearizable,
replicated store, leases give every slot a server-enforced expiry, and each
write's revision is a fencing token that only grows. We talk to etcd's JSON
gateway (``/v3/``) over HTTP with ``requests`` sessions from ``etcd3gw``, so
there is no gRPC/protobuf build, and every request carries its own timeout:
``min(timeout, deadline - now)``.

Layout under ``{prefix}{group}/``:

- ``slots/{i}`` for ``i`` in ``range(max_hosts)``: JSON ``{host, rule, since,
  nonce}``, attached to this host's lease (TTL ``lease_ttl``), which a
  ``LeaseKeeper`` refreshes only while the host holds a slot. A slot's
  fencing token is the revision of the transaction that created it, which is
  the key's ``mod_revision`` (slots are put once and deleted, never updated).
- ``runs/{j}`` for ``j`` in ``range(max_runs)``: one key per run started,
  attached to a lease of its own with TTL ``per``, so the key count is the
  number of runs in the last ``per`` seconds.

``acquire`` reads both ranges (one linearizable, read-only transaction),
picks a free slot (starting at a host-dependent offset so hosts do not all
race for slot 0) and a free run key, and takes both in one transaction whose
compares say "still absent"; the failure branch returns the ranges again so
a lost race retries on another free slot without another round trip.

A write that was sent but not answered (timeout, connection dropped, "no
leader") is *ambiguous*: it may be applied later. Its nonce is remembered;
a re-read in the same ``acquire`` that shows it adopts the slot, otherwise
it is deleted (compare value) at the next contact. Whatever happens, such a
slot cannot outlive the lease TTL unless this host holds other slots.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import secrets
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import requests
import urllib3.exceptions
import urllib3.util
from etcd3gw.client import Etcd3Client

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

log = logging.getLogger(__name__)

API_PATH = "/v3/"
DEFAULT_PORT = 2379
MAX_BODY = 256 * 1024
"""etcd's answers here are a few KiB; anything bigger is not an answer we asked for."""
RANGE_SLACK = 8
"""Keys read beyond the configured counts (slots left over from a larger ``max_hosts``, say)."""
ACQUIRE_ATTEMPTS = 3
MAX_CLEANUPS = 64
CLOSE_TIMEOUT = 1.0
MIN_CALL_TIMEOUT = 0.005
MAX_TEXT = 120
"""Longest host/rule/error text we repeat in a denial (values are written by other hosts)."""
GROUP_FORBIDDEN = frozenset("/\x00")

# gateway status -> how to treat it: retry elsewhere (the member or its leader is not answering) or not.
_UNREACHABLE_STATUS = frozenset({408, 429, 502, 503, 504})


# --- errors we tell apart ---------------------------------------------------------------------------------------
class _Unreachable(CoordinatorError):
    """This endpoint did not answer usefully: try the next. ``sent``: the request may have reached etcd."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class _OutOfTime(CoordinatorError):
    """The deadline leaves no time for another request (not the endpoint's fault: no failover)."""


class _Ambiguous(CoordinatorError):
    """A write was sent and not answered: it may or may not be applied."""


class _LeaseNotFound(CoordinatorError):
    """etcd no longer has the lease the write named."""


class _AuthRejected(CoordinatorError):
    """The auth token is missing, invalid or expired."""


# --- what etcd holds ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Kv:
    key: str
    value: bytes
    mod_revision: int


@dataclass(frozen=True, slots=True)
class _GroupState:
    """One read of a group: slot keys by index, how many slot and run keys exist, which run indexes are taken."""

    slots: dict[int, _Kv]
    slot_count: int
    runs: frozenset[int]
    run_count: int


@dataclass(frozen=True, slots=True)
class _Cleanup:
    """Delete ``key`` if it still is what this host wrote (compare ``target`` == ``expected``)."""

    key: str
    target: Literal["VALUE", "MOD"]
    expected: str


@dataclass(slots=True)
class _Attempt:
    """One transaction of an ``acquire``: what it would have written."""

    slot: int
    slot_key: str
    run_key: str | None
    value: str
    nonce: str
    lease_id: int
    generation: int
    since: float


@dataclass(slots=True)
class _Endpoint:
    url: str
    scheme: str
    host: str
    port: int
    client: Etcd3Client | None = None


@dataclass(slots=True)
class _Pending:
    """Cleanups owed to etcd and grants held, shared by the caller's threads and the keeper's."""

    cleanups: list[_Cleanup] = field(default_factory=list)
    grants: dict[str, int] = field(default_factory=dict)  # handle (nonce) -> lease generation


# --- small pure helpers -----------------------------------------------------------------------------------------
def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


def _unb64(data: object) -> bytes:
    if not isinstance(data, str):
        raise CoordinatorError(f"etcd answered a non-string key or value: {str(data)[:MAX_TEXT]}")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CoordinatorError(f"etcd answered bad base64: {exc}") from exc


def _prefix_end(prefix: str) -> str:
    """The range end that covers every key starting with ``prefix`` (its last byte plus one)."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode("ascii")


def _one_line(text: str, limit: int = MAX_TEXT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _span(seconds: float) -> str:
    """``600`` -> ``10m``, ``7200`` -> ``2h``, ``45`` -> ``45s``: how a window or an age reads in a denial."""
    whole = max(0, round(seconds))
    for unit, size in (("h", 3600), ("m", 60)):
        if whole >= size and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def _age(seconds: float) -> str:
    whole = max(0, int(seconds))
    return f"{whole}s" if whole < 120 else f"{whole // 60}m"


def _int(value: object, what: str) -> int:
    """etcd's gateway writes int64 as JSON strings (and omits zeros)."""
    if value is None:
        return 0
    try:
        return int(str(value))
    except ValueError as exc:
        raise CoordinatorError(f"etcd answered a bad {what}: {str(value)[:MAX_TEXT]}") from exc


def _order(start: int, size: int) -> list[int]:
    return [(start + k) % size for k in range(size)]


def _parse_endpoint(url: str) -> _Endpoint:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"etcd endpoint must be http(s)://host:port, not {url!r}")
    port = parts.port or DEFAULT_PORT
    return _Endpoint(url=f"{parts.scheme}://{parts.netloc}", scheme=parts.scheme, host=parts.hostname, port=port)


def _not_sent(exc: requests.RequestException) -> bool:
    """Whether a failed request certainly never reached etcd (so a write can be retried elsewhere)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason: object = exc.args[0] if exc.args else None
    if isinstance(reason, urllib3.exceptions.MaxRetryError):
        reason = reason.reason
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def _describe(exc: requests.RequestException, timeout: float) -> str:
    if isinstance(exc, requests.Timeout):
        return f"timed out after {timeout:.2g}s"
    text = str(exc)
    if "Connection refused" in text:
        return "connection refused"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error: " + _one_line(text.rsplit(":", 1)[-1])
    return _one_line(text.rsplit("Failed to establish a new connection: ", maxsplit=1)[-1].rstrip(")'\""))


class EtcdCoordinator:
    """The fleet ``Coordinator`` on an etcd v3 cluster (see the module docstring)."""

    kind = "etcd"

    def __init__(
        self,
        endpoints: Sequence[str],
        host: str,
        *,
        prefix: str = "/watchdogd/fleet/",
        lease_ttl: float = 15.0,
        timeout: float = 2.0,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        username: str | None = None,
        password: str | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        if (cert_file is None) != (key_file is None):
            raise ValueError("cert_file and key_file go together")
        if (username is None) != (password is None):
            raise ValueError("username and password go together")
        if timeout <= 0 or lease_ttl <= 0:
            raise ValueError("timeout and lease_ttl must be positive")
        self.host = host
        self.stats = CoordinatorStats()
        self._endpoints = [_parse_endpoint(url) for url in endpoints]
        self.stats.endpoint = self._endpoints[0].url
        self._prefix = prefix if prefix.endswith("/") else prefix + "/"
        self._lease_ttl = lease_ttl
        self._timeout = timeout
        self._tls = (ca_file, cert_file, key_file)
        self._credentials = (username, password) if username is not None and password is not None else None
        self._clock = clock
        self._monotonic = monotonic
        self._current = 0
        self._token: str | None = None
        self._lease_id: int | None = None
        self._closed = False
        self._lock = threading.Lock()  # endpoints, token, pending; never held across I/O
        self._lease_lock = threading.Lock()  # one lease grant at a time (held across I/O, waited with a deadline)
        self._pending = _Pending()
        self._offset = zlib.crc32(host.encode())
        # Hosts start at different members (like the slot offset), so a fleet's reads are spread.
        self._current = self._offset % len(self._endpoints)
        self.stats.endpoint = self._endpoints[self._current].url
        self._keeper = LeaseKeeper(
            self._refresh, lease_ttl, monotonic, self.stats, timeout=timeout, name=f"fleet-keeper-etcd-{host}"
        )

    # --- Coordinator -------------------------------------------------------------------------------------------
    def acquire(self, group: GroupLimits, rule: str, deadline: float) -> Grant | Denial:
        try:
            return self._acquire(group, rule, deadline)
        except CoordinatorError as exc:
            return self._unavailable(group, exc)
        except Exception as exc:  # a bug must not take the caller down: the group's on_unavailable decides
            log.exception("fleet etcd acquire failed unexpectedly")
            return self._unavailable(group, CoordinatorError(f"{type(exc).__name__}: {exc}"))

    def peek(self, group: GroupLimits, deadline: float) -> Denial | None:
        try:
            state = self._read_group(group, deadline)
            decision = self._decide(group, state)
            return decision if isinstance(decision, Denial) else None
        except CoordinatorError as exc:
            return self._unavailable(group, exc)
        except Exception as exc:
            log.exception("fleet etcd peek failed unexpectedly")
            return self._unavailable(group, CoordinatorError(f"{type(exc).__name__}: {exc}"))

    def holding(self, grant: Grant) -> bool:
        with self._lock:
            generation = self._pending.grants.get(grant.handle)
            closed = self._closed
        return not closed and generation is not None and self._keeper.valid(generation)

    def release(self, grant: Grant, deadline: float) -> None:
        with self._lock:
            held = self._pending.grants.pop(grant.handle, None) is not None
        try:
            key = self._slot_key(grant.group, grant.slot)
            try:
                self._delete_if(_Cleanup(key, "MOD", str(grant.token)), deadline)
            except CoordinatorError as exc:
                log.warning(
                    "fleet slot release failed; retried at the next contact, the lease expiry is the backstop",
                    extra={"fields": {"group": grant.group, "slot": grant.slot, "error": str(exc)}},
                )
                self._owe(_Cleanup(key, "MOD", str(grant.token)))
            self._run_cleanups(deadline)
        except Exception:
            log.exception("fleet etcd release failed unexpectedly")
        finally:
            if held:
                self._keeper.unhold()

    def view(self, group: GroupLimits, deadline: float) -> GroupView:
        state = self._read_group(group, deadline)
        return GroupView(
            group=group.name,
            max_hosts=group.max_hosts,
            holders=self._holders(group, state),
            max_runs=group.max_runs,
            runs_in_window=state.run_count if group.max_runs is not None else None,
            per=group.per,
        )

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            lease_id = self._lease_id
        self._keeper.close()
        if lease_id is not None:
            try:
                self._request("lease/revoke", {"ID": lease_id}, self._monotonic() + CLOSE_TIMEOUT)
            except _LeaseNotFound:
                pass
            except CoordinatorError as exc:
                log.info("fleet lease not revoked; it expires by itself", extra={"fields": {"error": str(exc)}})
        for endpoint in self._endpoints:
            if endpoint.client is not None:
                endpoint.client.session.close()

    # --- acquire -----------------------------------------------------------------------------------------------
    def _acquire(self, group: GroupLimits, rule: str, deadline: float) -> Grant | Denial:
        if self._closed:
            raise CoordinatorError("etcd coordinator closed")
        self._run_cleanups(self._monotonic() + min(self._timeout, (deadline - self._monotonic()) / 3))
        doubtful: list[_Attempt] = []  # this call's unanswered writes: adopted if seen, else owed as cleanups
        try:
            state = self._read_group(group, deadline)
            for _ in range(ACQUIRE_ATTEMPTS):
                outcome = self._attempt(group, rule, state, doubtful, deadline)
                if not isinstance(outcome, _GroupState):
                    return outcome
                state = outcome
            decision = self._adopt(group, state, doubtful) or self._decide(group, state)
            if isinstance(decision, Grant | Denial):
                return decision
            return Denial(group.name, "full", f"{group.name}: lost the race for a free slot {ACQUIRE_ATTEMPTS} times")
        finally:
            for attempt in doubtful:
                self._owe(_Cleanup(attempt.slot_key, "VALUE", _b64(attempt.value)))
                if attempt.run_key is not None:
                    self._owe(_Cleanup(attempt.run_key, "VALUE", _b64(attempt.value)))

    def _attempt(
        self, group: GroupLimits, rule: str, state: _GroupState, doubtful: list[_Attempt], deadline: float
    ) -> Grant | Denial | _GroupState:
        """One try from a read of the group: a grant, a denial, or the group re-read for another try."""
        adopted = self._adopt(group, state, doubtful)
        if adopted is not None:
            return adopted
        decision = self._decide(group, state)
        if isinstance(decision, Denial):
            return decision
        attempt = self._prepare(group, rule, decision, deadline)
        try:
            return self._take(group, attempt, deadline)
        except _Ambiguous as exc:
            log.warning(
                "fleet slot write unanswered; reading back to see whether it was applied",
                extra={"fields": {"group": group.name, "slot": attempt.slot, "error": str(exc)}},
            )
            self._count("ambiguous_writes")
            doubtful.append(attempt)
        except _LeaseNotFound:
            self._keeper.lost()  # expired in etcd before our clock said so: the next try takes a new lease
        return self._read_group(group, deadline)

    def _decide(self, group: GroupLimits, state: _GroupState) -> tuple[int, int | None] | Denial:
        """The slot and run key to take, or why none: ``full`` before ``rate``, as the operator reads them."""
        free = [i for i in _order(self._offset, group.max_hosts) if i not in state.slots]
        if state.slot_count >= group.max_hosts or not free:
            holders = self._holders(group, state)
            now = self._clock()
            held = ", ".join(f"{h.host} (rule {h.rule}, {_age(now - h.since)})" for h in holders)
            detail = f"{group.name} full: {state.slot_count}/{group.max_hosts} held by {held or '?'}"
            return Denial(group.name, "full", detail, holders)
        if group.max_runs is None:
            return free[0], None
        runs_free = [j for j in _order(self._offset, group.max_runs) if j not in state.runs]
        if state.run_count >= group.max_runs or not runs_free:
            detail = f"{group.name}: {state.run_count} runs in the last {_span(group.per)}, limit {group.max_runs}"
            return Denial(group.name, "rate", detail)
        return free[0], runs_free[0]

    def _prepare(self, group: GroupLimits, rule: str, choice: tuple[int, int | None], deadline: float) -> _Attempt:
        slot, run = choice
        lease_id, generation = self._ensure_lease(deadline)
        nonce = secrets.token_hex(8)
        since = self._clock()
        value = json.dumps({"host": self.host, "rule": rule, "since": since, "nonce": nonce}, sort_keys=True)
        run_key = f"{self._group_prefix(group.name)}runs/{run}" if run is not None else None
        return _Attempt(slot, self._slot_key(group.name, slot), run_key, value, nonce, lease_id, generation, since)

    def _take(self, group: GroupLimits, attempt: _Attempt, deadline: float) -> Grant | _GroupState:
        """The transaction: put the slot (and run key) if still absent; else the group as it is now."""
        compare = [{"key": _b64(attempt.slot_key), "result": "EQUAL", "target": "CREATE", "create_revision": "0"}]
        success: list[dict[str, Any]] = [
            {"request_put": {"key": _b64(attempt.slot_key), "value": _b64(attempt.value), "lease": attempt.lease_id}}
        ]
        if attempt.run_key is not None:
            run_lease = self._grant_lease(math.ceil(group.per), deadline, at_least=group.per)
            compare.append(
                {"key": _b64(attempt.run_key), "result": "EQUAL", "target": "CREATE", "create_revision": "0"}
            )
            success.append(
                {"request_put": {"key": _b64(attempt.run_key), "value": _b64(attempt.value), "lease": run_lease}}
            )
        body = {"compare": compare, "success": success, "failure": self._range_ops(group)}
        answer = self._request("kv/txn", body, deadline, write=True)
        if not answer.get("succeeded"):
            self._count("races_lost")
            return self._parse_state(group, answer)
        token = _int(_header(answer).get("revision"), "revision")
        return self._granted(group, attempt, token)

    def _granted(self, group: GroupLimits, attempt: _Attempt, token: int) -> Grant:
        with self._lock:
            self._pending.grants[attempt.nonce] = attempt.generation
        self._keeper.hold()
        rule = json.loads(attempt.value)["rule"]
        log.debug(
            "fleet slot granted",
            extra={"fields": {"group": group.name, "slot": attempt.slot, "token": token, "rule": rule}},
        )
        return Grant(group.name, attempt.slot, self.host, rule, attempt.since, token, handle=attempt.nonce)

    def _adopt(self, group: GroupLimits, state: _GroupState, doubtful: list[_Attempt]) -> Grant | None:
        """An unanswered write of this ``acquire`` that the read shows applied is our grant after all."""
        for attempt in doubtful:
            kv = state.slots.get(attempt.slot)
            if kv is not None and kv.value == attempt.value.encode():
                doubtful.remove(attempt)
                log.info("fleet slot write was applied after all", extra={"fields": {"group": group.name}})
                return self._granted(group, attempt, kv.mod_revision)
        return None

    # --- the host lease ----------------------------------------------------------------------------------------
    def _ensure_lease(self, deadline: float) -> tuple[int, int]:
        """A lease that lasts at least until the keeper's next refresh, and its generation.

        Reuse the current one while more than half its TTL is known to be
        left; refresh it when less (an idle host's keeper is not refreshing);
        grant a new one when it may be gone.
        """
        if not self._lease_lock.acquire(timeout=max(0.0, deadline - self._monotonic())):
            raise CoordinatorError("etcd lease busy until the deadline")
        try:
            generation = self._keeper.generation
            remaining = self._keeper.remaining()
            lease_id = self._lease_id
            if lease_id is not None and remaining >= self._lease_ttl / 2:
                return lease_id, generation
            if lease_id is not None and remaining > 0:
                sent = self._monotonic()
                if self._keepalive(lease_id, deadline) and self._keeper.generation == generation:
                    return lease_id, self._keeper.renewed(sent)
                self._keeper.lost()
            sent = self._monotonic()
            lease_id = self._grant_lease(math.ceil(self._lease_ttl), deadline, at_least=self._lease_ttl)
            self._lease_id = lease_id
            self._count("lease_grants")
            return lease_id, self._keeper.renewed(sent, new_lease=True)
        finally:
            self._lease_lock.release()

    def _grant_lease(self, ttl: int, deadline: float, *, at_least: float = 0.0) -> int:
        answer = self._request("lease/grant", {"TTL": ttl, "ID": 0}, deadline)
        if answer.get("error"):
            raise CoordinatorError(f"etcd refused a lease: {_one_line(str(answer['error']))}")
        granted = _int(answer.get("TTL"), "TTL")
        if granted < at_least:
            raise CoordinatorError(f"etcd granted a {granted}s lease, less than the {at_least:g}s asked")
        return _int(answer.get("ID"), "lease ID")

    def _keepalive(self, lease_id: int, deadline: float) -> bool:
        answer = self._request("lease/keepalive", {"ID": lease_id}, deadline)
        result = answer.get("result")
        if not isinstance(result, dict):
            raise CoordinatorError(f"etcd answered a keep-alive without a result: {_one_line(str(answer))}")
        return _int(result.get("TTL"), "TTL") > 0

    def _refresh(self, deadline: float) -> bool:
        """The keeper's refresh: keep the lease alive, then settle what this host owes etcd."""
        lease_id = self._lease_id
        if lease_id is None:
            return False
        alive = self._keepalive(lease_id, deadline)
        self._run_cleanups(deadline)
        return alive

    # --- cleanups ----------------------------------------------------------------------------------------------
    def _owe(self, cleanup: _Cleanup) -> None:
        with self._lock:
            if cleanup not in self._pending.cleanups:
                self._pending.cleanups.append(cleanup)
            del self._pending.cleanups[:-MAX_CLEANUPS]

    def _run_cleanups(self, deadline: float) -> None:
        """Delete what unanswered writes and failed releases may have left; keep what still fails."""
        with self._lock:
            owed, self._pending.cleanups = self._pending.cleanups, []
        for index, cleanup in enumerate(owed):
            try:
                self._delete_if(cleanup, deadline)
                self._count("cleanups")
            except CoordinatorError:
                for rest in owed[index:]:
                    self._owe(rest)
                return

    def _delete_if(self, cleanup: _Cleanup, deadline: float) -> bool:
        field_name = "value" if cleanup.target == "VALUE" else "mod_revision"
        compare = {"key": _b64(cleanup.key), "result": "EQUAL", "target": cleanup.target, field_name: cleanup.expected}
        body = {"compare": [compare], "success": [{"request_delete_range": {"key": _b64(cleanup.key)}}]}
        return bool(self._request("kv/txn", body, deadline).get("succeeded"))

    # --- reading a group ---------------------------------------------------------------------------------------
    def _group_prefix(self, group: str) -> str:
        if not group or GROUP_FORBIDDEN & set(group):
            raise CoordinatorError(f"fleet group name {group!r} cannot be an etcd key segment")
        return f"{self._prefix}{group}/"

    def _slot_key(self, group: str, slot: int) -> str:
        return f"{self._group_prefix(group)}slots/{slot}"

    def _range_ops(self, group: GroupLimits) -> list[dict[str, Any]]:
        """Read ops for the slots and (with a run window) the run keys, each bounded by a limit."""
        base = self._group_prefix(group.name)
        ops: list[dict[str, Any]] = [
            {"request_range": {"key": _b64(base + "slots/"), "range_end": _prefix_end(base + "slots/"),
                               "limit": group.max_hosts + RANGE_SLACK}},
        ]  # fmt: skip
        if group.max_runs is not None:
            ops.append(
                {"request_range": {"key": _b64(base + "runs/"), "range_end": _prefix_end(base + "runs/"),
                                   "limit": group.max_runs + RANGE_SLACK, "keys_only": True}}
            )  # fmt: skip
        return ops

    def _read_group(self, group: GroupLimits, deadline: float) -> _GroupState:
        """One linearizable read-only transaction of the group's slots and run keys."""
        answer = self._request("kv/txn", {"compare": [], "success": self._range_ops(group)}, deadline)
        return self._parse_state(group, answer)

    def _parse_state(self, group: GroupLimits, answer: Mapping[str, Any]) -> _GroupState:
        responses = answer.get("responses")
        expected = 2 if group.max_runs is not None else 1
        if not isinstance(responses, list) or len(responses) != expected:
            raise CoordinatorError(f"etcd answered an unexpected transaction: {_one_line(str(answer))}")
        slot_kvs, slot_count = self._parse_range(responses[0], group.max_hosts + RANGE_SLACK)
        base = self._group_prefix(group.name)
        slots = {}
        for kv in slot_kvs:
            index = kv.key.removeprefix(base + "slots/")
            if index.isdigit():
                slots[int(index)] = kv
        runs: set[int] = set()
        run_count = 0
        if group.max_runs is not None:
            run_kvs, run_count = self._parse_range(responses[1], group.max_runs + RANGE_SLACK)
            runs = {int(i) for kv in run_kvs if (i := kv.key.removeprefix(base + "runs/")).isdigit()}
        return _GroupState(slots, slot_count, frozenset(runs), run_count)

    @staticmethod
    def _parse_range(response: object, limit: int) -> tuple[list[_Kv], int]:
        body = response.get("response_range") if isinstance(response, dict) else None
        if not isinstance(body, dict):
            raise CoordinatorError(f"etcd answered an unexpected range: {_one_line(str(response))}")
        raw = body.get("kvs") or []
        if not isinstance(raw, list) or len(raw) > limit:
            raise CoordinatorError("etcd answered more keys than asked")
        kvs = [
            _Kv(_unb64(item.get("key")).decode(errors="replace"), _unb64(item.get("value", "")),
                _int(item.get("mod_revision"), "mod_revision"))
            for item in raw
            if isinstance(item, dict)
        ]  # fmt: skip
        return kvs, max(len(kvs), _int(body.get("count"), "count"))

    def _holders(self, group: GroupLimits, state: _GroupState) -> tuple[Holder, ...]:
        return tuple(self._holder(group.name, slot, kv) for slot, kv in sorted(state.slots.items()))

    @staticmethod
    def _holder(group: str, slot: int, kv: _Kv) -> Holder:
        """A slot as shown: a value another host wrote badly still counts as held, by an unknown host."""
        try:
            data = json.loads(kv.value)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            data = {}
        since = data.get("since")
        return Holder(
            group=group,
            slot=slot,
            host=_one_line(str(data.get("host", "?")), 64),
            rule=_one_line(str(data.get("rule", "?")), 64),
            since=float(since) if isinstance(since, int | float) else 0.0,
            token=kv.mod_revision,
        )

    # --- the wire ----------------------------------------------------------------------------------------------
    def _request(self, path: str, body: Mapping[str, Any], deadline: float, *, write: bool = False) -> dict[str, Any]:
        """POST to the current endpoint, failing over to the next on no answer, each call within the deadline.

        ``write``: the request changes something and is not idempotent, so
        once it may have been sent it is never repeated here (``_Ambiguous``).
        """
        last: CoordinatorError | None = None
        reauthenticated = False
        tries = 0
        while tries < len(self._endpoints):
            index = self._current
            try:
                return self._post(index, path, body, deadline)
            except _OutOfTime as exc:
                raise (last or exc) from exc
            except _AuthRejected:
                if self._credentials is None or reauthenticated:
                    raise
                reauthenticated = True
                self._authenticate(index, deadline)
                continue
            except _Unreachable as exc:
                tries += 1
                last = exc
                self._failover(index, exc)
                if write and exc.sent:
                    raise _Ambiguous(str(exc)) from exc
        raise last or CoordinatorError("etcd: no endpoint")

    def _post(self, index: int, path: str, body: Mapping[str, Any], deadline: float) -> dict[str, Any]:
        endpoint = self._endpoints[index]
        timeout = min(self._timeout, deadline - self._monotonic())
        if timeout < MIN_CALL_TIMEOUT:
            raise _OutOfTime(f"etcd {endpoint.url}: no time left before the deadline")
        if self._credentials is not None and self._token is None and path != "auth/authenticate":
            self._authenticate(index, deadline)
            timeout = min(self._timeout, deadline - self._monotonic())
        client = self._client(index)
        headers = {"Content-Type": "application/json"}
        if self._token is not None and path != "auth/authenticate":
            headers["Authorization"] = self._token
        self.stats.requests += 1
        try:
            with client.session.post(
                client.get_url(path),
                data=json.dumps(body),
                headers=headers,
                # total: a bare number would bound the connect and then each read again, so one call
                # could take twice the time left (the storm saw acquires 1 s past their deadline).
                # requests passes a urllib3 Timeout through unchanged; its stubs only list numbers.
                timeout=urllib3.util.Timeout(total=timeout),  # type: ignore[arg-type]
                stream=True,
            ) as response:
                status = response.status_code
                raw = self._read_body(response, endpoint, deadline)
        except requests.RequestException as exc:
            error = _Unreachable(f"etcd {endpoint.url}: {_describe(exc, timeout)}", sent=not _not_sent(exc))
            raise self._error(error) from exc
        return self._answer(endpoint, status, raw)

    def _read_body(self, response: requests.Response, endpoint: _Endpoint, deadline: float) -> bytes:
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
            raise self._error(CoordinatorError(f"etcd {endpoint.url}: answer of {declared} bytes refused"))
        chunks: list[bytes] = []
        size = 0
        length = int(declared) if declared is not None and declared.isdigit() else None
        for chunk in response.iter_content(chunk_size=16384):
            size += len(chunk)
            if size > MAX_BODY:
                raise self._error(CoordinatorError(f"etcd {endpoint.url}: answer over {MAX_BODY} bytes refused"))
            chunks.append(chunk)
            if length is not None and size >= length:
                break
            if self._monotonic() > deadline:  # each read is bounded by the timeout; a trickle is not
                raise self._error(_Unreachable(f"etcd {endpoint.url}: answer still coming at the deadline", sent=True))
        return b"".join(chunks)

    def _answer(self, endpoint: _Endpoint, status: int, raw: bytes) -> dict[str, Any]:
        try:
            answer = json.loads(raw) if raw.strip() else {}
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise self._error(CoordinatorError(f"etcd {endpoint.url}: HTTP {status}, not JSON: {raw[:80]!r}"))
        if status == 200:
            return answer
        message = _one_line(str(answer.get("message") or answer.get("error") or raw[:MAX_TEXT]))
        text = f"etcd {endpoint.url}: HTTP {status}: {message}"
        error: CoordinatorError
        if status in _UNREACHABLE_STATUS:
            error = _Unreachable(text, sent=True)
        elif status == 401 or "auth token" in message or "auth store is old" in message:
            error = _AuthRejected(text)
        elif "lease not found" in message:
            error = _LeaseNotFound(text)
        else:
            error = CoordinatorError(text)
        raise self._error(error)

    def _error(self, error: CoordinatorError) -> CoordinatorError:
        self.stats.errors += 1
        self.stats.last_error = str(error)
        self.stats.last_error_at = self._clock()
        return error

    def _authenticate(self, index: int, deadline: float) -> None:
        if self._credentials is None:
            return
        name, password = self._credentials
        with self._lock:
            self._token = None
        answer = self._post(index, "auth/authenticate", {"name": name, "password": password}, deadline)
        token = answer.get("token")
        if not isinstance(token, str) or not token:
            raise self._error(CoordinatorError(f"etcd {self._endpoints[index].url}: authentication gave no token"))
        self._count("authentications")
        with self._lock:
            self._token = token

    def _failover(self, failed: int, exc: CoordinatorError) -> None:
        with self._lock:
            if self._current != failed or len(self._endpoints) == 1:
                return
            self._current = (failed + 1) % len(self._endpoints)
            self.stats.failovers += 1
            self.stats.endpoint = self._endpoints[self._current].url
        log.warning(
            "fleet etcd endpoint failed; trying the next",
            extra={"fields": {"failed": self._endpoints[failed].url, "next": self.stats.endpoint, "error": str(exc)}},
        )

    def _client(self, index: int) -> Etcd3Client:
        endpoint = self._endpoints[index]
        if endpoint.client is None:
            ca_file, cert_file, key_file = self._tls
            client = Etcd3Client(
                host=endpoint.host,
                port=endpoint.port,
                protocol=endpoint.scheme,
                ca_cert=ca_file,
                cert_key=key_file,
                cert_cert=cert_file,
                timeout=self._timeout,
                api_path=API_PATH,
            )
            client.session.trust_env = False  # no proxy or .netrc from the environment between us and etcd
            endpoint.client = client
        return endpoint.client

    # --- bookkeeping -------------------------------------------------------------------------------------------
    def _count(self, name: str) -> None:
        self.stats.extra[name] = self.stats.extra.get(name, 0) + 1

    def _unavailable(self, group: GroupLimits, exc: CoordinatorError) -> Denial:
        detail = _one_line(f"fleet budget unavailable: {exc}", 300)
        log.debug("fleet budget unavailable", extra={"fields": {"group": group.name, "error": str(exc)}})
        return Denial(group.name, "unavailable", detail)


def _header(answer: Mapping[str, Any]) -> Mapping[str, Any]:
    header = answer.get("header")
    if not isinstance(header, dict):
        raise CoordinatorError("etcd answered without a header")
    return header
