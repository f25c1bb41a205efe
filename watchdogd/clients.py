"""Target clients: one per configured target, shared by every rule that names it.

Opening a client must not block or raise: a PostgreSQL that is down at start
is a probe that reports down, not a daemon that refuses to start. Each
target kind's ``connect`` imports its library, so a kind that no enabled rule
uses costs no memory. A reload keeps the clients whose settings did not
change, so it neither drops connections nor resets their backoff.
"""

from __future__ import annotations

import logging

from watchdogd.configtypes import Config
from watchdogd.engine.runtime import Clients
from watchdogd.logs import event
from watchdogd.registry import Registry

log = logging.getLogger(__name__)

TargetKey = tuple[str, str]


def used_targets(config: Config) -> set[TargetKey]:
    """Targets named by enabled rules, directly or through their actions."""
    return set(_shortest_intervals(config))


def open_clients(
    config: Config, reuse: Clients | None = None, previous: Config | None = None
) -> dict[TargetKey, object]:
    """Clients for the targets in use; with ``reuse``, keep those whose params are unchanged."""
    clients: dict[TargetKey, object] = {}
    intervals = _shortest_intervals(config)
    for kind, name in sorted(used_targets(config)):
        params = config.targets[kind][name]
        old = reuse.get((kind, name)) if reuse is not None else None
        unchanged = previous is not None and previous.targets.get(kind, {}).get(name) == params
        spec = config.registry.targets[kind]
        client = old if old is not None and unchanged else spec.connect(params)
        if spec.retry_within is not None:
            # Half the shortest interval: whatever the phase of the runs, the next run of every rule
            # on this target tries to reconnect, so a service that is back is seen within one interval.
            spec.retry_within(client, intervals[(kind, name)] / 2.0)
        clients[(kind, name)] = client
    return clients


def _shortest_intervals(config: Config) -> dict[TargetKey, float]:
    """Per target in use: the shortest interval of the enabled rules that probe or act on it."""
    shortest: dict[TargetKey, float] = {}
    for rule in config.rules.values():
        if not rule.enabled:
            continue
        keys = [(config.registry.probes[rule.probe].target_kind, rule.target)]
        keys += [(config.registry.actions[action.kind].target_kind, action.target) for action in rule.actions]
        for kind, name in keys:
            if kind is not None and name is not None:
                shortest[(kind, name)] = min(shortest.get((kind, name), rule.every), rule.every)
    return shortest


def close_clients(clients: Clients, registry: Registry, keep: Clients | None = None) -> None:
    """Close every client not also in ``keep`` (by identity)."""
    kept = {id(client) for client in (keep or {}).values()}
    for (kind, name), client in clients.items():
        if id(client) in kept:
            continue
        try:
            registry.targets[kind].close(client)
        except Exception as exc:  # closing a dead connection must not stop a reload or shutdown
            event(log, logging.WARNING, "closing target client failed", kind=kind, target=name, error=str(exc))
