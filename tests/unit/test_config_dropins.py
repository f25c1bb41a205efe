"""``include:`` drop-ins (conf.d): merged in order, each problem in the file and on the line it is on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from watchdogd.config import ConfigError, load_config

MAIN = """\
interval: 1m
state_dir: {state}
include: conf.d/*.yaml
targets:
  redis:
    cache: {{url: "redis://127.0.0.1:6379/0"}}
rules:
  cpu:
    probe: host.cpu
    above: 90
"""


def setup(tmp_path: Path, **dropins: str) -> Path:
    main = tmp_path / "watchdogd.yaml"
    main.write_text(MAIN.format(state=tmp_path / "state"))
    main.chmod(0o640)
    conf = tmp_path / "conf.d"
    conf.mkdir(mode=0o755)
    conf.chmod(0o755)
    for name, text in dropins.items():
        path = conf / name.replace("_", "-")
        path.write_text(text)
        path.chmod(0o644)
    return main


def problems(main: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(main)
    return [p.replace(f"{main.parent}/", "") for p in caught.value.problems]


def test_dropins_add_rules_and_targets_in_name_order(tmp_path: Path) -> None:
    main = setup(
        tmp_path,
        **{"20_app.yaml": "rules:\n  app-mem:\n    probe: host.memory\n    above: 90\n",
           "10_redis.yaml": "targets:\n  redis:\n    queue: {url: 'redis://127.0.0.1:6380/0'}\n"
                            "rules:\n  q:\n    probe: redis.queue_length\n    target: queue\n"
                            "    params: {keys: [jobs]}\n    above: 100\n",
           "notes.txt": "not yaml, not matched"},
    )
    config = load_config(main)
    assert list(config.rules) == ["cpu", "q", "app-mem"]  # the main file's, then 10-, then 20-
    assert set(config.targets["redis"]) == {"cache", "queue"}


def test_each_problem_names_its_own_file_and_line(tmp_path: Path) -> None:
    main = setup(
        tmp_path,
        **{"10_bad.yaml": "rules:\n  ok:\n    probe: host.cpu\n    above: 90\n  typo:\n    probe: host.cpux\n"
                          "    above: 1\n",
           "20_dup.yaml": "\n\nrules:\n  cpu:\n    probe: host.cpu\n    above: 50\n  ok:\n    probe: host.cpu\n"
                          "    above: 60\n",
           "30_global.yaml": "interval: 5s\n"},
    )
    assert problems(main) == [
        "conf.d/10-bad.yaml:6: rules.typo.probe: unknown probe 'host.cpux'; did you mean 'host.cpu'?",
        "conf.d/20-dup.yaml:4: rules.cpu: already defined at watchdogd.yaml:8; a name is defined once",
        "conf.d/20-dup.yaml:7: rules.ok: already defined at conf.d/10-bad.yaml:2; a name is defined once",
        "conf.d/30-global.yaml:1: interval: a drop-in holds only rules: and targets: (the rest belongs in "
        "watchdogd.yaml)",
    ]


def test_a_syntax_error_in_a_dropin_is_its_own(tmp_path: Path) -> None:
    main = setup(tmp_path, **{"10_broken.yaml": "rules:\n  x: [unclosed\n"})
    [found] = problems(main)
    assert found.startswith("conf.d/10-broken.yaml:")


def test_a_dropin_anyone_may_write_is_refused(tmp_path: Path) -> None:
    main = setup(tmp_path, **{"10_app.yaml": "rules: {}\n"})
    (tmp_path / "conf.d" / "10-app.yaml").chmod(0o666)
    assert problems(main) == [
        "conf.d/10-app.yaml: refusing a config writable by group or others (mode 0666); "
        "run: chmod go-w conf.d/10-app.yaml"
    ]
    (tmp_path / "conf.d" / "10-app.yaml").chmod(0o644)
    os.chmod(tmp_path / "conf.d", 0o777)
    [found] = problems(main)
    assert "refusing drop-ins from" in found and "writable by group or others (mode 0777)" in found


def test_no_match_is_an_empty_conf_d_and_a_bad_include_is_named(tmp_path: Path) -> None:
    main = setup(tmp_path)
    assert list(load_config(main).rules) == ["cpu"]
    main.write_text(main.read_text().replace("include: conf.d/*.yaml", "include: [3]"))
    assert problems(main) == [
        "watchdogd.yaml:3: include: expected a glob or a list of globs like /etc/watchdogd/conf.d/*.yaml"
    ]
