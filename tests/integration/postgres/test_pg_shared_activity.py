"""One pg_stat_activity read per target per engine cycle, on the real server (issue 17, Must 2)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.postgres.pgenv import PgEnv
from watchdogd.clients import close_clients, open_clients
from watchdogd.config import parse_config
from watchdogd.engine.engine import Engine
from watchdogd.engine.state import StateStore
from watchdogd.families.postgres import queries as q
from watchdogd.families.postgres.target import PostgresClient

pytestmark = pytest.mark.integration


def count_activity_statements(client: PostgresClient) -> list[float]:
    """Wrap the client's ``query``: the times ``queries.ACTIVITY`` actually went to the server."""
    sent: list[float] = []
    query = client.query

    def counting(statement: Any, params: Any = None) -> Any:
        if statement == q.ACTIVITY:
            sent.append(time.monotonic())
        return query(statement, params)

    client.query = counting  # type: ignore[method-assign]
    return sent


def engine_with_three_rules(pg: PgEnv, tmp_path: Path) -> tuple[Engine, PostgresClient, list[float], Any]:
    watchdog = pg.role("watchdog", "pg_monitor", "pg_signal_backend")
    text = f"""\
state_dir: {tmp_path}/state
targets:
  postgres:
    main: {{dsn: "{pg.dsn(watchdog)}"}}
rules:
  pg-idle:
    probe: postgres.idle
    params: {{users: ["{pg.prefix}*"]}}
    above: 0s
  pg-long:
    probe: postgres.long_query
    params: {{users: ["{pg.prefix}*"]}}
    above: 1h
  pg-connections:
    probe: postgres.connections
    above: 99
"""
    config = parse_config(text, tmp_path / "watchdogd.yaml")
    clients = open_clients(config)
    client = clients[("postgres", "main")]
    assert isinstance(client, PostgresClient)
    sent = count_activity_statements(client)
    store = StateStore(tmp_path / "state.db", time.time)
    engine = Engine(config, store, clients, time.time, grace=False)

    def close() -> None:
        engine.close()
        store.close()
        close_clients(clients, config.registry)

    return engine, client, sent, close


RULES = ("pg-idle", "pg-long", "pg-connections")


def test_the_backend_rules_of_one_engine_cycle_share_one_read(pg: PgEnv, tmp_path: Path) -> None:
    app = pg.role("app")
    idle = [pg.connect(app), pg.connect(app)]
    engine, client, sent, close = engine_with_three_rules(pg, tmp_path)
    try:
        reports = {rule: engine.run_rule(rule) for rule in RULES}  # one cycle: the three are due together
        assert len(sent) == 1
        assert client.activity_reads == 1
        assert all(report.up and report.error is None for report in reports.values()), reports
        assert set(reports["pg-idle"].firing) == {f"pid:{pid}" for pid in pg.pids(*idle)}
        client.forget_activity()  # as after max_age: the next cycle reads afresh
        engine.run_rule("pg-idle")
        assert len(sent) == 2
    finally:
        close()


def test_rules_run_at_once_wait_for_the_read_in_flight(pg: PgEnv, tmp_path: Path) -> None:
    pg.connect(pg.role("app"))
    engine, client, sent, close = engine_with_three_rules(pg, tmp_path)
    barrier = threading.Barrier(len(RULES))
    errors: list[str | None] = []

    def run(rule: str) -> None:
        barrier.wait(10)
        errors.append(engine.run_rule(rule).error)

    try:
        threads = [threading.Thread(target=run, args=(rule,)) for rule in RULES]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == [None, None, None]
        assert len(sent) == 1
    finally:
        close()


def test_the_up_rules_of_one_cycle_share_one_fresh_connection(pg: PgEnv, tmp_path: Path) -> None:
    watchdog = pg.role("watchdog", "pg_monitor")
    # Intervals of their own: three rules alike would share one probe (engine/probegroups.py), and the
    # client's one connection per cycle is what is tested here.
    rules = "".join(f"  up-{i}:\n    probe: postgres.up\n    above: 5s\n    every: {5 + i}s\n" for i in range(3))
    target = f'targets:\n  postgres:\n    main: {{dsn: "{pg.dsn(watchdog)}"}}\n'
    text = f"state_dir: {tmp_path}/state\n{target}rules:\n{rules}"
    config = parse_config(text, tmp_path / "watchdogd.yaml")
    clients = open_clients(config)
    client = clients[("postgres", "main")]
    assert isinstance(client, PostgresClient)
    store = StateStore(tmp_path / "state.db", time.time)
    engine = Engine(config, store, clients, time.time, grace=False)
    try:
        reports = [engine.run_rule(f"up-{i}") for i in range(3)]
        assert all(report.up and not report.firing for report in reports), reports
        assert client.pings == 1  # one connection opened for the three rules of the cycle
        client.retry_within(0.0)  # a max age of 0: every call connects (as the next cycle does)
        engine.run_rule("up-0")
        assert client.pings == 2
    finally:
        engine.close()
        store.close()
        close_clients(clients, config.registry)
