"""Config fuzzer: whatever the text, ``parse_config`` returns a usable Config or a located ConfigError.

Two generators: (1) YAML-ish text (odd scalars, aliases, bombs, deep nesting,
random characters) and (2) structurally plausible configs built from the real
probe/action/target registries with hostile numbers (0, negative, huge, NaN,
inf) and dumped to YAML. The property: a ConfigError whose every problem is
one ``<path>:<line>:`` line, or a Config whose durations the scheduler,
``timedelta`` and thread waits accept. Never another exception, never a case
slower than the deadline, never a memory blow-up.

Runs are reproducible (``derandomize=True``, no example database): CI
explores the same cases every time. ``WATCHDOGD_FUZZ_EXAMPLES=5000`` runs a
longer search (per generator) outside CI.
"""

from __future__ import annotations

import math
import os
import re
import resource
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, is_dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from apscheduler.triggers.interval import IntervalTrigger
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watchdogd.config import Config, ConfigError, parse_config
from watchdogd.daemon import jobs_for
from watchdogd.model import Unit
from watchdogd.registry import DEFAULT
from watchdogd.spec import Model

PATH = Path("/etc/watchdogd/fuzz.yaml")
EXAMPLES = int(os.environ.get("WATCHDOGD_FUZZ_EXAMPLES", "150"))
DEADLINE_S = 3.0
RSS_GROWTH_LIMIT = 256 * 2**20
LOCATED = re.compile(rf"^{re.escape(str(PATH))}:\d+: \S")
SAFETY_NET = ("cannot check this config", "too large or nested too deeply to check")
"""Messages of parse_config's last-resort catch: seeing one means a checker raised, which is a bug to fix."""

SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=DEADLINE_S),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


@dataclass
class Tally:
    """Figures for one generator, printed so CI logs show what the fuzzer covered."""

    name: str
    cases: int = 0
    parsed: int = 0
    refused: int = 0
    slowest: float = 0.0

    def check(self, text: str) -> None:
        started = time.perf_counter()
        try:
            config = parse_config(text, PATH)
        except ConfigError as exc:
            assert_located(exc)
            self.refused += 1
        else:
            assert_usable(config)
            self.parsed += 1
        self.cases += 1
        self.slowest = max(self.slowest, time.perf_counter() - started)

    def report(self) -> str:
        return (
            f"config fuzz ({self.name}): {self.cases} cases, {self.parsed} parsed, {self.refused} refused, "
            f"slowest {self.slowest * 1000:.0f} ms"
        )


def assert_located(exc: ConfigError) -> None:
    assert exc.problems, "a ConfigError with no problem in it"
    for problem in exc.problems:
        assert LOCATED.match(problem), f"problem without file:line: {problem!r}"
        assert "\n" not in problem and "\r" not in problem, f"problem spans lines: {problem!r}"
        assert not any(marker in problem for marker in SAFETY_NET), f"a checker raised: {problem!r}"


def assert_usable(config: Config) -> None:
    """What the daemon does with a fresh config must not raise: jobs, triggers, deadlines, waits."""
    now = datetime.now(UTC)
    for spec in jobs_for(config):
        trigger = IntervalTrigger(seconds=spec.every, jitter=max(int(spec.jitter), 0) or None, timezone=UTC)
        assert trigger.get_next_fire_time(None, now) is not None
        assert now + timedelta(seconds=min(spec.jitter, 2.0)) >= now
    for seconds in durations(config):
        assert math.isfinite(seconds) and seconds >= 0, seconds
        assert seconds <= threading.TIMEOUT_MAX, seconds
        assert now + timedelta(seconds=seconds) >= now
    for value in floats(config):
        assert math.isfinite(value), value


def durations(config: Config) -> Iterator[float]:
    yield from (config.interval, config.grace, config.history_retention, config.budget.per)
    for rule in config.rules.values():
        guard, th = rule.guard, rule.thresholds
        yield from (rule.every, rule.jitter, rule.timeout, rule.verify_after, th.for_, th.for_slack)
        yield from (guard.cooldown, guard.max_cooldown, guard.stable_for, guard.max_actions_per)
        yield from param_durations(rule.params)
        for action in rule.actions:
            yield action.settle
            yield from param_durations(action.params)
    for named in config.targets.values():
        for params in named.values():
            yield from param_durations(params)


def param_durations(params: Model) -> Iterator[float]:
    for name, info in type(params).twin().model_fields.items():
        value = getattr(params, name)
        if isinstance(value, float) and "parse_duration" in f"{info.annotation!r}{info.metadata!r}":
            yield value


def floats(value: Any, depth: int = 0) -> Iterator[float]:
    """Every float reachable from the config: thresholds, sizes, ratios included."""
    if depth > 12:
        return
    if isinstance(value, float):
        yield value
    elif isinstance(value, Model):
        for name in type(value).model_fields:
            yield from floats(getattr(value, name), depth + 1)
    elif is_dataclass(value) and not isinstance(value, type):
        for item in fields(value):
            yield from floats(getattr(value, item.name), depth + 1)
    elif isinstance(value, dict):
        for item in value.values():
            yield from floats(item, depth + 1)
    elif isinstance(value, list | tuple | frozenset | set):
        for item in value:
            yield from floats(item, depth + 1)


def run_fuzz(name: str, strategy: st.SearchStrategy[str]) -> Tally:
    tally = Tally(name)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    @SETTINGS
    @given(strategy)
    def property_holds(text: str) -> None:
        tally.check(text)

    property_holds()
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    print(tally.report() + f", max RSS growth {growth / 2**20:.1f} MiB")
    assert growth < RSS_GROWTH_LIMIT, f"max RSS grew {growth / 2**20:.0f} MiB"
    assert tally.slowest < DEADLINE_S
    return tally


# --------------------------------------------------------------------------- (1) YAML-ish text

ODD_SCALARS = [
    "0", "-1", "0s", "-3s", "0ms", "100ms", "15s", "1d", "400d", "999999999999d", "1e300s", "1.0e+300", "-1.0e+300",
    ".nan", ".inf", "-.inf", "~", "null", "yes", "no", "on", "true", "''", '""', "9" * 400, "9" * 5000,
    "190:20:30", "0x1F", "0o17", "2024-13-45", "2001-12-14", "2001-12-14t21:59:43.10-05:00", "!!binary aGk=",
    "!!binary %%%", "!!python/object/apply:os.system [true]", "!!float nan", "!!int x", "!!str 1", "!!set {a, b}",
    "'a\\nb'", '"\\u0000"', '"\\x01"', "\u2028", "ab\tc", "90%", "512MiB", "1PiB", "[]", "{}", "[1, [2, [3]]]",
    "{a: 1}", "*nowhere", "&anchor 1", "|\n  block", ">-\n  folded", "%TAG ! x", "---", "...",
]
KEYS = [
    "interval", "jitter", "probe_timeout", "grace", "history_retention", "budget", "actions", "per", "count",
    "rules", "targets", "probe", "params", "above", "below", "clear_above", "clear_below", "for", "every",
    "timeout", "cooldown", "max_cooldown", "stable_for", "max_actions", "verify_after", "depends_on", "on_down",
    "severity", "listen", "state_dir", "dry_run", "<<", "? complex", "r", "postgres", "redis", "exec", "argv",
    *list(DEFAULT.probes)[:6],
]


@st.composite
def yamlish_document(draw: st.DrawFn) -> str:
    """Lines of ``key: value`` at random indents, sometimes flow collections, anchors and aliases."""
    lines = []
    for _ in range(draw(st.integers(1, 12))):
        indent = "  " * draw(st.integers(0, 4))
        key = draw(st.sampled_from(KEYS))
        value = draw(st.one_of(st.sampled_from(ODD_SCALARS), st.just(""), yaml_scalar_text()))
        anchor = draw(st.sampled_from(["", "&a ", "&b ", "*a", "*b"]))
        if anchor.startswith("*"):
            value = anchor
        elif anchor:
            value = anchor + value
        lines.append(f"{indent}{key}: {value}" if draw(st.booleans()) else f"{indent}- {value}")
    return "\n".join(lines) + "\n"


def yaml_scalar_text() -> st.SearchStrategy[str]:
    return st.text(st.characters(codec="utf-8"), max_size=12)


@st.composite
def alias_bomb(draw: st.DrawFn) -> str:
    levels, fanout = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    lines = [f"l0: &l0 [{', '.join(['x'] * fanout)}]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * fanout)}]")
    if draw(st.booleans()):
        lines.append(f"rules: {{r: {{probe: host.cpu, above: 90, params: *l{levels - 1}}}}}")
    return "\n".join(lines) + "\n"


@st.composite
def deep_nesting(draw: st.DrawFn) -> str:
    depth = draw(st.integers(1, 20_000))
    opener, closer = draw(st.sampled_from([("[", "]"), ("{a: ", "}"), ("[{a: ", "}]")]))
    body = opener * depth + "1" + closer * depth
    return draw(st.sampled_from(["rules: ", "interval: ", "", "x: &x "])) + body + "\n"


@st.composite
def block_nesting(draw: st.DrawFn) -> str:
    depth = draw(st.integers(1, 300))
    return "".join("  " * level + f"k{level}:\n" for level in range(depth)) + "  " * depth + "v: 1\n"


def raw_bytes_text() -> st.SearchStrategy[str]:
    return st.binary(max_size=200).map(lambda data: data.decode("utf-8", errors="replace"))


YAML_TEXT = st.one_of(
    yamlish_document(), alias_bomb(), deep_nesting(), block_nesting(), raw_bytes_text(),
    st.text(max_size=200),
)


def test_fuzz_yaml_text_never_escapes_config_error() -> None:
    tally = run_fuzz("yaml text", YAML_TEXT)
    assert tally.refused > 0


# --------------------------------------------------------------------------- (2) config model

def hostile_number() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from([0, -1, 1, 0.0, -0.0, 1e-9, 0.05, 0.1, 65535, 65536, 2**31, 2**63, 10**30, 1e300, -1e300]),
        st.sampled_from([math.nan, math.inf, -math.inf]),
        st.integers(-(10**40), 10**40),
        st.floats(allow_nan=True, allow_infinity=True),
    )


def mostly(sane: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Four sane values to one hostile: a config with several fields must sometimes pass, to test what it yields."""
    return st.one_of(sane, sane, sane, sane, hostile)


def duration_value() -> st.SearchStrategy[Any]:
    unit = st.sampled_from(["ms", "s", "m", "h", "d", "w"])
    amount = st.one_of(st.integers(0, 10**15).map(str), st.sampled_from(["0", "0.05", "0.1", "1.5", "9" * 30]))
    sane = st.one_of(st.sampled_from(["100ms", "1s", "15s", "5m", "1h", "1d", "365d", 0, 30, 0.5]), st.integers(1, 600))
    hostile = st.one_of(st.tuples(amount, unit).map("".join), hostile_number(), st.sampled_from(["soon", ""]))
    return mostly(sane, hostile)


def size_value() -> st.SearchStrategy[Any]:
    unit = st.sampled_from(["", "B", "KiB", "MB", "GiB", "PiB"])
    sane = st.sampled_from(["4096", "1MiB", "512MiB", "1GiB", 1024])
    return mostly(sane, st.one_of(st.tuples(st.integers(0, 10**20).map(str), unit).map("".join), hostile_number()))


def number_value() -> st.SearchStrategy[Any]:
    return mostly(st.one_of(st.integers(1, 1000), st.floats(0, 100)), hostile_number())


def count_value() -> st.SearchStrategy[Any]:
    return mostly(st.integers(1, 1000), hostile_number())


THRESHOLDS: dict[Unit, Callable[[], st.SearchStrategy[Any]]] = {
    Unit.PERCENT: lambda: mostly(st.sampled_from([0, 50, 90, "90%", 100]), hostile_number()),
    Unit.RATIO: lambda: mostly(st.sampled_from([0, 0.5, 0.9, 1]), hostile_number()),
    Unit.SECONDS: duration_value,
    Unit.BYTES: size_value,
    Unit.COUNT: number_value,
    Unit.PER_SECOND: number_value,
}


def plain_string() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(["/", "/tmp", "/var/log/app/*.log", "127.0.0.1", "x", "", "*", "/bin/true", "{subject}"]),
        st.text("abc/._-* ", max_size=12),
    )


def value_for(annotation_text: str) -> st.SearchStrategy[Any]:
    """A value fitting (or almost fitting) a params field, read off its type annotation."""
    table: tuple[tuple[str, Callable[[], st.SearchStrategy[Any]]], ...] = (
        ("parse_duration", duration_value),
        ("parse_size", size_value),
        ("list", lambda: st.lists(st.one_of(plain_string(), hostile_number()), max_size=3)),
        ("bool", lambda: mostly(st.booleans(), hostile_number())),
        ("int", count_value),
        ("float", number_value),
    )
    for marker, make in table:
        if marker in annotation_text:
            return mostly(make(), plain_string())
    return st.one_of(plain_string(), hostile_number(), st.none())


def params_for(model: type[Model]) -> st.SearchStrategy[dict[str, Any]]:
    """Some of the model's own fields (secret file/env sources left out: they read the machine)."""
    names = [name for name in model.model_fields if not name.endswith(("_file", "_env"))]
    if not names:
        return st.just({})
    strategies = {
        name: value_for(f"{model.twin().model_fields[name].annotation!r}{model.twin().model_fields[name].metadata!r}")
        for name in names
    }
    return st.lists(st.sampled_from(names), unique=True, max_size=3).flatmap(
        lambda chosen: st.fixed_dictionaries({name: strategies[name] for name in chosen})
    )


SANE_TARGETS = {"postgres": {"dsn": "host=127.0.0.1 user=x"}, "redis": {"url": "redis://127.0.0.1:6379"}}


@st.composite
def target_params(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    extra = draw(params_for(DEFAULT.targets[kind].params)) if draw(st.integers(0, 2)) == 0 else {}
    return {**SANE_TARGETS.get(kind, {}), **extra}


@st.composite
def action_item(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(DEFAULT.actions)))
    return {kind: draw(params_for(DEFAULT.actions[kind].params))}


RULE_NUMBERS = ("for", "every", "timeout", "cooldown", "max_cooldown", "stable_for", "verify_after")


@st.composite
def rule_body(draw: st.DrawFn) -> dict[str, Any]:
    probe = draw(st.sampled_from(sorted(DEFAULT.probes)))
    spec = DEFAULT.probes[probe]
    body: dict[str, Any] = {"probe": probe}
    if draw(st.booleans()):
        body["params"] = draw(params_for(spec.params))
    threshold = THRESHOLDS[spec.unit]
    body["above"] = draw(threshold())
    for key in draw(st.lists(st.sampled_from(["below", "clear_above", "clear_below"]), max_size=2)):
        body[key] = draw(threshold())
    for key in draw(st.lists(st.sampled_from(RULE_NUMBERS), unique=True, max_size=3)):
        body[key] = draw(duration_value())
    if draw(st.integers(0, 3)) == 0:
        body["max_actions"] = {"count": draw(count_value()), "per": draw(duration_value())}
    if draw(st.integers(0, 3)) == 0:
        body["actions"] = draw(st.lists(action_item(), max_size=2))
    return body


GLOBAL_DURATIONS = ("interval", "jitter", "probe_timeout", "grace", "history_retention")


@st.composite
def config_document(draw: st.DrawFn) -> str:
    document: dict[str, Any] = {"state_dir": "/var/lib/watchdogd-fuzz", "listen": None}
    for key in draw(st.lists(st.sampled_from(GLOBAL_DURATIONS), unique=True, max_size=3)):
        document[key] = draw(duration_value())
    if draw(st.integers(0, 3)) == 0:
        document["budget"] = {"actions": draw(count_value()), "per": draw(duration_value())}
    document["targets"] = {kind: {"main": draw(target_params(kind))} for kind in sorted(DEFAULT.targets)}
    document["rules"] = {f"r{index}": draw(rule_body()) for index in range(draw(st.integers(0, 3)))}
    return yaml.safe_dump(document, sort_keys=False)


def test_fuzz_config_model_never_escapes_config_error() -> None:
    tally = run_fuzz("config model", config_document())
    assert tally.refused > 0 and tally.parsed > 0
