"""The control API: a unix socket speaking versioned JSON, and its client.

Wire format (protocol version 1), one request per connection::

    -> {"v": 1, "cmd": "pause", "args": {"rule": "disk-full", "seconds": 1800}}\\n
    <- {"v": 1, "ok": true, "result": {...}}\\n
    <- {"v": 1, "ok": false, "error": {"code": "unknown_rule", "message": "..."}}\\n

The request ends at the first newline or when the client shuts down its
sending side. Whatever a client sends (garbage, 10 MB, nothing, one byte a
minute), it gets a JSON error and the daemon carries on: requests are capped
at 64 KiB and each connection has one deadline for the whole request (not per
``recv``, which a slow-loris client would reset forever).

Hostile or stuck clients cannot lock ``watchdogctl`` out (see ``Admission``):
requests are read by one event loop, so a client that connects and says
nothing costs a file descriptor, never a thread; each uid may keep only a few
connections that owe us their request past a short grace, and when the
connection table is full the newcomer takes the place of the oldest silent
connection of the uid holding the most. Commands run on a small pool of
workers where no uid may hold more than half, and non-root uids together
leave ``ROOT_RESERVE`` workers to root.

Access control is the socket's mode (0660) and group: anyone who can connect
may pause rules, so the socket is never world-accessible. Mutating commands
are logged with the caller's uid and pid (SO_PEERCRED); pause and resume are
also audit rows (``operator.pause``/``operator.resume``) that name them, and
so are ``pause_all``/``resume_all`` (maintenance mode, rows of rule ``*``).

The client half lives in ``watchdogd.faces.cli`` (``call``), so that
``watchdogctl status`` never imports this module or anything it pulls in.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import heapq
import json
import logging
import math
import os
import pwd
import socket
import stat
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watchdogd.faces.admission import Admission, run_loop, sweep_until
from watchdogd.faces.fleetview import fleet_document
from watchdogd.faces.reason import reason_problem
from watchdogd.faces.sending import write_in_pieces
from watchdogd.logs import event

if TYPE_CHECKING:
    from watchdogd.core.guard import Maintenance
    from watchdogd.engine.evidence import Evidence
    from watchdogd.engine.runtime import RunReport
    from watchdogd.engine.snapshot import ActionSummary, EngineSnapshot, FleetStats, RuleSnapshot
    from watchdogd.fleet.coordinator import GroupView
    from watchdogd.model import AuditEntry, RuleTransition, Unit

log = logging.getLogger(__name__)

PROTOCOL = 1
STATUS_SCHEMA = 1
MAX_REQUEST = 64 * 1024
REQUEST_TIMEOUT = 2.0
"""Seconds from connecting to the end of the request: ``watchdogctl`` sends it at once, so 2 s is generous."""
REPLY_TIMEOUT = 10.0
"""Seconds a client has to read the reply before we give up on it."""
MAX_CLIENTS = 8
"""Commands executed at once (the worker pool); complete requests beyond it queue, fairly (``_Turns``)."""
ROOT_RESERVE = 2
"""Workers that non-root uids together can never take, so an unprivileged flood cannot lock root out."""
MAX_CONNECTIONS = 128
"""Open client connections at most (file descriptors); past it the newcomer evicts a silent one (``Admission``)."""
STALLED_PER_UID = 8
"""Connections one uid may keep silent (owing its request or not reading our reply) past ``STALL_GRACE``."""
STALL_GRACE = 0.5
"""Seconds a new connection may stay silent before it counts against its uid's ``STALLED_PER_UID``."""
BACKLOG = 128
DRAIN = 30.0
"""Seconds a closing server keeps its loop for requests in flight (a reload that moved the socket answers on it)."""
LINGER = 0.5
"""Seconds to read and discard what a client still sends after our reply (see ``_linger``)."""
MAX_SOCKET_PATH = 107
SOCKET_MODE = 0o660
MAX_LISTED = 20
"""Subjects listed per rule in status (high-cardinality rules can have thousands; the count is always exact)."""
SUMMARY_LISTED = 2
"""Subjects listed per rule in the summary view: the status table names two and counts the rest."""
VIEWS = ("full", "summary")
"""``status`` views: ``full`` (the default, and ``status --json``) and ``summary``, what the status table
and ``check`` print (``_rule_summary``), a fraction of the bytes at 1,000 rules."""
HISTORY_LIMIT = 10_000
MAX_PAUSE = 365 * 86400.0
"""Longest timed pause, in seconds: ``units.MAX_DURATION``, the cap ``watchdogctl pause --for`` applies too
(not imported: this module stays free of pydantic). Longer is a typo or an attack (1e308 s overflows every
date formatter); a pause meant to last is a pause without ``seconds``, until resumed."""
MAX_PAUSE_TEXT = "365d"


class ControlError(Exception):
    """The control socket cannot be set up; the message names the key and the path."""


class RequestError(Exception):
    """A request the daemon refuses; becomes ``{"ok": false, "error": {code, message}}``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --------------------------------------------------------------------------- JSON helpers


def number(value: float | None) -> float | str | None:
    """JSON has no infinity: non-finite floats travel as the strings "+Inf", "-Inf" and "NaN"."""
    if value is None or math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"


def jsonable(value: Any) -> Any:
    """Anything from an audit row's detail -> strict JSON values."""
    if isinstance(value, float):
        return number(value)
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return str(value)


def _dumps(value: Any) -> str:
    """Compact strict JSON. Documents built here are JSON already, so they go straight to the encoder.

    Walking a 1,000-rule status document through ``jsonable`` first cost
    more than encoding it; only a value holding what JSON cannot carry (a
    non-finite float, a set, an object) takes that walk, and then encodes
    exactly as before.
    """
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return json.dumps(jsonable(value), allow_nan=False, separators=(",", ":"))


class Streamed:
    """A result written into the reply piece by piece (``write``) instead of held whole as one document.

    ``status`` at 1,000 rules is a 1 MB reply. Built as one document, its
    tens of thousands of small dicts, lists and strings were alive at once:
    the interpreter's small-object heap grew by 2-3 MiB for them, and
    objects the rules allocated meanwhile kept that growth resident for the
    daemon's life (issue 17). Written a rule at a time, only one rule's
    document is alive at any moment; the text goes into one buffer, which
    the C library maps and unmaps whole.
    """

    def write(self, out: bytearray) -> None:
        raise NotImplementedError


def encode(message: Mapping[str, Any]) -> bytes | bytearray:
    """One reply line; a ``Streamed`` result is written in place, as the last key (where a reply has it)."""
    result = message.get("result")
    if not isinstance(result, Streamed):
        return _dumps(message).encode("utf-8") + b"\n"
    out = _object_until({key: value for key, value in message.items() if key != "result"}, "result")
    result.write(out)
    out += b"}\n"
    return out


def _object_until(fields: Mapping[str, Any], key: str) -> bytearray:
    """A JSON object's text up to ``key``'s value, which the caller writes and closes: how a streamed part starts."""
    head = _dumps(fields)[:-1]
    return bytearray(f'{head}{"," if len(head) > 1 else ""}{json.dumps(key)}:'.encode())


# --------------------------------------------------------------------------- documents (the schemas)


def status_document(snap: EngineSnapshot, *, pid: int, version: str, view: str = "full") -> dict[str, Any]:
    """What ``status`` returns, as one document; the schema is documented in docs/interfaces.md.

    The ``summary`` view is the same document with each rule cut to what
    the status table and ``check`` print, and ``"view": "summary"`` added;
    the default (``full``) is unchanged, so older clients see no difference.
    The daemon sends it as ``StatusReply`` writes it: the same bytes.
    """
    summary = view == "summary"
    rule_document = _rule_summary if summary else _rule_document
    return {
        **_status_head(snap, pid=pid, version=version),
        "rules": [rule_document(rule) for rule in snap.rules],
    } | ({"view": "summary"} if summary else {})


class StatusReply(Streamed):
    """``status_document``'s bytes, written a rule at a time (see ``Streamed``)."""

    def __init__(self, snap: EngineSnapshot, *, pid: int, version: str, view: str = "full") -> None:
        self._snap = snap
        self._pid = pid
        self._version = version
        self._view = view

    def write(self, out: bytearray) -> None:
        summary = self._view == "summary"
        rule_document = _rule_summary if summary else _rule_document
        out += _object_until(_status_head(self._snap, pid=self._pid, version=self._version), "rules")
        out += b"["
        for index, rule in enumerate(self._snap.rules):
            if index:
                out += b","
            out += _dumps(rule_document(rule)).encode("utf-8")
        out += b'],"view":"summary"}' if summary else b"]}"


def _status_head(snap: EngineSnapshot, *, pid: int, version: str) -> dict[str, Any]:
    """The status document up to its rules; the summary lists read the rules' views, as the documents say them."""
    rules = snap.rules
    enabled = [rule for rule in rules if rule.enabled]
    states: dict[str, int] = {}
    for rule in rules:
        states[rule.status.value] = states.get(rule.status.value, 0) + 1
    return {
        "schema": STATUS_SCHEMA,
        "now": snap.taken_at,
        "daemon": {
            "version": version,
            "pid": pid,
            "started_at": snap.started_at,
            "uptime_seconds": max(0.0, snap.taken_at - snap.started_at),
            "config_path": snap.config_path,
            "config_loaded_at": snap.config_loaded_at,
            "last_reload_error": snap.last_reload_error,
            "dry_run": snap.dry_run,
            "stuck_probe_threads": snap.stuck_probes,
            "state_resets": snap.state_resets,
        },
        "maintenance": maintenance_document(snap.maintenance),
        "budget": {
            "actions": snap.budget_actions,
            "per_seconds": snap.budget_per,
            "remaining": snap.budget_remaining,
            "used_last_hour": snap.actions_last_hour,
        },
        "fleet": None if snap.fleet is None else {
            "coordinator": snap.fleet.kind,
            "host": snap.fleet.host,
            "groups": {
                g.name: {"max_hosts": g.max_hosts, "held_here": len(g.held), "waiting": [w.rule for w in g.waits]}
                for g in snap.fleet.groups
            },
        },
        "summary": {
            "rules": len(rules),
            "states": states,
            "firing": [rule.name for rule in enabled if rule.firing],
            "firing_critical": [rule.name for rule in enabled if rule.firing and rule.severity == "critical"],
            "gave_up": [rule.name for rule in enabled if rule.gave_up_at is not None],
            # "down" is a probe that failed on a rule that holds its state; a rule firing on the
            # outage is in "firing" (and "unreachable"), a rule waiting on it in "waiting": one
            # outage counts once.
            "down": [rule.name for rule in enabled if rule.status.value == "down"],
            "unreachable": [
                rule.name for rule in enabled
                if rule.up is False and rule.on_down == "fire" and rule.status.value != "absent"
            ],
            "waiting": [rule.name for rule in enabled if rule.status.value == "waiting"],
            "absent": [rule.name for rule in enabled if rule.status.value == "absent"],
            # A probe still stuck a whole interval past its timeout: the rule cannot run (/healthz 503).
            "stalled": sorted(snap.stalled_rules),
        },
    }


def maintenance_document(m: Maintenance | None) -> dict[str, Any] | None:
    """The host's maintenance mode (``watchdogctl pause --all``): null when it is off."""
    if m is None:
        return None
    return {
        "since": m.since,
        "until": number(m.until),
        "by": jsonable(m.by),
        "reason": m.reason,
        "changed_at": m.changed_at,
    }


def _rule_summary(rule: RuleSnapshot, listed_at_most: int = SUMMARY_LISTED) -> dict[str, Any]:
    """A rule in the summary view: what ``render_status``, ``nagios`` and the summary lists read, nothing more.

    The full document (``_rule_document``) is this plus the rule's
    description, probe, timing details and last change; the shared keys
    carry the same values in both views.
    """
    from watchdogd.units import format_value  # noqa: PLC0415 (daemon side only; keeps watchdogctl light)

    unit = rule.unit

    def value(subject: str, raw: float) -> dict[str, Any]:
        return {"subject": subject, "value": number(raw), "text": format_value(raw, unit)}

    def listed(values: Mapping[str, float]) -> dict[str, Any]:
        if not values:  # most rules, most of the time: nothing to rank
            return {"count": 0, "subjects": []}
        pick = heapq.nlargest if rule.above is not None else heapq.nsmallest  # == sorted(...)[:n], in O(n)
        worst_first = pick(listed_at_most, values.items(), key=_second)
        return {"count": len(values), "subjects": [value(s, v) for s, v in worst_first]}

    worst = _worst(rule)
    last = max(rule.last_actions, key=_ts, default=None)
    return {
        "name": rule.name,
        "severity": rule.severity,
        "state": rule.status.value,
        "enabled": rule.enabled,
        "dry_run": rule.dry_run,
        "cardinality": rule.cardinality.value,
        "interval_seconds": rule.every,
        "timeout_seconds": rule.timeout,
        "on_down": rule.on_down,
        "waiting_on": list(rule.waiting_on),
        "threshold": {
            "above": number(rule.above),
            "below": number(rule.below),
            "above_text": None if rule.above is None else format_value(rule.above, unit),
            "below_text": None if rule.below is None else format_value(rule.below, unit),
        },
        "up": rule.up,
        "error": rule.error,
        "subjects": len(rule.readings),
        "firing": listed(rule.firing),
        "pending": listed(rule.pending),
        "worst": None if worst is None else value(*worst),
        "actions": list(rule.actions),
        "last_action": None if last is None else {
            "action": last.action,
            "decision": last.decision,
            "result": last.result,
            "ts": last.ts,
            "subject": last.subject,
            "error": last.error,
        },
        "cooldown_until": number(rule.cooldown_until),
        "paused_until": number(rule.paused_until),
        "gave_up_at": number(rule.gave_up_at),
    }


def _second(item: tuple[str, float]) -> float:
    return item[1]


def _ts(action: ActionSummary) -> float:
    return action.ts


def _rule_document(rule: RuleSnapshot) -> dict[str, Any]:
    """A rule in the full view (``status --json``); the key order is the documented one."""
    s = _rule_summary(rule, MAX_LISTED)
    change = rule.last_change
    return {
        "name": s["name"],
        "description": rule.description,
        "probe": rule.probe,
        "target": rule.target,
        "severity": s["severity"],
        "state": s["state"],
        "enabled": s["enabled"],
        "dry_run": s["dry_run"],
        "unit": rule.unit.value,
        "cardinality": s["cardinality"],
        "interval_seconds": s["interval_seconds"],
        "timeout_seconds": s["timeout_seconds"],
        "timeout_source": rule.timeout_source,
        "on_down": s["on_down"],
        "depends_on": list(rule.depends_on),
        "waiting_on": s["waiting_on"],
        "last_change": None if change is None else {
            "kind": change.kind,
            "ts": change.ts,
            "subject": change.subject,
            "value": number(change.value),
        },
        "threshold": s["threshold"],
        "up": s["up"],
        "error": s["error"],
        "last_run": rule.last_run,
        "duration_seconds": rule.duration,
        "subjects": s["subjects"],
        "firing": s["firing"],
        "pending": s["pending"],
        "worst": s["worst"],
        "actions": s["actions"],
        "last_action": s["last_action"],
        "cooldown_until": s["cooldown_until"],
        "paused_until": s["paused_until"],
        "gave_up_at": s["gave_up_at"],
    }


def _worst(rule: RuleSnapshot) -> tuple[str, float] | None:
    """The reading closest to (or furthest past) the threshold: what "value vs threshold" shows."""
    if not rule.readings:
        return None
    items = rule.readings.items()
    high = max(items, key=lambda item: item[1])
    low = min(items, key=lambda item: item[1])
    if rule.above is not None and (high[1] > rule.above or rule.below is None or not low[1] < rule.below):
        return high
    return low if rule.below is not None else high


def audit_document(entry: AuditEntry, unit: Unit | None = None) -> dict[str, Any]:
    """One audit row; with the rule's unit, values also come as text (``93.1%``, ``2.0h``)."""
    from watchdogd.units import format_value  # noqa: PLC0415 (daemon side only)

    def text(value: float | None) -> str | None:
        return None if value is None or unit is None else format_value(value, unit)

    return {
        "id": entry.id,
        "ts": entry.ts,
        "rule": entry.rule,
        "subject": entry.subject,
        "action": entry.action,
        "decision": entry.decision.value,
        "result": entry.result,
        "error": entry.error,
        "value_before": number(entry.value_before),
        "value_after": number(entry.value_after),
        "value_before_text": text(entry.value_before),
        "value_after_text": text(entry.value_after),
        "duration_seconds": entry.duration,
        "detail": jsonable(entry.detail),
    }


def transition_document(row: RuleTransition, unit: Unit | None = None) -> dict[str, Any]:
    """One row of the alert history (pending, firing, resolved, down, back, gave_up, resumed...)."""
    from watchdogd.units import format_value  # noqa: PLC0415 (daemon side only)

    return {
        "id": row.id,
        "ts": row.ts,
        "rule": row.rule,
        "kind": row.kind,
        "subject": row.subject,
        "value": number(row.value),
        "value_text": None if row.value is None or unit is None else format_value(row.value, unit),
        "detail": jsonable(row.detail),
    }


def report_document(report: RunReport, unit: Unit | None = None) -> dict[str, Any]:
    return {
        "rule": report.rule,
        "state": report.status.value,
        "up": report.up,
        "error": report.error,
        "firing": {"count": len(report.firing), "subjects": list(report.firing[:MAX_LISTED])},
        "pending": {"count": len(report.pending), "subjects": list(report.pending[:MAX_LISTED])},
        "audit": [audit_document(entry, unit) for entry in report.audit],
        "waiting_on": list(report.waiting_on),
    }


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Handlers:
    """What the control API can do, as plain callables: the daemon wires them, tests fake them."""

    snapshot: Callable[[], EngineSnapshot]
    history: Callable[[str | None, float | None, int], Sequence[AuditEntry]]
    pause: Callable[[str, float, Mapping[str, Any] | None], None]
    """(rule, until, who asked: ``{"uid", "pid", "user"}`` or None when the peer is unknown)."""
    resume: Callable[[str, bool, Mapping[str, Any] | None], Mapping[str, Any]]
    """(rule, reset, who asked) -> ``was_paused``, ``reset``, ``gave_up_at``... (``Engine.resume``)."""
    run: Callable[[str], RunReport]
    reload: Callable[[], tuple[bool, str]]
    rules: Callable[[], Sequence[str]]
    units: Callable[[], Mapping[str, Unit]]
    version: str
    clock: Callable[[], float] = time.time
    transitions: Callable[[str | None, float | None, int], Sequence[RuleTransition]] = lambda *_: ()
    """The alert history, same filters as ``history`` (``StateStore.transitions``)."""
    test_notify: Callable[[str], str | None] = lambda sink: f"no sink named {sink!r}"
    """Send a test notification to a sink now: the error text, or None when it was delivered."""
    evidence: Callable[[int], Evidence | None] = lambda _id: None
    """Stored evidence by id (``watchdogctl show``)."""
    fleet_views: Callable[[], Sequence[GroupView | str] | None] = lambda: None
    """Each fleet group as the coordinator has it (network reads within the fleet timeout), None without a fleet."""
    fleet_stats: Callable[[float], FleetStats | None] = lambda now: None
    """This host's fleet budget at a time (``Engine.fleet_stats``), None without a fleet: ``fleet`` reads it
    rather than a whole engine snapshot (every rule, at 1,000 rules tens of ms)."""
    pause_all: Callable[[float, str | None, Mapping[str, Any] | None], Mapping[str, Any]] = (
        lambda until, reason, by: _no_maintenance_mode()
    )
    """(until, reason, who asked) -> ``maintenance`` (now) and ``replaced`` (before, or None): ``Engine.pause_all``."""
    resume_all: Callable[[Mapping[str, Any] | None], Mapping[str, Any]] = lambda by: _no_maintenance_mode()
    """(who asked) -> ``ended``: the maintenance that ended, None when there was none (``Engine.resume_all``)."""


def _no_maintenance_mode() -> Mapping[str, Any]:
    raise RequestError("unknown_command", "this daemon has no maintenance mode")


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


_ARG_TYPES: dict[str, tuple[type, ...]] = {
    "rule": (str,),
    "seconds": (int, float),
    "since": (int, float),
    "limit": (int,),
    "reset": (bool,),
    "sink": (str,),
    "id": (int,),
    "reason": (str,),
    "view": (str,),
}
_COMMAND_ARGS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # command: (required, optional)
    "version": (frozenset(), frozenset()),
    "status": (frozenset(), frozenset({"view"})),
    "history": (frozenset(), frozenset({"rule", "since", "limit"})),
    "pause": (frozenset({"rule"}), frozenset({"seconds"})),
    "resume": (frozenset({"rule"}), frozenset({"reset"})),
    "run": (frozenset({"rule"}), frozenset()),
    "reload": (frozenset(), frozenset()),
    "test_notify": (frozenset({"sink"}), frozenset()),
    "show": (frozenset({"id"}), frozenset()),
    "fleet": (frozenset(), frozenset()),
    "pause_all": (frozenset(), frozenset({"seconds", "reason"})),
    "resume_all": (frozenset(), frozenset()),
}
MUTATING = frozenset({"pause", "resume", "run", "reload", "test_notify", "pause_all", "resume_all"})


def parse_request(raw: bytes) -> tuple[str, dict[str, Any]]:
    """Bytes -> (command, args), or RequestError saying exactly what is wrong."""
    text = raw.strip()
    if not text:
        raise RequestError("bad_request", "empty request: send one JSON object, e.g. {\"v\": 1, \"cmd\": \"status\"}")
    try:
        message = json.loads(text.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RequestError("bad_request", "request is not UTF-8") from exc
    except ValueError as exc:
        raise RequestError("bad_request", f"request is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise RequestError("bad_request", "request must be a JSON object with \"v\" and \"cmd\"")
    version = message.get("v")
    if version != PROTOCOL or isinstance(version, bool):
        raise RequestError("unsupported_version", f"protocol version {version!r} is not supported; use {PROTOCOL}")
    unknown = set(message) - {"v", "cmd", "args"}
    if unknown:
        raise RequestError("bad_request", f"unknown request key(s): {', '.join(sorted(map(str, unknown)))}")
    command = message.get("cmd")
    if not isinstance(command, str) or command not in _COMMAND_ARGS:
        raise RequestError("unknown_command", f"unknown command {command!r}; expected one of: "
                           f"{', '.join(_COMMAND_ARGS)}")
    args = message.get("args")
    args = {} if args is None else args
    if not isinstance(args, dict):
        raise RequestError("bad_request", "args must be a JSON object")
    required, optional = _COMMAND_ARGS[command]
    for key in sorted(set(args) - required - optional):
        raise RequestError("bad_request", f"{command}: unknown argument {key!r}")
    for key in sorted(required - set(args)):
        raise RequestError("bad_request", f"{command}: missing argument {key!r}")
    for key, value in args.items():
        if value is None and key in optional:
            continue
        expected = _ARG_TYPES[key]
        if (isinstance(value, bool) and bool not in expected) or not isinstance(value, expected):
            raise RequestError("bad_request", f"{command}: argument {key!r} has the wrong type")
        if isinstance(value, float) and not math.isfinite(value):
            raise RequestError("bad_request", f"{command}: argument {key!r} must be finite")
    return command, args


class Dispatcher:
    """Command name -> handler; everything here returns JSON-able data (or a ``Streamed`` result) or raises
    RequestError."""

    def __init__(self, handlers: Handlers) -> None:
        self.handlers = handlers
        self._table: dict[str, Callable[[dict[str, Any], Peer | None], Any]] = {
            "version": self._version,
            "status": self._status,
            "history": self._history,
            "pause": self._pause,
            "resume": self._resume,
            "run": self._run,
            "reload": self._reload,
            "test_notify": self._test_notify,
            "show": self._show,
            "fleet": self._fleet,
            "pause_all": self._pause_all,
            "resume_all": self._resume_all,
        }

    def handle(self, raw: bytes, peer: Peer | None = None) -> dict[str, Any]:
        try:
            command, args = parse_request(raw)
            if command in MUTATING:
                event(log, logging.INFO, "control request", cmd=command, rule=args.get("rule"),
                      uid=None if peer is None else peer.uid, pid=None if peer is None else peer.pid)
            return {"v": PROTOCOL, "ok": True, "result": self._table[command](args, peer)}
        except RequestError as exc:
            return error_reply(exc.code, exc.message)
        except Exception as exc:  # a bug must be an error reply, never a dead daemon
            log.exception("control request failed")
            return error_reply("internal", f"internal error: {type(exc).__name__}: {exc}")

    def reply(self, raw: bytes, peer: Peer | None = None) -> bytes | bytearray:
        """``handle``'s reply, encoded; a ``Streamed`` result that fails while it is written is an error reply too."""
        message = self.handle(raw, peer)
        try:
            return encode(message)
        except Exception as exc:  # a bug must be an error reply, never a connection cut without one
            log.exception("control reply failed")
            return encode(error_reply("internal", f"internal error: {type(exc).__name__}: {exc}"))

    def _known(self, rule: str) -> str:
        names = list(self.handlers.rules())
        if rule not in names:
            shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
            raise RequestError("unknown_rule", f"unknown rule {rule!r} (rules: {shown or 'none'})")
        return rule

    def _version(self, args: dict[str, Any], peer: Peer | None) -> Any:
        return {"version": self.handlers.version, "protocol": PROTOCOL, "commands": list(self._table)}

    def _status(self, args: dict[str, Any], peer: Peer | None) -> Any:
        view = args.get("view") or "full"
        if view not in VIEWS:
            raise RequestError("bad_request", f"status: view must be one of {', '.join(VIEWS)}, got {view!r}")
        return StatusReply(self.handlers.snapshot(), pid=os.getpid(), version=self.handlers.version, view=view)

    def _history(self, args: dict[str, Any], peer: Peer | None) -> Any:
        limit = args.get("limit")
        limit = 50 if limit is None else limit
        if not 1 <= limit <= HISTORY_LIMIT:
            raise RequestError("bad_request", f"history: limit must be from 1 to {HISTORY_LIMIT}")
        rule = args.get("rule")
        entries = self.handlers.history(rule, args.get("since"), limit)
        changes = self.handlers.transitions(rule, args.get("since"), limit)
        units = self.handlers.units()
        return {
            "entries": [audit_document(entry, units.get(entry.rule)) for entry in entries],
            "transitions": [transition_document(row, units.get(row.rule)) for row in changes],
        }

    def _pause(self, args: dict[str, Any], peer: Peer | None) -> Any:
        rule = self._known(args["rule"])
        until = self._until("pause", args.get("seconds"))
        self.handlers.pause(rule, until, operator(peer))
        return {"rule": rule, "paused_until": number(until)}

    def _until(self, command: str, seconds: float | None) -> float:
        if seconds is not None and not 0 < seconds <= MAX_PAUSE:
            raise RequestError("bad_request", f"{command}: seconds must be more than 0 and at most {MAX_PAUSE:.0f} "
                               f"({MAX_PAUSE_TEXT}); omit it to pause until resumed")
        return math.inf if seconds is None else self.handlers.clock() + seconds

    def _pause_all(self, args: dict[str, Any], peer: Peer | None) -> Any:
        until = self._until("pause_all", args.get("seconds"))
        reason = args.get("reason")
        if reason is not None:
            problem = reason_problem(reason)
            if problem is not None:
                raise RequestError("bad_request", f"pause_all: reason {problem}")
            reason = reason.strip()
        outcome = self.handlers.pause_all(until, reason, operator(peer))
        return {
            "maintenance": maintenance_document(outcome["maintenance"]),
            "replaced": maintenance_document(outcome.get("replaced")),
        }

    def _resume_all(self, args: dict[str, Any], peer: Peer | None) -> Any:
        outcome = self.handlers.resume_all(operator(peer))
        ended = outcome.get("ended")
        return {"was_in_maintenance": ended is not None, "ended": maintenance_document(ended)}

    def _resume(self, args: dict[str, Any], peer: Peer | None) -> Any:
        rule = self._known(args["rule"])
        reset = bool(args.get("reset") or False)
        outcome = self.handlers.resume(rule, reset, operator(peer))
        return {"rule": rule, **{key: jsonable(value) for key, value in outcome.items()}, "reset": reset}

    def _run(self, args: dict[str, Any], peer: Peer | None) -> Any:
        rule = self._known(args["rule"])
        try:
            report = self.handlers.run(rule)
        except KeyError as exc:  # removed by a reload between the check and the run
            raise RequestError("unknown_rule", f"unknown rule {rule!r}") from exc
        return report_document(report, self.handlers.units().get(rule))

    def _show(self, args: dict[str, Any], peer: Peer | None) -> Any:
        found = self.handlers.evidence(args["id"])
        if found is None:
            raise RequestError("unknown_evidence", f"no evidence {args['id']} (pruned after history_retention?)")
        return {
            "id": found.id,
            "ts": found.ts,
            "rule": found.rule,
            "reason": found.reason,
            "subjects": list(found.subjects),
            "sections": jsonable(found.sections),
            "bytes": found.bytes,
            "duration_seconds": found.duration,
            "error": found.error,
            "cut": list(found.cut),
        }

    def _fleet(self, args: dict[str, Any], peer: Peer | None) -> Any:
        now = self.handlers.clock()
        stats = self.handlers.fleet_stats(now)
        views = self.handlers.fleet_views() if stats is not None else None
        return fleet_document(stats, views, now)

    def _test_notify(self, args: dict[str, Any], peer: Peer | None) -> Any:
        sink = args["sink"]
        error = self.handlers.test_notify(sink)
        if error is not None:
            raise RequestError("notify_failed", f"test-notify {sink}: {error}")
        return {"sink": sink, "delivered": True}

    def _reload(self, args: dict[str, Any], peer: Peer | None) -> Any:
        ok, message = self.handlers.reload()
        if not ok:
            raise RequestError("reload_failed", message)
        return {"reloaded": True, "summary": message}


def operator(peer: Peer | None) -> dict[str, Any] | None:
    """Who asked, for the audit row: uid and pid from SO_PEERCRED, and the user name when it has one."""
    if peer is None:
        return None
    who: dict[str, Any] = {"uid": peer.uid, "pid": peer.pid}
    with contextlib.suppress(KeyError):  # a uid without a passwd entry stays a number
        who["user"] = pwd.getpwuid(peer.uid).pw_name
    return who


def error_reply(code: str, message: str) -> dict[str, Any]:
    return {"v": PROTOCOL, "ok": False, "error": {"code": code, "message": message}}


class _Turns:
    """Fair shares of the command workers: nobody holds more than half, non-root leaves root its reserve.

    ``run`` and ``reload`` can take seconds; without shares, one uid looping
    over ``watchdogctl run`` could keep every worker and lock root out.
    """

    def __init__(self, workers: int, root_reserve: int) -> None:
        self.workers = workers
        self.per_uid = max(1, workers // 2)
        self.non_root = max(1, workers - root_reserve)
        self._busy: dict[int, int] = {}
        self._changed = asyncio.Condition()

    def _may_start(self, uid: int) -> bool:
        total = sum(self._busy.values())
        non_root = total - self._busy.get(0, 0)
        return (total < self.workers and self._busy.get(uid, 0) < self.per_uid
                and (uid == 0 or non_root < self.non_root))

    @contextlib.asynccontextmanager
    async def turn(self, uid: int) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: self._may_start(uid))
            self._busy[uid] = self._busy.get(uid, 0) + 1
        try:
            yield
        finally:
            async with self._changed:
                self._busy[uid] -= 1
                self._changed.notify_all()


# --------------------------------------------------------------------------- server


def resolve_group(name: str | None) -> int | None:
    """control_group by name (or numeric gid); an unknown group is a config error, not a silent default."""
    if name is None:
        return None
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ControlError(f"control_group: no group named {name!r} on this host") from None


def _peer(conn: socket.socket | None) -> Peer | None:
    if conn is None:
        return None
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


def _check_existing(path: Path) -> None:
    """Replace a stale socket, never a live one and never something that is not a socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlError(f"control_socket: {path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return  # left behind by a daemon that died: ours to replace
    except OSError:
        return
    finally:
        probe.close()
    raise ControlError(f"control_socket: another process is listening on {path} (is watchdogd already running?)")


def _bind(path: Path, gid: int | None) -> socket.socket:
    """Bind under a temporary name, set mode and group, then rename into place.

    Nobody can ever connect to ``path`` while it still has the umask's mode
    or the wrong group: the socket appears there with its final permissions.
    """
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ControlError(
            f"control_socket: {path} is a path too long for a unix socket "
            f"({len(os.fsencode(path))} bytes, max {MAX_SOCKET_PATH})"
        )
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise ControlError(f"control_socket: cannot create {path.parent}: {exc.strerror}") from exc
    _check_existing(path)
    temp = path.with_name(f".wd{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(temp))
        os.chmod(temp, SOCKET_MODE)
        if gid is not None:
            try:
                os.chown(temp, -1, gid)
            except PermissionError as exc:
                raise ControlError(
                    f"control_group: cannot give {path} to group {gid}: {exc.strerror} "
                    "(run as root, or as a member of that group)"
                ) from exc
        os.rename(temp, path)
        sock.listen(16)
    except ControlError:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise ControlError(f"control_socket: cannot listen on {path}: {exc.strerror}") from exc
    return sock


class _Client:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    def cut(self) -> None:
        self.writer.transport.abort()


class ControlServer:
    """One event loop thread reads requests and writes replies; commands run on a small worker pool."""

    def __init__(
        self,
        path: Path,
        group: str | None,
        handlers: Handlers,
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        max_clients: int = MAX_CLIENTS,
        max_connections: int = MAX_CONNECTIONS,
        stalled_per_uid: int = STALLED_PER_UID,
        stall_grace: float = STALL_GRACE,
    ) -> None:
        self.path = path
        self._request_timeout = request_timeout
        self.group = group
        self._gid = resolve_group(group)
        self._dispatcher = Dispatcher(handlers)
        self._sock = _bind(path, self._gid)
        self._inode = os.stat(path).st_ino
        self.admission: Admission[_Client] = Admission(max_connections, stalled_per_uid, stall_grace)
        self._turns = _Turns(max_clients, ROOT_RESERVE)
        self._pool = ThreadPoolExecutor(max_clients, thread_name_prefix="control-cmd")
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._close_timeout = 30.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread: threading.Thread | None = None
        self._local = threading.local()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)
        self._thread.start()

    def set_group(self, group: str | None) -> None:
        """Reload with the same path but another group: chown in place."""
        gid = resolve_group(group)
        if gid is not None:
            try:
                os.chown(self.path, -1, gid)
            except PermissionError as exc:
                raise ControlError(f"control_group: cannot give {self.path} to group {group}: {exc.strerror}") from exc
        self.group, self._gid = group, gid

    def _run(self) -> None:
        run_loop(self._loop, self._main)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_unix_server(self._client, sock=self._sock, backlog=BACKLOG)
        try:
            await sweep_until(self._stop, self.admission, self._loop.time)
        finally:
            server.close()
            self.admission.cut_silent()
            if self._tasks:  # requests in flight finish and get their replies, even after close() returned
                await asyncio.wait(set(self._tasks), timeout=max(self._close_timeout, DRAIN))
            self._pool.shutdown(wait=False)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        client = _Client(writer)
        peer = _peer(writer.get_extra_info("socket"))
        try:
            if self.admission.admit(client, -1 if peer is None else peer.uid, self._loop.time()):
                await self._converse(client, reader, writer, peer)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or stopped reading: nothing left to tell it
        except Exception:  # a bug must cost one connection, never the loop
            log.exception("control connection failed")
        finally:
            self.admission.release(client)
            writer.transport.abort()
            self._tasks.discard(task)

    async def _converse(
        self, client: _Client, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer | None
    ) -> None:
        request = await self._read_request(reader)
        if isinstance(request, bytes):
            self.admission.busy(client)
            async with self._turns.turn(-1 if peer is None else peer.uid):
                reply = await self._loop.run_in_executor(self._pool, self._handle, request, peer)
        else:
            reply = encode(request)
        # drain() returns once the buffer is below its low-water mark, and the connection is aborted
        # soon after (a client that half-closed ends the linger at once): with the mark at 0 it returns
        # only when the whole reply is with the kernel, so a big reply (status at 1,000 rules, 0.5-1 MB)
        # is never cut short for a reader that lags.
        writer.transport.set_write_buffer_limits(high=0)
        self.admission.silent(client, self._loop.time())
        async with asyncio.timeout(REPLY_TIMEOUT):
            await write_in_pieces(writer, reply)
        writer.write_eof()
        await _linger(reader)

    def _handle(self, line: bytes, peer: Peer | None) -> bytes | bytearray:
        """Run a command and encode its reply, both on a worker.

        A big reply (status at 1,000 rules) takes milliseconds to encode;
        on the loop thread that would hold up every other client.
        """
        self._local.worker = True  # close() from a command (a reload moving the socket) must not wait for itself
        return self._dispatcher.reply(line, peer)

    async def _read_request(self, reader: asyncio.StreamReader) -> bytes | dict[str, Any]:
        buffer = bytearray()
        try:
            async with asyncio.timeout(self._request_timeout):
                while b"\n" not in buffer:
                    chunk = await reader.read(4096)
                    if not chunk:
                        break  # half-closed: the client finished sending without a newline
                    buffer += chunk
                    if len(buffer) > MAX_REQUEST:
                        return error_reply("too_large", f"request larger than {MAX_REQUEST} bytes")
        except TimeoutError:
            return error_reply("timeout", f"request not complete within {self._request_timeout:g}s")
        except OSError as exc:
            return error_reply("bad_request", f"read failed: {exc.strerror}")
        line = bytes(buffer).split(b"\n", 1)[0]
        if len(line) > MAX_REQUEST:
            return error_reply("too_large", f"request larger than {MAX_REQUEST} bytes")
        return line

    def close(self, timeout: float = 30.0) -> None:
        """Stop accepting, remove the socket (if still ours), let requests in flight finish."""
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        if self._thread is None:
            self._sock.close()
            self._loop.close()
            self._pool.shutdown(wait=False)
            return
        self._close_timeout = timeout
        with contextlib.suppress(RuntimeError):  # the loop already ended
            self._loop.call_soon_threadsafe(self._begin_stop)
        if getattr(self._local, "worker", False):
            return  # our own command: the loop finishes after its reply is written
        self._thread.join(timeout=timeout)

    def _begin_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()


async def _linger(reader: asyncio.StreamReader) -> None:
    """Discard what the client still sends (an oversized request's tail) until it closes.

    Closing a unix socket with unread data resets the connection, and the
    client then loses the error reply it was about to read. Bounded in time
    and bytes, so a client that never stops sending cannot hold the slot.
    """
    discarded = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(LINGER):
            while discarded < 16 * MAX_REQUEST:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                discarded += len(chunk)
