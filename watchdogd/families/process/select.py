"""Which processes a ``process.*`` rule is about: by name, command line, user or pidfile.

The selection runs every cycle over every process on the host, so it is
built to cost one ``/proc/<pid>/stat`` read per process: what rarely changes
(command line, user, whether it matches) is cached per ``(pid, start_ticks)``
and re-read only when the kernel name changes (an ``exec``) or while the
process is young (a daemon forks, then sets its title and drops privileges
in its first moments).
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, WithJsonSchema, field_validator, model_validator

from watchdogd.contracts import Params, ProbeError
from watchdogd.families.process import procfs

SETTLE_SECONDS = 5.0
"""Cached facts about a process younger than this are read again on the next run."""

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


@dataclass(slots=True)
class _Known:
    start_ticks: int
    comm: str
    settled: bool
    proc: Proc | None  # None: seen, does not match


def process_name(comm: str, argv: tuple[str, ...]) -> str:
    """The kernel truncates names to 15 characters; like ps and psutil, complete them from argv[0]."""
    if len(comm) >= 15 and argv:
        base = os.path.basename(argv[0])
        if base.startswith(comm):
            return base
    return comm


class ProcessSelection:
    """Selects processes for one probe instance; owns its cache (never shared between rules)."""

    def __init__(self, selector: ProcessSelector, proc: str = procfs.PROC) -> None:
        self._sel = selector
        self._proc = proc
        self._names = frozenset(selector.name) if selector.name else None
        self._cmdline = re.compile(selector.cmdline).search if selector.cmdline else None
        self._exclude = re.compile(selector.exclude_cmdline).search if selector.exclude_cmdline else None
        self._uids: frozenset[int] | None = None
        self._exclude_uids: frozenset[int] | None = None
        self._known: dict[int, _Known] = {}
        self._user_names: dict[int, str] = {}

    def select(self) -> list[Proc]:
        """Every live, non-kernel, non-zombie process that matches, as of now."""
        if self._sel.user is not None and self._uids is None:
            self._uids = _resolve_users(self._sel.user, "user")
        if self._exclude_uids is None:
            self._exclude_uids = _resolve_users(self._sel.exclude_users, "exclude_users")
        if self._sel.pidfile is not None:
            return self._from_pidfile(self._sel.pidfile)
        now = procfs.uptime(self._proc)
        selected: list[Proc] = []
        seen: set[int] = set()
        for pid in procfs.list_pids(self._proc):
            stat = procfs.read_stat(pid, self._proc)
            if stat is None:
                continue
            seen.add(pid)
            proc = self._match(stat, now)
            if proc is not None:
                selected.append(proc)
        for gone in self._known.keys() - seen:
            del self._known[gone]
        return selected

    def _match(self, stat: procfs.Stat, now: float) -> Proc | None:
        if stat.kernel_thread or stat.zombie:
            return None
        known = self._known.get(stat.pid)
        if known is None or known.start_ticks != stat.start_ticks or known.comm != stat.comm or not known.settled:
            known = self._learn(stat, now)
            if known is None:
                return None
            self._known[stat.pid] = known
        if known.proc is None:
            return None
        # The cached facts are kept; the stat (CPU, RSS, state) is this instant's.
        return Proc(stat, known.proc.name, known.proc.cmdline, known.proc.uid, known.proc.user)

    def _learn(self, stat: procfs.Stat, now: float) -> _Known | None:
        """Read the slow facts (argv, uid) once and decide whether the process matches."""
        argv = procfs.read_cmdline(stat.pid, self._proc)
        uid = procfs.read_uid(stat.pid, self._proc)
        if uid is None:
            return None  # gone meanwhile
        age = now - stat.start_ticks / procfs.CLOCK_TICKS
        name = process_name(stat.comm, argv)
        cmdline = " ".join(argv) if argv else f"[{stat.comm}]"
        proc = Proc(stat, name, cmdline, uid, self._user_name(uid))
        matched = self._matches(proc, bool(argv))
        return _Known(stat.start_ticks, stat.comm, age >= SETTLE_SECONDS, proc if matched else None)

    def _matches(self, proc: Proc, has_argv: bool) -> bool:
        assert self._exclude_uids is not None
        if self._names is not None and proc.name not in self._names and proc.stat.comm not in self._names:
            return False
        if self._uids is not None and proc.uid not in self._uids:
            return False
        if proc.uid in self._exclude_uids:
            return False
        if self._cmdline is not None and not (has_argv and self._cmdline(proc.cmdline)):
            return False
        return not (self._exclude is not None and self._exclude(proc.cmdline))

    def _from_pidfile(self, path: str) -> list[Proc]:
        """The process a pidfile names, if it is still the one that wrote the file.

        A missing pidfile means the service is not running (count 0), which
        is exactly what a "count below 1" rule is for; an unreadable or
        garbled one is an error the operator must see.
        """
        try:
            with open(path, encoding="ascii", errors="replace") as handle:
                text = handle.read(64)
            written = os.stat(path).st_mtime
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ProbeError(f"cannot read pidfile {path}: {exc.strerror}") from exc
        try:
            pid = int(text.strip().split()[0])
        except (ValueError, IndexError):
            raise ProbeError(f"pidfile {path} does not hold a pid (starts with {text[:20]!r})") from None
        if pid <= 0:
            raise ProbeError(f"pidfile {path} holds an invalid pid {pid}")
        stat = procfs.read_stat(pid, self._proc)
        if stat is None:
            return []
        started = procfs.boot_time(self._proc) + stat.start_ticks / procfs.CLOCK_TICKS
        if started > written + PIDFILE_SLACK:
            return []  # a stale pidfile whose pid now belongs to a newer, unrelated process
        proc = self._match(stat, procfs.uptime(self._proc))
        # Only this pid is cached: a pidfile that changes hands must not grow the cache forever.
        self._known = {pid: self._known[pid]} if pid in self._known else {}
        return [proc] if proc is not None else []

    def _user_name(self, uid: int) -> str:
        name = self._user_names.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            self._user_names[uid] = name
        return name


def _resolve_users(users: Iterable[str | int], key: str) -> frozenset[int]:
    """User names to uids, asked again each run until they all exist (a user may be created later)."""
    uids = set()
    for user in users:
        if isinstance(user, int) or user.isdigit():
            uids.add(int(user))
            continue
        try:
            uids.add(pwd.getpwnam(user).pw_uid)
        except KeyError:
            raise ProbeError(f"{key}: no such user {user!r} on this host") from None
    return frozenset(uids)
