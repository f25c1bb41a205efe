"""Notifications as the daemon runs them: the pager on the event stream, the outbox, the deliverer.

One object for the daemon to start, reload, ask for figures and stop, so
the composition root stays a list of parts.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping

from watchdogd.configtypes import Config
from watchdogd.engine.engine import Engine
from watchdogd.engine.outbox import Outbox
from watchdogd.model import Clock
from watchdogd.notifications.deliver import Deliverer, SinkStats
from watchdogd.notifications.message import Notification
from watchdogd.notifications.pager import RULE_ITSELF, Pager
from watchdogd.notifications.transports import Transport, transport_for


class NotifyConfigError(ValueError):
    """A sink the config validation could not judge (an unreadable secret, a header we set): one line."""


def build_transports(config: Config) -> dict[str, Transport]:
    """Every sink's transport, or NotifyConfigError naming the file and the sink's key."""
    transports = {}
    for name, sink in config.notify.sinks.items():
        try:
            transports[name] = transport_for(name, sink)
        except ValueError as exc:
            raise NotifyConfigError(f"{config.path}: notify.sinks.{name}: {exc}") from exc
    return transports


class Notifications:
    def __init__(
        self, engine: Engine, config: Callable[[], Config], clock: Clock, transports: Mapping[str, Transport]
    ) -> None:
        self._engine = engine
        self._config = config
        self._clock = clock
        self._transports = transports
        self.outbox = Outbox(engine.store)
        self.deliverer = Deliverer(
            self.outbox,
            lambda: self._transports,
            clock,
            lambda: self._config().notify.give_up_after,
            tick=lambda: self.pager.reconcile(self._engine.snapshot()),
        )
        self.pager = Pager(
            self.outbox, config, clock, self.host, self.deliverer.wake,
            maintenance=lambda now: engine.maintenance(now) is not None,
        )
        engine.events.attach(self.pager, queued=True)

    @property
    def host(self) -> str:
        return self._config().notify.host or socket.gethostname()

    def start(self) -> None:
        """Settle what changed while the daemon was down, then deliver."""
        self.pager.reconcile(self._engine.snapshot())
        self.deliverer.start()

    def reconfigure(self, transports: Mapping[str, Transport]) -> None:
        """After a reload (``build_transports`` of the new config): the new sinks; alerts of rules gone resolved."""
        self._transports = transports
        self.pager.reconcile(self._engine.snapshot())
        self.deliverer.wake()

    def test(self, sink: str) -> str | None:
        """Send a test notification to ``sink`` now; the error text, or None when it was delivered."""
        now = self._clock()
        notification = Notification(
            key=f"test-{now:.6f}",
            kind="test",
            rule="watchdogd",
            subject=RULE_ITSELF,
            severity="info",
            host=self.host,
            summary=f"watchdogd test notification from {self.host}",
            created=now,
            starts_at=now,
        )
        return self.deliverer.send_now(sink, notification)

    def settle(self) -> None:
        """Page now what the stream did not (maintenance mode just ended): reconcile, then deliver."""
        self.pager.reconcile(self._engine.snapshot())
        self.deliverer.wake()

    def stats(self) -> list[SinkStats]:
        return self.deliverer.stats()

    def sinks(self) -> list[str]:
        return sorted(self._transports)

    def flush(self) -> None:
        """``--once``: settle and send what the run decided, once; retries wait for the next run."""
        self.pager.reconcile(self._engine.snapshot())
        self.deliverer.flush()

    def close(self) -> None:
        """After the engine closed (its queued sinks drained into the outbox)."""
        self.deliverer.close()
