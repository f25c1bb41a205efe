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


SMAPS = """\
55d4c000-55d4d000 r--p 00000000 08:01 1234   /usr/bin/python3.11
Size:                  4 kB
Rss:                   4 kB
55d4d000-55d5e000 r-xp 00001000 08:01 1234   /usr/bin/python3.11
Rss:                1024 kB
7f00000-7f10000 rw-p 00000000 00:00 0
Rss:                 512 kB
7f10000-7f20000 r-xp 00000000 08:01 99   /venv/lib/_pydantic_core.cpython-311-x86_64-linux-gnu.so
Rss:                  96 kB
7ffd000-7ffe000 rw-p 00000000 00:00 0   [stack]
Rss:                   8 kB
"""

MALLOC_STATS = """\
Small block threshold = 512, in 32 size classes.
    0     0      1090             117              3
# arenas allocated total           =                   33
# arenas allocated current         =                   19
19 arenas * 1048576 bytes/arena    =           19,922,944
# bytes in allocated blocks        =           19,113,872
"""


def test_mapped_files_sums_the_resident_pages_of_each_file_and_nothing_anonymous() -> None:
    core = "_pydantic_core.cpython-311-x86_64-linux-gnu.so"
    assert bench_imports.mapped_files(SMAPS) == {"python3.11": 1028, core: 96}


def test_pymalloc_use_reads_live_bytes_and_current_arenas() -> None:
    assert bench_imports.pymalloc_use(MALLOC_STATS) == (19_113_872, 19)
