"""The host budget behind the ``Budget`` protocol: its window, prepare/commit/release, reloads, restarts, config.

A real StateStore in tmp_path (the budget loads its count through
``load_kv``) and plain numbers for time: the budget is handed ``now``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from watchdogd.config import ConfigError, parse_config
from watchdogd.core.guard import BudgetPolicy
from watchdogd.engine.budget import HOST_KEY, BudgetView, HostBudget, budget_for
from watchdogd.engine.state import StateStore

T0 = 1_000_000.0
HOUR = 3600.0
POLICY = BudgetPolicy(actions=2, per=HOUR)


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore(tmp_path / "state.db", Clock()) as opened:
        yield opened


def spend_durably(budget: HostBudget, store: StateStore, now: float) -> None:
    """One real run as the gate books it: prepare, write the spend with the write-ahead rows, commit."""
    spend = budget.prepare(now)
    store.save_rule_and_audit("r", {}, [], spend.kv)
    budget.commit(spend)


def seed(store: StateStore, *times: float) -> None:
    store.save_kv(HOST_KEY, {"version": 1, "action_times": list(times)})


# --------------------------------------------------------------------------- the window


def test_exhausted_after_its_actions_and_open_again_when_one_leaves_the_window(store: StateStore) -> None:
    budget = HostBudget(POLICY, store.load_kv)
    assert budget.is_open(T0)
    spend_durably(budget, store, T0)
    assert budget.is_open(T0 + 5)
    spend_durably(budget, store, T0 + 10)
    assert not budget.is_open(T0 + 20)
    assert budget.view(T0 + 20) == BudgetView(kind="host", actions=2, per=HOUR, remaining=0, used_last_hour=2)
    assert not budget.is_open(T0 + HOUR - 0.1)  # the run at T0 is still inside (T0 - 0.1, T0 + 3599.9]
    assert budget.is_open(T0 + HOUR)  # the window is (T0, T0 + 3600]: the run at T0 is out
    assert budget.view(T0 + HOUR).remaining == 1
    assert budget.view(T0 + HOUR + 10).remaining == 2


def test_a_spend_forgets_the_runs_that_left_the_window(store: StateStore) -> None:
    seed(store, 0.0, 100.0, 3000.0)
    budget = HostBudget(POLICY, store.load_kv)
    spend = budget.prepare(3700.0)
    assert spend.kv == {HOST_KEY: {"version": 1, "action_times": [3000.0, 3700.0]}}


def test_view_counts_the_last_hour_whatever_the_window(store: StateStore) -> None:
    policy = BudgetPolicy(actions=5, per=2 * HOUR)
    seed(store, T0, T0 + 1800, T0 + 4000)
    budget = HostBudget(policy, store.load_kv)
    view = budget.view(T0 + 4000)
    assert (view.remaining, view.used_last_hour) == (2, 2)  # all three in the 2 h window, two in the last hour
    assert (view.kind, view.actions, view.per) == ("host", 5, 2 * HOUR)


def test_a_time_in_the_future_still_counts(store: StateStore) -> None:
    """The wall clock stepped back: when in doubt, fewer actions."""
    seed(store, T0 + 500, T0 + 600)
    budget = HostBudget(POLICY, store.load_kv)
    assert not budget.is_open(T0)
    assert budget.view(T0).remaining == 0


# --------------------------------------------------------------------------- prepare, commit, release


def test_prepare_changes_nothing_until_commit(store: StateStore) -> None:
    budget = HostBudget(POLICY, store.load_kv)
    before = budget.view(T0)
    spend = budget.prepare(T0)
    assert spend.kv == {HOST_KEY: {"version": 1, "action_times": [T0]}}
    assert budget.view(T0) == before
    assert budget.is_open(T0)
    assert store.load_kv(HOST_KEY) is None  # preparing writes nothing either
    again = budget.prepare(T0 + 1)  # an uncommitted spend does not stack under the next one
    assert again.kv == {HOST_KEY: {"version": 1, "action_times": [T0 + 1]}}
    budget.commit(spend)
    assert budget.view(T0).remaining == before.remaining - 1
    assert budget.view(T0).used_last_hour == 1


def test_a_prepared_spend_that_is_dropped_leaves_the_budget_whole(store: StateStore) -> None:
    """What the gate does when the write-ahead fails: no commit."""
    budget = HostBudget(POLICY, store.load_kv)
    for now in (T0, T0 + 1, T0 + 2):
        budget.prepare(now)
    assert budget.view(T0 + 3).remaining == 2
    assert budget.is_open(T0 + 3)


def test_release_gives_nothing_back(store: StateStore) -> None:
    budget = HostBudget(POLICY, store.load_kv)
    spend = budget.prepare(T0)
    store.save_rule_and_audit("r", {}, [], spend.kv)
    budget.commit(spend)
    before = budget.view(T0 + 1)
    budget.release(spend)
    assert budget.view(T0 + 1) == before
    assert before.remaining == 1
    assert store.load_kv(HOST_KEY) == {"version": 1, "action_times": [T0]}


def test_a_committed_spend_survives_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    with StateStore(tmp_path / "state.db", clock) as store:
        budget = HostBudget(POLICY, store.load_kv)
        spend_durably(budget, store, T0)
        spend_durably(budget, store, T0 + 10)
    with StateStore(tmp_path / "state.db", clock) as reopened:
        again = HostBudget(POLICY, reopened.load_kv)
        assert not again.is_open(T0 + 20)
        assert again.view(T0 + 20).used_last_hour == 2


# --------------------------------------------------------------------------- budget_for


def test_budget_for_builds_the_kind_the_policy_names(store: StateStore) -> None:
    budget = budget_for(POLICY, store.load_kv)
    assert isinstance(budget, HostBudget)
    assert budget.policy == POLICY


def test_a_reload_with_the_same_policy_keeps_the_budget_and_its_count(store: StateStore) -> None:
    budget = budget_for(POLICY, store.load_kv)
    assert isinstance(budget, HostBudget)
    spend = budget.prepare(T0)
    budget.commit(spend)  # committed in memory only: only the running object knows it
    same = budget_for(BudgetPolicy(actions=2, per=HOUR, kind="host"), store.load_kv, previous=budget)
    assert same is budget
    assert same.view(T0).remaining == 1


def test_a_changed_policy_gets_a_new_budget_that_loads_the_durable_count(store: StateStore) -> None:
    budget = budget_for(POLICY, store.load_kv)
    assert isinstance(budget, HostBudget)
    spend_durably(budget, store, T0)
    wider = BudgetPolicy(actions=3, per=HOUR)
    changed = budget_for(wider, store.load_kv, previous=budget)
    assert changed is not budget
    assert isinstance(changed, HostBudget)
    assert changed.policy == wider
    assert changed.view(T0 + 1) == BudgetView(kind="host", actions=3, per=HOUR, remaining=2, used_last_hour=1)


def test_the_count_survives_a_restart_through_budget_for(tmp_path: Path) -> None:
    clock = Clock()
    with StateStore(tmp_path / "state.db", clock) as store:
        budget = budget_for(POLICY, store.load_kv)
        assert isinstance(budget, HostBudget)
        spend_durably(budget, store, T0)
    with StateStore(tmp_path / "state.db", clock) as reopened:
        fresh = budget_for(POLICY, reopened.load_kv)
        assert fresh.view(T0 + 1).remaining == 1


# --------------------------------------------------------------------------- config


def test_config_budget_kind_host_parses(tmp_path: Path) -> None:
    config = parse_config("budget: {kind: host, actions: 3, per: 1h}\nrules: {}\n", tmp_path / "w.yaml")
    assert config.budget == BudgetPolicy(actions=3, per=HOUR, kind="host")


def test_config_budget_kind_defaults_to_host(tmp_path: Path) -> None:
    assert parse_config("budget: {actions: 3, per: 1h}\nrules: {}\n", tmp_path / "w.yaml").budget.kind == "host"
    assert parse_config("rules: {}\n", tmp_path / "w.yaml").budget == BudgetPolicy(actions=30, per=HOUR)


def test_config_budget_kind_fleet_is_an_error_naming_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    text = "interval: 15s\nbudget:\n  actions: 3\n  kind: fleet\n  per: 1h\nrules: {}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, path)
    assert caught.value.problems == (f"{path}:4: budget.kind: Input should be 'host'",)
