"""The contract every action meets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pydantic import Field

from watchdogd.model import ActionResult, Reading
from watchdogd.probes.base import Params
from watchdogd.units import Duration


class ActionParams(Params):
    """Bounds every action has. The engine enforces ``max_per_run`` before calling ``run``."""

    max_per_run: int = Field(default=10, ge=1)
    timeout: Duration = 60.0


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
