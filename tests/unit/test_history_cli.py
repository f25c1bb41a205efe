"""The alert history on the way out: watchdogctl history, the control protocol, /metrics and status --json.

``render_history`` and the documents are fed what the daemon really sends
(``audit_document`` / ``transition_document`` through JSON); ``watchdogctl
history`` runs in-process (``cli.main``) against a real control socket
served by a ``ControlServer`` over fake handlers, as in test_control_server.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_control import FakeDaemon, ask
from tests.unit.test_engine import Clock, make_engine
from tests.unit.test_exporter import NOW, rule, samples, snapshot
from watchdogd.faces import cli
from watchdogd.faces.control import (
    ControlServer,
    Dispatcher,
    audit_document,
    encode,
    status_document,
    transition_document,
)
from watchdogd.model import AuditEntry, Decision, RuleTransition, Unit

HEADERS = ["TIME", "RULE", "ACTION", "SUBJECT", "OUTCOME", "VALUE", "ERROR"]


def wire(document: dict[str, Any]) -> dict[str, Any]:
    """A document as watchdogctl receives it: strict JSON, decoded."""
    result: dict[str, Any] = json.loads(encode(document))
    return result


def audit(ts: float, subject: str = "/", result: str = "ok", **changes: Any) -> AuditEntry:
    base = AuditEntry(ts, "disk-full", subject, "files.clean", Decision.RAN, result, value_before=95.0,
                      value_after=40.0, id=int(ts) % 1000)
    return replace(base, **changes)


def change(
    ts: float, kind: str, subject: str = "/", value: float | None = 95.0, detail: dict[str, Any] | None = None
) -> RuleTransition:
    return RuleTransition(ts, "disk-full", kind, subject, value, detail or {}, id=int(NOW - ts) + 100)


def cells(text: str) -> list[dict[str, str]]:
    """The rows of a history table by column name (columns are padded to the header's positions)."""
    header, *lines = text.splitlines()
    assert header.split() == HEADERS, header
    starts = [header.index(name) for name in HEADERS]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return [{name: line[a:b].strip() for name, (a, b) in zip(HEADERS, bounds, strict=True)} for line in lines]


# --------------------------------------------------------------------------- render_history


ENTRIES = [wire(audit_document(audit(NOW - 10, "/var"), Unit.PERCENT)),
           wire(audit_document(audit(NOW - 30, "/srv", result="failed", error="permission\ndenied"), Unit.PERCENT))]
TRANSITIONS = [wire(transition_document(change(NOW, "resolved", value=40.0, detail={"from": "firing"}), Unit.PERCENT)),
               wire(transition_document(change(NOW - 20, "firing", detail={"from": "ok"}), Unit.PERCENT))]


def test_render_history_merges_audit_and_transitions_newest_first() -> None:
    text = cli.render_history(ENTRIES, cli.Palette(False), TRANSITIONS)
    rows = cells(text)
    assert [(r["TIME"], r["ACTION"], r["SUBJECT"], r["OUTCOME"]) for r in rows] == [
        (cli.clock_text(NOW), "(state)", "/", "resolved"),
        (cli.clock_text(NOW - 10), "files.clean", "/var", "ran ok"),
        (cli.clock_text(NOW - 20), "(state)", "/", "firing"),
        (cli.clock_text(NOW - 30), "files.clean", "/srv", "ran failed"),
    ]
    assert [r["VALUE"] for r in rows] == ["40.0%", "95.0% -> 40.0%", "95.0%", "95.0% -> 40.0%"]
    assert rows[3]["ERROR"] == "permission denied" and rows[0]["ERROR"] == ""
    assert all(r["RULE"] == "disk-full" for r in rows)


def test_render_history_merges_lists_that_interleave_out_of_order() -> None:
    """Each list arrives newest first from the daemon; the timeline is the merge, not one list after the other."""
    text = cli.render_history(list(reversed(ENTRIES)), cli.Palette(False), list(reversed(TRANSITIONS)))
    assert [r["TIME"] for r in cells(text)] == [cli.clock_text(NOW - n) for n in (0, 10, 20, 30)]


@pytest.mark.parametrize(("limit", "times"), [(1, [0]), (2, [0, 10]), (3, [0, 10, 20]), (4, [0, 10, 20, 30]),
                                               (50, [0, 10, 20, 30]), (None, [0, 10, 20, 30])])
def test_render_history_applies_the_limit_to_the_merged_timeline(limit: int | None, times: list[int]) -> None:
    rows = cells(cli.render_history(ENTRIES, cli.Palette(False), TRANSITIONS, limit=limit))
    assert [r["TIME"] for r in rows] == [cli.clock_text(NOW - n) for n in times]


def test_render_history_of_the_rules_own_changes() -> None:
    down = wire(transition_document(change(NOW, "down", "-", None, {"error": "connection\nrefused", "fires": False}),
                                    Unit.PERCENT))
    gave_up = wire(transition_document(change(NOW - 1, "gave_up", "-", None, {"max_actions": 1}), Unit.PERCENT))
    resumed = wire(transition_document(change(NOW - 2, "resumed", "-", None, {"by": "stable"}), Unit.PERCENT))
    rows = cells(cli.render_history([], cli.Palette(False), [down, gave_up, resumed]))
    assert [(r["ACTION"], r["SUBJECT"], r["OUTCOME"], r["VALUE"], r["ERROR"]) for r in rows] == [
        ("(state)", "-", "down", "-", "connection refused"),
        ("(state)", "-", "gave_up", "-", ""),
        ("(state)", "-", "resumed", "-", ""),
    ]


def test_render_history_colours_a_transition_by_what_it_became() -> None:
    text = cli.render_history([], cli.Palette(True), TRANSITIONS)
    resolved, firing = text.splitlines()[1:]
    assert "\x1b[32mresolved" in resolved and "\x1b[31mfiring" in firing  # ok green, failed red
    assert "\x1b[" not in cli.render_history([], cli.Palette(False), TRANSITIONS)


def test_render_history_says_so_when_both_lists_are_empty() -> None:
    assert cli.render_history([], cli.Palette(False)) == "no matching history"
    assert cli.render_history([], cli.Palette(False), [], limit=5) == "no matching history"
    assert cells(cli.render_history([], cli.Palette(False), TRANSITIONS[:1]))[0]["OUTCOME"] == "resolved"
    assert cells(cli.render_history(ENTRIES[:1], cli.Palette(False), []))[0]["OUTCOME"] == "ran ok"


# --------------------------------------------------------------------------- the control protocol


@dataclass
class HistoryDaemon:
    """Fake handlers whose history and alert history the test sets; records what they were asked."""

    entries: list[AuditEntry] = field(default_factory=lambda: [audit(NOW - 10, "/var")])
    changes: list[RuleTransition] = field(default_factory=lambda: [change(NOW, "firing", detail={"from": "ok"})])
    calls: list[tuple[str, Any, Any, int]] = field(default_factory=list)

    def handlers(self) -> Any:
        def history(rule: str | None, since: float | None, limit: int) -> Sequence[AuditEntry]:
            self.calls.append(("history", rule, since, limit))
            return self.entries[:limit]

        def transitions(rule: str | None, since: float | None, limit: int) -> Sequence[RuleTransition]:
            self.calls.append(("transitions", rule, since, limit))
            return self.changes[:limit]

        units = {"disk-full": Unit.PERCENT, "age": Unit.SECONDS}
        return replace(FakeDaemon().handlers(), history=history, transitions=transitions, units=lambda: units)


def test_history_answers_the_alert_history_next_to_the_audit_log() -> None:
    daemon = HistoryDaemon(changes=[
        change(NOW, "firing", detail={"from": "pending", "severity": "critical"}),
        RuleTransition(NOW - 1, "age", "firing", "/srv/backup/*", 7200.0, {"from": "ok"}, id=2),
        RuleTransition(NOW - 2, "age", "down", "-", None, {"error": "x", "fires": True}, id=1),
        RuleTransition(NOW - 3, "gone", "pending", "a", 5.0, {}, id=0),  # a rule no longer configured: no unit
        RuleTransition(NOW - 4, "age", "firing", "/nope/*", math.inf, {"from": "ok", "n": math.nan}, id=9),
    ])
    reply = ask(Dispatcher(daemon.handlers()), {"v": 1, "cmd": "history",
                                                "args": {"rule": "disk-full", "since": NOW - 60, "limit": 7}})
    assert daemon.calls == [("history", "disk-full", NOW - 60, 7), ("transitions", "disk-full", NOW - 60, 7)]
    result = reply["result"]
    assert set(result) == {"entries", "transitions"} and len(result["entries"]) == 1
    first, age, down, gone, inf = result["transitions"]
    assert first == {
        "id": 100, "ts": NOW, "rule": "disk-full", "kind": "firing", "subject": "/", "value": 95.0,
        "value_text": "95.0%", "detail": {"from": "pending", "severity": "critical"},
    }
    assert (age["value"], age["value_text"]) == (7200.0, "2.0h")  # each row in its own rule's unit
    assert (down["value"], down["value_text"], down["subject"]) == (None, None, "-")
    assert (gone["value"], gone["value_text"]) == (5.0, None)
    assert (inf["value"], inf["value_text"], inf["detail"]["n"]) == ("+Inf", "inf", "NaN")  # strict JSON


def test_handlers_without_the_alert_history_answer_an_empty_list() -> None:
    handlers = FakeDaemon().handlers()  # built without ``transitions``: a daemon that keeps none
    reply = ask(Dispatcher(handlers), {"v": 1, "cmd": "history"})
    assert reply["result"]["transitions"] == [] and len(reply["result"]["entries"]) == 1


# --------------------------------------------------------------------------- watchdogctl history


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="wdh-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def served(short_dir: Path) -> Iterator[tuple[HistoryDaemon, str]]:
    daemon = HistoryDaemon(
        entries=[audit(NOW - 10, "/var"), audit(NOW - 30, "/srv")],
        changes=[change(NOW, "resolved", value=40.0), change(NOW - 20, "firing")],
    )
    server = ControlServer(short_dir / "control.sock", None, daemon.handlers())
    server.start()
    try:
        yield daemon, str(server.path)
    finally:
        server.close()


def history(capsys: pytest.CaptureFixture[str], socket: str, *flags: str) -> str:
    code = cli.main(["--socket", socket, "history", *flags])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_OK and err == "", err
    return out


def test_history_shows_both_by_default(served: tuple[HistoryDaemon, str], capsys: pytest.CaptureFixture[str]) -> None:
    _daemon, socket = served
    rows = cells(history(capsys, socket))
    assert [(r["ACTION"], r["OUTCOME"]) for r in rows] == [
        ("(state)", "resolved"), ("files.clean", "ran ok"), ("(state)", "firing"), ("files.clean", "ran ok"),
    ]
    assert [r["TIME"] for r in cells(history(capsys, socket, "--limit", "3"))] == [
        cli.clock_text(NOW - n) for n in (0, 10, 20)
    ]


def test_history_actions_and_alerts_show_one_list_each(
    served: tuple[HistoryDaemon, str], capsys: pytest.CaptureFixture[str]
) -> None:
    daemon, socket = served
    actions = cells(history(capsys, socket, "--actions"))
    assert [(r["ACTION"], r["SUBJECT"]) for r in actions] == [("files.clean", "/var"), ("files.clean", "/srv")]
    alerts = cells(history(capsys, socket, "--alerts", "--rule", "disk-full", "--limit", "5"))
    assert [(r["ACTION"], r["OUTCOME"]) for r in alerts] == [("(state)", "resolved"), ("(state)", "firing")]
    assert daemon.calls[-2:] == [("history", "disk-full", None, 5), ("transitions", "disk-full", None, 5)]
    daemon.changes = []
    assert history(capsys, socket, "--alerts").strip() == "no matching history"  # the audit rows are not shown


def test_history_json_has_both_lists_and_the_flags_filter_it(
    served: tuple[HistoryDaemon, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _daemon, socket = served
    both = json.loads(history(capsys, socket, "--json"))
    assert set(both) == {"entries", "transitions"}
    assert [e["subject"] for e in both["entries"]] == ["/var", "/srv"]
    assert [(t["kind"], t["value_text"]) for t in both["transitions"]] == [("resolved", "40.0%"), ("firing", "95.0%")]
    alerts = json.loads(history(capsys, socket, "--json", "--alerts"))
    assert alerts == {"entries": [], "transitions": both["transitions"]}
    actions = json.loads(history(capsys, socket, "--actions", "--json"))
    assert actions == {"entries": both["entries"], "transitions": []}


def test_history_actions_and_alerts_are_mutually_exclusive(
    served: tuple[HistoryDaemon, str], capsys: pytest.CaptureFixture[str]
) -> None:
    daemon, socket = served
    for flags in (["--actions", "--alerts"], ["--alerts", "--json", "--actions"]):
        with pytest.raises(SystemExit) as done:
            cli.main(["--socket", socket, "history", *flags])
        assert done.value.code == 2
        out, err = capsys.readouterr()
        errors = [line for line in err.splitlines() if "error:" in line]
        assert out == "" and len(errors) == 1 and "Traceback" not in err, err
        assert "--actions" in errors[0] and "--alerts" in errors[0] and "not allowed with" in errors[0]
    assert daemon.calls == []  # refused in the parser: the daemon was never asked


# --------------------------------------------------------------------------- /metrics


def transitions(found: dict[str, list[tuple[dict[str, str], float]]]) -> dict[tuple[str, str], float]:
    series = found["watchdogd_transitions_total"]
    assert all(set(labels) == {"rule", "kind"} for labels, _ in series)  # {rule, to} no more
    out = {(labels["rule"], labels["kind"]): value for labels, value in series}
    assert len(out) == len(series)
    return out


def test_transitions_total_is_preset_by_kind_and_counts_come_through() -> None:
    acting = rule("disk-full")
    alerting = rule("calm", actions=(), has_actions=False, last_actions=(), cooldown_until=None)
    counted = {("disk-full", "firing"): 2, ("disk-full", "gave_up"): 1, ("calm", "down"): 3, ("gone", "back"): 4}
    got = transitions(samples(snapshot(acting, alerting, transitions_total=counted)))
    every = ("pending", "firing", "resolved", "down", "back")
    expected = {("disk-full", kind): 0.0 for kind in (*every, "gave_up", "resumed")}
    expected |= {("calm", kind): 0.0 for kind in every}
    expected |= {key: float(count) for key, count in counted.items()}  # a removed rule's counter stays
    assert got == expected


def test_transitions_total_of_a_dry_run_rule_with_actions_has_gave_up_and_resumed() -> None:
    got = transitions(samples(snapshot(rule("dry", dry_run=True))))
    assert got[("dry", "gave_up")] == 0 and got[("dry", "resumed")] == 0 and len(got) == 7


# --------------------------------------------------------------------------- status --json


def rule_change(doc: dict[str, Any]) -> Any:
    [one] = wire(doc)["rules"]
    return one["last_change"]


def test_status_last_change_is_null_before_any_change_and_kind_ts_subject_value_after() -> None:
    assert rule_change(status_document(snapshot(rule()), pid=1, version="1")) is None
    latest = RuleTransition(NOW - 5, "disk-full", "firing", "/", 93.0, {"from": "ok", "severity": "critical"}, id=8)
    assert rule_change(status_document(snapshot(rule(last_change=latest)), pid=1, version="1")) == {
        "kind": "firing", "ts": NOW - 5, "subject": "/", "value": 93.0,
    }
    outage = RuleTransition(NOW, "disk-full", "firing", "/", math.inf)
    assert rule_change(status_document(snapshot(rule(last_change=outage)), pid=1, version="1"))["value"] == "+Inf"


def test_status_last_change_follows_a_real_engine(tmp_path: Path) -> None:
    clock = Clock()
    alert_only = "    probe: fake.percent\n    params: {key: r}\n    above: 90\n    timeout: 1s\n"
    engine, probe, _action, _store = make_engine(tmp_path, alert_only, clock, values={"a": 10.0})
    try:
        assert rule_change(status_document(engine.snapshot(), pid=1, version="1")) is None  # not run yet
        engine.run_rule("r")
        assert rule_change(status_document(engine.snapshot(), pid=1, version="1")) is None  # ran, nothing changed
        probe.values["a"] = 95.0
        clock.now += 15
        engine.run_rule("r")
        assert rule_change(status_document(engine.snapshot(), pid=1, version="1")) == {
            "kind": "firing", "ts": clock.now, "subject": "a", "value": 95.0,
        }
        probe.error = RuntimeError("gone")
        clock.now += 15
        engine.run_rule("r")
        assert rule_change(status_document(engine.snapshot(), pid=1, version="1")) == {
            "kind": "down", "ts": clock.now, "subject": "-", "value": None,
        }
    finally:
        engine.close()
