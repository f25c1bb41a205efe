"""Parsing of the human units operators write in YAML: ``30s``, ``512MiB``, ``90%``.

Each parser raises ``ValueError`` with a message that completes the sentence
"<file>:<line>: <key>: ..." so config errors read naturally.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated

from watchdogd.model import Unit
from watchdogd.spec import BeforeValidator, WithJsonSchema

DAY = 86400.0
MAX_DURATION = 365 * DAY
"""Longest duration a config (or a watchdogctl option) may name. A longer one is a typo, and far longer
ones only fail later, at run time (datetime and threading overflow), so they are refused when read."""
MIN_INTERVAL = 0.1
"""Shortest ``interval``/``every``: below it probes are all scheduling overhead (and ``0s`` never runs)."""
MAX_INTERVAL = DAY
"""Longest ``interval``/``every``, ``jitter`` and ``verify_after``: a watchdog that looks once a day is not one."""
MAX_TIMEOUT = DAY
"""Longest probe or action timeout."""

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
    """A finite float, or None: NaN, infinities and ints too big for a float are not numbers here."""
    if isinstance(raw, bool):  # YAML `yes` must not become 1 second
        return None
    if isinstance(raw, int | float):
        try:
            return _finite(float(raw))
        except OverflowError:
            return None
    return None


def _finite(number: float) -> float | None:
    """Digits in text can still overflow: ``float("9" * 400)`` is inf."""
    return number if math.isfinite(number) else None


def shown(raw: object) -> str:
    """``repr`` for error messages, kept to one short line whatever the input."""
    try:
        text = repr(raw)
    except ValueError:  # an int past Python's digit limit
        return "a number too large to show"
    return text if len(text) <= 40 else text[:37] + "..."


def _duration_seconds(raw: object) -> float:
    number = _number(raw)
    if number is not None and number >= 0:
        return number
    if isinstance(raw, str):
        match = _DURATION_RE.match(raw)
        if match:
            seconds = _finite(float(match.group(1)) * _DURATION_FACTORS[match.group(2)])
            if seconds is not None:
                return seconds
    raise ValueError(f"expected a duration like 30s, 5m, 1h or 7d, got {shown(raw)}")


def parse_duration(raw: object) -> float:
    """Seconds, from 0 to MAX_DURATION. A bare number is seconds, so ``for: 0`` works."""
    return _check_range(raw, _duration_seconds(raw), 0.0, MAX_DURATION)


def duration_between(low: float, high: float, *, exclusive_low: bool = False) -> Callable[[object], float]:
    """A parser for durations that must lie in ``[low, high]`` (``(low, high]`` with ``exclusive_low``)."""

    def parse(raw: object) -> float:
        seconds = _duration_seconds(raw)
        if exclusive_low and seconds <= low:
            raise ValueError(f"must be more than {format_duration(low)} (got {_as_written(raw)})")
        return _check_range(raw, seconds, low, high)

    return parse


def _check_range(raw: object, seconds: float, low: float, high: float) -> float:
    if seconds < low:
        raise ValueError(f"must be at least {format_duration(low)} (got {_as_written(raw)})")
    if seconds > high:
        raise ValueError(f"must be at most {format_duration(high)} (got {_as_written(raw)})")
    return seconds


def _as_written(raw: object) -> str:
    """The value as the operator typed it: ``0s``, not ``'0s'``."""
    return raw.strip() if isinstance(raw, str) and len(raw) <= 40 else shown(raw)


def format_duration(seconds: float) -> str:
    """Exact, for limits in messages: ``1d``, ``365d``, ``0.1s``."""
    for suffix, factor in (("d", DAY), ("h", 3600.0), ("m", 60.0)):
        if seconds >= factor and seconds % factor == 0:
            return f"{seconds / factor:g}{suffix}"
    return f"{seconds:g}s"


def parse_size(raw: object) -> float:
    """Bytes. Both SI (``MB``) and IEC (``MiB``) suffixes, since operators mix them."""
    number = _number(raw)
    if number is not None and number >= 0:
        return number
    if isinstance(raw, str):
        match = _SIZE_RE.match(raw)
        if match:
            suffix = (match.group(2) or "b").lower()
            size = _finite(float(match.group(1)) * _SIZE_FACTORS[suffix])
            if size is not None:
                return size
    raise ValueError(f"expected a size like 512MiB, 2GB or 1048576, got {shown(raw)}")


def parse_percent(raw: object) -> float:
    number = _number(raw)
    if number is None and isinstance(raw, str):
        match = _PERCENT_RE.match(raw)
        number = float(match.group(1)) if match else None
    if number is not None and 0 <= number <= 100:
        return number
    raise ValueError(f"expected a percentage from 0 to 100 like 90 or 90%, got {shown(raw)}")


def parse_ratio(raw: object) -> float:
    number = _number(raw)
    if number is not None and 0 <= number <= 1:
        return number
    raise ValueError(f"expected a ratio from 0 to 1 like 0.8, got {shown(raw)}")


def parse_number(raw: object) -> float:
    number = _number(raw)
    if number is not None:
        return number
    raise ValueError(f"expected a finite number, got {shown(raw)}")


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

# What editors validate (the shipped JSON Schema, watchdogctl schema): the YAML forms, not the parsed float.
_DURATION_SCHEMA = WithJsonSchema(
    {"anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": _DURATION_RE.pattern}],
     "description": "seconds, or a duration like 30s, 5m, 1h, 7d"}
)
_SIZE_PATTERN = r"^\s*(\d+(?:\.\d+)?)\s*([KMGTPkmgtp][iI]?[bB]|[bB])?\s*$"  # _SIZE_RE without (?i): ECMA regex
_SIZE_SCHEMA = WithJsonSchema(
    {"anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": _SIZE_PATTERN}],
     "description": "bytes, or a size like 512MiB, 2GB"}
)
_PERCENT_SCHEMA = WithJsonSchema(
    {"anyOf": [{"type": "number"}, {"type": "string", "pattern": _PERCENT_RE.pattern}],
     "description": "a percentage: 90 or 90%"}
)

Duration = Annotated[float, BeforeValidator(parse_duration), _DURATION_SCHEMA]
"""Seconds, written as ``30s``/``5m``/``1h``/``7d`` in YAML; 0 to 365 days."""
Interval = Annotated[float, BeforeValidator(duration_between(MIN_INTERVAL, MAX_INTERVAL)), _DURATION_SCHEMA]
"""How often a rule runs: 0.1s to 1 day."""
Timeout = Annotated[
    float, BeforeValidator(duration_between(0.0, MAX_TIMEOUT, exclusive_low=True)), _DURATION_SCHEMA
]
"""How long a probe or action may take: more than 0, at most 1 day."""
ShortDuration = Annotated[float, BeforeValidator(duration_between(0.0, MAX_INTERVAL)), _DURATION_SCHEMA]
"""Waits tied to one run (``jitter``, ``verify_after``): 0 to 1 day."""
Window = Annotated[
    float, BeforeValidator(duration_between(0.0, MAX_DURATION, exclusive_low=True)), _DURATION_SCHEMA
]
"""A rate window (``per``): a 0s window never fills, which would turn its limit off."""
Size = Annotated[float, BeforeValidator(parse_size), _SIZE_SCHEMA]
Percent = Annotated[float, BeforeValidator(parse_percent), _PERCENT_SCHEMA]
