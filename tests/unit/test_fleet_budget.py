"""The fleet budget inside a real engine and gate: slots taken before a run, given back after its verify.

The engine, gate, state store and host budget are real; the coordinator is
an in-memory one with the protocol's semantics (a fixed number of slots,
tokens that grow), because the engine's use of it is under test here. The
real coordinators are tested against a real etcd cluster and Redis in
tests/integration/fleet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.fake_family import fake_registry
from watchdogd.config import ConfigError, parse_config
from watchdogd.engine.engine import Engine
from watchdogd.engine.fleetbudget import FleetBudget
from watchdogd.engine.state import StateStore
from watchdogd.faces.cli import main
from watchdogd.fleet.coordinator import (
    CoordinatorStats,
    Denial,
    Grant,
    GroupLimits,
    GroupView,
    Holder,
)
from watchdogd.model import ActionResult, ItemResult, Reading

T0 = 1_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class MemoryCoordinator:
    """max_hosts slots per group in a dict; ``down`` makes every call answer "unavailable"."""

    kind = "memory"

    def __init__(self, host: str = "h1") -> None:
        self.host = host
        self.stats = CoordinatorStats()
        self.slots: dict[tuple[str, int], Holder] = {}
        self.token = 100
        self.down = False
        self.lost: set[int] = set()
        self.calls: list[str] = []

    def _denial(self, group: GroupLimits) -> Denial | None:
        if self.down:
            return Denial(group.name, "unavailable", "fleet budget unavailable: memory: down")
        held = tuple(h for (g, _), h in self.slots.items() if g == group.name)
        if len(held) >= group.max_hosts:
            return Denial(group.name, "full", f"{group.name} full", held)
        return None

    def acquire(self, group: GroupLimits, rule: str, deadline: float) -> Grant | Denial:
        self.calls.append(f"acquire {rule}")
        denial = self._denial(group)
        if denial is not None:
            return denial
        slot = next(i for i in range(group.max_hosts) if (group.name, i) not in self.slots)
        self.token += 1
        self.slots[(group.name, slot)] = Holder(group.name, slot, self.host, rule, T0, self.token)
        return Grant(group.name, slot, self.host, rule, T0, self.token)

    def peek(self, group: GroupLimits, deadline: float) -> Denial | None:
        self.calls.append("peek")
        return self._denial(group)

    def holding(self, grant: Grant) -> bool:
        return grant.token not in self.lost

    def release(self, grant: Grant, deadline: float) -> None:
        self.calls.append(f"release {grant.token}")
        held = self.slots.get((grant.group, grant.slot))
        if held is not None and held.token == grant.token:
            del self.slots[(grant.group, grant.slot)]

    def view(self, group: GroupLimits, deadline: float) -> GroupView:
        held = tuple(h for (g, _), h in self.slots.items() if g == group.name)
        return GroupView(group.name, group.max_hosts, held, group.max_runs, None, group.per)

    def close(self) -> None:
        self.calls.append("close")


class Probe:
    def __init__(self) -> None:
        self.values = {"a": 95.0}

    def measure(self) -> list[Reading]:
        return [Reading(s, v) for s, v in self.values.items()]


class Action:
    """Fixes the probe's subject; notes what the coordinator held while it ran."""

    def __init__(self, probe: Probe, coordinator: MemoryCoordinator, fix: bool = True) -> None:
        self.probe, self.coordinator, self.fix = probe, coordinator, fix
        self.runs: list[int] = []  # slots held at each run

    def run(self, subjects: Sequence[Reading], *, dry_run: bool) -> ActionResult:
        self.runs.append(len(self.coordinator.slots))
        if not dry_run and self.fix:
            for s in subjects:
                self.probe.values[s.subject] = 0.0
        return ActionResult(ok=True, items=tuple(ItemResult(s.subject, True, "done") for s in subjects))


GROUPS = """\
fleet:
  host: h1
  coordinator:
    redis: {{url: "redis://127.0.0.1:1/0"}}
    timeout: 1s
  groups:
    restarts: {{max_hosts: {max_hosts}, rules: [r], on_unavailable: {on_unavailable}}}
"""


@dataclass
class Rig:
    engine: Engine
    coordinator: MemoryCoordinator
    probe: Probe
    action: Action
    second: Action
    store: StateStore

    def audit(self) -> list[tuple[str, str, str, dict[str, object]]]:
        rows = self.store.history(limit=100)
        return [(e.action, e.decision.value, e.result, dict(e.detail)) for e in reversed(rows)]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def build(
        *, max_hosts: int = 1, on_unavailable: str = "skip", dry_run: bool = False, two_actions: bool = False,
        budget: str = "{actions: 5, per: 1h}",
    ) -> Rig:
        clock = Clock()
        coordinator = MemoryCoordinator()
        probe = Probe()
        action, second = Action(probe, coordinator, fix=not two_actions), Action(probe, coordinator)
        actions = "      - fake.fix: {key: r, settle: 0.1s}\n"
        if two_actions:
            actions += "      - fake.fix: {key: r2, settle: 0.1s}\n"
        text = (
            f"state_dir: {tmp_path}/state\ngrace: 0s\nbudget: {budget}\n"
            + GROUPS.format(max_hosts=max_hosts, on_unavailable=on_unavailable)
            + "rules:\n  r:\n    probe: fake.percent\n    params: {key: r}\n    above: 90\n    timeout: 1s\n"
            + f"    cooldown: 10m\n    dry_run: {str(dry_run).lower()}\n    actions:\n" + actions
        )
        registry = fake_registry({"r": probe}, {"r": action, "r2": second})
        config = parse_config(text, tmp_path / "w.yaml", registry=registry)
        store = StateStore(tmp_path / "state.db", clock)
        engine = Engine(config, store, {}, clock, grace=False, coordinator=coordinator)
        r = Rig(engine, coordinator, probe, action, second, store)
        made.append(r)
        return r

    yield build
    for r in made:
        r.engine.close()
        r.store.close()


def test_a_run_holds_a_slot_while_it_acts_and_gives_it_back_after_its_verify(rig: Callable[..., Rig]) -> None:
    r = rig()
    r.engine.run_rule("r")
    assert r.action.runs == [1]  # the slot was held while the action ran
    assert r.coordinator.slots == {}  # and given back afterwards
    assert r.coordinator.calls == ["acquire r", "release 101"]
    started = [row for row in r.audit() if row[1] == "ran"]
    assert started and all(row[3]["fleet"]["token"] == 101 for row in started)  # type: ignore[index]
    assert started[0][3]["fleet"]["group"] == "restarts"  # type: ignore[index]


def test_a_full_group_skips_the_run_once_in_the_audit_and_names_the_holders(rig: Callable[..., Rig]) -> None:
    r = rig()
    r.coordinator.slots[("restarts", 0)] = Holder("restarts", 0, "web2", "other", T0, 7)
    r.engine.run_rule("r")
    r.engine.run_rule("r")
    assert r.action.runs == []
    skipped = [row for row in r.audit() if row[1] == "skipped_fleet"]
    assert len(skipped) == 1  # a wait of many runs is one row
    fleet = skipped[0][3]["fleet"]
    assert fleet["reason"] == "full" and fleet["holders"][0]["host"] == "web2"  # type: ignore[index]
    budget = r.engine.gate.budget
    assert isinstance(budget, FleetBudget)
    stats = budget.stats(T0)
    group = stats.groups[0]
    assert group.outcomes["full"] == 2 and [w.rule for w in group.waits] == ["r"]
    r.coordinator.slots.clear()
    r.engine.run_rule("r")
    assert r.action.runs == [1]
    assert budget.stats(T0).groups[0].waits == ()  # granted: no longer waiting


def test_an_unreachable_coordinator_fails_closed_by_default(rig: Callable[..., Rig]) -> None:
    r = rig()
    r.coordinator.down = True
    r.engine.run_rule("r")
    assert r.action.runs == []
    rows = [row for row in r.audit() if row[1] == "skipped_fleet_unavailable"]
    assert rows and "unavailable" in str(rows[0][3]["fleet"]["detail"])  # type: ignore[index]


def test_on_unavailable_host_falls_back_to_the_host_budget_and_says_so(rig: Callable[..., Rig]) -> None:
    r = rig(on_unavailable="host")
    r.coordinator.down = True
    r.engine.run_rule("r")
    assert r.action.runs == [0]
    started = [row for row in r.audit() if row[1] == "ran"]
    assert started[0][3]["fleet"]["fallback"] == "host"  # type: ignore[index]
    assert r.engine.gate.budget.view(T0).remaining == 4  # the host's count still applies


def test_a_slot_lost_mid_run_stops_the_remaining_actions_when_the_group_fails_closed(
    rig: Callable[..., Rig],
) -> None:
    r = rig(two_actions=True)
    original = r.action.run

    def lose_after(subjects: Sequence[Reading], *, dry_run: bool) -> ActionResult:
        result = original(subjects, dry_run=dry_run)
        r.coordinator.lost.add(101)  # the lease expired while the first action ran
        return result

    r.action.run = lose_after  # type: ignore[method-assign]
    r.engine.run_rule("r")
    assert len(r.action.runs) == 1 and r.second.runs == []
    errors = [e.error for e in r.store.history(limit=10) if e.result == "failed"]
    assert len(errors) == 1 and "not run: fleet budget unavailable" in str(errors[0])


def test_a_rule_in_cooldown_takes_no_slot(rig: Callable[..., Rig]) -> None:
    r = rig()
    r.engine.run_rule("r")
    r.probe.values["a"] = 95.0  # breaching again, within the 10 min cooldown
    r.engine.run_rule("r")
    assert r.coordinator.calls == ["acquire r", "release 101"]


def test_a_dry_run_asks_without_taking(rig: Callable[..., Rig]) -> None:
    r = rig(dry_run=True)
    r.engine.run_rule("r")
    assert r.coordinator.calls == ["peek"]
    assert r.coordinator.slots == {}
    rows = [row for row in r.audit() if row[1] == "dry_run"]
    assert rows[0][3]["fleet"] == {"group": "restarts", "would": "grant"}


def test_a_spent_host_budget_gives_the_slot_straight_back(rig: Callable[..., Rig]) -> None:
    r = rig(budget="{actions: 1, per: 1h}")
    r.engine.gate.budget.commit(r.engine.gate.budget.prepare(T0))  # the host's one run is spent
    r.engine.run_rule("r")
    assert r.action.runs == []
    assert r.coordinator.slots == {} and r.coordinator.calls == ["acquire r", "release 101"]
    assert [row[1] for row in r.audit()] == ["skipped_budget"]


# --------------------------------------------------------------------------- config


def _config(tmp_path: Path, fleet: str) -> None:
    text = (
        "rules:\n  r:\n    probe: host.cpu\n    above: 90\n    actions:\n      - exec: {argv: [/bin/true]}\n"
        "  s:\n    probe: host.cpu\n    above: 90\n    actions:\n      - exec: {argv: [/bin/true]}\n"
        + fleet
    )
    parse_config(text, tmp_path / "w.yaml")


REDIS = "fleet:\n  coordinator: {redis: {url: 'redis://127.0.0.1:1'}}\n  groups:\n"


@pytest.mark.parametrize(
    ("fleet", "expected"),
    [
        (
            REDIS + "    g: {max_hosts: 1, rules: [nope]}\n",
            "w.yaml:15: fleet.groups.g.rules[0]: unknown rule 'nope'",
        ),
        (
            "fleet:\n  coordinator: {redis: {url: 'redis://127.0.0.1:1'}}\n  groups:\n"
            "    g: {max_hosts: 1, rules: [r]}\n    h: {max_hosts: 1, actions: [exec]}\n",
            "fleet.groups.h: rule 'r' is also in group 'g'",
        ),
        (
            REDIS + "    g: {max_hosts: 1, actions: [exec.runn]}\n",
            "unknown action kind 'exec.runn'",
        ),
        (
            "fleet:\n  coordinator:\n    redis: {url: 'redis://127.0.0.1:1'}\n    etcd: {endpoints: ['http://127.0.0.1:2379']}\n"
            "  groups:\n    g: {max_hosts: 1, rules: [r]}\n",
            "a coordinator is either etcd: {...} or redis: {...}",
        ),
        (
            "fleet:\n  coordinator: {redis: {url: 'redis://127.0.0.1:1'}, timeout: 10s, lease_ttl: 15s}\n"
            "  groups:\n    g: {max_hosts: 1, rules: [r]}\n",
            "timeout must be under half of lease_ttl",
        ),
        (
            "fleet:\n  coordinator:\n    etcd:\n      endpoints: ['http://127.0.0.1:2379']\n"
            "      username: u\n      password_file: /nonexistent\n"
            "  groups:\n    g: {max_hosts: 1, rules: [r]}\n",
            "fleet.coordinator.etcd.password_file: cannot read secret file /nonexistent",
        ),
        (
            REDIS + "    g: {max_hosts: 0, rules: [r]}\n",
            "fleet.groups.g.max_hosts",
        ),
    ],
)
def test_bad_fleet_config_is_one_line_naming_file_line_and_key(tmp_path: Path, fleet: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, fleet)
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems
    assert all(problem.startswith(f"{tmp_path / 'w.yaml'}:") for problem in caught.value.problems)


def test_a_group_by_action_kind_takes_every_rule_with_that_action(tmp_path: Path) -> None:
    text = (
        "rules:\n  r:\n    probe: host.cpu\n    above: 90\n    actions:\n      - exec: {argv: [/bin/true]}\n"
        "  quiet:\n    probe: host.cpu\n    above: 90\n"
        "fleet:\n  coordinator: {etcd: {endpoints: ['http://127.0.0.1:2379']}}\n"
        "  groups:\n    g: {max_hosts: 2, max_runs: 10, per: 10m, actions: [exec]}\n"
    )
    config = parse_config(text, tmp_path / "w.yaml")
    assert config.fleet_groups == {"r": "g"}
    assert config.fleet is not None and config.fleet.coordinator.kind == "etcd"



def test_check_config_names_the_fleet_and_each_rules_group(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(
        f"state_dir: {tmp_path}/state\ncontrol_socket: {tmp_path}/c.sock\nlisten: null\n"
        "rules:\n  r:\n    probe: host.cpu\n    above: 90\n    actions:\n      - exec: {argv: [/bin/true]}\n"
        "  quiet:\n    probe: host.cpu\n    above: 90\n"
        "fleet:\n  coordinator: {redis: {url: 'redis://127.0.0.1:1'}}\n"
        "  groups:\n    g: {max_hosts: 2, actions: [exec]}\n"
    )
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "fleet budget on redis: 1 group" in out
    assert "  r: every 15s" in out and "fleet group g" in out.split("  r: ")[1].splitlines()[0]
    assert "fleet group" not in out.split("  quiet: ")[1].splitlines()[0]
