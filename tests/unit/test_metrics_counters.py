"""build_info's revision and Python version; the counters of probe failures, guard skips, missed and late runs.

Counters come from the real parts: an engine on fake probes and actions
(``tests.support.fake_family``) with a hand-driven clock, a real APScheduler
``Scheduler`` for the missed and late runs (waiting on its counts, never a
fixed sleep), and the exporter's text parsed with prometheus_client's parser.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import wait_until
from tests.support.fake_family import fake_registry
from watchdogd import __version__, buildinfo
from watchdogd.buildinfo import BuildInfo
from watchdogd.config import parse_config
from watchdogd.contracts import ProbeError
from watchdogd.engine.engine import Engine
from watchdogd.engine.scheduler import JobSpec, Progress, RunCounts, Scheduler, bucket_id, late_after
from watchdogd.engine.sinks import SKIP_DECISIONS
from watchdogd.engine.snapshot import EngineSnapshot
from watchdogd.engine.state import StateStore
from watchdogd.faces.exporter import build_registry, render_text
from watchdogd.model import ActionResult, Decision, ItemResult, Reading

SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Probe:
    def __init__(self) -> None:
        self.value = 95.0
        self.error: Exception | None = None

    def measure(self) -> list[Reading]:
        if self.error is not None:
            raise self.error
        return [Reading("a", self.value)]


class Action:
    """Runs and reports success, but fixes nothing: the next run finds the subject still firing."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self, subjects: Sequence[Reading], *, dry_run: bool) -> ActionResult:
        self.calls += 1
        return ActionResult(ok=True, items=tuple(ItemResult(s.subject, True, "done") for s in subjects))


RULES = """\
state_dir: {tmp}/state
grace: 0s
budget: {{actions: 10, per: 1h}}
rules:
  r:
    probe: fake.percent
    params: {{key: r}}
    above: 90
    timeout: 1s
    cooldown: 10m
    actions:
      - fake.fix: {{key: r, settle: 0s}}
  quiet:
    probe: fake.percent
    params: {{key: quiet}}
    above: 90
  sleeper:
    probe: fake.percent
    params: {{key: quiet}}
    above: 90
    enabled: false
"""


def make_engine(tmp_path: Path, clock: Clock, text: str = RULES) -> tuple[Engine, Probe, Action, StateStore]:
    probe, quiet, action = Probe(), Probe(), Action()
    quiet.value = 1.0
    store = StateStore(tmp_path / "state.db", clock)
    registry = fake_registry({"r": probe, "quiet": quiet}, {"r": action})
    config = parse_config(text.format(tmp=tmp_path), tmp_path / "w.yaml", registry=registry)
    return Engine(config, store, {}, clock, grace=False), probe, action, store


Samples = dict[str, list[tuple[dict[str, str], float]]]


def exported(snap: EngineSnapshot, build: BuildInfo | str = "1.2.3", runs: RunCounts | None = None) -> Samples:
    registry = build_registry(lambda: snap, build, process=False, runs=None if runs is None else lambda: runs)
    out: Samples = {}
    for family in text_string_to_metric_families(render_text(registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def value(found: Samples, name: str, **labels: str) -> float:
    matches = [v for got, v in found.get(name, []) if all(got.get(k) == want for k, want in labels.items())]
    assert len(matches) == 1, (name, labels, found.get(name))
    return matches[0]


def types(snap: EngineSnapshot, runs: RunCounts) -> dict[str, tuple[str, str]]:
    registry = build_registry(lambda: snap, "1", process=False, runs=lambda: runs)
    return {f.name: (f.type, f.documentation) for f in text_string_to_metric_families(render_text(registry).decode())}


# -- build_info ------------------------------------------------------------------


def checkout(root: Path, head: str, *, loose: dict[str, str] | None = None, packed: str | None = None) -> Path:
    git = root / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text(head + "\n")
    for ref, sha in (loose or {}).items():
        (git / ref).parent.mkdir(parents=True, exist_ok=True)
        (git / ref).write_text(sha + "\n")
    if packed is not None:
        (git / "packed-refs").write_text(packed)
    return root


def test_revision_of_a_checkout_from_its_loose_ref(tmp_path: Path) -> None:
    root = checkout(tmp_path, "ref: refs/heads/main", loose={"refs/heads/main": SHA})
    assert buildinfo.git_revision(root) == SHA


def test_revision_from_packed_refs_when_the_ref_is_not_loose(tmp_path: Path) -> None:
    packed = f"# pack-refs with: peeled fully-peeled sorted\n{OTHER} refs/heads/other\n{SHA} refs/heads/main\n"
    packed += f"^{OTHER}\n"
    root = checkout(tmp_path, "ref: refs/heads/main", packed=packed)
    assert buildinfo.git_revision(root) == SHA


def test_revision_of_a_detached_head(tmp_path: Path) -> None:
    assert buildinfo.git_revision(checkout(tmp_path, SHA)) == SHA


def test_revision_of_a_worktree_reads_the_shared_refs(tmp_path: Path) -> None:
    main = checkout(tmp_path / "main", "ref: refs/heads/main", loose={"refs/heads/feature": OTHER})
    gitdir = main / ".git" / "worktrees" / "wt"
    gitdir.mkdir(parents=True)
    (gitdir / "HEAD").write_text("ref: refs/heads/feature\n")
    (gitdir / "commondir").write_text("../..\n")
    tree = tmp_path / "wt"
    tree.mkdir()
    (tree / ".git").write_text(f"gitdir: {gitdir}\n")
    assert buildinfo.git_revision(tree) == OTHER


@pytest.mark.parametrize(
    "head",
    ["ref: refs/heads/missing", "ref: ../../etc/passwd", "ref: refs/../../x", "not a sha", SHA[:20]],
)
def test_revision_is_none_for_what_does_not_name_a_commit(tmp_path: Path, head: str) -> None:
    root = checkout(tmp_path, head, loose={"refs/heads/main": SHA})
    assert buildinfo.git_revision(root) is None


def test_the_generated_file_wins_and_unknown_is_the_last_resort(tmp_path: Path) -> None:
    package = checkout(tmp_path, "ref: refs/heads/main", loose={"refs/heads/main": SHA}) / "watchdogd"
    package.mkdir()
    assert buildinfo.revision(package) == SHA  # a source checkout
    (package / buildinfo.GENERATED).write_text(f'"""Written by packaging/build."""\nREVISION = "{OTHER}"\n')
    assert buildinfo.revision(package) == OTHER  # the package build's word
    installed = tmp_path / "site-packages" / "watchdogd"
    installed.mkdir(parents=True)
    assert buildinfo.revision(installed) == buildinfo.UNKNOWN  # neither, and no parent is searched
    (installed / buildinfo.GENERATED).write_text("REVISION = $(git rev-parse HEAD)\n")  # a broken one
    assert buildinfo.revision(installed) == buildinfo.UNKNOWN


def test_build_info_carries_version_revision_and_python_version(tmp_path: Path) -> None:
    engine, *_ = make_engine(tmp_path, Clock())
    build = BuildInfo("9.9.9", SHA, platform.python_version())
    found = exported(engine.snapshot(), build)
    labels = {"version": "9.9.9", "revision": SHA, "python_version": platform.python_version()}
    assert found["watchdogd_build_info"] == [(labels, 1.0)]
    current = buildinfo.current(__version__)
    assert current.version == __version__ and current.python_version == platform.python_version()
    assert current.revision == buildinfo.UNKNOWN or re.fullmatch(r"[0-9A-Za-z._+-]+", current.revision)


# -- probe failures -----------------------------------------------------------------


def test_every_failed_probe_run_is_counted_not_only_the_edge(tmp_path: Path) -> None:
    clock = Clock()
    engine, probe, _action, _store = make_engine(tmp_path, clock)
    probe.error = ProbeError("connection refused")
    for _ in range(3):
        clock.now += 60
        engine.run_rule("r")
    engine.run_rule("quiet")
    found = exported(engine.snapshot())
    assert value(found, "watchdogd_probe_failures_total", rule="r") == 3
    assert value(found, "watchdogd_transitions_total", rule="r", kind="down") == 1  # the edge, once
    assert value(found, "watchdogd_probe_failures_total", rule="quiet") == 0  # ran fine: there, at 0
    assert not [labels for labels, _ in found["watchdogd_probe_failures_total"] if labels["rule"] == "sleeper"]
    probe.error = None
    clock.now += 60
    engine.run_rule("r")
    assert value(exported(engine.snapshot()), "watchdogd_probe_failures_total", rule="r") == 3


def test_probe_failures_survive_a_reload_that_changes_the_rule(tmp_path: Path) -> None:
    clock = Clock()
    engine, probe, action, _store = make_engine(tmp_path, clock)
    probe.error = ProbeError("down")
    engine.run_rule("r")
    engine.run_rule("r")
    changed = RULES.replace("above: 90\n    timeout", "above: 80\n    timeout")
    registry = fake_registry({"r": probe, "quiet": Probe()}, {"r": action})
    engine.reconfigure(parse_config(changed.format(tmp=tmp_path), tmp_path / "w.yaml", registry=registry), {})
    engine.run_rule("r")
    assert engine.snapshot().probe_failures == {"r": 3}


# -- guard skips -----------------------------------------------------------------------


def test_skips_are_counted_by_reason_as_the_audit_log_has_them(tmp_path: Path) -> None:
    clock = Clock()
    engine, _probe, action, store = make_engine(tmp_path, clock)
    engine.run_rule("r")  # acts; the fix does not hold
    for _ in range(3):  # the same skip three runs in a row: one audit row
        clock.now += 60
        engine.run_rule("r")
    engine.pause("r", clock.now + 3600)
    clock.now += 60
    engine.run_rule("r")
    assert action.calls == 1
    audited = [e.decision.value for e in store.history() if e.decision in SKIP_DECISIONS]
    assert sorted(audited) == ["skipped_cooldown", "skipped_paused"]
    found = exported(engine.snapshot())
    skips = "watchdogd_action_skips_total"
    for reason in ("skipped_cooldown", "skipped_paused"):
        assert value(found, skips, rule="r", action="fake.fix", reason=reason) == audited.count(reason) == 1
    assert value(found, skips, rule="r", action="fake.fix", reason="skipped_budget") == 0  # pre-set
    assert value(found, skips, rule="r", action="fake.fix", reason="gave_up") == 0
    reasons = {labels["reason"] for labels, _ in found[skips]}
    assert "skipped_fleet" not in reasons  # no fleet budget configured: its reasons are not pre-set
    assert {labels["rule"] for labels, _ in found[skips]} == {"r"}  # rules without actions have none
    assert value(found, "watchdogd_actions_total", rule="r", action="fake.fix", result="ok") == 1


# -- missed and late runs ------------------------------------------------------------


def test_a_run_due_while_the_previous_still_runs_is_missed(tmp_path: Path) -> None:
    release, started = threading.Event(), threading.Event()

    def run(name: str) -> None:
        started.set()
        release.wait(10)

    scheduler = Scheduler(run, time.time)
    scheduler.start([JobSpec("slow", 0.05, 0.0), JobSpec("idle", 3600.0, 0.0)])
    try:
        assert started.wait(10)
        wait_until(lambda: scheduler.progress.run_counts().missed["slow"] >= 2, 10, "missed runs of 'slow'")
    finally:
        release.set()
        scheduler.shutdown()
    counts = scheduler.progress.run_counts()
    assert counts.missed["idle"] == 0 and counts.late["idle"] == 0  # seeded at 0 for every scheduled rule


def test_runs_handed_out_past_the_late_mark_are_late(tmp_path: Path) -> None:
    ran = threading.Semaphore(0)

    def run(name: str) -> None:
        ran.release()

    # The scheduler runs on real time; its Progress reads a clock 30 s ahead, so every run starts "late".
    scheduler = Scheduler(run, lambda: time.time() + 30.0)
    scheduler.start([JobSpec("r", 0.05, 0.0)])
    try:
        wait_until(lambda: scheduler.progress.run_counts().late["r"] >= 3, 10, "late runs of 'r'")
    finally:
        scheduler.shutdown()
    assert ran.acquire(timeout=0)


@pytest.mark.parametrize(
    ("every", "delay", "late"),
    [(2.0, 0.9, False), (2.0, 1.1, True), (20.0, 4.9, False), (20.0, 5.1, True), (600.0, 149.0, False)],
)
def test_late_means_past_a_quarter_interval_and_at_least_a_second(every: float, delay: float, late: bool) -> None:
    clock = Clock()
    progress = Progress(clock)
    progress.forget_except(["r"])
    progress.submitted("r", clock.now - delay, every)
    assert progress.run_counts().late == {"r": int(late)}
    assert late_after(every) == max(1.0, every / 4)


def test_missed_event_is_counted_and_a_reload_keeps_the_counts() -> None:
    scheduler = Scheduler(lambda name: None, time.time)
    scheduler.replace([JobSpec("r", 10.0, 0.0), JobSpec("gone", 20.0, 0.0)])
    due = datetime.now(UTC)
    for job in (bucket_id(10.0, 0.0), bucket_id(20.0, 0.0), "never-configured"):
        scheduler._on_event(JobExecutionEvent(EVENT_JOB_MISSED, job, "default", due))
    scheduler.progress.submitted("r", due.timestamp() - 100, 10.0)
    scheduler.replace([JobSpec("r", 10.0, 0.0), JobSpec("new", 10.0, 0.0)])
    counts = scheduler.progress.run_counts()
    assert counts.missed == {"r": 1, "gone": 1, "new": 0}  # a removed rule's counter stays, never back at 0
    assert counts.late == {"r": 1, "gone": 0, "new": 0}
    scheduler.shutdown()


# -- the exposition -----------------------------------------------------------------------


def test_counters_are_typed_documented_and_pass_promtool(tmp_path: Path) -> None:
    clock = Clock()
    engine, probe, _action, _store = make_engine(tmp_path, clock)
    probe.error = ProbeError("down")
    engine.run_rule("r")
    runs = RunCounts(missed={"r": 2, "quiet": 0}, late={"r": 1, "quiet": 0})
    snap = engine.snapshot()
    found = exported(snap, runs=runs)
    assert value(found, "watchdogd_rule_runs_missed_total", rule="r") == 2
    assert value(found, "watchdogd_rule_runs_late_total", rule="r") == 1
    assert value(found, "watchdogd_rule_runs_late_total", rule="quiet") == 0
    kinds = types(snap, runs)
    for name in ("probe_failures", "action_skips", "rule_runs_missed", "rule_runs_late"):
        kind, documentation = kinds["watchdogd_" + name]
        assert kind == "counter" and len(documentation) > 60, (name, kind, documentation)
    assert "audited skips" in kinds["watchdogd_action_skips"][1]
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: apt-get install prometheus"
    body = render_text(build_registry(lambda: snap, buildinfo.current(__version__), runs=lambda: runs))
    done = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30, check=False)
    assert done.returncode == 0 and not done.stdout and not done.stderr, done.stdout + done.stderr
    assert value(exported(snap), "watchdogd_probe_failures_total", rule="r") == 1
    assert "watchdogd_rule_runs_missed_total" not in exported(snap)  # only with the scheduler's counts
    assert Decision.SKIPPED_MAINTENANCE in SKIP_DECISIONS and Decision.RAN not in SKIP_DECISIONS
