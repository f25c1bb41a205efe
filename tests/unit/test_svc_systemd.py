"""systemctl output parsing and the decisions of the systemd probes and actions.

systemctl's answers are played back from text here (pure logic); the same
code runs against a real systemd as PID 1 in
tests/integration/services/test_svc_systemd.py.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from watchdogd.contracts import ProbeError
from watchdogd.families.systemd.actions import ACTIONS, RestartParams, UnitAction
from watchdogd.families.systemd.probes import PROBES, RestartsProbe, UnitParams, UnitProbe
from watchdogd.families.systemd.systemctl import Systemctl, own_unit, parse_list_units, parse_show, unit_name
from watchdogd.model import Reading

SHOW_TWO = """Id=app.service
LoadState=loaded
ActiveState=failed
SubState=failed
Result=exit-code
NRestarts=3
MainPID=0

Id=web.service
LoadState=loaded
ActiveState=active
SubState=running
Result=success
NRestarts=0
MainPID=123
"""


class FakeSystemctl:
    """Answers systemctl argv from a table: (verb, *units) -> (exit code, stdout, stderr)."""

    def __init__(self, units: dict[str, dict[str, str]], fail: dict[str, tuple[int, str]] | None = None) -> None:
        self.units = units
        self.fail = fail or {}
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        args = argv[3:]  # after systemctl --no-pager --no-ask-password
        verb = args[0]
        names = args[args.index("--") + 1 :]
        if verb == "show":
            blocks = []
            for name in names:
                props = self.units.get(name, {"LoadState": "not-found", "ActiveState": "inactive"})
                blocks.append("\n".join(f"{k}={v}" for k, v in {"Id": name, **props}.items()))
            return subprocess.CompletedProcess(argv, 0, "\n\n".join(blocks) + "\n", "")
        if verb == "list-units":
            lines = [f"{name} loaded {p.get('ActiveState')} {p.get('SubState')} x" for name, p in self.units.items()]
            return subprocess.CompletedProcess(argv, 0, "\n".join(lines) + "\n", "")
        code, err = self.fail.get(verb, (0, ""))
        return subprocess.CompletedProcess(argv, code, "", err)


def test_parse_show_blocks() -> None:
    blocks = parse_show(SHOW_TWO)
    assert [b["Id"] for b in blocks] == ["app.service", "web.service"]
    assert blocks[0]["NRestarts"] == "3" and blocks[1]["MainPID"] == "123"


def test_parse_list_units_drops_markers_and_filters() -> None:
    text = (
        "app@1.service loaded active running App 1\n"
        "● app@2.service loaded failed failed App 2\n"
        "web.service loaded active running Web\n"
    )
    assert parse_list_units(text, ["app@*"]) == ["app@1.service", "app@2.service"]


def test_unit_name_completion() -> None:
    assert unit_name("nginx") == "nginx.service"
    assert unit_name("backup.timer") == "backup.timer"
    assert unit_name("app@*") == "app@*"


def test_own_unit_from_cgroup(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    v2.write_text("0::/system.slice/watchdogd.service\n")
    assert own_unit(str(v2)) == "watchdogd.service"
    v1 = tmp_path / "v1"
    v1.write_text("4:memory:/x\n1:name=systemd:/system.slice/watchdogd.service\n0::/\n")
    assert own_unit(str(v1)) == "watchdogd.service"
    docker = tmp_path / "docker"
    docker.write_text("0::/docker/0123abcd\n")
    assert own_unit(str(docker)) is None


def unit_probe(table: dict[str, dict[str, str]], **params: Any) -> UnitProbe:
    return UnitProbe(UnitParams.model_validate(params), Systemctl(FakeSystemctl(table)), time.monotonic)


def test_unit_probe_health() -> None:
    units = {
        "ok.service": {"LoadState": "loaded", "ActiveState": "active", "SubState": "running"},
        "down.service": {"LoadState": "loaded", "ActiveState": "failed", "SubState": "failed"},
        "job.service": {"LoadState": "loaded", "ActiveState": "inactive", "SubState": "dead"},
        "loop.service": {"LoadState": "loaded", "ActiveState": "activating", "SubState": "auto-restart"},
    }
    readings = {r.subject: r.value for r in unit_probe(units, units=list(units) + ["gone"]).measure()}
    assert readings == {
        "ok.service": 0.0, "down.service": 1.0, "job.service": 1.0, "loop.service": 1.0, "gone.service": 1.0,
    }
    lenient = {r.subject: r.value for r in unit_probe(units, units=list(units), expect="not_failed").measure()}
    assert lenient == {"ok.service": 0.0, "down.service": 1.0, "job.service": 0.0, "loop.service": 0.0}


def test_unit_probe_expands_globs_once() -> None:
    units = {
        "app@1.service": {"LoadState": "loaded", "ActiveState": "active"},
        "app@2.service": {"LoadState": "loaded", "ActiveState": "failed"},
        "web.service": {"LoadState": "loaded", "ActiveState": "failed"},
    }
    fake = FakeSystemctl(units)
    probe = UnitProbe(UnitParams(units=["app@*.service"]), Systemctl(fake), time.monotonic)
    assert {r.subject: r.value for r in probe.measure()} == {"app@1.service": 0.0, "app@2.service": 1.0}
    assert [call[3] for call in fake.calls] == ["list-units", "show"]


def test_restarts_probe_skips_units_that_do_not_exist() -> None:
    units = {"app.service": {"LoadState": "loaded", "ActiveState": "active", "NRestarts": "7"}}
    probe = RestartsProbe(UnitParams(units=["app", "gone"]), Systemctl(FakeSystemctl(units)), time.monotonic)
    assert [(r.subject, r.value) for r in probe.measure()] == [("app.service", 7.0)]


def test_probe_down_when_systemd_is_not_running() -> None:
    def no_systemd(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        message = "System has not been booted with systemd as init system (PID 1)."
        return subprocess.CompletedProcess(argv, 1, "", message)

    probe = UnitProbe(UnitParams(units=["app"]), Systemctl(no_systemd), time.monotonic)
    with pytest.raises(ProbeError, match="has not been booted with systemd"):
        probe.measure()


@pytest.mark.parametrize(
    "units", [["-all"], ["a b"], ["../x"], []],
)
def test_unit_params_reject_bad_names(units: list[str]) -> None:
    with pytest.raises(ValidationError):
        UnitParams(units=units)


# --------------------------------------------------------------------------- actions


def restart(units: dict[str, dict[str, str]], own: str | None = None, fail: Any = None, **params: Any) -> tuple[
    UnitAction, FakeSystemctl
]:
    fake = FakeSystemctl(units, fail)
    return UnitAction("restart", RestartParams.model_validate(params), Systemctl(fake), own), fake


def unit_reading(unit: str) -> Reading:
    return Reading(unit, 1.0, {"unit": unit})


LOADED_FAILED = {"LoadState": "loaded", "ActiveState": "failed", "SubState": "failed", "CanStart": "yes"}


def test_restart_dry_run_reads_state_and_changes_nothing() -> None:
    action, fake = restart({"app.service": LOADED_FAILED})
    result = action.run([unit_reading("app.service")], dry_run=True)
    assert result.ok and result.items[0].detail == "would restart app.service (now failed/failed)"
    assert [call[3] for call in fake.calls] == ["show"]


def test_restart_runs_systemctl_with_argv() -> None:
    action, fake = restart({"app.service": LOADED_FAILED})
    result = action.run([unit_reading("app.service"), unit_reading("app.service")], dry_run=False)
    assert result.ok
    assert ["systemctl", "--no-pager", "--no-ask-password", "restart", "--", "app.service"] in fake.calls
    assert sum(1 for call in fake.calls if call[3] == "restart") == 1  # one restart per unit per run


def test_restart_resets_the_start_limit_first() -> None:
    hit = {**LOADED_FAILED, "Result": "start-limit-hit"}
    action, fake = restart({"app.service": hit})
    assert "after systemctl reset-failed" in action.run([unit_reading("app.service")], dry_run=True).items[0].detail
    action.run([unit_reading("app.service")], dry_run=False)
    verbs = [call[3] for call in fake.calls]
    assert verbs.index("reset-failed") < verbs.index("restart")


@pytest.mark.parametrize(
    ("props", "own", "params", "message"),
    [
        ({"LoadState": "not-found"}, None, {}, "is not loaded (LoadState=not-found)"),
        ({**LOADED_FAILED, "RefuseManualStart": "yes"}, None, {}, "refuses manual starts"),
        (LOADED_FAILED, "app.service", {}, "refused: watchdogd runs in app.service"),
        (LOADED_FAILED, None, {"exclude": ["app*"]}, "excluded by this action's exclude list"),
    ],
)
def test_restart_refusals(props: dict[str, str], own: str | None, params: dict[str, Any], message: str) -> None:
    action, fake = restart({"app.service": props}, own, **params)
    result = action.run([unit_reading("app.service")], dry_run=False)
    assert not result.ok and message in result.items[0].detail
    assert "restart" not in [call[3] for call in fake.calls]


def test_restart_permission_error_is_explained() -> None:
    denied = {"restart": (1, "Failed to restart app.service: Access denied")}
    action, _ = restart({"app.service": LOADED_FAILED}, fail=denied)
    result = action.run([unit_reading("app.service")], dry_run=False)
    assert not result.ok and "needs root, or a polkit rule" in result.items[0].detail


def test_fixed_unit_for_subjects_that_are_not_units() -> None:
    action, fake = restart({"app.service": LOADED_FAILED}, unit="app")
    result = action.run([Reading("http://127.0.0.1:8000/health", float("inf"), {})], dry_run=False)
    assert result.ok and result.items[0].subject == "http://127.0.0.1:8000/health"
    assert ["systemctl", "--no-pager", "--no-ask-password", "restart", "--", "app.service"] in fake.calls


def test_subject_without_unit_and_no_unit_param() -> None:
    action, _ = restart({})
    result = action.run([Reading("pid:12", 1.0, {"pid": 12})], dry_run=False)
    assert not result.ok and "set unit:" in result.items[0].detail


def test_reload_needs_exec_reload() -> None:
    fake = FakeSystemctl({"app.service": {**LOADED_FAILED, "ActiveState": "active", "CanReload": "no"}})
    action = ACTIONS["systemd.reload"].factory(ACTIONS["systemd.reload"].params(), None, time.time)
    action._systemctl = Systemctl(fake)  # type: ignore[attr-defined]
    result = action.run([unit_reading("app.service")], dry_run=False)
    assert not result.ok and "cannot be reloaded" in result.items[0].detail


def test_restart_params_reject_globs_as_unit() -> None:
    with pytest.raises(ValidationError, match="not a unit name"):
        RestartParams(unit="app@*")


def test_probe_table() -> None:
    assert set(PROBES) == {"systemd.unit", "systemd.restarts"}
    assert set(ACTIONS) == {"systemd.restart", "systemd.reload"}
