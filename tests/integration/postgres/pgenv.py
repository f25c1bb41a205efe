"""Real PostgreSQL for tests and the benchmark: the machine's server, and throwaway clusters.

Everything a test creates carries a unique ``wdt_<hex>_`` prefix and is
removed afterwards, because other engineers' tests use the same server at
the same time. Only backends of roles created here are ever terminated.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from tests.helpers import free_port, wait_until  # noqa: F401  (re-exported for this package)

PG_BIN = Path("/usr/lib/postgresql/15/bin")
HOST, PORT = "127.0.0.1", 5432
ADMIN_DSN = f"host={HOST} port={PORT} user=postgres dbname=postgres"


def _isready(host: str, port: int) -> bool:
    return subprocess.run([str(PG_BIN / "pg_isready"), "-q", "-h", host, "-p", str(port)],
                          check=False, timeout=15).returncode == 0


def ensure_machine_server() -> None:
    """Start the machine's cluster if it is down; fail loudly (never skip) when that does not work."""
    if _isready(HOST, PORT):
        return
    versions = sorted(os.listdir("/etc/postgresql"))
    if not versions:
        raise RuntimeError("no PostgreSQL cluster under /etc/postgresql to start")
    started = subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
        capture_output=True, text=True, check=False, timeout=60,
    )
    if started.returncode != 0 and not _isready(HOST, PORT):
        raise RuntimeError(f"cannot start PostgreSQL: {started.stderr.strip() or started.stdout.strip()}")
    wait_until(lambda: _isready(HOST, PORT), 30, "PostgreSQL on 127.0.0.1:5432")


def dsn(user: str, dbname: str = "postgres", host: str = HOST, port: int = PORT, **extra: str) -> str:
    parts = {"host": host, "port": str(port), "user": user, "dbname": dbname, **extra}
    return " ".join(f"{key}={value}" for key, value in parts.items())


class PgEnv:
    """Roles, databases and client sessions made for one test, all dropped by ``cleanup``."""

    def __init__(self, host: str = HOST, port: int = PORT) -> None:
        self.host, self.port = host, port
        self.prefix = f"wdt_{uuid.uuid4().hex[:8]}_"
        self.admin = psycopg.connect(dsn("postgres", host=host, port=port), autocommit=True)
        self.roles: list[str] = []
        self.databases: list[str] = []
        self.sessions: list[psycopg.Connection[Any]] = []

    def role(self, name: str, *grants: str, superuser: bool = False) -> str:
        role = self.prefix + name
        self.admin.execute(sql.SQL("CREATE ROLE {} LOGIN {}").format(
            sql.Identifier(role), sql.SQL("SUPERUSER" if superuser else "NOSUPERUSER")))
        self.roles.append(role)
        for grant in grants:
            self.admin.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(grant), sql.Identifier(role)))
        return role

    def database(self, name: str, owner: str | None = None) -> str:
        db = self.prefix + name
        self.admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(db), sql.Identifier(owner or "postgres")))
        self.databases.append(db)
        return db

    def dsn(self, user: str, dbname: str = "postgres", **extra: str) -> str:
        return dsn(user, dbname, self.host, self.port, **extra)

    def connect(self, user: str, dbname: str = "postgres", application_name: str = "wdt-app",
                autocommit: bool = True) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.dsn(user, dbname, application_name=application_name), autocommit=autocommit)
        self.sessions.append(conn)
        return conn

    def pids(self, *conns: psycopg.Connection[Any]) -> list[int]:
        return [conn.info.backend_pid for conn in conns]

    def alive(self, pid: int) -> bool:
        row = self.admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
        return bool(row and row[0])

    def state(self, pid: int) -> str | None:
        row = self.admin.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
        return row[0] if row else None

    def cleanup(self) -> None:
        for conn in self.sessions:
            conn.close()
        if self.roles:
            # Only backends of roles made here: never anyone else's.
            self.admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY(%s)",
                               [self.roles])
            wait_until(lambda: not self.admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = ANY(%s)", [self.roles]).fetchone()[0],
                10, "test backends to exit")
        for db in self.databases:
            self.admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        for role in reversed(self.roles):
            self.admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        self.admin.close()


class Cluster:
    """A throwaway PostgreSQL made with initdb, for tests that stop the server or need 1,000 backends.

    initdb refuses to run as root, so the data lives in a directory owned by
    the ``postgres`` OS user outside pytest's root-only tmp_path.
    """

    def __init__(self, *, max_connections: int = 100, settings: dict[str, str] | None = None,
                 replica_of: Cluster | None = None) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="wdt-pg-"))
        postgres = pwd.getpwnam("postgres")
        os.chown(self.base, postgres.pw_uid, postgres.pw_gid)
        self.data = self.base / "data"
        self.port = free_port()
        self.host = HOST
        self.options = {"listen_addresses": HOST, "max_connections": str(max_connections), "fsync": "off",
                        "unix_socket_directories": str(self.base), **(settings or {})}
        try:
            if replica_of is None:
                self._as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                                   "--no-sync", "-N"])
            else:
                # -R writes standby.signal and primary_conninfo: a streaming hot standby once started.
                self._as_postgres([str(PG_BIN / "pg_basebackup"), "-D", str(self.data), "-R", "-X", "stream",
                                   "-h", replica_of.host, "-p", str(replica_of.port), "-U", "postgres",
                                   "--no-sync", "-c", "fast"])
        except BaseException:
            shutil.rmtree(self.base, ignore_errors=True)
            raise

    def _as_postgres(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True,
                                check=False, timeout=120)
        if result.returncode != 0:
            log = (self.base / "log").read_text(errors="replace")[-2000:] if (self.base / "log").exists() else ""
            raise RuntimeError(f"{argv[0]} failed: {result.stderr.strip()} {result.stdout.strip()}\n{log}")
        return result

    def start(self) -> None:
        opts = " ".join(f"-c {key}={value}" for key, value in self.options.items())
        self._as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "log"),
                           "-o", f"-p {self.port} {opts}", "-w", "-t", "60", "start"])

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"])

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def destroy(self) -> None:
        if self.running():
            try:
                self.stop("immediate")
            except RuntimeError:
                pass
        shutil.rmtree(self.base, ignore_errors=True)

    def dsn(self, user: str = "postgres", dbname: str = "postgres") -> str:
        return dsn(user, dbname, self.host, self.port)
