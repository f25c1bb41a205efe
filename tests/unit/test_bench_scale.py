"""bench/bench_scale.py's pure helpers: the rule mix, the config, /metrics parsing, the verdicts."""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_scale  # noqa: E402
from sidebyside import families  # noqa: E402

KINDS = bench_scale.templates("/tmp/files/f*.txt", 4242, r"watchdogd\.daemon --config /\S*x-")
EVERYTHING = frozenset({"postgres", "redis", "docker"})


def test_mix_skips_the_services_that_are_not_there() -> None:
    rules = bench_scale.mix(100, KINDS, frozenset({"redis"}))
    assert len(rules) == 100
    assert {t.needs for t in rules} == {"", "redis"}
    families_ = dict(bench_scale.family_counts(rules))
    assert "postgres.*" not in families_ and "docker.*" not in families_
    assert families_["redis.*"] > 0 and families_["host.disk"] > 0 and families_["net.*"] > 0


def test_ten_rules_already_span_the_families() -> None:
    rules = bench_scale.mix(10, KINDS, EVERYTHING)
    assert {"host.disk", "process.*", "postgres.*", "redis.*", "net.*", "host.memory", "host.file_age"} <= {
        t.family for t in rules}


def test_mix_refuses_when_nothing_is_usable() -> None:
    with pytest.raises(ValueError, match="no rule kind"):
        bench_scale.mix(5, [bench_scale.Template("redis.up", "{}", "above: 5s", "redis")], frozenset())


def test_config_is_yaml_with_one_rule_per_template_and_only_the_targets_present(tmp_path: Path) -> None:
    rules = bench_scale.mix(30, KINDS, frozenset({"postgres"}))
    doc = yaml.safe_load(bench_scale.config_text(tmp_path, 9999, rules, frozenset({"postgres"})))
    assert doc["interval"] == "5s"
    assert doc["listen"] == "127.0.0.1:9999"
    assert doc["control_socket"] == str(tmp_path / "control.sock")
    assert "jitter" not in doc  # the shipped default
    assert set(doc["targets"]) == {"postgres"}
    assert len(doc["rules"]) == 30
    assert all("actions" not in rule for rule in doc["rules"].values())
    first = doc["rules"]["r0000-host-disk"]
    assert first == {"probe": "host.disk", "params": {}, "above": 99}
    tcp = next(r for r in doc["rules"].values() if r["probe"] == "net.tcp")
    assert tcp["params"] == {"host": "127.0.0.1", "port": 4242}
    own = next(r for r in doc["rules"].values() if r["probe"] == "process.rss")
    assert own["params"]["cmdline"] == r"watchdogd\.daemon --config /\S*x-"


def test_config_without_any_service_has_empty_targets(tmp_path: Path) -> None:
    rules = bench_scale.mix(5, KINDS, frozenset())
    doc = yaml.safe_load(bench_scale.config_text(tmp_path, 1, rules, frozenset()))
    assert doc["targets"] == {}


METRICS = """\
# TYPE watchdogd_probe_last_run_timestamp_seconds gauge
watchdogd_probe_last_run_timestamp_seconds{rule="a",probe="host.disk",target=""} 1000.5
watchdogd_probe_last_run_timestamp_seconds{probe="host.memory",rule="b",target=""} 990.0
watchdogd_probe_last_run_timestamp_seconds{rule="b",probe="host.memory",target="x"} 995.0
watchdogd_probe_success{rule="a",probe="host.disk",target=""} 1.0
"""


def test_last_runs_keeps_the_newest_per_rule_whatever_the_label_order() -> None:
    assert bench_scale.last_runs(METRICS) == {"a": 1000.5, "b": 995.0}


def test_max_age_is_the_oldest_rule_or_none_until_every_rule_ran() -> None:
    assert bench_scale.max_age(METRICS, 1002.0, 2) == pytest.approx(7.0)
    assert bench_scale.max_age(METRICS, 1002.0, 3) is None


def test_render_metric_is_found_when_exposed_and_absent_otherwise() -> None:
    assert bench_scale.render_metric(METRICS) is None
    text = METRICS + "watchdogd_exposition_render_seconds 0.0123\n"
    assert bench_scale.render_metric(text) == ("watchdogd_exposition_render_seconds", pytest.approx(0.0123))
    labelled = ('watchdogd_metrics_render_seconds{format="text"} 0.002\n'
                'watchdogd_metrics_render_seconds{format="openmetrics"} 0.004\n')
    assert bench_scale.render_metric(labelled) == ("watchdogd_metrics_render_seconds", pytest.approx(0.004))
    assert bench_scale.render_metric("watchdogd_metrics_render_seconds_sum 9.0\n") is None


def test_body_text_reads_plain_and_gzipped_bodies() -> None:
    assert bench_scale.body_text(b"a 1\n") == "a 1\n"
    assert bench_scale.body_text(gzip.compress(b"a 1\n")) == "a 1\n"


def _row(**changes: object) -> bench_scale.Row:
    row = bench_scale.Row("1,000", 1000, cpu_percent=2.0, rss_end_mib=50.0, rss_max_mib=55.0,
                          status_ms=(80.0, 90.0), scrape_ms=(1.0, 3.0), render_ms=1.0, render_full_ms=(12.0, 15.0),
                          max_age_s=4.0, age_p50_s=2.0)
    for key, value in changes.items():
        setattr(row, key, value)
    return row


def test_judge_passes_a_row_within_every_target_and_bench_run_agrees() -> None:
    verdicts = bench_scale.judge([_row()])
    assert [v.verdict for v in verdicts] == ["PASS"] * 5
    assert families.missed_targets([v.line for v in verdicts]) == []


def test_judge_misses_each_figure_over_its_target_in_the_form_bench_run_reads() -> None:
    verdicts = bench_scale.judge([_row(cpu_percent=31.0, rss_max_mib=73.5, status_ms=(150.0, 200.0),
                                       render_full_ms=(124.0, 219.0), max_age_s=12.0)])
    assert [v.verdict for v in verdicts] == ["MISS"] * 5
    lines = [v.line for v in verdicts]
    assert families.missed_targets(lines) == lines
    assert "CPU 31.00 % (target <= 3 %)" in lines[0]
    assert "RSS max 73.5 MiB (target <= 60 MiB)" in lines[1]


def test_contention_row_is_judged_on_cpu_and_rss_only() -> None:
    verdicts = bench_scale.judge([_row(contention=True, label="1,000 under contention", status_ms=None,
                                       max_age_s=99.0)])
    assert [v.line.split(":")[1].strip().split(" ")[0] for v in verdicts] == ["CPU", "RSS"]


def test_a_row_not_measured_is_never_a_pass() -> None:
    verdicts = bench_scale.judge([bench_scale.Row("100", 100, error="daemon exited")])
    assert verdicts and all(v.verdict == "N/A" for v in verdicts)
    assert all("daemon exited" in v.line for v in verdicts)


def test_table_rows_show_every_figure_and_a_failed_row_says_why() -> None:
    lines = bench_scale.table_lines([_row(), bench_scale.Row("10", 10, error="boom")])
    assert lines[2] == "| 1,000 | 2.00 | 50.0 (55.0) | 80 / 90 | 1.00 / 3.00 | 12.00 (15.00) / 1.00 | 4.0 (2.0) |"
    assert lines[3].startswith("| 10 | not measured: boom")


def test_parse_rules_takes_a_comma_list_and_refuses_the_rest() -> None:
    assert bench_scale.parse_rules("10,100,1_000") == (10, 100, 1000)
    for bad in ("", "ten", "10,0", "-5"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench_scale.parse_rules(bad)


def test_bench_run_passes_the_quick_form_and_shows_the_table_lines() -> None:
    scale = next(b for b in families.BENCHES if b.script == "bench_scale.py")
    assert scale.quick and "--quick" in scale.quick_args
    shown = families.headlines(scale, ["--- 10 rules", "  every rule ran once 6.0 s after start",
                                       "| 10 | 0.55 | 66.5 (66.5) | 78 / 152 |", "MISS  10: RSS max 66.5 MiB "
                                       "(target <= 60 MiB)"])
    assert shown == ["| 10 | 0.55 | 66.5 (66.5) | 78 / 152 |", "MISS  10: RSS max 66.5 MiB (target <= 60 MiB)"]


def test_the_render_cpu_figure_is_read_apart_from_the_wall_time() -> None:
    text = ("watchdogd_exposition_render_seconds 0.030\n"
            "watchdogd_exposition_render_cpu_seconds 0.012\n")
    assert bench_scale.render_metric(text) == ("watchdogd_exposition_render_seconds", pytest.approx(0.030))
    assert bench_scale.render_cpu(text) == pytest.approx(0.012)
    assert bench_scale.render_cpu("watchdogd_exposition_render_seconds 0.030\n") is None
