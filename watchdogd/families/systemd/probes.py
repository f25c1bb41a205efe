"""systemd probes: is a unit healthy, and how often has systemd restarted it.

``units`` takes names and globs (``app.service``, ``worker@*.service``).
Globs are expanded with one ``systemctl list-units`` call among the loaded
units; then one ``systemctl show`` call reads every unit's state. A unit
named explicitly that does not exist is reported as unhealthy (LoadState
``not-found``) rather than dropped: a typo or an uninstalled service must
not look like a healthy one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, field_validator

from watchdogd.contracts import Cardinality, Clock, Params, Probe, ProbeError, ProbeSpec, Reading, Unit
from watchdogd.families.systemd.systemctl import Systemctl, SystemctlError, is_glob, unit_name

PROPERTIES = (
    "LoadState", "ActiveState", "SubState", "Result", "NRestarts", "MainPID",
    "StateChangeTimestampMonotonic", "Description",
)
HEALTHY = {
    # expect -> ActiveStates that are fine. "failed" never is; neither is a unit that is not loaded.
    "active": frozenset({"active", "reloading"}),
    "not_failed": frozenset({"active", "reloading", "inactive", "activating", "deactivating"}),
}


class RestartsParams(Params):
    units: list[str] = Field(min_length=1)

    @field_validator("units")
    @classmethod
    def _check_units(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name or name.startswith("-") or "/" in name or any(c.isspace() for c in name):
                raise ValueError(f"not a unit name or glob: {name!r}")
        return list(dict.fromkeys(unit_name(name) for name in value))


class UnitParams(RestartsParams):
    expect: Literal["active", "not_failed"] = "active"


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


class RestartsProbe(_UnitsProbe):
    """How many times systemd restarted a unit automatically (``NRestarts``; reset by a manual restart)."""

    def __init__(self, params: RestartsParams, systemctl: Systemctl, monotonic: Callable[[], float]) -> None:
        super().__init__(params.units, systemctl, monotonic)

    def measure(self) -> list[Reading]:
        return [
            Reading(unit, float(_int(props.get("NRestarts"))), self._details(unit, props))
            for unit, props in self._states().items()
            if props.get("LoadState") == "loaded"
        ]


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
        "automatic restarts systemd made of a unit (NRestarts)", subjects="unit",
    ),
}
