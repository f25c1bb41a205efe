"""The status views (full and summary), the encoder's fast path, fleet without a snapshot, and watchdogctl's side.

``watchdogctl status`` asks for the summary view (what the table prints); an
old request (no ``view``) must be answered exactly as before, and a daemon
older than the view must still serve the new watchdogctl.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_control import FakeDaemon, ask
from tests.unit.test_exporter import NOW, rule, snapshot
from watchdogd.engine.snapshot import ActionSummary, EngineSnapshot, FleetStats
from watchdogd.faces import cli
from watchdogd.faces.control import (
    MAX_LISTED,
    SUMMARY_LISTED,
    ControlServer,
    Dispatcher,
    StatusReply,
    encode,
    jsonable,
    status_document,
)
from watchdogd.model import Cardinality, RuleStatus

FULL_KEYS = [
    "name", "description", "probe", "target", "severity", "state", "enabled", "dry_run", "unit", "cardinality",
    "interval_seconds", "timeout_seconds", "timeout_source", "on_down", "depends_on", "waiting_on", "last_change",
    "threshold", "up", "error", "last_run", "duration_seconds", "subjects", "firing", "pending", "worst",
    "actions", "last_action", "cooldown_until", "paused_until", "gave_up_at",
]
"""A rule of the full document, in its documented order (docs/interfaces.md): the order old clients saw."""


def busy_snapshot() -> EngineSnapshot:
    """Rules that exercise every cell of the table: many subjects, pending, paused, down, waiting, failed actions."""
    many = {f"pid {n}": float(n) for n in range(50)}
    return snapshot(
        rule(),
        rule("procs", cardinality=Cardinality.HIGH, readings=many, firing=dict(list(many.items())[:30]),
             pending=dict(list(many.items())[30:40]), above=1.0),
        rule("paused", status=RuleStatus.PAUSED, paused_until=math.inf, gave_up_at=NOW - 5),
        rule("down", status=RuleStatus.DOWN, up=False, error="connection refused", firing={}, readings={}),
        rule("waiting", status=RuleStatus.WAITING, waiting_on=("down",), firing={}),
        rule("low", above=None, below=10.0, readings={"a": 3.0, "b": 1.0, "c": 2.0}, firing={"a": 3.0, "b": 1.0,
             "c": 2.0}, last_actions=(ActionSummary("exec", "ran", "failed", NOW - 9, "a", "exit 3\nboom"),)),
        rule("quiet", status=RuleStatus.OK, firing={}, readings={}, last_actions=(), actions=(), has_actions=False,
             cooldown_until=None, severity="info"),
        stalled_rules=("waiting",),
    )


def dispatcher_for(snap: EngineSnapshot, **handlers: Any) -> Dispatcher:
    base = FakeDaemon().handlers()
    return Dispatcher(replace(base, snapshot=lambda: snap, **handlers))


# --------------------------------------------------------------------------- the daemon's side


def test_the_old_request_is_answered_as_before() -> None:
    snap = busy_snapshot()
    dispatcher = dispatcher_for(snap)
    plain = ask(dispatcher, {"v": 1, "cmd": "status"})["result"]
    no_args = ask(dispatcher, {"v": 1, "cmd": "status", "args": {}})["result"]
    full = ask(dispatcher, {"v": 1, "cmd": "status", "args": {"view": "full"}})["result"]
    assert plain == no_args == full
    assert "view" not in plain
    assert [list(doc) for doc in plain["rules"]] == [FULL_KEYS] * len(snap.rules)
    procs = plain["rules"][1]
    assert procs["firing"]["count"] == 30 and len(procs["firing"]["subjects"]) == MAX_LISTED
    assert procs["description"] == "" and procs["last_run"] == NOW - 3 and procs["unit"] == "percent"


def test_the_summary_view_is_the_full_document_cut_to_what_status_prints() -> None:
    snap = busy_snapshot()
    dispatcher = dispatcher_for(snap)
    full = ask(dispatcher, {"v": 1, "cmd": "status"})["result"]
    summary = ask(dispatcher, {"v": 1, "cmd": "status", "args": {"view": "summary"}})["result"]
    assert summary["view"] == "summary"
    assert {k: v for k, v in summary.items() if k not in ("rules", "view")} == \
        {k: v for k, v in full.items() if k != "rules"}
    for short, whole in zip(summary["rules"], full["rules"], strict=True):
        assert set(short) < set(whole)
        assert not set(short) & {"description", "probe", "last_change", "last_run", "depends_on"}
        for key in set(short) - {"firing", "pending"}:
            assert short[key] == whole[key], key
        for key in ("firing", "pending"):  # exact counts, the worst few listed, in the same order
            assert short[key]["count"] == whole[key]["count"]
            assert short[key]["subjects"] == whole[key]["subjects"][:SUMMARY_LISTED]
    assert len(json.dumps(summary)) < len(json.dumps(full))


@pytest.mark.parametrize("view", ["full", "summary"])
@pytest.mark.parametrize("snap", [busy_snapshot(), snapshot(), snapshot(rule(error="a \u00e9t\u00e9 \"cut\"\n"))],
                         ids=["busy", "no rules", "escapes"])
def test_the_streamed_reply_is_byte_for_byte_the_document(snap: EngineSnapshot, view: str) -> None:
    """The daemon writes status a rule at a time: what a client reads must be the one document's encoding."""
    whole = encode({"v": 1, "ok": True, "result": status_document(snap, pid=7, version="9", view=view)})
    streamed = encode({"v": 1, "ok": True, "result": StatusReply(snap, pid=7, version="9", view=view)})
    assert bytes(streamed) == whole
    result = json.loads(streamed)["result"]
    enabled = [doc for doc in result["rules"] if doc["enabled"]]

    def named(keep: Callable[[dict[str, Any]], bool]) -> list[str]:
        return [doc["name"] for doc in enabled if keep(doc)]

    assert result["summary"] == {  # the lists, read from the views, say what the rules' documents say
        "rules": len(snap.rules),
        "states": {state: [doc["state"] for doc in result["rules"]].count(state)
                   for state in dict.fromkeys(doc["state"] for doc in result["rules"])},
        "firing": named(lambda doc: doc["firing"]["count"] > 0),
        "firing_critical": named(lambda doc: doc["firing"]["count"] > 0 and doc["severity"] == "critical"),
        "gave_up": named(lambda doc: doc["gave_up_at"] is not None),
        "down": named(lambda doc: doc["state"] == "down"),
        "unreachable": named(lambda doc: doc["up"] is False and doc["on_down"] == "fire" and doc["state"] != "absent"),
        "waiting": named(lambda doc: doc["state"] == "waiting"),
        "absent": named(lambda doc: doc["state"] == "absent"),
        "stalled": sorted(snap.stalled_rules),
    }
    if snap.rules == busy_snapshot().rules:
        assert result["summary"]["down"] == ["down"] and result["summary"]["gave_up"] == ["paused"]


def test_status_and_check_print_the_same_from_either_view() -> None:
    snap = busy_snapshot()
    full = status_document(snap, pid=1, version="1")
    summary = status_document(snap, pid=1, version="1", view="summary")
    for colour in (False, True):
        assert cli.render_status(summary, cli.Palette(colour)) == cli.render_status(full, cli.Palette(colour))
    assert cli.nagios(summary) == cli.nagios(full)
    assert cli.status_exit(summary) == cli.status_exit(full)
    table = cli.render_status(summary, cli.Palette(False))
    assert "40 of 50" in table and "b, c +1" in table and "low: last action exec failed: exit 3 boom" in table


def test_worst_first_matches_a_full_sort_with_ties() -> None:
    ties = {f"s{n}": float(n % 3) for n in range(40)}
    for above, below in ((1.0, None), (None, 1.0)):
        doc = status_document(snapshot(rule(above=above, below=below, firing=ties)), pid=1, version="1")
        expected = sorted(ties.items(), key=lambda item: item[1], reverse=above is not None)[:MAX_LISTED]
        assert [s["subject"] for s in doc["rules"][0]["firing"]["subjects"]] == [s for s, _ in expected]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"view": "everything"}, "status: view must be one of full, summary, got 'everything'"),
        ({"view": 3}, "status: argument 'view' has the wrong type"),
        ({"view": True}, "status: argument 'view' has the wrong type"),
        ({"fields": ["name"]}, "status: unknown argument 'fields'"),
    ],
)
def test_a_bad_view_is_a_one_line_error(args: dict[str, Any], fragment: str) -> None:
    reply = ask(dispatcher_for(busy_snapshot()), {"v": 1, "cmd": "status", "args": args})
    assert reply["ok"] is False and reply["error"]["code"] == "bad_request"
    assert reply["error"]["message"] == fragment and "\n" not in reply["error"]["message"]


@pytest.mark.parametrize(
    "message",
    [
        {"v": 1, "ok": True, "result": {"a": [1, 2.5, None, True, "x"], "b": {"c": (1, 2)}}},
        {"v": 1, "ok": True, "result": {"inf": math.inf, "nan": math.nan, "neg": -math.inf}},
        {"v": 1, "ok": True, "result": {"set": frozenset({1}), "object": Path("/x"), 3: "int key"}},
    ],
)
def test_encode_takes_the_fast_path_only_where_it_encodes_the_same(message: dict[str, Any]) -> None:
    slow = json.dumps(jsonable(message), allow_nan=False, separators=(",", ":")).encode() + b"\n"
    assert encode(message) == slow


def test_a_streamed_result_alone_in_its_message_is_still_one_object() -> None:
    snap = busy_snapshot()
    streamed = encode({"result": StatusReply(snap, pid=7, version="9")})
    assert bytes(streamed) == encode({"result": status_document(snap, pid=7, version="9")})
    assert set(json.loads(streamed)) == {"result"}


def test_encode_keeps_infinities_as_strings() -> None:
    assert encode({"x": math.inf, "y": [math.nan]}) == b'{"x":"+Inf","y":["NaN"]}\n'


def test_fleet_reads_the_fleet_stats_not_a_whole_snapshot() -> None:
    stats = FleetStats(kind="redis", host="h1", endpoint="redis://x", requests=0, errors=0, failovers=0,
                       leases_lost=0, last_error=None, groups=())
    asked: list[float] = []

    def no_snapshot() -> EngineSnapshot:
        raise AssertionError("fleet took a whole engine snapshot")

    def fleet_stats(now: float) -> FleetStats:
        asked.append(now)
        return stats

    dispatcher = Dispatcher(replace(FakeDaemon().handlers(), snapshot=no_snapshot, fleet_stats=fleet_stats,
                                    fleet_views=lambda: []))
    result = ask(dispatcher, {"v": 1, "cmd": "fleet"})["result"]
    assert result["configured"] is True and result["host"] == "h1" and asked == [NOW]


def test_fleet_without_a_fleet_says_so() -> None:
    result = ask(dispatcher_for(busy_snapshot()), {"v": 1, "cmd": "fleet"})["result"]
    assert result == {"configured": False}


# --------------------------------------------------------------------------- watchdogctl's side (real sockets)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="wdv-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class ScriptedDaemon:
    """A control socket answering each request with ``answer(request)``; records what it was asked."""

    def __init__(self, path: Path, answer: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.requests: list[dict[str, Any]] = []
        self._answer = answer
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen(4)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\n" not in data and (chunk := conn.recv(65536)):
                    data += chunk
                request = json.loads(data)
                self.requests.append(request)
                conn.sendall(encode(self._answer(request)))

    def close(self) -> None:
        self._sock.close()


def old_daemon(snap: EngineSnapshot) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A daemon from before the summary view: it refuses ``view`` as its parser did."""

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        if request.get("args"):
            key = sorted(request["args"])[0]
            return {"v": 1, "ok": False,
                    "error": {"code": "bad_request", "message": f"status: unknown argument {key!r}"}}
        return {"v": 1, "ok": True, "result": status_document(snap, pid=1, version="0.0.9")}

    return answer


def test_watchdogctl_status_asks_for_the_summary_and_json_for_everything(
    short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snap = busy_snapshot()
    server = ControlServer(short_dir / "c.sock", None, replace(FakeDaemon().handlers(), snapshot=lambda: snap))
    server.start()
    try:
        sock = str(short_dir / "c.sock")
        code = cli.main(["--socket", sock, "--color", "never", "status"])
        table = capsys.readouterr().out
        assert code == cli.EXIT_GAVE_UP
        expected = status_document(snap, pid=os.getpid(), version="9.9.9")
        assert table.rstrip("\n") == cli.render_status(expected, cli.Palette(False))
        assert cli.main(["--socket", sock, "status", "--json"]) == cli.EXIT_GAVE_UP
        doc = json.loads(capsys.readouterr().out)
        assert "view" not in doc and [list(r) for r in doc["rules"]] == [FULL_KEYS] * len(snap.rules)
        assert cli.main(["--socket", sock, "check"]) == 2
        assert capsys.readouterr().out.startswith("WATCHDOGD CRITICAL - ")
        with pytest.raises(cli.Refused, match="^status: view must be one of full, summary, got 'all'$"):
            cli.call(sock, "status", {"view": "all"})
        assert cli.call(sock, "version")["protocol"] == 1  # and the daemon carries on
    finally:
        server.close()


def test_watchdogctl_status_still_works_with_a_daemon_older_than_the_view(
    short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snap = busy_snapshot()
    daemon = ScriptedDaemon(short_dir / "c.sock", old_daemon(snap))
    try:
        sock = str(short_dir / "c.sock")
        assert cli.main(["--socket", sock, "--color", "never", "status"]) == cli.EXIT_GAVE_UP
        expected = cli.render_status(status_document(snap, pid=1, version="0.0.9"), cli.Palette(False))
        assert capsys.readouterr().out.rstrip("\n") == expected
        assert [r.get("args") for r in daemon.requests] == [{"view": "summary"}, {}]
        assert cli.main(["--socket", sock, "check"]) == 2
        assert [r.get("args") for r in daemon.requests[2:]] == [{"view": "summary"}, {}]
        assert cli.main(["--socket", sock, "status", "--json"]) == cli.EXIT_GAVE_UP  # one request, no view
        assert [r.get("args") for r in daemon.requests[4:]] == [{}]
    finally:
        daemon.close()


def test_another_refusal_is_not_mistaken_for_an_old_daemon(
    short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(request: dict[str, Any]) -> dict[str, Any]:
        return {"v": 1, "ok": False, "error": {"code": "internal", "message": "internal error: boom"}}

    daemon = ScriptedDaemon(short_dir / "c.sock", refuse)
    try:
        assert cli.main(["--socket", str(short_dir / "c.sock"), "status"]) == cli.EXIT_REFUSED
        assert capsys.readouterr().err == "watchdogctl: internal error: boom\n"
        assert len(daemon.requests) == 1
    finally:
        daemon.close()


def test_a_big_reply_reaches_a_slow_reader_whole(short_dir: Path) -> None:
    """A status of thousands of rules is megabytes: the daemon must not cut its tail when the reader lags.

    The client half-closes after its request (as ``call`` does), so the
    server's linger ends at once; closing then must not drop what the
    transport still buffers.
    """
    snap = snapshot(*(rule(f"rule-{n:05d}") for n in range(4000)))
    server = ControlServer(short_dir / "c.sock", None, replace(FakeDaemon().handlers(), snapshot=lambda: snap))
    server.start()
    try:
        for _ in range(3):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(30)
                sock.connect(str(short_dir / "c.sock"))
                sock.sendall(b'{"v": 1, "cmd": "status"}\n')
                sock.shutdown(socket.SHUT_WR)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                data = bytearray()
                while chunk := sock.recv(4096):  # a reader slower than the writer: small reads
                    data += chunk
            reply = json.loads(data)
            assert reply["ok"] and len(reply["result"]["rules"]) == 4000
    finally:
        server.close()
