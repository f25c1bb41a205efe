"""1,000 idle PostgreSQL backends: the ``postgres.idle`` probe, then terminating all of them at once.

Targets (issue 4): the probe at most 50 ms with 1,000 backends; terminating
all 1,000 with ``max_per_run: 1000`` at most 2 s. The server is a throwaway
cluster (initdb, another port, ``max_connections`` 1100) so the machine's
PostgreSQL and its users are not disturbed. The daemon's role is the
least-privileged one the docs prescribe (pg_monitor + pg_signal_backend);
the backends belong to an ordinary role.

Issue 17 (one ``pg_stat_activity`` read per target per cycle): ``--cycle-rules N``
also times cycles of N backend rules on the one target (idle, idle in
transaction, long query, blocking, connections in turn): the daemon's CPU per
cycle and the server's (the shared connection's backend, read from /proc:
the cluster is local), and how many ``pg_stat_activity`` reads a cycle sent.
The script runs unchanged on older code (no shared read: one per rule), so
``PYTHONPATH`` + a copy of this file under the old tree gives the "before".

Run as root: python bench/bench_postgres.py [--backends N] [--cycle-rules 10] [--cycle-only]
"""

from __future__ import annotations

import argparse
import os
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
CYCLES = 40
CYCLE_KINDS = ("postgres.idle", "postgres.idle_in_transaction", "postgres.long_query", "postgres.blocking",
               "postgres.connections")


def backend_cpu(pid: int) -> float:
    """Seconds of CPU (user + system) the server backend ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cycle_cost(client: PostgresClient, rules: int) -> None:
    """CPU per cycle of ``rules`` backend rules on one target, ours and the server's, and reads per cycle."""
    probes = []
    for index in range(rules):
        kind = CYCLE_KINDS[index % len(CYCLE_KINDS)]
        spec = DEFAULT.probes[kind]
        params = {} if kind == "postgres.connections" else {"users": ["app"]}
        probes.append(spec.factory(spec.params(**params), client, time.time))
    [row] = client.query("SELECT pg_backend_pid() AS pid")
    server_pid = int(row["pid"])
    forget = getattr(client, "forget_activity", lambda: None)  # a new cycle, without waiting out max_age
    statements = [0]
    query = client.query

    def counting(statement: object, params: object = None) -> object:
        statements[0] += 1
        return query(statement, params)  # type: ignore[arg-type]

    client.query = counting  # type: ignore[method-assign]
    for probe in probes:
        probe.measure()  # warm up
    ours, theirs, walls = [], [], []
    statements[0] = 0
    for _ in range(CYCLES):
        forget()
        cpu, server, wall = time.process_time(), backend_cpu(server_pid), time.perf_counter()
        for probe in probes:
            probe.measure()
        ours.append((time.process_time() - cpu) * 1000)
        theirs.append((backend_cpu(server_pid) - server) * 1000)
        walls.append((time.perf_counter() - wall) * 1000)
    client.query = query  # type: ignore[method-assign]
    print(f"cycle of {rules} backend rules on one target ({CYCLES} cycles): statements/cycle "
          f"{statements[0] / CYCLES:.1f}; daemon CPU median {statistics.median(ours):.2f} ms, "
          f"server backend CPU {statistics.fsum(theirs) / CYCLES:.2f} ms (mean, 10 ms ticks), "
          f"wall median {statistics.median(walls):.2f} ms")


def open_backends(dsn: str, count: int) -> list[psycopg.Connection[object]]:
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(lambda _: psycopg.connect(dsn, autocommit=True), range(count)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", type=int, default=1000)
    parser.add_argument("--cycle-rules", type=int, default=10, help="backend rules per cycle (0: skip)")
    parser.add_argument("--cycle-only", action="store_true", help="only the cycle figures (no 1,000-backend terminate)")
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
        if args.cycle_rules:
            cycle_cost(client, args.cycle_rules)
        if args.cycle_only:
            return 0
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
