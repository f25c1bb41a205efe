"""Engine.snapshot reuses a rule's view until something it shows changed, or a time in it passed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.unit.test_metrics_counters import Clock, make_engine
from watchdogd.engine.runtime import VIEWED
from watchdogd.engine.snapshot import RuleSnapshot
from watchdogd.model import RuleStatus


def views(snap_rules: tuple[RuleSnapshot, ...]) -> dict[str, RuleSnapshot]:
    return {rule.name: rule for rule in snap_rules}


def test_views_are_reused_while_nothing_changed(tmp_path: Path) -> None:
    clock = Clock()
    engine, *_ = make_engine(tmp_path, clock)
    engine.run_rule("quiet")
    first = views(engine.snapshot().rules)
    clock.now += 30
    second = views(engine.snapshot().rules)
    assert all(second[name] is first[name] for name in first)


def test_a_run_rebuilds_that_rule_only(tmp_path: Path) -> None:
    clock = Clock()
    engine, *_ = make_engine(tmp_path, clock)
    before = views(engine.snapshot().rules)
    engine.run_rule("r")
    after = views(engine.snapshot().rules)
    assert after["quiet"] is before["quiet"]
    assert after["r"] is not before["r"]
    assert after["r"].firing == {"a": 95.0} and after["r"].last_actions  # acted: its last action is shown


def test_a_pause_shows_at_once_and_its_end_on_time(tmp_path: Path) -> None:
    clock = Clock()
    engine, *_ = make_engine(tmp_path, clock)
    engine.run_rule("quiet")
    engine.snapshot()
    engine.pause("quiet", clock.now + 60)
    paused = views(engine.snapshot().rules)["quiet"]
    assert paused.status is RuleStatus.PAUSED and paused.paused_until == clock.now + 60
    clock.now += 59
    assert views(engine.snapshot().rules)["quiet"] is paused
    clock.now += 2  # past the end: nothing was replaced, but the view must say so
    ended = views(engine.snapshot().rules)["quiet"]
    assert ended.status is RuleStatus.OK and ended.paused_until is None


def test_a_cooldown_leaves_the_view_when_it_ends(tmp_path: Path) -> None:
    clock = Clock()
    engine, *_ = make_engine(tmp_path, clock)
    engine.run_rule("r")  # acts; cooldown 10m
    cooling = views(engine.snapshot().rules)["r"]
    assert cooling.cooldown_until is not None
    clock.now = cooling.cooldown_until + 1
    assert views(engine.snapshot().rules)["r"].cooldown_until is None


def test_a_view_holds_its_rules_config(tmp_path: Path) -> None:
    """The config's part of a view is made once per config and placed by position: every field where it belongs."""
    clock = Clock()
    engine, *_ = make_engine(tmp_path, clock)
    engine.run_rule("r")
    for _ in range(2):  # made with new facts, then with the facts the first view kept
        view = views(engine.snapshot().rules)["r"]
        rule = engine.config.rules["r"]
        assert (view.name, view.probe, view.target, view.severity, view.unit, view.cardinality) == (
            rule.name, rule.probe, rule.target, rule.severity, rule.unit, rule.cardinality)
        assert (view.enabled, view.dry_run, view.every, view.above, view.below) == (
            rule.enabled, rule.dry_run, rule.every, rule.thresholds.above, rule.thresholds.below)
        assert (view.has_actions, view.description, view.actions, view.timeout, view.timeout_source, view.on_down,
                view.depends_on) == (True, rule.description, tuple(a.kind for a in rule.actions), rule.timeout,
                                     rule.timeout_source, rule.on_down, rule.depends_on)
        assert view.status is RuleStatus.FIRING and view.up is True and view.last_run == clock.now
        clock.now += 1
        engine.run_rule("r")


def test_views_without_firing_pending_or_readings_share_one_read_only_mapping(tmp_path: Path) -> None:
    clock = Clock()
    engine, *_ = make_engine(tmp_path, clock)
    engine.run_rule("quiet")
    quiet, never_ran = views(engine.snapshot().rules)["quiet"], views(engine.snapshot().rules)["r"]
    assert quiet.firing is quiet.pending is never_ran.readings
    with pytest.raises(TypeError):
        quiet.firing["x"] = 1.0  # type: ignore[index]


def test_the_cache_does_not_keep_a_replaced_run_result_alive(tmp_path: Path) -> None:
    """Views are checked against the runtime's version, not against the objects they were made of: those
    would keep each rule's previous result, subjects and guard until the next scrape (1.3 MiB at 1,000 rules)."""
    clock = Clock()
    engine, *_ = make_engine(tmp_path, clock)
    engine.run_rule("quiet")
    engine.snapshot()
    runtime = engine._runtime("quiet")
    result = runtime.last
    assert result is not None
    clock.now += 1
    engine.run_rule("quiet")
    assert runtime.last is not result
    assert sys.getrefcount(result) == 2  # this test's name and getrefcount's argument: nothing else holds it


def test_replacing_what_a_view_shows_moves_the_runtime_version(tmp_path: Path) -> None:
    clock = Clock()
    engine, *_ = make_engine(tmp_path, clock)
    runtime = engine._runtime("quiet")
    for field_name in VIEWED:
        before = runtime.version
        setattr(runtime, field_name, getattr(runtime, field_name))
        assert runtime.version == before + 1, field_name
    before = runtime.version
    runtime.trend_saved = 5.0  # not shown in a view
    assert runtime.version == before


def test_a_run_leaves_its_view_made_for_the_next_snapshot(tmp_path: Path) -> None:
    """The view is made on the rule's own thread after its run, not on the scrape's: the snapshot reuses it."""
    clock = Clock()
    engine, *_ = make_engine(tmp_path, clock)
    engine.snapshot()
    engine.run_rule("r")
    made = engine._snapshot_cache["r"].view
    assert made.firing == {"a": 95.0} and made.last_actions  # this run's state and its action, already
    assert views(engine.snapshot().rules)["r"] is made


def test_a_removed_rule_leaves_the_view_cache(tmp_path: Path) -> None:
    clock = Clock()
    engine, *_ = make_engine(tmp_path, clock)
    engine.run_rule("quiet")
    engine._snapshot_cache["gone"] = engine._snapshot_cache["quiet"]  # as a rule a reload removed
    engine.snapshot()
    assert "gone" not in engine._snapshot_cache and "quiet" in engine._snapshot_cache


def test_each_view_a_run_makes_goes_to_on_view(tmp_path: Path) -> None:
    """The exporter prepares a rule's lines from there (faces.exporter.RuleGroups), on the rule's thread."""
    clock = Clock()
    engine, *_ = make_engine(tmp_path, clock)
    seen: list[RuleSnapshot] = []
    engine._on_view = seen.append
    engine.run_rule("r")
    engine.run_rule("quiet")
    assert [view.name for view in seen] == ["r", "quiet"]
    current = views(engine.snapshot().rules)
    assert seen[0] is current["r"] and seen[1] is current["quiet"]
