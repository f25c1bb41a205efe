"""bench/run's generated files and verdicts: the relocated shipped policy, the reaction policy, the
monitrc and the PASS/MISS table."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from sidebyside import monitrc, policy, report  # noqa: E402
from sidebyside.families import Bench, Outcome  # noqa: E402
from sidebyside.reaction import Figure, check_config  # noqa: E402
from sidebyside.steady import ProcFigures  # noqa: E402

from watchdogd.config import load_config  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

SHIPPED = """\
# a comment that must survive
interval: 15s
listen: 127.0.0.1:19469        # /metrics
state_dir: /var/lib/watchdogd
rules:
  disk:
    probe: host.disk
    above: 90
    params: {listen: "not a top-level key"}
"""


def test_relocate_changes_only_the_named_top_level_keys() -> None:
    out = policy.relocate(SHIPPED, {"listen": "127.0.0.1:4000", "state_dir": "/tmp/a b", "control_socket": "/tmp/c"})
    assert out.splitlines()[0] == "# a comment that must survive"
    assert 'listen: "127.0.0.1:4000"' in out
    assert 'state_dir: "/tmp/a b"' in out
    assert out.rstrip().endswith('control_socket: "/tmp/c"')  # absent: appended
    assert 'params: {listen: "not a top-level key"}' in out
    assert yaml.safe_load(out)["rules"]["disk"]["above"] == 90


def test_relocated_shipped_policy_loads_with_the_moved_paths(tmp_path: Path) -> None:
    text = policy.relocate((REPO / "etc/watchdogd/watchdogd.yaml").read_text(), {
        "state_dir": str(tmp_path / "state"), "control_socket": str(tmp_path / "c.sock"), "listen": "127.0.0.1:0",
    })
    path = tmp_path / "w.yaml"
    path.write_text(text)
    path.chmod(0o600)
    config = load_config(path)
    assert config.state_dir == tmp_path / "state"
    assert config.interval == 15.0  # everything else as shipped


def test_reaction_policy_is_accepted_by_watchdogd(tmp_path: Path) -> None:
    files = tmp_path / "files"
    rule = policy.reaction_rule("host.dir_size", {"path": str(files)}, "1MiB", "files.clean",
                                {"path": str(files), "older_than": "0s", "allowed_roots": [str(tmp_path)]})
    text = policy.reaction_config(state_dir=str(tmp_path / "s"), control_socket=str(tmp_path / "c"),
                                  listen="127.0.0.1:0", targets={}, rules={"r": rule})
    path = tmp_path / "r.yaml"
    path.write_text(text)
    path.chmod(0o600)
    config = load_config(path)
    loaded = config.rules["r"]
    assert loaded.every == 1.0 and loaded.thresholds.for_ == 0.0 and loaded.thresholds.above == 1024 * 1024
    assert config.grace == 0.0
    assert [a.kind for a in loaded.actions] == ["files.clean"]


def test_monitrc_mirrors_thresholds_and_for_in_cycles(tmp_path: Path) -> None:
    checks = [
        monitrc.Check("cpu-high", "host.cpu", 80, 300),
        monitrc.Check("load-high", "host.load", 2, 600, period=5),
        monitrc.Check("disk-full", "host.disk", 90, 120, mountpoints=("/", "/var/lib")),
        monitrc.Check("inodes-full", "host.inodes", 90, 0, mountpoints=("/",)),
        monitrc.Check("pg", "postgres.idle", 3600, 0),
    ]
    text = monitrc.render(tmp_path, checks, interval=15)
    assert "set daemon 15" in text
    assert f"set logfile {tmp_path / 'monit.log'}" in text
    assert "  if cpu usage > 80% for 20 cycles then alert  # cpu-high" in text
    assert "  if loadavg (5min) per core > 2 for 40 cycles then alert  # load-high" in text
    root = text.index("check filesystem fs_root with path /\n")
    assert text.index("space usage > 90% for 8 cycles", root) < text.index("inode usage > 90% for 1 cycles", root)
    assert "check filesystem fs_var_lib with path /var/lib" in text
    assert "# no Monit test for rule pg (postgres.idle)" in text


def test_cycles_round_up_and_never_below_one() -> None:
    assert monitrc.cycles(0, 15) == 1
    assert monitrc.cycles(16, 15) == 2
    assert monitrc.cycles(120, 15) == 8


def _procs(wd_rss: int, node_rss: int, wd_cpu: float) -> list[ProcFigures]:
    return [ProcFigures("watchdogd", wd_rss, None, wd_cpu), ProcFigures("node_exporter", node_rss, None, 0.1),
            ProcFigures("monit", 7000, None, 0.0)]


def test_targets_pass_and_miss_on_the_issue_limits() -> None:
    scrapes = [report.ScrapeFigure("watchdogd", 3.0, 5.0, 1, 1), report.ScrapeFigure("node_exporter", 10.0, 20.0, 1, 1)]
    reactions = [Figure("a", "pg", 1.0, [0.5, 2.0]), Figure("b", "docker", 1.0, [0.5, 2.01])]
    found = report.targets(_procs(40 * 1024, 20 * 1024, 0.5), scrapes, reactions)
    assert [t.verdict for t in found] == ["PASS", "PASS", "PASS", "PASS", "MISS"]
    slower = [report.ScrapeFigure("watchdogd", 3.1, 5.0, 1, 1), scrapes[1]]
    found = report.targets(_procs(41 * 1024, 20 * 1024, 0.51), slower, [])
    assert [t.verdict for t in found] == ["MISS", "MISS", "MISS"]


def test_a_figure_that_could_not_be_taken_is_never_a_pass() -> None:
    reactions = [Figure("b", "docker", 1.0, unavailable="Docker engine: no dockerd"), Figure("c", "files", 1.0)]
    found = report.targets([], [], reactions)
    assert [t.verdict for t in found] == ["N/A"] * 5
    assert "no dockerd" in found[3].detail


def test_table_rows_keep_their_shape_when_figures_are_missing() -> None:
    lines = report.reaction_lines([Figure("a", "pg", 1.0, [0.9, 1.1], note="2 actions"),
                                   Figure("b", "docker", 1.0, unavailable="docker.restart: unknown action")])
    assert lines[1].split()[-4:-2] == ["0.90", "1.10"]  # nearest-rank median of two is the lower one
    assert "not available: docker.restart: unknown action" in lines[2]
    rows = report.family_lines([Outcome(Bench("bench_a.py", "rules"), "ok", 3.0, ["x", "y"]),
                                Outcome(Bench("bench_b.py", "containers"), "not run in --quick")])
    assert rows[0].split()[:3] == ["rules", "[ok,", "3"]
    assert rows[2].strip() == "containers  not run in --quick"


def test_a_scenario_whose_action_is_unknown_gets_the_check_config_reason(tmp_path: Path) -> None:
    rule = policy.reaction_rule("host.dir_size", {"path": str(tmp_path)}, "1MiB", "files.vanish", {})
    path = tmp_path / "r.yaml"
    path.write_text(policy.reaction_config(state_dir=str(tmp_path / "s"), control_socket=str(tmp_path / "c"),
                                           listen="127.0.0.1:0", targets={}, rules={"r": rule}))
    path.chmod(0o600)
    reason = check_config(Path(sys.executable), path)
    assert reason is not None and "files.vanish" in reason
    path.write_text(path.read_text().replace("files.vanish: {}", "files.clean: {path: /tmp/x, older_than: 1d}"))
    assert check_config(Path(sys.executable), path) is None
