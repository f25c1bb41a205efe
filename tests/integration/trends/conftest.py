"""The trend tests run real daemons: they share the interface tests' fixtures (short paths, daemon processes)."""

from __future__ import annotations

from tests.integration.interfaces.conftest import short_dir, start_daemon  # noqa: F401 (the daemon tests' fixtures)
