"""The control protocol: request parsing, dispatch and the documents it returns (no sockets)."""

from __future__ import annotations

import json
import math
import os
import pwd
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from tests.unit.test_exporter import NOW, rule, snapshot
from watchdogd.engine.engine import RunReport
from watchdogd.faces.control import (
    MAX_LISTED,
    Dispatcher,
    Handlers,
    Peer,
    RequestError,
    encode,
    parse_request,
    status_document,
)
from watchdogd.model import AuditEntry, Cardinality, Decision, RuleStatus, Unit


@dataclass
class FakeDaemon:
    """Records what the control API asked for; the engine itself is tested elsewhere."""

    paused: dict[str, float] = field(default_factory=dict)
    resumed: list[str] = field(default_factory=list)
    resets: list[bool] = field(default_factory=list)
    operators: list[Any] = field(default_factory=list)
    reload_ok: bool = True
    history_calls: list[tuple[Any, ...]] = field(default_factory=list)

    def handlers(self) -> Handlers:
        def history(rule: str | None, since: float | None, limit: int) -> Sequence[AuditEntry]:
            self.history_calls.append((rule, since, limit))
            return [AuditEntry(NOW, "disk-full", "/", "files.clean", Decision.RAN, "ok", value_before=95.0,
                               value_after=math.inf, detail={"items": [{"n": math.nan}]}, id=7)]

        def pause(name: str, until: float, by: Any) -> None:
            self.paused[name] = until
            self.operators.append(by)

        def resume(name: str, reset: bool, by: Any) -> dict[str, Any]:
            self.resumed.append(name)
            self.resets.append(reset)
            self.operators.append(by)
            return {"was_paused": True, "reset": reset, "gave_up_at": None if reset else NOW}

        def run(name: str) -> RunReport:
            return RunReport(name, RuleStatus.FIRING, True, None, ("/",), (), ())

        return Handlers(
            snapshot=lambda: snapshot(rule()),
            history=history,
            pause=pause,
            resume=resume,
            run=run,
            reload=lambda: (self.reload_ok, "2 rules" if self.reload_ok else "x.yaml:3: rules.a.above: bad"),
            rules=lambda: ["disk-full", "pg-idle"],
            units=lambda: {"disk-full": Unit.PERCENT},
            version="9.9.9",
            clock=lambda: NOW,
        )


def ask(dispatcher: Dispatcher, message: Any) -> dict[str, Any]:
    raw = message if isinstance(message, bytes) else json.dumps(message).encode()
    reply: dict[str, Any] = json.loads(dispatcher.reply(raw))  # every reply is strict JSON
    return reply


@pytest.fixture
def daemon() -> FakeDaemon:
    return FakeDaemon()


@pytest.fixture
def dispatcher(daemon: FakeDaemon) -> Dispatcher:
    return Dispatcher(daemon.handlers())


@pytest.mark.parametrize(
    ("raw", "code", "fragment"),
    [
        (b"", "bad_request", "empty request"),
        (b"\xff\xfe", "bad_request", "not UTF-8"),
        (b"hello", "bad_request", "not JSON"),
        (b"[1, 2]", "bad_request", "must be a JSON object"),
        (b'{"cmd": "status"}', "unsupported_version", "version None"),
        (b'{"v": 2, "cmd": "status"}', "unsupported_version", "use 1"),
        (b'{"v": true, "cmd": "status"}', "unsupported_version", ""),
        (b'{"v": 1, "cmd": "rm -rf"}', "unknown_command", "expected one of"),
        (b'{"v": 1, "cmd": "status", "extra": 1}', "bad_request", "unknown request key"),
        (b'{"v": 1, "cmd": "pause"}', "bad_request", "missing argument 'rule'"),
        (b'{"v": 1, "cmd": "pause", "args": {"rule": 5}}', "bad_request", "'rule' has the wrong type"),
        (b'{"v": 1, "cmd": "pause", "args": {"rule": "a", "force": 1}}', "bad_request", "unknown argument 'force'"),
        (b'{"v": 1, "cmd": "history", "args": {"limit": true}}', "bad_request", "wrong type"),
        (b'{"v": 1, "cmd": "history", "args": []}', "bad_request", "args must be a JSON object"),
        (b'{"v": 1, "cmd": "pause", "args": {"rule": "a", "seconds": Infinity}}', "bad_request", "finite"),
    ],
)
def test_malformed_requests_get_a_clear_error(raw: bytes, code: str, fragment: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse_request(raw)
    assert caught.value.code == code and fragment in caught.value.message


def test_every_error_is_a_json_reply_not_an_exception(dispatcher: Dispatcher) -> None:
    reply = ask(dispatcher, b"\x00garbage")
    assert reply == {"v": 1, "ok": False, "error": {"code": "bad_request", "message": reply["error"]["message"]}}


def test_status_document(dispatcher: Dispatcher) -> None:
    reply = ask(dispatcher, {"v": 1, "cmd": "status"})
    doc = reply["result"]
    assert doc["schema"] == 1 and doc["daemon"]["version"] == "9.9.9"
    assert doc["summary"]["firing"] == ["disk-full"] and doc["summary"]["firing_critical"] == ["disk-full"]
    (r,) = doc["rules"]
    assert r["state"] == "firing"
    assert r["worst"] == {"subject": "/", "value": 93.0, "text": "93.0%"}
    assert r["threshold"]["above_text"] == "90.0%"
    assert r["last_action"]["action"] == "files.clean" and r["last_action"]["result"] == "ok"
    assert r["cooldown_until"] == NOW + 600


def test_status_caps_listed_subjects_but_counts_all() -> None:
    many = {f"pid {n}": float(n) for n in range(500)}
    snap = snapshot(rule(cardinality=Cardinality.HIGH, unit=Unit.SECONDS, readings=many, firing=many, above=1.0,
                         paused_until=math.inf, gave_up_at=NOW))
    doc = status_document(snap, pid=1, version="1")
    firing = doc["rules"][0]["firing"]
    assert firing["count"] == 500 and len(firing["subjects"]) == MAX_LISTED
    assert firing["subjects"][0]["subject"] == "pid 499"  # worst first
    assert doc["rules"][0]["paused_until"] == "+Inf"
    assert doc["summary"]["gave_up"] == ["disk-full"]
    json.loads(encode(doc))


def test_pause_resume_run_reload(daemon: FakeDaemon, dispatcher: Dispatcher) -> None:
    assert ask(dispatcher, {"v": 1, "cmd": "pause", "args": {"rule": "disk-full", "seconds": 60}})["ok"]
    assert daemon.paused == {"disk-full": NOW + 60}
    reply = ask(dispatcher, {"v": 1, "cmd": "pause", "args": {"rule": "pg-idle"}})
    assert reply["result"]["paused_until"] == "+Inf" and daemon.paused["pg-idle"] == math.inf
    assert ask(dispatcher, {"v": 1, "cmd": "pause", "args": {"rule": "pg-idle", "seconds": -5}})["error"]["code"] \
        == "bad_request"
    resumed = ask(dispatcher, {"v": 1, "cmd": "resume", "args": {"rule": "disk-full"}})["result"]
    assert daemon.resumed == ["disk-full"] and daemon.resets == [False]
    assert resumed == {"rule": "disk-full", "was_paused": True, "reset": False, "gave_up_at": NOW}
    reset = ask(dispatcher, {"v": 1, "cmd": "resume", "args": {"rule": "disk-full", "reset": True}})["result"]
    assert daemon.resets == [False, True] and reset["reset"] is True and reset["gave_up_at"] is None
    assert ask(dispatcher, {"v": 1, "cmd": "resume", "args": {"rule": "disk-full", "reset": 1}})["error"]["code"] \
        == "bad_request"
    assert daemon.operators == [None, None, None, None]  # no peer (no socket): nobody to name
    run = ask(dispatcher, {"v": 1, "cmd": "run", "args": {"rule": "disk-full"}})["result"]
    assert run["state"] == "firing" and run["firing"] == {"count": 1, "subjects": ["/"]}
    assert ask(dispatcher, {"v": 1, "cmd": "reload"})["result"] == {"reloaded": True, "summary": "2 rules"}
    daemon.reload_ok = False
    error = ask(dispatcher, {"v": 1, "cmd": "reload"})["error"]
    assert error["code"] == "reload_failed" and "rules.a.above" in error["message"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"v": 1, "cmd": "pause", "args": {"rule": "disk-full", "seconds": 1e308}}',
        b'{"v": 1, "cmd": "pause", "args": {"rule": "disk-full", "seconds": 31536001}}',  # 365 days and a second
        b'{"v": 1, "cmd": "pause", "args": {"rule": "disk-full", "seconds": 0}}',
        b'{"v": 1, "cmd": "pause", "args": {"rule": "disk-full", "seconds": -1}}',
        b'{"v": 1, "cmd": "pause", "args": {"rule": "disk-full", "seconds": NaN}}',
        b'{"v": 1, "cmd": "pause", "args": {"rule": "disk-full", "seconds": Infinity}}',
        b'{"v": 1, "cmd": "pause", "args": {"rule": "disk-full", "seconds": 1' + b"0" * 400 + b'}}',
    ],
)
def test_pause_durations_are_bounded(daemon: FakeDaemon, dispatcher: Dispatcher, raw: bytes) -> None:
    """1e308 s was accepted and then overflowed every date formatter that met it (issue 20)."""
    reply = ask(dispatcher, raw)
    assert reply["ok"] is False and reply["error"]["code"] == "bad_request", reply
    assert "\n" not in reply["error"]["message"] and "seconds" in reply["error"]["message"]
    assert daemon.paused == {}


def test_pause_of_365_days_is_accepted(daemon: FakeDaemon, dispatcher: Dispatcher) -> None:
    assert ask(dispatcher, {"v": 1, "cmd": "pause", "args": {"rule": "disk-full", "seconds": 365 * 86400}})["ok"]
    assert daemon.paused == {"disk-full": NOW + 365 * 86400}


def test_pause_and_resume_name_the_peer(daemon: FakeDaemon, dispatcher: Dispatcher) -> None:
    peer = Peer(pid=4242, uid=os.getuid(), gid=os.getgid())
    raw = json.dumps({"v": 1, "cmd": "pause", "args": {"rule": "disk-full"}}).encode()
    assert dispatcher.handle(raw, peer)["ok"]
    raw = json.dumps({"v": 1, "cmd": "resume", "args": {"rule": "disk-full", "reset": True}}).encode()
    assert dispatcher.handle(raw, peer)["ok"]
    who = {"uid": os.getuid(), "pid": 4242, "user": pwd.getpwuid(os.getuid()).pw_name}
    assert daemon.operators == [who, who]


def test_unknown_rule_lists_the_known_ones(dispatcher: Dispatcher) -> None:
    for command in ("pause", "resume", "run"):
        error = ask(dispatcher, {"v": 1, "cmd": command, "args": {"rule": "disk-ful"}})["error"]
        assert error["code"] == "unknown_rule" and "disk-full, pg-idle" in error["message"]


def test_history_passes_filters_and_encodes_non_finite_values(daemon: FakeDaemon, dispatcher: Dispatcher) -> None:
    reply = ask(dispatcher, {"v": 1, "cmd": "history", "args": {"rule": "disk-full", "since": NOW - 3600, "limit": 5}})
    assert daemon.history_calls == [("disk-full", NOW - 3600, 5)]
    (entry,) = reply["result"]["entries"]
    assert entry["value_after"] == "+Inf" and entry["detail"]["items"][0]["n"] == "NaN"
    assert entry["value_before_text"] == "95.0%"
    assert ask(dispatcher, {"v": 1, "cmd": "history", "args": {"limit": 0}})["error"]["code"] == "bad_request"


def test_a_handler_bug_is_an_internal_error_reply(daemon: FakeDaemon) -> None:
    handlers = daemon.handlers()

    def broken() -> Any:
        raise RuntimeError("boom")

    dispatcher = Dispatcher(Handlers(**{**handlers.__dict__, "snapshot": broken}))
    error = ask(dispatcher, {"v": 1, "cmd": "status"})["error"]
    assert error["code"] == "internal" and "boom" in error["message"]


def test_a_status_that_fails_while_written_is_an_internal_error_reply(daemon: FakeDaemon) -> None:
    """status is written after the handler returned (``StatusReply``): a bug there is still an error reply."""
    handlers = daemon.handlers()
    broken = replace(handlers.snapshot(), rules=(object(),))
    dispatcher = Dispatcher(Handlers(**{**handlers.__dict__, "snapshot": lambda: broken}))
    error = ask(dispatcher, {"v": 1, "cmd": "status"})["error"]
    assert error["code"] == "internal" and "AttributeError" in error["message"]


def test_version(dispatcher: Dispatcher) -> None:
    result = ask(dispatcher, {"v": 1, "cmd": "version"})["result"]
    assert result["protocol"] == 1 and "status" in result["commands"]
