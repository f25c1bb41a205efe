"""Parsing of the human units operators write in YAML: ``30s``, ``512MiB``, ``90%``.

Each parser raises ``ValueError`` with a message that completes the sentence
"<file>:<line>: <key>: ..." so config errors read naturally.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated

from pydantic import BeforeValidator

from watchdogd.model import Unit

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_DURATION_FACTORS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "pb": 10**15,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "pib": 2**50,
}

_PERCENT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%?\s*$")


def _number(raw: object) -> float | None:
    if isinstance(raw, bool):  # YAML `yes` must not become 1 second
        return None
    if isinstance(raw, int | float):
        return float(raw)
    return None


def parse_duration(raw: object) -> float:
    """Seconds. A bare number is seconds, so ``for: 0`` works."""
    number = _number(raw)
    if number is not None and number >= 0:
        return number
    if isinstance(raw, str):
        match = _DURATION_RE.match(raw)
        if match:
            return float(match.group(1)) * _DURATION_FACTORS[match.group(2)]
    raise ValueError(f"expected a duration like 30s, 5m, 1h or 7d, got {raw!r}")


def parse_size(raw: object) -> float:
    """Bytes. Both SI (``MB``) and IEC (``MiB``) suffixes, since operators mix them."""
    number = _number(raw)
    if number is not None and number >= 0:
        return number
    if isinstance(raw, str):
        match = _SIZE_RE.match(raw)
        if match:
            suffix = (match.group(2) or "b").lower()
            return float(match.group(1)) * _SIZE_FACTORS[suffix]
    raise ValueError(f"expected a size like 512MiB, 2GB or 1048576, got {raw!r}")


def parse_percent(raw: object) -> float:
    number = _number(raw)
    if number is None and isinstance(raw, str):
        match = _PERCENT_RE.match(raw)
        number = float(match.group(1)) if match else None
    if number is not None and 0 <= number <= 100:
        return number
    raise ValueError(f"expected a percentage from 0 to 100 like 90 or 90%, got {raw!r}")


def parse_ratio(raw: object) -> float:
    number = _number(raw)
    if number is not None and 0 <= number <= 1:
        return number
    raise ValueError(f"expected a ratio from 0 to 1 like 0.8, got {raw!r}")


def parse_number(raw: object) -> float:
    number = _number(raw)
    if number is not None:
        return number
    raise ValueError(f"expected a number, got {raw!r}")


THRESHOLD_PARSERS = {
    Unit.PERCENT: parse_percent,
    Unit.RATIO: parse_ratio,
    Unit.SECONDS: parse_duration,
    Unit.BYTES: parse_size,
    Unit.COUNT: parse_number,
    Unit.PER_SECOND: parse_number,
}
"""How a rule's ``above``/``below`` is read depends on the unit of its probe."""


def format_value(value: float | None, unit: Unit) -> str:
    """Human text for status tables and logs."""
    if value is None:
        return "-"
    if math.isinf(value):  # an outage (on_down: fire), a file_age with no match: no unit makes sense
        return "inf" if value > 0 else "-inf"
    return _FORMATTERS[unit](value)


def _fmt_seconds(value: float) -> str:
    for suffix, factor in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if value >= factor:
            return f"{value / factor:.1f}{suffix}"
    return f"{value:.2f}s" if value < 10 else f"{value:.0f}s"


def _fmt_bytes(value: float) -> str:
    for suffix, factor in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= factor:
            return f"{value / factor:.1f}{suffix}"
    return f"{value:.0f}B"


_FORMATTERS: dict[Unit, Callable[[float], str]] = {
    Unit.PERCENT: lambda v: f"{v:.1f}%",
    Unit.RATIO: lambda v: f"{v:.3f}",
    Unit.SECONDS: _fmt_seconds,
    Unit.BYTES: _fmt_bytes,
    Unit.COUNT: lambda v: f"{v:g}",
    Unit.PER_SECOND: lambda v: f"{v:.2f}/s",
}

Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, written as ``30s``/``5m``/``1h``/``7d`` in YAML."""
Size = Annotated[float, BeforeValidator(parse_size)]
Percent = Annotated[float, BeforeValidator(parse_percent)]
