"""Redis evidence (``describe``) against a private, real redis-server."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from tests.integration.redis.server import RedisServer
from tests.integration.redis.test_target import LEAST_PRIVILEGE
from watchdogd.contracts import Describes, EvidenceLimits
from watchdogd.families.redis.probes import BIGKEYS_SCAN, PROBES
from watchdogd.families.redis.target import RedisTarget

pytestmark = pytest.mark.integration

BIG_KEY = "cache:" + "k" * 150
SECRET_ARG = "wdt-secret-argument"
SECRET_NAME = "wdt-secret-client-name"


def describe(kind: str, target: RedisTarget, *, seconds: float = 2.0, max_bytes: int = 64 * 1024,
             **limits: Any) -> dict[str, Any]:
    spec = PROBES[kind]
    probe = spec.factory(spec.params(), target, time.time)
    assert isinstance(probe, Describes)
    return probe.describe([], EvidenceLimits(deadline=time.monotonic() + seconds, max_bytes=max_bytes, **limits))


def test_the_big_key_the_clients_and_the_slowlog_show(
    server: RedisServer, admin: redis.Redis, target: RedisTarget
) -> None:
    named = server.client(client_name=SECRET_NAME, single_connection_client=True)
    named.ping()
    admin.config_set("slowlog-log-slower-than", 0)  # every command is "slow": the setup is in the slowlog
    admin.mset({f"small:{i}": "x" for i in range(200)})
    admin.rpush(BIG_KEY, *(["y" * 100] * 2000))
    admin.set("ttl:1", "z", ex=300)
    admin.set("plain", SECRET_ARG)
    admin.config_set("slowlog-log-slower-than", 10_000_000)  # and not the evidence's own commands

    started = time.monotonic()
    redacted = describe("redis.memory", target)
    took = time.monotonic() - started
    shown = describe("redis.evictions", target, show_queries=True)
    text = json.dumps(redacted)
    print(f"\nredis describe: {took * 1000:.1f} ms, {len(text)} bytes of JSON")
    assert took < 1.0
    assert len(text) <= 64 * 1024
    assert SECRET_ARG not in text and SECRET_NAME not in text

    biggest = redacted["biggest keys (sample)"]
    assert biggest["scanned"] == 203  # all of them: a small database is scanned whole
    assert "sample" not in biggest and "cut" not in biggest
    top = biggest["keys"][0]
    assert top["key"] == BIG_KEY[:100]
    assert top["bytes"] > 200_000 and (top["type"], top["length"], top["ttl_seconds"]) == ("list", 2000, None)
    assert len(biggest["keys"]) == 20  # max_items
    assert [k["bytes"] for k in biggest["keys"]] == sorted((k["bytes"] for k in biggest["keys"]), reverse=True)

    assert redacted["server"]["role"] == "master" and redacted["server"]["redis_version"]
    assert redacted["memory"]["used_memory"] > 200_000
    assert redacted["keyspace"]["db0"]["keys"] == 203
    assert {"connected_clients", "maxclients"} <= redacted["clients"].keys()
    assert "evicted_keys" in redacted["stats"]

    clients = redacted["client list summary"]
    assert clients["clients"] >= 3  # the admin, the named one, watchdogd
    assert sum(clients["by_idle"].values()) == clients["clients"]
    assert any(c["cmd"] == "ping" for c in clients["longest_idle"])
    assert all(c["addr"].startswith("127.0.0.1:") for c in clients["longest_idle"])

    latest = redacted["slowlog"]["latest"]
    assert {"SET", "MSET", "RPUSH"} <= {entry["command"] for entry in latest}
    assert all(entry["args"] == "<redacted>" for entry in latest)
    [set_plain] = [e for e in shown["slowlog"]["latest"] if e["command"] == "SET" and SECRET_ARG in e["args"]]
    assert set_plain["args"] == f"plain {SECRET_ARG}"


def test_the_key_sample_is_bounded_and_so_is_the_size(admin: redis.Redis, target: RedisTarget) -> None:
    admin.mset({f"k:{i}:" + "n" * 90: "v" * (i % 50) for i in range(3000)})
    sections = describe("redis.up", target, max_bytes=3000)
    biggest = sections["biggest keys (sample)"]
    assert BIGKEYS_SCAN <= biggest["scanned"] < BIGKEYS_SCAN + 200
    assert "not the whole database" in biggest["sample"]
    assert len(json.dumps(sections)) <= 3000
    assert "max_bytes" in json.dumps(sections)  # the longest lists were halved to fit, and say so
    assert biggest["keys"] and sections["server"]["role"] == "master"


def test_out_of_time_it_says_so_instead_of_asking(target: RedisTarget) -> None:
    sections = describe("redis.slowlog", target, seconds=0.0)
    assert sections["memory"] == {"cut": "deadline"}
    assert sections["biggest keys (sample)"] == {"cut": "deadline"}


def test_a_grant_missing_from_the_acl_is_an_error_in_that_section_only(
    admin: redis.Redis, server: RedisServer, make_target: Callable[..., RedisTarget]
) -> None:
    # The documented ACL without the evidence grants (an ACL written before evidence existed).
    older = LEAST_PRIVILEGE.replace(" +memory|usage +ttl +hlen +strlen", "")
    admin.execute_command("ACL", "SETUSER", "watchdogd", *older.split())
    admin.set("a", "b")
    target = make_target(server.url, username="watchdogd", password="s3cret")
    sections = describe("redis.clients", target)
    assert "permission denied" in sections["biggest keys (sample)"]["error"]  # MEMORY USAGE is not granted
    assert "ACL SETUSER" in sections["biggest keys (sample)"]["error"]
    assert sections["memory"]["used_memory"] > 0
    assert sections["client list summary"]["clients"] >= 2
    assert "latest" in sections["slowlog"]
