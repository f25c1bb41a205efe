"""Follow a log file across rotation and truncation, like ``tail -F``, one batch of lines per call.

The position lives in the instance (the file descriptor, its device and
inode, and the offset), so each rule follows its file on its own:

* rotation by rename (logrotate's default): the path now names another
  inode. What was appended to the old file since the last call is read
  through the still-open descriptor, then the new file is read from its
  start;
* truncation (``copytruncate``, ``: > app.log``): the same inode is shorter
  than the offset, so reading restarts at 0. Lines written between the copy
  and the truncation are lost to every reader; that is copytruncate's
  nature, not ours.

A freshly followed file is read from its end: the lines already there are
history of unknown age, and a 2 GiB log must not be scanned at start.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

READ_CHUNK = 1024 * 1024
MAX_LINE = 64 * 1024
"""A "line" longer than this without a newline is cut there, so a binary file cannot grow the buffer."""


_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
}


class NotRegularFile(OSError):
    """The path names something that is not a file: reading it could block forever or never end."""


def _file_kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a file")


@dataclass
class Batch:
    """Complete lines read by one call, and what happened to the file meanwhile."""

    lines: list[bytes] = field(default_factory=list)
    bytes_read: int = 0
    events: list[str] = field(default_factory=list)
    behind: bool = False  # stopped at max_bytes with more to read


class FileTail:
    def __init__(self, path: str, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.path = path
        self._max_bytes = max_bytes
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._offset = 0
        self._partial = b""
        self._opened_once = False

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()

    def read(self) -> Batch:
        """New complete lines since the previous call.

        Raises FileNotFoundError (or another OSError) only while the file has
        never been opened: once followed, a missing path is a rotation in
        progress and the next call picks up the new file.
        """
        batch = Batch()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if not self._opened_once:
                raise
            st = None
        if self._fd is None:
            if st is None:
                return batch
            self._open(st, at_end=not self._opened_once)
        elif st is not None and (st.st_dev, st.st_ino) != self._identity:
            self._drain(batch)  # the rest of the rotated file, through our descriptor
            self.close()
            self._open(st, at_end=False)
            batch.events.append("rotated")
        assert self._fd is not None
        if os.fstat(self._fd).st_size < self._offset:
            self._offset = 0
            self._partial = b""
            batch.events.append("truncated")
        self._drain(batch)
        return batch

    def _open(self, st: os.stat_result, *, at_end: bool) -> None:
        # O_NONBLOCK: opening a FIFO for reading blocks until a writer comes, which once held a
        # probe thread forever. Only regular files are followed; the flag is moot for them.
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            os.close(fd)
            kind = _file_kind(opened.st_mode)
            raise NotRegularFile(f"{self.path} is {kind}, not a regular file; only files are followed")
        self._fd = fd
        self._identity = (opened.st_dev, opened.st_ino)
        self._offset = opened.st_size if at_end else 0
        self._partial = b""
        self._opened_once = True

    def _drain(self, batch: Batch) -> None:
        assert self._fd is not None
        while True:
            budget = self._max_bytes - batch.bytes_read
            if budget <= 0:
                batch.behind = os.fstat(self._fd).st_size > self._offset
                return
            chunk = os.pread(self._fd, min(READ_CHUNK, budget), self._offset)
            if not chunk:
                return
            self._offset += len(chunk)
            batch.bytes_read += len(chunk)
            self._split(chunk, batch)

    def _split(self, chunk: bytes, batch: Batch) -> None:
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > MAX_LINE:
            lines.append(self._partial)
            self._partial = b""
        batch.lines.extend(lines)
