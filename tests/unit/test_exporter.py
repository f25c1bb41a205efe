"""The collector over a synthetic snapshot, checked by parsing the output and by the real promtool."""

from __future__ import annotations

import gzip
import math
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
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


def test_exposition_serves_its_body_until_a_change_or_max_age() -> None:
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
    assert exposition.render("", True).body is zipped.body  # compressed once per render, at the render
    now[0] += 1.5
    exposition.render("", False)
    assert len(calls) == 2  # nothing changed, but time moves some values: rendered again at max_age
    openmetrics = exposition.render("application/openmetrics-text; version=1.0.0", False)
    assert openmetrics.content_type.startswith("application/openmetrics-text")
    assert openmetrics.body.rstrip().endswith(b"# EOF")


def test_a_scrape_after_a_change_renders_the_change_at_once() -> None:
    """Issue 17: a body rendered on a timer served 12 s old timestamps to a scrape off the rhythm."""
    state = {"last_run": NOW - 3}
    now = [100.0]
    exposition = Exposition(
        build_registry(lambda: snapshot(rule(last_run=state["last_run"])), "1", process=False),
        min_spacing=0.5, max_age=60, clock=lambda: now[0],
    )
    line = b'watchdogd_probe_last_run_timestamp_seconds{probe="host.disk",rule="disk-full",target=""} '
    assert line + b"1.699999997e+09" in exposition.render("", False).body
    state["last_run"] = NOW
    now[0] += 1.0
    # No change reported: the scrape serves the body it has, without rendering.
    assert line + b"1.699999997e+09" in exposition.render("", False).body
    exposition.changed()
    assert line + b"1.7e+09" in exposition.render("", False).body
    renders = exposition.renders
    exposition.changed()
    now[0] += 0.1  # a tight loop of curl: at most one render per min_spacing, changes or not
    exposition.render("", False)
    assert exposition.renders == renders
    now[0] += 0.5
    exposition.render("", False)
    assert exposition.renders == renders + 1


def test_a_reused_body_is_rendered_again_once_a_rule_in_it_would_pass_its_interval() -> None:
    """A scrape within min_spacing of another gets its body only while every rule in it is within its interval."""
    state = {"last_run": NOW - 14.0}  # every 15 s: due at NOW + 1
    now, wall = [100.0], [NOW]
    exposition = Exposition(
        build_registry(lambda: snapshot(rule(last_run=state["last_run"]), taken_at=wall[0]), "1", process=False),
        min_spacing=0.5, max_age=60, clock=lambda: now[0], wall=lambda: wall[0],
    )
    exposition.render("", False)
    renders = exposition.renders
    exposition.changed()  # another rule ran (not this one): its data is what ages
    now[0] += 0.2
    wall[0] += 0.2
    exposition.render("", False)
    assert exposition.renders == renders  # within min_spacing, data within its interval: reused
    now[0] += 0.2
    wall[0] = NOW + 1.05  # past the rule's last run + its interval
    exposition.render("", False)
    assert exposition.renders == renders + 1  # rendered again before min_spacing ran out
    exposition.changed()
    now[0] += 0.05
    exposition.render("", False)
    assert exposition.renders == renders + 1  # under SPACING_FLOOR, served as is: a tight loop stays bounded


def test_concurrent_scrapes_share_one_render() -> None:
    release = threading.Event()
    entered = threading.Event()
    calls = []

    def source() -> EngineSnapshot:
        calls.append(1)
        entered.set()
        assert release.wait(10)
        return snapshot(rule())

    exposition = Exposition(build_registry(source, "1", process=False))
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(exposition.render, "", False)
        assert entered.wait(10)
        exposition.changed()  # a change while the first render runs: the waiting scrapes still share it
        others = [pool.submit(exposition.render, "", False) for _ in range(3)]
        release.set()
        bodies = {first.result(10).body, *(other.result(10).body for other in others)}
    assert len(calls) == 1 and len(bodies) == 1


def test_memory_is_released_after_each_render_and_not_when_a_page_is_reused() -> None:
    released: list[int] = []
    now = [100.0]
    exposition = Exposition(build_registry(lambda: snapshot(rule()), "1", process=False), min_spacing=0.5,
                            clock=lambda: now[0], release_memory=lambda: released.append(len(released)))
    exposition.render("", True)
    assert released == [0]  # after the render
    exposition.render("", True)
    assert released == [0]  # the same page again: nothing rendered, nothing to release
    now[0] += 1.0
    exposition.changed()
    exposition.render("", True)
    assert released == [0, 1]


def test_the_trim_after_a_render_holds_up_no_other_scrape() -> None:
    """The trim runs once the render lock is free: a scrape in another format meanwhile renders at once."""
    served: list[bytes] = []
    trims: list[None] = []

    def trim() -> None:
        trims.append(None)
        if len(trims) == 1:  # the first render's trim; the other scrape's own trim is the second
            other = threading.Thread(target=lambda: served.append(
                exposition.render("application/openmetrics-text; version=1.0.0", True).body))
            other.start()
            other.join(10)

    exposition = Exposition(build_registry(lambda: snapshot(rule()), "1", process=False), release_memory=trim)
    exposition.render("", True)
    assert len(served) == 1 and len(trims) == 2


def test_the_previous_render_time_is_a_metric() -> None:
    exposition = Exposition(build_registry(lambda: snapshot(rule()), "1", process=False), min_spacing=0.0)
    exposition.render("", False)
    exposition.changed()
    found = {
        family.name: family.samples[0].value
        for family in text_string_to_metric_families(exposition.render("", False).body.decode())
    }
    assert found["watchdogd_exposition_render_seconds"] > 0
    # Two clocks: the thread's CPU clock may tick a little past the wall clock on a sub-millisecond render.
    assert 0 <= found["watchdogd_exposition_render_cpu_seconds"] <= found["watchdogd_exposition_render_seconds"] + 2e-3


def test_text_for_a_client_without_gzip_is_made_once_per_page_and_not_kept_past_its_age() -> None:
    now = [100.0]
    exposition = Exposition(build_registry(lambda: snapshot(rule()), "1", process=False), max_age=1.0,
                            clock=lambda: now[0])
    zipped = exposition.render("", True)
    text = exposition.render("", False)
    assert text.encoding is None and text.body == gzip.decompress(zipped.body)
    assert exposition.render("", False).body is text.body  # one decompress for the page
    now[0] += 1.5
    exposition.render("", True)  # a scrape with gzip past the page's age lets the text go
    assert exposition._plain is None
