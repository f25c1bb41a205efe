"""Which PostgreSQL backends a per-backend probe may report (and so an action may touch).

Filtering happens in Python on the rows of one ``pg_stat_activity`` read:
globs and CIDRs translated to SQL would be a second, subtly different
matcher, and the probe has to read every client backend anyway to notice
rows it is not allowed to see.

What is *always* left out is not configurable: the daemon's own backends
(killing them would blind it), and everything that is not a client backend
(walsenders, autovacuum, background and parallel workers), which
``pg_terminate_backend`` should never be pointed at by a runbook.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from watchdogd.contracts import Params
from watchdogd.spec import AfterValidator

LOCAL = "local"
"""The ``client_addrs`` token for Unix-socket connections, which have no address."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _network(value: str) -> Network | None:
    """None stands for ``local``."""
    if value == LOCAL:
        return None
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a CIDR like 10.0.0.0/8, an address like 192.0.2.7, or 'local'"
        ) from None
    raise ValueError(f"{value!r} has host bits set; did you mean {str(loose)!r}?")


def _check_address(value: str) -> str:
    _network(value)
    return value


Address = Annotated[str, AfterValidator(_check_address)]
"""A CIDR, a plain address, or ``local``; checked per list item so errors name the item."""


class BackendFilter(Params):
    """Include/exclude lists for per-backend probes. Empty include lists mean "all".

    Users, databases and application names are globs (``app-*``); client
    addresses are CIDRs (``10.0.0.0/8``), plain addresses, or ``local``.
    An exclude always wins over an include.
    """

    users: list[str] = []
    exclude_users: list[str] = []
    databases: list[str] = []
    exclude_databases: list[str] = []
    application_names: list[str] = []
    exclude_application_names: list[str] = []
    client_addrs: list[Address] = []
    exclude_client_addrs: list[Address] = []
    include_superusers: bool = False


def _glob(patterns: list[str]) -> Callable[[str], bool] | None:
    if not patterns:
        return None
    match = re.compile("|".join(fnmatch.translate(p) for p in patterns)).match
    return lambda value: match(value) is not None


@dataclass(frozen=True, slots=True)
class _Addresses:
    networks: tuple[Network, ...]
    local: bool

    @classmethod
    def of(cls, values: list[str]) -> _Addresses | None:
        if not values:
            return None
        nets = [_network(v) for v in values]
        return cls(tuple(n for n in nets if n is not None), any(n is None for n in nets))

    def __call__(self, client: str | None) -> bool:
        if client is None:
            return self.local
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


class BackendSelector:
    """A ``BackendFilter`` compiled once per probe; ``__call__`` runs per row, so it stays cheap."""

    def __init__(self, params: BackendFilter) -> None:
        self._include_superusers = params.include_superusers
        self._checks: tuple[tuple[str, Callable[[Any], bool] | None, Callable[[Any], bool] | None], ...] = (
            ("usename", _glob(params.users), _glob(params.exclude_users)),
            ("datname", _glob(params.databases), _glob(params.exclude_databases)),
            ("application_name", _glob(params.application_names), _glob(params.exclude_application_names)),
            ("client_addr", _Addresses.of(params.client_addrs), _Addresses.of(params.exclude_client_addrs)),
        )

    def __call__(self, row: Mapping[str, Any]) -> bool:
        if row["superuser"] and not self._include_superusers:
            return False
        for column, include, exclude in self._checks:
            value = row[column]
            if column != "client_addr":
                value = value or ""
            if include is not None and not include(value):
                return False
            if exclude is not None and exclude(value):
                return False
        return True
