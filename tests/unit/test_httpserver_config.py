"""``http_keepalive_idle``: how long /metrics keeps an idle connection, bounded, with errors naming file:line:key."""

from __future__ import annotations

from pathlib import Path

import pytest

from watchdogd.config import ConfigError, parse_config
from watchdogd.faces.httpserver import HttpLimits

RULES = "rules:\n  mem: {probe: host.memory, above: 90}\n"


def test_default_outlasts_a_scrape_interval_and_matches_the_server_default(tmp_path: Path) -> None:
    config = parse_config(RULES, tmp_path / "w.yaml")
    assert config.http_keepalive_idle == 120.0 == HttpLimits().keepalive_idle


@pytest.mark.parametrize(("written", "seconds"), [("5m", 300.0), ("1s", 1.0), ("1h", 3600.0), (30, 30.0)])
def test_durations_are_accepted_within_bounds(tmp_path: Path, written: object, seconds: float) -> None:
    config = parse_config(f"http_keepalive_idle: {written}\n" + RULES, tmp_path / "w.yaml")
    assert config.http_keepalive_idle == seconds


@pytest.mark.parametrize("written", ["2h", "500ms", "0", "-5s", "forever"])
def test_out_of_bounds_is_refused_with_file_line_and_key(tmp_path: Path, written: str) -> None:
    path = tmp_path / "w.yaml"
    with pytest.raises(ConfigError) as caught:
        parse_config(f"listen: 127.0.0.1:19469\nhttp_keepalive_idle: {written}\n" + RULES, path)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"{path}:2: http_keepalive_idle: ")
