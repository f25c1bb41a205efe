"""The coordinator a ``fleet:`` section asks for, kept across a reload that does not change it.

Each kind's module is imported only when configured, so a host without a
fleet budget loads neither etcd3gw nor anything else of it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping

from watchdogd.fleet.coordinator import Coordinator
from watchdogd.fleet.spec import CoordinatorSettings, EtcdSettings, FleetSection, RedisSettings
from watchdogd.secrets import resolve_secret


def _etcd(settings: EtcdSettings, host: str, ttl: float, timeout: float) -> Coordinator:
    from watchdogd.fleet.etcd import EtcdCoordinator  # noqa: PLC0415  (lazy: only a fleet on etcd needs it)

    return EtcdCoordinator(
        settings.endpoints,
        host,
        prefix=settings.prefix,
        lease_ttl=ttl,
        timeout=timeout,
        ca_file=settings.ca_file,
        cert_file=settings.cert_file,
        key_file=settings.key_file,
        username=settings.username,
        password=resolve_secret(None, settings.password_file, settings.password_env, "password"),
    )


def _redis(settings: RedisSettings, host: str, ttl: float, timeout: float) -> Coordinator:
    from watchdogd.fleet.redis import RedisCoordinator  # noqa: PLC0415  (lazy, as above)

    return RedisCoordinator(
        settings.url,
        host,
        prefix=settings.prefix,
        lease_ttl=ttl,
        timeout=timeout,
        password=resolve_secret(None, settings.password_file, settings.password_env, "password"),
        ca_file=settings.ca_file,
    )


BUILDERS: Mapping[str, Callable[[CoordinatorSettings, str], Coordinator]] = {
    "etcd": lambda c, host: _etcd(c.etcd, host, c.lease_ttl, c.timeout) if c.etcd else _missing("etcd"),
    "redis": lambda c, host: _redis(c.redis, host, c.lease_ttl, c.timeout) if c.redis else _missing("redis"),
}
"""Coordinator kind -> how to open it. A new kind is one module and one line."""


def _missing(kind: str) -> Coordinator:
    raise ValueError(f"fleet.coordinator has no {kind} settings")


def host_name(section: FleetSection) -> str:
    return section.host or socket.gethostname()


def open_coordinator(
    section: FleetSection | None,
    previous: tuple[FleetSection, Coordinator] | None = None,
) -> Coordinator | None:
    """The coordinator for ``section``; the running one when its settings and host name are unchanged.

    Opening never talks to the coordinator (it is asked at the first run
    of a rule in a group), so an unreachable one never stops a start.
    """
    if section is None:
        return None
    if previous is not None:
        old_section, old = previous
        if old_section.coordinator == section.coordinator and host_name(old_section) == host_name(section):
            return old
    return BUILDERS[section.coordinator.kind](section.coordinator, host_name(section))
