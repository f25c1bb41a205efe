"""Prometheus metrics over the engine's snapshot: a custom collector on a private registry.

A scrape copies the engine's state (``Engine.snapshot()``) and formats it; it
never runs a probe, so a slow PostgreSQL cannot make /metrics slow and a
Prometheus scraping every second cannot multiply the load on the host.

Naming decisions (documented for operators in docs/interfaces.md):

* A reading's unit goes into the family name, so one family never mixes
  units: ``watchdogd_reading_bytes``, ``watchdogd_reading_seconds``,
  ``watchdogd_reading_ratio``, ``watchdogd_reading`` (plain counts). Percent
  probes are exported as ratios (0..1), the Prometheus base unit, so the
  values compose with node_exporter's; thresholds are converted the same way.
* Subjects become labels only for low-cardinality probes (mountpoints,
  containers, units). High-cardinality probes (backends, clients) export
  per-rule aggregates; a pid or connection never becomes a label.
* "Never" timestamps are 0 so that ``time() < x`` alerts work without
  ``absent()``; a pause without expiry is ``+Inf``, and so is a maintenance
  mode without one (``watchdogd_maintenance_until_timestamp_seconds``).
"""

from __future__ import annotations

import functools
import gzip
import itertools
import logging
import math
import platform
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder, generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_1_0_0
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from watchdogd.buildinfo import UNKNOWN as UNKNOWN_REVISION
from watchdogd.buildinfo import BuildInfo
from watchdogd.engine.scheduler import RunCounts
from watchdogd.engine.sinks import SKIP_DECISIONS
from watchdogd.engine.snapshot import EngineSnapshot, FleetStats, RuleSnapshot
from watchdogd.faces import textformat
from watchdogd.model import Cardinality, Decision, RuleStatus, Unit
from watchdogd.notifications.deliver import SinkStats

log = logging.getLogger(__name__)

PREFIX = "watchdogd_"
CACHED = "Cached between probe runs: a scrape never runs a probe."


@dataclass(frozen=True)
class UnitMetric:
    suffix: str
    scale: float
    meaning: str


UNIT_METRICS: dict[Unit, UnitMetric] = {
    Unit.PERCENT: UnitMetric("_ratio", 0.01, "ratio 0..1 (percent probes are divided by 100)"),
    Unit.RATIO: UnitMetric("_ratio", 1.0, "ratio 0..1 (percent probes are divided by 100)"),
    Unit.SECONDS: UnitMetric("_seconds", 1.0, "seconds"),
    Unit.BYTES: UnitMetric("_bytes", 1.0, "bytes"),
    Unit.COUNT: UnitMetric("", 1.0, "a count"),
    Unit.PER_SECOND: UnitMetric("_per_second", 1.0, "a rate per second"),
}
"""Probe unit -> family suffix and the factor to Prometheus base units."""

RULE_STATES: tuple[RuleStatus, ...] = tuple(RuleStatus)
RULE_STATE_VALUES = tuple((state, state.value) for state in RULE_STATES)
ACTION_RESULTS = ("ok", "failed")
"""Results pre-set to 0 for every configured action, so ``increase()`` sees the first one."""


K = TypeVar("K", bound=tuple[str, ...])


class Series(Protocol):
    def add_metric(self, labels: Sequence[str], value: float) -> None: ...

    def add_block(self, block: str, key: textformat.Key, rows: textformat.Rows, *args: object) -> None: ...


class Summary(Protocol):
    def add_metric(self, labels: Sequence[str], count_value: int, sum_value: float) -> None: ...


class Sink(Protocol):
    """Where the family builders write: prometheus-client's families (the reference) or ``textformat``'s."""

    def gauge(self, name: str, documentation: str, labels: Sequence[str]) -> Series: ...

    def counter(self, name: str, documentation: str, labels: Sequence[str]) -> Series: ...

    def summary(self, name: str, documentation: str, labels: Sequence[str]) -> Summary: ...

    def group(self, group: str, key: textformat.Key, families: Sequence[Series], rows: textformat.GroupRows,
              *args: object, fresh: tuple[str, ...] = ()) -> None:
        """Series of several of this sink's families written together (see ``textformat.Families.group``)."""


class _Blocks:
    """``add_block`` for the reference families: every series of the block, every time."""

    def add_block(self, block: str, key: textformat.Key, rows: textformat.Rows, *args: object) -> None:
        for labels, value in rows(*args):
            self.add_metric(labels, value)  # type: ignore[attr-defined]


class _Gauge(_Blocks, GaugeMetricFamily):
    pass


class _Counter(_Blocks, CounterMetricFamily):
    pass


_M = TypeVar("_M", _Gauge, _Counter, SummaryMetricFamily)


class _Families:
    """prometheus-client families created on first use, emitted in a stable order: the reference sink."""

    def __init__(self) -> None:
        self._by_name: dict[str, Metric] = {}

    def _family(self, kind: type[_M], name: str, documentation: str, labels: Sequence[str]) -> _M:
        family = self._by_name.get(name)
        if family is None:
            family = kind(name, documentation, labels=list(labels))
            self._by_name[name] = family
        assert isinstance(family, kind)
        return family

    def gauge(self, name: str, documentation: str, labels: Sequence[str]) -> _Gauge:
        return self._family(_Gauge, name, documentation, labels)

    def counter(self, name: str, documentation: str, labels: Sequence[str]) -> _Counter:
        return self._family(_Counter, name, documentation, labels)

    def summary(self, name: str, documentation: str, labels: Sequence[str]) -> SummaryMetricFamily:
        return self._family(SummaryMetricFamily, name, documentation, labels)

    def group(self, group: str, key: textformat.Key, families: Sequence[Series], rows: textformat.GroupRows,
              *args: object, fresh: tuple[str, ...] = ()) -> None:
        for index, labels, value in rows(*args):  # the fresh values among them: rows has them all
            families[index].add_metric(labels, value)

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._by_name.values())


def _ts(value: float | None) -> float:
    return 0.0 if value is None else value


def write_snapshot(out: Sink, snap: EngineSnapshot, build: BuildInfo, prepared: RuleGroups | None = None) -> None:
    """Every watchdogd_* family for one snapshot, into either sink; ``prepared``: see ``RuleGroups``."""
    _daemon_families(out, snap, build)
    _rule_families(out, snap.rules, prepared)
    _reading_families(out, snap.rules)
    _last_action_families(out, snap.rules)
    _probe_failure_counters(out, snap)
    acting = _acting(snap.rules)
    _action_counters(out, snap, acting)
    _skip_counters(out, snap, acting)
    _event_families(out, snap)
    if snap.fleet is not None:
        _fleet_families(out, snap.fleet)


def _daemon_families(out: Sink, snap: EngineSnapshot, build: BuildInfo) -> None:
    out.gauge(PREFIX + "build_info", "Build information; the value is always 1. revision: the git commit it was "
              "built from (unknown when neither the package build nor a checkout said); python_version: the "
              "interpreter it runs on.", ["version", "revision", "python_version"]).add_metric(
        [build.version, build.revision, build.python_version], 1.0
    )
    gauges: tuple[tuple[str, str, float], ...] = (
        ("start_time_seconds", "When the daemon started, as a Unix timestamp.", snap.started_at),
        ("dry_run", "1 when the whole daemon runs in dry-run (records what it would do, changes nothing).",
         float(snap.dry_run)),
        ("config_last_reload_successful", "1 if the last config (re)load succeeded; 0 means the previous "
         "config is still running.", float(snap.last_reload_error is None)),
        ("config_last_reload_success_timestamp_seconds", "When the running config was loaded.",
         snap.config_loaded_at),
        ("budget_actions", "Host-wide action budget: real action runs allowed per window.",
         float(snap.budget_actions)),
        ("budget_window_seconds", "Length of the host-wide action budget window.", snap.budget_per),
        ("budget_remaining_actions", "Real action runs the host may still make in the current window.",
         float(snap.budget_remaining)),
        ("probe_threads_stuck", "Probe threads still running after their rule stopped waiting (timeout); "
         "only a restart frees them (stuck_probes_restart).", float(snap.stuck_probes)),
        ("maintenance", "1 while the host is in maintenance mode (watchdogctl pause --all): no rule acts; "
         "probes, states and these metrics go on.", float(snap.maintenance is not None)),
        ("maintenance_until_timestamp_seconds", "When the host's maintenance mode ends; 0 when not in "
         "maintenance, +Inf when it lasts until watchdogctl resume --all.",
         0.0 if snap.maintenance is None else snap.maintenance.until),
    )
    for name, documentation, value in gauges:
        out.gauge(PREFIX + name, documentation, []).add_metric([], value)
    out.counter(PREFIX + "probes_abandoned", "Probes the daemon stopped waiting for at their rule's timeout "
                "(or at stop), since start.", []).add_metric([], float(snap.probes_abandoned))
    out.counter(PREFIX + "state_resets", "Times a start found the state database reset, replaced or corrupt "
                "(cooldowns and audit history before it were lost); kept across resets in state.id.",
                []).add_metric([], float(snap.state_resets))


RULE_GAUGES: tuple[tuple[str, str], ...] = (
    ("rule_interval_seconds", "How often the rule runs."),
    ("rule_timeout_seconds", "The rule's effective probe timeout (its own, or probe_timeout capped at the interval)."),
    ("rule_subjects", "Subjects the probe measured in its last run. " + CACHED),
    ("rule_breaching_subjects", "Subjects past the threshold (pending or firing). " + CACHED),
    ("rule_firing_subjects", "Subjects firing (past the threshold for the rule's 'for'). " + CACHED),
    ("rule_cooldown_until_timestamp_seconds", "When the rule's latest cooldown ends; 0 when none is running."),
    ("rule_paused_until_timestamp_seconds", "When an operator pause ends; 0 when not paused, +Inf when paused "
     "without expiry."),
    ("rule_gave_up_timestamp_seconds", "When the rule gave up acting after too many actions (alerting only until "
     "resumed or stable); 0 when it has not."),
)
"""One series per rule each, valued by ``_rule_values`` in this order."""


def _rule_values(rule: RuleSnapshot) -> tuple[float, ...]:
    return (
        rule.every, rule.timeout, float(len(rule.readings)), float(len(rule.firing) + len(rule.pending)),
        float(len(rule.firing)), _ts(rule.cooldown_until), _ts(rule.paused_until), _ts(rule.gave_up_at),
    )


Prepared = tuple[RuleSnapshot, tuple[float, ...], bool, textformat.Key, tuple[str, ...]]
"""A view's group, ready to write: the view, its gauge values, whether it ran, the group's key, the fresh
values' text."""


def prepare(rule: RuleSnapshot) -> Prepared:
    """What a rule's group is made of, from its view alone: done by the run that made the view (``RuleGroups``)."""
    values = _rule_values(rule)
    key = (rule.severity, rule.status, values, rule.unit, rule.above, rule.below)
    if rule.up is None or rule.last_run is None:  # not run yet: no probe series, rather than a 0 for "failed"
        return rule, values, False, key, ()
    fresh = (textformat.go_float(rule.duration or 0.0), textformat.go_float(rule.last_run))
    return rule, values, True, (*key, rule.probe, rule.target, rule.up), fresh


class RuleGroups:
    """Each rule's group prepared by the run that made its view, on the rule's own thread (``Engine`` ``on_view``).

    After an interval every rule ran since the last scrape, and working out
    each group (gauge values, key, the duration and timestamp formatted) was
    a third of a render at 1,000 rules, on the scrape's clock; here each run
    pays its own, about 3 us. A render takes a prepared group only if it was
    made from the very view the snapshot holds, so a view made later (at
    the scrape, after a pause or a cooldown ran out) is prepared there.
    Entries are replaced, never changed; one per rule name, a removed rule's
    until the next render prunes it.
    """

    def __init__(self) -> None:
        self._by_rule: dict[str, Prepared] = {}

    def add(self, view: RuleSnapshot) -> None:
        self._by_rule[view.name] = prepare(view)

    def take(self, rules: Sequence[RuleSnapshot]) -> dict[str, Prepared]:
        """The prepared groups, pruned to ``rules`` when rules were removed (one render's work, rarely)."""
        by_rule = self._by_rule
        if len(by_rule) > len(rules):
            names = {rule.name for rule in rules}
            # list(): copied in one step under the GIL; a rule thread may add a name while this loops
            for name in [name for name in list(by_rule) if name not in names]:
                by_rule.pop(name, None)
        return by_rule


def _rule_families(out: Sink, rules: Sequence[RuleSnapshot], prepared: RuleGroups | None = None) -> None:
    """Each family is looked up once and filled for every rule: at 1,000 rules the lookups were a cost.

    A rule's firing flag, one-hot state, gauges, thresholds and probe series
    are one group over 14 families, so the fast sink compares one key where
    it wrote 23 series: they change when the rule's state does, not at every
    run; only the probe's duration and last run are written each time, as
    text prepared with the view (``RuleGroups``).
    """
    if not rules:
        return
    firing = out.gauge(PREFIX + "rule_firing", "1 while at least one subject of the rule is firing.",
                       ("rule", "severity"))
    state = out.gauge(PREFIX + "rule_state", "The rule's state as watchdogctl shows it: 1 for the "
                      "current state, 0 for the others.", ("rule", "state"))
    gauges = [out.gauge(PREFIX + metric, documentation, ("rule",)) for metric, documentation in RULE_GAUGES]
    thresholds: dict[str, Series] = {}
    probes: list[Series] = []
    groups: dict[tuple[str, bool], tuple[Series, ...]] = {}  # a group's families by threshold unit and "ran"
    group = out.group
    ready = prepared.take(rules) if prepared is not None else {}
    for rule in rules:
        made = ready.get(rule.name)
        if made is None or made[0] is not rule:
            made = prepare(rule)
        _, values, ran, key, fresh = made
        unit = UNIT_METRICS[rule.unit]
        families = groups.get((unit.suffix, ran))
        if families is None:  # each family created at its first rule, as the reference sink orders them
            threshold = thresholds.get(unit.suffix)
            if threshold is None:
                threshold = thresholds[unit.suffix] = out.gauge(
                    PREFIX + "rule_threshold" + unit.suffix, THRESHOLD_HELP[unit.suffix], ("rule", "bound"))
            if ran and not probes:
                probes += [out.gauge(PREFIX + metric, documentation, PROBE_LABELS) for metric, documentation in PROBES]
            families = groups[unit.suffix, ran] = (firing, state, *gauges, threshold, *(probes if ran else ()))
        group(rule.name, key, families, _rule_rows, rule, values, unit, ran, fresh=fresh)


THRESHOLD = 2 + len(RULE_GAUGES)
"""The threshold family's place in a rule's group: after firing, state and the gauges; the probe's after it."""


def _rule_rows(rule: RuleSnapshot, values: tuple[float, ...], unit: UnitMetric, ran: bool) -> Iterator[
        tuple[int, tuple[str, ...], float]]:
    """A rule's group (see ``_rule_families``): its place in the group, labels and value for each series."""
    name, status = rule.name, rule.status
    yield 0, (name, rule.severity), float(bool(rule.firing))
    for candidate, text in RULE_STATE_VALUES:
        yield 1, (name, text), float(candidate is status)
    labels = (name,)
    for index, value in enumerate(values, 2):
        yield index, labels, value
    if rule.above is not None:
        yield THRESHOLD, (name, "above"), rule.above * unit.scale
    if rule.below is not None:
        yield THRESHOLD, (name, "below"), rule.below * unit.scale
    if ran:  # success, then the fresh ones: duration and last run
        probe = (name, rule.probe, rule.target or "")
        yield THRESHOLD + 1, probe, float(bool(rule.up))
        yield THRESHOLD + 2, probe, rule.duration or 0.0
        yield THRESHOLD + 3, probe, rule.last_run or 0.0


THRESHOLD_HELP = {unit.suffix: f"The rule's threshold, {unit.meaning}; bound is above or below."
                  for unit in UNIT_METRICS.values()}
READING_HELP = {unit.suffix: f"Last value the rule's probe measured per subject, {unit.meaning}. " + CACHED
                for unit in UNIT_METRICS.values()}


PROBE_LABELS = ("rule", "probe", "target")


PROBES = (
    ("probe_success", "1 if the rule's last probe run succeeded, 0 if it failed or timed out. " + CACHED),
    ("probe_duration_seconds", "How long the rule's last probe run took. " + CACHED),
    ("probe_last_run_timestamp_seconds", "When the rule's probe last finished."),
)
"""A rule's probe families, in its group after the threshold (the last two fresh)."""


def _reading_families(out: Sink, rules: Sequence[RuleSnapshot]) -> None:
    """Per subject for low-cardinality probes, in a family per unit created at its first rule."""
    readings: dict[str, Series] = {}
    extremes: dict[str, tuple[Series, ...]] = {}  # unit suffix -> its max and min families
    for rule in rules:
        if not rule.readings:
            continue
        unit = UNIT_METRICS[rule.unit]
        if rule.cardinality is _LOW:
            family = readings.get(unit.suffix)
            if family is None:
                family = readings[unit.suffix] = out.gauge(
                    PREFIX + "reading" + unit.suffix, READING_HELP[unit.suffix], ("rule", "subject"))
            name, scale, add = rule.name, unit.scale, family.add_metric
            for subject, value in rule.readings.items():
                add((name, subject), value * scale)
            continue
        # High cardinality (backends, clients): aggregates only; a pid never becomes a label.
        pair = extremes.get(unit.suffix)
        if pair is None:  # made once per unit and render, not once per rule
            pair = extremes[unit.suffix] = tuple(
                out.gauge(PREFIX + f"rule_reading_{stat}" + unit.suffix,
                          f"The {stat}imum over all subjects of the rule's last probe run, {unit.meaning} (probes "
                          "with many subjects export this instead of one series per subject). " + CACHED, ("rule",))
                for stat in ("max", "min"))
        values, labels = rule.readings.values(), (rule.name,)
        pair[0].add_metric(labels, max(values) * unit.scale)
        pair[1].add_metric(labels, min(values) * unit.scale)


_LOW = Cardinality.LOW
"""A module global: ``Cardinality.LOW`` is 165 ns on Python 3.11 (``EnumType.__getattr__``), once per rule."""


def _last_action_families(out: Sink, rules: Sequence[RuleSnapshot]) -> None:
    for rule in rules:
        for last in rule.last_actions:
            labels = [rule.name, last.action]
            out.gauge(PREFIX + "action_last_timestamp_seconds", "When the rule's action last ran (or would "
                      "have, in dry-run).", ["rule", "action"]).add_metric(labels, last.ts)
            if last.result in ("ok", "failed", "dry_run"):
                out.gauge(PREFIX + "action_last_success", "1 if the action's last run succeeded (or was a "
                          "dry-run), 0 if it failed.", ["rule", "action"]).add_metric(
                    labels, float(last.result != "failed"))


Tail = tuple[str, ...]
"""A counter key without its rule: ``(action, result)`` of ``(rule, action, result)``."""


def _counts(
    family: Series,
    counts: Mapping[K, int],
    groups: Iterable[tuple[str, tuple[Tail, ...]]],
    is_preset: Callable[[K], bool],
) -> None:
    """The preset keys (each once) in rule order with their count or 0, then every other counted key, sorted.

    ``groups``: each rule's name and the tails of its preset keys; a rule's
    series are one block, so the fast sink compares once per rule. The
    others are mostly rules a reload removed: their counters stay, because
    a counter must not vanish and come back at 0 mid-series. ``is_preset``
    says whether ``groups`` holds a key, without building a set of
    thousands of keys each render (only counted keys are asked).
    """
    by_rule: dict[str, dict[Tail, int]] = {}
    for key, count in counts.items():
        by_rule.setdefault(key[0], {})[key[1:]] = count
    for name, tails in groups:
        if not tails:
            continue
        mine = by_rule.get(name)
        values = tuple(mine.get(tail, 0) for tail in tails) if mine else _zeros(len(tails))
        family.add_block(name, (tails, values), _count_rows, name, tails, values)
    for key in sorted(key for key in counts if not is_preset(key)):
        family.add_metric(key, float(counts[key]))


ZEROS = tuple((0,) * count for count in range(64))
"""A rule's counters before anything was counted (most rules, most of the time): made once per length."""


def _zeros(count: int) -> tuple[int, ...]:
    return ZEROS[count] if count < len(ZEROS) else (0,) * count


def _count_rows(name: str, tails: tuple[Tail, ...], values: tuple[int, ...]) -> Iterator[tuple[Tail, float]]:
    for tail, value in zip(tails, values, strict=True):
        yield (name, *tail), float(value)


def _acting(rules: Sequence[RuleSnapshot]) -> list[RuleSnapshot]:
    """The rules with actions: only they have action and skip counters (most rules of a large config alert)."""
    return [rule for rule in rules if rule.actions]


def _kinds(rule: RuleSnapshot) -> Iterable[str]:
    """The rule's action kinds, each once (a rule may list one kind twice)."""
    return dict.fromkeys(rule.actions) if len(rule.actions) > 1 else rule.actions


def _results(rule: RuleSnapshot) -> tuple[str, ...]:
    return (*ACTION_RESULTS, "dry_run") if rule.dry_run else ACTION_RESULTS


def _transition_tails(rule: RuleSnapshot) -> tuple[Tail, ...]:
    return TRANSITION_TAILS_ACTING if rule.actions else TRANSITION_TAILS


def _probe_failure_counters(out: Sink, snap: EngineSnapshot) -> None:
    failures = out.counter(PREFIX + "probe_failures", "Probe runs that failed (down, raised or timed out, the "
                           "verify re-probes after an action included), every failed run, not only the change "
                           "to down; since start. Not counted: an optional target never seen on this host, a "
                           "failure while a dependency is in trouble.", ("rule",))
    counts = {(rule_name,): count for rule_name, count in snap.probe_failures.items()}
    enabled = [rule.name for rule in snap.rules if rule.enabled]
    known = set(enabled)
    _counts(failures, counts, ((name, ONE_SERIES) for name in enabled), lambda key: key[0] in known)


FLEET_SKIPS = frozenset({Decision.SKIPPED_FLEET, Decision.SKIPPED_FLEET_UNAVAILABLE})
"""Skip reasons only a rule under a fleet budget can see: pre-set to 0 only when one is configured."""


def _skip_counters(out: Sink, snap: EngineSnapshot, acting: Sequence[RuleSnapshot]) -> None:
    reasons = [d.value for d in SKIP_DECISIONS if snap.fleet is not None or d not in FLEET_SKIPS]
    skips = out.counter(PREFIX + "action_skips", "Guard decisions not to run an action, by reason (the audit "
                        "log's decision: skipped_cooldown, skipped_budget, skipped_maintenance, gave_up...), "
                        "since start. Counts audited skips: a subject skipped again for the same reason run "
                        "after run is audited, and counted, once per change of reason.",
                        ("rule", "action", "reason"))
    preset = ((rule.name, tuple((kind, reason) for kind in _kinds(rule) for reason in reasons)) for rule in acting)
    kinds = {rule.name: rule.actions for rule in acting}
    known = set(reasons)
    _counts(skips, snap.action_skips, preset, lambda key: key[1] in kinds.get(key[0], ()) and key[2] in known)


def _action_counters(out: Sink, snap: EngineSnapshot, acting: Sequence[RuleSnapshot]) -> None:
    total = out.counter(PREFIX + "actions", "Action runs since the daemon started, by result "
                        "(ok, failed, dry_run).", ("rule", "action", "result"))
    preset = ((rule.name, tuple((kind, result) for kind in _kinds(rule) for result in _results(rule)))
              for rule in acting)
    rules = {rule.name: rule for rule in acting}

    def is_preset(key: tuple[str, str, str]) -> bool:
        rule = rules.get(key[0])
        return rule is not None and key[1] in rule.actions and key[2] in _results(rule)

    _counts(total, snap.actions_total, preset, is_preset)


RULE_TRANSITIONS = ("pending", "firing", "resolved", "down", "back")
ACTION_TRANSITIONS = ("gave_up", "resumed")
"""Kinds pre-set to 0 for every rule (give-up and resume only where the rule has actions)."""
TRANSITION_TAILS = tuple((kind,) for kind in RULE_TRANSITIONS)
TRANSITION_TAILS_ACTING = tuple((kind,) for kind in (*RULE_TRANSITIONS, *ACTION_TRANSITIONS))
ONE_SERIES: tuple[Tail, ...] = ((),)
"""The tail of a counter with the rule as its only label."""
SINK_RESULTS = ("delivered", "failed", "dropped")


def _event_families(out: Sink, snap: EngineSnapshot) -> None:
    transitions = out.counter(PREFIX + "transitions", "Transitions since the daemon started, by kind: a subject "
                              "went pending, firing or resolved; the probe went down or came back; the rule "
                              "gave up or resumed acting.", ("rule", "kind"))
    preset = ((rule.name, _transition_tails(rule)) for rule in snap.rules)
    rules = {rule.name: rule for rule in snap.rules}

    def is_preset(key: tuple[str, str]) -> bool:
        rule = rules.get(key[0])
        return rule is not None and key[1:] in _transition_tails(rule)

    _counts(transitions, snap.transitions_total, preset, is_preset)
    if not snap.sinks:
        return
    events = out.counter(PREFIX + "event_sink_events", "Events handed to each event sink since start: delivered, "
                         "failed (the sink raised) or dropped (its queue was full).", ["sink", "result"])
    queued = out.gauge(PREFIX + "event_sink_queue_length", "Events waiting for a queued sink (always 0 for "
                       "inline sinks).", ["sink"])
    for sink in snap.sinks:
        for result, value in zip(SINK_RESULTS, (sink.delivered, sink.failed, sink.dropped), strict=True):
            events.add_metric([sink.name, result], float(value))
        queued.add_metric([sink.name], float(sink.queued))


FLEET_COORDINATOR_COUNTERS = (
    ("requests", "Requests this host sent to the fleet coordinator, since start."),
    ("errors", "Coordinator requests that failed or timed out, since start."),
    ("failovers", "Times this host moved to another coordinator endpoint after an error, since start."),
    ("leases_lost", "Times this host's lease was found gone (its slots with it), since start."),
)


def _fleet_families(out: Sink, fleet: FleetStats) -> None:
    """The fleet budget as this host sees it: its slots, its waits, what the coordinator answered."""
    out.gauge(PREFIX + "fleet_info", "The fleet budget's coordinator and this host's name in it; always 1.",
              ["coordinator", "host"]).add_metric([fleet.kind, fleet.host], 1.0)
    for name, documentation in FLEET_COORDINATOR_COUNTERS:
        out.counter(PREFIX + f"fleet_coordinator_{name}", documentation, []).add_metric(
            [], float(getattr(fleet, name))
        )
    acquire = out.summary(PREFIX + "fleet_acquire_seconds", "Time to get the coordinator's answer for a slot "
                          "(grant or denial), per group.", ["group"])
    for group in fleet.groups:
        labels = [group.name]
        out.gauge(PREFIX + "fleet_group_max_hosts", "Runs of the group allowed at once, fleet-wide.",
                  ["group"]).add_metric(labels, float(group.max_hosts))
        out.gauge(PREFIX + "fleet_slots_held", "Slots of the group this host holds now (runs in progress).",
                  ["group"]).add_metric(labels, float(len(group.held)))
        out.gauge(PREFIX + "fleet_waiting_rules", "Rules of this host waiting for a slot of the group (denied "
                  "and still asking).", ["group"]).add_metric(labels, float(len(group.waits)))
        answers = out.counter(PREFIX + "fleet_acquires", "Answers to this host's asks for a slot, since start: "
                              "granted; denied because the group was full or its run window spent (full, rate); "
                              "the coordinator did not answer (unavailable: the run was skipped; fallback: it ran "
                              "under the host budget); a slot lost mid-run (lost).", ["group", "result"])
        for result, count in sorted(group.outcomes.items()):
            answers.add_metric([group.name, result], float(count))
        acquire.add_metric(labels, group.acquire_count, group.acquire_seconds_sum)


def write_deliveries(out: Sink, stats: Sequence[SinkStats]) -> None:
    """The notification outbox, per sink: what was delivered, retried and given up, and what waits."""
    counters = (
        ("notifications_delivered", "Notifications the sink accepted (2xx), since start.", "delivered"),
        ("notifications_retried", "Delivery attempts that failed and will be tried again, since start.", "retried"),
        ("notifications_failed", "Notifications given up on (refused, or failing past notify.give_up_after), "
         "since start.", "failed"),
        ("notification_reminders", "Open alerts sent again so the receiver does not time them out (Alertmanager), "
         "since start.", "reminders"),
    )
    gauges = (
        ("notification_outbox_pending", "Notifications queued in the outbox and not yet delivered.", "pending"),
        ("notification_outbox_oldest_seconds", "How long the oldest undelivered notification has waited; 0 when "
         "none waits.", "oldest_age"),
    )
    for sink in stats:
        for name, documentation, field_name in counters:
            value = float(getattr(sink, field_name))
            out.counter(PREFIX + name, documentation, ["sink"]).add_metric([sink.sink], value)
        for name, documentation, field_name in gauges:
            value = float(getattr(sink, field_name))
            out.gauge(PREFIX + name, documentation, ["sink"]).add_metric([sink.sink], value)


def write_runs(out: Sink, counts: RunCounts) -> None:
    """The scheduler's missed and late runs, per rule (every scheduled rule from 0)."""
    missed = out.counter(PREFIX + "rule_runs_missed", "Scheduled runs of the rule that never ran, since start: "
                         "due while its previous run still went on (a run never overlaps itself), or waiting "
                         "for a worker thread past the misfire grace (one interval).", ["rule"])
    # Each family is one block, its key the counts themselves: they rarely move (a late run is news), and a
    # series per rule was 0.9 ms of a 1,000-rule render.
    missed.add_block("", counts.missed, _sorted_counts, counts.missed)
    late = out.counter(PREFIX + "rule_runs_late", "Runs of the rule handed to a worker thread more than max(1s, "
                       "a quarter of its interval) after their scheduled time (jitter included), since start.",
                       ["rule"])
    late.add_block("", counts.late, _sorted_counts, counts.late)


def _sorted_counts(counts: Mapping[str, int]) -> Iterator[tuple[tuple[str], float]]:
    for rule_name, count in sorted(counts.items()):
        yield (rule_name,), float(count)


class _Writer(Collector):
    """One of our collectors: ``collect()`` for prometheus-client (the reference), ``write()`` for the fast path."""

    fresh_until = math.inf
    """Wall time until which the last write's data stays within every rule's interval (``fresh_until``)."""

    def write(self, out: Sink) -> None:
        raise NotImplementedError

    def collect(self) -> Iterable[Metric]:
        out = _Families()
        self.write(out)
        return iter(out)

    def describe(self) -> Iterable[Metric]:
        # Empty on purpose: the registry would otherwise call collect() (and take a snapshot) at registration.
        return ()


class RunsCollector(_Writer):
    def __init__(self, counts: Callable[[], RunCounts]) -> None:
        self._counts = counts

    def write(self, out: Sink) -> None:
        write_runs(out, self._counts())


class DeliveryCollector(_Writer):
    def __init__(self, stats: Callable[[], Sequence[SinkStats]]) -> None:
        self._stats = stats

    def write(self, out: Sink) -> None:
        write_deliveries(out, self._stats())


class SnapshotCollector(_Writer):
    """Turns ``snapshot()`` into metric families at each collection."""

    def __init__(
        self, snapshot: Callable[[], EngineSnapshot], build: BuildInfo, prepared: RuleGroups | None = None
    ) -> None:
        self._snapshot = snapshot
        self._build = build
        self._prepared = prepared

    def write(self, out: Sink) -> None:
        snap = self._snapshot()
        self.fresh_until = fresh_until(snap)
        write_snapshot(out, snap, self._build, self._prepared)


def fresh_until(snap: EngineSnapshot) -> float:
    """When the first rule's data in ``snap`` gets older than its own interval (its last run + its interval).

    Rules already past that when the snapshot was taken (late, waiting on a
    dependency) are left out: rendering again would not make them fresher.
    """
    now = snap.taken_at
    due = [rule.last_run + rule.every for rule in snap.rules if rule.last_run is not None]
    return min((moment for moment in due if moment > now), default=math.inf)


class MetricsRegistry(CollectorRegistry):
    """A private registry that can also write our own families without prometheus-client's per-sample work.

    ``collect()`` (and so ``generate_latest``) works as for any registry: that
    is the reference the fast path is tested against, and what exotic
    formats get. ``encode()`` writes our families with ``textformat`` and
    leaves the others (the process collector) to prometheus-client.
    """

    def __init__(self) -> None:
        super().__init__(auto_describe=False)
        self._own: list[_Writer] = []
        self._rest = CollectorRegistry(auto_describe=False)
        self._memo = textformat.Memo()

    def fresh_until(self) -> float:
        """The earliest ``fresh_until`` of our own collectors' last writes."""
        return min((collector.fresh_until for collector in self._own), default=math.inf)

    def add_own(self, collector: _Writer) -> None:
        self.register(collector)
        self._own.append(collector)

    def add_other(self, collector: Collector) -> None:
        self.register(collector)
        self._rest.register(collector)

    def encode(self, *, openmetrics: bool) -> bytes:
        """The whole page at once: the textfile's, and the reference the tests hold ``chunks`` to."""
        return b"".join(self.chunks(openmetrics=openmetrics))

    def chunks(self, *, openmetrics: bool) -> Iterator[bytes]:
        """The page a family at a time, so that whoever compresses it never holds all of it.

        At 1,000 rules the page is 2.1 MB of text: joined, then encoded, it
        was 4 MB alive at once for each render, read as RSS peaks of up to
        +2.9 MiB by a sampler that caught a render (bench_scale, stop 37).
        """
        out = textformat.Families(self._memo)
        for collector in self._own:
            collector.write(out)
        out.finish()
        for text in textformat.encode(out, openmetrics=openmetrics):
            yield text.encode("utf-8")
        # The rest after ours, as registered; in OpenMetrics it brings the closing "# EOF".
        yield bytes(generate_openmetrics(self._rest) if openmetrics else generate_latest(self._rest))  # type: ignore[no-untyped-call]


def build_registry(
    snapshot: Callable[[], EngineSnapshot],
    build: BuildInfo | str,
    *,
    process: bool = True,
    deliveries: Callable[[], Sequence[SinkStats]] | None = None,
    runs: Callable[[], RunCounts] | None = None,
    prepared: RuleGroups | None = None,
) -> MetricsRegistry:
    """A private registry: nothing another library registers globally leaks into our /metrics.

    ``build``: what ``watchdogd_build_info`` says (``buildinfo.current`` at
    start); a bare version string stands for that version with an unknown
    revision (tests and benches that build a registry of their own).
    ``process=False`` for the textfile: node_exporter exports its own
    ``process_*`` series, and duplicates would make it reject the file.
    ``deliveries``: the notification sinks' figures (the outbox).
    ``runs``: the scheduler's missed and late runs (``Progress.run_counts``).
    ``prepared``: the rules' groups as their runs prepared them (``RuleGroups``, the engine's ``on_view``).
    """
    if isinstance(build, str):
        build = BuildInfo(build, UNKNOWN_REVISION, platform.python_version())
    registry = MetricsRegistry()
    registry.add_own(SnapshotCollector(snapshot, build, prepared))
    if deliveries is not None:
        registry.add_own(DeliveryCollector(deliveries))
    if runs is not None:
        registry.add_own(RunsCollector(runs))
    if process:
        registry.add_other(ProcessCollector(registry=None))
    return registry


FAST_FORMATS: dict[str, bool] = {
    CONTENT_TYPE_PLAIN_0_0_4: False,
    OPENMETRICS_1_0_0: True,
    **{f"application/openmetrics-text; version=1.0.0; charset=utf-8; escaping={escaping}": True
       for escaping in ("underscores", "allow-utf-8")},
}
"""Content types (as ``choose_encoder`` names them) whose bytes ``MetricsRegistry.encode`` writes: every name
of ours is a legacy one, which these escapings leave alone. Others (``dots`` and ``values`` rewrite names,
OpenMetrics 2.0, text 1.0.0) go through prometheus-client."""


def encoder_for(registry: CollectorRegistry, accept: str) -> tuple[Callable[[], Iterable[bytes]], str]:
    """The function that renders ``registry`` in the format ``accept`` asks for, in pieces, and its content type."""
    encoder, content_type = choose_encoder(accept)
    openmetrics = FAST_FORMATS.get(content_type)
    if isinstance(registry, MetricsRegistry) and openmetrics is not None:
        return functools.partial(registry.chunks, openmetrics=openmetrics), content_type
    return lambda: (encoder(registry),), content_type


@dataclass(frozen=True)
class Rendered:
    body: bytes
    content_type: str
    encoding: str | None  # "gzip" or None


@dataclass(frozen=True)
class _Body:
    rendered_at: float
    generation: int  # the engine's change count when the render began: it holds every change before
    fresh_until: float  # wall time when the first rule's data in it gets older than the rule's interval
    zipped: bytes  # only the gzip is kept: a twelfth of the text (2.1 MiB -> 0.17 MiB at 1,000 rules)


SPACING_FLOOR = 0.1
"""Seconds a body is served as is whatever changed: at most ten renders a second for a tight loop of curl."""


class Exposition:
    """/metrics bodies rendered at scrape time when the engine changed, shared by concurrent scrapes.

    The daemon calls ``changed()`` after every rule run, pause, resume and
    reload; that bumps a generation count. A scrape renders again when its
    format's body predates the latest change, so it serves the engine's
    state as of the scrape, not of some earlier timer: rules' timestamps are
    at most their own interval (plus the run) old. Two limits keep the CPU
    bounded: scrapes arriving while a render runs wait for it and share it,
    and a body younger than ``min_spacing`` is served as is, so a tight loop
    of curl costs about one render per ``min_spacing`` per format. That
    reuse ends early when a rule's data in the body would get older than
    the rule's interval (``fresh_until``): then a body younger than
    ``SPACING_FLOOR`` is still served, which is what bounds a tight loop
    while a burst of rules comes due (a few renders more per burst). With
    no change, a body is still rendered again once ``max_age`` old, because
    time alone moves a few values (process CPU, the budget window, a pause
    running out).

    A body is kept gzipped only, compressed once per render: Prometheus
    always asks for gzip. A client that does not (curl) gets the text
    decompressed once per body and kept until that body is ``max_age`` old;
    keeping every format's text held 2.1 MiB each (1,000 rules) for the
    life of the process.

    ``release_memory`` runs after each render (the daemon's is
    ``memory.release_free_memory``): a render at 1,000 rules leaves 2-3 MiB
    of freed pieces in the C library's heap, which kept them resident until
    the next periodic trim. It runs once the render lock is free, so only
    the scrape that rendered waits for it (0.3-1 ms at 1,000 rules).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        min_spacing: float = 0.5,
        max_age: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        release_memory: Callable[[], object] = lambda: None,
    ) -> None:
        """``wall``: the clock of the rules' timestamps, which ``fresh_until`` is compared with."""
        self._registry = registry
        self._release_memory = release_memory
        self._min_spacing = min_spacing
        self._floor = min(SPACING_FLOOR, min_spacing)
        self._max_age = max_age
        self._clock = clock
        self._wall = wall
        self._ticks = itertools.count(1)
        self._generation = 0
        self._render_lock = threading.Lock()  # one render at a time: concurrent scrapes share it
        self._bodies: dict[str, _Body] = {}
        self._plain: tuple[_Body, bytes] | None = None  # the latest text asked for without gzip, and its body
        self.renders = 0
        self.render_seconds = 0.0  # wall time of the last render (snapshot included)
        self.render_cpu_seconds = 0.0  # CPU time of the rendering thread in it: the render's own cost
        if isinstance(registry, MetricsRegistry):
            registry.add_own(_RenderCollector(self))

    def changed(self) -> None:
        """The engine's state moved: the next scrape renders again. Cheap; never blocks."""
        self._generation = next(self._ticks)

    def render(self, accept: str, gzip_ok: bool) -> Rendered:
        kept = self._plain
        if kept is not None and self._clock() - kept[0].rendered_at >= self._max_age:
            self._plain = None  # the text for a client without gzip is not kept past its page's age
        encoder, content_type = encoder_for(self._registry, accept)
        wanted = self._generation
        body = self._bodies.get(content_type)
        if body is None or not self._fresh(body, wanted):
            rendered = False
            with self._render_lock:
                body = self._bodies.get(content_type)
                if body is None or not self._fresh(body, wanted):
                    body = self._refresh(content_type, encoder)
                    rendered = True
            if rendered:  # outside the lock: scrapes that waited for this render do not wait for the trim too
                self._release_memory()
        if not gzip_ok:
            return Rendered(self._text(body), content_type, None)
        return Rendered(body.zipped, content_type, "gzip")

    def _text(self, body: _Body) -> bytes:
        """The body's text, decompressed once per body: a loop of curl must not cost a decompress per request."""
        kept = self._plain
        if kept is not None and kept[0] is body:
            return kept[1]
        text = gzip.decompress(body.zipped)
        self._plain = (body, text)
        return text

    def _fresh(self, body: _Body, wanted: int) -> bool:
        age = self._clock() - body.rendered_at
        if body.generation >= wanted:
            return age < self._max_age
        return age < self._floor or (age < self._min_spacing and self._wall() < body.fresh_until)

    def _refresh(self, content_type: str, encoder: Callable[[], Iterable[bytes]]) -> _Body:
        generation = self._generation  # before the snapshot: changes from here on make the next scrape render
        rendered_at = self._clock()
        started, cpu_started = time.perf_counter(), time.thread_time()
        # Compressed as it is written, a family at a time: the page's text is never whole (MetricsRegistry.chunks).
        # Level 1: nearly the ratio of level 6 on this repetitive text, at a fraction of the CPU. wbits 31: gzip.
        compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
        zipped: list[bytes] = []
        compressing = compressing_cpu = 0.0
        for chunk in encoder():
            at, cpu_at = time.perf_counter(), time.thread_time()
            zipped.append(compressor.compress(chunk))
            compressing += time.perf_counter() - at
            compressing_cpu += time.thread_time() - cpu_at
        fresh_until = self._registry.fresh_until() if isinstance(self._registry, MetricsRegistry) else math.inf
        # The render figures stay what they were (snapshot and formatting): the compression is not in them.
        self.render_seconds = time.perf_counter() - started - compressing
        self.render_cpu_seconds = time.thread_time() - cpu_started - compressing_cpu
        zipped.append(compressor.flush())
        body = _Body(rendered_at, generation, fresh_until, b"".join(zipped))
        self.renders += 1
        self._bodies[content_type] = body
        return body


class _RenderCollector(_Writer):
    """What the previous /metrics render cost: the figure that grows with the number of rules."""

    def __init__(self, exposition: Exposition) -> None:
        self._exposition = exposition

    def write(self, out: Sink) -> None:
        gauge = out.gauge(PREFIX + "exposition_render_seconds", "How long the previous /metrics render took "
                          "(engine snapshot and formatting), in seconds of wall time.", ())
        gauge.add_metric((), self._exposition.render_seconds)
        cpu = out.gauge(PREFIX + "exposition_render_cpu_seconds", "CPU time the previous /metrics render took "
                        "(its thread's, time.thread_time): the render's own cost, without the waits for the "
                        "interpreter lock while rules run.", ())
        cpu.add_metric((), self._exposition.render_cpu_seconds)


def render_text(registry: CollectorRegistry) -> bytes:
    """The classic text format, for the textfile and for tests."""
    if isinstance(registry, MetricsRegistry):
        return registry.encode(openmetrics=False)
    return generate_latest(registry)
