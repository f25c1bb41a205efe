"""Log priorities for journald: the ``<N>`` prefix only when stderr is the journal stream.

The decision is made against real file descriptors (a pipe, a file) whose
device and inode the tests put in a fake ``JOURNAL_STREAM``, the way systemd
would for the stream it hands a service.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from watchdogd.logs import JournalPrefix, TextFormatter, event, is_journal, make_handler, priority


def _stream_of(fd: int) -> str:
    stat = os.fstat(fd)
    return f"{stat.st_dev}:{stat.st_ino}"


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        os.close(fd)


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[IO[str]]:
    with (tmp_path / "stderr.log").open("w+", encoding="utf-8") as stream:
        yield stream


# --- is this fd the journal? -----------------------------------------------------------------


def test_the_fd_systemd_named_is_the_journal(pipe: tuple[int, int]) -> None:
    _, write_end = pipe
    assert is_journal({"JOURNAL_STREAM": _stream_of(write_end)}, write_end)


def test_an_inherited_variable_with_stderr_redirected_is_not(pipe: tuple[int, int], log_file: IO[str]) -> None:
    """`watchdogd --once 2>out.log` from an exec action: JOURNAL_STREAM names the unit's stream, not this file."""
    _, write_end = pipe
    assert not is_journal({"JOURNAL_STREAM": _stream_of(write_end)}, log_file.fileno())


@pytest.mark.parametrize("value", ["", "garbage", "12", "12:", ":34", "a:b", "1:2:3"])
def test_a_missing_or_malformed_variable_is_not(pipe: tuple[int, int], value: str) -> None:
    _, write_end = pipe
    environ = {"JOURNAL_STREAM": value} if value else {}
    assert not is_journal(environ, write_end)


def test_same_device_other_inode_is_not(tmp_path: Path, log_file: IO[str]) -> None:
    other = tmp_path / "other"
    other.write_text("")
    stat = other.stat()
    assert not is_journal({"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}, log_file.fileno())


def test_a_closed_fd_is_not(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    named = _stream_of(write_end)
    spare = os.dup(write_end)
    os.close(spare)
    assert not is_journal({"JOURNAL_STREAM": named}, spare)
    assert is_journal({"JOURNAL_STREAM": named}, write_end)


# --- the mapping ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (logging.DEBUG, 7),
        (logging.INFO, 6),
        (logging.WARNING, 4),
        (logging.ERROR, 3),
        (logging.CRITICAL, 2),
        (25, 6),  # between info and warning: never shown as more severe than it is
        (logging.NOTSET, 7),
        (logging.CRITICAL + 10, 2),
    ],
)
def test_levels_map_to_syslog_priorities(level: int, expected: int) -> None:
    assert priority(level) == expected


# --- what is written ----------------------------------------------------------------------------


def _emit(handler: logging.Handler, level: int, message: str, **fields: object) -> None:
    logger = logging.Logger("watchdogd.test")  # not registered: no global logger touched
    logger.addHandler(handler)
    event(logger, level, message, **fields)
    handler.flush()


def _written(stream: IO[str]) -> list[str]:
    stream.seek(0)
    return stream.read().splitlines()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_under_journald_each_line_carries_its_priority(log_file: IO[str], fmt: str) -> None:
    handler = make_handler(fmt, log_file, {"JOURNAL_STREAM": _stream_of(log_file.fileno())})
    _emit(handler, logging.WARNING, "firing", rule="disk-full", subject="/")
    _emit(handler, logging.INFO, "started", version="1.0")
    _emit(handler, logging.ERROR, "action failed", rule="disk-full")
    lines = _written(log_file)
    assert [line[:3] for line in lines] == ["<4>", "<6>", "<3>"], lines
    if fmt == "json":
        # What SyslogLevelPrefix= leaves after stripping `<N>` is the whole object, unchanged.
        bodies = [json.loads(line[3:]) for line in lines]
        assert [(b["level"], b["msg"]) for b in bodies] == [("warning", "firing"), ("info", "started"),
                                                            ("error", "action failed")]
    else:
        assert lines[0][3:].split(" ", 1)[1] == "warning firing rule=disk-full subject=/"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_terminal_or_a_file_never_sees_a_prefix(log_file: IO[str], pipe: tuple[int, int], fmt: str) -> None:
    _, write_end = pipe
    handler = make_handler(fmt, log_file, {"JOURNAL_STREAM": _stream_of(write_end)})
    _emit(handler, logging.WARNING, "firing", rule="disk-full")
    [line] = _written(log_file)
    assert not line.startswith("<")
    if fmt == "json":
        assert json.loads(line)["msg"] == "firing"


def test_a_stream_without_an_fd_gets_no_prefix() -> None:
    stream = io.StringIO()
    handler = make_handler("text", stream, {"JOURNAL_STREAM": "1:2"})
    _emit(handler, logging.ERROR, "boom")
    assert stream.getvalue().split(" ", 1)[1] == "error boom\n"


def test_every_line_of_a_multi_line_record_keeps_the_priority() -> None:
    """journald files each line on its own: a continuation without `<N>` would land at info."""

    class TwoLines(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return f"{record.getMessage()}\ncontinued"

    record = logging.LogRecord("watchdogd", logging.ERROR, __file__, 1, "failed", None, None)
    assert JournalPrefix(TwoLines()).format(record) == "<3>failed\n<3>continued"
    assert JournalPrefix(TextFormatter()).format(record).count("\n") == 0
