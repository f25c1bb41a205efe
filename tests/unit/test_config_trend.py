"""Rule keys and names (``predict:``, ``hold:``, the reserved ``*``): one ``file:line: key: message`` each."""

from __future__ import annotations

from pathlib import Path

import pytest

from watchdogd.config import ConfigError, parse_config
from watchdogd.core.trend import Prediction


def rule(body: str) -> str:
    return "interval: 1m\nrules:\n  r:\n" + "".join(f"    {line}\n" for line in body.strip().splitlines())


def problems(text: str, tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "w.yaml")
    return [p.replace(str(tmp_path / "w.yaml"), "w.yaml") for p in caught.value.problems]


def test_predict_is_read_in_the_probes_unit_and_becomes_the_rules_line(tmp_path: Path) -> None:
    config = parse_config(rule("""
probe: host.disk
predict: {above: 95%, within: 4h, over: 1h}
clear_above: 90
for: 10m
hold: 5m
"""), tmp_path / "w.yaml")
    r = config.rules["r"]
    assert r.predict == Prediction(above=95.0, below=None, within=14400.0, over=3600.0, min_samples=5)
    assert (r.thresholds.above, r.thresholds.clear_above, r.thresholds.for_, r.thresholds.hold) == (
        95.0, 90.0, 600.0, 300.0)


def test_predict_below_in_a_ratio_probe(tmp_path: Path) -> None:
    text = "targets: {redis: {c: {url: 'redis://127.0.0.1:1'}}}\n" + rule("""
probe: redis.hit_ratio
predict: {below: 0.5, within: 1h, over: 30m}
""")
    r = parse_config(text, tmp_path / "w.yaml").rules["r"]
    assert r.predict is not None and r.predict.below == 0.5 and r.thresholds.below == 0.5


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("probe: host.disk\npredict: {within: 4h}",
         "w.yaml:5: rules.r.predict: set exactly one of 'above' or 'below'"),
        ("probe: host.disk\npredict: {above: 90, below: 10, within: 4h}",
         "w.yaml:5: rules.r.predict: set exactly one of 'above' or 'below'"),
        ("probe: host.disk\nabove: 90\npredict: {above: 95, within: 4h}",
         "w.yaml:5: rules.r.above: a rule with 'predict' takes its line from predict.above/below"),
        ("probe: host.disk\npredict: {above: 95, over: 1h}",
         "w.yaml:5: rules.r.predict: missing required key 'within'"),
        ("probe: host.disk\npredict: {above: 95, within: 4h, over: 3m}",
         "w.yaml:5: rules.r.predict.over: holds 3 runs of every 60s; predict needs at least min_samples (5)"),
        ("probe: host.disk\npredict: {above: lots, within: 4h}",
         "w.yaml:5: rules.r.predict.above:"),
        ("probe: host.disk\npredict: {above: 95, within: 4h, horizon: 2h}",
         "w.yaml:5: rules.r.predict.horizon: unknown key"),
        ("probe: process.rss\nparams: {name: x}\npredict: {above: 1GiB, within: 4h}",
         "w.yaml:6: rules.r.predict: process.rss measures short-lived subjects"),
        ("probe: host.disk\nabove: 90\nhold: forever",
         "w.yaml:6: rules.r.hold: expected a duration"),
    ],
)
def test_mistakes_name_the_line_and_key(body: str, expected: str, tmp_path: Path) -> None:
    found = problems(rule(body), tmp_path)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_the_host_wide_name_is_not_a_rule_name(tmp_path: Path) -> None:
    found = problems("rules:\n  '*':\n    probe: host.cpu\n    above: 90\n", tmp_path)
    assert found == ["w.yaml:2: rules.*: '*' stands for the whole host in the audit log and the history "
                     "(maintenance mode): give the rule another name"]
