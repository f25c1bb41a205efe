"""Pure pieces of the PostgreSQL and Redis evidence: bounding, redaction, the client-list summary."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from watchdogd.contracts import Describes, EvidenceLimits
from watchdogd.families.postgres import probes as pg
from watchdogd.families.postgres.target import PostgresClient, PostgresParams
from watchdogd.families.redis import probes as rd
from watchdogd.families.redis.clients import client_rows, idle_bucket, summarize_clients, top_counts
from watchdogd.families.redis.target import RedisTarget, RedisTargetParams

LIMITS = EvidenceLimits(deadline=float("inf"), max_bytes=64 * 1024, max_items=3)


def limits(**changes: Any) -> EvidenceLimits:
    return EvidenceLimits(**{**LIMITS.__dict__, **changes})


@pytest.mark.parametrize("fit", [pg.fit, rd.fit])
def test_fit_halves_the_longest_list_until_the_json_fits_and_says_so(fit: Any) -> None:
    sections = {
        "big": {"rows": [{"n": i, "text": "x" * 50} for i in range(40)], "total": 40},
        "small": {"rows": [1, 2, 3]},
    }
    fitted = fit(sections, 1000)
    assert len(json.dumps(fitted)) <= 1000
    rows = fitted["big"]["rows"]
    assert rows == [{"n": i, "text": "x" * 50} for i in range(len(rows))]  # the first (worst) rows are kept
    assert fitted["big"]["cut"] == "max_bytes"
    assert fitted["small"] == {"rows": [1, 2, 3]}  # untouched: it was never the longest


@pytest.mark.parametrize("fit", [pg.fit, rd.fit])
def test_fit_leaves_what_fits_alone_and_gives_up_on_what_cannot_shrink(fit: Any) -> None:
    small = {"a": {"rows": [1, 2]}}
    assert fit(small, 1000) == {"a": {"rows": [1, 2]}}
    huge = {"a": {"text": "x" * 5000}}
    assert fit(huge, 100) == {"a": {"text": "x" * 5000}}  # no list to cut: the engine drops the section


def test_every_probe_of_both_families_describes() -> None:
    pg_client = PostgresClient(PostgresParams(dsn="host=127.0.0.1 port=1 dbname=x"))  # no I/O until used
    redis_target = RedisTarget(RedisTargetParams(url="redis://127.0.0.1:1/0"))
    params = {"redis.queue_length": {"keys": ["q"]}}
    for table, client in ((pg.PROBES, pg_client), (rd.PROBES, redis_target)):
        for kind, spec in table.items():
            probe = spec.factory(spec.params(**params.get(kind, {})), client, time.time)
            assert isinstance(probe, Describes), kind


def _backend_row(**values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "pid": 7, "blocked_by": [1, 2, 3, 4, 5], "usename": "u" * 300, "datname": "db", "application_name": "app",
        "state": "active", "waiting_seconds": 1.23456, "transaction_seconds": None, "locktype": "relation",
        "mode": "AccessShareLock", "relation": "t", "query": "SELECT secret", "total": 9,
    }
    return {**row, **values}


def test_postgres_rows_redact_queries_cut_texts_and_lists() -> None:
    section = pg._blocked([_backend_row()] * 5, LIMITS)
    assert section["waiting"] == 9
    assert len(section["blocked"]) == 3  # max_items
    row = section["blocked"][0]
    assert row["query"] == pg.REDACTED
    assert row["blocked_by"] == [1, 2, 3]
    assert len(row["user"]) == pg.TEXT_CHARS
    assert (row["waiting_seconds"], row["transaction_seconds"]) == (1.235, None)
    shown = pg._blocked([_backend_row()], limits(show_queries=True))
    assert shown["blocked"][0]["query"] == "SELECT secret"


def test_postgres_prepared_transactions_block_without_a_backend() -> None:
    row: dict[str, Any] = {
        "pid": 0, "blocks": 2, "backend_type": None, "usename": None, "datname": None, "application_name": None,
        "state": None, "waiting": False, "transaction_seconds": None, "state_seconds": None,
        "holds": [], "query": None, "total": 1,
    }
    [blocker] = pg._blocking([row], limits(show_queries=True))["blocking"]
    assert (blocker["kind"], blocker["query"], blocker["blocks_directly"]) == ("prepared transaction", None, 2)


def test_postgres_out_of_time_before_the_first_statement_sends_nothing() -> None:
    class Conn:
        def execute(self, *args: Any) -> Any:
            raise AssertionError("no statement may be sent after the deadline")

    reader = pg._Reader(Conn(), deadline=time.monotonic())  # type: ignore[arg-type]
    with pytest.raises(pg._OutOfTime):
        reader.rows("SELECT 1", {})
    assert reader.cut


def test_idle_buckets_and_top_counts() -> None:
    assert [idle_bucket(s) for s in (0, 9, 10, 59, 60, 3599, 3600, 86399, 86400)] == [
        "under 10s", "under 10s", "10s to 1m", "10s to 1m", "1m to 10m", "10m to 1h", "1h to 1d", "1h to 1d",
        "over 1d"]
    assert top_counts({"a": 5, "b": 3, "c": 1, "d": 1}, 2) == {"a": 5, "b": 3, "(other)": 2}


CLIENT_LIST = "\n".join(
    f"id={i} addr={ip}:{5000 + i} laddr=127.0.0.1:6379 fd=8 name={name} age={100 + i} idle={idle} flags={flags}"
    " db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=1024 rbp=0 obl=0 oll=0"
    f" omem=0 tot-mem=1 events=r cmd={cmd} user=default redir=-1 resp=2"
    for i, (ip, name, idle, flags, cmd) in enumerate([
        ("10.0.0.1", "pool-secret", 7200, "N", "get"),
        ("10.0.0.1", "pool-secret", 30, "N", "get"),
        ("10.0.0.2", "worker", 5, "b", "blpop"),
        ("127.0.0.1", "watchdogd", 99999, "N", "info"),
    ])
) + "\n"


def test_client_summary_counts_everyone_lists_the_idle_without_names() -> None:
    summary = summarize_clients(client_rows(CLIENT_LIST), "watchdogd", 2)
    assert summary["clients"] == 4
    assert summary["by_flags"] == {"N": 3, "b": 1}
    assert summary["by_command"] == {"get": 2, "blpop": 1, "(other)": 1}  # ties by name
    assert summary["by_idle"] == {"under 10s": 1, "10s to 1m": 1, "1h to 1d": 1, "over 1d": 1}
    assert summary["by_ip"] == {"10.0.0.1": 2, "10.0.0.2": 1, "(other)": 1}
    assert [c["addr"] for c in summary["longest_idle"]] == ["10.0.0.1:5000", "10.0.0.1:5001"]  # not watchdogd
    assert "secret" not in json.dumps(summary) and "worker" not in json.dumps(summary)


def test_slowlog_arguments_only_with_show_queries_in_both_reply_forms() -> None:
    raw = [[5, 1700000000, 25000, [b"set", b"session:1", b"token-secret"], b"10.0.0.1:5000", b"app-name"]]
    parsed = [{"id": 5, "start_time": 1700000000, "duration": 25000, "command": b"set session:1 token-secret",
               "client_address": b"10.0.0.1:5000", "client_name": b"app-name"}]
    for reply in (raw, parsed):
        [hidden] = rd.slowlog_evidence(reply, LIMITS)
        assert hidden == {"id": 5, "unix_time": 1700000000, "duration_seconds": 0.025, "command": "SET",
                          "args": rd.REDACTED, "client": "10.0.0.1:5000"}
        [shown] = rd.slowlog_evidence(reply, limits(show_queries=True))
        assert shown["args"] == "session:1 token-secret"


class FakeTarget:
    """Answers like a tiny Redis and records what was asked, so the bounds can be checked exactly."""

    client_name = "watchdogd"

    def __init__(self, keys: dict[bytes, int]) -> None:
        self.keys = keys
        self.sent: list[tuple[Any, ...]] = []

    def command(self, *args: Any) -> Any:
        self.sent.append(args)
        if args[0] == "SCAN":
            names = sorted(self.keys)
            start = int(args[1])
            batch = names[start:start + args[3]]
            nxt = start + args[3]
            return (nxt if nxt < len(names) else 0, batch)
        raise AssertionError(args)

    def pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        self.sent.extend(commands)
        answers: dict[str, Callable[[tuple[Any, ...]], Any]] = {
            "MEMORY": lambda c: self.keys.get(c[2]), "TYPE": lambda c: b"string", "TTL": lambda c: -1,
            "STRLEN": lambda c: self.keys[c[1]],
        }
        return [answers[c[0]](c) for c in commands]


def test_biggest_keys_scans_a_bounded_sample_and_describes_only_the_top() -> None:
    target = FakeTarget({f"k{i:05}".encode(): i for i in range(5000)})
    section = rd._biggest_keys(target, LIMITS)  # type: ignore[arg-type]
    assert section["scanned"] == rd.BIGKEYS_SCAN
    assert "sample" in section
    assert [k["key"] for k in section["keys"]] == ["k00999", "k00998", "k00997"]
    assert section["keys"][0] == {"key": "k00999", "bytes": 999, "type": "string", "length": 999,
                                  "ttl_seconds": None}
    assert sum(1 for c in target.sent if c[0] == "SCAN") == rd.BIGKEYS_SCAN // rd.BIGKEYS_COUNT
    assert sum(1 for c in target.sent if c[0] == "TYPE") == 3  # max_items, not every key scanned


def test_biggest_keys_cuts_key_names_and_stops_at_the_deadline() -> None:
    target = FakeTarget({b"x" * 300: 10})
    [entry] = rd._biggest_keys(target, LIMITS)["keys"]  # type: ignore[arg-type]
    assert entry["key"] == "x" * rd.KEY_CHARS
    late = FakeTarget({b"a": 1})
    assert rd._biggest_keys(late, limits(deadline=time.monotonic())) == {  # type: ignore[arg-type]
        "scanned": 0, "keys": [], "cut": "deadline"}
    assert late.sent == []
