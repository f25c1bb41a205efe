"""The event stream and the engine's own sinks: delivery order, broken and slow sinks, the log lines, the tallies.

No sleeping: a slow sink is one blocked on a ``threading.Event``, and every
wait on another thread is bounded and asserted.
"""

from __future__ import annotations

import logging
import threading
import time
import typing
from collections.abc import Callable

import pytest

from watchdogd.engine import events as ev
from watchdogd.engine.sinks import LINES, LogSink, Tallies
from watchdogd.model import AuditEntry, Decision, Status

WAIT = 5.0
"""Upper bound of any wait on another thread; a test that needs it has already failed."""

T0 = 1_000_000.0


def one_of_each() -> list[ev.Event]:
    """One event of every type the stream carries, with distinct timestamps to tell them apart."""
    entry = AuditEntry(T0, "r", "a", "fake.fix", Decision.RAN, "started", id=7)
    return [
        ev.SubjectChanged(T0 + 0, "r", "a", Status.OK, Status.FIRING, 95.0, "warning"),
        ev.ProbeDown(T0 + 1, "r", "fake.percent", "refused", False),
        ev.ProbeUp(T0 + 2, "r", "fake.percent"),
        ev.TargetSeen(T0 + 3, "r", "fake/main"),
        ev.TargetAbsent(T0 + 4, "r", "fake/main", "refused"),
        ev.Waiting(T0 + 5, "r", ("db",)),
        ev.GaveUp(T0 + 6, "r", 3, 3600.0),
        ev.Skipped(T0 + 7, "r", "a", "cooldown", None),
        ev.ActionRan(T0 + 8, "r", "fake.fix", "ok", True, 1, "fixed", None),
        ev.FixNotHeld(T0 + 9, "r", "a", "fake.fix", 95.0, "still above 90"),
        ev.Operator(T0 + 10, "r", "pause", {"until": T0 + 300}),
        ev.Audited(T0 + 11, "r", (entry,)),
        ev.Resumed(T0 + 12, "r", "stable"),
    ]


def numbered(n: int) -> list[ev.Event]:
    return [ev.ProbeUp(T0 + i, "r", f"p{i}") for i in range(n)]


class Recorder:
    """An inline or queued sink that keeps what it got and the thread it got it in."""

    def __init__(self, name: str = "rec") -> None:
        self.name = name
        self.got: list[ev.Event] = []
        self.threads: list[int] = []

    def handle(self, event: ev.Event) -> None:
        self.got.append(event)
        self.threads.append(threading.get_ident())


class Blocked:
    """A queued sink whose every delivery waits until the test releases it."""

    def __init__(self, name: str = "slow") -> None:
        self.name = name
        self.entered = threading.Event()
        self.release = threading.Event()
        self.got: list[ev.Event] = []
        self.thread: int | None = None

    def handle(self, event: ev.Event) -> None:
        self.thread = threading.get_ident()
        self.entered.set()
        self.release.wait(30)
        self.got.append(event)


class Raising:
    """Raises on the events ``fails`` picks, records the others."""

    def __init__(self, fails: Callable[[ev.Event], bool], name: str = "broken") -> None:
        self.name = name
        self.fails = fails
        self.got: list[ev.Event] = []

    def handle(self, event: ev.Event) -> None:
        if self.fails(event):
            raise RuntimeError("sink bug")
        self.got.append(event)


def stats_of(stream: ev.EventStream, name: str) -> ev.SinkStats:
    [stats] = [s for s in stream.stats() if s.name == name]
    return stats


def in_thread(target: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


# --------------------------------------------------------------------------- inline sinks


def test_one_of_each_covers_every_event_type() -> None:
    assert {type(e) for e in one_of_each()} == set(typing.get_args(ev.Event))


def test_inline_sinks_get_every_event_in_order_in_the_publishing_thread() -> None:
    stream = ev.EventStream()
    first, second = Recorder("first"), Recorder("second")
    stream.attach(first)
    stream.attach(second)
    events = one_of_each()
    publisher: list[int] = []

    def publish() -> None:
        publisher.append(threading.get_ident())
        for event in events:
            stream.publish(event)

    thread = in_thread(publish)
    thread.join(WAIT)
    assert not thread.is_alive()
    assert first.got == events
    assert second.got == events
    assert set(first.threads) == set(second.threads) == set(publisher)
    assert [(s.name, s.mode, s.delivered, s.failed, s.dropped, s.queued) for s in stream.stats()] == [
        ("first", "inline", len(events), 0, 0, 0),
        ("second", "inline", len(events), 0, 0, 0),
    ]


def test_publish_all_keeps_the_order() -> None:
    stream = ev.EventStream()
    rec = Recorder()
    stream.attach(rec)
    events = numbered(4)
    stream.publish_all(events)
    assert rec.got == events


def test_a_raising_sink_is_counted_and_nobody_else_misses_anything(caplog: pytest.LogCaptureFixture) -> None:
    stream = ev.EventStream()
    before, after = Recorder("before"), Recorder("after")
    events = numbered(3)
    broken = Raising(lambda e: e is events[0])
    stream.attach(before)
    stream.attach(broken)
    stream.attach(after)
    with caplog.at_level(logging.WARNING, logger="watchdogd.engine.events"):
        for event in events:
            stream.publish(event)  # never raises
    assert before.got == events
    assert after.got == events  # the sink after the broken one got the event it failed on
    assert broken.got == events[1:]  # and the broken one got the next events
    broken_stats = stats_of(stream, "broken")
    assert (broken_stats.failed, broken_stats.delivered) == (1, 2)
    assert (stats_of(stream, "after").failed, stats_of(stream, "after").delivered) == (0, 3)
    assert [r.getMessage() for r in caplog.records] == ["event sink broken failed on ProbeUp: sink bug"]


def test_a_raising_queued_sink_is_counted_and_keeps_draining() -> None:
    stream = ev.EventStream()
    events = numbered(4)
    broken = Raising(lambda e: e in (events[0], events[2]))
    stream.attach(broken, queued=True)
    for event in events:
        stream.publish(event)
    stream.close(timeout=WAIT)
    assert broken.got == [events[1], events[3]]
    stats = stats_of(stream, "broken")
    assert (stats.mode, stats.delivered, stats.failed, stats.dropped, stats.queued) == ("queued", 2, 2, 0, 0)


# --------------------------------------------------------------------------- queued sinks


def test_a_blocked_queued_sink_never_delays_publish_and_catches_up_in_order() -> None:
    stream = ev.EventStream()
    slow, inline = Blocked(), Recorder()
    stream.attach(slow, queued=True)
    stream.attach(inline)
    events = numbered(6)
    try:
        publisher = in_thread(lambda: stream.publish_all(events))
        publisher.join(WAIT)
        assert not publisher.is_alive(), "publish waited on a blocked queued sink"
        # publish returned for all six while the sink still holds the first: nothing waited on it
        assert slow.entered.wait(WAIT)
        assert slow.got == []
        assert inline.got == events
        stats = stats_of(stream, "slow")
        assert (stats.mode, stats.queued, stats.delivered, stats.dropped) == ("queued", 5, 0, 0)
    finally:
        slow.release.set()
    stream.close(timeout=WAIT)
    assert slow.got == events
    assert slow.thread is not None and slow.thread != threading.get_ident()
    stats = stats_of(stream, "slow")
    assert (stats.queued, stats.delivered, stats.failed, stats.dropped) == (0, 6, 0, 0)


def test_a_full_queue_drops_the_oldest_and_counts_them() -> None:
    stream = ev.EventStream()
    slow = Blocked()
    stream.attach(slow, queued=True, queue_size=2)
    first, *burst = numbered(6)
    try:
        stream.publish(first)
        assert slow.entered.wait(WAIT)  # the sink's thread holds ``first``; the queue is empty again
        publisher = in_thread(lambda: stream.publish_all(burst))  # five into a queue of two: the three oldest go
        publisher.join(WAIT)
        assert not publisher.is_alive(), "publish waited for room in a full queue"
        stats = stats_of(stream, "slow")
        assert (stats.queued, stats.dropped, stats.delivered) == (2, 3, 0)
    finally:
        slow.release.set()
    stream.close(timeout=WAIT)
    assert slow.got == [first, *burst[-2:]]
    stats = stats_of(stream, "slow")
    assert (stats.queued, stats.dropped, stats.delivered) == (0, 3, 3)


@pytest.mark.parametrize("backlog", [0, 2], ids=["queue not full", "queue full"])
def test_close_gives_up_on_a_stuck_sink_after_its_timeout(backlog: int) -> None:
    """Both ways out of ``_Queued.close``: the stop marker queued then a join that times out, or no room for it."""
    stream = ev.EventStream()
    stuck = Blocked("stuck")
    stream.attach(stuck, queued=True, queue_size=2)
    first, *rest = numbered(1 + backlog)
    try:
        stream.publish(first)
        assert stuck.entered.wait(WAIT)
        for event in rest:
            stream.publish(event)
        begun = time.monotonic()
        closer = in_thread(lambda: stream.close(timeout=0.2))
        closer.join(WAIT)
        assert not closer.is_alive(), "close() hung on a stuck sink"
        assert time.monotonic() - begun < 2.0
        assert stuck.got == []  # it really was stuck all along
    finally:
        stuck.release.set()
    stream.close(timeout=WAIT)  # released, it drains and ends


# --------------------------------------------------------------------------- LogSink

# (event, level, message): the lines the daemon logged before the event stream, from the old engine's calls.
BY = {"by": {"uid": 0, "pid": 42}}
LOG_LINES: list[tuple[ev.Event, int, str]] = [
    (ev.SubjectChanged(T0, "r", "a", Status.PENDING, Status.FIRING, 95.0, "warning"), logging.WARNING, "firing"),
    (ev.SubjectChanged(T0, "r", "a", Status.OK, Status.PENDING, 95.0, "warning"), logging.INFO, "pending"),
    (ev.SubjectChanged(T0, "r", "a", Status.FIRING, Status.OK, 5.0, "warning"), logging.INFO, "resolved"),
    (ev.ProbeDown(T0, "r", "fake.up", "refused", True), logging.ERROR, "target unreachable"),
    (ev.ProbeDown(T0, "r", "fake.percent", "refused", False), logging.WARNING, "probe down"),
    (ev.ProbeUp(T0, "r", "fake.percent"), logging.INFO, "probe up again"),
    (ev.TargetSeen(T0, "r", "fake/main"), logging.INFO, "target answered for the first time"),
    (ev.TargetAbsent(T0, "r", "fake/main", "refused"), logging.INFO, "target absent (never answered on this host)"),
    (ev.Waiting(T0, "r", ("db", "net")), logging.INFO, "waiting on dependency"),
    (ev.Waiting(T0, "r", ()), logging.INFO, "dependency clear, probing again"),
    (ev.GaveUp(T0, "r", 3, 3600.0), logging.ERROR, "rule gave up: too many actions, alerting only"),
    (ev.Resumed(T0, "r", "stable"), logging.INFO, "rule acting again after giving up"),
    (ev.Resumed(T0, "r", "operator"), logging.WARNING, "rule acting again after giving up"),
    (ev.Skipped(T0, "r", "a", "cooldown", "other"), logging.INFO, "action skipped"),
    (ev.ActionRan(T0, "r", "fake.fix", "ok", True, 1, "fixed", None), logging.INFO, "action done"),
    (ev.ActionRan(T0, "r", "fake.fix", "failed", False, 1, "", "boom"), logging.ERROR, "action failed"),
    (ev.ActionRan(T0, "r", "fake.fix", "dry_run", True, 2, "would fix", None), logging.INFO, "action would run"),
    (ev.ActionRan(T0, "r", "fake.fix", "dry_run", False, 1, "", "unreachable"), logging.ERROR, "action would run"),
    (ev.FixNotHeld(T0, "r", "a", "fake.fix", 95.0, "still above 90"), logging.WARNING, "fix did not hold"),
    (ev.Operator(T0, "r", "pause", {"until": T0 + 300, **BY}), logging.WARNING, "rule paused"),
    (ev.Operator(T0, "r", "resume", {"reset": True, "gave_up_at": None, **BY}), logging.WARNING, "rule resumed"),
]

# The structured fields of each line, as the old engine passed them (JSON logs show them by name).
LOG_FIELDS: dict[type[typing.Any], set[str]] = {
    ev.SubjectChanged: {"rule", "subject", "value", "severity"},
    ev.ProbeDown: {"rule", "probe", "error"},
    ev.ProbeUp: {"rule", "probe"},
    ev.TargetSeen: {"rule", "target"},
    ev.TargetAbsent: {"rule", "target", "error"},
    ev.GaveUp: {"rule", "max_actions", "per"},
    ev.Resumed: {"rule", "by"},
    ev.Skipped: {"rule", "subject", "reason", "held_by"},
    ev.ActionRan: {"rule", "action", "subjects", "detail", "error"},
    ev.FixNotHeld: {"rule", "subject", "action", "value", "reason"},
}


def test_every_logged_event_type_is_in_the_table_and_only_audited_is_silent() -> None:
    assert set(LINES) == set(typing.get_args(ev.Event)) - {ev.Audited}
    assert {type(event) for event, _, _ in LOG_LINES} == set(LINES)


@pytest.mark.parametrize(
    ("event", "level", "message"), LOG_LINES, ids=[f"{type(e).__name__}-{m}" for e, _, m in LOG_LINES]
)
def test_log_sink_writes_the_line_the_daemon_always_wrote(
    caplog: pytest.LogCaptureFixture, event: ev.Event, level: int, message: str
) -> None:
    with caplog.at_level(logging.DEBUG, logger="watchdogd.engine"):
        LogSink().handle(event)
    [record] = caplog.records
    assert (record.name, record.levelno, record.getMessage()) == ("watchdogd.engine", level, message)
    fields = vars(record)["fields"]
    assert fields["rule"] == "r"
    if type(event) in LOG_FIELDS:
        assert set(fields) == LOG_FIELDS[type(event)]


def test_log_sink_fields_carry_the_values() -> None:
    line = LINES[ev.ActionRan]
    level, message, fields = line(ev.ActionRan(T0, "r", "fake.fix", "failed", False, 3, "half", "exit 1"))
    assert (level, message) == (logging.ERROR, "action failed")
    assert fields == {"rule": "r", "action": "fake.fix", "subjects": 3, "detail": "half", "error": "exit 1"}
    _, _, fields = LINES[ev.Waiting](ev.Waiting(T0, "r", ("db", "net")))
    assert fields == {"rule": "r", "on": "db,net"}


def test_operator_lines_say_who_and_what() -> None:
    _, _, paused = LINES[ev.Operator](ev.Operator(T0, "r", "pause", {"until": T0 + 300, **BY}))
    assert paused == {"rule": "r", "until": T0 + 300, "uid": 0, "pid": 42}
    _, _, resumed = LINES[ev.Operator](ev.Operator(T0, "r", "resume", {"reset": False, "gave_up_at": T0}))
    assert resumed == {"rule": "r", "reset": False, "still_gave_up": True, "uid": None, "pid": None}


def test_audited_writes_no_log_line(caplog: pytest.LogCaptureFixture) -> None:
    entry = AuditEntry(T0, "r", "a", "fake.fix", Decision.RAN, "ok", id=1)
    with caplog.at_level(logging.DEBUG):
        LogSink().handle(ev.Audited(T0, "r", (entry,)))
    assert caplog.records == []


# --------------------------------------------------------------------------- Tallies


def entry(rule: str, action: str, decision: Decision, result: str, ts: float, id_: int) -> AuditEntry:
    return AuditEntry(ts, rule, "a", action, decision, result, id=id_)


def test_tallies_count_actions_by_rule_action_and_result() -> None:
    tallies = Tallies()
    for result, ok in (("ok", True), ("ok", True), ("failed", False), ("dry_run", True)):
        tallies.handle(ev.ActionRan(T0, "r", "fake.fix", result, ok, 1, "", None))
    tallies.handle(ev.ActionRan(T0, "q", "fake.fix", "ok", True, 1, "", None))
    tallies.handle(ev.ActionRan(T0, "r", "other.fix", "ok", True, 1, "", None))
    assert tallies.actions_total() == {
        ("r", "fake.fix", "ok"): 2,
        ("r", "fake.fix", "failed"): 1,
        ("r", "fake.fix", "dry_run"): 1,
        ("q", "fake.fix", "ok"): 1,
        ("r", "other.fix", "ok"): 1,
    }


def test_tallies_count_transitions_by_rule_and_new_state() -> None:
    tallies = Tallies()
    walk = [(Status.OK, Status.PENDING), (Status.PENDING, Status.FIRING), (Status.FIRING, Status.OK)]
    for old, new in [*walk, (Status.OK, Status.FIRING)]:
        tallies.handle(ev.SubjectChanged(T0, "r", "a", old, new, 1.0, "warning"))
    tallies.handle(ev.SubjectChanged(T0, "q", "a", Status.OK, Status.PENDING, 1.0, "warning"))
    assert tallies.transitions_total() == {
        ("r", "pending"): 1,
        ("r", "firing"): 2,
        ("r", "resolved"): 1,
        ("q", "pending"): 1,
    }


def test_tallies_keep_the_newest_acted_row_per_rule_and_action_and_ignore_skips() -> None:
    seeded = entry("r", "fake.fix", Decision.RAN, "ok", T0 - 100, 1)
    untouched = entry("q", "fake.fix", Decision.DRY_RUN, "dry_run", T0 - 50, 2)
    tallies = Tallies({("r", "fake.fix"): seeded, ("q", "fake.fix"): untouched})
    assert tallies.last_actions() == {("r", "fake.fix"): seeded, ("q", "fake.fix"): untouched}

    started = entry("r", "fake.fix", Decision.RAN, "started", T0, 3)
    tallies.handle(ev.Audited(T0, "r", (started,)))
    assert tallies.last_actions()[("r", "fake.fix")] == started
    finished = entry("r", "fake.fix", Decision.RAN, "ok", T0, 3)
    tallies.handle(ev.Audited(T0 + 1, "r", (finished,)))
    assert tallies.last_actions()[("r", "fake.fix")] == finished

    skips = tuple(
        entry("r", "fake.fix", decision, "n/a", T0 + 10, 10 + n)
        for n, decision in enumerate(d for d in Decision if d.value.startswith("skipped_") or d is Decision.GAVE_UP)
    )
    operator = entry("r", "operator.pause", Decision.OPERATOR, "ok", T0 + 11, 20)
    tallies.handle(ev.Audited(T0 + 11, "r", (*skips, operator)))
    assert tallies.last_actions() == {("r", "fake.fix"): finished, ("q", "fake.fix"): untouched}

    dry = entry("r", "fake.fix", Decision.DRY_RUN, "dry_run", T0 + 20, 21)
    tallies.handle(ev.Audited(T0 + 20, "r", (dry,)))
    assert tallies.last_actions()[("r", "fake.fix")] == dry


def test_tallies_count_the_rule_s_own_transitions_and_keep_its_latest_change() -> None:
    tallies = Tallies()
    tallies.handle(ev.ProbeDown(T0, "r", "fake.up", "refused", True))
    tallies.handle(ev.ProbeUp(T0 + 1, "r", "fake.up"))
    tallies.handle(ev.GaveUp(T0 + 2, "r", 3, 3600.0))
    tallies.handle(ev.Resumed(T0 + 3, "r", "stable"))
    tallies.handle(ev.SubjectChanged(T0 + 4, "q", "a", Status.OK, Status.FIRING, 95.0, "critical"))
    assert tallies.transitions_total() == {
        ("r", "down"): 1, ("r", "back"): 1, ("r", "gave_up"): 1, ("r", "resumed"): 1, ("q", "firing"): 1,
    }
    changes = tallies.last_changes()
    assert (changes["r"].kind, changes["r"].ts, changes["r"].detail) == ("resumed", T0 + 3, {"by": "stable"})
    assert (changes["q"].kind, changes["q"].subject, changes["q"].value) == ("firing", "a", 95.0)


def test_tallies_ignore_events_they_do_not_count() -> None:
    tallies = Tallies()
    counted = ev.ActionRan | ev.SubjectChanged | ev.Audited | ev.ProbeDown | ev.ProbeUp | ev.GaveUp | ev.Resumed
    for event in one_of_each():
        if not isinstance(event, counted):
            tallies.handle(event)
    assert (tallies.actions_total(), tallies.transitions_total(), tallies.last_actions()) == ({}, {}, {})
    assert tallies.last_changes() == {}
