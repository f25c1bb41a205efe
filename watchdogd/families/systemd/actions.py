"""``systemd.restart`` and ``systemd.reload``: ``systemctl restart|reload -- UNIT``, bounded and checked.

Which unit: ``unit:`` when given (a rule on an HTTP check or a process
restarts the service behind it), else each breaching subject's own unit (a
``systemd.unit`` rule restarts exactly the units that are down; when
systemctl itself could not answer, the engine's outage readings carry no
details and the subject, a unit name, says it). Each unit is acted on once
per run however many subjects point at it, and that unit is the "thing" the
shared cooldown keys on, whichever rule asks.

Before acting, one ``systemctl show`` reads what systemd knows, so that
dry-run can say exactly what would happen and so refusals are clear: a unit
that does not exist, one that refuses manual starts, a reload of a unit
without ``ExecReload``, a unit the operator excluded, and the unit
watchdogd itself runs in (restarting it would kill this action midway).

``systemctl restart`` waits for the job to finish, bounded by the action's
``timeout``; the unit's state afterwards goes into the audit row.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from watchdogd.contracts import ActionParams, ActionResult, ActionSpec, Clock, ItemResult, Reading
from watchdogd.families.systemd.systemctl import (
    UNIT_SUFFIXES,
    Systemctl,
    SystemctlError,
    SystemctlTimeout,
    one_line,
    own_unit,
    unit_name,
)
from watchdogd.spec import field_validator

PROPERTIES = ("LoadState", "ActiveState", "SubState", "Result", "CanStart", "CanReload",
              "RefuseManualStart", "MainPID", "NRestarts")
START_LIMIT_HIT = "start-limit-hit"
PERMISSION_HINTS = ("Access denied", "Interactive authentication required", "Permission denied")


def _plain_unit(value: str) -> bool:
    """A single unit's name (no glob, no path, not an option): safe to put after ``--`` on argv."""
    return bool(value) and not value.startswith("-") and "/" not in value and not any(
        c.isspace() or c in "*?[" for c in value
    )


def _check_unit(value: str | None) -> str | None:
    if value is None:
        return None
    if not _plain_unit(value):
        raise ValueError(f"not a unit name: {value!r}")
    return unit_name(value)


def unit_of_subject(subject: str) -> str | None:
    """The unit a bare subject names (``nginx.service``), or None for anything else (a URL, ``host:port``).

    Only full unit names count: ``ping`` or ``db`` must not become
    ``ping.service`` and get restarted because a rule forgot ``unit:``.
    """
    return subject if _plain_unit(subject) and subject.endswith(UNIT_SUFFIXES) else None


class UnitActionParams(ActionParams):
    unit: str | None = None
    exclude: list[str] = []

    @field_validator("unit")
    @classmethod
    def _check(cls, value: str | None) -> str | None:
        return _check_unit(value)

    @field_validator("exclude")
    @classmethod
    def _check_exclude(cls, value: list[str]) -> list[str]:
        return [unit_name(pattern) for pattern in value]


class RestartParams(UnitActionParams):
    reset_start_limit: bool = True


class ReloadParams(UnitActionParams):
    pass


@dataclass
class _Job:
    unit: str
    subject: str  # the reading that asked for it, so the audit row of that subject finds this item
    props: dict[str, str]


class UnitAction:
    """One systemctl verb (restart or reload) over the units the breaching subjects name."""

    def __init__(
        self,
        verb: Literal["restart", "reload"],
        params: UnitActionParams,
        systemctl: Systemctl,
        own: str | None,
    ) -> None:
        self._verb = verb
        self._params = params
        self._systemctl = systemctl
        self._own = own

    def thing(self, reading: Reading) -> str:
        """The unit this reading makes us restart or reload (``NamesThing``): the shared cooldown's key."""
        return self._unit(reading) or reading.subject

    def _unit(self, reading: Reading) -> str | None:
        """``unit:``, else the reading's ``unit`` detail (systemd probes), else a subject that is a unit name."""
        if self._params.unit is not None:
            return self._params.unit
        unit = reading.details.get("unit")
        if isinstance(unit, str) and unit:
            return unit
        return unit_of_subject(reading.subject)

    def run(self, subjects: Sequence[Reading], *, dry_run: bool) -> ActionResult:
        deadline = time.monotonic() + self._params.timeout
        wanted, items = self._units(subjects)
        try:
            shown = self._systemctl.show(list(wanted), PROPERTIES) if wanted else {}
        except SystemctlError as exc:
            message = f"systemctl: {exc}"
            return ActionResult(ok=False, items=tuple(items), detail=message, error=message)
        for unit, subject in wanted.items():
            job = _Job(unit, subject, shown.get(unit, {}))
            refusal = self._refusal(job)
            if refusal is not None:
                items.append(self._item(job, False, refusal))
            elif dry_run:
                items.append(self._item(job, True, self._plan(job)))
            else:
                items.append(self._act(job, deadline))
        return self._summary(items, dry_run)

    # -- which units -----------------------------------------------------------------------

    def _units(self, subjects: Sequence[Reading]) -> tuple[dict[str, str], list[ItemResult]]:
        """unit -> the first subject naming it; items for subjects that name no unit."""
        if self._params.unit is not None:
            return {self._params.unit: subjects[0].subject if subjects else self._params.unit}, []
        wanted: dict[str, str] = {}
        items = []
        for reading in subjects:
            unit = self._unit(reading)
            if unit is None:
                items.append(ItemResult(reading.subject, False,
                                        f"no unit to {self._verb}: set unit: (this rule's subjects are not"
                                        " systemd units)"))
                continue
            wanted.setdefault(unit, reading.subject)
        return wanted, items

    def _refusal(self, job: _Job) -> str | None:
        props = job.props
        if any(fnmatch.fnmatchcase(job.unit, pattern) for pattern in self._params.exclude):
            return f"refused: {job.unit} is excluded by this action's exclude list"
        if self._own is not None and job.unit == self._own:
            return f"refused: watchdogd runs in {job.unit}; restarting it would end this action midway"
        load = props.get("LoadState", "")
        if load != "loaded":
            return f"{job.unit} is not loaded (LoadState={load or 'unknown'})"
        if self._verb == "restart" and (props.get("RefuseManualStart") == "yes" or props.get("CanStart") == "no"):
            return f"{job.unit} refuses manual starts (RefuseManualStart=yes or CanStart=no)"
        if self._verb == "reload" and props.get("CanReload") != "yes":
            return f"{job.unit} cannot be reloaded (no ExecReload=); use systemd.restart"
        return None

    def _plan(self, job: _Job) -> str:
        state = f"{job.props.get('ActiveState')}/{job.props.get('SubState')}"
        text = f"would {self._verb} {job.unit} (now {state})"
        if self._resets(job):
            text += " after systemctl reset-failed (it hit its start limit)"
        return text

    def _resets(self, job: _Job) -> bool:
        return (
            isinstance(self._params, RestartParams)
            and self._params.reset_start_limit
            and job.props.get("Result") == START_LIMIT_HIT
        )

    # -- acting ----------------------------------------------------------------------------

    def _act(self, job: _Job, deadline: float) -> ItemResult:
        steps = []
        if self._resets(job):
            # systemd refuses to start a unit that hit StartLimitBurst until the counter is reset;
            # our own cooldown and max_actions bound the restarts instead.
            limit = max(1.0, deadline - time.monotonic())
            try:
                proc = self._systemctl.call("reset-failed", "--", job.unit, timeout=limit)
                ok = proc.returncode == 0
                steps.append("reset-failed" if ok else f"reset-failed failed: {one_line(proc.stderr)}")
            except SystemctlError as exc:
                steps.append(f"reset-failed failed: {exc}")
        left = deadline - time.monotonic()
        if left <= 0:
            return self._item(job, False, "; ".join([*steps, "no time left within the action's timeout"]))
        started = time.monotonic()
        try:
            proc = self._systemctl.call(self._verb, "--", job.unit, timeout=left)
        except SystemctlTimeout:
            return self._item(job, False, "; ".join([*steps, f"{self._verb} of {job.unit} did not finish within"
                                                     f" {left:.0f}s (systemd may still be running the job)"]))
        except SystemctlError as exc:
            return self._item(job, False, "; ".join([*steps, str(exc)]))
        took = time.monotonic() - started
        if proc.returncode != 0:
            message = one_line(proc.stderr) or f"exit status {proc.returncode}"
            if any(hint in message for hint in PERMISSION_HINTS):
                message += " (watchdogd needs root, or a polkit rule allowing it to manage this unit)"
            return self._item(job, False, "; ".join([*steps, f"{self._verb} failed: {message}"]))
        after = self._after(job.unit)
        steps.append(f"{self._verb}ed in {took:.1f}s, now {after.get('ActiveState')}/{after.get('SubState')}")
        return self._item(job, True, "; ".join(steps), after)

    def _after(self, unit: str) -> dict[str, str]:
        try:
            return self._systemctl.show([unit], PROPERTIES).get(unit, {})
        except SystemctlError:
            return {}

    def _item(self, job: _Job, ok: bool, detail: str, after: dict[str, str] | None = None) -> ItemResult:
        props = after if after else job.props
        info: dict[str, Any] = {
            "unit": job.unit,
            "verb": self._verb,
            "active_state": props.get("ActiveState"),
            "sub_state": props.get("SubState"),
            "main_pid": props.get("MainPID"),
        }
        return ItemResult(job.subject, ok, detail, info)

    def _summary(self, items: list[ItemResult], dry_run: bool) -> ActionResult:
        failed = [item for item in items if not item.ok]
        done = len(items) - len(failed)
        verb = f"would {self._verb}" if dry_run else f"{self._verb}ed"
        detail = f"{verb} {done} unit(s)"
        if failed:
            detail += f"; {len(failed)} not: {failed[0].detail}"
        return ActionResult(ok=not failed, items=tuple(items), detail=detail,
                            error=f"{len(failed)} unit(s) not {self._verb}ed" if failed else None)


def _restart(params: RestartParams, _target: object, _clock: Clock) -> UnitAction:
    return UnitAction("restart", params, Systemctl(), own_unit())


def _reload(params: ReloadParams, _target: object, _clock: Clock) -> UnitAction:
    return UnitAction("reload", params, Systemctl(), own_unit())


ACTIONS: dict[str, ActionSpec] = {
    "systemd.restart": ActionSpec(
        RestartParams, _restart, "systemctl restart the breaching units (or the unit named by unit:)",
        settle=30.0,  # a service's own start-up (a database replaying WAL) after systemd says "active"
        accepts=frozenset({"unit"}), accepts_any_with="unit",
    ),
    "systemd.reload": ActionSpec(
        ReloadParams, _reload, "systemctl reload the breaching units (or the unit named by unit:)",
        settle=10.0, accepts=frozenset({"unit"}), accepts_any_with="unit",
    ),
}
