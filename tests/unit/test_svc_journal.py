"""journal.vacuum: the argv it builds and the dry-run estimate over real files in a temp journal dir.

The real ``journalctl --vacuum-*`` runs against a real journald in
tests/integration/services/test_svc_systemd.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from watchdogd.families.systemd.journal import ACTIONS, VacuumAction, VacuumParams, archived_files, estimate

DAY = 86400.0


def test_argv_uses_plain_units_journalctl_understands() -> None:
    params = VacuumParams.model_validate({"max_age": "7d", "max_size": "2GiB", "max_files": 5})
    assert params.argv() == [
        "journalctl", "--vacuum-time=604800s", f"--vacuum-size={2 * 2**30}", "--vacuum-files=5",
    ]


@pytest.mark.parametrize(
    ("params", "message"),
    [({}, "set at least one of max_age"), ({"max_files": 0}, "greater than or equal to 1"),
     ({"max_age": "soon"}, "expected a duration")],
)
def test_bad_params(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        VacuumParams.model_validate(params)


def journal_dir(tmp_path: Path, now: float) -> Path:
    machine = tmp_path / "journal" / "0123456789abcdef"
    machine.mkdir(parents=True)
    for age_days, name, size in [
        (30, "system@0001-0000000000000001-0005f0.journal", 4000),
        (10, "system@0002-0000000000000002-0005f1.journal", 3000),
        (2, "user-1000@0003-0000000000000003-0005f2.journal", 2000),
        (1, "system.journal~", 1000),
        (0, "system.journal", 5000),  # active: never counted as archived
    ]:
        path = machine / name
        path.write_bytes(b"\0" * size)
        os.utime(path, (now - age_days * DAY, now - age_days * DAY))
    return tmp_path / "journal"


def test_archived_files_oldest_first(tmp_path: Path) -> None:
    now = time.time()
    files = archived_files([str(journal_dir(tmp_path, now))])
    assert [Path(a.path).name[:8] for a in files] == ["system@0", "system@0", "user-100", "system.j"]
    assert files[0].size == 4000


def test_estimate_by_age_size_and_count(tmp_path: Path) -> None:
    now = time.time()
    files = archived_files([str(journal_dir(tmp_path, now))])
    total = sum(a.size for a in files) + 5000
    by_age = estimate(files, VacuumParams(max_age=7 * DAY), now, total)
    assert [a.size for a in by_age] == [4000, 3000]
    by_size = estimate(files, VacuumParams(max_size=9000), now, total)  # 15000 -> 11000 -> 8000
    assert [a.size for a in by_size] == [4000, 3000]
    by_count = estimate(files, VacuumParams(max_files=3), now, total)
    assert [a.size for a in by_count] == [4000]


def test_dry_run_runs_only_read_only_steps(tmp_path: Path) -> None:
    now = time.time()
    top = journal_dir(tmp_path, now)
    action = VacuumAction(VacuumParams(max_age=7 * DAY), time.time, dirs=[str(top)])
    result = action.run([], dry_run=True)
    assert result.ok
    [item] = result.items
    assert item.subject == "journal"
    assert "would run journalctl --vacuum-time=604800s" in item.detail
    assert "about 2 of 4 archived file(s), 7000 bytes" in item.detail
    assert len(list(top.rglob("*journal*"))) == 5  # nothing deleted


def test_registered() -> None:
    assert set(ACTIONS) == {"journal.vacuum"}
