"""Rules that say the same hold one config object (issue 17: memory at 1,000 rules), and nothing else changes.

Sharing is per load: a reload builds its own objects, so nothing outlives the config it came from.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from watchdogd.config import Config, load_config
from watchdogd.families.host import probes as host
from watchdogd.families.host.probes import PROBES, MountTable
from watchdogd.notifyspec import NotifyPolicy

POLICY = """\
state_dir: {tmp}/state
control_socket: {tmp}/control.sock
listen: null
notify:
  sinks:
    am: {{alertmanager: {{url: "http://127.0.0.1:9093"}}}}
    hook: {{webhook: {{url: "http://127.0.0.1:9000/hook"}}}}
  default: {{when: firing}}
rules:
  disk_a: {{probe: host.disk, above: 90}}
  disk_b: {{probe: host.disk, above: 90}}
  disk_c: {{probe: host.disk, above: 90, params: {{}}}}
  disk_root: {{probe: host.disk, above: 80, for: 1m, cooldown: 10m, params: {{mountpoints: [/]}},
              notify: {{sinks: [hook]}}}}
  disk_root_2: {{probe: host.disk, above: 80, for: 1m, cooldown: 10m, params: {{mountpoints: [/]}},
                notify: {{sinks: [hook]}}}}
  load_a: {{probe: host.load, above: 3, params: {{period: 5}}}}
  load_b: {{probe: host.load, above: 3, params: {{period: 5}}}}
  load_one: {{probe: host.load, above: 3, params: {{period: 1}}}}
"""

SAME = ("disk_a", "disk_b", "disk_c")


def load(tmp_path: Path, name: str = "w.yaml") -> Config:
    path = tmp_path / name
    path.write_text(POLICY.format(tmp=tmp_path))
    path.chmod(0o600)
    return load_config(path)


def test_equal_params_are_one_object_and_different_ones_are_not(tmp_path: Path) -> None:
    rules = load(tmp_path).rules
    first = rules["disk_a"].params
    assert all(rules[name].params is first for name in SAME)  # ``params: {}`` is the default too
    assert rules["disk_root"].params is rules["disk_root_2"].params
    assert rules["disk_root"].params is not first
    assert rules["load_a"].params is rules["load_b"].params
    assert rules["load_one"].params is not rules["load_a"].params
    assert getattr(first, "mountpoints") is None and "tmpfs" in getattr(first, "exclude_fstypes")
    assert getattr(rules["disk_root"].params, "mountpoints") == ["/"]
    assert getattr(rules["load_a"].params, "period") == 5 and getattr(rules["load_one"].params, "period") == 1


def test_equal_thresholds_and_guards_are_one_object_with_their_values(tmp_path: Path) -> None:
    rules = load(tmp_path).rules
    assert all(rules[name].thresholds is rules["disk_a"].thresholds for name in SAME)
    assert rules["load_a"].thresholds is rules["load_one"].thresholds is not rules["disk_a"].thresholds
    assert rules["load_a"].thresholds.above == 3.0
    assert all(rules[name].guard is rules["disk_a"].guard for name in (*SAME, "load_a", "load_one"))
    root, root_2 = rules["disk_root"], rules["disk_root_2"]
    assert root.thresholds is root_2.thresholds and root.thresholds is not rules["disk_a"].thresholds
    assert root.guard is root_2.guard and root.guard is not rules["disk_a"].guard
    assert rules["disk_a"].thresholds.above == 90.0 and rules["disk_a"].thresholds.for_ == 0.0
    assert root.thresholds.above == 80.0 and root.thresholds.for_ == 60.0
    assert rules["disk_a"].guard.cooldown == 300.0 and root.guard.cooldown == 600.0


def test_rules_without_notify_hold_the_sections_default_policy(tmp_path: Path) -> None:
    config = load(tmp_path)
    rules = config.rules
    assert all(rules[name].notify is config.notify.default for name in (*SAME, "load_a", "load_one"))
    assert config.notify.default == NotifyPolicy(when="firing")
    own = rules["disk_root"].notify
    assert own is rules["disk_root_2"].notify and own is not config.notify.default
    assert own.when == "firing" and own.sinks == ("hook",)  # the rule's own over the default


def test_two_loads_share_nothing(tmp_path: Path) -> None:
    one, two = load(tmp_path, "one.yaml"), load(tmp_path, "two.yaml")
    for name in ("disk_a", "disk_root", "load_a"):
        a, b = one.rules[name], two.rules[name]
        for part in ("params", "thresholds", "guard", "notify"):
            assert getattr(a, part) == getattr(b, part)
            assert getattr(a, part) is not getattr(b, part), (name, part)


def make(kind: str, table: MountTable, **params: Any) -> Any:
    spec = PROBES[kind]
    return spec.factory(spec.params(**params), table, time.time)


def test_default_fstype_exclusions_are_one_set(tmp_path: Path) -> None:
    table_file = tmp_path / "mountinfo"
    table_file.write_text(
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
        f"2 1 0:40 / {tmp_path} rw - tmpfs tmpfs rw\n"
        f"3 1 8:2 / {tmp_path}/data rw - xfs /dev/sdb1 rw\n"
    )
    table = MountTable(str(table_file))
    probes = [make("host.disk", table), make("host.disk", table), make("host.inodes", table),
              make("host.disk", table, exclude_fstypes=list(reversed(host.PSEUDO_FSTYPES)))]
    sets = [probe._selection._exclude_fstypes for probe in probes]
    assert all(s is sets[0] for s in sets) and sets[0] == frozenset(host.PSEUDO_FSTYPES)
    assert [m.mountpoint for m in probes[0]._selection.current()] == ["/", f"{tmp_path}/data"]
    own = make("host.disk", table, exclude_fstypes=["xfs"])
    assert own._selection._exclude_fstypes == frozenset({"xfs"}) and own._selection._exclude_fstypes is not sets[0]
    assert [m.mountpoint for m in own._selection.current()] == ["/", str(tmp_path)]
