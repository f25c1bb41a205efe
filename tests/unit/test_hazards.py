"""Issue 20, Must 3: configs that would turn the watchdog against its host are refused at load.

Each case goes through ``parse_config`` with a config text, as an operator's file would, and checks
the one-line ``file:line: key: message`` it gets; the run-time fences of files.clean run on real trees.
"""

from __future__ import annotations

import logging
import os
import re
import textwrap
from pathlib import Path

import pytest

from watchdogd import hazards
from watchdogd.config import ConfigError, parse_config
from watchdogd.contracts import ANY_SUBJECT, SUBJECT_KINDS
from watchdogd.families.files.actions import ACTIONS as FILE_ACTIONS
from watchdogd.families.files.actions import CleanParams
from watchdogd.model import Reading
from watchdogd.registry import DEFAULT

ETC = Path("/etc/watchdogd/watchdogd.yaml")
NOW = 1_700_000_000.0


def problems(text: str, path: Path = ETC) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), path)
    return list(info.value.problems)


def loads(text: str, path: Path = ETC) -> None:
    parse_config(textwrap.dedent(text), path)


def exec_rule(argv: str, extra: str = "") -> str:
    return f"""\
        rules:
          r:
            probe: redis.queue_length
            target: q
            params: {{keys: [queue]}}
            above: 100
            actions:
              - exec: {{argv: {argv}{extra}}}
        targets:
          redis:
            q: {{url: "redis://127.0.0.1:6379/0"}}
        """


# --------------------------------------------------------------------------- 1. shells through exec


def test_the_issue_shell_is_refused_with_one_line_naming_file_line_key_and_why() -> None:
    [line] = problems(exec_rule('[/bin/sh, -c, "redis-cli DEL {subject}"]'))
    assert line == (
        f"{ETC}:8: rules.r.actions[0].exec: exec: a shell (sh -c) with {{subject}} in its script lets a subject "
        "name run commands (a Redis key 'x$(reboot)'); pass the subject as its own argv element to a script, "
        "or set unsafe_shell_with_subject: true"
    )


@pytest.mark.parametrize(
    "argv",
    [
        '[/bin/bash, -ec, "rm -f /var/cache/app/{subject}"]',
        '[/bin/dash, -c, "echo {subjects}"]',
        '[/usr/bin/env, sh, -c, "x {subject}"]',
        '[/usr/bin/env, -i, "A=b", /bin/bash, -c, "x {subject}"]',
        "[/usr/bin/env, -S, \"sh -c 'x {subject}'\"]",
        '[/usr/bin/timeout, -s, KILL, 10s, /bin/sh, -c, "x {subject}"]',
        '[/usr/bin/nice, -n, "5", /usr/bin/setsid, /usr/bin/nohup, zsh, -c, "x {subject}"]',
        '[/usr/bin/sudo, -u, app, sh, -c, "x {subject}"]',
        '[/usr/bin/sudo, -s, /opt/fix, "{subject}"]',
        '[/bin/su, -c, "/opt/fix {subject}", app]',
        '[/usr/bin/ssh, db1, /opt/fix, "{subject}"]',
        '[/bin/busybox, sh, -c, "x {subject}"]',
        '[/usr/bin/python3, -c, "import os; os.system(\'{subject}\')"]',
        '[/usr/bin/python3.11, -Ic, "print(\'{subject}\')"]',
        '[/usr/bin/perl, -lne, "print \'{subject}\'"]',
        '[/usr/bin/ruby, -rjson, -e, "p \'{subject}\'"]',
        "[/usr/bin/node, \"--eval=x('{subject}')\"]",
        '[/usr/bin/php8.2, -r, "echo \'{subject}\';"]',
        '[/usr/bin/awk, "BEGIN {{ system(\\"rm {subject}\\") }}"]',
        '[/bin/sed, -e, "s/x/{subject}/e", /tmp/f]',
        '[/usr/bin/find, /tmp, -exec, sh, -c, "x {subject}", ";"]',
        '[/usr/bin/xargs, -n, "1", /bin/sh, -c, "x {subject}"]',
        '[/bin/sh, "/opt/scripts/{subject}.sh"]',  # the subject would choose the script to run
    ],
)
def test_shells_and_inline_code_with_a_subject_in_the_script_are_refused(argv: str) -> None:
    [line] = problems(exec_rule(argv))
    assert "lets a subject name run commands" in line and "unsafe_shell_with_subject: true" in line, line


@pytest.mark.parametrize(
    "argv",
    [
        '[/bin/sh, -c, "/opt/fix --all"]',  # the operator's fixed script: no subject in it
        '[/bin/sh, -c, "redis-cli DEL \\"$1\\"", sh, "{subject}"]',  # the subject as its own argv element
        '[/bin/sh, /opt/fix.sh, "{subject}"]',
        '[/usr/bin/python3, -c, "import sys; print(sys.argv)", "{subject}"]',
        '[/usr/bin/python3, -m, tool, "{subject}"]',
        '[/usr/bin/perl, -MData::Dumper, /opt/x.pl, "{subject}"]',
        '[/usr/bin/awk, -f, /opt/p.awk, "/var/log/{subject}"]',
        '[/usr/bin/timeout, 10s, /opt/fix, "--key={subject}"]',
        '[/usr/bin/redis-cli, DEL, "{subject}"]',
        '[/usr/sbin/runuser, -u, app, --, /opt/fix, "{subject}"]',
        '[/bin/sh, -c, "echo {value}"]',  # a number, not a name anyone chooses
    ],
)
def test_subjects_as_plain_arguments_and_fixed_scripts_are_accepted(argv: str) -> None:
    loads(exec_rule(argv))


def test_the_opt_in_accepts_it_and_warns_when_built_and_on_every_run(caplog: pytest.LogCaptureFixture) -> None:
    config = parse_config(
        textwrap.dedent(exec_rule('[/bin/sh, -c, "echo {subject}"]', ", unsafe_shell_with_subject: true")), ETC
    )
    [action] = config.rules["r"].actions
    spec = DEFAULT.actions["exec"]
    with caplog.at_level(logging.WARNING, logger="watchdogd.families.exec.actions"):
        runner = spec.factory(action.params, None, lambda: NOW)
        built = len(caplog.records)
        result = runner.run([Reading("x", 1.0), Reading("y", 2.0)], dry_run=False)
    assert result.ok, result
    assert built == 1 and len(caplog.records) == 3
    assert all(r.levelno == logging.WARNING and "a shell (sh -c)" in r.getMessage() for r in caplog.records)


def test_a_stale_opt_in_without_a_shell_is_refused() -> None:
    [line] = problems(exec_rule('[/opt/fix, "{subject}"]', ", unsafe_shell_with_subject: true"))
    assert "unsafe_shell_with_subject is set but argv runs no shell" in line


def test_a_program_path_that_resolves_to_a_shell_is_one() -> None:
    def tainted(arg: str) -> bool:
        return "{subject}" in arg

    def bash(path: str) -> str:
        return "/usr/bin/bash" if path == "/usr/local/bin/fixer" else path

    assert hazards.shell_with_subject(["/usr/local/bin/fixer", "-c", "x {subject}"], tainted, bash) == (
        "a shell (bash -c)"
    )
    assert hazards.shell_with_subject(["/usr/local/bin/fixer", "-c", "x {subject}"], tainted, lambda p: p) is None


# --------------------------------------------------------------------------- 2. files.clean


def clean_rule(action: str, state_dir: str = "/var/lib/watchdogd") -> str:
    return f"""\
        state_dir: {state_dir}
        rules:
          r:
            probe: host.disk
            above: 90
            actions:
              - files.clean: {action}
        """


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("{path: /var/lib/watchdogd, older_than: 1d}", "path /var/lib/watchdogd is state_dir /var/lib/watchdogd"),
        ("{path: /var/lib/watchdogd/db, older_than: 1d}", "is inside state_dir"),
        ("{path: /var/lib/app/../watchdogd/., older_than: 1d}", "is state_dir"),
        ("{path: /var/lib, older_than: 0s}", "/var/lib is a directory everyone's data lives in"),
        ("{path: /var, older_than: 30d, allowed_roots: [/]}", "root directory"),
        ("{path: /etc/app, older_than: 1d, allowed_roots: [/etc]}", "allowed_roots entry /etc is inside /etc"),
        ("{path: /usr/local/app, older_than: 1d, allowed_roots: [/usr/local]}", "inside /usr"),
        ("{path: /var/lib/app/../.., older_than: 30d, allowed_roots: [/var]}", "/var is a directory everyone's"),
        ("{path: /home, older_than: 30d}", "/home is a directory everyone's data lives in"),
        ("{path: /tmp, older_than: 0s}", "needs older_than of at least 1h"),
        ("{path: /var/log, older_than: 10m}", "needs older_than of at least 1h"),
    ],
)
def test_dangerous_cleans_are_refused(action: str, message: str) -> None:
    [line] = problems(clean_rule(action))
    assert line.startswith(f"{ETC}:7: rules.r.actions[0].files.clean"), line
    assert message in line, line


def test_a_clean_of_the_config_directory_or_a_parent_of_it_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "watchdogd.yaml"
    state = tmp_path / "state"
    for path in (tmp_path / "conf", tmp_path):
        [line] = problems(clean_rule(f"{{path: {path}, older_than: 1d, allowed_roots: [{tmp_path}]}}", str(state)),
                          config)
        assert "the config's directory" in line or "state_dir" in line, line


def test_a_symlink_into_the_state_dir_is_seen_through(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (tmp_path / "cache").symlink_to(state)
    [line] = problems(clean_rule(f"{{path: {tmp_path}/cache, older_than: 1d, allowed_roots: [{tmp_path}]}}",
                                 str(state)), tmp_path / "conf" / "w.yaml")
    assert f"is state_dir {state}" in line, line


@pytest.mark.parametrize(
    "action",
    [
        "{path: /var/lib/app/cache, older_than: 0s}",
        "{path: /var/log/app, older_than: 1d}",
        "{path: /var/log, pattern: '*.gz', older_than: 30d}",
        "{path: /tmp, older_than: 10d}",
        "{path: /srv/app/tmp, older_than: 1h}",
    ],
)
def test_ordinary_cleans_still_load(action: str) -> None:
    loads(clean_rule(action))


def make_old(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    os.utime(path, (NOW - 86400 * 30, NOW - 86400 * 30))
    return path


def test_at_run_time_a_tree_holding_the_state_dir_is_refused(tmp_path: Path) -> None:
    """Defence in depth: params that never went through config still spare the state and the config."""
    data = tmp_path / "data"
    state_db = make_old(data / "app" / "state" / "state.db")
    config = make_old(data / "conf" / "watchdogd.yaml")
    junk = make_old(data / "junk" / "old.log")
    params = CleanParams(path=str(data), older_than=86400.0, allowed_roots=[str(tmp_path)])
    spec = FILE_ACTIONS["files.clean"]
    for own in (hazards.OwnPaths(str(data / "app" / "state"), str(tmp_path / "etc")),
                hazards.OwnPaths(str(tmp_path / "state"), str(data / "conf"))):
        result = spec.factory(params.protecting(own), None, lambda: NOW).run([Reading("/", 95.0)], dry_run=False)
        assert not result.ok and "watchdogd never cleans its own files" in (result.error or ""), result
    assert (state_db.exists(), config.exists(), junk.exists()) == (True, True, True)
    # The same tree with the daemon's directories elsewhere is cleaned as usual.
    own = hazards.OwnPaths(str(tmp_path / "state"), str(tmp_path / "etc"))
    result = spec.factory(params.protecting(own), None, lambda: NOW).run([Reading("/", 95.0)], dry_run=False)
    assert result.ok and not state_db.exists(), result


def test_at_run_time_a_path_swapped_to_point_into_the_state_dir_is_refused(tmp_path: Path) -> None:
    var = tmp_path / "var"
    state = var / "state"
    db = make_old(state / "state.db")
    (tmp_path / "w" / "state").mkdir(parents=True)
    params = CleanParams(path=str(tmp_path / "w" / "state"), older_than=86400.0, allowed_roots=[str(tmp_path)])
    action = FILE_ACTIONS["files.clean"].factory(
        params.protecting(hazards.OwnPaths(str(state), str(tmp_path / "etc"))), None, lambda: NOW
    )
    (tmp_path / "w" / "state").rmdir()
    (tmp_path / "w").rmdir()
    (tmp_path / "w").symlink_to(var)  # loaded fine; now the same path names the state_dir
    result = action.run([Reading("/", 95.0)], dry_run=False)
    assert not result.ok and "state_dir" in (result.error or ""), result
    assert db.exists()


# --------------------------------------------------------------------------- 3. state_dir


@pytest.mark.parametrize(
    ("state_dir", "message"),
    [
        ("/etc", "/etc is /etc"),
        ("/etc/watchdogd/state", "is inside /etc"),
        ("/usr/lib/watchdogd", "inside /usr"),
        ("/", "shared with other software"),
        ("/var/lib", "shared with other software"),
        ("/tmp", "shared with other software"),
        ("/var/tmp/../lib", "shared with other software"),
        ("/home", "shared with other software"),
        ("/run", "shared with other software"),
    ],
)
def test_a_state_dir_that_is_not_its_own_is_refused(state_dir: str, message: str) -> None:
    [line] = problems(f"state_dir: {state_dir}\n")
    assert line.startswith(f"{ETC}:1: state_dir: "), line
    assert message in line and "(it holds the database and the audit history)" in line, line


def test_the_state_dir_may_not_be_the_configs_own_directory(tmp_path: Path) -> None:
    [line] = problems(f"state_dir: {tmp_path}\n", tmp_path / "w.yaml")
    assert "is the config's directory" in line
    loads(f"state_dir: {tmp_path}/state\n", tmp_path / "w.yaml")
    loads("state_dir: /var/lib/watchdogd\n")


# --------------------------------------------------------------------------- 4. subjects


def test_an_action_that_cannot_act_on_the_probes_subjects_is_refused() -> None:
    [line] = problems("""\
        rules:
          r:
            probe: host.cpu
            above: 90
            actions:
              - postgres.terminate: {}
        targets:
          postgres:
            main: {dsn: "postgresql://x@127.0.0.1/db"}
        """)
    assert line.startswith(
        f"{ETC}:6: rules.r.actions[0].postgres.terminate: action postgres.terminate acts on PostgreSQL backends "
        "(pg_backend); probe host.cpu measures the host (host); probes it fits: postgres.blocking, postgres.idle"
    ), line


@pytest.mark.parametrize(
    ("probe", "params", "action", "fits"),
    [
        ("process.count", "{name: worker}", "process.signal: {}", False),
        ("process.rss", "{name: worker}", "process.signal: {}", True),
        ("net.http", "{url: 'http://127.0.0.1:1/'}", "systemd.restart: {}", False),
        ("net.http", "{url: 'http://127.0.0.1:1/'}", "systemd.restart: {unit: app.service}", True),
        ("systemd.unit", "{units: [app.service]}", "systemd.reload: {}", True),
        ("host.disk", "{}", "docker.restart: {}", False),
        ("docker.containers", "{}", "docker.restart: {}", True),
        ("docker.disk", "{}", "docker.prune: {}", True),
        ("host.memory", "{}", "exec: {argv: [/opt/fix]}", True),
        ("redis.memory", "{}", "redis.client_kill: {}", False),
        ("redis.memory", "{}", "redis.delete_keys: {match: 'cache:*'}", True),
        ("postgres.dead_ratio", "{}", "postgres.vacuum: {}", True),
        ("postgres.dead_ratio", "{}", "postgres.cancel: {}", False),
    ],
)
def test_action_and_probe_pairs(probe: str, params: str, action: str, fits: bool) -> None:
    text = f"""\
        rules:
          r:
            probe: {probe}
            params: {params}
            above: 1
            actions:
              - {action}
        targets:
          postgres: {{main: {{dsn: "postgresql://x@127.0.0.1/db"}}}}
          redis: {{main: {{url: "redis://127.0.0.1:6379/0"}}}}
          docker: {{main: {{url: "unix:///var/run/docker.sock"}}}}
        """
    if fits:
        loads(text)
    else:
        [line] = problems(text)
        assert re.search(r"acts on .*; probe \S+ measures", line), line


def test_every_probe_and_action_declares_known_subject_kinds() -> None:
    assert {spec.subjects for spec in DEFAULT.probes.values()} <= set(SUBJECT_KINDS)
    narrow = {name: spec.accepts for name, spec in DEFAULT.actions.items() if spec.accepts != ANY_SUBJECT}
    # Every action that needs particular subjects has at least one probe that produces them.
    for name, kinds in narrow.items():
        assert any(spec.subjects in kinds for spec in DEFAULT.probes.values()), name


def test_the_shipped_policy_still_loads() -> None:
    shipped = Path(__file__).resolve().parents[2] / "etc" / "watchdogd" / "watchdogd.yaml"
    config = parse_config(shipped.read_text(encoding="utf-8"), ETC)
    assert any(rule.actions for rule in config.rules.values())
