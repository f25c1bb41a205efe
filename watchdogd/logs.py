"""One event per line on stderr, as text (``key=value``) or JSON.

journald and log shippers both cope with one line per event; a traceback
spread over twenty lines does not grep at 3 a.m., so exceptions are folded
into a single ``error=`` field unless the level is debug.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

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


def setup_logging(fmt: str, level: str) -> None:
    """Configure the root logger once per process (daemon start and reload)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(FORMATTERS[fmt]())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # APScheduler logs every run at INFO and every tick skipped behind a long action at WARNING;
    # the engine's own "late" tracking (healthz, watchdog pings) is what operators act on.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
