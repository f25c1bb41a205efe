"""CLIENT LIST parsing, protected clients and the operator's filters (pure functions)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from watchdogd.families.redis.clients import (
    CLIENT_FIELDS,
    ClientDetails,
    ClientFilter,
    ClientFilterParams,
    client_rows,
    parse_client_list,
    protected_reason,
    unprotected,
)

REDIS_70 = (
    "id={id} addr={addr} laddr=127.0.0.1:6379 fd=8 name={name} age=9 idle={idle} flags={flags} db=0 sub=0 "
    "psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=1024 rbp=0 obl=0 oll=0 omem=0 "
    "tot-mem=1 events=r cmd={cmd} user={user} redir=-1 resp=2"
)
REDIS_62 = (  # no ssub, multi-mem, rbs, rbp, resp
    "id={id} addr={addr} laddr=127.0.0.1:6379 fd=8 name={name} age=9 idle={idle} flags={flags} db=0 sub=0 "
    "psub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 obl=0 oll=0 omem=0 tot-mem=1 events=r cmd={cmd} "
    "user={user} redir=-1"
)
REDIS_72 = REDIS_70 + " lib-name=redis-py lib-ver=5.0.1"


def line(template: str = REDIS_70, **values: str) -> str:
    fields = {"id": "7", "addr": "10.1.2.3:50000", "name": "worker", "idle": "42", "flags": "N",
              "cmd": "get", "user": "default"}
    return template.format(**{**fields, **values})


@pytest.mark.parametrize("template", [REDIS_62, REDIS_70, REDIS_72])
def test_rows_from_every_recent_format(template: str) -> None:
    raw = "\n".join(line(template, id=str(i), idle=str(i * 10)) for i in range(1, 4)) + "\n"
    rows = client_rows(raw.encode())
    assert [row[CLIENT_FIELDS.index("idle")] for row in rows] == ["10", "20", "30"]
    first = dict(zip(CLIENT_FIELDS, rows[0], strict=True))
    assert first == {"id": "1", "addr": "10.1.2.3:50000", "name": "worker", "age": "9", "idle": "10",
                     "flags": "N", "db": "0", "cmd": "get", "user": "default"}


def test_a_line_of_another_shape_and_odd_values_still_parse() -> None:
    raw = line() + "\n" + line(name="a=b", cmd="client|list") + " extra=1\n\n"
    rows = parse_client_list(raw)
    assert rows[1]["name"] == "a=b" and rows[1]["cmd"] == "client|list" and rows[1]["idle"] == "42"


def test_missing_fields_are_empty_not_an_error() -> None:
    (row,) = parse_client_list("id=3 addr=1.2.3.4:5 fd=1 name= idle=5 flags=N\n")
    assert row["id"] == "3" and row["user"] == "" and row["cmd"] == ""


def test_undecodable_names_are_escaped() -> None:
    (row,) = parse_client_list(line(name="x").encode().replace(b"name=x", b"name=\xff"))
    assert row["name"] == "\\xff"


def test_empty_reply() -> None:
    assert client_rows(b"") == []


@pytest.mark.parametrize(
    ("flags", "name", "why"),
    [
        ("N", "worker", None),
        ("x", "worker", None),  # inside MULTI: nothing special
        ("S", "", "a replica"),
        ("M", "", "the link to this replica's master"),
        ("P", "", "a pub/sub subscriber"),
        ("O", "", "a MONITOR session"),
        ("b", "", "blocked in a command"),
        ("N", "watchdogd", "watchdogd's own connection"),
    ],
)
def test_protected_clients(flags: str, name: str, why: str | None) -> None:
    reason = protected_reason(flags, name, "watchdogd")
    assert (reason is None) if why is None else (reason is not None and reason.startswith(why))


def row(**values: str) -> tuple[str, ...]:
    base = {"id": "1", "addr": "10.1.2.3:5000", "name": "worker-1", "age": "1", "idle": "1", "flags": "N",
            "db": "0", "cmd": "get", "user": "app"}
    base.update(values)
    return tuple(base[name] for name in CLIENT_FIELDS)


def test_filters() -> None:
    def keeps(params: ClientFilterParams, **values: str) -> bool:
        return bool(ClientFilter(params).select([row(**values)]))

    assert keeps(ClientFilterParams())
    assert keeps(ClientFilterParams(names=["worker-*"]))
    assert not keeps(ClientFilterParams(names=["celery*"]))
    assert not keeps(ClientFilterParams(exclude_names=["worker-*"]))
    assert keeps(ClientFilterParams(names=[""]), name="")
    assert not keeps(ClientFilterParams(names=[""]))
    assert keeps(ClientFilterParams(users=["app"]))
    assert not keeps(ClientFilterParams(exclude_users=["a*"]))
    assert keeps(ClientFilterParams(commands=["GET"]))  # config is case-insensitive
    assert keeps(ClientFilterParams(commands=["client|*"]), cmd="client|list")
    assert not keeps(ClientFilterParams(exclude_commands=["get", "set"]))
    assert keeps(ClientFilterParams(addresses=["10.0.0.0/8"]))
    assert not keeps(ClientFilterParams(addresses=["192.168.0.0/16"]))
    assert not keeps(ClientFilterParams(exclude_addresses=["10.1.2.3"]))
    assert keeps(ClientFilterParams(addresses=["::1"]), addr="[::1]:5000")
    assert keeps(ClientFilterParams(addresses=["unix"]), addr="/run/redis.sock:0", flags="U")
    assert not keeps(ClientFilterParams(addresses=["10.0.0.0/8"]), addr="/run/redis.sock:0", flags="U")
    both = ClientFilterParams(names=["worker-*"], exclude_names=["worker-1"])
    assert not keeps(both) and keeps(both, name="worker-2")


def test_select_keeps_order_and_unprotected_drops_the_protected() -> None:
    rows = [row(id=str(i), name=f"w{i}", flags=flags) for i, flags in enumerate(["N", "P", "b", "x", "N"])]
    rows.append(row(id="9", name="watchdogd"))
    kept = unprotected(rows, "watchdogd")
    assert [r[0] for r in kept] == ["0", "3", "4"]
    chosen = ClientFilter(ClientFilterParams(exclude_names=["w3"])).select(kept)
    assert [r[0] for r in chosen] == ["0", "4"]


def test_client_details_is_a_read_only_mapping() -> None:
    details = ClientDetails(row(id="12", idle="42", age="7"), "run-1")
    assert dict(details) == {"id": 12, "addr": "10.1.2.3:5000", "name": "worker-1", "user": "app", "idle": 42,
                             "age": 7, "cmd": "get", "run_id": "run-1"}
    assert details.get("flags") is None and "id" in details and len(details) == 8
    assert details == dict(details)


def test_bad_address_is_a_clear_config_error() -> None:
    with pytest.raises(ValidationError, match="'10.0.0/33' is not an IP address or network"):
        ClientFilterParams(addresses=["10.0.0/33"])
