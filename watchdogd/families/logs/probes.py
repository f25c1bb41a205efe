"""``log.matches`` / ``log.count``: lines matching a regex over a window, from a file or a unit's journal.

The probe instance keeps the read position (file offset and inode, or the
journal cursor) and a short list of (time, matches) per run, so each run
reads only what is new and the window slides without re-reading anything.

A file is followed from its end when the rule starts (see ``tail.py``), so
the window fills up over its first ``window`` of running and the rate is
taken over the time actually observed. A journal is read back one window
at the first run (journald keeps timestamps), so it is right at once.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from watchdogd.contracts import (
    Cardinality,
    Clock,
    EvidenceLimits,
    Params,
    ProbeError,
    ProbeSpec,
    Reading,
    Unit,
    local_probe,
)
from watchdogd.families.logs.tail import FileTail, NotRegularFile
from watchdogd.spec import Field, field_validator, model_validator
from watchdogd.units import Duration, Size

JOURNALCTL = "journalctl"
JOURNAL_TIMEOUT = 30.0
EXCERPT = 300
KEPT_LINES = 20
"""Matched lines each probe keeps for evidence (the newest): a screenful, a few KiB per rule."""
KEPT_LINE_CHARS = 200


class LogParams(Params):
    path: str | None = None
    unit: str | None = None
    pattern: str
    window: Duration = Field(default=300.0, gt=0)
    max_read: Size = Field(default=64 * 1024 * 1024, gt=0, le=2**30)

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str | None) -> str | None:
        if value is not None and not os.path.isabs(value):
            raise ValueError(f"path must be an absolute path, got {value!r}")
        return value

    @field_validator("unit")
    @classmethod
    def _check_unit(cls, value: str | None) -> str | None:
        if value is not None and (not value or value.startswith("-") or "/" in value):
            raise ValueError(f"not a unit name: {value!r}")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> LogParams:
        if (self.path is None) == (self.unit is None):
            raise ValueError("set exactly one of path (a log file) or unit (a systemd unit's journal)")
        return self

    @property
    def subject(self) -> str:
        return self.path if self.path is not None else f"unit:{self.unit}"


@dataclass
class Chunk:
    """What a source produced in one run: (timestamp or None for "now", text) lines and notes."""

    lines: list[tuple[float | None, str]]
    events: list[str]


class Source(Protocol):
    def read(self, now: float, window: float) -> Chunk: ...


class FileSource:
    def __init__(self, path: str, max_read: int) -> None:
        self._tail = FileTail(path, int(max_read))

    def read(self, now: float, window: float) -> Chunk:
        try:
            batch = self._tail.read()
        except FileNotFoundError:
            raise ProbeError(f"log file {self._tail.path} does not exist") from None
        except PermissionError:
            raise ProbeError(f"permission denied reading {self._tail.path}") from None
        except NotRegularFile as exc:
            raise ProbeError(str(exc)) from None
        text = b"\n".join(batch.lines).decode("utf-8", "replace") if batch.lines else ""
        lines: list[tuple[float | None, str]] = [(None, line) for line in text.split("\n")] if batch.lines else []
        events = list(batch.events)
        if batch.behind:
            events.append(f"read {batch.bytes_read} bytes (max_read); the rest is counted next run")
        return Chunk(lines, events)


Runner = Callable[[list[str], float], "subprocess.CompletedProcess[str]"]


def run_argv(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, "LC_ALL": "C", "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""},
    )


class JournalSource:
    """A unit's journal through ``journalctl -o json``, resumed from the cursor of the previous run.

    ``--after-cursor`` makes every entry counted exactly once, however many
    arrive between runs; JSON carries each entry's own timestamp, so the
    first run can fill the whole window from history.
    """

    def __init__(self, unit: str, runner: Runner = run_argv) -> None:
        self._unit = unit
        self._runner = runner
        self._cursor: str | None = None

    def argv(self, now: float, window: float) -> list[str]:
        argv = [JOURNALCTL, "--no-pager", "--quiet", "--output=json", "--output-fields=MESSAGE",
                f"--unit={self._unit}"]
        if self._cursor is not None:
            argv.append(f"--after-cursor={self._cursor}")
        else:
            argv.append(f"--since=@{int(now - window)}")
        return argv

    def read(self, now: float, window: float) -> Chunk:
        try:
            proc = self._runner(self.argv(now, window), JOURNAL_TIMEOUT)
        except FileNotFoundError:
            raise ProbeError("journalctl is not installed on this host") from None
        except subprocess.TimeoutExpired:
            raise ProbeError(f"journalctl did not answer within {JOURNAL_TIMEOUT:g}s") from None
        if proc.returncode != 0 or "insufficient permissions" in proc.stderr:
            message = " ".join(proc.stderr.split())[:EXCERPT] or f"exit status {proc.returncode}"
            hint = " (run watchdogd as root or in group systemd-journal)" if "permission" in message else ""
            raise ProbeError(f"journalctl failed: {message}{hint}")
        lines: list[tuple[float | None, str]] = []
        for raw in proc.stdout.splitlines():
            entry = _json_entry(raw)
            if entry is None:
                continue
            cursor, stamp, message = entry
            self._cursor = cursor
            lines.append((stamp, message))
        return Chunk(lines, [])


def _json_entry(raw: str) -> tuple[str, float, str] | None:
    try:
        entry = json.loads(raw)
        cursor = entry["__CURSOR"]
        stamp = int(entry["__REALTIME_TIMESTAMP"]) / 1e6
    except (ValueError, KeyError, TypeError):
        return None
    message = entry.get("MESSAGE")
    if isinstance(message, list):  # journald stores non-UTF-8 messages as byte arrays
        message = bytes(b & 0xFF for b in message if isinstance(b, int)).decode("utf-8", "replace")
    elif not isinstance(message, str):
        message = ""
    return str(cursor), stamp, message


class MatchWindow:
    """Matches per run in a sliding window: (time, count) pairs, oldest evicted first."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._buckets: deque[tuple[float, int]] = deque()
        self.total = 0
        self.started: float | None = None

    def add(self, stamp: float, count: int) -> None:
        if count:
            self._buckets.append((stamp, count))
            self.total += count

    def add_many(self, stamps: Iterable[float]) -> None:
        for stamp in stamps:
            self.add(stamp, 1)

    def slide(self, now: float) -> None:
        if self.started is None:
            self.started = now
        cutoff = now - self.window
        while self._buckets and self._buckets[0][0] <= cutoff:
            self.total -= self._buckets.popleft()[1]

    def observed(self, now: float) -> float:
        """Seconds of the window actually watched: less than ``window`` while a file rule warms up."""
        if self.started is None:
            return 0.0
        return min(self.window, max(0.0, now - self.started))


class _LogProbe:
    def __init__(self, params: LogParams, clock: Clock, source: Source | None = None) -> None:
        self._params = params
        self._clock = clock
        self._regex = re.compile(params.pattern)
        self._window = MatchWindow(params.window)
        self._source: Source
        if source is not None:
            self._source = source
        elif params.path is not None:
            self._source = FileSource(params.path, int(params.max_read))
        else:
            assert params.unit is not None
            self._source = JournalSource(params.unit)
            # journald timestamps every entry: the window is full from the first run on.
            self._window.started = clock() - params.window
        self._last_match: str | None = None
        # The newest matched lines, (time, text cut short), for ``describe``, which runs in another thread.
        self._recent: deque[tuple[float, str]] = deque(maxlen=KEPT_LINES)
        self._recent_lock = threading.Lock()

    def _count(self) -> tuple[dict[str, Any], float]:
        now = self._clock()
        chunk = self._source.read(now, self._params.window)
        search = self._regex.search
        matched = [(stamp, text) for stamp, text in chunk.lines if search(text)]
        if matched:
            self._last_match = matched[-1][1][:EXCERPT]
            kept = [(now if stamp is None else stamp, text[:KEPT_LINE_CHARS]) for stamp, text in matched[-KEPT_LINES:]]
            with self._recent_lock:
                self._recent.extend(kept)
        dated = [stamp for stamp, _ in matched if stamp is not None]
        self._window.add_many(dated)
        self._window.add(now, len(matched) - len(dated))
        self._window.slide(now)
        details: dict[str, Any] = {
            "matches": self._window.total,
            "window": self._params.window,
            "observed": round(self._window.observed(now), 1),
            "lines_read": len(chunk.lines),
            "last_match": self._last_match,
        }
        if chunk.events:
            details["events"] = chunk.events
        return details, self._window.observed(now)

    def describe(self, readings: Sequence[Reading], limits: EvidenceLimits) -> dict[str, Any]:
        """The last matched lines (kept as they were read, so nothing is read again), and where they come from.

        A file's lines carry the time watchdogd read them; a journal's, the
        time journald logged them.
        """
        with self._recent_lock:
            recent = list(self._recent)
        rows = [{"time": _iso(stamp), "line": text} for stamp, text in recent[-limits.max_items :]]
        p = self._params
        source: dict[str, Any] = {"pattern": p.pattern[:KEPT_LINE_CHARS], "window_seconds": p.window}
        if p.path is not None:
            source.update(path=p.path, line_times="when watchdogd read the line")
            try:
                st = os.stat(p.path)
                source.update(size_bytes=st.st_size, modified=_iso(st.st_mtime))
            except OSError as exc:
                source["error"] = f"cannot stat: {exc.strerror}"
        else:
            source.update(unit=p.unit, line_times="journal timestamps")
        for reading in readings[:1]:
            source.update({k: reading.details[k] for k in ("matches", "observed") if k in reading.details})
        sections: dict[str, Any] = {"last matching lines (oldest first)": rows, "log": source}
        while rows and len(json.dumps(sections, default=str)) > limits.max_bytes:
            rows = rows[len(rows) // 4 or 1 :]  # the oldest go first
            sections["last matching lines (oldest first)"] = rows
            sections["cut short"] = "older lines left out to stay within max_bytes"
        return sections


def _iso(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


class MatchesProbe(_LogProbe):
    """Matching lines per second over the window (over the part observed so far, while it fills)."""

    def measure(self) -> list[Reading]:
        details, observed = self._count()
        rate = details["matches"] / observed if observed > 0 else 0.0
        return [Reading(self._params.subject, rate, details)]


class CountProbe(_LogProbe):
    """Matching lines in the window: "more than 100 ERROR lines in the last hour" is ``above: 100``."""

    def measure(self) -> list[Reading]:
        details, _ = self._count()
        return [Reading(self._params.subject, float(details["matches"]), details)]


PROBES: dict[str, ProbeSpec] = {
    "log.matches": ProbeSpec(
        LogParams, local_probe(MatchesProbe), Unit.PER_SECOND, Cardinality.LOW,
        "lines matching a regex per second over a window, from a log file or a unit's journal", subjects="log",
    ),
    "log.count": ProbeSpec(
        LogParams, local_probe(CountProbe), Unit.COUNT, Cardinality.LOW,
        "lines matching a regex within a window, from a log file or a unit's journal", subjects="log",
    ),
}
