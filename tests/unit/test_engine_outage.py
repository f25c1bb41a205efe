"""The outage model in the engine: on_down, depends_on, shared cooldowns, verify that waits for the fix.

Fake probes and actions stand in for the families (the engine is under test,
not them), handed to the engine by a registry of fake kinds
(``tests.support.fake_family``); a real SQLite store in tmp_path. Verify
waits on the real clock, so the settle times here are a second at most.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from tests.support.fake_family import fake_registry
from tests.unit.test_engine import Clock, FakeProbe
from watchdogd.clients import open_clients
from watchdogd.config import ConfigError, parse_config
from watchdogd.contracts import Action, ProbeError
from watchdogd.daemon import dependency_order, run_once
from watchdogd.engine.engine import Engine
from watchdogd.engine.state import StateStore
from watchdogd.model import ActionResult, Decision, ItemResult, Reading, RuleStatus, Unit
from watchdogd.registry import Registry
from watchdogd.units import format_value


class OutageProbe(FakeProbe):
    """A fake availability probe: knows the subject an outage takes down."""

    def __init__(self, values: dict[str, float]) -> None:
        super().__init__(values)
        self.calls = 0

    def measure(self) -> list[Reading]:
        self.calls += 1
        return super().measure()

    def outage_subjects(self) -> list[str]:
        return list(self.values)


class Restart:
    """Restarts one named thing whatever the subject; heals the probe after ``heal_after`` more measures."""

    def __init__(self, thing: str, probe: OutageProbe | None = None, heal_after: int = 0) -> None:
        self.name = thing
        self.probe = probe
        self.heal_after = heal_after
        self.runs: list[list[str]] = []

    def thing(self, reading: Reading) -> str:
        return self.name

    def run(self, subjects: Sequence[Reading], *, dry_run: bool) -> ActionResult:
        self.runs.append([s.subject for s in subjects])
        if self.probe is not None and not dry_run:
            probe, heal_at = self.probe, self.probe.calls + self.heal_after
            original = type(probe).measure

            def measure() -> list[Reading]:
                if probe.calls >= heal_at:
                    probe.error = None
                    for subject in probe.values:
                        probe.values[subject] = 0.01
                return original(probe)

            probe.measure = measure  # type: ignore[method-assign]
        return ActionResult(ok=True, items=tuple(ItemResult(s.subject, True, "restarted") for s in subjects))


HEADER = "grace: 0s\nbudget: {actions: 20, per: 1h}\nrules:\n"


Fakes = Mapping[str, tuple[FakeProbe] | tuple[FakeProbe, Action]]
"""Per rule name: the probe it measures with and, if it has an action, the action (the fakes' ``key``)."""


def registry_of(fakes: Fakes) -> Registry:
    probes = {name: probe for name, (probe, *_) in fakes.items()}
    actions = {name: action for name, (_, *acting) in fakes.items() for action in acting}
    return fake_registry(probes, actions)


def engine_for(
    tmp_path: Path, rules_yaml: str, clock: Clock, fakes: Fakes, store: StateStore | None = None
) -> Engine:
    config = parse_config(HEADER + rules_yaml, tmp_path / "w.yaml", registry=registry_of(fakes))
    store = store or StateStore(tmp_path / "state.db", clock)
    return Engine(config, store, {}, clock, grace=False)


def rule(name: str, body: str) -> str:
    """Rule ``name``; a ``KEY`` in its body (the fake kinds' ``key``) becomes the name, so it gets ``fakes[name]``."""
    lines = [f"  {name}:"] + [f"    {line}" for line in body.strip().replace("KEY", name).splitlines()]
    return "\n".join(lines) + "\n"


UP_RULE = """
probe: fake.count
params: {key: KEY}
above: 2
on_down: fire
severity: critical
every: 1s
actions:
  - fake.fix: {key: KEY, settle: 1s}
cooldown: 1m
"""


def test_on_down_fire_turns_an_outage_into_a_firing_subject_and_acts(tmp_path: Path) -> None:
    clock = Clock()
    probe = OutageProbe({"db:5432": 0.01})
    restart = Restart("db.service", probe)
    engine = engine_for(tmp_path, rule("up", UP_RULE), clock, {"up": (probe, restart)})
    assert engine.run_rule("up").status is RuleStatus.OK

    probe.error = ProbeError("connection refused")
    report = engine.run_rule("up")

    assert restart.runs == [["db:5432"]]  # the outage subject is the one the probe reports when up
    ran = [e for e in report.audit if e.decision is Decision.RAN]
    assert [e.value_before for e in ran] == [float("inf")]
    assert ran[0].detail["held"] is True
    assert report.status is RuleStatus.OK  # the verify saw it answer again


def test_outage_without_actions_reports_firing_with_the_error(tmp_path: Path) -> None:
    clock = Clock()
    body = UP_RULE.split("actions:", maxsplit=1)[0]
    probe = OutageProbe({"db:5432": 0.01})
    engine = engine_for(tmp_path, rule("up", body), clock, {"up": (probe,)})
    probe.error = ProbeError("timed out")

    report = engine.run_rule("up")

    assert report.status is RuleStatus.FIRING
    assert report.firing == ("db:5432",)
    assert report.up is False and report.error == "timed out"
    snap = next(r for r in engine.snapshot().rules if r.name == "up")
    assert snap.firing == {"db:5432": float("inf")}


def test_on_down_hold_keeps_state_and_does_not_act(tmp_path: Path) -> None:
    clock = Clock()
    probe = OutageProbe({"db:5432": 0.01})
    restart = Restart("db.service")
    hold = rule("up", UP_RULE.replace("on_down: fire", "on_down: hold"))
    engine = engine_for(tmp_path, hold, clock, {"up": (probe, restart)})
    probe.error = ProbeError("refused")

    report = engine.run_rule("up")

    assert report.status is RuleStatus.DOWN
    assert restart.runs == []


def test_a_probe_without_outage_subjects_fires_on_what_it_measured_last(tmp_path: Path) -> None:
    clock = Clock()
    probe = FakeProbe({"a": 0.1, "b": 0.2})
    engine = engine_for(tmp_path, rule("up", UP_RULE.split("actions:", maxsplit=1)[0]), clock, {"up": (probe,)})
    engine.run_rule("up")
    probe.error = ProbeError("refused")

    assert set(engine.run_rule("up").firing) == {"a", "b"}


def test_on_down_defaults_follow_the_probe_kind(tmp_path: Path) -> None:
    config = parse_config(
        HEADER + rule("tcp", "probe: net.tcp\nparams: {host: 127.0.0.1, port: 1}\nabove: 1s")
        + rule("cpu", "probe: host.cpu\nabove: 90"),
        tmp_path / "w.yaml",
    )
    assert config.rules["tcp"].on_down == "fire"
    assert config.rules["cpu"].on_down == "hold"


def test_on_down_fire_is_refused_for_per_connection_probes(tmp_path: Path) -> None:
    text = HEADER + rule("procs", "probe: process.rss\nparams: {name: x}\nabove: 1GiB\non_down: fire")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "w.yaml")
    assert "rules.procs.on_down" in str(caught.value)


# --------------------------------------------------------------------------- depends_on


DEPENDENT = """
probe: fake.percent
params: {key: KEY}
above: 90
every: 1s
depends_on: up
"""


UP_AND_BUSY = rule("up", UP_RULE.split("actions:", maxsplit=1)[0]) + rule("busy", DEPENDENT)


def test_a_dependent_waits_on_the_outage_without_probing_or_counting(tmp_path: Path) -> None:
    clock = Clock()
    up, busy = OutageProbe({"db": 0.01}), OutageProbe({"db": 10.0})
    engine = engine_for(tmp_path, UP_AND_BUSY, clock, {"up": (up,), "busy": (busy,)})
    up.error = ProbeError("refused")
    engine.run_rule("up")

    report = engine.run_rule("busy")

    assert report.status is RuleStatus.WAITING and report.waiting_on == ("up",)
    assert busy.calls == 0
    up.error = None
    engine.run_rule("up")
    assert engine.run_rule("busy").status is RuleStatus.OK
    assert busy.calls == 1


def test_a_dependent_that_notices_first_rechecks_its_dependency(tmp_path: Path) -> None:
    """The dependent's probe fails while the dependency last looked fine: the dependency runs now."""
    clock = Clock()
    up, busy = OutageProbe({"db": 0.01}), OutageProbe({"db": 10.0})
    engine = engine_for(tmp_path, UP_AND_BUSY, clock, {"up": (up,), "busy": (busy,)})
    engine.run_rule("up")
    clock.now += 5
    up.error = busy.error = ProbeError("refused")

    report = engine.run_rule("busy")

    assert up.calls == 2  # run again from within the dependent's run
    assert report.status is RuleStatus.WAITING
    statuses = {r.name: r.status for r in engine.snapshot().rules}
    assert statuses == {"up": RuleStatus.FIRING, "busy": RuleStatus.WAITING}


def test_a_dependent_whose_own_probe_fails_is_down_when_the_dependency_is_fine(tmp_path: Path) -> None:
    clock = Clock()
    up, busy = OutageProbe({"db": 0.01}), OutageProbe({"db": 10.0})
    engine = engine_for(tmp_path, UP_AND_BUSY, clock, {"up": (up,), "busy": (busy,)})
    busy.error = ProbeError("permission denied")

    assert engine.run_rule("busy").status is RuleStatus.DOWN


@pytest.mark.parametrize(
    ("deps", "message"),
    [
        ("a: {probe: host.cpu, above: 1, depends_on: a}", "cannot depend on itself"),
        ("a: {probe: host.cpu, above: 1, depends_on: nope}", "unknown rule 'nope'"),
        (
            "a: {probe: host.cpu, above: 1, depends_on: b}\n  b: {probe: host.cpu, above: 1, depends_on: [a]}",
            "dependency cycle: a -> b -> a",
        ),
    ],
)
def test_bad_dependencies_are_config_errors(tmp_path: Path, deps: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(HEADER + "  " + deps + "\n", tmp_path / "w.yaml")
    assert message in str(caught.value)
    assert "depends_on" in str(caught.value)


def test_once_runs_dependencies_first(tmp_path: Path) -> None:
    text = HEADER + rule("c", "probe: host.cpu\nabove: 1\ndepends_on: [b]") + rule(
        "b", "probe: host.cpu\nabove: 1\ndepends_on: a") + rule("a", "probe: host.cpu\nabove: 1")
    assert dependency_order(parse_config(text, tmp_path / "w.yaml")) == ["a", "b", "c"]


# --------------------------------------------------------------------------- shared cooldown


TWO_RESTARTERS = rule("unit-failed", UP_RULE) + rule("health", UP_RULE.replace("severity: critical", ""))


def test_one_cooldown_per_thing_across_rules(tmp_path: Path) -> None:
    clock = Clock()
    first, second = OutageProbe({"unit": 5.0}), OutageProbe({"url": 5.0})
    a, b = Restart("app.service"), Restart("app.service")
    engine = engine_for(tmp_path, TWO_RESTARTERS, clock, {"unit-failed": (first, a), "health": (second, b)})

    engine.run_rule("unit-failed")
    report = engine.run_rule("health")

    assert a.runs == [["unit"]] and b.runs == []
    [skip] = report.audit
    assert skip.decision is Decision.SKIPPED_COOLDOWN
    assert skip.detail["held_by"]["rule"] == "unit-failed"
    assert skip.detail["held_by"]["at"] == clock.now
    assert skip.detail["held_by"]["until"] == clock.now + 60

    # The hold is durable: a restarted daemon still honours it...
    c = Restart("app.service")
    fakes: Fakes = {"unit-failed": (OutageProbe({"unit": 5.0}), Restart("app.service")),  # not run here
                    "health": (OutageProbe({"url": 5.0}), c)}
    restarted = engine_for(tmp_path, TWO_RESTARTERS, clock, fakes, StateStore(tmp_path / "state.db", clock))
    restarted.run_rule("health")
    assert c.runs == []
    # ...and ends with the cooldown.
    clock.now += 61
    restarted.run_rule("health")
    assert c.runs == [["url"]]


def test_different_things_do_not_hold_each_other(tmp_path: Path) -> None:
    clock = Clock()
    a, b = Restart("app.service"), Restart("db.service")
    fakes: Fakes = {"unit-failed": (OutageProbe({"unit": 5.0}), a), "health": (OutageProbe({"url": 5.0}), b)}
    engine = engine_for(tmp_path, TWO_RESTARTERS, clock, fakes)
    engine.run_rule("unit-failed")
    engine.run_rule("health")
    assert a.runs and b.runs


# --------------------------------------------------------------------------- verify


def test_verify_waits_for_the_fix_within_settle(tmp_path: Path) -> None:
    clock = Clock()
    probe = OutageProbe({"db": 5.0})
    restart = Restart("db.service", probe, heal_after=2)  # still refusing for two re-probes
    engine = engine_for(tmp_path, rule("up", UP_RULE), clock, {"up": (probe, restart)})

    [entry] = engine.run_rule("up").audit

    assert entry.detail["held"] is True
    assert entry.detail["settled_after"] > 0
    assert entry.value_after == pytest.approx(0.01)


def test_a_fix_that_does_not_hold_says_why(tmp_path: Path) -> None:
    clock = Clock()
    probe = OutageProbe({"db": 5.0})
    restart = Restart("db.service")  # changes nothing
    engine = engine_for(tmp_path, rule("up", UP_RULE), clock, {"up": (probe, restart)})

    [entry] = engine.run_rule("up").audit

    assert entry.detail["held"] is False
    assert entry.detail["verify"] == "still above 2 after 1s settle (value 5)"
    [row] = [e for e in StateStore(tmp_path / "state.db", clock).history(limit=5) if e.decision is Decision.RAN]
    assert row.detail["held"] is False and "still above" in row.detail["verify"]


def test_a_fix_verified_while_the_target_is_still_down_names_the_outage(tmp_path: Path) -> None:
    clock = Clock()
    probe = OutageProbe({"db": 0.01})
    probe.error = ProbeError("connection refused")
    engine = engine_for(tmp_path, rule("up", UP_RULE), clock, {"up": (probe, Restart("db.service"))})

    [entry] = engine.run_rule("up").audit

    assert entry.detail["held"] is False
    assert entry.detail["verify"] == "probe down after 1s settle: connection refused"


def test_a_slow_but_answering_dependency_does_not_hold_its_dependents(tmp_path: Path) -> None:
    """pg-up pending on latency must not stop the rule that might fix the slowness."""
    clock = Clock()
    up_rule = UP_RULE.split("actions:", maxsplit=1)[0] + "for: 1m\n"
    up, busy = OutageProbe({"db": 5.0}), OutageProbe({"db": 10.0})
    engine = engine_for(tmp_path, rule("up", up_rule) + rule("busy", DEPENDENT), clock, {"up": (up,), "busy": (busy,)})
    assert engine.run_rule("up").status is RuleStatus.PENDING

    assert engine.run_rule("busy").status is RuleStatus.OK
    clock.now += 61
    assert engine.run_rule("up").status is RuleStatus.FIRING
    assert engine.run_rule("busy").status is RuleStatus.WAITING


def test_an_infinite_value_reads_without_a_unit() -> None:
    """+inf is an outage (on_down: fire) or "no file at all" (host.file_age): never "infd" or "infTiB"."""
    assert {format_value(float("inf"), unit) for unit in Unit} == {"inf"}
    assert format_value(float("-inf"), Unit.COUNT) == "-inf"


def test_once_fails_on_an_unreachable_service_even_before_its_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One run cannot wait out a `for`; a refused connection must still not read as "0 firing", exit 0."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    text = (f"state_dir: {tmp_path}/state\nlisten: null\nrules:\n"
            + rule("app-port", f"probe: net.tcp\nparams: {{port: {port}, timeout: 1s}}\nabove: 1s\nfor: 1m")
            + rule("cpu", "probe: host.cpu\nabove: 100"))
    code = run_once(parse_config(text, tmp_path / "w.yaml"))

    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out[-1] == "2 rules: 1 pending, 1 ok; unreachable (pending their `for`): app-port"


# --------------------------------------------------------------------------- absent targets


PG_TARGET = "targets:\n  fake:\n    main: {%s}\n"  # stands for a postgres target
PG_UP = """
probe: fake.up
params: {key: KEY}
above: 2s
severity: critical
every: 1s
actions:
  - fake.fix: {key: KEY, settle: 0.1s}
"""
PG_IDLE = """
probe: fake.target_percent
params: {key: KEY}
above: 90
every: 1s
depends_on: pg-up
"""


def pg_engine(
    tmp_path: Path, clock: Clock, up: FakeProbe, restart: Restart, conn: FakeProbe | None = None, optional: bool = True
) -> Engine:
    """pg-up measures with ``up`` and acts with ``restart``; pg-conn measures with ``conn`` (by default one not run)."""
    extra = "optional: true" if optional else ""
    text = (PG_TARGET % extra) + HEADER + rule("pg-up", PG_UP) + rule("pg-conn", PG_IDLE)
    fakes: Fakes = {"pg-up": (up, restart), "pg-conn": (conn or OutageProbe({"pg": 1.0}),)}
    config = parse_config(text, tmp_path / "w.yaml", registry=registry_of(fakes))
    # The clients as the daemon opens them, from the config's registry (the fake target's is inert).
    return Engine(config, StateStore(tmp_path / "state.db", clock), open_clients(config), clock, grace=False)


def test_a_target_that_never_answered_is_absent_not_an_outage(tmp_path: Path) -> None:
    clock = Clock()
    up, conn, restart = OutageProbe({"pg": 0.01}), OutageProbe({"pg": 1.0}), Restart("postgresql")
    engine = pg_engine(tmp_path, clock, up, restart, conn)
    up.error = conn.error = ProbeError("connection refused")

    assert engine.run_rule("pg-up").status is RuleStatus.ABSENT
    assert engine.run_rule("pg-conn").status is RuleStatus.ABSENT  # not "waiting" on a service that is not here
    assert restart.runs == []
    assert up.calls == 1  # the dependent did not re-run an absent dependency


def test_once_a_target_answered_its_failure_is_an_outage_also_after_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    up, restart = OutageProbe({"pg": 0.01}), Restart("postgresql")
    engine = pg_engine(tmp_path, clock, up, restart)
    assert engine.run_rule("pg-up").status is RuleStatus.OK
    engine.close()

    up2, restart2 = OutageProbe({"pg": 0.01}), Restart("postgresql")
    again = pg_engine(tmp_path, clock, up2, restart2)  # same state store: the first answer is remembered
    up2.error = ProbeError("connection refused")
    report = again.run_rule("pg-up")
    assert report.status is RuleStatus.FIRING
    assert restart2.runs == [["pg"]]


def test_a_target_not_marked_optional_is_an_outage_from_the_first_start(tmp_path: Path) -> None:
    clock = Clock()
    up = OutageProbe({"pg": 0.01})
    engine = pg_engine(tmp_path, clock, up, Restart("postgresql"), optional=False)
    up.error = ProbeError("connection refused")
    assert engine.run_rule("pg-up").status is RuleStatus.FIRING
