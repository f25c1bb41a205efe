"""Test-side Docker helpers: labelled containers that are always removed, and polling with a deadline.

Everything a test creates carries ``watchdogd-test.run=<id>`` so teardown
(and ``docker.prune`` in the prune test) can be scoped to exactly this test
session's objects on an engine other test sessions share.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

import docker

from tests.helpers import wait_until  # noqa: F401  (re-exported for this package)
from tests.support.dockerd import NETWORK_MODE

T = TypeVar("T")

RUN_LABEL = "watchdogd-test.run"


class Containers:
    """Creates containers for one test and removes every one of them at teardown."""

    def __init__(self, api: docker.APIClient, image: str, run_id: str) -> None:
        self.api = api
        self.image = image
        self.run_id = run_id
        self.prefix = f"wdt-{run_id}-{uuid.uuid4().hex[:4]}"
        self.ids: list[str] = []

    def name(self, short: str) -> str:
        return f"{self.prefix}-{short}"

    def create(
        self,
        short: str,
        command: list[str],
        *,
        labels: dict[str, str] | None = None,
        start: bool = True,
        healthcheck: dict[str, Any] | None = None,
        **host: Any,
    ) -> str:
        host.setdefault("network_mode", NETWORK_MODE)
        created = self.api.create_container(
            self.image,
            command,
            name=self.name(short),
            labels={RUN_LABEL: self.run_id, **(labels or {})},
            healthcheck=healthcheck,
            host_config=self.api.create_host_config(**host),
        )
        cid = str(created["Id"])
        self.ids.append(cid)
        if start:
            self.api.start(cid)
        return cid

    def state(self, cid: str) -> dict[str, Any]:
        return dict(self.api.inspect_container(cid)["State"])

    def wait_exited(self, cid: str, timeout: float = 20.0) -> dict[str, Any]:
        return wait_until(
            lambda: (s := self.state(cid))["Status"] == "exited" and s, timeout, f"container {cid[:12]} to exit"
        )

    def cleanup(self) -> None:
        for cid in self.ids:
            try:
                self.api.remove_container(cid, force=True, v=True)
            except docker.errors.NotFound:
                pass


def health(cmd: str, interval: float = 0.3, retries: int = 1) -> dict[str, Any]:
    """A healthcheck for create_container (durations in nanoseconds, as the API takes them)."""
    return {
        "test": ["CMD-SHELL", cmd],
        "interval": int(interval * 1e9),
        "timeout": int(2e9),
        "retries": retries,
        "start_period": 0,
    }
