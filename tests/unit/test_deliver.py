"""The deliverer: outbox rows sent, retried with backoff, given up, and open alerts reminded (real store).

The transport here is a scripted stand-in (the transports have their own tests against real receivers);
the deliverer and the outbox are what is under test. Driven by ``flush`` and a hand clock: no threads,
no sleeping.
"""

from __future__ import annotations

from pathlib import Path

from tests.unit.test_engine import Clock
from watchdogd.engine.outbox import OpenAlert, Outbox, Queued
from watchdogd.engine.state import StateStore
from watchdogd.notifications.deliver import Deliverer
from watchdogd.notifications.message import Notification
from watchdogd.notifications.transports import DeliveryError

T0 = 1_000_000.0


def note(key: str = "k1", kind: str = "firing") -> Notification:
    return Notification(key=key, kind=kind, rule="r", subject="a", severity="warning", host="h", summary="r: a",
                        created=T0, starts_at=T0)


class Scripted:
    """Answers each send with the next outcome: None (delivered) or a DeliveryError."""

    def __init__(self, name: str, outcomes: list[DeliveryError | None], resend: float | None = None) -> None:
        self.name = name
        self.outcomes = outcomes
        self.resend = resend
        self.sent: list[Notification] = []

    def send(self, notification: Notification) -> None:
        self.sent.append(notification)
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome


def rig(tmp_path: Path, transport: Scripted, give_up_after: float = 3600.0) -> tuple[Deliverer, Outbox, Clock]:
    clock = Clock(T0)
    outbox = Outbox(StateStore(tmp_path / "state.db", clock))
    deliverer = Deliverer(outbox, lambda: {transport.name: transport}, clock, lambda: give_up_after)
    return deliverer, outbox, clock


def put(outbox: Outbox, sink: str, n: Notification, now: float = T0) -> None:
    import json  # noqa: PLC0415

    outbox.put([Queued(sink, n.key, json.dumps(n.to_json()))], now)


def test_delivered_once_and_never_again(tmp_path: Path) -> None:
    hook = Scripted("hook", [])
    deliverer, outbox, _ = rig(tmp_path, hook)
    put(outbox, "hook", note())
    deliverer.flush()
    deliverer.flush()
    assert [n.key for n in hook.sent] == ["k1"]
    assert outbox.backlog() == []
    [stats] = deliverer.stats()
    assert (stats.sink, stats.delivered, stats.retried, stats.failed, stats.pending) == ("hook", 1, 0, 0, 0)


def test_a_retryable_failure_backs_off_then_delivers(tmp_path: Path) -> None:
    hook = Scripted("hook", [DeliveryError("503", retry=True), DeliveryError("503", retry=True), None])
    deliverer, outbox, clock = rig(tmp_path, hook)
    put(outbox, "hook", note())
    deliverer.flush()  # attempt 1 fails: next in 1 s
    assert outbox.next_due() == T0 + 1
    deliverer.flush()  # not due yet: nothing sent
    assert len(hook.sent) == 1
    clock.now = T0 + 1
    deliverer.flush()  # attempt 2 fails: next in 2 s
    assert outbox.next_due() == T0 + 3
    clock.now = T0 + 3
    deliverer.flush()
    assert len(hook.sent) == 3
    [stats] = deliverer.stats()
    assert (stats.delivered, stats.retried, stats.failed, stats.pending) == (1, 2, 0, 0)


def test_a_refused_notification_is_given_up_at_once(tmp_path: Path) -> None:
    hook = Scripted("hook", [DeliveryError("400 bad request", retry=False)])
    deliverer, outbox, _ = rig(tmp_path, hook)
    put(outbox, "hook", note())
    deliverer.flush()
    assert outbox.next_due() is None
    [stats] = deliverer.stats()
    assert (stats.delivered, stats.failed, stats.pending) == (0, 1, 0)


def test_retries_stop_after_give_up_after(tmp_path: Path) -> None:
    hook = Scripted("hook", [DeliveryError("refused", retry=True)] * 100)
    deliverer, outbox, clock = rig(tmp_path, hook, give_up_after=10.0)
    put(outbox, "hook", note())
    while (due := outbox.next_due()) is not None:
        clock.now = max(clock.now, due)
        deliverer.flush()
    assert clock.now - T0 >= 10.0 and len(hook.sent) <= 6  # 1 + 2 + 4 + 8 > 10: five attempts at most
    [stats] = deliverer.stats()
    assert (stats.failed, stats.pending) == (1, 0)


def test_backlog_counts_pending_and_the_oldest_age(tmp_path: Path) -> None:
    hook = Scripted("hook", [DeliveryError("down", retry=True)] * 10)
    deliverer, outbox, clock = rig(tmp_path, hook)
    put(outbox, "hook", note("k1"), T0)
    put(outbox, "hook", note("k2"), T0 + 30)
    clock.now = T0 + 60
    [stats] = deliverer.stats()
    assert (stats.pending, stats.oldest_age) == (2, 60.0)


def test_a_sink_removed_by_a_reload_gives_its_rows_up(tmp_path: Path) -> None:
    hook = Scripted("hook", [])
    deliverer, outbox, _ = rig(tmp_path, hook)
    put(outbox, "gone", note())
    deliverer.flush()
    assert hook.sent == [] and outbox.next_due() is None
    assert {s.sink: s.failed for s in deliverer.stats()} == {"gone": 1, "hook": 0}


def test_open_alerts_are_reminded_after_a_restart_and_then_every_resend(tmp_path: Path) -> None:
    import json  # noqa: PLC0415

    am = Scripted("am", [], resend=60.0)
    deliverer, outbox, clock = rig(tmp_path, am)
    body = json.dumps(note().to_json())
    outbox.put([], T0, opened=[OpenAlert("am", "r", "a", body, T0)])
    deliverer._remind()  # first pass after a (re)start: the receiver may have lost it
    assert len(am.sent) == 1
    clock.now = T0 + 30
    deliverer._remind()
    assert len(am.sent) == 1
    clock.now = T0 + 60
    deliverer._remind()
    assert len(am.sent) == 2
    outbox.put([], clock.now, closed=[("am", "r", "a")])
    clock.now = T0 + 600
    deliverer._remind()
    assert len(am.sent) == 2
    assert {s.sink: s.reminders for s in deliverer.stats()} == {"am": 2}


def test_retention_prunes_settled_deliveries_only(tmp_path: Path) -> None:
    hook = Scripted("hook", [None, DeliveryError("400", retry=False)])
    deliverer, outbox, clock = rig(tmp_path, hook)
    put(outbox, "hook", note("delivered"), T0)
    put(outbox, "hook", note("refused"), T0)
    deliverer.flush()
    put(outbox, "hook", note("waiting"), T0)  # not yet attempted: never pruned, however old
    clock.now = T0 + 10
    assert outbox.prune(T0 + 5) == 2
    assert [row.key for row in outbox.due(float("inf"))] == ["waiting"]
