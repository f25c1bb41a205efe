"""The shipped policy, as the steady-state run uses it.

* The Monit tests equivalent to its host rules (thresholds, ``for`` in
  cycles), with the disk rules' mountpoints taken from watchdogd's own
  probe, so Monit watches exactly the filesystems watchdogd does.
* Whether any enabled rule would really act. The shipped rules that act
  are in dry-run; should that ever change, the daemon is started with
  ``--dry-run`` (and the table says so): a benchmark must not restart
  other people's containers or kill their connections.
* Its PostgreSQL targets made to answer: the DSN's role is what an operator
  creates at install time (pg_monitor + pg_signal_backend). When it is
  missing on a local server, it is created for the run and dropped after,
  so the PostgreSQL rules measure real queries instead of failed logins.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sidebyside.monitrc import FILESYSTEM_TESTS, Check, unsupported
from watchdogd.config import load_config
from watchdogd.registry import PROBES


@dataclass(frozen=True)
class Shipped:
    checks: list[Check]
    enabled: int
    acting: list[str]
    """Enabled rules with actions that are not in dry-run."""
    unsupported: list[str]
    """Probes of the enabled rules Monit has no test for (not host CPU/memory/swap/load/disk/inodes)."""
    summary: str


def read(shipped: Path, workdir: Path) -> Shipped:
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
            probe = PROBES[rule.probe].factory(rule.params, None, time.time)
            mounts = tuple(reading.subject for reading in probe.measure())
        checks.append(Check(rule.name, rule.probe, above, rule.thresholds.for_,
                            int(getattr(rule.params, "period", 5)), mounts))
    enabled = [rule for rule in config.rules.values() if rule.enabled]
    acting = [rule.name for rule in enabled if rule.actions and not rule.dry_run]
    others = [c.probe for c in unsupported(checks)] + [r.probe for r in enabled if r.thresholds.above is None]
    return Shipped(checks, len(enabled), acting, others, f"interval {config.interval:g}s; {config.summary()}")


def prepare_targets(stack: ExitStack, shipped: Path) -> list[str]:
    """Make the policy's PostgreSQL roles exist for the run; returns what was done, one line each."""
    raw: dict[str, Any] = yaml.safe_load(shipped.read_text()) or {}
    postgres = ((raw.get("targets") or {}).get("postgres")) or {}
    return [_prepare_postgres(stack, name, params or {}) for name, params in postgres.items()]


def _prepare_postgres(stack: ExitStack, name: str, params: dict[str, Any]) -> str:
    import psycopg  # noqa: PLC0415 (only when the policy has a PostgreSQL target)
    from psycopg import sql  # noqa: PLC0415
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415

    dsn = params.get("dsn")
    if not isinstance(dsn, str):
        return f"postgres target {name}: DSN from a file or the environment, used as is"
    parts = conninfo_to_dict(dsn)
    user = str(parts.get("user") or "")
    host, port = str(parts.get("host") or "127.0.0.1"), str(parts.get("port") or "5432")
    try:
        admin = psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", autocommit=True,
                                connect_timeout=5, application_name="watchdogd-bench")
    except psycopg.Error as exc:
        return f"postgres target {name}: cannot prepare role {user!r} ({' '.join(str(exc).split())}); its rules " \
               f"run as they can"
    if not user or admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [user]).fetchone():
        admin.close()
        return f"postgres target {name}: role {user!r} exists, used as is"
    role = sql.Identifier(user)
    admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
    admin.execute(sql.SQL("GRANT pg_monitor, pg_signal_backend TO {}").format(role))

    def drop() -> None:
        try:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [user])
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))
        finally:
            admin.close()

    stack.callback(drop)
    return f"postgres target {name}: created role {user!r} (pg_monitor, pg_signal_backend) for the run, dropped after"
