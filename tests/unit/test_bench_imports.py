"""bench/bench_imports.py's accounting: which group a module's RSS is counted in, and the mix policy it loads."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_imports  # noqa: E402

from watchdogd.config import load_config  # noqa: E402


def test_each_module_is_imported_in_its_group() -> None:
    modules = ["watchdogd.units", "pydantic", "yaml", "bcrypt", "wave", "psutil", "gzip"]
    report = bench_imports.import_groups(modules)
    groups = report["groups"]
    assert [label for label, _ in report["steps"]] == ["interpreter", *(label for label, _ in bench_imports.GROUPS)]
    assert sorted(groups[0]) == ["psutil", "yaml"]  # the required stack
    assert groups[1] == []  # no client library asked for
    assert groups[2] == ["pydantic"]
    assert groups[3] == ["bcrypt"]  # third-party that no group names
    assert sorted(groups[4]) == ["gzip", "wave"]  # the rest of the stdlib
    assert groups[5] == ["watchdogd.units"]
    assert report["failed"] == []


def test_the_mix_policy_loads(tmp_path: Path) -> None:
    config = tmp_path / "w.yaml"
    config.write_text(bench_imports.mix_config(30).format(tmp=tmp_path))
    config.chmod(0o600)
    loaded = load_config(config)
    assert len(loaded.rules) == 30
    assert loaded.state_dir == tmp_path / "state"
    assert any(rule.probe == "host.file_age" for rule in loaded.rules.values())
