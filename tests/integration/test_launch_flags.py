"""The daemon as the unit starts it (``-OO``, no column positions, its own bytecode cache); its children do not."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.helpers import run, write_config
from watchdogd.launch import daemon_argv


def test_the_daemon_runs_optimized_from_its_own_cache_and_its_exec_actions_do_not(tmp_path: Path) -> None:
    """-OO strips the daemon's docstrings; an exec action's Python script keeps its asserts and its column
    positions (no_debug_ranges: ``co_positions`` without columns), and the config child, which reads
    docstrings (argparse, pydantic's models), runs unoptimized or the config would fail."""
    pycache = tmp_path / "pycache"
    out = tmp_path / "flags.txt"
    script = ("import sys; open(sys.argv[1], 'w').write(' '.join(map(str, "
              "(sys.flags.optimize, __debug__, next(compile('1', 's', 'eval').co_positions())[2] is None))))")
    config = write_config(
        tmp_path,
        f"""\
        rules:
          always:
            probe: host.memory
            above: 0
            actions:
              - exec: {{argv: ["{sys.executable}", "-c", "{script}", "{out}"], settle: 0s}}
    """,
    )
    result = run([*daemon_argv(sys.executable, pycache), "--config", str(config), "--once"])
    assert result.returncode == 1, result.stderr  # firing: the action ran
    assert out.read_text() == "0 True False"
    compiled = {path.name for path in pycache.rglob("*.pyc")}
    assert f"daemon.{sys.implementation.cache_tag}.opt-2.pyc" in compiled, sorted(compiled)[:20]
    assert all(".opt-2." in name for name in compiled), sorted(name for name in compiled if ".opt-2." not in name)
