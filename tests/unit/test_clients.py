"""Which target clients exist, and which survive a reload."""

from __future__ import annotations

from pathlib import Path

from watchdogd.clients import close_clients, open_clients, used_targets
from watchdogd.config import parse_config
from watchdogd.registry import DEFAULT

BASE = """\
targets:
  postgres:
    main: {dsn: "postgresql://watchdogd@127.0.0.1:5432/postgres"}
    other: {dsn: "postgresql://watchdogd@127.0.0.1:5433/postgres"}
  redis:
    cache: {url: "redis://127.0.0.1:6379/0"}
rules:
  idle: {probe: postgres.idle, target: main, above: 1h}
  queue: {probe: redis.queue_length, params: {keys: [celery]}, above: 100, enabled: false}
"""


def test_only_targets_of_enabled_rules_are_opened(tmp_path: Path) -> None:
    config = parse_config(BASE, tmp_path / "w.yaml")
    assert used_targets(config) == {("postgres", "main")}
    clients = open_clients(config)
    try:
        assert list(clients) == [("postgres", "main")]
    finally:
        close_clients(clients, DEFAULT)


def test_reload_keeps_unchanged_clients_and_replaces_changed_ones(tmp_path: Path) -> None:
    old_config = parse_config(BASE, tmp_path / "w.yaml")
    old = open_clients(old_config)
    same = parse_config(BASE.replace("enabled: false", "enabled: true"), tmp_path / "w.yaml")
    kept = open_clients(same, reuse=old, previous=old_config)
    assert kept[("postgres", "main")] is old[("postgres", "main")]
    changed = parse_config(BASE.replace("5432", "6543"), tmp_path / "w.yaml")
    fresh = open_clients(changed, reuse=kept, previous=same)
    assert fresh[("postgres", "main")] is not kept[("postgres", "main")]
    close_clients(kept, DEFAULT, keep=fresh)
    close_clients(fresh, DEFAULT)
