"""The shipped policy, as the steady-state run uses it.

* The Monit tests equivalent to its host rules (thresholds, ``for`` in
  cycles), with the disk rules' mountpoints taken from watchdogd's own
  probe, so Monit watches exactly the filesystems watchdogd does.
* Whether any enabled rule would really act. The shipped rules that act
  are in dry-run; should that ever change, the daemon is started with
  ``--dry-run`` (and the table says so): a benchmark must not restart
  other people's containers or kill their connections.
* Its PostgreSQL targets made to answer, without touching the cluster's
  own roles: the benchmark creates a role of its own name
  (``watchdogd_bench_<pid>``, pg_monitor + pg_signal_backend, as an operator
  creates the DSN's ``watchdogd`` at install time), points the relocated
  policy's DSN at it, and drops that role (and only that role, and only its
  sessions) after. A ``watchdogd`` role that exists, and the daemon that may
  be using it, are never created, changed or dropped: a benchmark must not
  break a watchdogd already running on the machine.

Loading the policy and talking to PostgreSQL happen in child processes
(``_in_child``): the benchmark's own process must not map the libraries the
daemon maps (pydantic-core, psycopg's libpq and OpenSSL). The kernel keeps a
page that two processes map, so a bench holding them would stop the daemon
handing its start-up pages back, and its RSS would read 9 MiB high
(``release_start_pages_after``; bench/README, stop 34).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sidebyside.monitrc import FILESYSTEM_TESTS, Check, unsupported
from sidebyside.processes import BenchError

BENCH = Path(__file__).resolve().parents[1]
CHILD = "import sys; sys.path.insert(0, sys.argv[1]); from sidebyside import shipped; shipped.child_main(sys.argv[2:])"


@dataclass(frozen=True)
class Shipped:
    checks: list[Check]
    enabled: int
    acting: list[str]
    """Enabled rules with actions that are not in dry-run."""
    unsupported: list[str]
    """Probes of the enabled rules Monit has no test for (not host CPU/memory/swap/load/disk/inodes)."""
    summary: str


def _in_child(*args: str) -> Any:
    """``child_main(args)`` in a fresh interpreter of this venv; its JSON answer."""
    done = subprocess.run([sys.executable, "-c", CHILD, str(BENCH), *args], capture_output=True, text=True,
                          timeout=120, check=False)
    if done.returncode != 0:
        raise BenchError(f"shipped policy helper {args[0]} failed: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout)


def child_main(args: list[str]) -> None:
    """The child's side of ``_in_child``: one job, its answer as JSON on stdout."""
    job, rest = args[0], args[1:]
    answer: Any
    if job == "read":
        answer = asdict(_read(Path(rest[0]), Path(rest[1])))
    elif job == "create-role":
        answer = _create_role(rest[0], json.loads(rest[1]), int(rest[2]))
    elif job == "drop-role":
        _drop_role(rest[0], json.loads(rest[1]))
        answer = None
    else:
        raise SystemExit(f"unknown job {job!r}")
    print(json.dumps(answer))


def read(shipped: Path, workdir: Path) -> Shipped:
    """The policy as the steady state uses it, loaded in a child (see the module's docstring)."""
    got = _in_child("read", str(shipped), str(workdir))
    got["checks"] = [Check(**{**check, "mountpoints": tuple(check["mountpoints"])}) for check in got["checks"]]
    return Shipped(**got)


def _read(shipped: Path, workdir: Path) -> Shipped:
    from watchdogd.config import load_config  # noqa: PLC0415 (in the child only)
    from watchdogd.registry import DEFAULT  # noqa: PLC0415

    copy = workdir / "shipped-copy.yaml"
    copy.write_text(shipped.read_text())
    copy.chmod(0o600)  # the daemon refuses a policy others may write
    config = load_config(copy)
    checks: list[Check] = []
    for rule in config.rules.values():
        above = rule.thresholds.above
        if not rule.enabled or above is None:
            continue
        mounts: tuple[str, ...] = ()
        if rule.probe in FILESYSTEM_TESTS:
            probe = DEFAULT.probes[rule.probe].factory(rule.params, None, time.time)
            mounts = tuple(reading.subject for reading in probe.measure())
        checks.append(Check(rule.name, rule.probe, above, rule.thresholds.for_,
                            int(getattr(rule.params, "period", 5)), mounts))
    enabled = [rule for rule in config.rules.values() if rule.enabled]
    acting = [rule.name for rule in enabled if rule.actions and not rule.dry_run]
    others = [c.probe for c in unsupported(checks)] + [r.probe for r in enabled if r.thresholds.above is None]
    return Shipped(checks, len(enabled), acting, others, f"interval {config.interval:g}s; {config.summary()}")


BENCH_ROLE = "watchdogd_bench"
"""Prefix of the benchmark's own PostgreSQL role; the pid (and a counter if taken) makes it this run's."""


@dataclass
class Prepared:
    """What ``prepare_targets`` did: a line per target for the table, and DSNs to swap in the policy copy."""

    notes: list[str] = field(default_factory=list)
    dsns: dict[str, str] = field(default_factory=dict)
    """Shipped DSN -> the same server with the benchmark's own role."""

    def apply(self, text: str) -> str:
        """The relocated policy with each shipped DSN (as a double-quoted YAML scalar) replaced."""
        for old, new in self.dsns.items():
            text = text.replace(json.dumps(old), json.dumps(new))
        return text


def bench_role_names(pid: int | None = None) -> list[str]:
    """Candidates for this run's role, first choice first: never a name the cluster's users would pick."""
    base = f"{BENCH_ROLE}_{os.getpid() if pid is None else pid}"
    return [base] + [f"{base}_{n}" for n in range(1, 10)]


def prepare_targets(stack: ExitStack, shipped: Path) -> Prepared:
    """Give the policy's PostgreSQL targets a role of the benchmark's own for the run (dropped by ``stack``)."""
    raw: dict[str, Any] = yaml.safe_load(shipped.read_text()) or {}
    postgres = ((raw.get("targets") or {}).get("postgres")) or {}
    prepared = Prepared()
    for name, params in postgres.items():
        prepared.notes.append(_prepare_postgres(stack, name, params or {}, prepared.dsns))
    return prepared


def _prepare_postgres(stack: ExitStack, name: str, params: dict[str, Any], dsns: dict[str, str]) -> str:
    """A role of the run's own for one target, made by a child; the drop, by another, goes on ``stack``."""
    made = _in_child("create-role", name, json.dumps(params), str(os.getpid()))
    if made["role"] is not None:
        stack.callback(_in_child, "drop-role", made["role"], json.dumps(made["server"]))
        dsns[made["shipped_dsn"]] = made["dsn"]
    return str(made["note"])


def _admin(server: dict[str, str]) -> Any:
    import psycopg  # noqa: PLC0415 (in the child only)

    return psycopg.connect(host=server["host"], port=server["port"], user="postgres", dbname="postgres",
                           autocommit=True, connect_timeout=5, application_name="watchdogd-bench")


def _create_role(name: str, params: dict[str, Any], pid: int) -> dict[str, Any]:
    import psycopg  # noqa: PLC0415 (in the child only)
    from psycopg import errors, sql  # noqa: PLC0415
    from psycopg.conninfo import conninfo_to_dict, make_conninfo  # noqa: PLC0415

    made: dict[str, Any] = {"role": None, "server": None, "shipped_dsn": None, "dsn": None}
    dsn = params.get("dsn")
    if not isinstance(dsn, str):
        return {**made, "note": f"postgres target {name}: DSN from a file or the environment, used as is"}
    parts = conninfo_to_dict(dsn)
    user = str(parts.get("user") or "")
    server = {"host": str(parts.get("host") or "127.0.0.1"), "port": str(parts.get("port") or "5432")}
    try:
        admin = _admin(server)
    except psycopg.Error as exc:
        return {**made, "note": f"postgres target {name}: cannot create a role of its own "
                                f"({' '.join(str(exc).split())}); its rules run with the DSN as shipped "
                                f"(role {user!r}, untouched)"}
    with admin:
        own = None
        for candidate in bench_role_names(pid):
            try:
                admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(candidate)))
            except errors.DuplicateObject:
                continue  # someone else's (or a killed run's): not ours to use or drop
            own = candidate
            break
        if own is None:
            return {**made, "note": f"postgres target {name}: no free {BENCH_ROLE}_* role name; its rules run "
                                    f"with the DSN as shipped"}
        admin.execute(sql.SQL("GRANT pg_monitor, pg_signal_backend TO {}").format(sql.Identifier(own)))
    shipped_role = f"instead of the shipped {user!r} (never touched)" if user else "(the shipped DSN names none)"
    note = (f"postgres target {name}: role {own!r} {shipped_role}, created for the run with pg_monitor and "
            f"pg_signal_backend, dropped after")
    return {"role": own, "server": server, "shipped_dsn": dsn, "dsn": make_conninfo(dsn, user=own), "note": note}


def _drop_role(own: str, server: dict[str, str]) -> None:
    """Only the sessions and the role this run created."""
    from psycopg import sql  # noqa: PLC0415 (in the child only)

    with _admin(server) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [own])
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(own)))
