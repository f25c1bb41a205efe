"""The contract every action meets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from pydantic import Field

from watchdogd.model import ActionResult, Reading
from watchdogd.probes.base import Params
from watchdogd.units import Duration


class ActionParams(Params):
    """Bounds every action has. The engine enforces ``max_per_run`` before calling ``run``."""

    max_per_run: int = Field(default=10, ge=1, le=10_000)
    timeout: Duration = Field(default=60.0, gt=0, le=86400.0)
    settle: Duration | None = Field(default=None, le=3600.0)
    """How long the thing acted on may take to come right (a restarted unit to answer, a VACUUM to show
    in the statistics); the verify re-probes until the condition clears or this is spent. None takes the
    action kind's default (``ActionSpec.settle``)."""


class Action(Protocol):
    def run(self, subjects: Sequence[Reading], *, dry_run: bool) -> ActionResult:
        """Fix the given breaching subjects, at most ``max_per_run`` of them (already cut).

        In dry-run, do every read-only step (list the files, find the keys)
        and report per item exactly what would be done, but change nothing.
        Must not raise for an expected failure (permission denied, gone
        already): report it in the result. Unexpected exceptions are caught by
        the engine and recorded as a failed run.

        ``ActionResult.error`` means the whole run failed (target unreachable);
        the engine writes it into every audit row of the run, ahead of an
        item's own reason. A failure of one item (one backend not signalled)
        belongs in that ``ItemResult`` only.
        """
        ...


@runtime_checkable
class NamesThing(Protocol):
    """An action that can say which thing it changes for a subject.

    The shared cooldown keys on (action kind, thing), not on the rule: a
    unit restarted by the unit-failed rule is in cooldown for the health
    rule too. An action whose thing is not its subject implements this
    (``systemd.restart`` with ``unit:`` restarts that unit whatever the
    subject; ``exec`` runs its rendered argv). Without it the thing is the
    action's target and the subject.
    """

    def thing(self, reading: Reading) -> str:
        """A stable, loggable key of what ``run`` would change for this reading; no I/O."""
        ...
