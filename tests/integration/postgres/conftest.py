"""Fixtures for the PostgreSQL family: the machine's server (started if down) and throwaway clusters."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.postgres.pgenv import Cluster, PgEnv, ensure_machine_server
from watchdogd.families.postgres.target import PostgresClient, PostgresParams


@pytest.fixture(scope="session")
def pg_server() -> None:
    try:
        ensure_machine_server()
    except (RuntimeError, AssertionError) as exc:
        pytest.fail(f"PostgreSQL is required for these tests and could not be started: {exc}")


@pytest.fixture
def pg(pg_server: None) -> Iterator[PgEnv]:
    env = PgEnv()
    try:
        yield env
    finally:
        env.cleanup()


@pytest.fixture
def client_for(pg: PgEnv) -> Iterator[object]:
    """``client_for(role, dbname="postgres", **params)``: a daemon target client, closed afterwards."""
    clients: list[PostgresClient] = []

    def make(role: str, dbname: str = "postgres", **params: object) -> PostgresClient:
        client = PostgresClient(PostgresParams(dsn=pg.dsn(role, dbname), **params))  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def cluster(pg_server: None) -> Iterator[Cluster]:
    made = Cluster()
    try:
        made.start()
        yield made
    finally:
        made.destroy()
