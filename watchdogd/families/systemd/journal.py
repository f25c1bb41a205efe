"""``journal.vacuum``: ``journalctl --vacuum-time/--vacuum-size/--vacuum-files``, the runbook's own command.

journald deletes only *archived* journal files, oldest first, so the active
ones (what is being logged right now) are never touched; that is why this
calls journalctl instead of deleting files itself.

journalctl has no dry-run for vacuuming. In dry-run this action does the
read-only steps instead: it asks journalctl for the disk usage, lists the
archived files and estimates from their modification times which ones the
same limits would delete (journald goes by the last entry in each file,
which the modification time approximates).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from watchdogd.contracts import ANY_SUBJECT, ActionParams, ActionResult, ActionSpec, Clock, ItemResult, Reading
from watchdogd.spec import Field, model_validator
from watchdogd.units import Duration, Size

JOURNALCTL = "journalctl"
JOURNAL_DIRS = ("/var/log/journal", "/run/log/journal")
SUBJECT = "journal"
_DELETED = re.compile(r"^Deleted archived journal (?P<path>\S+) \((?P<size>[^)]*)\)")
_FREED = re.compile(r"freed (?P<size>\S+) of archived journals from (?P<dir>\S+?)\.?$")
_USAGE = re.compile(r"take up (?P<size>\S+) in the file ?system")


class VacuumParams(ActionParams):
    max_age: Duration | None = None
    max_size: Size | None = None
    max_files: int | None = Field(default=None, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _check_limit(self) -> VacuumParams:
        if self.max_age is None and self.max_size is None and self.max_files is None:
            raise ValueError("set at least one of max_age (7d), max_size (2GiB) or max_files")
        return self

    def argv(self) -> list[str]:
        argv = [JOURNALCTL]
        if self.max_age is not None:
            argv.append(f"--vacuum-time={max(1, int(self.max_age))}s")
        if self.max_size is not None:
            argv.append(f"--vacuum-size={int(self.max_size)}")
        if self.max_files is not None:
            argv.append(f"--vacuum-files={self.max_files}")
        return argv


@dataclass(frozen=True)
class Archived:
    path: str
    size: int
    mtime: float


def archived_files(dirs: Sequence[str] = JOURNAL_DIRS) -> list[Archived]:
    """Archived journal files (``name@...journal``, ``*.journal~``), oldest first."""
    found = []
    for top in dirs:
        for root, _dirs, files in os.walk(top):
            for name in files:
                if not ((name.endswith(".journal") and "@" in name) or name.endswith(".journal~")):
                    continue
                path = os.path.join(root, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                found.append(Archived(path, st.st_size, st.st_mtime))
    return sorted(found, key=lambda a: a.mtime)


def estimate(files: Sequence[Archived], params: VacuumParams, now: float, total_usage: int) -> list[Archived]:
    """Which archived files the limits would remove, following journald's rules as far as mtimes tell."""
    doomed: dict[str, Archived] = {}
    if params.max_age is not None:
        doomed.update((a.path, a) for a in files if a.mtime < now - params.max_age)
    if params.max_size is not None:
        usage = total_usage
        for a in files:
            if usage <= params.max_size:
                break
            doomed[a.path] = a
            usage -= a.size
    if params.max_files is not None and len(files) > params.max_files:
        doomed.update((a.path, a) for a in files[: len(files) - params.max_files])
    return sorted(doomed.values(), key=lambda a: a.mtime)


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "LC_ALL": "C", "SYSTEMD_PAGER": ""})


class VacuumAction:
    def __init__(self, params: VacuumParams, clock: Clock, dirs: Sequence[str] = JOURNAL_DIRS) -> None:
        self._params = params
        self._clock = clock
        self._dirs = dirs

    def thing(self, reading: Reading) -> str:
        """The host's journal, whatever the subject (``NamesThing``): there is one, however many rules watch it."""
        return SUBJECT

    def run(self, subjects: Sequence[Reading], *, dry_run: bool) -> ActionResult:
        """Vacuum once, whatever breached: the limits are the config's, not the subjects'."""
        deadline = time.monotonic() + self._params.timeout
        argv = self._params.argv()
        try:
            before = self._usage(deadline)
            if dry_run:
                return self._dry_run(argv, before)
            proc = _run(argv, max(1.0, deadline - time.monotonic()))
            after = self._usage(deadline)
        except FileNotFoundError:
            return self._failed("journalctl is not installed on this host")
        except subprocess.TimeoutExpired:
            return self._failed(f"journalctl did not finish within the action's timeout of {self._params.timeout:g}s")
        output = proc.stderr + proc.stdout
        deleted = [m.group("path") for line in output.splitlines() if (m := _DELETED.match(line.strip()))]
        freed = [m.group("size") for line in output.splitlines() if (m := _FREED.search(line.strip()))]
        info: dict[str, Any] = {
            "argv": argv, "deleted": len(deleted), "files": deleted[:20], "freed": freed,
            "usage_before": before, "usage_after": after,
        }
        if proc.returncode != 0:
            message = " ".join(proc.stderr.split())[:300] or f"exit status {proc.returncode}"
            if "ermission" in message or "Access denied" in message:
                message += " (journal.vacuum needs root)"
            return ActionResult(False, (ItemResult(SUBJECT, False, message, info),), message, message)
        detail = f"deleted {len(deleted)} archived journal file(s), freed {' + '.join(freed) or '0B'}"
        if before and after:
            detail += f"; journals took {before}, now {after}"
        return ActionResult(True, (ItemResult(SUBJECT, True, detail, info),), detail)

    def _dry_run(self, argv: list[str], before: str | None) -> ActionResult:
        files = archived_files(self._dirs)
        total = sum(a.size for a in files) + self._active_bytes()
        doomed = estimate(files, self._params, self._clock(), total)
        size = sum(a.size for a in doomed)
        detail = (f"would run {' '.join(argv)}; journals take {before or 'unknown'}; by file times about"
                  f" {len(doomed)} of {len(files)} archived file(s), {size} bytes, would be deleted")
        info: dict[str, Any] = {
            "argv": argv, "usage_before": before, "archived": len(files),
            "would_delete": [a.path for a in doomed[:20]], "would_free_bytes": size,
        }
        return ActionResult(True, (ItemResult(SUBJECT, True, detail, info),), detail)

    def _active_bytes(self) -> int:
        total = 0
        for top in self._dirs:
            for root, _dirs, files in os.walk(top):
                for name in files:
                    if name.endswith(".journal") and "@" not in name:
                        try:
                            total += os.stat(os.path.join(root, name)).st_size
                        except OSError:
                            continue
        return total

    def _usage(self, deadline: float) -> str | None:
        """journalctl's own figure ("56.0M"), for the audit row; None when it cannot say."""
        proc = _run([JOURNALCTL, "--disk-usage"], max(1.0, deadline - time.monotonic()))
        match = _USAGE.search(proc.stdout + proc.stderr)
        return match.group("size") if match else None

    @staticmethod
    def _failed(message: str) -> ActionResult:
        return ActionResult(False, (ItemResult(SUBJECT, False, message),), message, message)


def _factory(params: VacuumParams, _target: object, clock: Clock) -> VacuumAction:
    return VacuumAction(params, clock)


ACTIONS: dict[str, ActionSpec] = {
    "journal.vacuum": ActionSpec(
        VacuumParams, _factory, "journalctl --vacuum-time/--vacuum-size/--vacuum-files (archived journals only)",
        settle=5.0, accepts=ANY_SUBJECT,
    ),
}
