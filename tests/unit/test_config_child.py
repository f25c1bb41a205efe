"""The daemon's config load in a child (watchdogd.configchild): the same answer as in process, or one line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.helpers import write_config
from watchdogd.config import ConfigError, load_config
from watchdogd.configchild import load_config_in_child

GOOD = """\
    interval: 5s
    notify:
      sinks:
        am: {alertmanager: {url: "http://127.0.0.1:9093", resend: 2m}}
        ops: {webhook: {url: "https://hooks.example.com/w", secret_env: HOOK_KEY, headers: {X-Team: db}}}
      default: {when: act_first}
    fleet:
      host: web-17
      coordinator: {etcd: {endpoints: ["http://127.0.0.1:2379"], prefix: /w/}}
      groups:
        restarts: {max_hosts: 2, max_runs: 10, per: 10m, rules: [disk]}
    targets:
      postgres:
        main: {dsn: "host=127.0.0.1 user=x password=s3cret", optional: true}
    rules:
      disk: {probe: host.disk, above: 90%, for: 1m, actions: [{files.clean: {path: /var/tmp/x, older_than: 7d}}]}
      idle: {probe: postgres.idle_in_transaction, target: main, above: 1h}
"""


def test_the_child_hands_back_the_config_a_load_in_process_makes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every section kind crosses: targets with a secret, rules, actions, notify sinks, the fleet budget."""
    monkeypatch.setenv("HOOK_KEY", "s3cret")
    path = write_config(tmp_path, GOOD)
    config = load_config_in_child(path, force_dry_run=True)
    assert config == load_config(path, force_dry_run=True)
    assert config.dry_run and config.rules["disk"].actions[0].params.older_than == 7 * 86400  # type: ignore[attr-defined]
    assert config.fleet is not None and config.fleet_groups == {"disk": "restarts"}
    assert set(config.notify.sinks) == {"am", "ops"}


def test_problems_come_back_as_the_load_reports_them(tmp_path: Path) -> None:
    path = write_config(tmp_path, "interval: 0s\nrules:\n  disk: {probe: host.disk, abve: 1}\n")
    with pytest.raises(ConfigError) as in_process:
        load_config(path)
    with pytest.raises(ConfigError) as in_child:
        load_config_in_child(path)
    assert in_child.value.problems == in_process.value.problems and len(in_child.value.problems) == 3


def test_a_check_that_takes_too_long_is_one_problem(tmp_path: Path) -> None:
    path = write_config(tmp_path, GOOD)
    with pytest.raises(ConfigError) as caught:
        load_config_in_child(path, timeout=0.001)
    assert caught.value.problems == (f"{path}:1: checking the config took longer than 0.001s",)


def test_a_child_that_fails_or_cannot_start_is_one_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, GOOD)
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with pytest.raises(ConfigError) as failed:
        load_config_in_child(path)
    assert failed.value.problems == (f"{path}:1: the config check failed (exit 1): no output",)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "missing-python"))
    with pytest.raises(ConfigError) as missing:
        load_config_in_child(path)
    assert len(missing.value.problems) == 1 and "cannot start the config check" in missing.value.problems[0]
