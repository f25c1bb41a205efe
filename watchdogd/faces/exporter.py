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

import gzip
import logging
import math
import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from watchdogd.buildinfo import UNKNOWN as UNKNOWN_REVISION
from watchdogd.buildinfo import BuildInfo
from watchdogd.engine.scheduler import RunCounts
from watchdogd.engine.sinks import SKIP_DECISIONS
from watchdogd.engine.snapshot import EngineSnapshot, FleetStats, RuleSnapshot
from watchdogd.logs import event
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
ACTION_RESULTS = ("ok", "failed")
"""Results pre-set to 0 for every configured action, so ``increase()`` sees the first one."""


class _Families:
    """Gauges created on first use, emitted in a stable order."""

    def __init__(self) -> None:
        self._by_name: dict[str, Metric] = {}

    def gauge(self, name: str, documentation: str, labels: Iterable[str]) -> GaugeMetricFamily:
        family = self._by_name.get(name)
        if family is None:
            family = GaugeMetricFamily(name, documentation, labels=list(labels))
            self._by_name[name] = family
        assert isinstance(family, GaugeMetricFamily)
        return family

    def counter(self, name: str, documentation: str, labels: Iterable[str]) -> CounterMetricFamily:
        family = self._by_name.get(name)
        if family is None:
            family = CounterMetricFamily(name, documentation, labels=list(labels))
            self._by_name[name] = family
        assert isinstance(family, CounterMetricFamily)
        return family

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._by_name.values())


def _ts(value: float | None) -> float:
    return 0.0 if value is None else value


def _probe_labels(rule: RuleSnapshot) -> list[str]:
    return [rule.name, rule.probe, rule.target or ""]


def families(snap: EngineSnapshot, build: BuildInfo) -> Iterator[Metric]:
    """Every watchdogd_* family for one snapshot."""
    out = _Families()
    _daemon_families(out, snap, build)
    for rule in snap.rules:
        _rule_families(out, rule)
        _probe_families(out, rule)
        _reading_families(out, rule)
        _last_action_families(out, rule)
    _probe_failure_counters(out, snap)
    _action_counters(out, snap)
    _skip_counters(out, snap)
    _event_families(out, snap)
    yield from out
    if snap.fleet is not None:
        yield from _fleet_families(snap.fleet)


def _daemon_families(out: _Families, snap: EngineSnapshot, build: BuildInfo) -> None:
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


def _rule_families(out: _Families, rule: RuleSnapshot) -> None:
    name = [rule.name]
    out.gauge(PREFIX + "rule_firing", "1 while at least one subject of the rule is firing.",
              ["rule", "severity"]).add_metric([rule.name, rule.severity], float(bool(rule.firing)))
    state = out.gauge(PREFIX + "rule_state", "The rule's state as watchdogctl shows it: 1 for the "
                      "current state, 0 for the others.", ["rule", "state"])
    for candidate in RULE_STATES:
        state.add_metric([rule.name, candidate.value], float(candidate is rule.status))
    per_rule: tuple[tuple[str, str, float], ...] = (
        ("rule_interval_seconds", "How often the rule runs.", rule.every),
        ("rule_timeout_seconds", "The rule's effective probe timeout (its own, or probe_timeout capped at the "
         "interval).", rule.timeout),
        ("rule_subjects", "Subjects the probe measured in its last run. " + CACHED, float(len(rule.readings))),
        ("rule_breaching_subjects", "Subjects past the threshold (pending or firing). " + CACHED,
         float(len(rule.firing) + len(rule.pending))),
        ("rule_firing_subjects", "Subjects firing (past the threshold for the rule's 'for'). " + CACHED,
         float(len(rule.firing))),
        ("rule_cooldown_until_timestamp_seconds", "When the rule's latest cooldown ends; 0 when none is "
         "running.", _ts(rule.cooldown_until)),
        ("rule_paused_until_timestamp_seconds", "When an operator pause ends; 0 when not paused, +Inf when "
         "paused without expiry.", _ts(rule.paused_until)),
        ("rule_gave_up_timestamp_seconds", "When the rule gave up acting after too many actions (alerting "
         "only until resumed or stable); 0 when it has not.", _ts(rule.gave_up_at)),
    )
    for metric, documentation, value in per_rule:
        out.gauge(PREFIX + metric, documentation, ["rule"]).add_metric(name, value)
    unit = UNIT_METRICS[rule.unit]
    threshold = out.gauge(PREFIX + "rule_threshold" + unit.suffix,
                          f"The rule's threshold, {unit.meaning}; bound is above or below.", ["rule", "bound"])
    for bound, limit in (("above", rule.above), ("below", rule.below)):
        if limit is not None:
            threshold.add_metric([rule.name, bound], limit * unit.scale)


def _probe_families(out: _Families, rule: RuleSnapshot) -> None:
    if rule.up is None or rule.last_run is None:
        return  # not run yet: absent, rather than a misleading 0 for "failed"
    labels = _probe_labels(rule)
    names = ["rule", "probe", "target"]
    out.gauge(PREFIX + "probe_success", "1 if the rule's last probe run succeeded, 0 if it failed or "
              "timed out. " + CACHED, names).add_metric(labels, float(rule.up))
    out.gauge(PREFIX + "probe_duration_seconds", "How long the rule's last probe run took. " + CACHED,
              names).add_metric(labels, rule.duration or 0.0)
    out.gauge(PREFIX + "probe_last_run_timestamp_seconds", "When the rule's probe last finished.",
              names).add_metric(labels, rule.last_run)


def _reading_families(out: _Families, rule: RuleSnapshot) -> None:
    if not rule.readings:
        return
    unit = UNIT_METRICS[rule.unit]
    if rule.cardinality is Cardinality.LOW:
        family = out.gauge(PREFIX + "reading" + unit.suffix,
                           f"Last value the rule's probe measured per subject, {unit.meaning}. " + CACHED,
                           ["rule", "subject"])
        for subject, value in rule.readings.items():
            family.add_metric([rule.name, subject], value * unit.scale)
        return
    # High cardinality (backends, clients): aggregates only; a pid never becomes a label.
    values = rule.readings.values()
    for stat, pick in (("max", max), ("min", min)):
        out.gauge(PREFIX + f"rule_reading_{stat}" + unit.suffix,
                  f"The {stat}imum over all subjects of the rule's last probe run, {unit.meaning} "
                  "(probes with many subjects export this instead of one series per subject). " + CACHED,
                  ["rule"]).add_metric([rule.name], pick(values) * unit.scale)


def _last_action_families(out: _Families, rule: RuleSnapshot) -> None:
    for last in rule.last_actions:
        labels = [rule.name, last.action]
        out.gauge(PREFIX + "action_last_timestamp_seconds", "When the rule's action last ran (or would "
                  "have, in dry-run).", ["rule", "action"]).add_metric(labels, last.ts)
        if last.result in ("ok", "failed", "dry_run"):
            out.gauge(PREFIX + "action_last_success", "1 if the action's last run succeeded (or was a "
                      "dry-run), 0 if it failed.", ["rule", "action"]).add_metric(
                labels, float(last.result != "failed"))


def _probe_failure_counters(out: _Families, snap: EngineSnapshot) -> None:
    counts = dict(snap.probe_failures)
    for rule in snap.rules:
        if rule.enabled:
            counts.setdefault(rule.name, 0)
    failures = out.counter(PREFIX + "probe_failures", "Probe runs that failed (down, raised or timed out, the "
                           "verify re-probes after an action included), every failed run, not only the change "
                           "to down; since start. Not counted: an optional target never seen on this host, a "
                           "failure while a dependency is in trouble.", ["rule"])
    for rule_name, count in sorted(counts.items()):
        failures.add_metric([rule_name], float(count))


FLEET_SKIPS = frozenset({Decision.SKIPPED_FLEET, Decision.SKIPPED_FLEET_UNAVAILABLE})
"""Skip reasons only a rule under a fleet budget can see: pre-set to 0 only when one is configured."""


def _skip_counters(out: _Families, snap: EngineSnapshot) -> None:
    counts = dict(snap.action_skips)
    reasons = [d.value for d in SKIP_DECISIONS if snap.fleet is not None or d not in FLEET_SKIPS]
    for rule in snap.rules:
        for kind in rule.actions:
            for reason in reasons:
                counts.setdefault((rule.name, kind, reason), 0)
    skips = out.counter(PREFIX + "action_skips", "Guard decisions not to run an action, by reason (the audit "
                        "log's decision: skipped_cooldown, skipped_budget, skipped_maintenance, gave_up...), "
                        "since start. Counts audited skips: a subject skipped again for the same reason run "
                        "after run is audited, and counted, once per change of reason.",
                        ["rule", "action", "reason"])
    for (rule_name, action, reason), count in sorted(counts.items()):
        skips.add_metric([rule_name, action, reason], float(count))


def _action_counters(out: _Families, snap: EngineSnapshot) -> None:
    counts = dict(snap.actions_total)
    for rule in snap.rules:
        results = (*ACTION_RESULTS, "dry_run") if rule.dry_run else ACTION_RESULTS
        for kind in rule.actions:
            for result in results:
                counts.setdefault((rule.name, kind, result), 0)
    # Counters of rules a reload removed stay: a counter must not vanish and come back at 0 mid-series.
    total = out.counter(PREFIX + "actions", "Action runs since the daemon started, by result "
                        "(ok, failed, dry_run).", ["rule", "action", "result"])
    for (rule_name, action, result), count in sorted(counts.items()):
        total.add_metric([rule_name, action, result], float(count))


RULE_TRANSITIONS = ("pending", "firing", "resolved", "down", "back")
ACTION_TRANSITIONS = ("gave_up", "resumed")
"""Kinds pre-set to 0 for every rule (give-up and resume only where the rule has actions)."""
SINK_RESULTS = ("delivered", "failed", "dropped")


def _event_families(out: _Families, snap: EngineSnapshot) -> None:
    counts = dict(snap.transitions_total)
    for rule in snap.rules:
        for kind in (*RULE_TRANSITIONS, *ACTION_TRANSITIONS) if rule.actions else RULE_TRANSITIONS:
            counts.setdefault((rule.name, kind), 0)
    transitions = out.counter(PREFIX + "transitions", "Transitions since the daemon started, by kind: a subject "
                              "went pending, firing or resolved; the probe went down or came back; the rule "
                              "gave up or resumed acting.", ["rule", "kind"])
    for (rule_name, kind), count in sorted(counts.items()):
        transitions.add_metric([rule_name, kind], float(count))
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


def _fleet_families(fleet: FleetStats) -> Iterator[Metric]:
    """The fleet budget as this host sees it: its slots, its waits, what the coordinator answered."""
    out = _Families()
    out.gauge(PREFIX + "fleet_info", "The fleet budget's coordinator and this host's name in it; always 1.",
              ["coordinator", "host"]).add_metric([fleet.kind, fleet.host], 1.0)
    for name, documentation in FLEET_COORDINATOR_COUNTERS:
        out.counter(PREFIX + f"fleet_coordinator_{name}", documentation, []).add_metric(
            [], float(getattr(fleet, name))
        )
    acquire = SummaryMetricFamily(PREFIX + "fleet_acquire_seconds", "Time to get the coordinator's answer for "
                                  "a slot (grant or denial), per group.", labels=["group"])
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
    yield from out
    yield acquire


def delivery_families(stats: Sequence[SinkStats]) -> Iterator[Metric]:
    """The notification outbox, per sink: what was delivered, retried and given up, and what waits."""
    out = _Families()
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
    return iter(out)


def run_families(counts: RunCounts) -> Iterator[Metric]:
    """The scheduler's missed and late runs, per rule (every scheduled rule from 0)."""
    out = _Families()
    missed = out.counter(PREFIX + "rule_runs_missed", "Scheduled runs of the rule that never ran, since start: "
                         "due while its previous run still went on (a run never overlaps itself), or waiting "
                         "for a worker thread past the misfire grace (one interval).", ["rule"])
    for rule_name, count in sorted(counts.missed.items()):
        missed.add_metric([rule_name], float(count))
    late = out.counter(PREFIX + "rule_runs_late", "Runs of the rule handed to a worker thread more than max(1s, "
                       "a quarter of its interval) after their scheduled time (jitter included), since start.",
                       ["rule"])
    for rule_name, count in sorted(counts.late.items()):
        late.add_metric([rule_name], float(count))
    return iter(out)


class RunsCollector(Collector):
    def __init__(self, counts: Callable[[], RunCounts]) -> None:
        self._counts = counts

    def collect(self) -> Iterable[Metric]:
        return run_families(self._counts())

    def describe(self) -> Iterable[Metric]:
        return ()


class DeliveryCollector(Collector):
    def __init__(self, stats: Callable[[], Sequence[SinkStats]]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        return delivery_families(self._stats())

    def describe(self) -> Iterable[Metric]:
        return ()


class SnapshotCollector(Collector):
    """Turns ``snapshot()`` into metric families at each collection."""

    def __init__(self, snapshot: Callable[[], EngineSnapshot], build: BuildInfo) -> None:
        self._snapshot = snapshot
        self._build = build

    def collect(self) -> Iterable[Metric]:
        return families(self._snapshot(), self._build)

    def describe(self) -> Iterable[Metric]:
        # Empty on purpose: the registry would otherwise call collect() (and take a snapshot) at registration.
        return ()


def build_registry(
    snapshot: Callable[[], EngineSnapshot],
    build: BuildInfo | str,
    *,
    process: bool = True,
    deliveries: Callable[[], Sequence[SinkStats]] | None = None,
    runs: Callable[[], RunCounts] | None = None,
) -> CollectorRegistry:
    """A private registry: nothing another library registers globally leaks into our /metrics.

    ``build``: what ``watchdogd_build_info`` says (``buildinfo.current`` at
    start); a bare version string stands for that version with an unknown
    revision (tests and benches that build a registry of their own).
    ``process=False`` for the textfile: node_exporter exports its own
    ``process_*`` series, and duplicates would make it reject the file.
    ``deliveries``: the notification sinks' figures (the outbox).
    ``runs``: the scheduler's missed and late runs (``Progress.run_counts``).
    """
    if isinstance(build, str):
        build = BuildInfo(build, UNKNOWN_REVISION, platform.python_version())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot, build))
    if deliveries is not None:
        registry.register(DeliveryCollector(deliveries))
    if runs is not None:
        registry.register(RunsCollector(runs))
    if process:
        ProcessCollector(registry=registry)
    return registry


@dataclass(frozen=True)
class Rendered:
    body: bytes
    content_type: str
    encoding: str | None  # "gzip" or None


@dataclass
class _Body:
    rendered_at: float
    plain: bytes
    zipped: bytes | None = None  # compressed on the first gzip request, once per render


@dataclass
class _Format:
    """A format some scraper asks for, and how often it asks."""

    encoder: Callable[[CollectorRegistry], bytes]
    last_request: float
    gap: float | None = None  # seconds between its last two requests


class Exposition:
    """/metrics bodies rendered off the request path, refreshed after engine changes.

    Formatting a thousand series with prometheus-client costs tens of
    milliseconds of CPU on a small host, far more than serving bytes. So a
    scrape serves the latest rendered body, and a background thread renders
    again when the daemon reports a change (a rule cycle, pause, resume,
    reload), and at least every ``max_age`` seconds, because time alone moves
    some values (a pause expiring, the budget window sliding, process CPU).

    When it re-renders follows the scrapers: once per scrape, timed to finish
    shortly before the quickest scraper's next expected request (its last
    request plus the gap between its last two). Rendering more often only
    burns CPU (it was about half the daemon's CPU at four renders per 15 s
    scrape); rendering at that moment also makes the body fresher when it is
    read. A tight loop of curl gets at most one render per ``min_spacing``;
    with no scrape pattern yet, ``max_spacing`` applies; a format nobody asked
    for in ``forget_after`` seconds is not rendered at all.

    Without the thread (tests) ``render`` renders inline once the body is
    ``max_age`` old.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        min_spacing: float = 0.5,
        max_spacing: float = 5.0,
        max_age: float = 15.0,
        forget_after: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._min_spacing = min_spacing
        self._max_spacing = max_spacing
        self._max_age = max_age
        self._forget_after = forget_after
        self._clock = clock
        self._lock = threading.Lock()  # the two tables
        self._render_lock = threading.Lock()  # one render at a time: concurrent first scrapes share it
        self._formats: dict[str, _Format] = {}
        self._bodies: dict[str, _Body] = {}
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error: str | None = None
        self._last_render = 0.0
        self.renders = 0
        self.render_seconds = 0.0  # CPU-ish cost of the last render, for the benchmark

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="metrics-render", daemon=True)
        self._thread.start()

    def changed(self) -> None:
        """The engine's state moved: render again soon. Cheap; never blocks."""
        self._changed.set()

    def close(self) -> None:
        self._stop.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def render(self, accept: str, gzip_ok: bool) -> Rendered:
        encoder, content_type = choose_encoder(accept)
        now = self._clock()
        with self._lock:
            known = self._formats.get(content_type)
            if known is None:
                self._formats[content_type] = _Format(encoder, now)
            else:
                known.gap, known.last_request = now - known.last_request, now
            body = self._bodies.get(content_type)
        background = self._thread is not None and self._thread.is_alive()
        if body is None or (not background and now - body.rendered_at >= self._max_age):
            body = self._refresh(content_type, encoder)
        if not gzip_ok:
            return Rendered(body.plain, content_type, None)
        zipped = body.zipped
        if zipped is None:
            # Level 1: nearly the ratio of level 6 on this repetitive text, at a fraction of the CPU.
            zipped = body.zipped = gzip.compress(body.plain, compresslevel=1)
        return Rendered(zipped, content_type, "gzip")

    def _refresh(self, content_type: str, encoder: Callable[[CollectorRegistry], bytes]) -> _Body:
        with self._render_lock:
            started = time.perf_counter()
            body = _Body(self._clock(), encoder(self._registry))
            self.render_seconds = time.perf_counter() - started
            self.renders += 1
            self._last_render = body.rendered_at
            with self._lock:
                self._bodies[content_type] = body
            return body

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._changed.wait(timeout=self._max_age)
            if self._stop.is_set():
                return
            wait = self.next_render_in()
            if wait > 0 and self._stop.wait(wait):
                return  # changes meanwhile are folded into this one render
            self._changed.clear()
            for content_type, encoder in self._wanted().items():
                try:
                    self._refresh(content_type, encoder)
                except Exception as exc:  # keep serving the last good body; say so once
                    text = f"{type(exc).__name__}: {exc}"
                    if text != self._last_error:
                        event(log, logging.ERROR, "rendering /metrics failed", error=text)
                    self._last_error = text
                else:
                    self._last_error = None

    def _wanted(self) -> dict[str, Callable[[CollectorRegistry], bytes]]:
        now = self._clock()
        with self._lock:
            for content_type, known in list(self._formats.items()):
                if now - known.last_request > self._forget_after:
                    del self._formats[content_type]
                    self._bodies.pop(content_type, None)
            return {content_type: known.encoder for content_type, known in self._formats.items()}

    def next_render_in(self) -> float:
        """Seconds until the next render: shortly before the quickest scraper's next request."""
        now = self._clock()
        with self._lock:
            expected = [
                (known.last_request + known.gap, known.gap) for known in self._formats.values() if known.gap
            ]
            last = self._last_render
        if not expected:
            return max(0.0, last + self._max_spacing - now)
        next_scrape, gap = min(expected)
        lead = min(max(2.0 * self.render_seconds, 0.5), gap / 2.0)
        due = next_scrape - lead
        if due <= last:  # that scrape already has its render: aim at the one after
            due += math.ceil((last - due) / gap + 1e-9) * gap
        return max(0.0, max(due, last + self._min_spacing) - now)


def render_text(registry: CollectorRegistry) -> bytes:
    """The classic text format, for the textfile and for tests."""
    return generate_latest(registry)
