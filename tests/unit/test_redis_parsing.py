"""Pure pieces of the Redis probes and actions: INFO and SLOWLOG parsing, param validation, the table."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from watchdogd.families.redis.actions import ACTIONS, DeleteKeysParams, has_literal
from watchdogd.families.redis.probes import PROBES, QueueLengthParams, parse_info, parse_slowlog
from watchdogd.model import Cardinality, Unit


def test_parse_info() -> None:
    raw = b"# Server\r\nredis_version:7.0.15\r\nrun_id:abc\r\n\r\n# Stats\r\nevicted_keys:12\r\n"
    assert parse_info(raw) == {"redis_version": "7.0.15", "run_id": "abc", "evicted_keys": "12"}


def test_parse_slowlog_raw_and_parsed_forms() -> None:
    raw = [
        [5, 1700000000, 25000, [b"EVAL", b"secret script", b"0"], b"127.0.0.1:1", b""],
        [4, 1700000000, 12000, [b"keys", b"*"], b"127.0.0.1:1", b"app"],
        [3, 1700000000, 1, [], b"", b""],
    ]
    entries = parse_slowlog(raw)
    assert [(e.id, e.duration, e.command) for e in entries] == [(5, 0.025, "EVAL"), (4, 0.012, "KEYS"), (3, 1e-06, "")]
    parsed = [{"id": 9, "start_time": 1, "duration": 5000, "command": b"HGETALL big"}]
    assert [(e.id, e.duration, e.command) for e in parse_slowlog(parsed)] == [(9, 0.005, "HGETALL")]


@pytest.mark.parametrize(
    ("pattern", "literal"),
    [
        ("search:*", True),
        ("a*", True),
        ("*:tmp", True),
        ("\\*", True),  # an escaped star is a literal star
        ("*", False),
        ("**", False),
        ("?*", False),
        ("[a-z]*", False),
        ("[^a]*", False),
        ("[]]*", False),
        ("[abc", False),  # an unclosed class is still no literal
        ("", False),
    ],
)
def test_has_literal(pattern: str, literal: bool) -> None:
    assert has_literal(pattern) is literal


def test_delete_keys_refuses_match_everything_patterns() -> None:
    with pytest.raises(ValidationError, match="matches every key"):
        DeleteKeysParams(match="*")
    with pytest.raises(ValidationError):
        DeleteKeysParams(match="search:*", max_keys=0)
    params = DeleteKeysParams(match="search:*")
    assert (params.max_keys, params.batch, params.type) == (1000, 250, None)


def test_queue_length_needs_keys_or_patterns() -> None:
    with pytest.raises(ValidationError, match="set 'keys'"):
        QueueLengthParams()
    assert QueueLengthParams(keys=["celery"]).max_keys == 100


def test_tables() -> None:
    assert set(PROBES) == {
        "redis.up", "redis.memory", "redis.memory_bytes", "redis.clients", "redis.blocked_clients",
        "redis.idle_clients", "redis.queue_length", "redis.hit_ratio", "redis.evictions",
        "redis.rejected_connections", "redis.slowlog", "redis.slowlog_entries", "redis.replication",
    }
    assert set(ACTIONS) == {"redis.client_kill", "redis.delete_keys"}
    assert all(spec.target_kind == "redis" for spec in [*PROBES.values(), *ACTIONS.values()])
    assert PROBES["redis.idle_clients"].cardinality is Cardinality.HIGH
    assert all(spec.cardinality is Cardinality.LOW for name, spec in PROBES.items() if name != "redis.idle_clients")
    units = {name: spec.unit for name, spec in PROBES.items()}
    assert units["redis.memory"] is Unit.PERCENT and units["redis.memory_bytes"] is Unit.BYTES
    assert units["redis.hit_ratio"] is Unit.RATIO and units["redis.evictions"] is Unit.PER_SECOND
    assert units["redis.idle_clients"] is Unit.SECONDS and units["redis.queue_length"] is Unit.COUNT
