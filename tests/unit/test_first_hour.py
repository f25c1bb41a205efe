"""Issue 13, the newcomer's first hour: one daemon per state_dir, pause/resume that keep the rule's limits,
operator rows in the audit log, exit codes and messages that match the docs, docs that name only what exists,
and a benchmark that touches only what it created and never calls a missed target ok."""

from __future__ import annotations

import math
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_engine import BASE, Clock, make_engine
from watchdogd.config import _RawConfig, _RawRule, _Sections
from watchdogd.configfiles import INCLUDE_KEY
from watchdogd.daemon import parse_args
from watchdogd.engine.statedir import LOCK_NAME, StateError, StateLock
from watchdogd.faces import cli
from watchdogd.model import Decision, RuleStatus
from watchdogd.registry import DEFAULT

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from sidebyside import families, report, shipped  # noqa: E402
from sidebyside.families import Bench, Outcome  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DOCS = [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]
MANS = sorted((REPO / "packaging" / "man").glob("*.[0-9]"))

# --------------------------------------------------------------------------- one daemon per state_dir


def test_a_second_lock_on_the_same_state_dir_is_refused_naming_dir_and_pid(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with StateLock(state) as first:
        assert (state / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        assert first._fd is not None and not os.get_inheritable(first._fd)  # an action's child never holds it
        with pytest.raises(StateError) as refused:
            StateLock(state)  # flock conflicts between two opens, also within one process
        message = str(refused.value)
        assert "\n" not in message
        assert f"state directory {state} is in use" in message and f"pid {os.getpid()}" in message
    with StateLock(state):  # released with the first one
        pass


def test_a_stale_lock_file_never_blocks(tmp_path: Path) -> None:
    """The file of a killed daemon (its pid, or garbage) is only a file: the lock went with the process."""
    state = tmp_path / "state"
    state.mkdir()
    (state / LOCK_NAME).write_text("999999999\nleft over by a kill -9 long ago\n")
    with StateLock(state):
        assert (state / LOCK_NAME).read_text() == f"{os.getpid()}\n"


def test_the_lock_creates_a_missing_state_dir_and_reports_an_unusable_one(tmp_path: Path) -> None:
    with StateLock(tmp_path / "a" / "b"):
        assert (tmp_path / "a" / "b" / LOCK_NAME).exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(StateError, match="is not a directory"):
        StateLock(tmp_path / "file")


# --------------------------------------------------------------------------- pause/resume keep the limits


LIMITED = BASE.replace(
    "cooldown: 10m",
    # dry-run: the same window bookkeeping, without the test's host budget (2 per hour) in the way
    "cooldown: 1m\n    max_cooldown: 1m\n    max_actions: {count: 3, per: 1h}\n    dry_run: true",
)


def test_pause_and_resume_keep_the_max_actions_window(tmp_path: Path) -> None:
    """{count: 3, per: 1h} ran 5 times in the hour because it was paused and resumed once (issue 13)."""
    clock = Clock()
    engine, probe, action, store = make_engine(tmp_path, LIMITED, clock)
    action.fix_to = None  # never fixed: the rule fires every cycle
    for _ in range(2):
        engine.run_rule("r")
        clock.now += 120
    engine.pause("r", math.inf, by={"uid": 1001, "pid": 42, "user": "alice"})
    engine.run_rule("r")
    outcome = engine.resume("r", by={"uid": 1001, "pid": 43, "user": "alice"})
    assert outcome == {"was_paused": True, "reset": False, "gave_up_at": None}
    for _ in range(4):
        clock.now += 120
        engine.run_rule("r")
    assert len(action.calls) == 3  # not 5
    assert engine.run_rule("r").status is RuleStatus.GAVE_UP


def test_a_plain_resume_leaves_a_give_up_and_reset_lifts_it(tmp_path: Path) -> None:
    clock = Clock()
    engine, _probe, action, store = make_engine(tmp_path, LIMITED, clock)
    action.fix_to = None
    for _ in range(4):
        engine.run_rule("r")
        clock.now += 120
    assert len(action.calls) == 3
    plain = engine.resume("r")
    assert plain["gave_up_at"] is not None and plain["was_paused"] is False
    assert engine.run_rule("r").status is RuleStatus.GAVE_UP and len(action.calls) == 3
    reset = engine.resume("r", reset=True)
    assert reset["gave_up_at"] is None and reset["gave_up_lifted"] is True and reset["actions_forgotten"] == 3
    clock.now += 120
    engine.run_rule("r")
    assert len(action.calls) == 4


def test_operator_actions_are_audit_rows(tmp_path: Path) -> None:
    clock = Clock()
    engine, _probe, _action, store = make_engine(tmp_path, BASE, clock)
    alice = {"uid": 1001, "pid": 42, "user": "alice"}
    engine.pause("r", clock.now + 1800, by=alice)
    clock.now += 5
    engine.resume("r", reset=True, by=alice)
    resumed, paused = store.history(decisions={Decision.OPERATOR})
    assert (paused.action, paused.subject, paused.decision, paused.result) == ("operator.pause", "-",
                                                                               Decision.OPERATOR, "ok")
    assert paused.detail == {"until": clock.now - 5 + 1800, "by": alice}
    assert resumed.action == "operator.resume" and resumed.detail["reset"] is True
    assert resumed.detail["by"] == alice and resumed.detail["was_paused"] is True
    # They survive a restart like every audit row, and never count as an action run.
    assert store.last_actions() == {}


# --------------------------------------------------------------------------- watchdogctl: exit codes and words


@pytest.mark.parametrize("argv", [["pause", "r", "--for", "soon"], ["pause", "r", "--for", "0s"],
                                  ["history", "--since", "yesterday"], ["history", "--since", "-1h"]])
def test_a_bad_duration_is_a_usage_error_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(argv)  # exits in the parser: no daemon is asked
    assert done.value.code == 2  # the documented usage error (docs/interfaces.md, watchdogctl(8))
    err = capsys.readouterr().err
    assert ("--for" in err or "--since" in err) and "Traceback" not in err


def test_durations_are_parsed_before_the_request() -> None:
    args = cli.build_parser().parse_args(["pause", "r", "--for", "30m"])
    assert args.for_ == 1800.0
    args = cli.build_parser().parse_args(["history", "--since", "1d"])
    assert args.since == 86400.0
    assert cli.build_parser().parse_args(["resume", "r", "--reset"]).reset is True
    assert cli.build_parser().parse_args(["resume", "r"]).reset is False


def test_resume_says_what_it_did_and_what_it_did_not() -> None:
    still = cli.resume_text("flappy", {"was_paused": True, "reset": False, "gave_up_at": 1.7e9})
    assert "pause lifted" in still and "still GIVEN UP" in still and "watchdogctl resume flappy --reset" in still
    plain = cli.resume_text("r", {"was_paused": True, "reset": False, "gave_up_at": None})
    assert "pause lifted" in plain and "max_actions window" in plain and "--reset" in plain
    reset = cli.resume_text("r", {"was_paused": False, "reset": True, "gave_up_at": None, "gave_up_lifted": True,
                                  "actions_forgotten": 1})
    assert "it was not paused" in reset and "give-up lifted" in reset and "(1 run)" in reset


def test_history_shows_who_paused_and_resumed() -> None:
    def row(action: str, detail: dict[str, Any]) -> dict[str, Any]:
        return {"ts": 1.7e9, "rule": "r", "action": action, "subject": "-", "decision": "operator", "result": "ok",
                "detail": detail, "value_before": None, "value_after": None, "error": None}

    alice = {"uid": 1001, "pid": 42, "user": "alice"}
    text = cli.render_history([
        row("operator.resume", {"reset": False, "was_paused": True, "gave_up_at": 1.7e9, "by": alice}),
        row("operator.resume", {"reset": True, "was_paused": True, "gave_up_at": None, "gave_up_lifted": True,
                                "actions_forgotten": 3, "by": {"uid": 4242, "pid": 1}}),
        row("operator.pause", {"until": "+Inf", "by": alice}),
        row("operator.pause", {"until": 1.7e9 + 60}),
    ], cli.Palette(False))
    lines = text.splitlines()[1:]
    assert "by alice (uid 1001), still gave up" in lines[0]
    assert "by uid 4242, --reset: forgot 3 runs, lifted the give-up" in lines[1]
    assert "by alice (uid 1001), until resumed" in lines[2]
    assert "by ?, until " in lines[3]


def test_status_points_a_gave_up_rule_at_resume_reset() -> None:
    doc = {
        "now": 100.0,
        "daemon": {"version": "1", "pid": 1, "uptime_seconds": 1.0, "config_path": "c", "config_loaded_at": 99.0,
                   "dry_run": False, "last_reload_error": None},
        "budget": {"remaining": 1, "actions": 1, "per_seconds": 3600.0, "used_last_hour": 0},
        "summary": {"rules": 0, "states": {}, "gave_up": ["flappy"]},
        "rules": [],
    }
    assert "`watchdogctl resume flappy --reset` re-arms it" in cli.render_status(doc, cli.Palette(False))


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another group needs root")
def test_forbidden_hint_never_says_join_group_root(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    path.write_text("")
    path.chmod(0o660)
    os.chown(path, 0, 0)
    root_only = cli._forbidden_hint(str(path))
    assert "group 'root'" not in root_only and "as root" in root_only and "set control_group" in root_only
    os.chown(path, 0, 65534)
    grouped = cli._forbidden_hint(str(path))
    assert "member of group" in grouped and "0660" in grouped and "control_group" not in grouped


def test_watchdogd_help_names_the_environment_variable(capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOGD_CONFIG", raising=False)
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "$WATCHDOGD_CONFIG" in text and "/etc/watchdogd/watchdogd.yaml" in text
    monkeypatch.setenv("WATCHDOGD_CONFIG", "/srv/w.yaml")
    assert parse_args([]).config == Path("/srv/w.yaml")


# --------------------------------------------------------------------------- docs name only what exists

NOT_PROBES = frozenset({
    "docker.io",  # Debian's Docker package
    "systemd.service",  # the man page section systemd.service(5)
})
"""Dotted names in the docs that look like ``family.name`` but are not probes or actions."""

FAMILIES = sorted({name.split(".")[0] for name in (*DEFAULT.probes, *DEFAULT.actions) if "." in name})
_FAMILY = "|".join(FAMILIES)
_NAME = rf"(?<![\w./-])((?:{_FAMILY})\.[a-z_][a-z0-9_]*)(?![\w-])"


def named_kinds(path: Path) -> set[str]:
    """Every ``family.name`` a doc or man page names; in Markdown only inside backticks."""
    text = path.read_text()
    if path.suffix == ".md":
        found: set[str] = set()
        for line in text.splitlines():
            family = None
            for span in re.findall(r"`([^`\n]+)`", line):
                found.update(re.findall(_NAME, span))
                full = re.fullmatch(rf"({_FAMILY})\.[a-z_]+", span)
                if full:
                    family = full.group(1)
                elif family and re.fullmatch(r"\.[a-z_][a-z0-9_]*", span):
                    found.add(family + span)  # the README table's `postgres.up` `.connections` shorthand
        return found
    return set(re.findall(_NAME, text.replace("\\-", "-").replace("\\&", "")))


@pytest.mark.parametrize("path", [*DOCS, *MANS], ids=lambda p: str(p.relative_to(REPO)))
def test_every_probe_and_action_named_in_the_docs_exists(path: Path) -> None:
    unknown = sorted(named_kinds(path) - set(DEFAULT.probes) - set(DEFAULT.actions) - NOT_PROBES)
    assert unknown == [], f"{path.relative_to(REPO)} names probes/actions watchdogd does not have: {unknown}"


def test_the_doc_scan_sees_what_it_checks() -> None:
    """Guards the regexes: the README's table and the man page's examples are really read."""
    readme = named_kinds(REPO / "README.md")
    assert {"host.disk", "postgres.connections", "redis.delete_keys", "files.clean"} <= readme
    assert {"host.disk", "postgres.idle", "docker.containers"} <= named_kinds(REPO / "packaging/man/watchdogd.yaml.5")
    assert "docker.container" not in named_kinds(REPO / "packaging/man/watchdogd.yaml.5")


TOP_KEYS = set(_RawConfig.model_fields) | set(_Sections.model_fields) | {INCLUDE_KEY}
RULE_KEYS = {field.alias or name for name, field in _RawRule.model_fields.items()}


def _man_keys(section: str) -> list[str]:
    """Bold words of each ``.TP`` heading of a man page section (``.BR a " (x), " b`` -> a, b)."""
    text = (REPO / "packaging/man/watchdogd.yaml.5").read_text()
    body = re.split(r"^\.SH .*$", text.split(f".SH {section}\n", 1)[1], maxsplit=1, flags=re.M)[0]
    lines = body.splitlines()
    keys: list[str] = []
    for tp, raw in zip(lines, lines[1:], strict=False):
        if tp != ".TP":
            continue
        head = raw.replace("\\-", "-")
        if head.startswith(".BR "):
            keys += shlex.split(head[4:])[0::2]
        elif head.startswith(".B "):
            keys.append(head[3:].split()[0])
    return keys


def test_every_key_in_the_man_page_exists() -> None:
    top = _man_keys("TOP\\-LEVEL KEYS")
    rule = _man_keys("RULES")
    assert len(top) >= 10 and len(rule) >= 15
    assert set(top) - TOP_KEYS == set()
    assert set(rule) - RULE_KEYS == set()


def _yaml_blocks() -> list[tuple[Path, Any]]:
    blocks = []
    for path in DOCS:
        for block in re.findall(r"```yaml\n(.*?)```", path.read_text(), re.S):
            blocks.append((path, yaml.safe_load(block)))
    return blocks


def _rules_of(data: Any) -> dict[str, Any]:
    """The rules a YAML example shows: under ``rules:``, or a fragment that is a mapping of rules."""
    if not isinstance(data, dict):
        return {}
    if isinstance(data.get("rules"), dict):
        return data["rules"]
    if data and all(isinstance(v, dict) and "probe" in v for v in data.values()):
        return data
    return {}


def test_every_key_probe_and_action_in_the_doc_examples_exists() -> None:
    checked = 0
    for path, data in _yaml_blocks():
        where = path.relative_to(REPO)
        if isinstance(data, dict) and set(data) & (TOP_KEYS - {"rules", "targets"}):
            assert set(data) - TOP_KEYS == set(), f"{where}: unknown top-level keys"
        for name, rule in _rules_of(data).items():
            if not isinstance(rule, dict):
                continue
            checked += 1
            assert set(rule) - RULE_KEYS == set(), f"{where}: rule {name}: unknown keys"
            assert rule.get("probe") in DEFAULT.probes, f"{where}: rule {name}: unknown probe {rule.get('probe')!r}"
            for action in rule.get("actions") or ():
                assert set(action) <= set(DEFAULT.actions), f"{where}: rule {name}: unknown action {action}"
    assert checked >= 10


def test_the_settings_table_names_real_keys() -> None:
    text = (REPO / "docs/interfaces.md").read_text().split("## Settings", 1)[1].split("\n## ", 1)[0]
    keys = re.findall(r"^\| `([a-z_]+)` \|", text, re.M)
    assert keys and set(keys) <= TOP_KEYS


def test_the_shipped_policy_points_at_sections_that_exist() -> None:
    """Its comments say where to read on: that file and heading must exist (it once sent readers to a README
    section that lives in docs/postgres.md)."""
    text = (REPO / "etc/watchdogd/watchdogd.yaml").read_text()
    pointers = re.findall(r"\((README|docs/[\w.-]+\.md): ([^)]+)\)", text)
    assert pointers, "no pointers found: the regex no longer matches the file's comments"
    for doc, heading in pointers:
        headings = re.findall(r"^#+ (.+)$", (REPO / (doc if doc != "README" else "README.md")).read_text(), re.M)
        assert heading.strip() in [h.strip() for h in headings], f"{doc} has no section {heading!r}"


# --------------------------------------------------------------------------- bench/run


def test_a_figure_over_its_printed_target_is_a_miss_even_with_exit_0() -> None:
    rss = ["daemon RSS, host-only policy (7 rules), after 1000 cycles: 46.0 MiB (target <= 35 MiB)",
           "growth over the last 500 cycles: +0.03 MiB (target: none)"]
    assert families.verdict(0, rss) == "MISS"
    assert families.verdict(0, ["x: 34.9 MiB (target <= 35 MiB)"]) == "ok"
    assert families.verdict(0, ["policy+guard: 10000 subject evaluations per cycle: 23.0 ms CPU (target <= 50 ms)"]) \
        == "ok"
    assert families.verdict(0, ["host probe cycle (all host probes): 5.76 ms per cycle (target <= 5 ms)"]) == "MISS"
    # the script's own verdict wins; "(30 runs; target <= 50 ms) OK" is the script's to judge
    assert families.verdict(0, ["max 60.1 ms (30 runs; target <= 50 ms) OK"]) == "ok"
    assert families.verdict(1, rss) == "exit 1"


def test_the_targets_table_lists_every_scale_script_that_ran() -> None:
    rss = Bench("bench_rss.py", "daemon RSS over 1,000 cycles", headline=(r"^daemon RSS",))
    lines = ["daemon RSS, host-only policy (7 rules), after 1000 cycles: 46.0 MiB (target <= 35 MiB)",
             "verdict: FAILED (RSS over its target)"]
    found = report.targets([], [], [], [
        Outcome(rss, families.verdict(0, lines), 100.0, lines),
        Outcome(Bench("bench_host_probes.py", "host probes"), "ok", 1.0, ["host probe cycle: 0.7 ms (target <= 5 ms)"]),
        Outcome(Bench("bench_redis.py", "Redis"), "exit 1", 7.0, ["per probe: p50 32.5 ms (budget 30 ms)"]),
        Outcome(Bench("bench_docker.py", "containers"), "not run in --quick"),
        Outcome(Bench("bench_log.py", "log lines"), "not available: bench/bench_log.py is not in the tree yet"),
    ])
    scale = [t for t in found if t.what.startswith("scale: ")]
    assert [(t.verdict, t.what) for t in scale] == [
        ("MISS", "scale: daemon RSS over 1,000 cycles"),
        ("PASS", "scale: host probes"),
        ("MISS", "scale: Redis"),
    ]
    assert "46.0 MiB (target <= 35 MiB)" in scale[0].detail and "[exit 1]" in scale[2].detail
    assert all(t.verdict != "PASS" for t in found if "RSS" in t.what and "daemon" in t.what)


def test_the_bench_uses_a_postgres_role_of_its_own_name() -> None:
    names = shipped.bench_role_names(4242)
    assert names[0] == "watchdogd_bench_4242" and len(set(names)) == len(names)
    assert "watchdogd" not in names and all(n.startswith("watchdogd_bench_") for n in names)
    prepared = shipped.Prepared(dsns={"postgresql://watchdogd@127.0.0.1:5432/postgres":
                                      "user=watchdogd_bench_4242 host=127.0.0.1 port=5432 dbname=postgres"})
    text = ('targets:\n  postgres:\n    main:\n      # dsn: "postgresql://watchdogd@127.0.0.1:5432/postgres"\n'
            '      dsn: "postgresql://watchdogd@127.0.0.1:5432/postgres"\n')
    out = prepared.apply(text)
    assert yaml.safe_load(out)["targets"]["postgres"]["main"]["dsn"].startswith("user=watchdogd_bench_4242 ")
    assert shipped.Prepared().apply(text) == text
