"""Maintenance mode (``watchdogctl pause --all``): guard, engine, control, watchdogctl, metrics, pager.

Real SQLite stores and hand-driven clocks; the daemon end to end is in
tests/integration/interfaces/test_maintenance.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.test_control import FakeDaemon, ask
from tests.unit.test_engine import BASE, Clock, make_engine
from tests.unit.test_exporter import NOW, rule, snapshot
from tests.unit.test_pager import Rig
from watchdogd.core import guard as guards
from watchdogd.engine.engine import HOST_RULE, MAINTENANCE_KEY
from watchdogd.faces import cli, reason
from watchdogd.faces.control import Dispatcher, Handlers, Peer, status_document
from watchdogd.faces.exporter import build_registry, render_text
from watchdogd.model import Decision, RuleStatus, Status
from watchdogd.notifications.pager import Pager

ALICE = {"uid": 1001, "pid": 4242, "user": "alice"}


def policy() -> guards.GuardPolicy:
    return guards.GuardPolicy(
        cooldown=600.0, max_cooldown=3600.0, stable_for=600.0, max_actions=3, max_actions_per=3600.0, dry_run=False
    )


# --------------------------------------------------------------------------- guard (pure)


def test_maintenance_skips_the_whole_batch_before_any_other_reason() -> None:
    paused_and_gave_up = guards.RuleGuard(paused_until=math.inf, gave_up_at=1.0)
    verdict = guards.decide(
        paused_and_gave_up, ["a", "b"], 100.0, policy(), budget_closed=Decision.SKIPPED_BUDGET, in_grace=True,
        max_per_run=5, maintenance=True,
    )
    assert verdict.allowed == ()
    assert verdict.skipped == (("a", Decision.SKIPPED_MAINTENANCE), ("b", Decision.SKIPPED_MAINTENANCE))
    assert not verdict.gave_up_now and verdict.guard is paused_and_gave_up
    # Without maintenance the rule's own reason shows again.
    after = guards.decide(paused_and_gave_up, ["a"], 100.0, policy(), budget_closed=None, in_grace=False,
                          max_per_run=5)
    assert after.skipped == (("a", Decision.SKIPPED_PAUSED),)


def test_maintenance_ends_at_its_expiry_and_an_extension_keeps_its_start() -> None:
    first = guards.start_maintenance(None, 100.0, 400.0, by=ALICE, reason="kernel")
    assert (first.since, first.until, first.changed_at) == (100.0, 400.0, 100.0)
    assert guards.in_maintenance(first, 399.9) and not guards.in_maintenance(first, 400.0)
    assert not guards.in_maintenance(None, 0.0)
    longer = guards.start_maintenance(first, 300.0, math.inf, by={"uid": 0}, reason=None)
    assert (longer.since, longer.until, longer.by, longer.reason) == (100.0, math.inf, {"uid": 0}, None)
    after_expiry = guards.start_maintenance(first, 500.0, 900.0)
    assert after_expiry.since == 500.0  # the old one had ended: a new maintenance begins


def test_maintenance_round_trips_through_strict_json_including_no_end() -> None:
    m = guards.start_maintenance(None, 100.0, math.inf, by=ALICE, reason="db failover")
    stored = json.loads(json.dumps(guards.maintenance_to_dict(m), allow_nan=False))
    assert guards.maintenance_from_dict(stored) == m
    assert guards.maintenance_from_dict(json.loads(json.dumps(guards.maintenance_to_dict(None)))) is None
    assert guards.maintenance_from_dict(None) is None
    assert guards.maintenance_from_dict({"maintenance": "garbage"}) is None


# --------------------------------------------------------------------------- engine (real store)


def test_maintenance_skips_actions_once_per_subject_and_ends_by_itself(tmp_path: Path) -> None:
    clock = Clock()
    engine, _probe, action, store = make_engine(tmp_path, BASE, clock)
    action.fix_to = None
    start = clock.now
    engine.pause_all(start + 300, reason="kernel upgrade", by=ALICE)
    for _ in range(3):
        report = engine.run_rule("r")
        clock.now += 60
    assert action.calls == [] and report.status is RuleStatus.FIRING  # states go on
    skips = [e for e in store.history(rule="r") if e.decision is Decision.SKIPPED_MAINTENANCE]
    assert len(skips) == 1, "a repeated skip is audited once"
    assert skips[0].detail["maintenance"] == {
        "since": start, "until": start + 300, "by": ALICE, "reason": "kernel upgrade",
    }
    snap = engine.snapshot()
    assert snap.maintenance is not None and snap.maintenance.reason == "kernel upgrade"

    clock.now = start + 301
    engine.run_rule("r")
    assert len(action.calls) == 1, "the action runs again as soon as the maintenance has expired"
    assert engine.snapshot().maintenance is None
    host = store.history(rule=HOST_RULE)
    assert [(e.action, e.decision, e.ts) for e in host] == [
        ("maintenance.expired", Decision.OPERATOR, start + 300),  # dated at the expiry itself
        ("operator.pause_all", Decision.OPERATOR, start),
    ]
    assert host[0].detail["ended"] == "expired" and host[1].detail["by"] == ALICE
    changes = store.transitions(rule=HOST_RULE)
    assert [c.kind for c in changes] == ["maintenance_end", "maintenance_start"]
    assert changes[1].detail["reason"] == "kernel upgrade"
    # The action row comes after the end in the history, as it happened.
    assert store.history(limit=1)[0].decision is Decision.RAN


def test_a_second_maintenance_is_audited_afresh_after_the_rule_acted(tmp_path: Path) -> None:
    clock = Clock()
    engine, _probe, action, store = make_engine(tmp_path, BASE.replace("cooldown: 10m", "cooldown: 1s"), clock)
    action.fix_to = None
    engine.pause_all(clock.now + 10)
    engine.run_rule("r")
    clock.now += 20
    engine.run_rule("r")  # acts
    clock.now += 20
    engine.pause_all(math.inf)
    engine.run_rule("r")
    decisions = [e.decision for e in store.history(rule="r")]
    assert decisions.count(Decision.SKIPPED_MAINTENANCE) == 2 and len(action.calls) == 1


def test_maintenance_survives_a_new_engine_and_an_expiry_while_down_is_recorded(tmp_path: Path) -> None:
    clock = Clock()
    engine, _probe, action, store = make_engine(tmp_path, BASE, clock)
    engine.pause_all(clock.now + 120, reason="r1", by=ALICE)
    engine.close()
    store.close()
    again, _probe2, action2, store2 = make_engine(tmp_path, BASE, clock)
    assert again.snapshot().maintenance is not None
    again.run_rule("r")
    assert action2.calls == []
    again.close()
    store2.close()
    clock.now += 600  # expired while no daemon ran
    third, _probe3, action3, store3 = make_engine(tmp_path, BASE, clock)
    assert third.snapshot().maintenance is None
    third.run_rule("r")
    assert len(action3.calls) == 1
    assert [c.kind for c in store3.transitions(rule=HOST_RULE)] == ["maintenance_end", "maintenance_start"]
    assert store3.load_kv(MAINTENANCE_KEY) == {"version": 1}


def test_pause_all_replaces_and_resume_all_ends_and_says_when_there_was_none(tmp_path: Path) -> None:
    clock = Clock()
    engine, _probe, action, store = make_engine(tmp_path, BASE, clock)
    assert engine.resume_all(by=ALICE) == {"ended": None}
    assert store.history(rule=HOST_RULE) == []  # nothing changed, nothing recorded
    first = engine.pause_all(math.inf, reason="one")
    assert first["replaced"] is None
    clock.now += 30
    second = engine.pause_all(clock.now + 60, reason="two", by=ALICE)
    assert second["replaced"] == first["maintenance"]
    new = second["maintenance"]
    assert new is not None and new.since == clock.now - 30 and new.reason == "two"
    ended = engine.resume_all(by={"uid": 0, "pid": 1})["ended"]
    assert ended == new
    engine.run_rule("r")
    assert len(action.calls) == 1
    rows = store.history(rule=HOST_RULE)
    assert [e.action for e in rows] == ["operator.resume_all", "operator.pause_all", "operator.pause_all"]
    assert rows[0].detail["by"] == {"uid": 0, "pid": 1} and rows[0].detail["maintenance"]["reason"] == "two"
    assert rows[1].detail["replaced"]["reason"] == "one"
    kinds = [c.kind for c in store.transitions(rule=HOST_RULE)]
    assert kinds == ["maintenance_end", "maintenance_change", "maintenance_start"]


def test_a_rule_pause_is_independent_of_maintenance(tmp_path: Path) -> None:
    clock = Clock()
    engine, _probe, action, store = make_engine(tmp_path, BASE, clock)
    engine.pause("r", math.inf)
    engine.pause_all(math.inf)
    engine.run_rule("r")
    engine.resume_all()
    engine.run_rule("r")
    assert action.calls == []  # the rule's own pause still holds
    assert [e.decision for e in store.history(rule="r") if e.action != "operator.pause"] == [
        Decision.SKIPPED_PAUSED, Decision.SKIPPED_MAINTENANCE,
    ]
    engine.resume("r")
    engine.run_rule("r")
    assert len(action.calls) == 1


def test_a_failed_write_leaves_maintenance_as_the_disk_has_it(tmp_path: Path) -> None:
    clock = Clock()
    engine, _probe, _action, store = make_engine(tmp_path, BASE, clock)

    def broken(*args: Any, **kwargs: Any) -> list[int]:
        raise OSError("disk full")

    store.save_kv_and_history = broken  # type: ignore[method-assign]
    with pytest.raises(OSError):
        engine.pause_all(math.inf)
    assert engine.snapshot().maintenance is None


# --------------------------------------------------------------------------- control protocol


def handlers_with_maintenance(calls: list[tuple[Any, ...]]) -> Handlers:
    current: list[guards.Maintenance | None] = [None]

    def pause_all(until: float, reason: str | None, by: Any) -> dict[str, Any]:
        calls.append(("pause_all", until, reason, by))
        before = current[0]
        current[0] = guards.start_maintenance(before, NOW, until, by=by, reason=reason)
        return {"maintenance": current[0], "replaced": before}

    def resume_all(by: Any) -> dict[str, Any]:
        calls.append(("resume_all", by))
        ended, current[0] = current[0], None
        return {"ended": ended}

    base = FakeDaemon().handlers()
    return Handlers(**{**base.__dict__, "pause_all": pause_all, "resume_all": resume_all})


def test_pause_all_and_resume_all_over_the_protocol() -> None:
    calls: list[tuple[Any, ...]] = []
    dispatcher = Dispatcher(handlers_with_maintenance(calls))
    peer = Peer(pid=4242, uid=0, gid=0)
    reply = dispatcher.handle(json.dumps(
        {"v": 1, "cmd": "pause_all", "args": {"seconds": 1800, "reason": "  kernel upgrade  "}}).encode(), peer)
    assert reply["ok"], reply
    m = reply["result"]["maintenance"]
    assert (m["until"], m["reason"], m["by"]["uid"]) == (NOW + 1800, "kernel upgrade", 0)
    assert reply["result"]["replaced"] is None
    forever = ask(dispatcher, {"v": 1, "cmd": "pause_all"})["result"]
    assert forever["maintenance"]["until"] == "+Inf" and forever["replaced"]["reason"] == "kernel upgrade"
    assert ask(dispatcher, {"v": 1, "cmd": "resume_all"})["result"]["was_in_maintenance"] is True
    again = ask(dispatcher, {"v": 1, "cmd": "resume_all"})["result"]
    assert again == {"was_in_maintenance": False, "ended": None}
    assert [c[0] for c in calls] == ["pause_all", "pause_all", "resume_all", "resume_all"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"reason": "a\nb"}, "control character U+000A"),
        ({"reason": "\x1b[31mred"}, "control character U+001B"),
        ({"reason": "looks\u202eright"}, "control character U+202E"),
        ({"reason": "lone \ud800 surrogate"}, "control character U+D800"),
        ({"reason": "x" * 201}, "at most 200"),
        ({"reason": "   "}, "is empty"),
        ({"seconds": 0}, "more than 0"),
        ({"seconds": 400 * 86400}, "at most 31536000"),
        ({"rule": "disk-full"}, "unknown argument 'rule'"),
        ({"reason": 5}, "wrong type"),
    ],
)
def test_pause_all_refuses_bad_arguments_and_changes_nothing(args: dict[str, Any], fragment: str) -> None:
    calls: list[tuple[Any, ...]] = []
    reply = ask(Dispatcher(handlers_with_maintenance(calls)), {"v": 1, "cmd": "pause_all", "args": args})
    assert reply["error"]["code"] == "bad_request" and fragment in reply["error"]["message"], reply
    assert calls == []


def test_resume_all_takes_no_arguments() -> None:
    reply = ask(Dispatcher(handlers_with_maintenance([])), {"v": 1, "cmd": "resume_all", "args": {"reset": True}})
    assert reply["error"]["code"] == "bad_request"


def test_status_document_has_the_maintenance_or_null() -> None:
    assert status_document(snapshot(rule()), pid=1, version="1")["maintenance"] is None
    m = guards.start_maintenance(None, NOW - 60, math.inf, by=ALICE, reason="failover")
    doc = status_document(snapshot(rule(), maintenance=m), pid=1, version="1")
    assert doc["maintenance"] == {"since": NOW - 60, "until": "+Inf", "by": ALICE, "reason": "failover",
                                  "changed_at": NOW - 60}
    json.dumps(doc, allow_nan=False)


# --------------------------------------------------------------------------- watchdogctl


def test_reason_problem() -> None:
    assert reason.reason_problem("kernel upgrade, ticket OPS-42 (ünïcode ok)") is None
    assert reason.reason_problem("x" * reason.MAX_REASON) is None
    assert "at most" in (reason.reason_problem("x" * (reason.MAX_REASON + 1)) or "")
    assert "U+0009" in (reason.reason_problem("tab\there") or "")
    assert "U+2028" in (reason.reason_problem("line\u2028sep") or "")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["pause", "--all", "disk-full"], "pause --all takes no rule"),
        (["resume", "--all", "disk-full"], "resume --all takes no rule"),
        (["resume", "--all", "--reset"], "--reset is per rule"),
        (["pause"], "name a rule, or --all"),
        (["resume"], "name a rule, or --all"),
        (["pause", "disk-full", "--reason", "x"], "--reason goes with --all"),
        (["pause", "--all", "--reason", "two\nlines"], "control character U+000A"),
    ],
)
def test_usage_errors_are_one_line_exit_2_and_send_nothing(
    argv: list[str], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The socket does not exist: had anything been sent, the exit would be 3 (unreachable).
    code = cli.main(["--socket", str(tmp_path / "none.sock"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err


def status_doc(maintenance: dict[str, Any] | None) -> dict[str, Any]:
    doc = status_document(snapshot(rule()), pid=1, version="1")
    doc["maintenance"] = maintenance
    received: dict[str, Any] = json.loads(json.dumps(doc, allow_nan=False))  # as watchdogctl receives it
    return received


def test_status_says_maintenance_first_with_who_until_and_why() -> None:
    text = cli.render_status(status_doc({"since": NOW - 60, "until": NOW + 1500, "by": ALICE,
                                         "reason": "kernel upgrade", "changed_at": NOW - 60}), cli.Palette(False))
    first = text.splitlines()[0]
    assert first.startswith(f"MAINTENANCE until {cli.clock_text(NOW + 1500)} (25m left) by alice (uid 1001) "
                            "(kernel upgrade)"), first
    forever = cli.render_status(status_doc({"since": NOW - 600, "until": "+Inf", "by": {}, "reason": None,
                                            "changed_at": NOW}), cli.Palette(False))
    assert forever.splitlines()[0].startswith("MAINTENANCE until resumed (since 10m) by ?:")
    plain = cli.render_status(status_doc(None), cli.Palette(False))
    assert "MAINTENANCE" not in plain
    code, line = cli.nagios(status_doc({"since": NOW, "until": "+Inf", "by": {}, "reason": None, "changed_at": NOW}))
    assert code == 2 and "maintenance (no actions)" in line


def test_history_rows_of_maintenance_name_who_until_why_and_how_it_ended() -> None:
    began = {"since": NOW, "until": NOW + 600, "by": ALICE, "reason": "kernel upgrade"}
    entries = [
        {"id": 3, "ts": NOW + 600, "rule": "*", "subject": "-", "action": "maintenance.expired",
         "decision": "operator", "result": "ok", "detail": {"ended": "expired", "maintenance": began}},
        {"id": 2, "ts": NOW + 30, "rule": "disk-full", "subject": "/", "action": "files.clean",
         "decision": "skipped_maintenance", "result": "n/a", "detail": {"maintenance": began}},
        {"id": 1, "ts": NOW, "rule": "*", "subject": "-", "action": "operator.pause_all", "decision": "operator",
         "result": "ok", "detail": began},
    ]
    transitions = [
        {"id": 2, "ts": NOW + 600, "rule": "*", "kind": "maintenance_end", "subject": "-", "value": None,
         "detail": {"ended": "expired", "maintenance": began}},
        {"id": 1, "ts": NOW, "rule": "*", "kind": "maintenance_start", "subject": "-", "value": None,
         "detail": began},
    ]
    lines = cli.render_history(entries, cli.Palette(False), transitions).splitlines()
    start = next(line for line in lines if "operator.pause_all" in line)
    assert f"maintenance by alice (uid 1001), until {cli.clock_text(NOW + 600)}: kernel upgrade" in start
    assert "maintenance expired (began" in next(line for line in lines if "maintenance.expired" in line)
    assert "skipped_maintenance" in next(line for line in lines if "files.clean" in line)
    end = next(line for line in lines if "maintenance_end" in line)
    assert "expired; began" in end and "by alice (uid 1001)" in end


# --------------------------------------------------------------------------- /metrics


def metric_values(text: bytes) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if sample.name.startswith("watchdogd_maintenance")
    }


def test_metrics_show_maintenance_and_its_end() -> None:
    off = metric_values(render_text(build_registry(lambda: snapshot(rule()), "1", process=False)))
    assert off == {"watchdogd_maintenance": 0.0, "watchdogd_maintenance_until_timestamp_seconds": 0.0}
    m = guards.start_maintenance(None, NOW, NOW + 900)
    on = metric_values(render_text(build_registry(lambda: snapshot(rule(), maintenance=m), "1", process=False)))
    assert on == {"watchdogd_maintenance": 1.0, "watchdogd_maintenance_until_timestamp_seconds": NOW + 900}
    endless = guards.start_maintenance(None, NOW, math.inf)
    inf = metric_values(render_text(build_registry(lambda: snapshot(rule(), maintenance=endless), "1",
                                                   process=False)))
    assert inf["watchdogd_maintenance_until_timestamp_seconds"] == math.inf


# --------------------------------------------------------------------------- pager


def test_no_page_opens_during_maintenance_and_what_still_fires_pages_when_it_ends(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.changed("alerting", Status.PENDING, Status.FIRING, subject="before")  # paged before the maintenance
    on = [True]
    rig.pager = Pager(rig.outbox, lambda: rig.config, rig.clock, "host-1", rig._wake, maintenance=lambda now: on[0])
    rig.changed("alerting", Status.PENDING, Status.FIRING, subject="during")
    rig.changed("alerting", Status.FIRING, Status.OK, subject="before")  # a resolve still goes out
    firing = rule("alerting", firing={"during": 95.0}, firing_subjects=("during",))
    rig.pager.reconcile(snapshot(firing))
    assert [(kind, subject) for _sink, kind, _rule, subject in rig.queued()] == [
        ("firing", "before"), ("firing", "before"), ("resolved", "before"), ("resolved", "before"),
    ]
    on[0] = False
    rig.pager.reconcile(snapshot(firing))
    assert [(kind, subject) for _sink, kind, _rule, subject in rig.queued()][-2:] == [
        ("firing", "during"), ("firing", "during"),
    ]
