"""Bad configs give the exact ``file:line: key.path: message`` and exit 2, from the real binary."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.helpers import run_once, write_config

pytestmark = pytest.mark.integration

RULE = "rules:\n  r:\n    probe: host.cpu\n    above: 90\n"

# (name, YAML body, expected stderr lines with {path} for the config file)
CASES: list[tuple[str, str, list[str]]] = [
    (
        "bad duration",
        "interval: 15x\n",
        ["{path}:5: interval: expected a duration like 30s, 5m, 1h or 7d, got '15x'"],
    ),
    (
        "unknown top key",
        "budjet: {actions: 3, per: 1h}\n",
        ["{path}:5: budjet: unknown key; did you mean 'budget'?"],
    ),
    (
        "unknown rule key",
        "rules:\n  r:\n    probe: host.cpu\n    abov: 90\n    above: 80\n",
        ["{path}:8: rules.r.abov: unknown key; did you mean 'above'?"],
    ),
    (
        "unknown probe",
        "rules:\n  r:\n    probe: host.dsk\n    above: 90\n",
        ["{path}:7: rules.r.probe: unknown probe 'host.dsk'; did you mean 'host.disk'?"],
    ),
    (
        "percent threshold",
        "rules:\n  r:\n    probe: host.cpu\n    above: 1h\n",
        ["{path}:8: rules.r.above: expected a percentage from 0 to 100 like 90 or 90%, got '1h'"],
    ),
    (
        "duration threshold",
        "rules:\n  r:\n    probe: host.file_age\n    params: {path: /tmp/x*}\n    above: 90%\n",
        ["{path}:9: rules.r.above: expected a duration like 30s, 5m, 1h or 7d, got '90%'"],
    ),
    (
        "size threshold",
        "rules:\n  r:\n    probe: host.dir_size\n    params: {path: /tmp}\n    above: lots\n",
        ["{path}:9: rules.r.above: expected a size like 512MiB, 2GB or 1048576, got 'lots'"],
    ),
    (
        "no threshold",
        "rules:\n  r:\n    probe: host.cpu\n",
        ["{path}:6: rules.r: set 'above' or 'below' (the threshold)"],
    ),
    (
        "bad for",
        RULE + "    for: soon\n",
        ["{path}:9: rules.r.for: expected a duration like 30s, 5m, 1h or 7d, got 'soon'"],
    ),
    (
        "bad severity",
        RULE + "    severity: hi\n",
        ["{path}:9: rules.r.severity: Input should be 'info', 'warning' or 'critical'"],
    ),
    (
        "hysteresis inverted",
        RULE + "    clear_above: 95\n",
        ["{path}:9: rules.r.clear_above: must not be greater than 'above'"],
    ),
    (
        "unknown action",
        RULE + "    actions:\n      - rm.rf: {}\n",
        ["{path}:10: rules.r.actions[0].rm.rf: unknown action"],
    ),
    (
        "files.clean root",
        RULE + "    actions:\n      - files.clean: {path: /, older_than: 1d}\n",
        [
            "{path}:10: rules.r.actions[0].files.clean.path: path '/' is the root directory /, which is never cleaned"
        ],
    ),
    (
        "exec relative",
        RULE + "    actions:\n      - exec: {argv: [rm, x]}\n",
        [
            "{path}:10: rules.r.actions[0].exec.argv: argv[0] must be an absolute path (no PATH lookup for a root"
            " daemon), got 'rm'"
        ],
    ),
    (
        "max_actions zero",
        RULE + "    max_actions: {count: 0, per: 1h}\n",
        ["{path}:9: rules.r.max_actions.count: Input should be greater than or equal to 1"],
    ),
    (
        "param unknown",
        "rules:\n  r:\n    probe: host.disk\n    params: {mountpoint: [/]}\n    above: 90\n",
        ["{path}:8: rules.r.params.mountpoint: unknown key; did you mean 'mountpoints'?"],
    ),
    (
        "rule not a mapping",
        "rules:\n  r: [1, 2]\n",
        ["{path}:6: rules.r: a rule must be a mapping (probe, above, actions, ...)"],
    ),
    ("duplicate key", RULE + "    above: 80\n", ["{path}:9: duplicate key 'above'"]),
    (
        "yaml syntax",
        "rules:\n  r: {probe: host.cpu\n",
        [
            "{path}:7: YAML syntax error: while parsing a flow mapping, expected ',' or '}', but got '<stream end>'"
        ],
    ),
    (
        "target on host probe",
        RULE + "    target: main\n",
        ["{path}:9: rules.r.target: this probe runs on the local host and takes no target"],
    ),
    (
        "unknown target kind",
        "targets:\n  postgrez: {}\n" + RULE,
        ["{path}:6: targets.postgrez: unknown target kind"],
    ),
]


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_is_reported_with_file_line_and_key(
    tmp_path: Path, body: str, expected: list[str]
) -> None:
    config = write_config(tmp_path, body)
    result = run_once(config)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    wanted = [line.replace("{path}", str(config)) for line in expected]
    # Unknown target kinds carry a hint that grows as families land: compare the stable prefix.
    assert [got[: len(want)] for got, want in zip(lines, wanted, strict=True)] == wanted
    assert "Traceback" not in result.stderr


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        textwrap.dedent("""\
        interval: 15x
        rules:
          a:
            probe: host.cpu
            above: 1h
          b:
            probe: host.memory
            above: 90
            for: soon
    """),
    )
    result = run_once(config)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3, lines
    assert [line.split(": ")[1] for line in lines] == ["interval", "rules.a.above", "rules.b.for"]


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_config_writable_by_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    config = write_config(tmp_path, RULE, mode=mode)
    result = run_once(config)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"{config}: refusing a config writable by group or others (mode {mode:04o}); run: chmod go-w {config}"
    )


def test_missing_config_file(tmp_path: Path) -> None:
    result = run_once(tmp_path / "nope.yaml")
    assert result.returncode == 2
    assert result.stderr.strip() == f"{tmp_path / 'nope.yaml'}: cannot read config: No such file or directory"
