"""Everything that happens to a rule, as typed events delivered to sinks.

The runner and the gate publish; they never log, count or notify by
themselves. What the log says, what /metrics counts and (next) what is
notified or captured as evidence are sinks, so a new consumer is a new sink
and no change to the safety path.

Two kinds of sink. An *inline* sink runs in the publishing thread, in
order: it must be cheap and in memory (the log line, a counter), because
its work is part of the rule's run. A *queued* sink gets its own bounded
queue and thread: a slow or hung one (a webhook, a disk) never delays a
rule; when its queue is full the oldest event is dropped and counted. A
sink that raises is counted and the next event goes on. Durable facts are
not at the mercy of sinks: the gate writes the audit rows itself, in its
write-ahead transaction, and publishes them after they are on disk.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from watchdogd.model import AuditEntry, Status

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000
"""Events a queued sink may fall behind by before the oldest is dropped."""


@dataclass(frozen=True, slots=True)
class SubjectChanged:
    """A subject moved between ok, pending and firing."""

    ts: float
    rule: str
    subject: str
    old: Status
    new: Status
    value: float | None
    severity: str
    evidence: int | None = None  # taken as it started firing (engine/evidence.py)


@dataclass(frozen=True, slots=True)
class ProbeDown:
    """The rule's probe failed after it had answered (or on its first run). ``fires``: on_down is fire."""

    ts: float
    rule: str
    probe: str
    error: str | None
    fires: bool


@dataclass(frozen=True, slots=True)
class ProbeUp:
    ts: float
    rule: str
    probe: str


@dataclass(frozen=True, slots=True)
class TargetSeen:
    """An optional target answered on this host for the first time: from now on a failure is an outage."""

    ts: float
    rule: str
    target: str


@dataclass(frozen=True, slots=True)
class TargetAbsent:
    """An optional target that never answered on this host failed again: not installed, not an outage."""

    ts: float
    rule: str
    target: str
    error: str | None


@dataclass(frozen=True, slots=True)
class Waiting:
    """The rules this one depends on changed trouble: ``on`` empty means clear again."""

    ts: float
    rule: str
    on: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GaveUp:
    ts: float
    rule: str
    max_actions: int | None
    per: float


@dataclass(frozen=True, slots=True)
class Resumed:
    """A rule that gave up acts again: the condition stayed clear (``by`` stable) or an operator reset it."""

    ts: float
    rule: str
    by: str  # stable, operator


@dataclass(frozen=True, slots=True)
class Skipped:
    """An action was held back for ``reason`` (logged once per change of reason, like its audit row)."""

    ts: float
    rule: str
    subject: str
    reason: str
    held_by: str | None


@dataclass(frozen=True, slots=True)
class ActionRan:
    """One action ran (or would have, in dry-run) over a batch of subjects."""

    ts: float
    rule: str
    action: str
    result: str  # ok, failed, dry_run
    ok: bool  # the action's own verdict, also for a dry run (a dry run can fail: target unreachable)
    subjects: int
    detail: str
    error: str | None


@dataclass(frozen=True, slots=True)
class FixNotHeld:
    ts: float
    rule: str
    subject: str
    action: str
    value: float | None
    reason: str
    since: float | None = None  # when the subject started firing, if it still does
    evidence: int | None = None  # taken before the action ran


@dataclass(frozen=True, slots=True)
class Operator:
    """An operator paused or resumed a rule (``what``), with who asked and what it changed."""

    ts: float
    rule: str
    what: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Audited:
    """Audit rows as they are on disk: written (skipped, started), finished, or verified."""

    ts: float
    rule: str
    entries: tuple[AuditEntry, ...]


Event = (
    SubjectChanged
    | ProbeDown
    | ProbeUp
    | TargetSeen
    | TargetAbsent
    | Waiting
    | GaveUp
    | Resumed
    | Skipped
    | ActionRan
    | FixNotHeld
    | Operator
    | Audited
)


class Sink(Protocol):
    name: str

    def handle(self, event: Event) -> None: ...


@dataclass(frozen=True, slots=True)
class SinkStats:
    """One sink's delivery counts since start (``watchdogd_event_sink_events_total``)."""

    name: str
    mode: str  # inline, queued
    delivered: int
    failed: int
    dropped: int
    queued: int


class _Queued:
    """A sink behind its own bounded queue and thread."""

    def __init__(self, sink: Sink, size: int, counts: Counter[tuple[str, str]], lock: threading.Lock) -> None:
        self.sink = sink
        self.queue: queue.Queue[Event | None] = queue.Queue(maxsize=size)
        self._counts, self._lock = counts, lock
        self.thread = threading.Thread(target=self._drain, name=f"sink-{sink.name}", daemon=True)
        self.thread.start()

    def put(self, event: Event) -> None:
        while True:
            try:
                self.queue.put_nowait(event)
                return
            except queue.Full:
                try:
                    self.queue.get_nowait()  # the oldest goes: the newest says most about now
                except queue.Empty:
                    continue
                with self._lock:
                    self._counts[(self.sink.name, "dropped")] += 1

    def _drain(self) -> None:
        while (event := self.queue.get()) is not None:
            _deliver(self.sink, event, self._counts, self._lock)

    def close(self, timeout: float) -> None:
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            return  # stuck: it is a daemon thread and dies with the process
        self.thread.join(timeout)


def _deliver(sink: Sink, event: Event, counts: Counter[tuple[str, str]], lock: threading.Lock) -> None:
    try:
        sink.handle(event)
    except Exception as exc:  # a broken sink is counted, never a broken rule
        with lock:
            counts[(sink.name, "failed")] += 1
        log.warning("event sink %s failed on %s: %s", sink.name, type(event).__name__, exc)
        return
    with lock:
        counts[(sink.name, "delivered")] += 1


class EventStream:
    """Sinks attached once at start; ``publish`` is safe from any thread."""

    def __init__(self) -> None:
        self._inline: list[Sink] = []
        self._queued: list[_Queued] = []
        self._counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def attach(self, sink: Sink, *, queued: bool = False, queue_size: int = QUEUE_SIZE) -> None:
        if queued:
            self._queued.append(_Queued(sink, queue_size, self._counts, self._lock))
        else:
            self._inline.append(sink)

    def publish(self, event: Event) -> None:
        for sink in self._inline:
            _deliver(sink, event, self._counts, self._lock)
        for queued in self._queued:
            queued.put(event)

    def publish_all(self, events: Sequence[Event]) -> None:
        for event in events:
            self.publish(event)

    def stats(self) -> tuple[SinkStats, ...]:
        with self._lock:
            counts = dict(self._counts)
        modes = [(sink, "inline", 0) for sink in self._inline]
        modes += [(q.sink, "queued", q.queue.qsize()) for q in self._queued]
        return tuple(
            SinkStats(
                name=sink.name,
                mode=mode,
                delivered=counts.get((sink.name, "delivered"), 0),
                failed=counts.get((sink.name, "failed"), 0),
                dropped=counts.get((sink.name, "dropped"), 0),
                queued=waiting,
            )
            for sink, mode, waiting in modes
        )

    def close(self, timeout: float = 2.0) -> None:
        """Let queued sinks finish what they hold, each for at most ``timeout`` seconds."""
        for queued in self._queued:
            queued.close(timeout)
