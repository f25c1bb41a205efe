"""Following log files across rotation and truncation, the match window, and journal parsing."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from watchdogd.contracts import ProbeError
from watchdogd.families.logs.probes import PROBES, JournalSource, MatchWindow
from watchdogd.families.logs.tail import MAX_LINE, FileTail
from watchdogd.model import Unit


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def append(path: Path, *lines: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(f"{line}\n" for line in lines))


def make(kind: str, clock: Any, **params: Any) -> Any:
    spec = PROBES[kind]
    return spec.factory(spec.params.model_validate(params), None, clock)


# --------------------------------------------------------------------------- tail


def test_tail_starts_at_the_end_and_returns_complete_lines(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    append(log, "old 1", "old 2")
    tail = FileTail(str(log))
    assert tail.read().lines == []
    append(log, "new 1")
    with log.open("a") as handle:
        handle.write("half a li")
    assert tail.read().lines == [b"new 1"]
    with log.open("a") as handle:
        handle.write("ne\n")
    assert tail.read().lines == [b"half a line"]


def test_tail_follows_a_rename_rotation_without_losing_lines(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.touch()
    tail = FileTail(str(log))
    tail.read()
    append(log, "before 1", "before 2")
    log.rename(tmp_path / "app.log.1")
    append(tmp_path / "app.log.1", "late write to the old file")  # the app had not reopened yet
    append(log, "after 1")
    batch = tail.read()
    assert batch.events == ["rotated"]
    assert batch.lines == [b"before 1", b"before 2", b"late write to the old file", b"after 1"]
    append(log, "after 2")
    assert tail.read().lines == [b"after 2"]


def test_tail_survives_the_gap_between_rename_and_create(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.touch()
    tail = FileTail(str(log))
    tail.read()
    append(log, "one")
    log.rename(tmp_path / "app.log.1")
    # No file at the path now: not an error once followed; the old file is still read to its end.
    assert tail.read().lines == [b"one"]
    append(log, "two")
    batch = tail.read()
    assert batch.lines == [b"two"] and batch.events == ["rotated"]


def test_tail_restarts_after_truncation(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.touch()
    tail = FileTail(str(log))
    tail.read()
    append(log, "a" * 50, "b" * 50)
    assert len(tail.read().lines) == 2
    with log.open("r+") as handle:
        handle.truncate(0)
    append(log, "after truncate")
    batch = tail.read()
    assert batch.events == ["truncated"] and batch.lines == [b"after truncate"]


def test_tail_bounds_reads_and_line_length(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.touch()
    tail = FileTail(str(log), max_bytes=1000)
    tail.read()
    append(log, *(f"line {i:04d}" for i in range(200)))  # 2000 bytes
    first = tail.read()
    assert first.behind and first.bytes_read == 1000
    second = tail.read()
    assert not second.behind
    assert len(first.lines) + len(second.lines) == 200
    with log.open("ab") as handle:
        handle.write(b"x" * (MAX_LINE + 10))
    tail_big = FileTail(str(log))
    tail_big.read()
    with log.open("ab") as handle:
        handle.write(b"y" * (MAX_LINE * 2))
    assert all(len(line) <= 2 * MAX_LINE for line in tail_big.read().lines)


def test_missing_file_never_opened_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        FileTail(str(tmp_path / "nope.log")).read()


# --------------------------------------------------------------------------- window and probes


def test_match_window_slides() -> None:
    window = MatchWindow(60.0)
    window.slide(0.0)
    window.add(10.0, 3)
    window.add(50.0, 2)
    window.slide(50.0)
    assert window.total == 5 and window.observed(50.0) == 50.0
    window.slide(70.5)
    assert window.total == 2 and window.observed(70.5) == 60.0
    window.slide(111.0)
    assert window.total == 0


def test_log_count_and_rate_across_rotation_and_truncation(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.touch()
    clock = FakeClock()
    count = make("log.count", clock, path=str(log), pattern=r"ERROR", window="1m")
    rate = make("log.matches", clock, path=str(log), pattern=r"ERROR", window="1m")
    assert count.measure()[0].value == 0 and rate.measure()[0].value == 0

    clock.now += 10
    append(log, "INFO fine", "ERROR one", "ERROR two")
    [reading] = count.measure()
    assert reading.value == 2 and reading.details["last_match"] == "ERROR two"
    assert rate.measure()[0].value == pytest.approx(2 / 10)

    clock.now += 10
    append(log, "ERROR three")
    log.rename(tmp_path / "app.log.1")
    append(log, "ERROR four (new file)")
    [reading] = count.measure()
    assert reading.value == 4 and reading.details["events"] == ["rotated"]
    assert rate.measure()[0].value == pytest.approx(4 / 20)

    clock.now += 10
    with log.open("r+") as handle:
        handle.truncate(0)
    append(log, "ERROR five")
    [reading] = count.measure()
    assert reading.value == 5 and reading.details["events"] == ["truncated"]
    rate.measure()

    clock.now += 45  # the first two matches (at +10 s) leave the one-minute window
    [reading] = count.measure()
    assert reading.value == 3
    assert rate.measure()[0].value == pytest.approx(3 / 60)


def test_log_probe_units_and_subjects(tmp_path: Path) -> None:
    assert PROBES["log.matches"].unit is Unit.PER_SECOND
    assert PROBES["log.count"].unit is Unit.COUNT
    log = tmp_path / "x.log"
    log.touch()
    assert make("log.count", FakeClock(), path=str(log), pattern="x").measure()[0].subject == str(log)


def test_log_probe_errors(tmp_path: Path) -> None:
    probe = make("log.count", FakeClock(), path=str(tmp_path / "missing.log"), pattern="x")
    with pytest.raises(ProbeError, match="does not exist"):
        probe.measure()
    if os.geteuid() == 0:
        return  # root reads any file: the permission message cannot be provoked here
    locked = tmp_path / "locked.log"
    locked.touch(mode=0)
    with pytest.raises(ProbeError, match="permission denied"):
        make("log.count", FakeClock(), path=str(locked), pattern="x").measure()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"pattern": "x"}, "set exactly one of path"),
        ({"pattern": "x", "path": "/a", "unit": "b"}, "set exactly one of path"),
        ({"pattern": "((", "path": "/a"}, "not a valid regular expression"),
        ({"pattern": "x", "path": "relative.log"}, "must be an absolute path"),
        ({"pattern": "x", "unit": "--all"}, "not a unit name"),
        ({"pattern": "x", "path": "/a", "window": "0s"}, "greater than 0"),
    ],
)
def test_bad_params(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PROBES["log.count"].params.model_validate(params)


# --------------------------------------------------------------------------- journal


def entry(cursor: str, seconds: float, message: Any) -> str:
    return json.dumps({"__CURSOR": cursor, "__REALTIME_TIMESTAMP": str(int(seconds * 1e6)), "MESSAGE": message})


class FakeJournalctl:
    """Stands in for journalctl's output format; the real one is exercised in the systemd container test."""

    def __init__(self, outputs: list[str], returncode: int = 0, stderr: str = "") -> None:
        self.outputs = outputs
        self.calls: list[list[str]] = []
        self.returncode, self.stderr = returncode, stderr

    def __call__(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        return subprocess.CompletedProcess(argv, self.returncode, self.outputs.pop(0), self.stderr)


def test_journal_source_reads_a_window_back_then_resumes_at_the_cursor() -> None:
    now = 1_700_000_000.0
    fake = FakeJournalctl([
        "\n".join([
            entry("c1", now - 100, "ERROR stale but inside"),
            entry("c2", now - 10, "INFO ok"),
            entry("c3", now - 5, [69, 82, 82, 79, 82, 255]),  # "ERROR" + a byte that is not UTF-8
        ]),
        entry("c4", now + 5, "ERROR new"),
    ])
    source = JournalSource("app.service", runner=fake)
    chunk = source.read(now, 300.0)
    assert "--since=@1699999700" in fake.calls[0] and "--unit=app.service" in fake.calls[0]
    assert [text for _, text in chunk.lines] == ["ERROR stale but inside", "INFO ok", "ERROR\ufffd"]
    assert chunk.lines[0][0] == pytest.approx(now - 100)
    source.read(now + 10, 300.0)
    assert "--after-cursor=c3" in fake.calls[1]


def test_journal_counts_by_entry_time() -> None:
    clock = FakeClock()
    now = clock.now
    fake = FakeJournalctl([
        "\n".join([entry("c1", now - 250, "ERROR a"), entry("c2", now - 30, "ERROR b")]),
        "",
    ])
    spec = PROBES["log.count"]
    probe = spec.factory(spec.params.model_validate({"unit": "app", "pattern": "ERROR", "window": "5m"}), None, clock)
    probe._source = JournalSource("app.service", runner=fake)
    assert probe.measure()[0].value == 2
    clock.now += 60  # "ERROR a" is now 310 s old: out of the 5 minute window
    assert probe.measure()[0].value == 1


def test_journal_permission_problem_is_a_probe_error() -> None:
    fake = FakeJournalctl([""], stderr="No journal files were opened due to insufficient permissions.")
    with pytest.raises(ProbeError, match="insufficient permissions.*systemd-journal"):
        JournalSource("app.service", runner=fake).read(0.0, 60.0)
