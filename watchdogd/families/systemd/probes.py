"""systemd probes: is a unit healthy, and how often has systemd restarted it.

``units`` takes names and globs (``app.service``, ``worker@*.service``).
Globs are expanded with one ``systemctl list-units`` call among the loaded
units; then one ``systemctl show`` call reads every unit's state. A unit
named explicitly that does not exist is reported as unhealthy (LoadState
``not-found``) rather than dropped: a typo or an uninstalled service must
not look like a healthy one.

Evidence (``describe``) is what ``systemctl status UNIT`` shows first: one
``systemctl show`` of the state, result, main process exit, restarts,
start time and memory of every unit concerned, then each unit's last
journal lines (``journalctl -u UNIT -n 20 -o short-iso``), all within the
evidence deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from watchdogd.contracts import (
    Cardinality,
    Clock,
    EvidenceLimits,
    Params,
    Probe,
    ProbeError,
    ProbeSpec,
    Reading,
    Unit,
    no_data,
)
from watchdogd.counterwindow import Added, CounterWindow
from watchdogd.evidencefit import fit_lines
from watchdogd.families.systemd.systemctl import Systemctl, SystemctlError, is_glob, unit_name
from watchdogd.spec import Field, field_validator
from watchdogd.units import DAY, Duration

PROPERTIES = (
    "LoadState", "ActiveState", "SubState", "Result", "NRestarts", "MainPID",
    "StateChangeTimestampMonotonic", "Description",
)
HEALTHY = {
    # expect -> ActiveStates that are fine. "failed" never is; neither is a unit that is not loaded.
    "active": frozenset({"active", "reloading"}),
    "not_failed": frozenset({"active", "reloading", "inactive", "activating", "deactivating"}),
}


class UnitsParams(Params):
    units: list[str] = Field(min_length=1)

    @field_validator("units")
    @classmethod
    def _check_units(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name or name.startswith("-") or "/" in name or any(c.isspace() for c in name):
                raise ValueError(f"not a unit name or glob: {name!r}")
        return list(dict.fromkeys(unit_name(name) for name in value))


class UnitParams(UnitsParams):
    expect: Literal["active", "not_failed"] = "active"


class RestartsParams(UnitsParams):
    window: Duration | None = Field(default=None, gt=0, le=DAY)
    """Count the restarts within this sliding window instead of reporting the cumulative NRestarts."""


class _UnitsProbe:
    def __init__(self, units: list[str], systemctl: Systemctl, monotonic: Callable[[], float]) -> None:
        self._names = [u for u in units if not is_glob(u)]
        self._globs = [u for u in units if is_glob(u)]
        self._systemctl = systemctl
        self._monotonic = monotonic
        self._matched: list[str] = []  # what the globs expanded to on the last run that could ask

    def outage_subjects(self) -> list[str]:
        """The units named, and those the globs matched last time: a failed run cannot expand them anew."""
        return list(dict.fromkeys([*self._names, *self._matched]))

    def _states(self) -> dict[str, dict[str, str]]:
        try:
            units = list(self._names)
            if self._globs:
                matched = [u for u in self._systemctl.list_units(self._globs) if u not in units]
                self._matched = matched
                units += matched
            return self._systemctl.show(units, PROPERTIES)
        except SystemctlError as exc:
            raise ProbeError(f"systemctl: {exc}") from exc

    def describe(self, readings: Sequence[Reading], limits: EvidenceLimits) -> dict[str, Any]:
        """``systemctl status`` of each unit concerned, in two bounded steps (see ``describe_units``)."""
        return describe_units(self._systemctl, [r.subject for r in readings], limits)

    def _details(self, unit: str, props: dict[str, str]) -> dict[str, Any]:
        details: dict[str, Any] = {
            "unit": unit,
            "load_state": props.get("LoadState", ""),
            "active_state": props.get("ActiveState", ""),
            "sub_state": props.get("SubState", ""),
            "result": props.get("Result", ""),
            "restarts": _int(props.get("NRestarts")),
            "main_pid": _int(props.get("MainPID")),
        }
        changed = _int(props.get("StateChangeTimestampMonotonic"))
        if changed:
            # systemd's monotonic clock is CLOCK_MONOTONIC, the same as time.monotonic().
            details["in_state_for"] = round(max(0.0, self._monotonic() - changed / 1e6), 1)
        if props.get("Description"):
            details["description"] = props["Description"]
        return details


def _int(raw: str | None) -> int:
    try:
        return int(raw or 0)
    except ValueError:
        return 0


class UnitProbe(_UnitsProbe):
    """1 when a unit is not healthy, 0 when it is: ``above: 0`` fires on a unit that is down.

    Healthy means loaded and, with ``expect: active`` (the default),
    ActiveState ``active`` or ``reloading``; with ``expect: not_failed``
    (oneshot jobs, timer-driven services) anything but ``failed``. A unit
    that is starting or in ``auto-restart`` is not active: give the rule a
    ``for:`` longer than the unit needs to start.

    An availability probe: when systemctl itself cannot answer (the bus is
    gone, it times out), the engine marks every unit of ``outage_subjects``
    unhealthy (``on_down: fire``), so a restart rule still has its units.
    """

    def __init__(self, params: UnitParams, systemctl: Systemctl, monotonic: Callable[[], float]) -> None:
        super().__init__(params.units, systemctl, monotonic)
        self._healthy = HEALTHY[params.expect]

    def measure(self) -> list[Reading]:
        readings = []
        for unit, props in self._states().items():
            healthy = props.get("LoadState") == "loaded" and props.get("ActiveState") in self._healthy
            readings.append(Reading(unit, 0.0 if healthy else 1.0, self._details(unit, props)))
        return readings


RESTARTS = "NRestarts"
NO_COUNT_YET: Mapping[Added, str] = {
    Added.RESET: "NRestarts went down (the unit was started by hand): no restart count in the window yet",
    Added.CLOCK_BACK: "the clock went back: the window starts again",
    Added.STEP: "no second of the window observed yet",
}
"""Why a windowed run has no count, by what its sample did to the window (never FIRST: that says nothing)."""


class RestartsProbe(_UnitsProbe):
    """How many times systemd restarted a unit automatically.

    Without ``window``: ``NRestarts`` itself, cumulative since the unit was
    last started by hand (which resets it). With ``window``: the restarts
    within the last ``window`` (from the second run on, over the part of it
    observed so far), so an old crash loop stops counting once it is over
    and ``above: 3`` means "more than 3 restarts in the window". A manual
    restart zeroing ``NRestarts`` loses only the step across it. No data:
    such a reset with no other step in the window; the unit's first run
    says nothing. Windows live in the probe, one per unit, for the units
    seen on the last run only. They run on the monotonic clock, so a wall
    clock step changes nothing.
    """

    def __init__(self, params: UnitsParams, systemctl: Systemctl, monotonic: Callable[[], float]) -> None:
        super().__init__(params.units, systemctl, monotonic)
        # UnitParams (no window) is accepted too: the cumulative count is what the probe always reported.
        self._window = params.window if isinstance(params, RestartsParams) else None
        self._windows: dict[str, CounterWindow] = {}

    def measure(self) -> list[Reading]:
        loaded = {unit: props for unit, props in self._states().items() if props.get("LoadState") == "loaded"}
        if self._window is None:
            return [Reading(unit, float(_int(props.get(RESTARTS))), self._details(unit, props))
                    for unit, props in loaded.items()]
        now = self._monotonic()
        windows = {unit: self._windows[unit] if unit in self._windows else CounterWindow(self._window)
                   for unit in loaded}
        self._windows = windows
        readings = []
        for unit, props in loaded.items():
            window = windows[unit]
            added = window.add(now, "", {RESTARTS: _int(props.get(RESTARTS))})
            if added is Added.FIRST:
                continue
            details = {**self._details(unit, props), "window": window.window}
            seen = window.increase()
            if seen is None:
                readings.append(no_data(unit, {**details, "reason": NO_COUNT_YET[added]}))
                continue
            details["covered"] = round(seen.seconds, 1)
            if seen.resets:
                details["resets"] = seen.resets
            readings.append(Reading(unit, seen.increase[RESTARTS], details))
        return readings


# --------------------------------------------------------------------------- evidence

STATUS_PROPERTIES = (
    "LoadState", "ActiveState", "SubState", "Result", "ExecMainCode", "ExecMainStatus", "ExecMainExitTimestamp",
    "NRestarts", "ActiveEnterTimestamp", "MainPID", "MemoryCurrent",
)
JOURNAL_LINES = 20
LINE_CHARS = 200
MARGIN = 0.05
"""Seconds kept back from the deadline, so describe returns before it rather than at it."""
UNSET = 2**64 - 1
"""systemd's "[not set]" for a number (MemoryCurrent without memory accounting), as some versions print it."""
# si_code of the main process's end (ExecMainCode): how to read ExecMainStatus.
EXIT_CODES = {"1": "exited", "2": "killed", "3": "dumped core", "4": "trapped", "5": "stopped", "6": "continued"}


def _number(raw: str | None) -> int | None:
    try:
        value = int(raw or "")
    except ValueError:
        return None  # "", "[not set]", "infinity"
    return None if value == UNSET else value


def _stamp(raw: str | None) -> str | None:
    """systemd's timestamp ("Tue 2024-05-07 10:00:00 UTC") as is; None when it never happened ("", "n/a")."""
    text = (raw or "").strip()
    return None if text in ("", "n/a", "0") else text


def unit_status(unit: str, props: Mapping[str, str]) -> dict[str, Any]:
    """One unit's ``systemctl show`` properties, named as an operator reads them.

    ``main_exit`` says how the main process last ended ("exited 3",
    "killed 9"): ExecMainStatus is an exit status or a signal number
    depending on ExecMainCode, and alone it misleads.
    """
    code = EXIT_CODES.get(props.get("ExecMainCode", ""), "")
    status = _number(props.get("ExecMainStatus"))
    return {
        "unit": unit,
        "load_state": props.get("LoadState", ""),
        "active_state": props.get("ActiveState", ""),
        "sub_state": props.get("SubState", ""),
        "result": props.get("Result", ""),
        "main_exit": f"{code} {status}" if code and status is not None else None,
        "exec_main_status": status,
        "main_exited_at": _stamp(props.get("ExecMainExitTimestamp")),
        "restarts": _number(props.get("NRestarts")),
        "active_since": _stamp(props.get("ActiveEnterTimestamp")),
        "main_pid": _number(props.get("MainPID")) or None,
        "memory_bytes": _number(props.get("MemoryCurrent")),
    }


def describe_units(systemctl: Systemctl, subjects: Sequence[str], limits: EvidenceLimits) -> dict[str, Any]:
    """``systemctl show`` of the units, then each one's journal tail, stopping at the deadline.

    Subjects are unit names (the probe's own or the engine's outage
    readings). A journal that cannot be read (no permission, journalctl
    missing, too slow) leaves its error in that unit's place; a
    ``systemctl show`` that fails raises, as the probe's own run would.
    """
    units = list(dict.fromkeys(subjects))
    shown = units[: limits.max_items]
    cut: dict[str, str] = {}
    if len(units) > len(shown):
        cut["max_items"] = f"{len(units) - len(shown)} more unit(s) not described"
    left = limits.deadline - time.monotonic() - MARGIN
    if left <= 0:
        return {"cut": {"deadline": "systemctl was not asked", **cut}}
    try:
        shown_props = systemctl.show(shown, STATUS_PROPERTIES, timeout=left)
    except SystemctlError as exc:
        raise ProbeError(f"systemctl: {exc}") from exc
    status = [unit_status(unit, shown_props.get(unit, {})) for unit in shown]
    journal: dict[str, Any] = {}
    count = min(JOURNAL_LINES, limits.max_items)
    for index, unit in enumerate(shown):
        left = limits.deadline - time.monotonic() - MARGIN
        if left <= 0:
            cut["deadline"] = f"journal of {', '.join(shown[index:])} not read"[:300]
            break
        try:
            journal[unit] = [line[:LINE_CHARS] for line in systemctl.journal(unit, count, timeout=left)]
        except SystemctlError as exc:
            journal[unit] = {"error": " ".join(str(exc).split())[:300]}
    sections: dict[str, Any] = {"unit status": status, "last journal lines": journal, "cut": cut}
    dropped = fit_lines(sections, "last journal lines", limits.max_bytes, "journal lines")
    if dropped:
        cut["max_bytes"] = ", ".join(f"{n} {what}" for what, n in dropped.items()) + " dropped to fit"
    if not cut:
        del sections["cut"]
    return sections


def _factory(cls: Callable[[Any, Systemctl, Callable[[], float]], Probe]) -> Callable[[Any, Any, Clock], Probe]:
    def build(params: Any, _target: Any, _clock: Clock) -> Probe:
        return cls(params, Systemctl(), time.monotonic)

    return build


PROBES: dict[str, ProbeSpec] = {
    "systemd.unit": ProbeSpec(
        UnitParams, _factory(UnitProbe), Unit.COUNT, Cardinality.LOW,
        "1 when a systemd unit is failed, not loaded or not active (per unit or glob), else 0",
        availability=True, subjects="unit",
    ),
    "systemd.restarts": ProbeSpec(
        RestartsParams, _factory(RestartsProbe), Unit.COUNT, Cardinality.LOW,
        "automatic restarts systemd made of a unit (NRestarts), or within params.window", subjects="unit",
    ),
}
