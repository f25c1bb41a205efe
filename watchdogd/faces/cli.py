"""watchdogctl: talk to a running watchdogd over its control socket.

Start-up time is part of the interface (``watchdogctl status`` runs from
shells, Nagios and cron every few seconds), so the status path imports only
the standard library (the protocol client is here, not in
``watchdogd.faces.control``); pydantic and the config machinery load only for the
commands that need them (check-config, and duration parsing in history/pause).

Exit codes (documented in docs/interfaces.md):

* status, run: 0 ok, 1 firing (or a probe down), 2 a rule gave up, 3 daemon unreachable
* check: Nagios (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)
* pause, resume, reload, history: 0 done, 1 failed (reload rejected), 3 unreachable; ``resume --all`` outside
  maintenance is 0 too ("not in maintenance")
* any command: 4 the daemon refused the request (unknown rule, an argument it rejects); 2 usage error,
  including an option watchdogctl itself cannot parse (``--since soon``, ``--for 0s``): nothing was sent
* check-config: 0 valid, 1 invalid
"""

from __future__ import annotations

import argparse
import grp
import json
import os
import re
import socket
import stat
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from watchdogd import __version__
from watchdogd.counting import count_line
from watchdogd.faces.reason import MAX_REASON, reason_problem

PROTOCOL = 1
"""Must equal ``watchdogd.faces.control.PROTOCOL`` (a test checks); not imported, to keep status light."""
DEFAULT_CONFIG = "/etc/watchdogd/watchdogd.yaml"
DEFAULT_SOCKET = "/run/watchdogd/control.sock"

EXIT_OK, EXIT_FIRING, EXIT_GAVE_UP, EXIT_UNREACHABLE, EXIT_REFUSED = 0, 1, 2, 3, 4
EXIT_USAGE = 2  # argparse's own code for a command line it cannot take
NAGIOS = ("OK", "WARNING", "CRITICAL", "UNKNOWN")

TIMEOUTS = {"run": 900.0, "reload": 120.0, "fleet": 160.0}
"""Seconds to wait for the daemon; run waits for probes and actions (each bounded by its own timeout), fleet for
the coordinator (one fleet.coordinator.timeout, under 150 s)."""
DEFAULT_TIMEOUT = 10.0

_SIMPLE_SCALAR = re.compile(r"^control_socket:[ \t]*([^\s#'\"{}\[\]&*!|>%@`][^#\n]*?)[ \t]*(?:#.*)?$", re.M)


# --------------------------------------------------------------------------- client (protocol: watchdogd.faces.control)


class Unreachable(Exception):
    """The daemon cannot be reached; ``reason`` is missing, refused, forbidden, timeout or error."""

    def __init__(self, path: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason
        self.message = message


class Refused(Exception):
    """The daemon answered with an error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _forbidden_hint(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "run as root or as a member of the socket's group"
    mode = stat.S_IMODE(st.st_mode)
    if st.st_gid == 0:
        # No control_group: the socket is root's alone. Joining group root is not the answer.
        return (f"only root may use it (socket mode {mode:04o}, no control_group set): run watchdogctl as root "
                "(sudo), or set control_group in the daemon's config (e.g. control_group: watchdogd), reload, "
                "and add yourself to that group")
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"run as root or as a member of group {group!r} (socket mode {mode:04o})"


def call(path: str, command: str, args: Mapping[str, Any] | None = None, *, timeout: float = 10.0) -> Any:
    """One request; returns ``result`` or raises Unreachable / Refused with a one-line message."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + timeout
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except FileNotFoundError:
            raise Unreachable(path, "missing", f"control socket {path} does not exist: "
                              "watchdogd is not running (or uses another control_socket)") from None
        except ConnectionRefusedError:
            raise Unreachable(path, "refused", f"connection to {path} refused: "
                              "watchdogd is not running (stale socket)") from None
        except PermissionError:
            raise Unreachable(path, "forbidden", f"permission denied on {path}: {_forbidden_hint(path)}") from None
        except TimeoutError:
            raise Unreachable(path, "timeout", f"watchdogd did not accept on {path} within {timeout:g}s") from None
        except OSError as exc:
            raise Unreachable(path, "error", f"cannot connect to {path}: {exc.strerror or exc}") from None
        request = {"v": PROTOCOL, "cmd": command, "args": dict(args or {})}
        chunks: list[bytes] = []
        try:
            sock.sendall(json.dumps(request, allow_nan=False).encode("utf-8") + b"\n")
            sock.shutdown(socket.SHUT_WR)
            while True:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except TimeoutError:
            raise Unreachable(path, "timeout", f"watchdogd did not answer on {path} within {timeout:g}s") from None
        except OSError as exc:
            raise Unreachable(path, "error", f"connection to {path} failed: {exc.strerror or exc}") from None
    finally:
        sock.close()
    try:
        reply = json.loads(b"".join(chunks).decode("utf-8"))
    except ValueError:
        raise Unreachable(path, "error", f"watchdogd on {path} sent an unreadable reply") from None
    if not isinstance(reply, dict) or "ok" not in reply:
        raise Unreachable(path, "error", f"watchdogd on {path} sent an unexpected reply")
    if not reply["ok"]:
        error = reply.get("error") or {}
        raise Refused(str(error.get("code", "error")), str(error.get("message", "request refused")))
    return reply.get("result")


# --------------------------------------------------------------------------- socket path


def socket_from_config(path: str) -> str | None:
    """``control_socket`` from the daemon's config, without loading the config machinery.

    A plain ``control_socket: /path`` line is read with a regex (no YAML
    import on the status path); anything fancier (quotes, anchors) goes
    through the YAML parser. Unreadable or absent: None.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError):
        return None
    if "control_socket" not in text:
        return None
    match = _SIMPLE_SCALAR.search(text)
    if match:
        return match.group(1)
    try:
        import yaml  # noqa: PLC0415 (rare path: keeps status fast)

        data = yaml.safe_load(text)
    except Exception:
        return None
    value = data.get("control_socket") if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


def socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    return socket_from_config(args.config) or DEFAULT_SOCKET


# --------------------------------------------------------------------------- formatting helpers


def age(seconds: float) -> str:
    """Compact human duration: 45s, 12m, 3h5m, 2d4h."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"


def _float(value: Any) -> float | None:
    """Numbers in the protocol may be the strings +Inf/-Inf/NaN."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def clock_text(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


class Palette:
    """ANSI colours for states, or none at all (not a tty, NO_COLOR, TERM=dumb, --color never)."""

    CODES: Mapping[str, str] = {
        "firing": "31;1", "gave_up": "31;1", "down": "31", "failed": "31",
        "pending": "33", "paused": "33", "dry_run": "36",
        "ok": "32", "disabled": "2",
    }

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, key: str) -> str:
        code = self.CODES.get(key)
        if not self.enabled or code is None:
            return text
        return f"\x1b[{code}m{text}\x1b[0m"


def use_colour(choice: str, stream: TextIO, env: Mapping[str, str]) -> bool:
    if choice != "auto":
        return choice == "always"
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    return stream.isatty()


def table(headers: Sequence[str], rows: Sequence[Sequence[tuple[str, str]]], paint: Palette) -> str:
    """Aligned columns; each cell is (text, colour key). Widths ignore colour codes."""
    widths = [max(len(h), max((len(row[index][0]) for row in rows), default=0)) for index, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    if not paint.enabled:  # the common case (a pipe, Nagios, cron): no call per cell
        lines += ["  ".join([text.ljust(width) for (text, _), width in zip(row, widths, strict=True)]).rstrip()
                  for row in rows]
        return "\n".join(lines)
    for row in rows:
        cells = [paint(text.ljust(width), key) for (text, key), width in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


# --------------------------------------------------------------------------- status


def status_exit(doc: Mapping[str, Any]) -> int:
    summary = doc.get("summary", {})
    if summary.get("gave_up"):
        return EXIT_GAVE_UP
    if summary.get("firing") or summary.get("down"):
        return EXIT_FIRING
    return EXIT_OK


def _state_cell(rule: Mapping[str, Any], now: float) -> tuple[str, str]:
    state = str(rule["state"])
    paused = _float(rule.get("paused_until"))
    if state == "paused" and paused is not None:
        return (f"paused {age(paused - now)}" if paused != float("inf") else "paused", "paused")
    if rule.get("dry_run") and state in ("firing", "pending"):
        return (f"{state} (dry-run)", state)
    return state, state


def _breaching_cell(rule: Mapping[str, Any]) -> str:
    firing, pending = rule["firing"], rule["pending"]
    count = firing["count"] + pending["count"]
    if not count:
        return "-"
    if rule.get("cardinality") == "high":
        return f"{count} of {rule['subjects']}"
    names = [item["subject"] for item in firing["subjects"] + pending["subjects"]]
    shown = ", ".join(names[:2])
    return _cut(shown, 36) + (f" +{count - 2}" if count > 2 else "")


def _value_cell(rule: Mapping[str, Any]) -> str:
    worst = rule.get("worst")
    if rule.get("state") == "waiting":
        return "waiting on " + ", ".join(rule.get("waiting_on") or ())
    if rule.get("up") is False:
        return _failure_word(rule)
    if worst is None:
        return "-"
    value = _float(worst["value"])
    threshold = rule["threshold"]
    above, below = _float(threshold.get("above")), _float(threshold.get("below"))
    if value is not None and below is not None and (above is None or value < below):
        limit, text = below, threshold["below_text"]
    elif above is not None:
        limit, text = above, threshold["above_text"]
    else:
        return str(worst["text"])
    sign = "=" if value == limit else (">" if value is not None and value > limit else "<")
    return f"{worst['text']} {sign} {text}"


def _action_cell(rule: Mapping[str, Any], now: float) -> tuple[str, str]:
    last = rule.get("last_action")
    if not last:
        return ("-" if rule.get("actions") else "(no actions)", "")
    result = "dry-run" if last["result"] == "dry_run" else str(last["result"])
    key = {"ok": "ok", "failed": "failed", "dry-run": "dry_run"}.get(result, "")
    return f"{last['action']} {result} {age(now - float(last['ts']))} ago", key


def _cooldown_cell(rule: Mapping[str, Any], now: float) -> str:
    until = _float(rule.get("cooldown_until"))
    return age(until - now) if until is not None and until > now else "-"


def _failure_word(rule: Mapping[str, Any]) -> str:
    """What a failed probe means for this rule: not installed here, an outage it fires on, or a gap."""
    if rule.get("state") == "absent":
        return "absent (never answered on this host)"
    return "unreachable" if rule.get("on_down") == "fire" else "probe down"


def _timing_cell(rule: Mapping[str, Any]) -> str:
    """Interval and the effective probe timeout (status --json says how it was derived)."""
    every, timeout = _float(rule.get("interval_seconds")), _float(rule.get("timeout_seconds"))
    if every is None or timeout is None:
        return "-"
    return f"{age(every)}/{age(timeout)}"


def render_status(doc: Mapping[str, Any], paint: Palette) -> str:
    now = float(doc["now"])
    daemon, budget, summary = doc["daemon"], doc["budget"], doc["summary"]
    head = (
        f"watchdogd {daemon['version']} (pid {daemon['pid']}), up {age(daemon['uptime_seconds'])}, "
        f"config {daemon['config_path']} loaded {age(now - daemon['config_loaded_at'])} ago"
    )
    second = (
        f"{count_line(summary['states'])}; budget {budget['remaining']}/{budget['actions']} "
        f"actions per {age(budget['per_seconds'])}, {budget['used_last_hour']} used in the last hour"
    )
    lines = [head, second]
    maintenance = doc.get("maintenance")  # absent from a daemon older than this watchdogctl
    if maintenance:
        lines.insert(0, paint(maintenance_line(maintenance, now), "paused"))
    fleet = doc.get("fleet")
    if fleet:
        groups = "; ".join(
            f"{name} {g['held_here']} held here" + (f", waiting: {', '.join(g['waiting'])}" if g["waiting"] else "")
            for name, g in fleet["groups"].items()
        )
        lines.append(f"fleet budget on {fleet['coordinator']} as {fleet['host']}: {groups} (watchdogctl fleet)")
    if daemon["dry_run"]:
        lines.append(paint("DRY-RUN: actions are recorded, not taken", "dry_run"))
    if daemon["last_reload_error"]:
        lines.append(paint(f"last reload FAILED, previous config still running: {daemon['last_reload_error']}",
                           "failed"))
    if summary.get("stalled"):
        lines.append(paint(f"{_stalled_text(summary['stalled'])} ({daemon.get('stuck_probe_threads', 0)} probe "
                           "thread(s) stuck; see docs/faults.md)", "failed"))
    lines.append("")
    rows = [
        [
            (_cut(rule["name"], 40), ""),
            _state_cell(rule, now),
            (_breaching_cell(rule), ""),
            (_value_cell(rule), ""),
            _action_cell(rule, now),
            (_cooldown_cell(rule, now), ""),
            (_timing_cell(rule), ""),
        ]
        for rule in doc["rules"]
    ]
    if rows:
        header = ["RULE", "STATE", "BREACHING", "VALUE", "LAST ACTION", "COOLDOWN", "EVERY/TIMEOUT"]
        lines.append(table(header, rows, paint))
    else:
        lines.append("no rules configured")
    notes = [
        f"{rule['name']}: {_failure_word(rule)}: {rule['error']}"
        for rule in doc["rules"]
        if rule.get("up") is False and rule.get("state") != "waiting"
    ]
    notes += [
        f"{rule['name']}: last action {rule['last_action']['action']} failed: "
        f"{_cut(' '.join(str(rule['last_action']['error']).split()), 160)}"
        for rule in doc["rules"]
        if rule.get("last_action") and rule["last_action"]["result"] == "failed" and rule["last_action"]["error"]
    ]
    notes += [f"{name}: gave up acting (alerting only); `watchdogctl resume {name} --reset` re-arms it"
              for name in summary["gave_up"]]
    if notes:
        lines.append("")
        lines.extend(notes)
    return "\n".join(lines)


def maintenance_line(m: Mapping[str, Any], now: float) -> str:
    """``MAINTENANCE until 2026-12-03 14:05:00 (25m left) by alice (uid 1000) (kernel upgrade): ...``."""
    until = _float(m.get("until"))
    if until is None or until == float("inf"):
        when = f"until resumed (since {age(now - float(m['since']))})"
    else:
        when = f"until {clock_text(until)} ({age(until - now)} left)"
    reason = f" ({m['reason']})" if m.get("reason") else ""
    return (f"MAINTENANCE {when} {who_text(m.get('by'))}{reason}: no rule acts on this host; probes, states and "
            "alerts go on (`watchdogctl resume --all` ends it)")


def who_text(by: Any) -> str:
    """``by alice (uid 1001)``, ``by uid 1001``, or ``by ?`` for a request without SO_PEERCRED."""
    by = by if isinstance(by, Mapping) else {}
    if "uid" not in by:
        return "by ?"
    return f"by {by['user']} (uid {by['uid']})" if by.get("user") else f"by uid {by['uid']}"


# --------------------------------------------------------------------------- check (Nagios)


def nagios(doc: Mapping[str, Any]) -> tuple[int, str]:
    """One line and a Nagios code: CRITICAL for critical firing or a give-up, WARNING for other firing/down."""
    summary = doc["summary"]
    severity = {rule["name"]: rule["severity"] for rule in doc["rules"]}
    unreachable = set(summary.get("unreachable", ()))
    firing = [
        f"{name} (unreachable)" if name in unreachable else name
        for name in summary["firing"]
        if severity.get(name) != "info"
    ]
    critical = bool(summary["firing_critical"] or summary["gave_up"])
    stalled = summary.get("stalled", [])  # absent from a daemon older than this watchdogctl
    warning = firing or summary["down"] or stalled or doc["daemon"]["last_reload_error"]
    code = 2 if critical else (1 if warning else 0)
    parts = []
    if firing:
        parts.append(f"{len(firing)} firing: {', '.join(firing)}")
    if summary["gave_up"]:
        parts.append(f"{len(summary['gave_up'])} gave up: {', '.join(summary['gave_up'])}")
    if summary["down"]:
        parts.append(f"{len(summary['down'])} down: {', '.join(summary['down'])}")
    if stalled:
        parts.append(_stalled_text(stalled))
    if doc["daemon"]["last_reload_error"]:
        parts.append("last reload failed")
    if doc.get("maintenance"):  # says why nothing is being fixed; raises nothing by itself
        parts.append("maintenance (no actions)")
    # The problems by name, then the same count as status, --once and /healthz (waiting and absent
    # rules are shown there, and raise nothing: an outage counts once, a missing service not at all).
    text = "; ".join([*parts, count_line(summary["states"])])
    states = summary["states"]
    perf = (
        f"rules={summary['rules']} firing={len(summary['firing'])} pending={states.get('pending', 0)} "
        f"gave_up={len(summary['gave_up'])} down={len(summary['down'])} "
        f"waiting={states.get('waiting', 0)} absent={states.get('absent', 0)} "
        f"budget_remaining={doc['budget']['remaining']}"
    )
    return code, f"WATCHDOGD {NAGIOS[code]} - {text} | {perf}"


def _stalled_text(names: Sequence[str]) -> str:
    return f"{len(names)} stalled (probe stuck past its interval): {', '.join(names)}"


# --------------------------------------------------------------------------- history, run


def render_history(
    entries: Sequence[Mapping[str, Any]],
    paint: Palette,
    transitions: Sequence[Mapping[str, Any]] = (),
    limit: int | None = None,
) -> str:
    """The audit log's rows and the alert history's, one timeline, newest first (at most ``limit`` rows)."""
    rows = [(float(entry["ts"]), _audit_row(entry)) for entry in entries]
    rows += [(float(change["ts"]), _transition_row(change)) for change in transitions]
    rows.sort(key=lambda row: row[0], reverse=True)
    if not rows:
        return "no matching history"
    headers = ["TIME", "RULE", "ACTION", "SUBJECT", "OUTCOME", "VALUE", "ERROR"]
    return table(headers, [row for _, row in rows[:limit]], paint)


def _audit_row(entry: Mapping[str, Any]) -> list[tuple[str, str]]:
    before = entry.get("value_before_text") or _number_text(entry.get("value_before"))
    after = entry.get("value_after_text") or _number_text(entry.get("value_after"))
    values = before if after == "-" else f"{before} -> {after}"
    key = "failed" if entry["result"] == "failed" else ("ok" if entry["result"] == "ok" else "")
    return [
        (clock_text(float(entry["ts"])), ""),
        (_cut(entry["rule"], 30), ""),
        (entry["action"], ""),
        (_cut(entry["subject"], 40), ""),
        (_outcome(entry), key),
        (values, ""),
        (_cut(" ".join(str(entry.get("error") or "").split()), 80), ""),
    ]


_TRANSITION_PAINT = {"firing": "failed", "down": "failed", "gave_up": "failed", "resolved": "ok", "back": "ok"}


def _transition_row(change: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A row of the alert history: ``ACTION`` reads ``(state)``, ``OUTCOME`` what the rule or subject became."""
    detail = change.get("detail") or {}
    kind = str(change["kind"])
    note = _maintenance_note(kind, detail) if kind.startswith("maintenance") else str(detail.get("error") or "")
    return [
        (clock_text(float(change["ts"])), ""),
        (_cut(change["rule"], 30), ""),
        ("(state)", ""),
        (_cut(change["subject"], 40), ""),
        (kind, _TRANSITION_PAINT.get(kind, "")),
        (change.get("value_text") or _number_text(change.get("value")), ""),
        (_cut(" ".join(note.split()), 80), ""),
    ]


def _maintenance_note(kind: str, detail: Mapping[str, Any]) -> str:
    """The ERROR column of a maintenance row of the alert history: who, until when, why; or how it ended."""
    if kind == "maintenance_end":
        began = detail.get("maintenance") or {}
        how = "expired" if detail.get("ended") == "expired" else f"resumed {who_text(detail.get('by'))}"
        return f"{how}; began {_since_text(began)} {who_text(began.get('by'))}"
    return _maintenance_terms(detail)


def _maintenance_terms(detail: Mapping[str, Any]) -> str:
    until = _float(detail.get("until"))
    text = f"{who_text(detail.get('by'))}, " + (
        "until resumed" if until is None or until == float("inf") else f"until {clock_text(until)}"
    )
    return text + (f": {_cut(str(detail['reason']), 60)}" if detail.get("reason") else "")


def _since_text(m: Mapping[str, Any]) -> str:
    since = _float(m.get("since"))
    return "?" if since is None else clock_text(since)


def _outcome(entry: Mapping[str, Any]) -> str:
    """``skipped_cooldown``, ``ran ok``, ``ran failed``, ``dry_run``; ``by alice (uid 1001), ...`` for an operator."""
    if entry["decision"] == "operator":
        return _maintenance_outcome(entry) if entry["action"] in _MAINTENANCE_ACTIONS else _operator_outcome(entry)
    if entry["result"] in ("n/a", "dry_run"):
        return str(entry["decision"])
    return f"{entry['decision']} {entry['result']}"


def _operator_outcome(entry: Mapping[str, Any]) -> str:
    """An operator's pause or resume: who asked (SO_PEERCRED) and what it did."""
    detail = entry.get("detail") or {}
    parts = [who_text(detail.get("by"))]  # "by ?": an operator row written without a peer (no SO_PEERCRED)
    if entry["action"] == "operator.pause":
        until = _float(detail.get("until"))
        parts.append("until resumed" if until is None or until == float("inf") else f"until {clock_text(until)}")
    elif entry["action"] == "operator.resume":
        if detail.get("reset"):
            forgot = int(detail.get("actions_forgotten") or 0)
            parts.append(f"--reset: forgot {forgot} run{'' if forgot == 1 else 's'}"
                         + (", lifted the give-up" if detail.get("gave_up_lifted") else ""))
        elif detail.get("gave_up_at") is not None:
            parts.append("still gave up")
        if not detail.get("was_paused", True):
            parts.append("was not paused")
    return ", ".join(parts)


_MAINTENANCE_ACTIONS = frozenset({"operator.pause_all", "operator.resume_all", "maintenance.expired"})


def _maintenance_outcome(entry: Mapping[str, Any]) -> str:
    """A row of maintenance mode (rule ``*``): who began it, until when and why; who ended it, or its expiry."""
    detail = entry.get("detail") or {}
    if entry["action"] == "operator.pause_all":
        replaced = " (replaces the one before)" if detail.get("replaced") else ""
        return f"maintenance {_maintenance_terms(detail)}{replaced}"
    began = detail.get("maintenance") or {}
    how = "expired" if entry["action"] == "maintenance.expired" else f"ended {who_text(detail.get('by'))}"
    return f"maintenance {how} (began {_since_text(began)} {who_text(began.get('by'))})"


def _number_text(value: Any) -> str:
    number = _float(value)
    return "-" if number is None else f"{number:g}"


def render_report(report: Mapping[str, Any]) -> str:
    parts = [f"{report['rule']}: {report['state']}"]
    if report.get("error"):
        parts.append(f"error: {report['error']}")
    for key in ("firing", "pending"):
        group = report[key]
        if group["count"]:
            more = f" (+{group['count'] - len(group['subjects'])})" if group["count"] > len(group["subjects"]) else ""
            parts.append(f"{key}: {', '.join(group['subjects'])}{more}")
    for entry in report["audit"]:
        outcome = _outcome(entry)
        line = f"{entry['action']} {entry['subject']}: {outcome}"
        if entry.get("error"):
            line += f" ({_cut(' '.join(str(entry['error']).split()), 120)})"
        parts.append(line)
    return "\n  ".join(parts)


def report_exit(report: Mapping[str, Any]) -> int:
    """Same meaning as status: a paused rule that still fires exits 1."""
    if report["state"] == "gave_up":
        return EXIT_GAVE_UP
    if report["firing"]["count"] or report["state"] == "down":
        return EXIT_FIRING
    return EXIT_OK


# --------------------------------------------------------------------------- commands


def duration(text: str) -> float:
    """argparse type for ``--since``/``--for``: a bad one is a usage error (exit 2), never sent to the daemon."""
    from watchdogd.units import parse_duration  # noqa: PLC0415 (only history/pause with the option pay for pydantic)

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be longer than 0, got {text!r}")
    return seconds


def _request(args: argparse.Namespace, command: str, payload: Mapping[str, Any] | None = None) -> Any:
    timeout = args.timeout if args.timeout is not None else TIMEOUTS.get(command, DEFAULT_TIMEOUT)
    return call(socket_path(args), command, payload, timeout=timeout)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


STATUS_VIEW_ARGS: Mapping[str, Any] = {"view": "summary"}
"""What the status table and ``check`` ask for: each rule cut to what they print (``status --json`` asks for all)."""


def _status_view(args: argparse.Namespace) -> Any:
    """The summary view of status; from a daemon older than the view, the whole document (one more round trip)."""
    try:
        return _request(args, "status", STATUS_VIEW_ARGS)
    except Refused as exc:
        if exc.code != "bad_request" or "'view'" not in exc.message:
            raise
    return _request(args, "status")


def cmd_status(args: argparse.Namespace) -> int:
    doc = _request(args, "status") if args.json else _status_view(args)
    if args.json:
        _print_json(doc)
    else:
        print(render_status(doc, Palette(use_colour(args.color, sys.stdout, os.environ))))
    return status_exit(doc)


def cmd_check(args: argparse.Namespace) -> int:
    try:
        doc = _status_view(args)
    except (Unreachable, Refused) as exc:
        print(f"WATCHDOGD UNKNOWN - {exc}")
        return 3
    code, line = nagios(doc)
    print(line)
    return code


def cmd_history(args: argparse.Namespace) -> int:
    payload: dict[str, Any] = {"limit": args.limit}
    if args.rule:
        payload["rule"] = args.rule
    if args.since is not None:
        payload["since"] = time.time() - args.since
    result = _request(args, "history", payload)
    entries = [] if args.alerts else result["entries"]
    transitions = [] if args.actions else result.get("transitions", [])  # a daemon before the alert history
    if args.json:
        _print_json({"entries": entries, "transitions": transitions})
    else:
        paint = Palette(use_colour(args.color, sys.stdout, os.environ))
        print(render_history(entries, paint, transitions, limit=args.limit))
    return EXIT_OK


def usage_error(message: str) -> int:
    """One line on stderr and exit 2, nothing sent: a combination argparse itself cannot refuse."""
    print(f"watchdogctl: {message}", file=sys.stderr)
    return EXIT_USAGE


def cmd_pause(args: argparse.Namespace) -> int:
    if args.all:
        return pause_all(args)
    if args.rule is None:
        return usage_error("pause: name a rule, or --all for maintenance mode (every rule)")
    if args.reason is not None:
        return usage_error("pause: --reason goes with --all (maintenance mode); a rule's pause takes none")
    payload: dict[str, Any] = {"rule": args.rule}
    if args.for_ is not None:
        payload["seconds"] = args.for_
    result = _request(args, "pause", payload)
    until = _float(result["paused_until"])
    if until is None or until == float("inf"):
        print(f"paused {args.rule} with no expiry: it alerts but takes no action until "
              f"`watchdogctl resume {args.rule}`")
    else:
        print(f"paused {args.rule} until {clock_text(until)} ({age(until - time.time())})")
    return EXIT_OK


def pause_all(args: argparse.Namespace) -> int:
    """Maintenance mode: no rule acts on this host until it expires or ``resume --all``."""
    if args.rule is not None:
        return usage_error(f"pause --all takes no rule (it covers every rule), got {args.rule!r}")
    payload: dict[str, Any] = {}
    if args.for_ is not None:
        payload["seconds"] = args.for_
    if args.reason is not None:
        problem = reason_problem(args.reason)
        if problem is not None:
            return usage_error(f"pause --all: --reason {problem}")
        payload["reason"] = args.reason.strip()
    result = _request(args, "pause_all", payload)
    until = _float(result["maintenance"]["until"])
    endless = until is None or until == float("inf")
    when = "until resumed"
    if until is not None and not endless:
        when = f"until {clock_text(until)} ({age(until - time.time())})"
    line = f"maintenance mode {when}: no rule acts on this host; probes, states, status and alerts go on"
    replaced = result.get("replaced")
    if replaced:
        line += f" (replaces the maintenance since {clock_text(float(replaced['since']))} {who_text(replaced['by'])})"
    print(line)
    if endless:
        print("watchdogctl: warning: this maintenance has no end: nothing is fixed on this host until "
              "`watchdogctl resume --all` (use --for 2h to end it by itself)", file=sys.stderr)
    return EXIT_OK


def resume_all(args: argparse.Namespace) -> int:
    """End maintenance mode; outside it, say so and succeed (the wanted state holds either way)."""
    if args.rule is not None:
        return usage_error(f"resume --all takes no rule (it ends maintenance mode), got {args.rule!r}")
    if args.reset:
        return usage_error("resume --all ends maintenance mode only; --reset is per rule (resume RULE --reset)")
    result = _request(args, "resume_all", {})
    ended = result.get("ended")
    if not ended:
        print("not in maintenance")
        return EXIT_OK
    reason = f" ({ended['reason']})" if ended.get("reason") else ""
    print(f"maintenance mode ended: it began {clock_text(float(ended['since']))} {who_text(ended['by'])}{reason}; "
          "rules act again per their policy (cooldowns, pauses and give-ups as they were)")
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    if args.all:
        return resume_all(args)
    if args.rule is None:
        return usage_error("resume: name a rule, or --all to end maintenance mode")
    payload: dict[str, Any] = {"rule": args.rule}
    if args.reset:
        payload["reset"] = True
    result = _request(args, "resume", payload)
    print(resume_text(args.rule, result))
    return EXIT_OK


def resume_text(rule: str, result: Mapping[str, Any]) -> str:
    """What a resume did, and what it did not: a give-up stays unless --reset was asked for."""
    was_paused = result.get("was_paused")
    head = f"resumed {rule}: " + ("pause lifted" if was_paused or was_paused is None else "it was not paused")
    if result.get("reset"):
        forgot = result.get("actions_forgotten")
        head += "; --reset: " + ("give-up lifted, " if result.get("gave_up_lifted") else "")
        if forgot is not None:
            head += f"action window forgotten ({forgot} run{'' if forgot == 1 else 's'})"
        else:
            head += "action window forgotten"
        return head
    gave_up = _float(result.get("gave_up_at"))
    if gave_up is not None:
        return (f"{head}; it is still GIVEN UP since {clock_text(gave_up)} and takes no action until it has been "
                f"clear for its stable_for, or until `watchdogctl resume {rule} --reset`")
    return head + " (its max_actions window still counts the recent runs; --reset forgets them)"


def cmd_run(args: argparse.Namespace) -> int:
    report = _request(args, "run", {"rule": args.rule})
    if args.json:
        _print_json(report)
    else:
        print(render_report(report))
    return report_exit(report)


def cmd_reload(args: argparse.Namespace) -> int:
    try:
        result = _request(args, "reload")
    except Refused as exc:
        if exc.code != "reload_failed":
            raise
        print(f"watchdogctl: reload failed, the previous config keeps running:\n{exc.message}", file=sys.stderr)
        return EXIT_FIRING
    print(f"reloaded: {result['summary']}")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    result = _request(args, "show", {"id": args.id})
    if args.json:
        _print_json(result)
        return EXIT_OK
    print(render_evidence(result))
    return EXIT_OK


def render_evidence(doc: Mapping[str, Any]) -> str:
    """A header line, then each section as indented JSON: what the runbook would have looked at."""
    size = f"{doc['bytes'] / 1024:.1f} KiB"
    head = (f"evidence {doc['id']}: {doc['rule']}, {doc['reason']}, {clock_text(float(doc['ts']))}, "
            f"subjects {', '.join(doc['subjects']) or '-'} ({doc['duration_seconds']:.2f}s, {size})")
    lines = [head]
    if doc.get("error"):
        lines.append(f"error: {doc['error']}")
    for name, section in (doc.get("sections") or {}).items():
        lines.append(f"\n== {name}")
        lines.append(json.dumps(section, indent=2, ensure_ascii=False, default=str))
    if doc.get("cut"):
        lines.append(f"\n(cut to stay within evidence.max_bytes: {', '.join(doc['cut'])})")
    return "\n".join(lines)


def cmd_fleet(args: argparse.Namespace) -> int:
    from watchdogd.faces.fleetview import render_fleet  # noqa: PLC0415 (only this command)

    result = _request(args, "fleet", {})
    if args.json:
        _print_json(result)
    else:
        print(render_fleet(result))
    return EXIT_OK


def cmd_test_notify(args: argparse.Namespace) -> int:
    result = _request(args, "test_notify", {"sink": args.sink})
    print(f"delivered a test notification to {result['sink']}")
    return EXIT_OK


def cmd_schema(_args: argparse.Namespace) -> int:
    """The policy's JSON Schema for editors (the same as the shipped watchdogd.schema.json)."""
    from watchdogd.configschema import render  # noqa: PLC0415 (heavy: only this command)

    sys.stdout.write(render())
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    from pathlib import Path  # noqa: PLC0415

    from watchdogd.config import ConfigError, load_config  # noqa: PLC0415 (heavy: only this command)

    path = Path(args.path)
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    problems = interface_problems(config)
    for problem in problems:
        print(f"{path}: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"OK: {path}: {config.summary()}")
    for rule in config.rules.values():
        if rule.enabled:
            print("  " + rule_timing(rule, config.fleet_groups.get(rule.name)))
    return EXIT_OK


def rule_timing(rule: Any, fleet_group: str | None = None) -> str:
    """How often a rule runs, how long its probe may take and why, what an outage does to it."""
    line = (
        f"{rule.name}: every {rule.every:g}s, timeout {rule.timeout:g}s ({rule.timeout_source}), "
        f"on_down {rule.on_down}"
    )
    if rule.depends_on:
        line += f", depends on {', '.join(rule.depends_on)}"
    from watchdogd.model import Unit  # noqa: PLC0415 (check-config only; watchdogctl stays light)
    from watchdogd.units import format_value  # noqa: PLC0415

    seconds = Unit.SECONDS
    predict = rule.predict
    if predict is not None:
        side, level = ("above", predict.above) if predict.above is not None else ("below", predict.below)
        line += (f", predicts {side} {format_value(level, rule.unit)} within {format_value(predict.within, seconds)}"
                 f" over {format_value(predict.over, seconds)}")
    if rule.thresholds.hold:
        line += f", holds firing {format_value(rule.thresholds.hold, seconds)}"
    if fleet_group is not None:
        line += f", fleet group {fleet_group}"
    return line


def interface_problems(config: Any) -> list[str]:
    """What the daemon would refuse at start besides the YAML itself: web config, group, textfile dir."""
    from watchdogd.faces.control import ControlError, resolve_group  # noqa: PLC0415 (daemon side: only this command)
    from watchdogd.faces.httpserver import ListenError, WebConfigError, load_web_config, parse_listen  # noqa: PLC0415
    from watchdogd.faces.textfile import TextfileError, check_directory  # noqa: PLC0415

    checks: list[Callable[[], object]] = [
        lambda: load_web_config(config.web_config_file),
        lambda: resolve_group(config.control_group),
    ]
    if config.listen:
        checks.append(lambda: parse_listen(config.listen))
    if config.textfile_dir:
        checks.append(lambda: check_directory(config.textfile_dir))
    problems = []
    for check in checks:
        try:
            check()
        except (WebConfigError, ControlError, ListenError, TextfileError) as exc:
            problems.append(str(exc))
    from watchdogd.notifications.service import NotifyConfigError, build_transports  # noqa: PLC0415

    try:
        build_transports(config)
    except NotifyConfigError as exc:
        problems.append(str(exc).removeprefix(f"{config.path}: "))  # the caller names the file
    return problems


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "status": cmd_status,
    "check": cmd_check,
    "history": cmd_history,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "run": cmd_run,
    "reload": cmd_reload,
    "test-notify": cmd_test_notify,
    "show": cmd_show,
    "fleet": cmd_fleet,
    "check-config": cmd_check_config,
    "schema": cmd_schema,
}


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value < 86400:
        raise argparse.ArgumentTypeError(f"expected seconds between 0 and 86400, got {text!r}")
    return value


def _common(defaults: bool) -> argparse.ArgumentParser:
    """Options accepted before and after the command (``watchdogctl status --socket X`` works too)."""
    common = argparse.ArgumentParser(add_help=False)

    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    common.add_argument("--socket", default=default(None),
                        help=f"control socket (default: control_socket from --config, else {DEFAULT_SOCKET})")
    common.add_argument("--config", default=default(os.environ.get("WATCHDOGD_CONFIG", DEFAULT_CONFIG)),
                        help="daemon config, read only for control_socket (default: $WATCHDOGD_CONFIG or "
                        f"{DEFAULT_CONFIG})")
    common.add_argument("--timeout", type=_positive, default=default(None), help="seconds to wait for the daemon")
    common.add_argument("--color", choices=("auto", "always", "never"), default=default("auto"),
                        help="colour output (auto: only on a terminal, and never with NO_COLOR set)")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="watchdogctl", description="Control and inspect a running watchdogd.", parents=[_common(True)]
    )
    parser.add_argument("--version", action="version", version=f"watchdogctl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    later = _common(False)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, parents=[later])

    status = command("status", "rules, states, values and last actions (exit 0/1/2/3)")
    status.add_argument("--json", action="store_true", help="the status document (schema in docs)")
    command("check", "one Nagios-style line, exit 0 OK / 1 WARNING / 2 CRITICAL / 3 UNKNOWN")

    history = command("history", "the audit log (every guard decision) and the alert history (every "
                      "transition), newest first")
    history.add_argument("--rule", help="only this rule")
    history.add_argument("--since", type=duration, metavar="DURATION",
                         help="only entries newer than this duration ago, e.g. 1h, 7d")
    history.add_argument("--limit", type=int, default=50, help="at most this many entries (default: 50)")
    only = history.add_mutually_exclusive_group()
    only.add_argument("--actions", action="store_true", help="only the audit log (actions, skips, operators)")
    only.add_argument("--alerts", action="store_true", help="only the alert history (pending, firing, "
                      "resolved, down, back, gave_up, resumed...)")
    history.add_argument("--json", action="store_true")

    pause = command("pause", "stop a rule's actions (it keeps measuring and alerting); --all: maintenance mode, "
                    "no rule acts on this host")
    pause.add_argument("rule", nargs="?", help="the rule (none with --all)")
    pause.add_argument("--all", action="store_true", help="maintenance mode: every rule, rules added later too")
    pause.add_argument("--for", dest="for_", type=duration, metavar="DURATION",
                       help="e.g. 30m; default: until resumed")
    pause.add_argument("--reason", metavar="TEXT", help=f"with --all: why, shown in status, history and the log "
                       f"(one line, at most {MAX_REASON} characters)")
    resume = command("resume", "lift a pause (a give-up and the max_actions window stay, unless --reset); "
                     "--all: end maintenance mode")
    resume.add_argument("rule", nargs="?", help="the rule (none with --all)")
    resume.add_argument("--all", action="store_true", help="end maintenance mode (rule pauses stay)")
    resume.add_argument("--reset", action="store_true",
                        help="also lift a give-up and forget the rule's max_actions window")
    run = command("run", "probe and evaluate a rule now; acts per policy (cooldown, dry-run...)")
    run.add_argument("rule")
    run.add_argument("--json", action="store_true")
    command("reload", "re-read the config (like SIGHUP); a bad config keeps the old one")
    show = command("show", "evidence taken when a rule started firing or before it acted (its id is in "
                   "history, status and pages)")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true")
    fleet = command("fleet", "the fleet budget: each group's slots, who holds them since when, this host's "
                    "waits (asks the coordinator)")
    fleet.add_argument("--json", action="store_true")
    test_notify = command("test-notify", "send a test notification to one sink of notify.sinks, now")
    test_notify.add_argument("sink")
    check_config = command("check-config", "validate a config file without a daemon")
    check_config.add_argument("path")
    command("schema", "print the policy's JSON Schema (for editors; check-config stays the authority)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except Unreachable as exc:
        if getattr(args, "json", False):
            _print_json({"error": {"reason": exc.reason, "socket": exc.path, "message": exc.message}})
        print(f"watchdogctl: {exc.message}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except Refused as exc:
        print(f"watchdogctl: {exc.message}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `watchdogctl history | head`: the reader left; not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
