"""One event per line on stderr, as text (``key=value``) or JSON.

journald and log shippers both cope with one line per event; a traceback
spread over twenty lines does not grep at 3 a.m., so exceptions are folded
into a single ``error=`` field unless the level is debug.

Under systemd, stderr is a stream to journald, which files every line at the
unit's default priority (info) unless the line starts with an sd-daemon(3)
``<N>`` prefix (``SyslogLevelPrefix=``, on by default, strips it and uses it as
the priority). So the prefix is added exactly when stderr *is* the journal,
decided once per ``setup_logging``: a terminal, a file or a pipe to another
shipper never sees ``<4>``. The prefix, not the native journal protocol: it
needs no socket, datagram size limits or dependency, keeps the one write path,
and journald stores the message byte for byte as a terminal shows it, JSON
included (the priority lands in ``PRIORITY=``, the prefix is gone). An operator
who sets ``SyslogLevelPrefix=no`` in a drop-in sees the ``<N>`` in the messages.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def event(logger: logging.Logger, level: int, message: str, **fields: Any) -> None:
    """Log ``message`` with structured fields (rule=, subject=, ...)."""
    logger.log(level, message, extra={"fields": fields})


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = dict(getattr(record, "fields", {}))
    for key, value in vars(record).items():
        if key not in _STANDARD and key != "fields":
            fields[key] = value
    if record.exc_info and record.exc_info[1] is not None:
        fields["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
    return fields


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [f"{stamp}Z", record.levelname.lower(), record.getMessage().replace("\n", " ")]
        parts += [f"{key}={_quote(value)}" for key, value in _fields(record).items() if value is not None]
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        return json.dumps(body, default=str, allow_nan=True)


def _quote(value: Any) -> str:
    text = str(value).replace("\n", " ")
    return json.dumps(text) if (not text or " " in text or '"' in text or "=" in text) else text


FORMATTERS: dict[str, type[logging.Formatter]] = {"text": TextFormatter, "json": JsonFormatter}

PRIORITIES: tuple[tuple[int, int], ...] = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
    (logging.DEBUG, 7),
)
"""Python level floor -> syslog priority (crit, err, warning, info, debug), most severe first.

A level between two (a library's custom 25) takes the priority of the
standard level below it, so it is never shown as more severe than it is.
"""


def priority(levelno: int) -> int:
    """The syslog priority journald should file a record of this level under."""
    return next((prio for floor, prio in PRIORITIES if levelno >= floor), 7)


def is_journal(environ: Mapping[str, str], fd: int) -> bool:
    """Whether ``fd`` is the stream systemd connected to journald.

    systemd sets ``JOURNAL_STREAM=<st_dev>:<st_ino>`` of that stream for a
    service whose stdout or stderr is the journal; children inherit the variable
    even after redirecting, so only a match with fstat(2) of the very fd we write
    to counts (systemd.exec(5), "$JOURNAL_STREAM").
    """
    dev, colon, ino = environ.get("JOURNAL_STREAM", "").partition(":")
    if not colon:
        return False
    try:
        stat = os.fstat(fd)
        return (stat.st_dev, stat.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError):
        return False


class JournalPrefix(logging.Formatter):
    """``<N>`` before every line of what ``inner`` formats.

    Every line, not just the first: journald splits the stream at newlines and
    files each piece on its own, so an unprefixed continuation would be info.
    """

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


def _fileno(stream: IO[str]) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.StringIO, a closed or a replaced stderr
        return None


def make_handler(fmt: str, stream: IO[str], environ: Mapping[str, str]) -> logging.Handler:
    """A handler writing ``fmt`` lines to ``stream``, with priority prefixes when it is the journal."""
    formatter = FORMATTERS[fmt]()
    fd = _fileno(stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalPrefix(formatter) if fd is not None and is_journal(environ, fd) else formatter)
    return handler


def setup_logging(
    fmt: str, level: str, *, stream: IO[str] | None = None, environ: Mapping[str, str] | None = None
) -> None:
    """Configure the root logger once per process (daemon start and reload)."""
    handler = make_handler(fmt, sys.stderr if stream is None else stream, os.environ if environ is None else environ)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # APScheduler logs every run at INFO and every tick skipped behind a long action at WARNING;
    # the engine's own "late" tracking (healthz, watchdog pings) is what operators act on.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
