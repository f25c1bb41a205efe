"""files.clean on real trees in tmp_path: what it deletes, what it must never touch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from watchdogd.families.files.actions import ACTIONS, CleanAction
from watchdogd.model import Reading

SPEC = ACTIONS["files.clean"]
NOW = 1_700_000_000.0
DAY = 86400.0
SUBJECTS = [Reading("/", 95.0)]


def clean(root: Path, **params: Any) -> CleanAction:
    params = {"path": str(root / "data"), "older_than": "7d", "allowed_roots": [str(root)], **params}
    return SPEC.factory(SPEC.params(**params), None, lambda: NOW)  # type: ignore[return-value]


def make_file(path: Path, age_days: float, size: int = 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (NOW - age_days * DAY, NOW - age_days * DAY))
    return path


def remaining(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    make_file(data / "old1.log", 30, size=100)
    make_file(data / "old2.log", 8, size=200)
    make_file(data / "new.log", 1)
    make_file(data / "edge.log", 6.99)
    make_file(data / "sub" / "deep" / "old3.log", 10, size=300)
    make_file(data / "sub" / "new2.log", 0)
    return tmp_path


def test_deletes_exactly_the_old_files(tree: Path) -> None:
    result = clean(tree).run(SUBJECTS, dry_run=False)
    assert result.ok, result
    assert remaining(tree / "data") == {"new.log", "edge.log", "sub/new2.log"}
    assert (tree / "data" / "sub" / "deep").is_dir()  # directories are never removed
    assert [Path(i.subject).name for i in result.items] == ["old1.log", "old3.log", "old2.log"]
    assert all(i.ok and i.detail.startswith("deleted") for i in result.items)
    item = result.items[0]
    assert item.info == {"path": str(tree / "data" / "old1.log"), "size": 100, "age": 30 * DAY}
    assert "deleted 3 file(s)" in result.detail
    assert "(600 bytes)" in result.detail
    assert "left" not in result.detail


def test_pattern_and_not_recursive(tree: Path) -> None:
    result = clean(tree, pattern="old[12].*", recursive=False).run(SUBJECTS, dry_run=False)
    assert result.ok
    assert remaining(tree / "data") == {"new.log", "edge.log", "sub/new2.log", "sub/deep/old3.log"}


def test_max_files_oldest_first(tree: Path) -> None:
    action = clean(tree, max_files=2)
    result = action.run(SUBJECTS, dry_run=False)
    assert [Path(i.subject).name for i in result.items] == ["old1.log", "old3.log"]
    assert "1 more eligible file(s) left for the next run" in result.detail
    assert (tree / "data" / "old2.log").exists()
    second = action.run(SUBJECTS, dry_run=False)
    assert [Path(i.subject).name for i in second.items] == ["old2.log"]
    assert "left" not in second.detail


def test_dry_run_lists_exactly_what_the_real_run_deletes(tree: Path) -> None:
    action = clean(tree, max_files=2)
    before = remaining(tree / "data")
    dry = action.run(SUBJECTS, dry_run=True)
    assert remaining(tree / "data") == before
    assert all(i.detail.startswith("would delete") for i in dry.items)
    assert "would delete 2 file(s)" in dry.detail
    real = action.run(SUBJECTS, dry_run=False)
    assert [i.subject for i in dry.items] == [i.subject for i in real.items]
    listed = {str(Path(i.subject).relative_to(tree / "data")) for i in dry.items}
    assert before - remaining(tree / "data") == listed


def test_runs_once_whatever_the_subjects(tree: Path) -> None:
    many = [Reading("/", 95.0), Reading("/var", 97.0), Reading("/home", 91.0)]
    result = clean(tree).run(many, dry_run=False)
    assert len(result.items) == 3  # three files, not three runs' worth of items
    assert len({i.subject for i in result.items}) == 3


def test_symlinks_inside_are_never_followed_or_deleted(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    victim_file = make_file(outside / "precious.db", 100)
    victim_dir_file = make_file(outside / "dir" / "old.log", 100)
    data = tmp_path / "data"
    make_file(data / "old.log", 30)
    (data / "link-to-file").symlink_to(victim_file)
    (data / "link-to-dir").symlink_to(outside / "dir")
    (data / "dangling").symlink_to(tmp_path / "nowhere")
    for link in ("link-to-file", "link-to-dir", "dangling"):
        os.utime(data / link, (NOW - 100 * DAY, NOW - 100 * DAY), follow_symlinks=False)
    # allowed_roots covers outside too: the protection must come from not following links.
    result = clean(tmp_path).run(SUBJECTS, dry_run=False)
    assert result.ok
    assert [Path(i.subject).name for i in result.items] == ["old.log"]
    assert victim_file.exists() and victim_dir_file.exists()
    for link in ("link-to-file", "link-to-dir", "dangling"):
        assert (data / link).is_symlink()


def test_refuses_a_symlinked_directory(tmp_path: Path) -> None:
    make_file(tmp_path / "real" / "old.log", 30)
    (tmp_path / "data").symlink_to(tmp_path / "real")
    result = clean(tmp_path).run(SUBJECTS, dry_run=False)
    assert not result.ok
    assert "symlink" in (result.error or "")
    assert (tmp_path / "real" / "old.log").exists()


def test_refuses_a_directory_that_resolves_outside_the_roots(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    make_file(outside / "app" / "old.log", 30)
    root.mkdir()
    (root / "via").symlink_to(outside)  # a parent component is the symlink
    action = SPEC.factory(
        SPEC.params(path=str(root / "via" / "app"), older_than="1d", allowed_roots=[str(root)]),
        None,
        lambda: NOW,
    )
    result = action.run(SUBJECTS, dry_run=False)
    assert not result.ok
    assert "outside allowed_roots" in (result.error or "")
    assert (outside / "app" / "old.log").exists()


def test_missing_directory_is_an_error_result(tmp_path: Path) -> None:
    result = clean(tmp_path).run(SUBJECTS, dry_run=False)
    assert not result.ok
    assert "not a directory" in (result.error or "")


def test_directories_and_special_files_are_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "olddir").mkdir(parents=True)
    os.mkfifo(data / "fifo")
    for name in ("olddir", "fifo"):
        os.utime(data / name, (NOW - 100 * DAY, NOW - 100 * DAY))
    result = clean(tmp_path).run(SUBJECTS, dry_run=False)
    assert result.ok and result.items == ()
    assert (data / "olddir").is_dir() and (data / "fifo").exists()


def test_unreadable_subdirectory_does_not_stop_the_run(tree: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every directory")
    locked = tree / "data" / "locked"
    make_file(locked / "old.log", 30)
    locked.chmod(0)
    try:
        result = clean(tree).run(SUBJECTS, dry_run=False)
    finally:
        locked.chmod(0o755)
    assert len(result.items) == 3
    assert "error(s) while walking" in result.detail


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"path": "/"}, "root directory"),
        ({"path": "/tmp/../"}, "root directory"),
        ({"path": "//"}, "root directory"),
        ({"path": "relative/dir"}, "absolute"),
        ({"path": "/etc/app"}, "not under any of allowed_roots"),
        ({"path": "/var/libx/app"}, "not under any of allowed_roots"),
        ({"path": "/var/lib/../../etc"}, "not under any of allowed_roots"),
        ({"path": "/srv/app", "allowed_roots": ["/"]}, "root directory"),
        ({"path": "/srv/app", "allowed_roots": ["/srv/../"]}, "root directory"),
        ({"path": "/srv/app", "pattern": "a/b"}, "pattern"),
        ({"path": "/srv/app", "older_than": "soon"}, "duration"),
    ],
)
def test_validation_refuses(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SPEC.params(**{"older_than": "30d", **params})


def test_validation_accepts_and_normalises() -> None:
    params = SPEC.params(path="/var/lib/app//storage/", older_than="30d")
    assert params.path == "/var/lib/app/storage"  # type: ignore[attr-defined]
    assert params.older_than == 30 * DAY  # type: ignore[attr-defined]
    assert SPEC.params(path="/var/log", older_than="1d")  # a shared root itself is allowed
    with pytest.raises(ValidationError):
        SPEC.params(path="/var/lib/app")  # older_than is required
