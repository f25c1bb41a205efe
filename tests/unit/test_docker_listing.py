"""One container listing per engine per cycle: the engine's list filters reproduced on the shared listing."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytest

from watchdogd.families.docker.common import Selection, list_filtered, selected
from watchdogd.families.docker.probes import ContainersParams, ContainersProbe
from watchdogd.families.docker.resources import MemoryParams, MemoryProbe
from watchdogd.families.docker.target import DockerEngine, DockerTargetParams


def row(name: str, state: str = "running", status: str = "Up 5 minutes", **labels: str) -> dict[str, Any]:
    return {
        "Id": name * 4, "Names": [f"/{name}"], "Image": "busybox", "State": state, "Status": status,
        "Labels": dict(labels), "Created": 1, "Ports": [], "Mounts": [], "NetworkSettings": {"Networks": {}},
    }


ROWS = [
    row("web", **{"app": "shop", "tier": "front", "com.docker.compose.project": "p"}),
    row("db", "exited", "Exited (1) 1 minute ago", **{"app": "shop", "tier": "back", "k": "a=b"}),
    row("cache", "paused", "Up 1 minute (Paused)", app="other"),
    row("job", "created", "Created"),
    row("old", "dead", "Dead", **{"watchdogd.enable": "false"}),
]


class FakeApi:
    """The SDK's low-level client as far as listing goes: applies the engine's filters, counts calls."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.calls: list[dict[str, Any]] = []

    def containers(self, all: bool, filters: Mapping[str, Any]) -> list[dict[str, Any]]:  # noqa: A002
        self.calls.append(dict(filters))
        return [r for r in self.rows if engine_semantics(r, filters)]


def engine_semantics(r: Mapping[str, Any], filters: Mapping[str, Any]) -> bool:
    """What dockerd does with ``label`` and ``status`` (daemon/list.go), written independently of ours."""
    for spec in filters.get("label", []):
        key, _, value = spec.partition("=")
        if key not in r["Labels"] or ("=" in spec and r["Labels"][key] != value):
            return False
    statuses = filters.get("status", [])
    return not statuses or r["State"] in statuses


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def engine_with(rows: list[dict[str, Any]], clock: Clock | None = None) -> tuple[DockerEngine, FakeApi]:
    engine = DockerEngine(DockerTargetParams(), time.time, monotonic=clock or Clock())
    api = FakeApi(rows)
    engine._api = api  # the SDK client is created lazily: hand it ours
    return engine, api


@pytest.mark.parametrize("filters", [
    {},
    {"label": ["app"]},
    {"label": ["app=shop"]},
    {"label": ["app=shop", "tier=back"]},
    {"label": ["app", "tier=front"]},
    {"label": ["k=a=b"]},
    {"label": ["k=a"]},
    {"label": ["missing"]},
    {"status": ["running"]},
    {"status": ["exited", "dead", "created"]},
    {"status": ["paused"]},
    {"label": ["app=shop"], "status": ["running"]},
    {"label": [], "status": []},
])
def test_filters_on_the_shared_listing_match_the_engines(filters: dict[str, list[str]]) -> None:
    engine, api = engine_with(ROWS)
    ours = [r["Id"] for r in list_filtered(engine, filters)]
    assert ours == [r["Id"] for r in ROWS if engine_semantics(r, filters)]
    assert api.calls == [{}]  # one unfiltered listing, whatever the filters


def test_a_filter_we_cannot_reproduce_goes_to_the_engine() -> None:
    engine, api = engine_with(ROWS)
    list_filtered(engine, {"ancestor": ["busybox"]})
    assert api.calls == [{"ancestor": ["busybox"]}]


def test_selection_on_the_shared_listing() -> None:
    engine, _ = engine_with(ROWS)
    assert [n for n, _ in selected(engine, Selection())] == ["web", "db", "cache", "job"]  # opt-out label
    assert [n for n, _ in selected(engine, Selection(compose_project="p"))] == ["web"]
    assert [n for n, _ in selected(engine, Selection(labels=["app=shop"]), {"status": ["running"]})] == ["web"]


def test_rows_are_read_only_and_cut_to_what_probes_read() -> None:
    engine, _ = engine_with(ROWS)
    first = engine.listing()[0]
    assert set(first) == {"Id", "Names", "Image", "State", "Status", "Labels", "Created"}
    with pytest.raises(TypeError):
        first["State"] = "exited"  # type: ignore[index]
    with pytest.raises(TypeError):
        first["Labels"]["app"] = "x"
    assert first["Names"] == ("/web",)
    ROWS[0]["Labels"]["app"] = "changed"  # the engine's answer is copied, not wrapped
    try:
        assert engine.listing()[0]["Labels"]["app"] == "shop"
    finally:
        ROWS[0]["Labels"]["app"] = "shop"


def test_ten_rules_in_one_cycle_make_one_listing_and_the_next_cycle_another() -> None:
    clock = Clock()
    engine, api = engine_with(ROWS, clock)
    engine.synced_history = lambda timeout: None  # type: ignore[method-assign]  # no event stream here
    engine.inspect = lambda cid: {"State": {"ExitCode": 1, "FinishedAt": "2024-01-01T00:00:00Z"}}  # type: ignore[method-assign,assignment]
    probes = [ContainersProbe(ContainersParams(names=[f"{name}*"]), engine, time.time)
              for name in ("web", "db", "cache", "job", "w", "d", "c", "j", "*", "old")]
    memory = MemoryProbe(MemoryParams(), engine, time.time)
    memory._sampler.sample = lambda engine, ids: {}  # type: ignore[method-assign]
    for probe in probes:
        probe.measure()
    memory.measure()
    assert (len(api.calls), engine.listing_reads) == (1, 1)
    clock.now += 5.0
    for probe in probes:
        probe.measure()
    assert (len(api.calls), engine.listing_reads) == (2, 2)


def test_a_container_event_or_our_own_action_ends_the_reuse() -> None:
    engine, api = engine_with(ROWS)
    engine.listing()
    engine.history.feed({"Type": "container", "id": "dbdbdbdb", "Action": "die", "timeNano": 5_000_000_000})
    engine.listing()
    assert len(api.calls) == 2
    engine.listing()
    assert len(api.calls) == 2
    api.restart = lambda container, timeout: None  # type: ignore[attr-defined]
    engine.restart("dbdbdbdb", 10)
    engine.listing()
    assert len(api.calls) == 3


def test_a_failed_listing_is_not_kept() -> None:
    engine, api = engine_with(ROWS)

    def refuse(all: bool, filters: Mapping[str, Any]) -> list[dict[str, Any]]:  # noqa: A002
        api.calls.append(dict(filters))
        raise ConnectionRefusedError(111, "Connection refused")

    api.containers = refuse  # type: ignore[method-assign]
    with pytest.raises(Exception, match="unreachable"):
        engine.listing()
    engine._api = api
    engine._retry_at = 0.0
    api.containers = FakeApi(ROWS).containers  # type: ignore[method-assign]
    assert len(engine.listing()) == len(ROWS)


def test_a_stream_that_went_live_and_was_lost_between_two_reads_ends_the_reuse() -> None:
    """Found by CI: listed while the follower was starting, then live, then lost: "not synced" both times."""
    engine, api = engine_with(ROWS)
    engine.listing()
    assert not engine.events.synced
    engine.events._set("live")
    engine.events._set("backoff")
    assert not engine.events.synced
    engine.listing()
    assert len(api.calls) == 2
    engine.listing()
    assert len(api.calls) == 2  # no change since: reused
