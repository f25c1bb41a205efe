"""Backends in the states the probes look for, held open by the test (and always released)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import psycopg

from tests.integration.postgres.pgenv import PgEnv, wait_until


class Busy:
    """A statement running in a thread on ``conn``; ``stop`` cancels it and joins the thread."""

    def __init__(self, env: PgEnv, conn: psycopg.Connection[Any], statement: str, state: str = "active",
                 wait_event_type: str | None = None) -> None:
        self.conn = conn
        self.pid = conn.info.backend_pid
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(statement,), daemon=True)
        self._thread.start()

        def arrived() -> bool:
            row = env.admin.execute(
                "SELECT state, wait_event_type FROM pg_stat_activity WHERE pid = %s", [self.pid]).fetchone()
            if row is None:
                return False
            return row[0] == state and (wait_event_type is None or row[1] == wait_event_type)

        wait_until(arrived, 10, f"backend {self.pid} to be {state} ({wait_event_type or 'any wait'})")

    def _run(self, statement: str) -> None:
        try:
            self.conn.execute(statement)  # type: ignore[call-overload]
        except BaseException as exc:  # cancelled or terminated: that is how most of these end
            self.error = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def stop(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self.conn.cancel_safe(timeout=5)
        self._thread.join(10)


@contextlib.contextmanager
def busy(env: PgEnv, conn: psycopg.Connection[Any], statement: str, state: str = "active",
         wait_event_type: str | None = None) -> Iterator[Busy]:
    running = Busy(env, conn, statement, state, wait_event_type)
    try:
        yield running
    finally:
        running.stop()


SWALLOW_CANCELS = """
DO $$
BEGIN
    LOOP
        BEGIN
            PERFORM pg_sleep(60);
            EXIT;
        EXCEPTION WHEN query_canceled THEN
            NULL;  -- a query that ignores cancel: only pg_terminate_backend stops it
        END;
    END LOOP;
END
$$
"""
