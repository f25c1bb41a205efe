"""The import layering in pyproject.toml's [tool.importlinter]: the real tree keeps every contract, and
`lint-imports` does fail, naming the contract, when a copy of the tree gets an import that breaks one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The console script installed next to this interpreter (the venv's, in scripts/test).
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CONTRACTS = {
    c["type"] + ":" + (c.get("source_modules") or c.get("containers") or [""])[0]: c["name"]
    for c in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
}
LAYERS = CONTRACTS["layers:watchdogd"]
ENGINE_LAYERS = CONTRACTS["layers:watchdogd.engine"]
INDEPENDENT_FAMILIES = CONTRACTS["independence:"]
FAMILIES_FORBIDDEN = CONTRACTS["forbidden:watchdogd.families"]
CONTRACTS_FORBIDDEN = CONTRACTS["forbidden:watchdogd.contracts"]
DAEMON_NO_CLI = CONTRACTS["forbidden:watchdogd.daemon"]


def lint_imports(root: Path) -> tuple[int, str]:
    """Run lint-imports on the watchdogd package under `root`, with `root`'s pyproject.toml; return the exit status
    and the output with its line wrapping undone (long contract names wrap)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    # --no-cache: no .import_linter_cache left in the checkout.
    proc = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, check=False, capture_output=True, text=True, timeout=60
    )
    return proc.returncode, " ".join((proc.stdout + proc.stderr).split())


def verdicts(output: str) -> dict[str, str]:
    """Each contract's KEPT or BROKEN, as the summary reports it."""
    found = {}
    for name in CONTRACTS.values():
        for verdict in ("KEPT", "BROKEN"):
            if f"{name} {verdict}" in output:
                found[name] = verdict
    return found


def test_the_real_tree_keeps_every_contract() -> None:
    status, output = lint_imports(REPO)
    assert status == 0, output
    assert verdicts(output) == dict.fromkeys(CONTRACTS.values(), "KEPT"), output
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in output


@pytest.mark.parametrize(
    ("module", "line", "broken", "chain"),
    [
        # The case the independence contract exists for: one family reaching into another.
        (
            "families/redis/probes.py",
            "from watchdogd.families.postgres import queries",
            {INDEPENDENT_FAMILIES},
            "watchdogd.families.redis.probes -> watchdogd.families.postgres.queries",
        ),
        # (Modules that import little, so that only the contracts named break: engine.engine, say, would
        # also reach every family through config and registry.)
        (
            "families/host/probes.py",
            "from watchdogd.engine import snapshot",
            {LAYERS, FAMILIES_FORBIDDEN},
            "watchdogd.families.host.probes -> watchdogd.engine.snapshot",
        ),
        (
            "contracts.py",
            "import watchdogd.families",
            {LAYERS, CONTRACTS_FORBIDDEN},
            "watchdogd.contracts -> watchdogd.families",
        ),
        # Indirect imports count: families import units, so they now reach faces too.
        (
            "units.py",
            "from watchdogd.faces import textfile",
            {LAYERS, FAMILIES_FORBIDDEN},
            "watchdogd.units -> watchdogd.faces.textfile",
        ),
        (
            "core/policy.py",
            "from watchdogd.contracts import Family",
            {LAYERS},
            "watchdogd.core.policy -> watchdogd.contracts",
        ),
        # Inside the engine: the gate must not drive the runner (it is handed a remeasure function instead).
        (
            "engine/gate.py",
            "from watchdogd.engine import runner",
            {ENGINE_LAYERS},
            "watchdogd.engine.gate -> watchdogd.engine.runner",
        ),
        # The control socket reusing a helper of watchdogctl's would load the whole CLI into the daemon.
        (
            "faces/control.py",
            "from watchdogd.faces.cli import socket_from_config",
            {DAEMON_NO_CLI},
            "watchdogd.faces.control -> watchdogd.faces.cli",
        ),
        # exhaustive: a new top-level module must be given a layer.
        ("newhelper.py", "", {LAYERS}, "- watchdogd.newhelper"),
    ],
)
def test_a_breaking_import_fails_naming_the_contract(
    tmp_path: Path, module: str, line: str, broken: set[str], chain: str
) -> None:
    shutil.copytree(REPO / "watchdogd", tmp_path / "watchdogd", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / "watchdogd" / module
    with path.open("a") as f:
        f.write(f"\n{line}\n")

    status, output = lint_imports(tmp_path)

    assert status != 0, output
    assert verdicts(output) == {name: "BROKEN" if name in broken else "KEPT" for name in CONTRACTS.values()}, output
    assert chain in output, output
