"""Target clients: one per configured target, shared by every rule that names it.

Opening a client must not block or raise: a PostgreSQL that is down at start
is a probe that reports down, not a daemon that refuses to start. Each
target kind's ``connect`` imports its library, so unconfigured kinds cost
no memory.
"""

from __future__ import annotations

import logging

from watchdogd.config import Config
from watchdogd.engine import Clients
from watchdogd.logs import event
from watchdogd.registry import TARGET_KINDS

log = logging.getLogger(__name__)


def open_clients(config: Config) -> dict[tuple[str, str], object]:
    clients: dict[tuple[str, str], object] = {}
    for kind, named in config.targets.items():
        spec = TARGET_KINDS[kind]
        for name, params in named.items():
            clients[(kind, name)] = spec.connect(params)
    return clients


def close_clients(clients: Clients) -> None:
    for (kind, name), client in clients.items():
        try:
            TARGET_KINDS[kind].close(client)
        except Exception as exc:  # closing a dead connection must not stop a reload or shutdown
            event(
                log, logging.WARNING, "closing target client failed", kind=kind, target=name, error=str(exc)
            )
