"""Hostile or absurd config text is refused with one ``file:line: message`` line, never a traceback.

Each case here once passed validation and failed later (a hang, a MemoryError,
an OverflowError at start, probes that time out forever) or crashed the parser.
"""

from __future__ import annotations

import os
import textwrap
import tracemalloc
from datetime import timedelta
from pathlib import Path

import pytest

from watchdogd import config as config_module
from watchdogd.config import ConfigError, load_config, parse_config
from watchdogd.configfiles import MAX_CONFIG_BYTES
from watchdogd.yamlsource import MAX_ALIASES, MAX_VALUES

RULE = "rules:\n  r:\n    probe: host.cpu\n    above: 90\n"
LOAD_RULE = "rules:\n  r:\n    probe: host.load\n    above: 3\n"
EXPECTED_DURATION = "expected a duration like 30s, 5m, 1h or 7d, got "


def billion_laughs(levels: int = 9) -> str:
    """The 1.3 KB alias bomb of issue 20: 9**9 strings once expanded."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    previous = "a"
    for name in "bcdefghijklmnop"[: levels - 1]:
        lines.append(f"{name}: &{name} [{','.join([f'*{previous}'] * 9)}]")
        previous = name
    return "\n".join(lines) + "\n"


def problems_of(text: str, path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, path)
    return list(caught.value.problems)


# (name, YAML text, the one problem expected, {path} standing for the file)
CASES: list[tuple[str, str, str]] = [
    (
        "alias bomb",
        billion_laughs(),
        f"{{path}}:5: YAML aliases expand this to more than {MAX_VALUES} keys and values",
    ),
    (
        "deep flow nesting",
        "rules: " + "[" * 10_000 + "]" * 10_000 + "\n",
        "{path}:1: nested too deeply (more than 64 levels of mappings and lists)",
    ),
    (
        "deep block nesting",
        "".join("  " * depth + f"k{depth}:\n" for depth in range(100)) + "  " * 100 + "x: 1\n",
        "{path}:64: nested too deeply (more than 64 levels of mappings and lists)",
    ),
    (
        "deep through aliases",
        "a: &a " + "[" * 40 + "1" + "]" * 40 + "\nb: " + "[" * 40 + "*a" + "]" * 40 + "\n",
        "{path}:1: YAML aliases nest this more than 64 levels deep",
    ),
    (
        "recursive alias",
        "interval: 15s\nloop: &loop [1, *loop]\n",
        "{path}:2: a YAML alias refers to a collection that contains it",
    ),
    (
        "too many aliases",
        "a: &a 1\nb: [" + ", ".join(["*a"] * (MAX_ALIASES + 1)) + "]\n",
        f"{{path}}:2: too many YAML aliases (more than {MAX_ALIASES})",
    ),
    (
        "too many values",
        "".join(f"k{index}: {index}\n" for index in range(MAX_VALUES)),
        f"{{path}}:{MAX_VALUES // 2}: more than {MAX_VALUES} keys and values in one config",
    ),
    ("impossible date", "interval: 2024-13-45\n", "{path}:1: cannot read the value '2024-13-45': month must be in"),
    (
        "int past the digit limit",
        "interval: " + "9" * 5000 + "\n",
        "{path}:1: cannot read the value '999999999999999999999999999999999999...: "
        "Exceeds the limit (4300 digits) for integer string conversion",
    ),
    ("control character", "interval: 15s\x01\n", "{path}:1: YAML syntax error: unacceptable character #x0001:"),
    ("newline in a key", '"bad\\nkey": 1\n', "{path}:1: bad\\nkey: unknown key"),
    ("interval 0s", "interval: 0s\n" + RULE, "{path}:1: interval: must be at least 0.1s (got 0s)"),
    ("interval 0", "interval: 0\n" + RULE, "{path}:1: interval: must be at least 0.1s (got 0)"),
    ("interval huge", "interval: 999999999999d\n" + RULE, "{path}:1: interval: must be at most 1d (got 999999999999d)"),
    ("interval 1e300", "interval: 1.0e+300\n" + RULE, "{path}:1: interval: must be at most 1d (got 1e+300)"),
    ("interval inf", "interval: .inf\n" + RULE, "{path}:1: interval: " + EXPECTED_DURATION + "inf"),
    ("interval nan", "interval: .nan\n" + RULE, "{path}:1: interval: " + EXPECTED_DURATION + "nan"),
    (
        "interval digits overflow",
        "interval: " + "9" * 400 + "s\n" + RULE,
        "{path}:1: interval: expected a duration like 30s, 5m, 1h or 7d, got '" + "9" * 36 + "...",
    ),
    ("every 0s", RULE + "    every: 0s\n", "{path}:5: rules.r.every: must be at least 0.1s (got 0s)"),
    ("every 2d", RULE + "    every: 2d\n", "{path}:5: rules.r.every: must be at most 1d (got 2d)"),
    ("probe_timeout 0", "probe_timeout: 0s\n" + RULE, "{path}:1: probe_timeout: must be more than 0s (got 0s)"),
    ("rule timeout 0", RULE + "    timeout: 0ms\n", "{path}:5: rules.r.timeout: must be more than 0s (got 0ms)"),
    ("rule timeout 2d", RULE + "    timeout: 2d\n", "{path}:5: rules.r.timeout: must be at most 1d (got 2d)"),
    ("jitter 2d", "jitter: 2d\n" + RULE, "{path}:1: jitter: must be at most 1d (got 2d)"),
    ("cooldown inf", RULE + "    cooldown: .inf\n", "{path}:5: rules.r.cooldown: " + EXPECTED_DURATION + "inf"),
    ("cooldown 400d", RULE + "    cooldown: 400d\n", "{path}:5: rules.r.cooldown: must be at most 365d (got 400d)"),
    ("for huge", RULE + "    for: 1.0e+300\n", "{path}:5: rules.r.for: must be at most 365d (got 1e+300)"),
    ("verify_after 2d", RULE + "    verify_after: 2d\n", "{path}:5: rules.r.verify_after: must be at most 1d (got 2d)"),
    ("history 10y", "history_retention: 3650d\n" + RULE, "{path}:1: history_retention: must be at most 365d"),
    ("budget per 0", "budget: {actions: 3, per: 0s}\n" + RULE, "{path}:1: budget.per: must be more than 0s (got 0s)"),
    (
        "budget actions huge",
        "budget: {actions: 100000000000000000000, per: 1h}\n" + RULE,
        "{path}:1: budget.actions: Input should be less than or equal to 100000",
    ),
    (
        "max_actions per 0",
        RULE + "    max_actions: {count: 3, per: 0}\n",
        "{path}:5: rules.r.max_actions.per: must be more than 0s (got 0)",
    ),
    ("threshold nan", LOAD_RULE.replace("3", ".nan"), "{path}:4: rules.r.above: expected a finite number, got nan"),
    ("threshold inf", LOAD_RULE.replace("3", "-.inf"), "{path}:4: rules.r.above: expected a finite number, got -inf"),
    (
        "threshold int overflow",
        LOAD_RULE.replace("3", "1" + "0" * 400),
        "{path}:4: rules.r.above: expected a finite number, got 1" + "0" * 36 + "...",
    ),
    ("clear nan", LOAD_RULE + "    clear_above: .nan\n", "{path}:5: rules.r.clear_above: expected a finite number"),
    (
        "size threshold overflow",
        "rules:\n  r:\n    probe: host.dir_size\n    params: {path: /tmp}\n    above: " + "9" * 400 + "PiB\n",
        "{path}:5: rules.r.above: expected a size like 512MiB, 2GB or 1048576, got '" + "9" * 36 + "...",
    ),
    (
        "probe param timeout huge",
        "rules:\n  r:\n    probe: net.tcp\n    params: {host: 127.0.0.1, port: 1, timeout: 30d}\n    above: 1\n",
        "{path}:4: rules.r.params.timeout: Input should be less than or equal to 86400",
    ),
    (
        "statement_timeout past PostgreSQL's int milliseconds",
        "targets:\n  postgres:\n    main: {dsn: 'host=x', statement_timeout: 30d}\n",
        "{path}:3: targets.postgres.main.statement_timeout: Input should be less than or equal to 86400",
    ),
    (
        "log max_read huge",
        "rules:\n  r:\n    probe: log.matches\n    params: {path: /var/log/x, pattern: x, max_read: 1PiB}\n"
        "    above: 1\n",
        "{path}:4: rules.r.params.max_read: Input should be less than or equal to 1073741824",
    ),
    (
        "action timeout 0",
        RULE + "    actions:\n      - exec: {argv: [/bin/true], timeout: 0s}\n",
        "{path}:6: rules.r.actions[0].exec.timeout: Input should be greater than 0",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_refused_with_one_line_naming_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "w.yaml"
    problems = problems_of(text, path)
    wanted = expected.replace("{path}", str(path))
    assert len(problems) == 1, problems
    assert problems[0].startswith(wanted), problems[0]
    assert "\n" not in problems[0]


def test_alias_bomb_is_refused_before_it_grows(tmp_path: Path) -> None:
    """Refused from the node graph: memory stays at what the 1 KB text costs, not 9**9 strings."""
    tracemalloc.start()
    try:
        problems_of(billion_laughs(), tmp_path / "w.yaml")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_a_modest_alias_still_works(tmp_path: Path) -> None:
    """Aliases themselves stay allowed: a shared action list is a normal use."""
    text = textwrap.dedent("""\
        rules:
          a:
            probe: host.cpu
            above: 90
            actions: &restart
              - exec: {argv: [/bin/true]}
          b:
            probe: host.memory
            above: 90
            actions: *restart
    """)
    config = parse_config(text, tmp_path / "w.yaml")
    assert [rule.actions[0].kind for rule in config.rules.values()] == ["exec", "exec"]


@pytest.mark.parametrize(
    ("body", "attribute", "seconds"),
    [
        ("interval: 100ms\n", "interval", 0.1),
        ("interval: 1d\n", "interval", 86400.0),
        ("history_retention: 365d\n", "history_retention", 365 * 86400.0),
        ("grace: 0s\n", "grace", 0.0),
    ],
)
def test_limits_themselves_are_accepted_and_usable(tmp_path: Path, body: str, attribute: str, seconds: float) -> None:
    config = parse_config(body + RULE, tmp_path / "w.yaml")
    assert getattr(config, attribute) == seconds
    assert timedelta(seconds=getattr(config, attribute)).total_seconds() == seconds


def test_file_larger_than_the_cap_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    with path.open("w") as handle:
        handle.write(RULE)
        handle.write("#" * MAX_CONFIG_BYTES)
    path.chmod(0o600)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == (f"{path}: config is larger than 1 MiB (a real one is a few KB); not reading it",)


def test_fifo_is_refused_instead_of_blocking(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    os.mkfifo(path, 0o600)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == (f"{path}: cannot read config: not a regular file",)


def test_bytes_that_are_not_utf8_are_located(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_bytes(b"interval: 15s\nrules: {}\n# caf\xe9\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == (f"{path}:3: config is not UTF-8 text",)


@pytest.mark.parametrize("error", [RecursionError(), MemoryError(), OverflowError("x"), TypeError("y")])
def test_a_checker_bug_is_still_only_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    """The safety net a reload relies on: whatever a checking step raises, the caller sees ConfigError."""

    def broken(self: object, force_dry_run: bool) -> None:
        raise error

    monkeypatch.setattr(config_module._Builder, "build", broken)
    problems = problems_of(RULE, tmp_path / "w.yaml")
    assert len(problems) == 1
    assert problems[0].startswith(f"{tmp_path / 'w.yaml'}:1: ")
