"""PostgreSQL targets, probe and action params as the operator writes them in YAML."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.helpers import WATCHDOGD
from watchdogd.config import ConfigError, parse_config
from watchdogd.families.postgres.actions import CancelParams, SignalParams, VacuumParams
from watchdogd.families.postgres.target import PostgresParams


def config_errors(body: str, tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(textwrap.dedent(body), tmp_path / "w.yaml")
    return list(caught.value.problems)


def test_target_defaults_and_label_without_credentials() -> None:
    params = PostgresParams(dsn="postgresql://watchdogd:s3cret@db.example:6432/app")
    assert (params.connect_timeout, params.statement_timeout, params.max_backoff) == (5.0, 5.0, 60.0)
    assert params.label == "db.example:6432/app"
    assert "s3cret" not in repr(params)
    assert PostgresParams(dsn="host=/run/postgresql user=x").label == "/run/postgresql:5432/x"


def test_dsn_from_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "dsn"
    secret.write_text("host=127.0.0.1 user=w dbname=d\n")
    secret.chmod(0o600)
    assert PostgresParams(dsn_file=str(secret)).conninfo == "host=127.0.0.1 user=w dbname=d"
    monkeypatch.setenv("WDT_DSN", "host=10.0.0.1 dbname=e")
    assert PostgresParams(dsn_env="WDT_DSN").label == "10.0.0.1:5432/e"
    secret.chmod(0o644)
    with pytest.raises(ValidationError, match="readable by others"):
        PostgresParams(dsn_file=str(secret))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "set one of dsn, dsn_file or dsn_env"),
    ({"dsn": "host=x", "dsn_env": "X"}, "set only one of dsn, dsn_env"),
    ({"dsn": "host=x nonsense"}, 'dsn is not a valid libpq connection string: missing "=" after "nonsense"'),
    ({"dsn": "host=x colour=blue"}, 'invalid connection option "colour"'),
    ({"dsn_env": "WDT_SURELY_UNSET"}, "environment variable WDT_SURELY_UNSET is not set"),
    ({"dsn": "host=x", "connect_timeout": "500ms"}, "greater than or equal to 1"),
    ({"dsn": "host=x", "statement_timeout": "soon"}, "expected a duration"),
])
def test_target_errors(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PostgresParams(**kwargs)  # type: ignore[arg-type]


def test_action_waits_must_fit_in_the_timeout() -> None:
    assert CancelParams().grace == 10.0
    assert SignalParams().record_query_text is False
    assert VacuumParams().lock_timeout == 5.0
    with pytest.raises(ValidationError, match=r"the waits \(65s\) must be shorter than timeout \(60s\)"):
        CancelParams(grace="1m")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="must be shorter than timeout"):
        SignalParams(wait_exit="2m")  # type: ignore[arg-type]


def test_a_whole_policy_parses(tmp_path: Path) -> None:
    config = parse_config(textwrap.dedent("""\
        targets:
          postgres:
            main: {dsn: "host=127.0.0.1 user=watchdogd dbname=postgres"}
        rules:
          pg-idle:
            probe: postgres.idle
            params: {exclude_users: [replicator], client_addrs: [10.0.0.0/8, local]}
            above: 1h
            actions:
              - postgres.terminate: {max_per_run: 50}
          pg-long:
            probe: postgres.long_query
            above: 5m
            actions:
              - postgres.cancel: {grace: 30s, timeout: 2m}
          pg-bloat:
            probe: postgres.dead_ratio
            above: 0.2
            actions:
              - postgres.vacuum: {lock_timeout: 2s}
    """), tmp_path / "w.yaml")
    assert config.rules["pg-idle"].thresholds.above == 3600
    assert config.rules["pg-idle"].target == "main"
    assert [a.target for a in config.rules["pg-long"].actions] == ["main"]


def test_config_errors_name_file_line_and_key(tmp_path: Path) -> None:
    problems = config_errors("""\
        targets:
          postgres:
            main: {dsn: "host=x", dsn_env: X}
            other: {}
        rules:
          a:
            probe: postgres.idle
            target: main
            params: {exclude_user: [x], client_addrs: [10.0.0/8]}
            above: 1h
          b:
            probe: postgres.long_query
            target: main
            above: 1h
            actions:
              - postgres.cancel: {grace: 2m}
    """, tmp_path)
    path = tmp_path / "w.yaml"
    assert problems == [
        f"{path}:3: targets.postgres.main: set only one of dsn, dsn_env",
        f"{path}:4: targets.postgres.other: set one of dsn, dsn_file or dsn_env",
        f"{path}:9: rules.a.params.client_addrs[0]: '10.0.0/8' is not a CIDR like 10.0.0.0/8, an address like "
        "192.0.2.7, or 'local'",
        f"{path}:9: rules.a.params.exclude_user: unknown key; did you mean 'exclude_users'?",
        f"{path}:16: rules.b.actions[0].postgres.cancel: the waits (125s) must be shorter than timeout (60s)",
    ]


def test_bad_config_is_one_line_per_problem_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(textwrap.dedent(f"""\
        state_dir: {tmp_path}/state
        targets:
          postgres:
            main: {{dsn: "host=x bogus"}}
        rules: {{}}
    """))
    path.chmod(0o600)
    result = subprocess.run([*WATCHDOGD, "--config", str(path), "--once"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (f'{path}:4: targets.postgres.main: dsn is not a valid libpq connection string: '
                                     'missing "=" after "bogus" in connection info string')


def test_no_postgres_target_means_psycopg_is_never_imported(tmp_path: Path) -> None:
    """The memory budget of a host without PostgreSQL: psycopg stays out of the process."""
    code = textwrap.dedent(f"""\
        import sys
        from pathlib import Path
        from watchdogd.config import parse_config
        import watchdogd.registry, watchdogd.families.postgres.probes, watchdogd.families.postgres.actions
        parse_config("rules: {{}}\\n", Path("{tmp_path}/w.yaml"))
        assert "psycopg" not in sys.modules, sorted(m for m in sys.modules if "psycopg" in m)
        print("clean")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
                            env={**os.environ})
    assert result.stdout.strip() == "clean", result.stderr


def test_the_documented_policy_parses(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "postgres.md").read_text()
    block = text.split("## Shipped policy (example)")[1].split("```yaml")[1].split("```")[0]
    block = block.replace("dsn_file: /etc/watchdogd/pg-main.dsn", 'dsn: "host=127.0.0.1 user=watchdogd"')
    config = parse_config(block, tmp_path / "w.yaml")
    assert {rule.probe for rule in config.rules.values()} >= {
        "postgres.up", "postgres.connections", "postgres.idle", "postgres.idle_in_transaction",
        "postgres.long_query", "postgres.blocking", "postgres.replication_lag", "postgres.replicas",
        "postgres.dead_ratio"}
