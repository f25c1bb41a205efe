"""1,000 idle PostgreSQL backends: the ``postgres.idle`` probe, then terminating all of them at once.

Targets (issue 4): the probe at most 50 ms with 1,000 backends; terminating
all 1,000 with ``max_per_run: 1000`` at most 2 s. The server is a throwaway
cluster (initdb, another port, ``max_connections`` 1100) so the machine's
PostgreSQL and its users are not disturbed. The daemon's role is the
least-privileged one the docs prescribe (pg_monitor + pg_signal_backend);
the backends belong to an ordinary role.

Run as root: python bench/bench_postgres.py [--backends N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.postgres.pgenv import Cluster
from watchdogd.families.postgres.target import PostgresClient, PostgresParams
from watchdogd.registry import DEFAULT

PROBE_TARGET_MS = 50.0
TERMINATE_TARGET_S = 2.0
PROBE_RUNS = 30


def open_backends(dsn: str, count: int) -> list[psycopg.Connection[object]]:
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(lambda _: psycopg.connect(dsn, autocommit=True), range(count)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", type=int, default=1000)
    args = parser.parse_args()
    count = args.backends
    cluster = Cluster(max_connections=count + 100, settings={"shared_buffers": "128MB"})
    conns: list[psycopg.Connection[object]] = []
    client: PostgresClient | None = None
    try:
        cluster.start()
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            admin.execute("CREATE ROLE app LOGIN")
            admin.execute("CREATE ROLE watchdogd LOGIN")
            admin.execute("GRANT pg_monitor, pg_signal_backend TO watchdogd")
        started = time.monotonic()
        conns = open_backends(cluster.dsn("app"), count)
        print(f"opened {len(conns)} idle backends in {time.monotonic() - started:.1f}s")
        client = PostgresClient(PostgresParams(dsn=cluster.dsn("watchdogd")))
        probe_spec = DEFAULT.probes["postgres.idle"]
        probe = probe_spec.factory(probe_spec.params(users=["app"]), client, time.time)
        probe.measure()  # connect outside the timing
        timings, readings = [], []
        for _ in range(PROBE_RUNS):
            begun = time.perf_counter()
            readings = probe.measure()
            timings.append((time.perf_counter() - begun) * 1000)
        assert len(readings) == count, f"expected {count} readings, got {len(readings)}"
        median, worst = statistics.median(timings), max(timings)
        p95 = statistics.quantiles(timings, n=20)[-1]
        print(f"postgres.idle over {count} backends: median {median:.1f} ms, p95 {p95:.1f} ms, max {worst:.1f} ms "
              f"({PROBE_RUNS} runs; target <= {PROBE_TARGET_MS:.0f} ms) "
              f"{'OK' if median <= PROBE_TARGET_MS else 'OVER'}")

        action_spec = DEFAULT.actions["postgres.terminate"]
        action = action_spec.factory(action_spec.params(max_per_run=count), client, time.time)
        begun = time.perf_counter()
        dry = action.run(readings, dry_run=True)
        dry_s = time.perf_counter() - begun
        print(f"postgres.terminate dry-run over {count}: {dry_s * 1000:.0f} ms ({dry.detail})")

        begun = time.perf_counter()
        result = action.run(readings, dry_run=False)
        total_s = time.perf_counter() - begun
        exited = [float(i.detail.rsplit("within ", 1)[1].rstrip("s")) for i in result.items
                  if "exited within" in i.detail]
        print(f"postgres.terminate of {count} (max_per_run {count}): {total_s:.2f} s including the wait for "
              f"every backend to exit (signal statement {total_s - max(exited, default=0):.2f} s, exits "
              f"{max(exited, default=0):.2f} s; target <= {TERMINATE_TARGET_S:.0f} s) "
              f"{'OK' if total_s <= TERMINATE_TARGET_S else 'OVER'}")
        print(f"  {result.detail}")
        [left] = client.query("SELECT count(*) AS n FROM pg_stat_activity WHERE usename = 'app'")
        print(f"  backends of 'app' left: {left['n']}")
        ok = median <= PROBE_TARGET_MS and total_s <= TERMINATE_TARGET_S and result.ok and left["n"] == 0
        return 0 if ok else 1
    finally:
        if client is not None:
            client.close()
        for conn in conns:
            conn.close()
        cluster.destroy()


if __name__ == "__main__":
    sys.exit(main())
