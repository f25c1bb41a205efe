"""Hostile config files through the real binaries: one located line, non-zero exit, bounded time and memory.

Before the fix the 1.3 KB alias bomb made ``watchdogctl check-config`` hang
while growing to GBs and ``watchdogd --once`` die with a MemoryError
traceback; ``interval: 999999999999d`` died with an OverflowError traceback
at start. Each run here has an address-space limit, so a blow-up is a test
failure, not a machine in swap.
"""

from __future__ import annotations

import re
import resource
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import WATCHDOGCTL, WATCHDOGD, write_config

pytestmark = pytest.mark.integration

ADDRESS_SPACE = 512 * 2**20
"""Far above what checking any config needs (a good one included, see the control case), far below a bomb."""
TIME_LIMIT = 20.0

ALIAS_BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + n)}: &{chr(98 + n)} [{','.join([f'*{chr(97 + n)}'] * 9)}]\n" for n in range(8)
)
HOSTILE: dict[str, tuple[str, str]] = {
    "alias bomb": (ALIAS_BOMB, "YAML aliases expand this to more than 20000 keys and values"),
    "deep nesting": ("rules: " + "[" * 10_000 + "]" * 10_000 + "\n", "nested too deeply"),
    "huge interval": ("interval: 999999999999d\n", "interval: must be at most 1d (got 999999999999d)"),
    "zero interval": ("interval: 0s\n", "interval: must be at least 0.1s (got 0s)"),
    "float interval": ("interval: 1.0e+300\n", "interval: must be at most 1d (got 1e+300)"),
}
COMMANDS = {
    "check-config": lambda path: [*WATCHDOGCTL, "check-config", str(path)],
    "--once": lambda path: [*WATCHDOGD, "--config", str(path), "--once", "--dry-run"],
}


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def run_limited(argv: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(  # noqa: PLW1509 (preexec_fn: only setrlimit, no threads in the test process yet)
        argv, capture_output=True, text=True, timeout=TIME_LIMIT, check=False, preexec_fn=limit_memory
    )
    return result, time.monotonic() - started


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_config_is_one_located_line(tmp_path: Path, case: str, command: str) -> None:
    body, message = HOSTILE[case]
    path = write_config(tmp_path, body + "rules:\n  r: {probe: host.cpu, above: 90}\n" * (case != "deep nesting"))
    result, took = run_limited(COMMANDS[command](path))
    print(f"\n{command} {case}: exit {result.returncode} in {took:.2f}s: {result.stderr.strip()[:160]}")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert re.match(rf"^{re.escape(str(path))}:\d+: ", lines[0]), lines[0]
    assert message in lines[0]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_good_config_passes_under_the_same_limits(tmp_path: Path, command: str) -> None:
    """The control: the limits above refuse bombs, not the checking itself."""
    path = write_config(tmp_path, "interval: 1s\nrules:\n  r: {probe: host.cpu, above: 100}\n")
    result, _ = run_limited(COMMANDS[command](path))
    assert result.returncode == 0, result.stderr
