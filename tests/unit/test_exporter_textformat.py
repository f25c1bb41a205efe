"""The fast text encoder against prometheus-client, its reference: same bytes, same parsed families."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.utils import floatToGoString

from tests.unit.test_exporter import NOW, rule, snapshot
from watchdogd.core.guard import Maintenance
from watchdogd.engine.events import SinkStats as EventSinkStats
from watchdogd.engine.scheduler import RunCounts
from watchdogd.engine.snapshot import ActionSummary, EngineSnapshot, FleetStats, GroupStats, Held, Wait
from watchdogd.faces.exporter import (
    FAST_FORMATS,
    MetricsRegistry,
    RuleGroups,
    build_registry,
    encoder_for,
    render_text,
)
from watchdogd.faces.textformat import PIECE_ENTRIES, Families, encode, escape_label, go_float
from watchdogd.model import Cardinality, RuleStatus, Unit
from watchdogd.notifications.deliver import SinkStats

ODD = 'a "quoted" \\ back\nslash ünï'


def fleet() -> FleetStats:
    group = GroupStats(
        name="db-restarts", max_hosts=2, max_runs=None, per=3600.0, on_unavailable="skip",
        held=(Held("pg", 7, 0, NOW - 5),), waits=(Wait("pg2", "full", NOW - 9, NOW - 1, 3, "2 of 2 held"),),
        outcomes={"granted": 4, "full": 3}, acquire_seconds_sum=0.25, acquire_count=7,
    )
    return FleetStats("redis", "host-1", "redis://x", 11, 1, 0, 2, None, (group,))


def rich() -> EngineSnapshot:
    """Every family the exporter writes, with values and label values that need care."""
    return snapshot(
        rule(),
        rule("pct", readings={ODD: 12.5, "/": -0.5, "nan": math.nan}, firing={}, status=RuleStatus.OK),
        rule("pg", unit=Unit.SECONDS, cardinality=Cardinality.HIGH, readings={"pid 1": 5.0, "pid 2": 1e-7},
             firing={}, actions=("exec.run", "exec.run"), dry_run=True, target="main"),
        rule("big", unit=Unit.BYTES, readings={"/": 123456789012.0, "/a": 999999.0, "/b": 1e6, "/c": 1e22},
             above=None, below=5e9, paused_until=math.inf, cooldown_until=None),
        rule("never", up=None, last_run=None, readings={}, firing={}, status=RuleStatus.WAITING, actions=()),
        rule("down", up=False, error="timed out", readings={}, firing={}, status=RuleStatus.DOWN,
             last_actions=(ActionSummary("files.clean", "ran", "failed", NOW - 1, "/"),
                           ActionSummary("exec.run", "dry_run", "dry_run", NOW - 2, "/"))),
        rule("rate", unit=Unit.PER_SECOND, readings={"eth0": math.inf, "lo": -math.inf}, enabled=False),
        actions_total={("disk-full", "files.clean", "ok"): 3, ("removed-by-reload", "exec.run", "failed"): 2},
        action_skips={("disk-full", "files.clean", "skipped_cooldown"): 5, ("gone", "exec.run", "gave_up"): 1},
        transitions_total={("disk-full", "firing"): 2, ("gone", "down"): 4},
        probe_failures={"down": 9, "gone": 1},
        sinks=(EventSinkStats("log", "inline", 10, 0, 0, 0), EventSinkStats(ODD, "queued", 1, 2, 3, 4)),
        fleet=fleet(),
        maintenance=Maintenance(since=NOW - 10, until=math.inf, reason="patching"),
        last_reload_error="1 problem(s): bad",
    )


def registry(snap: EngineSnapshot) -> MetricsRegistry:
    deliveries = [SinkStats("pager", 5, 1, 0, 2, 12.5, 1), SinkStats(ODD, 0, 0, 0, 0, 0.0, 0)]
    runs = RunCounts(missed={"disk-full": 2, "pct": 0}, late={"disk-full": 0, "gone": 1})
    return build_registry(lambda: snap, "1.2.3", process=False, deliveries=lambda: deliveries, runs=lambda: runs)


def parsed(text: str, openmetrics: bool) -> list[tuple[str, str, str, list[tuple[str, dict[str, str], str]]]]:
    """Families as the parsers see them; values as text so NaN compares equal to NaN."""
    parse = parse_openmetrics if openmetrics else parse_text
    return [
        (f.name, f.type, f.documentation, [(s.name, s.labels, repr(s.value)) for s in f.samples])
        for f in parse(text)
    ]


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text-0.0.4", "openmetrics-1.0.0"])
def test_fast_encoder_writes_what_prometheus_client_writes(openmetrics: bool) -> None:
    reg = registry(rich())
    reference = generate_openmetrics(reg) if openmetrics else generate_latest(reg)
    fast = reg.encode(openmetrics=openmetrics)
    assert fast == reference
    assert parsed(fast.decode(), openmetrics) == parsed(reference.decode(), openmetrics)
    assert b'subject="a \\"quoted\\" \\\\ back\\nslash \xc3\xbcn\xc3\xaf"' in fast
    assert b"watchdogd_fleet_acquire_seconds_count" in fast and b"watchdogd_notifications_delivered_total" in fast
    series = [(name, tuple(sorted(labels.items()))) for _, _, _, samples in parsed(fast.decode(), openmetrics)
              for name, labels, _ in samples]
    assert len(series) == len(set(series))  # "exec.run" listed twice by a rule is still one series per result
    # Counters of rules a reload removed stay, next to the pre-set zeros of the configured ones.
    for kept in (b'rule="removed-by-reload"', b'rule="gone"', b'watchdogd_probe_failures_total{rule="gone"} 1.0'):
        assert kept in fast


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text-0.0.4", "openmetrics-1.0.0"])
def test_lines_kept_from_the_last_render_never_show_old_values(openmetrics: bool) -> None:
    state = {"snap": rich()}
    reg = build_registry(lambda: state["snap"], "1.2.3", process=False)
    reg.encode(openmetrics=openmetrics)
    first = state["snap"].rules[0]
    changed = replace(first, status=RuleStatus.PAUSED, last_run=NOW + 1, readings={"/": 95.0, "/new": 1.0},
                      firing={}, paused_until=NOW + 60)
    # One field at a time, each of what a rule's group is made of (its threshold's scale and family included).
    moved = [replace(first, **change) for change in (  # type: ignore[arg-type]
        {"unit": Unit.RATIO}, {"unit": Unit.BYTES}, {"severity": "page"}, {"cooldown_until": NOW + 30},
        {"timeout": 2.5}, {"below": 1.0}, {"firing": {}}, {"status": RuleStatus.PENDING}, {"up": False},
        {"probe": "host.inodes"}, {"target": "main"}, {"up": None, "last_run": None}, {"duration": 7.5},
    )]
    later = [
        replace(state["snap"], rules=(changed, *state["snap"].rules[2:]), actions_total={}, probe_failures={}),
        *(replace(state["snap"], rules=(one, *state["snap"].rules[1:])) for each in moved for one in (first, each)),
        replace(state["snap"], rules=(rule("renamed"),)),
        rich(),
    ]
    for snap in later:
        state["snap"] = snap
        reference = generate_openmetrics(reg) if openmetrics else generate_latest(reg)
        assert reg.encode(openmetrics=openmetrics) == reference


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text-0.0.4", "openmetrics-1.0.0"])
def test_groups_prepared_by_the_runs_write_what_prometheus_client_writes(openmetrics: bool) -> None:
    prepared = RuleGroups()
    state = {"snap": rich()}
    reg = build_registry(lambda: state["snap"], "1.2.3", process=False, prepared=prepared)
    for view in state["snap"].rules:
        prepared.add(view)  # what the engine's on_view does after each run
    assert reg.encode(openmetrics=openmetrics) == (generate_openmetrics(reg) if openmetrics else generate_latest(reg))

    # A group prepared for another view of the rule (the snapshot remade it: a pause ran out) is not used.
    first = state["snap"].rules[0]
    prepared.add(replace(first, last_run=NOW + 5, duration=9.5, status=RuleStatus.PAUSED))
    state["snap"] = replace(state["snap"], rules=(replace(first, last_run=NOW + 7), *state["snap"].rules[1:]))
    fast = reg.encode(openmetrics=openmetrics)
    assert fast == (generate_openmetrics(reg) if openmetrics else generate_latest(reg))
    assert go_float(NOW + 7).encode() in fast and go_float(NOW + 5).encode() not in fast

    # A removed rule's prepared group goes at the next render.
    state["snap"] = replace(state["snap"], rules=state["snap"].rules[1:])
    reg.encode(openmetrics=openmetrics)
    assert first.name not in prepared.take(state["snap"].rules)


def test_the_scheduler_counts_kept_as_one_block_follow_every_change() -> None:
    counts = {"runs": RunCounts(missed={"a": 0, "b": 0}, late={"a": 0})}
    reg = build_registry(lambda: snapshot(rule("a"), rule("b")), "1", process=False, runs=lambda: counts["runs"])
    for runs in (RunCounts({"a": 0, "b": 0}, {"a": 0}), RunCounts({"a": 0, "b": 1}, {"a": 0}),
                 RunCounts({"a": 0, "b": 1}, {"a": 2, "b": 0}), RunCounts({"b": 1}, {"a": 2, "b": 0})):
        counts["runs"] = runs
        assert reg.encode(openmetrics=False) == generate_latest(reg)
        assert f"watchdogd_rule_runs_late_total{{rule=\"a\"}} {float(runs.late['a'])}".encode() in generate_latest(reg)


def test_kept_lines_blocks_and_rows_are_bounded_by_the_live_series() -> None:
    state = {"snap": snapshot(*(rule(f"r{n}") for n in range(50)))}
    reg = build_registry(lambda: state["snap"], "1", process=False)
    reg.encode(openmetrics=False)
    state["snap"] = snapshot(rule("only"))
    for _ in range(2):
        reg.encode(openmetrics=False)
    assert len(reg._memo.lines["watchdogd_reading_ratio"]) <= 2 + 16
    assert len(reg._memo.blocks["watchdogd_transitions"]) <= 2 + 16
    assert len(reg._memo.groups) <= 2 + 16  # one group per rule


ACCEPTS = [
    "",
    "text/plain;version=0.0.4",
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",  # Prometheus 2.x
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,text/plain;version=0.0.4;q=0.3",
    "application/openmetrics-text",
]


@pytest.mark.parametrize("accept", ACCEPTS)
def test_every_fast_format_matches_the_client_encoder_for_it(accept: str) -> None:
    reg = registry(rich())
    encoder, content_type = choose_encoder(accept)
    assert content_type in FAST_FORMATS
    fast, fast_type = encoder_for(reg, accept)
    assert fast_type == content_type and b"".join(fast()) == encoder(reg)


@pytest.mark.parametrize("accept", [
    "application/openmetrics-text;version=1.0.0;escaping=dots",
    "application/openmetrics-text;version=1.0.0;escaping=values",
    "text/plain;version=1.0.0;escaping=underscores",
])
def test_other_formats_go_through_prometheus_client(accept: str) -> None:
    reg = registry(rich())
    encoder, content_type = choose_encoder(accept)
    assert content_type not in FAST_FORMATS
    rendered, rendered_type = encoder_for(reg, accept)
    assert rendered_type == content_type and b"".join(rendered()) == encoder(reg)


@pytest.mark.parametrize("openmetrics", [False, True])
def test_the_page_comes_a_family_at_a_time_so_it_is_never_whole_while_compressed(openmetrics: bool) -> None:
    reg = registry(rich())
    chunks = list(reg.chunks(openmetrics=openmetrics))
    page = b"".join(chunks)
    assert page == reg.encode(openmetrics=openmetrics)
    assert len(chunks) > 20 and max(map(len, chunks)) < len(page) / 4


def test_a_big_family_comes_in_pieces_of_a_bounded_number_of_entries() -> None:
    out = Families()
    gauge = out.gauge("watchdogd_rule_firing", "Doc.", ("rule",))
    for n in range(3 * PIECE_ENTRIES + 5):
        gauge.add_metric((f"r{n:04d}",), float(n))
    pieces = list(encode(out, openmetrics=False))
    assert pieces[1:] == ["".join(gauge.lines[start:start + PIECE_ENTRIES])
                          for start in (0, PIECE_ENTRIES, 2 * PIECE_ENTRIES, 3 * PIECE_ENTRIES)]
    assert pieces[0].startswith("# HELP watchdogd_rule_firing Doc.\n# TYPE watchdogd_rule_firing gauge\n")


def test_process_series_come_after_ours_from_the_client() -> None:
    reg = build_registry(rich, "1")
    for openmetrics in (False, True):
        text = reg.encode(openmetrics=openmetrics).decode()
        names = [family.name for family in (parse_openmetrics if openmetrics else parse_text)(text)]
        assert "process_cpu_seconds" in names and names.index("process_cpu_seconds") > names.index(
            "watchdogd_build_info")
        assert text.endswith("# EOF\n") == openmetrics
    assert render_text(reg).startswith(b"# HELP watchdogd_build_info ")


def test_go_float_spells_values_as_the_client_does() -> None:
    rng = random.Random(17)
    values = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-7, 999999.0, 1e6, 1234567.5, 1.7e9, NOW, 1e16, 1e22, -1e22,
              math.inf, -math.inf, math.nan, 5, 2**53 + 0.0]
    values += [rng.uniform(-1e12, 1e12) for _ in range(500)] + [10 ** rng.uniform(-12, 25) for _ in range(500)]
    assert [go_float(v) for v in values] == [floatToGoString(v) for v in values]


def test_label_values_are_escaped_as_the_formats_want() -> None:
    assert escape_label("plain /var") == "plain /var"
    assert escape_label(ODD) == 'a \\"quoted\\" \\\\ back\\nslash ünï'


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text-0.0.4", "openmetrics-1.0.0"])
def test_renders_after_random_changes_match_the_reference(openmetrics: bool) -> None:
    """Kept blocks, rows and lines against prometheus-client after each of many small changes."""
    rng = random.Random(4)
    rules = list(rich().rules)
    base = rich()
    state = {"snap": base}
    reg = build_registry(lambda: state["snap"], "1.2.3", process=False)
    changes = [
        lambda r: replace(r, last_run=(r.last_run or NOW) + rng.choice([0.0, 5.0, 1e-3])),
        lambda r: replace(r, duration=rng.choice([0.0, 0.25, 1e-7, None])),
        lambda r: replace(r, status=rng.choice(list(RuleStatus))),
        lambda r: replace(r, up=rng.choice([True, False])),
        lambda r: replace(r, readings={k: v + rng.choice([0.0, 1.0]) for k, v in r.readings.items()}),
        lambda r: replace(r, firing=rng.choice([{}, {"/": 1.0}]), cooldown_until=rng.choice([None, NOW + 9])),
        lambda r: replace(r, actions=rng.choice([(), ("exec.run",), ("files.clean", "exec.run")])),
    ]
    for _ in range(60):
        n = rng.randrange(len(rules))
        rules[n] = rng.choice(changes)(rules[n])
        counts = {(r.name, "firing"): rng.randrange(3) for r in rules if rng.random() < 0.3}
        state["snap"] = replace(base, rules=tuple(rules), transitions_total=counts)
        reference = generate_openmetrics(reg) if openmetrics else generate_latest(reg)
        assert reg.encode(openmetrics=openmetrics) == reference
