"""The collector over a synthetic snapshot, checked by parsing the output and by the real promtool."""

from __future__ import annotations

import gzip
import math
import shutil
import subprocess
import time
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from watchdogd.engine.snapshot import ActionSummary, EngineSnapshot, RuleSnapshot
from watchdogd.faces.exporter import Exposition, build_registry, render_text
from watchdogd.model import Cardinality, RuleStatus, Unit

NOW = 1_700_000_000.0


def rule(name: str = "disk-full", **changes: object) -> RuleSnapshot:
    base = RuleSnapshot(
        name=name,
        probe="host.disk",
        target=None,
        severity="critical",
        unit=Unit.PERCENT,
        cardinality=Cardinality.LOW,
        status=RuleStatus.FIRING,
        enabled=True,
        dry_run=False,
        every=15.0,
        above=90.0,
        below=None,
        up=True,
        error=None,
        last_run=NOW - 3,
        duration=0.002,
        readings={"/": 93.0, "/var": 40.0},
        firing={"/": 93.0},
        pending={},
        cooldown_until=NOW + 600,
        last_actions=(ActionSummary("files.clean", "ran", "ok", NOW - 60, "/"),),
        has_actions=True,
        actions=("files.clean",),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def snapshot(*rules: RuleSnapshot, **changes: object) -> EngineSnapshot:
    base = EngineSnapshot(
        taken_at=NOW,
        started_at=NOW - 3600,
        dry_run=False,
        rules=rules,
        actions_total={("disk-full", "files.clean", "ok"): 3},
        budget_actions=30,
        budget_per=3600.0,
        budget_remaining=27,
        actions_last_hour=3,
        config_path="/etc/watchdogd/watchdogd.yaml",
        config_loaded_at=NOW - 100,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def samples(snap: EngineSnapshot) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = render_text(build_registry(lambda: snap, "1.2.3", process=False)).decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def value(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    matches = [v for got, v in found[name] if all(got.get(k) == want for k, want in labels.items())]
    assert len(matches) == 1, (name, labels, found.get(name))
    return matches[0]


def test_core_families_and_values() -> None:
    found = samples(snapshot(rule()))
    assert value(found, "watchdogd_build_info", version="1.2.3") == 1
    assert value(found, "watchdogd_rule_firing", rule="disk-full", severity="critical") == 1
    assert value(found, "watchdogd_rule_state", rule="disk-full", state="firing") == 1
    assert value(found, "watchdogd_rule_state", rule="disk-full", state="ok") == 0
    assert value(found, "watchdogd_probe_success", rule="disk-full", probe="host.disk") == 1
    assert value(found, "watchdogd_probe_duration_seconds", rule="disk-full") == pytest.approx(0.002)
    assert value(found, "watchdogd_probe_last_run_timestamp_seconds", rule="disk-full") == NOW - 3
    assert value(found, "watchdogd_actions_total", rule="disk-full", action="files.clean", result="ok") == 3
    assert value(found, "watchdogd_actions_total", rule="disk-full", action="files.clean", result="failed") == 0
    assert value(found, "watchdogd_action_last_timestamp_seconds", rule="disk-full", action="files.clean") == NOW - 60
    assert value(found, "watchdogd_rule_cooldown_until_timestamp_seconds", rule="disk-full") == NOW + 600
    assert value(found, "watchdogd_budget_remaining_actions") == 27
    assert value(found, "watchdogd_rule_breaching_subjects", rule="disk-full") == 1


def test_percent_readings_are_exported_as_ratios_with_subject_labels() -> None:
    found = samples(snapshot(rule()))
    assert value(found, "watchdogd_reading_ratio", rule="disk-full", subject="/") == pytest.approx(0.93)
    assert value(found, "watchdogd_rule_threshold_ratio", rule="disk-full", bound="above") == pytest.approx(0.9)


def test_high_cardinality_probe_exports_aggregates_and_never_a_subject_label() -> None:
    backends = {f"pid {n}": float(n) for n in range(1, 501)}
    pg = rule(
        "pg-idle", probe="postgres.idle", target="main", unit=Unit.SECONDS, cardinality=Cardinality.HIGH,
        readings=backends, firing={k: v for k, v in backends.items() if v > 400}, above=400.0,
    )
    found = samples(snapshot(pg))
    assert value(found, "watchdogd_rule_reading_max_seconds", rule="pg-idle") == 500
    assert value(found, "watchdogd_rule_reading_min_seconds", rule="pg-idle") == 1
    assert value(found, "watchdogd_rule_breaching_subjects", rule="pg-idle") == 100
    assert value(found, "watchdogd_rule_subjects", rule="pg-idle") == 500
    assert not any("subject" in labels for series in found.values() for labels, _ in series)
    assert "watchdogd_reading_seconds" not in found
    assert sum(len(series) for series in found.values()) < 100  # 500 backends, a bounded number of series


def test_units_get_their_own_families() -> None:
    found = samples(snapshot(
        rule("a", unit=Unit.BYTES, readings={"/srv": 2048.0}, above=1e9, firing={}),
        rule("b", unit=Unit.COUNT, readings={"load": 3.0}, above=4.0, firing={}),
        rule("c", unit=Unit.SECONDS, readings={"/backup/*": math.inf}, above=86400.0),
    ))
    assert value(found, "watchdogd_reading_bytes", rule="a") == 2048
    assert value(found, "watchdogd_reading", rule="b") == 3
    assert value(found, "watchdogd_reading_seconds", rule="c") == math.inf


def test_not_yet_run_rule_has_no_probe_series_and_pause_forever_is_inf() -> None:
    fresh = rule("fresh", up=None, last_run=None, duration=None, readings={}, firing={}, status=RuleStatus.PAUSED,
                 paused_until=math.inf, last_actions=())
    found = samples(snapshot(fresh))
    assert "watchdogd_probe_success" not in found
    assert value(found, "watchdogd_rule_paused_until_timestamp_seconds", rule="fresh") == math.inf
    assert value(found, "watchdogd_rule_cooldown_until_timestamp_seconds", rule="fresh") == 600 + NOW


def test_counters_of_removed_rules_stay_and_dry_run_counter_is_preset() -> None:
    dry = rule(dry_run=True)
    found = samples(snapshot(dry, actions_total={("gone", "exec", "ok"): 5}))
    assert value(found, "watchdogd_actions_total", rule="gone", action="exec", result="ok") == 5
    assert value(found, "watchdogd_actions_total", rule="disk-full", result="dry_run") == 0


def test_help_says_readings_are_cached() -> None:
    text = render_text(build_registry(lambda: snapshot(rule()), "1", process=False)).decode()
    help_line = next(line for line in text.splitlines() if line.startswith("# HELP watchdogd_reading_ratio "))
    assert "Cached between probe runs" in help_line


def test_promtool_finds_no_problem() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: apt-get install prometheus"
    snap = snapshot(
        rule(),
        rule("pg", unit=Unit.SECONDS, cardinality=Cardinality.HIGH, readings={"pid 1": 5.0}, firing={}),
        rule("down", up=False, error="timed out", readings={}, firing={}, status=RuleStatus.DOWN),
        actions_total={("disk-full", "files.clean", "ok"): 1},
        last_reload_error="1 problem(s): bad",
    )
    body = render_text(build_registry(lambda: snap, "0.1.0"))
    done = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30, check=False)
    assert done.returncode == 0 and not done.stdout and not done.stderr, done.stdout + done.stderr


def test_exposition_without_its_thread_renders_inline_once_max_age_passed() -> None:
    calls = []
    now = [100.0]

    def source() -> EngineSnapshot:
        calls.append(1)
        return snapshot(rule())

    exposition = Exposition(build_registry(source, "1", process=False), max_age=1.0, clock=lambda: now[0])
    first = exposition.render("", False)
    assert exposition.render("", False).body == first.body and len(calls) == 1
    zipped = exposition.render("", True)
    assert zipped.encoding == "gzip" and gzip.decompress(zipped.body) == first.body and len(calls) == 1
    now[0] += 1.5
    exposition.render("", False)
    assert len(calls) == 2
    openmetrics = exposition.render("application/openmetrics-text; version=1.0.0", False)
    assert openmetrics.content_type.startswith("application/openmetrics-text")
    assert openmetrics.body.rstrip().endswith(b"# EOF")


def test_exposition_renders_in_the_background_after_a_change() -> None:
    state = {"firing": {"/": 93.0}}
    exposition = Exposition(
        build_registry(lambda: snapshot(rule(firing=state["firing"])), "1", process=False), min_spacing=0.01, max_age=60
    )
    exposition.start()
    try:
        assert b'watchdogd_rule_firing{rule="disk-full",severity="critical"} 1.0' in exposition.render("", False).body
        renders = exposition.renders
        state["firing"] = {}
        # No change reported: the scrape serves the body it has, without rendering.
        assert b"severity=\"critical\"} 1.0" in exposition.render("", False).body
        assert exposition.renders == renders
        exposition.changed()
        deadline = time.monotonic() + 5
        while b'severity="critical"} 0.0' not in exposition.render("", False).body:
            assert time.monotonic() < deadline, "the change was never rendered"
            time.sleep(0.01)
    finally:
        exposition.close()


def test_render_is_timed_just_before_the_next_scrape() -> None:
    now = [0.0]
    exposition = Exposition(build_registry(lambda: snapshot(rule()), "1", process=False), clock=lambda: now[0])
    exposition.render("", False)  # first scrape renders inline at t=0
    assert exposition.next_render_in() == 5.0  # nobody scraped twice yet: the slowest pace
    now[0] += 15.0
    exposition.render("", False)  # Prometheus every 15 s; the body was 15 s old, so it rendered at t=15
    # One render per scrape, finished shortly (0.5 s) before the next one is expected at t=30.
    assert exposition.next_render_in() == pytest.approx(14.5)
    now[0] += 0.1
    exposition.render("", False)  # a tight loop of curl: at most one render per min_spacing
    assert exposition.next_render_in() == pytest.approx(0.4)
    now[0] += 3600
    assert exposition._wanted() == {}  # nobody asked for an hour: nothing to keep fresh
