"""Which processes a ``process.*`` rule is about: by name, command line, user or pidfile.

The selection runs every cycle over every process on the host, so it reads
nothing itself: it filters the engine's shared scan (``table.ProcessTable``:
one ``/proc/<pid>/stat`` read per process per cycle for every rule), whose
slow facts (command line, user) are read once per process, only when some
rule's criteria reach them.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from watchdogd import inline
from watchdogd.contracts import Params, ProbeError
from watchdogd.families.process import procfs
from watchdogd.families.process.table import (
    SETTLE_SECONDS,
    TRUNCATED,
    Facts,
    ProcessTable,
    Snapshot,
    process_name,
)
from watchdogd.spec import BeforeValidator, Field, WithJsonSchema, field_validator, model_validator

__all__ = ["SETTLE_SECONDS", "Proc", "ProcessSelection", "ProcessSelector", "process_name"]

PIDFILE_SLACK = 2.0
"""A process started this long after its pidfile was written is not the one that wrote it."""

CMDLINE_IN_DETAILS = 300


def _one_or_many(value: Any) -> Any:
    """YAML ``name: nginx`` means ``name: [nginx]``."""
    return [value] if isinstance(value, str | int) and not isinstance(value, bool) else value


def _compile(pattern: str | None, key: str) -> str | None:
    if pattern is None:
        return None
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression for {key}: {exc}") from exc
    return pattern


NameList = Annotated[
    list[str],
    BeforeValidator(_one_or_many),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]}),
]
_USER = {"anyOf": [{"type": "string"}, {"type": "integer"}]}
UserList = Annotated[
    list[str | int],
    BeforeValidator(_one_or_many),
    WithJsonSchema({"anyOf": [_USER, {"type": "array", "items": _USER, "minItems": 1}]}),
]


class ProcessSelector(Params):
    """Which processes to look at. Every criterion given must match (AND).

    An empty selection is refused rather than meaning "everything": a rule
    that signals processes must never widen to the whole host by a typo.
    ``all: true`` says so explicitly.
    """

    name: NameList | None = Field(default=None, min_length=1)
    cmdline: str | None = None
    user: UserList | None = Field(default=None, min_length=1)
    pidfile: str | None = None
    all: bool = False
    exclude_cmdline: str | None = None
    exclude_users: UserList = []

    @field_validator("cmdline")
    @classmethod
    def _check_cmdline(cls, value: str | None) -> str | None:
        return _compile(value, "cmdline")

    @field_validator("exclude_cmdline")
    @classmethod
    def _check_exclude(cls, value: str | None) -> str | None:
        return _compile(value, "exclude_cmdline")

    @field_validator("pidfile")
    @classmethod
    def _check_pidfile(cls, value: str | None) -> str | None:
        if value is not None and not os.path.isabs(value):
            raise ValueError(f"pidfile must be an absolute path, got {value!r}")
        return value

    @model_validator(mode="after")
    def _check_some_selection(self) -> ProcessSelector:
        chosen = [self.name, self.cmdline, self.user, self.pidfile]
        if self.all and any(c is not None for c in chosen):
            raise ValueError("all: true selects every process; drop it or drop name/cmdline/user/pidfile")
        if not self.all and all(c is None for c in chosen):
            raise ValueError("select processes with name, cmdline, user or pidfile (or all: true)")
        return self

    def describe(self) -> str:
        """A short stable label for the whole selection (the subject of aggregate readings)."""
        parts = []
        for key in ("name", "user"):
            value = getattr(self, key)
            if value is not None:
                parts.append(f"{key}={','.join(str(v) for v in value)}")
        for key in ("cmdline", "pidfile"):
            value = getattr(self, key)
            if value is not None:
                parts.append(f"{key}={value}")
        return " ".join(parts) or "all"


@dataclass(frozen=True, slots=True)
class Proc:
    """A selected process: its current stat and the cached facts about it."""

    stat: procfs.Stat
    name: str
    cmdline: str
    uid: int
    user: str

    @property
    def pid(self) -> int:
        return self.stat.pid

    @property
    def key(self) -> tuple[int, int]:
        return (self.stat.pid, self.stat.start_ticks)

    def details(self, boot_time: float) -> dict[str, Any]:
        """What an action needs to find exactly this process again, and what a human wants to see."""
        return {
            "pid": self.pid,
            "start_ticks": self.stat.start_ticks,
            "create_time": round(boot_time + self.stat.start_ticks / procfs.CLOCK_TICKS, 2),
            "name": self.name,
            "user": self.user,
            "cmdline": self.cmdline[:CMDLINE_IN_DETAILS],
        }


class ProcessSelection:
    """Selects processes for one probe instance from the engine's shared ``ProcessTable``.

    The criteria are checked cheapest first, so a process is rejected on
    what the scan already read (its kernel name) before its command line or
    owner is read: ``name: nginx`` reads the argv of nginx processes (and of
    15-character names that may be truncated ones), not of every process.
    No verdict is cached per rule: the facts are cached once in the table,
    and re-checking them costs about what a per-rule cache lookup would,
    without a copy of the host's process list per rule.
    """

    def __init__(self, selector: ProcessSelector, table: ProcessTable | None = None) -> None:
        self._sel = selector
        # Without the engine's table nothing shares a scan, so a private one scans on every run.
        self._table = table if table is not None else ProcessTable(max_age=0.0)
        self._proc = self._table.proc
        self._names = frozenset(selector.name) if selector.name else None
        self._cmdline = re.compile(selector.cmdline).search if selector.cmdline else None
        self._exclude = re.compile(selector.exclude_cmdline).search if selector.exclude_cmdline else None
        self._uids: frozenset[int] | None = None
        self._exclude_uids: frozenset[int] | None = None
        self._known: Facts | None = None  # pidfile selections: the facts of the one pid they name
        self._last_taken: float | None = None  # the snapshot this selection read last: never handed it again

    def select(self) -> tuple[list[Proc], Snapshot]:
        """Every live, non-kernel, non-zombie process that matches, and the snapshot it was chosen from.

        The snapshot may be up to the table's ``max_age`` old, but is never the one
        this selection read last (see ``table``).
        """
        if self._sel.pidfile is not None:
            inline.check("pidfile")  # a file read of its own
        if self._sel.user is not None and self._uids is None:
            self._uids = _resolve_users(self._sel.user, "user")
        if self._exclude_uids is None:
            self._exclude_uids = _resolve_users(self._sel.exclude_users, "exclude_users")
        if self._sel.pidfile is not None:
            return self._from_pidfile(self._sel.pidfile)
        snapshot = self._table.scan(after=self._last_taken)
        selected = []
        for stat, facts in snapshot.candidates(self._names):
            proc = self._match(stat, facts)
            if proc is not None:
                selected.append(proc)
        # Only once the selection is whole: a run refused part-way (``inline.WouldBlock``) is made again on a
        # probe thread, which must get this same snapshot rather than scan again.
        self._last_taken = snapshot.taken
        return selected, snapshot

    def _match(self, stat: procfs.Stat, facts: Facts) -> Proc | None:
        assert self._exclude_uids is not None
        proc = self._proc
        names = self._names
        # Only a name the kernel truncated (15 characters) can still match on argv[0].
        truncated = len(stat.comm) >= TRUNCATED
        if names is not None and stat.comm not in names and not (truncated and facts.command(proc)[0] in names):
            return None
        uid: int | None = None
        if self._uids is not None or self._exclude_uids:
            uid = facts.uid(proc)
            if uid is None or (self._uids is not None and uid not in self._uids) or uid in self._exclude_uids:
                return None
        name, cmdline, has_argv = facts.command(proc)
        if self._cmdline is not None and not (has_argv and self._cmdline(cmdline)):
            return None
        if self._exclude is not None and self._exclude(cmdline):
            return None
        if uid is None:
            uid = facts.uid(proc)
            if uid is None:
                return None  # gone meanwhile
        # The kept facts, with this snapshot's stat (CPU, RSS, state).
        return Proc(stat, name, cmdline, uid, self._table.user_name(uid))

    def _from_pidfile(self, path: str) -> tuple[list[Proc], Snapshot]:
        """The process a pidfile names, if it is still the one that wrote the file.

        A missing pidfile means the service is not running (count 0), which
        is exactly what a "count below 1" rule is for; an unreadable or
        garbled one is an error the operator must see. One pid is read
        directly rather than from a scan of every process.
        """
        try:
            with open(path, encoding="ascii", errors="replace") as handle:
                text = handle.read(64)
            written = os.stat(path).st_mtime
        except FileNotFoundError:
            return [], self._table.instant()
        except OSError as exc:
            raise ProbeError(f"cannot read pidfile {path}: {exc.strerror}") from exc
        try:
            pid = int(text.strip().split()[0])
        except (ValueError, IndexError):
            raise ProbeError(f"pidfile {path} does not hold a pid (starts with {text[:20]!r})") from None
        if pid <= 0:
            raise ProbeError(f"pidfile {path} holds an invalid pid {pid}")
        instant = self._table.instant()
        stat = procfs.read_stat(pid, self._proc)
        if stat is None or stat.kernel_thread or stat.zombie:
            return [], instant
        if instant.boot_time + stat.start_ticks / procfs.CLOCK_TICKS > written + PIDFILE_SLACK:
            return [], instant  # a stale pidfile whose pid now belongs to a newer, unrelated process
        facts = self._known if self._known is not None and _same(self._known, stat) else None
        if facts is None:
            facts = self._table.facts(stat, instant.uptime)
        # Only this pid's facts are kept: a pidfile that changes hands must not grow a cache.
        self._known = facts if facts.settled else None
        proc = self._match(stat, facts)
        return ([proc] if proc is not None else []), instant


def _same(facts: Facts, stat: procfs.Stat) -> bool:
    return facts.pid == stat.pid and facts.start_ticks == stat.start_ticks and facts.comm == stat.comm


def _resolve_users(users: Iterable[str | int], key: str) -> frozenset[int]:
    """User names to uids, asked again each run until they all exist (a user may be created later)."""
    uids = set()
    for user in users:
        if isinstance(user, int) or user.isdigit():
            uids.add(int(user))
            continue
        inline.check("user name")  # NSS may ask a directory server
        try:
            uids.add(pwd.getpwnam(user).pw_uid)
        except KeyError:
            raise ProbeError(f"{key}: no such user {user!r} on this host") from None
    return frozenset(uids)
