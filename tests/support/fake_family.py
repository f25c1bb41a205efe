"""A small family of fake kinds, so engine tests build an engine on a registry of their own.

The engine is under test, not the families: the factories here hand the
engine the very probe and action objects the test built and drives. A rule
picks its objects by ``key``, a parameter of every fake kind::

    probe: fake.percent
    params: {key: r}
    above: 90
    actions:
      - fake.fix: {key: r, settle: 0.1s}

with ``fake_registry({"r": probe}, {"r": action})`` passed to
``parse_config(..., registry=...)``. A key with no object is a KeyError when
the engine builds the rule.

The probe kinds stand in for the real ones the tests were written against,
with their units, so thresholds parse and values print the same:

* ``fake.percent``: a percent of the host, like ``host.cpu``;
* ``fake.count``: a plain number of the host, like ``host.load``;
* ``fake.up``: an availability probe (``on_down: fire`` by default) of a
  ``fake`` target, in seconds, like ``postgres.up``;
* ``fake.target_percent``: a percent of a ``fake`` target, like
  ``postgres.connections``.

``targets: {fake: {<name>: {optional: true}}}`` declares a target; its
client is an inert object, the fake probes never use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from watchdogd.contracts import (
    ANY_SUBJECT,
    Action,
    ActionParams,
    ActionSpec,
    Cardinality,
    Clock,
    Family,
    Params,
    Probe,
    ProbeSpec,
    TargetParams,
    TargetSpec,
    Unit,
)
from watchdogd.registry import Registry


class FakeParams(Params):
    key: str
    """Which of the test's probes this rule measures with."""


class FakeActionParams(ActionParams):
    key: str
    """Which of the test's actions this rule runs."""


class FakeTargetParams(TargetParams):
    pass


def fake_family(probes: Mapping[str, Probe], actions: Mapping[str, Action] | None = None) -> Family:
    """The fake kinds, whose factories return ``probes[key]`` and ``actions[key]`` (looked up when called)."""
    chosen_actions: Mapping[str, Action] = actions if actions is not None else {}

    def probe(params: FakeParams, _client: Any, _clock: Clock) -> Probe:
        return probes[params.key]

    def action(params: FakeActionParams, _client: Any, _clock: Clock) -> Action:
        return chosen_actions[params.key]

    def host(unit: Unit, summary: str) -> ProbeSpec:
        return ProbeSpec(FakeParams, probe, unit, Cardinality.LOW, summary, subjects="host")

    def remote(unit: Unit, summary: str, *, availability: bool = False) -> ProbeSpec:
        return ProbeSpec(
            FakeParams, probe, unit, Cardinality.LOW, summary,
            target_kind="fake", availability=availability, subjects="endpoint",
        )

    return Family(
        name="fake",
        probes={
            "fake.percent": host(Unit.PERCENT, "the test's values, in percent (like host.cpu)"),
            "fake.count": host(Unit.COUNT, "the test's values, plain numbers (like host.load)"),
            "fake.up": remote(Unit.SECONDS, "the test's values, in seconds (like postgres.up)", availability=True),
            "fake.target_percent": remote(Unit.PERCENT, "the test's values, in percent (like postgres.connections)"),
        },
        actions={
            "fake.fix": ActionSpec(FakeActionParams, action, "the test's action", settle=0.0, accepts=ANY_SUBJECT),
        },
        targets={
            "fake": TargetSpec(params=FakeTargetParams, connect=_connect, close=_close),
        },
    )


def fake_registry(probes: Mapping[str, Probe], actions: Mapping[str, Action] | None = None) -> Registry:
    """A registry of the fake kinds only; see ``fake_family``."""
    return Registry.of([fake_family(probes, actions)])


def _connect(_params: FakeTargetParams) -> object:
    return object()


def _close(_client: object) -> None:
    pass
