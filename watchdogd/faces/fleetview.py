"""``watchdogctl fleet``: the fleet budget's groups, who holds slots, since when, and this host's waits.

The daemon side (``fleet_document``) joins what this host knows from memory
(its slots, its waits, the answers it got) with one read of each group from
the coordinator; the client side (``render_fleet``) prints it. Both here so
the document's shape and its rendering change together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from watchdogd.engine.snapshot import FleetStats
    from watchdogd.fleet.coordinator import GroupView


def fleet_document(stats: FleetStats | None, views: Sequence[GroupView | str] | None, now: float) -> dict[str, Any]:
    if stats is None:
        return {"configured": False}
    by_name: dict[str, GroupView | str] = {}
    for answer in views or ():  # an error line starts with its group's name (names hold no colon)
        by_name[answer.split(":", 1)[0] if isinstance(answer, str) else answer.group] = answer
    groups = []
    for group in stats.groups:
        view = by_name.get(group.name)
        doc: dict[str, Any] = {
            "name": group.name,
            "max_hosts": group.max_hosts,
            "max_runs": group.max_runs,
            "per_seconds": group.per,
            "on_unavailable": group.on_unavailable,
            "holders": None,
            "runs_in_window": None,
            "error": view if isinstance(view, str) else None,
            "held_here": [
                {"rule": h.rule, "token": h.token, "slot": h.slot, "since": h.since} for h in group.held
            ],
            "waits": [
                {"rule": w.rule, "reason": w.reason, "since": w.since, "last": w.last, "denials": w.denials,
                 "detail": w.detail}
                for w in group.waits
            ],
            "answers": dict(group.outcomes),
            "acquire_seconds_avg": group.acquire_seconds_sum / group.acquire_count if group.acquire_count else None,
        }
        if view is not None and not isinstance(view, str):
            doc["holders"] = [
                {"host": h.host, "rule": h.rule, "since": h.since, "token": h.token, "slot": h.slot}
                for h in view.holders
            ]
            doc["runs_in_window"] = view.runs_in_window
        groups.append(doc)
    return {
        "configured": True,
        "now": now,
        "coordinator": stats.kind,
        "endpoint": stats.endpoint,
        "host": stats.host,
        "requests": stats.requests,
        "errors": stats.errors,
        "failovers": stats.failovers,
        "leases_lost": stats.leases_lost,
        "last_error": stats.last_error,
        "groups": groups,
    }


def _ago(now: float, then: float) -> str:
    seconds = max(0.0, now - then)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _window(per: float) -> str:
    for size, suffix in ((86400, "d"), (3600, "h"), (60, "m")):
        if per >= size and per % size == 0:
            return f"{per / size:g}{suffix}"
    return f"{per:g}s"


def render_fleet(doc: Mapping[str, Any]) -> str:
    if not doc.get("configured"):
        return "no fleet budget configured (add a fleet: section; see docs/fleet.md)"
    now = float(doc["now"])
    where = f" ({doc['endpoint']})" if doc.get("endpoint") else ""
    lines = [
        f"fleet budget on {doc['coordinator']}{where}; this host is {doc['host']}; "
        f"{doc['requests']} requests, {doc['errors']} errors, {doc['failovers']} failovers, "
        f"{doc['leases_lost']} leases lost"
    ]
    if doc.get("last_error"):
        lines.append(f"last coordinator error: {doc['last_error']}")
    for group in doc["groups"]:
        runs = ""
        if group["max_runs"] is not None:
            used = "?" if group["runs_in_window"] is None else group["runs_in_window"]
            runs = f", runs {used}/{group['max_runs']} per {_window(float(group['per_seconds']))}"
        holders = group["holders"]
        held = "?" if holders is None else len(holders)
        lines.append(
            f"\n{group['name']}: slots {held}/{group['max_hosts']}{runs}; "
            f"coordinator down: {'skip' if group['on_unavailable'] == 'skip' else 'host budget'}"
        )
        if group["error"]:
            lines.append(f"  cannot read the group: {group['error']}")
        for h in holders or ():
            lines.append(
                f"  held by {h['host']} (rule {h['rule']}) for {_ago(now, float(h['since']))}, token {h['token']}"
            )
        for w in group["waits"]:
            lines.append(
                f"  waiting here: {w['rule']} since {_ago(now, float(w['since']))} "
                f"({w['reason']}, {w['denials']} denial{'s' * (w['denials'] != 1)})"
            )
        answers = ", ".join(f"{k} {v}" for k, v in group["answers"].items())
        lines.append(f"  answers since start: {answers}")
    return "\n".join(lines)
