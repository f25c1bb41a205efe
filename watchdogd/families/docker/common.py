"""What every Docker probe and action shares: container selection, names, Docker's timestamps.

Kept apart from the probes so the resource probes, the container probe and
the actions can all use it without importing one another.
"""

from __future__ import annotations

import calendar
import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from watchdogd.contracts import Params, ProbeError
from watchdogd.spec import Field, field_validator

if TYPE_CHECKING:
    from watchdogd.families.docker.target import DockerEngine

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
OPT_OUT_LABEL = "watchdogd.enable=false"
"""Default ``exclude_labels``: a container carrying it is never watched or acted on, whatever the rule selects."""


_LABEL_RE = re.compile(r"^[^\s=]+(=[^\s]*)?$")


def check_labels(values: list[str]) -> list[str]:
    for value in values:
        if not _LABEL_RE.match(value):
            raise ValueError(f"a label is 'key' or 'key=value' without spaces, got {value!r}")
    return values


def label_matches(spec: str, labels: Mapping[str, str]) -> bool:
    """``key`` matches any value; ``key=value`` only that value (Docker's own label filter semantics)."""
    key, sep, value = spec.partition("=")
    if not sep:
        return key in labels
    return labels.get(key) == value


class Selection(Params):
    """Which containers a probe looks at: names (globs), labels, compose project and services.

    ``labels`` and ``compose_project`` are the engine's list filters (all
    must match), applied to the engine's shared listing with the engine's
    semantics (``LIST_FILTERS``); the name globs and the excludes too.
    """

    names: list[str] = Field(default=["*"], min_length=1)
    exclude_names: list[str] = []
    labels: list[str] = []
    exclude_labels: list[str] = [OPT_OUT_LABEL]
    compose_project: str | None = None
    compose_services: list[str] = []

    @field_validator("labels", "exclude_labels")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        return check_labels(value)

    @field_validator("names", "exclude_names")
    @classmethod
    def _globs(cls, value: list[str]) -> list[str]:
        if any(not glob or "/" in glob for glob in value):
            raise ValueError("name globs cannot be empty or contain '/' (container names have none)")
        return value

    def server_filters(self) -> dict[str, list[str]]:
        labels = list(self.labels)
        if self.compose_project is not None:
            labels.append(f"{COMPOSE_PROJECT}={self.compose_project}")
        return {"label": labels} if labels else {}

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        if not any(fnmatch.fnmatchcase(name, glob) for glob in self.names):
            return False
        if any(fnmatch.fnmatchcase(name, glob) for glob in self.exclude_names):
            return False
        if any(label_matches(spec, labels) for spec in self.exclude_labels):
            return False
        return not self.compose_services or labels.get(COMPOSE_SERVICE) in self.compose_services


def container_name(row: Mapping[str, Any]) -> str:
    """The container's own name: the list also gives legacy link aliases like ``/web/db``."""
    names = [str(n) for n in row.get("Names") or []]
    own = [n for n in names if n.count("/") == 1] or names or [str(row.get("Id", ""))[:12]]
    return own[0].lstrip("/")


def _all_labels(specs: Sequence[str], row: Mapping[str, Any]) -> bool:
    labels = row.get("Labels") or {}
    return all(label_matches(spec, labels) for spec in specs)


def _any_status(statuses: Sequence[str], row: Mapping[str, Any]) -> bool:
    return row.get("State") in statuses


LIST_FILTERS: Mapping[str, Callable[[Sequence[str], Mapping[str, Any]], bool]] = {
    "label": _all_labels,
    "status": _any_status,
}
"""The engine's ``GET /containers/json`` filters, applied here to the shared listing with the engine's own
semantics: every ``label`` must match (``key`` or ``key=value``, split at the first ``=``); ``status`` is
any of the values, compared with the row's ``State`` (created, restarting, running, removing, paused,
exited, dead), exactly as the engine compares them. A filter not in this table is sent to the engine in a
listing of the rule's own."""


def list_filtered(engine: DockerEngine, filters: Mapping[str, Sequence[str]]) -> Sequence[Mapping[str, Any]]:
    """The containers matching ``filters``, from the engine's shared listing when every filter is known here."""
    if any(key not in LIST_FILTERS for key in filters):
        return engine.containers({key: list(values) for key, values in filters.items()})
    checks = [(LIST_FILTERS[key], values) for key, values in filters.items() if values]
    return [row for row in engine.listing() if all(check(values, row) for check, values in checks)]


def selected(
    engine: DockerEngine, selection: Selection, extra: Mapping[str, list[str]] | None = None
) -> list[tuple[str, Mapping[str, Any]]]:
    """The selected containers by name, with their (read-only, possibly shared) listing rows."""
    filters: dict[str, list[str]] = {**selection.server_filters(), **(extra or {})}
    chosen = []
    for row in list_filtered(engine, filters):
        name = container_name(row)
        if selection.matches(name, row.get("Labels") or {}):
            chosen.append((name, row))
    return chosen


def base_details(row: Mapping[str, Any]) -> dict[str, Any]:
    labels = row.get("Labels") or {}
    details: dict[str, Any] = {
        "id": row.get("Id"),
        "image": row.get("Image"),
        "state": row.get("State"),
        "status": row.get("Status"),
    }
    for key, label in (("compose_project", COMPOSE_PROJECT), ("compose_service", COMPOSE_SERVICE)):
        if label in labels:
            details[key] = labels[label]
    return details


def engine_of(target: Any) -> DockerEngine:
    if target is None:
        raise ProbeError("no Docker target client (is targets.docker configured?)")
    engine: DockerEngine = target
    return engine


# --------------------------------------------------------------------------- time


_TIME_RE = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def parse_time(text: str | None) -> float | None:
    """Docker's RFC 3339 with nanoseconds -> epoch seconds; None for its "never" (year 1) and junk.

    By hand because ``datetime.fromisoformat`` takes at most microseconds
    and this runs for every problem container on every run.
    """
    match = _TIME_RE.match(text or "")
    if match is None or match.group(1) == "0001":
        return None
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    seconds = float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))
    if match.group(7):
        seconds += float("0." + match.group(7))
    zone = match.group(8)
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds
