"""Fixtures for the interface tests: short socket paths, a running daemon, an sd_notify receiver.

Every process and socket started here is stopped in the fixture's teardown,
also when the test fails.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import DaemonProcess, write_config
from tests.integration.interfaces.support import NotifyReceiver


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Unix socket paths are limited to 107 bytes, which pytest's tmp_path can exceed."""
    path = Path(tempfile.mkdtemp(prefix="wdi-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def notify(short_dir: Path) -> Iterator[NotifyReceiver]:
    receiver = NotifyReceiver(short_dir / "notify.sock")
    try:
        yield receiver
    finally:
        receiver.close()


DaemonFactory = Callable[..., DaemonProcess]


@pytest.fixture
def start_daemon(short_dir: Path) -> Iterator[DaemonFactory]:
    """``start_daemon(yaml, env=...)`` writes the config into short_dir and starts the daemon."""
    started: list[DaemonProcess] = []

    def start(body: str, *extra: str, env: dict[str, str] | None = None, name: str = "watchdogd.yaml") -> DaemonProcess:
        config = write_config(short_dir, body, name=name)
        daemon = DaemonProcess(config, *extra, env=env)
        daemon.config = config  # type: ignore[attr-defined]
        started.append(daemon)
        daemon.start()
        return daemon

    try:
        yield start
    finally:
        for daemon in started:
            try:
                daemon.stop(timeout=30)
            except Exception:  # a hung daemon is killed by stop(); keep cleaning the others
                pass

