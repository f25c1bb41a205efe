"""The fault suite shares the interface tests' fixtures: short socket dirs, a daemon factory, an sd_notify receiver."""

from tests.integration.interfaces.conftest import notify, short_dir, start_daemon

__all__ = ["notify", "short_dir", "start_daemon"]
