"""Which backends a per-backend probe may report: include/exclude by user, db, app glob, client CIDR."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from watchdogd.families.postgres.filters import BackendFilter, BackendSelector


def row(**overrides: Any) -> dict[str, Any]:
    base = {"usename": "app", "datname": "shop", "application_name": "web-1", "client_addr": "10.1.2.3",
            "superuser": False}
    return base | overrides


def selects(params: dict[str, Any], **overrides: Any) -> bool:
    return BackendSelector(BackendFilter(**params))(row(**overrides))


def test_empty_filter_takes_every_non_superuser() -> None:
    assert selects({})
    assert not selects({}, superuser=True)
    assert selects({"include_superusers": True}, superuser=True)


@pytest.mark.parametrize(("params", "overrides", "expected"), [
    ({"users": ["app"]}, {}, True),
    ({"users": ["ap?"]}, {}, True),
    ({"users": ["other"]}, {}, False),
    ({"exclude_users": ["app"]}, {}, False),
    ({"users": ["a*"], "exclude_users": ["app"]}, {}, False),  # exclude wins
    ({"databases": ["shop"]}, {}, True),
    ({"databases": ["shop"]}, {"datname": None}, False),
    ({"exclude_databases": ["sh*"]}, {}, False),
    ({"application_names": ["web-*"]}, {}, True),
    ({"application_names": ["web-*"]}, {"application_name": "batch"}, False),
    ({"exclude_application_names": ["web-*", "cron"]}, {"application_name": "cron"}, False),
    ({"exclude_application_names": [""]}, {"application_name": ""}, False),  # the unnamed ones
    ({"application_names": ["WEB-*"]}, {}, False),  # case-sensitive, like PostgreSQL's names
])
def test_globs(params: dict[str, Any], overrides: dict[str, Any], expected: bool) -> None:
    assert selects(params, **overrides) is expected


@pytest.mark.parametrize(("cidrs", "client", "expected"), [
    (["10.0.0.0/8"], "10.1.2.3", True),
    (["10.0.0.0/8"], "192.0.2.1", False),
    (["10.1.2.3"], "10.1.2.3", True),
    (["2001:db8::/32"], "2001:db8::7", True),
    (["2001:db8::/32"], "10.1.2.3", False),
    (["local"], None, True),
    (["local"], "10.1.2.3", False),
    (["10.0.0.0/8"], None, False),
    (["10.0.0.0/8", "local"], None, True),
])
def test_client_addrs(cidrs: list[str], client: str | None, expected: bool) -> None:
    assert selects({"client_addrs": cidrs}, client_addr=client) is expected
    assert selects({"exclude_client_addrs": cidrs}, client_addr=client) is not expected


@pytest.mark.parametrize(("value", "message"), [
    ("10.0.0/8", "'10.0.0/8' is not a CIDR like 10.0.0.0/8"),
    ("10.1.0.0/8", "'10.1.0.0/8' has host bits set; did you mean '10.0.0.0/8'"),
    ("localhost", "or 'local'"),
])
def test_bad_cidrs_are_named(value: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        BackendFilter(client_addrs=[value])


def test_unknown_keys_are_errors() -> None:
    with pytest.raises(ValidationError, match="extra"):
        BackendFilter(exclude_user=["x"])  # type: ignore[call-arg]
