"""Pure parts of the Docker probes: status text, classification, selection, stats arithmetic, df."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from watchdogd.families.docker.common import COMPOSE_PROJECT, COMPOSE_SERVICE, Selection, container_name, parse_time
from watchdogd.families.docker.events import EventHistory
from watchdogd.families.docker.probes import (
    ContainersParams,
    assumed_operator_stop,
    classify,
    health_since,
    list_view,
    reclaimable,
    suspect,
)
from watchdogd.families.docker.resources import Sample, api_sample, cores_used, cpu_allowance, memory_used

ALL = frozenset({"exited", "oom_killed", "dead", "restarting", "unhealthy"})
OK0 = frozenset({0})


def test_parse_time() -> None:
    assert parse_time("2026-11-22T22:19:24.462367683Z") == pytest.approx(1795385964.462367683)
    assert parse_time("2024-01-01T00:00:00Z") == 1704067200.0
    assert parse_time("2024-01-01T02:00:00+02:00") == 1704067200.0
    assert parse_time("0001-01-01T00:00:00Z") is None  # Docker's "never"
    assert parse_time("") is None
    assert parse_time(None) is None
    assert parse_time("yesterday") is None


@pytest.mark.parametrize(
    ("state", "status", "exit_code", "health"),
    [
        ("exited", "Exited (3) 2 minutes ago", 3, None),
        ("exited", "Exited (137) Less than a second ago", 137, None),
        ("restarting", "Restarting (1) 5 seconds ago", 1, None),
        ("running", "Up 5 minutes (unhealthy)", None, "unhealthy"),
        ("running", "Up 1 second (health: starting)", None, "starting"),
        ("running", "Up 2 hours (healthy)", None, "healthy"),
        ("running", "Up 2 hours", None, None),
        ("created", "Created", None, None),
        ("dead", "Dead", None, None),
    ],
)
def test_list_view(state: str, status: str, exit_code: int | None, health: str | None) -> None:
    view = list_view({"State": state, "Status": status})
    assert (view.state, view.exit_code, view.health) == (state, exit_code, health)


@pytest.mark.parametrize(
    ("state", "status", "conditions", "expected"),
    [
        ("exited", "Exited (0) 1 minute ago", ALL, False),
        ("exited", "Exited (3) 1 minute ago", ALL, True),
        ("exited", "Exited (137) 1 minute ago", frozenset({"oom_killed"}), True),
        ("exited", "Exited (3) 1 minute ago", frozenset({"unhealthy"}), False),
        ("running", "Up 5 minutes (unhealthy)", ALL, True),
        ("running", "Up 5 minutes (unhealthy)", frozenset({"exited"}), False),
        ("running", "Up 5 minutes (healthy)", ALL, False),
        ("restarting", "Restarting (1) 1 second ago", ALL, True),
        ("dead", "Dead", ALL, True),
        ("created", "Created", ALL, False),
        ("paused", "Up 5 minutes (Paused)", ALL, False),
    ],
)
def test_only_suspects_are_inspected(state: str, status: str, conditions: frozenset[str], expected: bool) -> None:
    assert suspect(list_view({"State": state, "Status": status}), conditions, OK0) is expected


def inspect(status: str, exit_code: int = 0, *, oom: bool = False, policy: str = "no",
            finished: str = "2024-01-01T00:00:00Z", health: dict[str, Any] | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {"Status": status, "ExitCode": exit_code, "OOMKilled": oom, "FinishedAt": finished,
                             "Running": status == "running"}
    if health is not None:
        state["Health"] = health
    return {"Id": "c" * 64, "State": state, "RestartCount": 2, "HostConfig": {"RestartPolicy": {"Name": policy}},
            "Config": {"Healthcheck": {"Interval": 10_000_000_000}}}


def classified(info: dict[str, Any], history: EventHistory | None = None, **params: Any) -> Any:
    view = list_view({"State": info["State"]["Status"], "Status": ""})
    return classify(view, info, ContainersParams(**params), history)


def test_a_crash_is_exited_since_it_finished() -> None:
    problem = classified(inspect("exited", 3))
    assert problem.condition == "exited"
    assert problem.since == 1704067200.0
    assert problem.details["restart_count"] == 2
    assert "stopped_by" not in problem.details


def test_oom_kill_beats_the_exit_code_guess() -> None:
    assert classified(inspect("exited", 137, oom=True)).condition == "oom_killed"
    assert classified(inspect("exited", 137, oom=True), conditions=["exited"]).condition is None


@pytest.mark.parametrize(("exit_code", "policy"), [(143, "no"), (137, "no"), (130, "no"), (1, "always"),
                                                   (1, "unless-stopped")])
def test_stops_older_than_the_event_history_are_assumed_deliberate(exit_code: int, policy: str) -> None:
    problem = classified(inspect("exited", exit_code, policy=policy))
    assert problem.condition is None
    assert problem.details["stopped_by"].startswith("operator (assumed")
    included = classified(inspect("exited", exit_code, policy=policy), include_stopped_by_operator=True)
    assert included.condition == "exited"


def test_the_event_history_overrides_the_guess() -> None:
    history = EventHistory(lambda: 0.0)
    cid = "c" * 64
    history.feed({"Type": "container", "Action": "die", "id": cid, "timeNano": 1704067200_000_000_000,
                  "Actor": {"Attributes": {"exitCode": "143"}}})
    problem = classified(inspect("exited", 143), history)
    assert problem.condition == "exited"  # the engine saw it exit with no API kill: the process's own doing
    assert "stopped_by" not in problem.details


def test_ok_exit_codes() -> None:
    assert classified(inspect("exited", 0)).condition is None
    assert classified(inspect("exited", 0), ok_exit_codes=[]).condition == "exited"
    assert classified(inspect("exited", 2), ok_exit_codes=[0, 2]).condition is None


def test_dead_restarting_and_unhealthy() -> None:
    assert classified(inspect("dead", 0)).condition == "dead"
    assert classified(inspect("restarting", 1)).condition == "restarting"
    assert classified(inspect("restarting", 1), conditions=["exited"]).condition is None
    log = [{"Start": "2024-01-01T00:00:10Z", "ExitCode": 0, "Output": "ok"},
           {"Start": "2024-01-01T00:00:20Z", "ExitCode": 1, "Output": "  db\ndown "},
           {"Start": "2024-01-01T00:00:30Z", "ExitCode": 1, "Output": "db down"}]
    problem = classified(inspect("running", health={"Status": "unhealthy", "FailingStreak": 2, "Log": log}))
    assert problem.condition == "unhealthy"
    assert problem.since == 1704067220.0
    assert problem.details["health_output"] == "db down"


def test_health_since_counts_checks_older_than_the_log() -> None:
    log = [{"Start": f"2024-01-01T00:00:{s:02d}Z", "ExitCode": 1} for s in (10, 20, 30, 40, 50)]
    state = {"Health": {"FailingStreak": 8, "Log": log}}
    assert health_since(state, interval=10.0) == 1704067210.0 - 3 * 10.0
    assert health_since({"Health": {"FailingStreak": 0, "Log": []}}, 10.0) is None


def test_assumed_operator_stop() -> None:
    assert assumed_operator_stop(143, False, "no")
    assert not assumed_operator_stop(137, True, "no")  # the kernel, not a person
    assert not assumed_operator_stop(139, False, "no")  # SIGSEGV is a crash
    assert not assumed_operator_stop(1, False, "on-failure")


def test_selection() -> None:
    sel = Selection(names=["web-*", "db"], exclude_names=["web-tmp*"])
    assert sel.matches("web-1", {})
    assert sel.matches("db", {})
    assert not sel.matches("web-tmp1", {})
    assert not sel.matches("cache", {})
    assert not sel.matches("web-1", {"watchdogd.enable": "false"})  # opt-out label by default
    compose = Selection(compose_project="shop", compose_services=["worker"])
    assert compose.server_filters() == {"label": [f"{COMPOSE_PROJECT}=shop"]}
    assert compose.matches("x", {COMPOSE_SERVICE: "worker"})
    assert not compose.matches("x", {COMPOSE_SERVICE: "web"})
    assert Selection(labels=["watchdogd.enable=true", "tier"]).server_filters() == {
        "label": ["watchdogd.enable=true", "tier"]
    }
    assert Selection().server_filters() == {}


@pytest.mark.parametrize("bad", [{"labels": ["has space"]}, {"labels": ["=v"]}, {"names": []},
                                 {"names": ["a/b"]}, {"bogus": 1}])
def test_selection_rejects(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Selection(**bad)


def test_container_name_skips_link_aliases() -> None:
    assert container_name({"Names": ["/web/db", "/db"]}) == "db"
    assert container_name({"Names": ["/web"]}) == "web"
    assert container_name({"Id": "0123456789abcdef"}) == "0123456789ab"


def test_memory_used_like_docker_stats() -> None:
    v1 = {"memory_stats": {"usage": 100, "limit": 1000, "stats": {"total_inactive_file": 30}}}
    v2 = {"memory_stats": {"usage": 100, "limit": 1000, "stats": {"inactive_file": 40}}}
    assert memory_used(v1) == (70.0, 1000.0)
    assert memory_used(v2) == (60.0, 1000.0)
    assert memory_used({"memory_stats": {}}) is None  # a stopped container's empty sample


def test_api_sample_and_cores() -> None:
    stats = {
        "read": "2024-01-01T00:00:10Z",
        "cpu_stats": {"cpu_usage": {"total_usage": 2e9}, "online_cpus": 4, "throttling_data": {"throttled_periods": 7}},
        "memory_stats": {"usage": 100, "limit": 1000, "stats": {}},
    }
    sample = api_sample(stats, 0.5, host_memory=4000)
    assert sample == Sample(100.0, 1000.0, 2e9, 1704067210_000_000_000, 0.5, 4, 7, "api")
    unlimited = api_sample({**stats, "memory_stats": {"usage": 100, "limit": 4000}}, None, host_memory=4000)
    assert unlimited is not None and unlimited.limit is None  # the engine reports host memory for "no limit"
    before = Sample(1.0, None, 1e9, 1704067200_000_000_000, None, 4, 0, "api")
    assert cores_used(before, sample) == pytest.approx(0.1)  # 1 s of CPU in 10 s
    assert cores_used(Sample(1.0, None, 3e9, 0, None, 4, 0, "api"), sample) is None  # counter went back
    assert cores_used(sample, sample) is None
    assert cores_used(Sample(1.0, None, 1e9, 0, None, 4, 0, "cgroup"), sample) is None  # clocks differ
    assert cpu_allowance({"NanoCpus": 500_000_000}) == 0.5
    assert cpu_allowance({"CpuQuota": 150_000, "CpuPeriod": 100_000}) == 1.5
    assert cpu_allowance({"CpusetCpus": "0-1,3"}) == 3.0
    assert cpu_allowance({}) is None


def test_reclaimable_counts_what_prune_removes() -> None:
    df = {
        "Containers": [{"State": "exited", "SizeRw": 100}, {"State": "running", "SizeRw": 999},
                       {"State": "created", "SizeRw": 5}],
        "Images": [{"RepoTags": None, "Containers": 0, "Size": 50, "SharedSize": 0},
                   {"RepoTags": ["<none>:<none>"], "Containers": 0, "Size": 40, "SharedSize": 10},
                   {"RepoTags": ["app:1"], "Containers": 0, "Size": 999, "SharedSize": 0},
                   {"RepoTags": [], "Containers": 1, "Size": 999, "SharedSize": 0}],
        "BuildCache": [{"InUse": False, "Shared": False, "Size": 7}, {"InUse": True, "Shared": False, "Size": 999}],
        "Volumes": [{"UsageData": {"RefCount": 0, "Size": 3}}, {"UsageData": {"RefCount": 1, "Size": 999}},
                    {"UsageData": {"RefCount": 0, "Size": -1}}],
    }
    assert reclaimable(df) == {
        "containers": (105.0, 2),
        "images": (80.0, 2),
        "build_cache": (7.0, 1),
        "volumes": (3.0, 2),
    }
