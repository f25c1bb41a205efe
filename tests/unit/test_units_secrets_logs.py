"""Parsing of human units, secret sources and the one-line log formats."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from watchdogd.logs import JsonFormatter, TextFormatter
from watchdogd.model import Unit
from watchdogd.secrets import resolve_secret
from watchdogd.units import format_value, parse_duration, parse_percent, parse_size


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("30s", 30), ("5m", 300), ("1h", 3600), ("7d", 604800), ("1.5h", 5400), ("250ms", 0.25), (0, 0), (12, 12)],
)
def test_durations(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize("raw", ["15x", "-3s", "", True, None, "1 h 2m", [1]])
def test_bad_durations(raw: object) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(raw)


@pytest.mark.parametrize(
    ("raw", "size"), [("512MiB", 512 * 2**20), ("2GB", 2e9), ("1kib", 1024), (1048576, 1048576), ("10B", 10)]
)
def test_sizes(raw: object, size: float) -> None:
    assert parse_size(raw) == size


@pytest.mark.parametrize(("raw", "pct"), [(90, 90), ("90%", 90), ("12.5 %", 12.5), (0, 0), (100, 100)])
def test_percent(raw: object, pct: float) -> None:
    assert parse_percent(raw) == pct


@pytest.mark.parametrize("raw", [101, -1, "lots", "90%%"])
def test_bad_percent(raw: object) -> None:
    with pytest.raises(ValueError, match="expected a percentage"):
        parse_percent(raw)


def test_format_value() -> None:
    assert format_value(5400, Unit.SECONDS) == "1.5h"
    assert format_value(3 * 2**30, Unit.BYTES) == "3.0GiB"
    assert format_value(91.24, Unit.PERCENT) == "91.2%"
    assert format_value(None, Unit.COUNT) == "-"


def test_secret_from_file_env_and_inline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "dsn"
    secret.write_text("postgresql://u@h/db\n")
    secret.chmod(0o600)
    assert resolve_secret(None, str(secret), None, "dsn") == "postgresql://u@h/db"
    monkeypatch.setenv("WD_DSN", "from-env")
    assert resolve_secret(None, None, "WD_DSN", "dsn") == "from-env"
    assert resolve_secret("inline", None, None, "dsn") == "inline"
    assert resolve_secret(None, None, None, "dsn") is None


def test_secret_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WD_MISSING", raising=False)
    with pytest.raises(ValueError, match="set only one of dsn, dsn_file"):
        resolve_secret("a", "b", None, "dsn")
    with pytest.raises(ValueError, match="environment variable WD_MISSING is not set"):
        resolve_secret(None, None, "WD_MISSING", "dsn")
    with pytest.raises(ValueError, match="cannot read secret file"):
        resolve_secret(None, str(tmp_path / "nope"), None, "dsn")
    open_secret = tmp_path / "open"
    open_secret.write_text("x")
    open_secret.chmod(0o644)
    with pytest.raises(ValueError, match="readable by others"):
        resolve_secret(None, str(open_secret), None, "dsn")


def _record(message: str, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("watchdogd", logging.WARNING, __file__, 1, message, None, None)
    record.fields = fields
    return record


def test_text_log_is_one_line_with_quoted_fields() -> None:
    line = TextFormatter().format(_record("firing\nnow", rule="disk full", subject="/", value=None))
    assert "\n" not in line
    assert line.endswith('warning firing now rule="disk full" subject=/')


def test_json_log_is_one_object_per_line() -> None:
    line = JsonFormatter().format(_record("firing", rule="disk", value=float("inf")))
    body = json.loads(line)
    assert (body["msg"], body["rule"], body["level"], body["value"]) == ("firing", "disk", "warning", float("inf"))
