"""The contract every probe meets.

A probe instance lives as long as its rule's config: it may keep state
between runs (CPU time deltas, counters for rates, file offsets) because
several rules measuring the same thing must not disturb each other, which
psutil's module-level ``cpu_percent`` state would.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from watchdogd.model import Reading


class ProbeError(Exception):
    """A probe could not measure. The message ends up verbatim in status and /metrics logs."""


class Params(BaseModel):
    """Base of every probe's and action's ``params``: frozen, unknown keys are errors."""

    # defer_build: ~100 params models are registered but a config uses a handful; building each
    # validator on first use instead of at import saves several MiB of RSS (bench/bench_rss.py).
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class NoParams(Params):
    pass


class TargetParams(Params):
    """What every ``targets.<kind>.<name>`` takes besides its connection settings."""

    optional: bool = False
    """True: until the target has answered once on this host, a failure means "this host does not have
    it (yet)" and its rules read ``absent``, not an outage; once it has answered, a failure is an outage.
    The shipped policy marks its PostgreSQL, Redis and Docker targets optional, so it can be installed
    on any host. False (the default): a target the operator configured is expected, and a failure is an
    outage from the first start."""


class Probe(Protocol):
    def measure(self) -> list[Reading]:
        """Return one reading per subject, or raise; the engine turns exceptions into a down result.

        Runs in a worker thread under a timeout: it must not touch shared state
        other than its own attributes and its target client.
        """
        ...


@runtime_checkable
class ReportsOutage(Protocol):
    """A probe that knows which subjects an outage takes down with it.

    Availability probes (``postgres.up``, ``net.http``, ``systemd.unit``...)
    implement it so that "unreachable" is reported on the very subject the
    probe reports when the thing is up: the rule's ``for`` timer, cooldown
    and backoff then carry across the outage instead of starting over on a
    made-up subject.
    """

    def outage_subjects(self) -> list[str]:
        """The subjects to mark as down when ``measure`` fails; never raises, never does I/O."""
        ...
