"""The state directory: watchdogd's own, and held by one process at a time.

Apart from the store (``state.py``) because it is about the directory, not
the database: who may use it (``StateLock``, one daemon or ``--once`` per
directory, dropped by the kernel however the holder dies), whether it is
dedicated (``check_dedicated``: whoever cleans a shared directory would take
the audit log with it), and that it exists and is writable.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import time
from pathlib import Path
from typing import Final

DIR_MODE: Final[int] = 0o750
FILE_MODE: Final[int] = 0o640
LOCK_NAME: Final[str] = "watchdogd.lock"
DB_NAME: Final[str] = "state.db"
"""The database's name inside ``state_dir``; the dedicated-directory check knows its companions by it."""
IDENTITY_SUFFIX: Final[str] = ".id"
_LISTED: Final[int] = 5

# What may live in state_dir besides the lock: the database, its SQLite companions, the identity
# file, databases moved aside as corrupt, and a filesystem's lost+found when the directory is a
# mount point.
_OWN_NAMES: Final[re.Pattern[str]] = re.compile(
    "|".join(
        (
            re.escape(LOCK_NAME),
            r"lost\+found",
            re.escape(DB_NAME) + "(-wal|-shm|-journal)?",
            re.escape(Path(DB_NAME).stem + IDENTITY_SUFFIX),
            re.escape(DB_NAME) + r"\.corrupt-\d{8}T\d{6}Z(\.\d+)?(-wal|-shm|-journal)?",
        )
    )
)

class StateError(Exception):
    """The state store cannot be used; the message is one line naming the path."""


def ensure_state_dir(directory: Path) -> None:
    """Missing or unwritable state dir is the operator's to fix: say so, do not work around it."""
    try:
        if not directory.exists():
            directory.mkdir(mode=DIR_MODE, parents=True)
            directory.chmod(DIR_MODE)  # mkdir's mode is filtered by the umask
    except OSError as exc:
        raise StateError(f"state directory {directory} cannot be created: {exc.strerror or exc}") from exc
    if not directory.is_dir():
        raise StateError(f"state directory {directory} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StateError(f"state directory {directory} is not writable")


def check_dedicated(directory: Path) -> None:
    """Refuse a state_dir that other software or people also use.

    The daemon treats everything in it as its own (moving files aside,
    replacing the identity file), and whoever cleans that shared directory
    would take cooldowns and audit history with it. Empty or missing is fine.
    """
    try:
        names = sorted(entry.name for entry in os.scandir(directory))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StateError(f"state directory {directory} cannot be listed: {exc.strerror or exc}") from exc
    foreign = [name for name in names if not _OWN_NAMES.fullmatch(name)]
    if foreign:
        listed = ", ".join(foreign[:_LISTED]) + (f", ... ({len(foreign)} in all)" if len(foreign) > _LISTED else "")
        raise StateError(
            f"state_dir {directory} holds files that are not watchdogd's ({listed}):"
            " state_dir must be a dedicated directory"
        )


class StateLock:
    """One watchdogd (daemon or ``--once``) per state directory, for as long as the process lives.

    An exclusive ``flock`` on ``<state_dir>/watchdogd.lock``, not a pid file:
    the kernel drops the lock when the holder exits, however it exits
    (``kill -9`` included), so a file left behind never blocks a start. The
    file holds the holder's pid only to name it in the refusal. The fd is
    close-on-exec, so a child an action spawns never inherits (and outlives
    the daemon with) the lock. Taking it is the start of a read-write user,
    so it also refuses a state_dir that is not dedicated to watchdogd.
    """

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / LOCK_NAME
        ensure_state_dir(Path(directory))
        check_dedicated(Path(directory))
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
        except OSError as exc:
            raise StateError(f"state directory {directory}: cannot open the lock file {self.path}: "
                             f"{exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _lock_holder(fd)
            if holder is None:  # the holder has just taken the lock and writes its pid right after
                time.sleep(0.05)
                holder = _lock_holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StateError(f"state directory {directory}: cannot lock {self.path}: "
                                 f"{exc.strerror or exc}") from exc
            who = f"pid {holder}" if holder is not None else "another process (pid not yet written)"
            raise StateError(f"state directory {directory} is in use by another watchdogd ({who} holds "
                             f"{self.path}); one daemon or --once per state_dir") from None
        # Overwrite in place, then cut: a reader never sees an empty file, only a first line with a pid.
        text = f"{os.getpid()}\n".encode()
        os.pwrite(fd, text, 0)
        os.ftruncate(fd, len(text))
        self._fd: int | None = fd

    def release(self) -> None:
        """Idempotent; the file stays (removing it would race a start that already opened it)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> StateLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def held_by_this_process(lock_path: Path) -> bool:
    """Whether this process holds ``lock_path`` through a ``StateLock``, asked of the kernel.

    A second open file description conflicts with the holder's ``flock``
    even within one process, so "would block" plus our pid in the file means
    we hold it; a lock we can take means nobody does (a reader, a test).
    """
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _lock_holder(fd) == os.getpid()
        return False  # closing the fd below drops the shared lock we just took
    finally:
        os.close(fd)


def _lock_holder(fd: int) -> int | None:
    try:
        first = os.pread(fd, 64, 0).split(b"\n", 1)[0]
        return int(first) if first.strip() else None
    except (OSError, ValueError):
        return None
