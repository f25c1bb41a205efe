"""Reading the policy's files: the main file and its ``include:`` drop-ins (conf.d), each bounded and checked.

A package of an application ships its own rules as a drop-in
(``/etc/watchdogd/conf.d/50-myapp.yaml``), as monit, nginx and systemd do. A
drop-in holds ``rules:`` and ``targets:`` only: what the daemon is (its
socket, state, budget, fleet) stays in the one main file an operator reads.
The files are read in order (each pattern's matches sorted by name, patterns
in the order given); a rule or a target defined twice is refused with both
places, never silently overridden. Each file keeps its own line numbers, so
every problem names the file it is in.

The same checks as the main file apply to each drop-in (a regular file, at
most ``MAX_CONFIG_BYTES``, UTF-8, not writable by group or others), and to
the directory it is in: whoever can add a file there decides what a root
daemon runs.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watchdogd.yamlsource import KeyPath, Located, YamlError, load_located

MAX_CONFIG_BYTES = 1024 * 1024
"""Largest config file read; a real one is a few KB, and a bigger one is not read into memory at all."""
MAX_INCLUDED_FILES = 256
"""Drop-ins read at most: a glob matching a directory of thousands is a mistake, not a policy."""
DROPIN_KEYS = ("rules", "targets")
INCLUDE_KEY = "include"
"""The main file's top-level key naming the drop-ins (read here, before the config model sees the rest)."""


class FileProblem(Exception):
    """One file could not be used; the message is a whole ``path[:line]: problem`` line."""


def read_text(path: Path, *, check_permissions: bool) -> str:
    """A config file's text, read boundedly; FileProblem with the reason otherwise."""
    name = str(path)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read, /dev/zero would never end it
            raise FileProblem(f"{name}: cannot read config: not a regular file")
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)  # bounded even if the file grows after stat
    except OSError as exc:
        raise FileProblem(f"{name}: cannot read config: {exc.strerror}") from exc
    if len(data) > MAX_CONFIG_BYTES:
        limit = MAX_CONFIG_BYTES // 2**20
        raise FileProblem(f"{name}: config is larger than {limit} MiB (a real one is a few KB); not reading it")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise FileProblem(f"{name}:{line}: config is not UTF-8 text") from exc
    if check_permissions and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        # The file decides which commands a root daemon runs: anyone who can write it owns the host.
        raise FileProblem(
            f"{name}: refusing a config writable by group or others (mode {stat.S_IMODE(st.st_mode):04o});"
            f" run: chmod go-w {name}"
        )
    return text


@dataclass
class Sources:
    """The main file's data with the drop-ins' rules and targets merged in, and where each came from."""

    data: dict[str, Any]
    origins: dict[KeyPath, tuple[Path, Located]] = field(default_factory=dict)
    """("rules", name) or ("targets", kind, name) -> the drop-in that defined it (absent: the main file)."""
    problems: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def merge_includes(main: Path, located: Located, *, check_permissions: bool) -> Sources:
    """Read the drop-ins ``include:`` names and merge their rules and targets; collect every problem."""
    data = dict(located.data)
    sources = Sources(data)
    patterns = data.pop(INCLUDE_KEY, None)
    if patterns is None:
        return sources
    where = f"{main}:{located.line_of((INCLUDE_KEY,))}: {INCLUDE_KEY}"
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) and p for p in patterns):
        sources.problems.append(f"{where}: expected a glob or a list of globs like /etc/watchdogd/conf.d/*.yaml")
        return sources
    merger = _Merger(main, located, sources, check_permissions)
    sections = {key: dict(value) if isinstance(value, dict) else value for key, value in data.items()
                if key in DROPIN_KEYS}
    for path in _expand(patterns, main.parent, where, sources.problems, check_permissions):
        if path.resolve() == main.resolve():
            continue  # conf.d/*.yaml next to the main file: never include it in itself
        merger.merge(path, sections)
        sources.files.append(path)
    data.update(sections)
    return sources


def _expand(patterns: Sequence[str], base: Path, where: str, problems: list[str], check: bool) -> list[Path]:
    """Each pattern's matches sorted by name, in pattern order, each once; bounded."""
    found: list[Path] = []
    seen: set[Path] = set()
    for pattern in patterns:
        full = pattern if os.path.isabs(pattern) else str(base / pattern)
        directory = Path(os.path.dirname(full))
        if check and (problem := _unsafe_directory(directory)) is not None:
            problems.append(f"{where}: {problem}")
            continue
        for match in sorted(glob.glob(full)):
            path = Path(match)
            if path in seen or path.is_dir():
                continue
            seen.add(path)
            found.append(path)
            if len(found) > MAX_INCLUDED_FILES:
                problems.append(f"{where}: matches more than {MAX_INCLUDED_FILES} files; not reading them")
                return []
    return found


def _unsafe_directory(directory: Path) -> str | None:
    try:
        st = directory.stat()
    except OSError:
        return None  # nothing there: the glob matches nothing, which is fine (an empty conf.d)
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        return (f"refusing drop-ins from {directory}: writable by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod go-w {directory}")
    return None


@dataclass
class _Merger:
    main: Path
    main_located: Located
    sources: Sources
    check_permissions: bool

    def merge(self, path: Path, sections: dict[str, Any]) -> None:
        """One drop-in's rules and targets into ``sections``; its problems into the sources."""
        problems = self.sources.problems
        try:
            dropin = load_located(read_text(path, check_permissions=self.check_permissions))
        except FileProblem as exc:
            problems.append(str(exc))
            return
        except YamlError as exc:
            problems.append(f"{path}:{exc.line}: {exc.message}")
            return
        if dropin.data is None:
            return  # an empty drop-in (all commented out) adds nothing
        if not isinstance(dropin.data, dict):
            problems.append(f"{path}:1: a drop-in must be a mapping with rules: and/or targets:")
            return
        for key, value in dropin.data.items():
            line = dropin.line_of((key,))
            if key not in DROPIN_KEYS:
                problems.append(
                    f"{path}:{line}: {key}: a drop-in holds only rules: and targets: (the rest belongs in {self.main})"
                )
                continue
            if not isinstance(value, dict):
                problems.append(f"{path}:{line}: {key}: expected a mapping")
                continue
            merged = sections.setdefault(key, {})
            if not isinstance(merged, dict):
                continue  # the main file's own section is broken: reported when it is checked
            if key == "rules":
                self._add(merged, value, ("rules",), path, dropin)
                continue
            for kind, named in value.items():
                if not isinstance(named, dict):
                    problems.append(f"{path}:{dropin.line_of((key, kind))}: targets.{kind}: expected a mapping")
                    continue
                into = merged.get(kind, {})
                if isinstance(into, dict):
                    merged[kind] = into = dict(into)  # a copy: the main file's parsed data stays as read
                    self._add(into, named, ("targets", kind), path, dropin)

    def _add(
        self, into: dict[str, Any], items: Mapping[str, Any], prefix: KeyPath, path: Path, dropin: Located
    ) -> None:
        """Add each named item, refusing one already defined (by the main file or an earlier drop-in)."""
        for name, body in items.items():
            key = (*prefix, name)
            if name in into:
                first_path, first = self.sources.origins.get(key, (self.main, self.main_located))
                self.sources.problems.append(
                    f"{path}:{dropin.line_of(key)}: {'.'.join(map(str, key))}: already defined at "
                    f"{first_path}:{first.line_of(key)}; a name is defined once"
                )
                continue
            into[name] = body
            self.sources.origins[key] = (path, dropin)
