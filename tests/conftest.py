"""Suite-wide setup: the test daemons keep a bytecode cache, as the shipped one does."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Let the test daemons write their ``-OO`` bytecode (tests/helpers.py: DAEMON_PYCACHE).

    A shell with PYTHONDONTWRITEBYTECODE set (this machine's has it) would
    otherwise make every daemon a test starts compile every module it loads
    again: 0.7 s of CPU per start, hundreds of starts. The unit's daemon runs
    with a clean environment and writes its cache; so do the tests'.
    """
    del config
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
