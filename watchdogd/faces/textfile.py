"""Textfile mode: ``<textfile_dir>/watchdogd.prom`` for node_exporter's textfile collector.

For hosts where only node_exporter is scraped. The file is replaced
atomically (write a temp file in the same directory, then rename), so the
collector never reads half a file. The temp name does not end in ``.prom``,
so the collector never picks it up either.

No fsync: the file is rewritten after every cycle and again after a
restart, so losing the last version to a power cut costs nothing, while an
fsync per cycle on a host whose disk is the very thing in trouble could
stall the writer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from watchdogd.logs import event

log = logging.getLogger(__name__)

FILENAME = "watchdogd.prom"
FILE_MODE = 0o644  # node_exporter usually runs as another user
MIN_SPACING = 1.0
"""Seconds between two writes: fifty rules finishing in the same second make one write, not fifty."""


class TextfileError(Exception):
    """``textfile_dir`` is unusable; the message names it."""


def check_directory(directory: str) -> Path:
    path = Path(directory)
    if not path.is_absolute():
        raise TextfileError(f"textfile_dir: must be an absolute path, got {directory!r}")
    if not path.is_dir():
        raise TextfileError(f"textfile_dir: {directory} is not a directory (create it, or unset textfile_dir)")
    if not os.access(path, os.W_OK | os.X_OK):
        raise TextfileError(f"textfile_dir: {directory} is not writable by this user (uid {os.geteuid()})")
    return path


def write_atomic(directory: Path, body: bytes, name: str = FILENAME) -> Path:
    """Replace ``directory/name`` with ``body`` so that readers see the old or the new file, never a mix."""
    final = directory / name
    temp = directory / f".{name}.{os.getpid()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temp, flags, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
        os.chmod(temp, FILE_MODE)  # the umask may have narrowed it
        os.replace(temp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return final


class TextfileWriter:
    """A thread that rewrites the file after each cycle, at most once per ``spacing`` seconds."""

    def __init__(self, directory: Path, render: Callable[[], bytes], *, spacing: float = MIN_SPACING) -> None:
        self.directory = directory
        self._render = render
        self._spacing = spacing
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error: str | None = None
        self.writes = 0

    def start(self) -> None:
        self._changed.set()  # first file right away, before any cycle finished
        self._thread = threading.Thread(target=self._loop, name="textfile", daemon=True)
        self._thread.start()

    def changed(self) -> None:
        """Called after each rule cycle (and pause/resume): cheap, never blocks."""
        self._changed.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._changed.wait()
            if self._stop.is_set():
                break
            self._changed.clear()
            self.write_now()
            self._stop.wait(self._spacing)

    def write_now(self) -> bool:
        try:
            write_atomic(self.directory, self._render())
        except Exception as exc:  # disk full, directory removed: keep running, say it once
            text = f"{type(exc).__name__}: {exc}"
            if text != self._last_error:
                event(log, logging.ERROR, "cannot write the metrics textfile", dir=str(self.directory), error=text)
            self._last_error = text
            return False
        if self._last_error is not None:
            event(log, logging.INFO, "metrics textfile written again", dir=str(self.directory))
        self._last_error = None
        self.writes += 1
        return True

    def close(self) -> None:
        """Stop the thread and write the final state, so the file matches what the daemon last knew."""
        self._stop.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.write_now()
