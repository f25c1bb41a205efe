"""``files.clean``: delete old files from one directory tree, as a bounded, auditable step.

A root daemon that deletes files is one bad path away from wiping a host,
so the safety lives in layers: config validation (absolute, never ``/``,
inside ``allowed_roots`` by whole path components), a run-time check of where
the opened directory really is (symlinks resolved by the kernel, not by
string matching), and a walk that works only relative to directory file
descriptors and never follows a symlink. Only regular files are unlinked.
"""

from __future__ import annotations

import fnmatch
import heapq
import os
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from watchdogd import hazards
from watchdogd.contracts import ANY_SUBJECT, ActionParams, ActionResult, ActionSpec, Clock, ItemResult, Reading, Unit
from watchdogd.spec import Field, PrivateAttr, field_validator, model_validator
from watchdogd.units import Duration, format_value

DEFAULT_ALLOWED_ROOTS: tuple[str, ...] = (
    "/var/log", "/var/tmp", "/var/cache", "/var/lib", "/tmp", "/srv", "/home",
)


def _components(path: str) -> tuple[str, ...]:
    """Path components after lexical normalisation (``..`` applied, ``//`` collapsed).

    Comparing tuples of components is what makes ``/var/libx`` *not* inside
    ``/var/lib``, which a string prefix test would get wrong.
    """
    return tuple(part for part in os.path.normpath(path).split("/") if part)


def _join(parts: tuple[str, ...]) -> str:
    return "/" + "/".join(parts)


def _inside(path: tuple[str, ...], root: tuple[str, ...]) -> bool:
    return path[: len(root)] == root


def _absolute_not_root(value: str, what: str) -> str:
    if not os.path.isabs(value):
        raise ValueError(f"{what} must be an absolute path, got {value!r}")
    parts = _components(value)
    if not parts:
        raise ValueError(f"{what} {value!r} is the root directory /, which is never cleaned")
    return _join(parts)


class CleanParams(ActionParams):
    path: str
    older_than: Duration
    pattern: str = "*"
    recursive: bool = True
    max_files: int = Field(default=1000, ge=1, le=1_000_000)
    one_filesystem: bool = True
    allowed_roots: list[str] = Field(default=list(DEFAULT_ALLOWED_ROOTS), min_length=1)
    _own: hazards.OwnPaths = PrivateAttr(default=hazards.DEFAULT_OWN_PATHS)

    def protecting(self, own: hazards.OwnPaths) -> CleanParams:
        """A copy that fences off the daemon's state_dir and config directory at run time (see ``_start``)."""
        copy = self.model_copy()
        copy._own = own
        return copy

    @property
    def own_paths(self) -> hazards.OwnPaths:
        return self._own

    def own_paths_problems(self, own: hazards.OwnPaths) -> list[tuple[str, str]]:
        found = [("path", hazards.own_paths_problem("path", self.path, own))]
        found += [
            ("allowed_roots", hazards.own_paths_problem("allowed_roots entry", root, own, root=True))
            for root in self.allowed_roots
        ]
        return [(key, problem) for key, problem in found if problem is not None]

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        return _absolute_not_root(value, "path")

    @field_validator("allowed_roots")
    @classmethod
    def _check_roots(cls, roots: list[str]) -> list[str]:
        checked = [_absolute_not_root(root, "allowed_roots entry") for root in roots]
        for root in checked:
            if (problem := hazards.allowed_root_problem(root)) is not None:
                raise ValueError(problem)
        return checked

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        if not value or "/" in value:
            raise ValueError(
                f"pattern matches file names, so it cannot be empty or contain '/', got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _check_inside_roots(self) -> CleanParams:
        path = _components(self.path)
        if not any(_inside(path, _components(root)) for root in self.allowed_roots):
            raise ValueError(
                f"path {self.path} is not under any of allowed_roots ({', '.join(self.allowed_roots)}); "
                "extend allowed_roots if this directory really is disposable"
            )
        problem = hazards.clean_path_problem(self.path) or hazards.clean_age_problem(self.path, self.older_than)
        if problem is not None:
            raise ValueError(problem)
        return self


@dataclass(frozen=True, slots=True)
class Candidate:
    mtime: float
    reldir: str  # "" for the top directory, else "a/b"
    name: str
    size: int
    dev: int
    ino: int


def _fd_path(fd: int) -> str | None:
    """Where an open directory really is, per the kernel; None where /proc is unavailable."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


class _Refused(Exception):
    """The directory failed a run-time safety check; its message is the result's error."""


def _bytes(value: float) -> str:
    return format_value(value, Unit.BYTES)


def _age(value: float) -> str:
    return format_value(value, Unit.SECONDS)


@dataclass(slots=True)
class _Run:
    """What one run works against: fixed at its start so both passes agree on "old"."""

    top: str  # the resolved directory
    roots: list[tuple[str, ...]]  # resolved allowed_roots, as components
    fenced: frozenset[tuple[int, int]]  # (st_dev, st_ino) of the daemon's own directories: never entered
    now: float
    deadline: float  # time.monotonic()
    errors: list[str]


class CleanAction:
    """Deletes the oldest eligible files first, at most ``max_files`` per run.

    Two passes over the tree: the first finds every eligible file (so the
    oldest really go first and the leftover count is exact); the second
    re-walks only the directories that hold chosen files and unlinks each one
    relative to its directory fd after checking it is still the same old
    regular file. Keeping thousands of directory fds open between the passes
    instead would trade a bounded rewalk for an unbounded fd count.
    """

    def __init__(self, params: CleanParams, clock: Clock) -> None:
        self._params = params
        self._clock = clock

    # -- safety ----------------------------------------------------------------------------

    def _start(self) -> _Run:
        params = self._params
        # A root that is itself a symlink (/home -> /data/home) is honoured as the operator's choice.
        roots = [_components(os.path.realpath(root)) for root in params.allowed_roots]
        path = params.path
        if os.path.islink(path):
            raise _Refused(f"refusing to clean {path}: it is a symlink")
        if not os.path.isdir(path):
            raise _Refused(f"{path} is not a directory")
        top = os.path.realpath(path)
        self._check_inside(top, roots)
        # Checked at load too; again here because a symlink on the way may have changed since.
        own = params.own_paths
        problem = hazards.clean_path_problem(top) or hazards.own_paths_problem(f"{path} (really {top})", top, own)
        if problem is not None:
            raise _Refused(f"refusing to clean: {problem}")
        return _Run(top, roots, _identities(own.protected()), self._clock(), time.monotonic() + params.timeout, [])

    def _check_inside(self, real: str, roots: list[tuple[str, ...]]) -> None:
        parts = _components(real)
        if not parts or not any(_inside(parts, root) for root in roots):
            raise _Refused(
                f"refusing to clean {self._params.path}: it resolves to {real}, outside allowed_roots"
            )

    # -- walking ---------------------------------------------------------------------------

    def _walk(self, run: _Run) -> Iterator[tuple[str, list[str], list[str], int]]:
        """``os.fwalk`` without symlinks, re-checked against the roots through the top's fd.

        The path check in ``_start`` and the open inside fwalk are two
        moments; checking the path of the opened fd closes the gap in which a
        parent could be swapped for a symlink.
        """
        params = self._params
        top_dev: int | None = None
        for dirpath, dirs, files, dirfd in os.fwalk(
            run.top, follow_symlinks=False, onerror=lambda exc: run.errors.append(str(exc))
        ):
            reldir = os.path.relpath(dirpath, run.top)
            reldir = "" if reldir == "." else reldir
            st = os.fstat(dirfd)
            if (st.st_dev, st.st_ino) in run.fenced:
                # The state_dir or the config's directory, however it was reached (bind mount, rename):
                # neither it nor anything below it is listed, so nothing there can be deleted.
                dirs.clear()
                continue
            if top_dev is None:
                real = _fd_path(dirfd)
                if real is not None:
                    self._check_inside(real, run.roots)
                top_dev = st.st_dev
            if not params.recursive:
                dirs.clear()
            elif params.one_filesystem:
                dirs[:] = [d for d in dirs if _same_device(d, dirfd, top_dev)]
            yield reldir, dirs, files, dirfd

    def _eligible(self, st: os.stat_result, now: float) -> bool:
        return stat.S_ISREG(st.st_mode) and now - st.st_mtime > self._params.older_than

    def _scan(self, run: _Run) -> tuple[list[Candidate], int, bool]:
        """The oldest ``max_files`` eligible files, the count of all eligible, and whether time ran out."""
        params = self._params
        count = 0
        timed_out = False

        def eligible() -> Iterator[Candidate]:
            nonlocal count, timed_out
            for reldir, _dirs, files, dirfd in self._walk(run):
                if time.monotonic() > run.deadline:
                    timed_out = True
                    return
                for name in files:
                    if not fnmatch.fnmatchcase(name, params.pattern):
                        continue
                    try:
                        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    except OSError as exc:
                        run.errors.append(f"{os.path.join(run.top, reldir, name)}: {exc}")
                        continue
                    if self._eligible(st, run.now):
                        count += 1
                        yield Candidate(st.st_mtime, reldir, name, st.st_size, st.st_dev, st.st_ino)

        # Bounded memory however many files are eligible: only max_files are kept.
        chosen = heapq.nsmallest(params.max_files, eligible(), key=lambda c: (c.mtime, c.reldir, c.name))
        return chosen, count, timed_out

    def _delete(self, run: _Run, chosen: list[Candidate]) -> dict[tuple[str, str], str | None]:
        """Unlink the chosen files; per file None when deleted, else why not."""
        wanted: dict[str, dict[str, Candidate]] = {}
        for cand in chosen:
            wanted.setdefault(cand.reldir, {})[cand.name] = cand
        # Every directory on the way to a chosen file; the rest of the tree is not walked again.
        ancestors = {""}
        for reldir in wanted:
            parts = reldir.split("/") if reldir else []
            ancestors.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        outcome: dict[tuple[str, str], str | None] = {}
        for reldir, dirs, _files, dirfd in self._walk(run):
            dirs[:] = [d for d in dirs if (f"{reldir}/{d}" if reldir else d) in ancestors]
            for name, cand in wanted.get(reldir, {}).items():
                if time.monotonic() > run.deadline:
                    outcome[(reldir, name)] = "not deleted: the action's timeout was used up"
                else:
                    outcome[(reldir, name)] = self._unlink_one(name, dirfd, cand, run.now)
        return outcome

    def _unlink_one(self, name: str, dirfd: int, cand: Candidate, now: float) -> str | None:
        try:
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        except FileNotFoundError:
            return "already gone"
        except OSError as exc:
            return f"failed: {exc}"
        if (st.st_dev, st.st_ino) != (cand.dev, cand.ino) or not self._eligible(st, now):
            return "kept: changed since it was listed"
        try:
            os.unlink(name, dir_fd=dirfd)
        except FileNotFoundError:
            return "already gone"
        except OSError as exc:
            return f"failed: {exc}"
        return None

    # -- the action ------------------------------------------------------------------------

    def thing(self, reading: Reading) -> str:
        """The directory cleaned, whatever the subject (``NamesThing``): two disk rules share its cooldown."""
        return f"{self._params.path} ({self._params.pattern})"

    def run(self, subjects: Sequence[Reading], *, dry_run: bool) -> ActionResult:
        """Clean the directory once, whatever and however many subjects breached.

        The subjects (a mountpoint, a directory size) only say *that* space
        is short; what to delete is fixed by the config, so running once per
        subject would just repeat the same deletion.
        """
        try:
            run = self._start()
            chosen, eligible, scan_timed_out = self._scan(run)
            outcome = {} if dry_run else self._delete(run, chosen)
        except _Refused as exc:
            return ActionResult(ok=False, detail=str(exc), error=str(exc))
        except OSError as exc:
            message = f"cannot clean {self._params.path}: {exc}"
            return ActionResult(ok=False, detail=message, error=message)
        items, deleted, freed, failed = self._items(run, chosen, outcome, dry_run)
        did, freeing = ("would delete", "freeing") if dry_run else ("deleted", "freed")
        summary = f"{did} {deleted} file(s) from {run.top}, {freeing} {_bytes(freed)} ({freed} bytes)"
        left = eligible - len(chosen)
        if left:
            summary += f"; {left} more eligible file(s) left for the next run"
        if scan_timed_out:
            summary += f"; the scan stopped at the action's timeout of {self._params.timeout:g}s"
        if run.errors:
            summary += f"; {len(run.errors)} error(s) while walking, first: {run.errors[0]}"
        error = f"{failed} file(s) could not be deleted" if failed else None
        return ActionResult(ok=not failed, items=tuple(items), detail=summary, error=error)

    @staticmethod
    def _items(
        run: _Run, chosen: list[Candidate], outcome: dict[tuple[str, str], str | None], dry_run: bool
    ) -> tuple[list[ItemResult], int, int, int]:
        """One item per chosen file, and how many were deleted, the bytes freed, how many failed.

        In dry-run "deleted" and "freed" are what would be.
        """
        items: list[ItemResult] = []
        deleted = freed = failed = 0
        done = "would delete" if dry_run else "deleted"
        for cand in chosen:
            path = os.path.join(run.top, cand.reldir, cand.name)
            age = run.now - cand.mtime
            info = {"path": path, "size": cand.size, "age": round(age, 3)}
            sizes = f"{_bytes(cand.size)}, {_age(age)} old"
            why = None if dry_run else outcome.get((cand.reldir, cand.name), "not found on the second pass")
            if why is None:
                deleted += 1
                freed += cand.size
                items.append(ItemResult(path, True, f"{done} ({sizes})", info))
                continue
            ok = why.startswith(("already gone", "kept"))
            failed += not ok
            items.append(ItemResult(path, ok, why, info))
        return items, deleted, freed, failed


def _identities(paths: Sequence[str]) -> frozenset[tuple[int, int]]:
    """(device, inode) of each existing directory: what the walk recognises them by, whatever the path."""
    found: set[tuple[int, int]] = set()
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        found.add((st.st_dev, st.st_ino))
    return frozenset(found)


def _same_device(name: str, dirfd: int, dev: int) -> bool:
    """False for another filesystem mounted inside the tree, or an entry we cannot stat."""
    try:
        return os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_dev == dev
    except OSError:
        return False


def _factory(params: CleanParams, _target: object, clock: Clock) -> CleanAction:
    return CleanAction(params, clock)


ACTIONS: dict[str, ActionSpec] = {
    "files.clean": ActionSpec(
        CleanParams, _factory, "delete files older than a limit from one directory tree, oldest first",
        settle=5.0, accepts=ANY_SUBJECT,
    ),
}
