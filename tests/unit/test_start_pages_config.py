"""``release_start_pages_after``: when the daemon hands back its start-up pages; null turns it off."""

from __future__ import annotations

from pathlib import Path

import pytest

from watchdogd.config import ConfigError, parse_config

RULES = "rules:\n  mem: {probe: host.memory, above: 90}\n"


def test_default_is_a_minute_after_start_long_enough_for_every_first_run(tmp_path: Path) -> None:
    assert parse_config(RULES, tmp_path / "w.yaml").release_start_pages_after == 60.0


@pytest.mark.parametrize(("written", "seconds"), [("null", None), ("1s", 1.0), ("10m", 600.0), ("1h", 3600.0)])
def test_durations_and_null_are_accepted(tmp_path: Path, written: str, seconds: float | None) -> None:
    config = parse_config(f"release_start_pages_after: {written}\n" + RULES, tmp_path / "w.yaml")
    assert config.release_start_pages_after == seconds


@pytest.mark.parametrize("written", ["2h", "500ms", "0", "-5s", "never", "false"])
def test_out_of_bounds_is_refused_with_file_line_and_key(tmp_path: Path, written: str) -> None:
    path = tmp_path / "w.yaml"
    with pytest.raises(ConfigError) as caught:
        parse_config(f"listen: null\nrelease_start_pages_after: {written}\n" + RULES, path)
    assert len(caught.value.problems) == 1, caught.value.problems
    assert caught.value.problems[0].startswith(f"{path}:2: release_start_pages_after: "), caught.value.problems
