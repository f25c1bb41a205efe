"""The policy's JSON Schema: generated from the models, shipped identical, and it accepts the shipped policy."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from watchdogd.configschema import policy_schema, render
from watchdogd.faces.cli import main as watchdogctl

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_SCHEMA = ROOT / "etc" / "watchdogd" / "watchdogd.schema.json"
SHIPPED_POLICY = ROOT / "etc" / "watchdogd" / "watchdogd.yaml"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = policy_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def errors(validator: jsonschema.Draft202012Validator, data: Any) -> list[tuple[list[Any], str]]:
    return sorted((list(e.absolute_path), e.message) for e in validator.iter_errors(data))


def test_the_shipped_schema_is_the_generated_one() -> None:
    assert SHIPPED_SCHEMA.read_text() == render(), (
        "etc/watchdogd/watchdogd.schema.json is stale: python -m watchdogd.faces.cli schema > it"
    )


def test_watchdogctl_schema_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert watchdogctl(["schema"]) == 0
    assert capsys.readouterr().out == render()


def test_the_shipped_policy_validates(validator: jsonschema.Draft202012Validator) -> None:
    assert errors(validator, yaml.safe_load(SHIPPED_POLICY.read_text())) == []


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        (lambda d: d.update(intervl="5s"), [], "'intervl' was unexpected"),
        (lambda d: d["rules"]["cpu-high"].update(abve=3), ["rules", "cpu-high"], "'abve' was unexpected"),
        (lambda d: d["rules"]["disk-full"].update(params={"mountpoint": ["/"]}), ["rules", "disk-full", "params"],
         "'mountpoint' was unexpected"),
        (lambda d: d["rules"]["cpu-high"].update(probe="host.cpux"), ["rules", "cpu-high", "probe"], "is not one of"),
        (lambda d: d["rules"]["cpu-high"].update(every="5 minutes"), ["rules", "cpu-high", "every"],
         "is not valid under any of the given schemas"),
        (lambda d: d["rules"]["disk-full"]["actions"].append({"files.clen": {}}), ["rules", "disk-full", "actions", 3],
         "is not valid under any of the given schemas"),
        (lambda d: d["targets"]["redis"]["cache"].update(ur="redis://x"), ["targets", "redis", "cache"],
         "'ur' was unexpected"),
    ],
)
def test_typos_are_flagged_where_they_are(
    validator: jsonschema.Draft202012Validator, change: Any, where: list[Any], message: str
) -> None:
    data = copy.deepcopy(yaml.safe_load(SHIPPED_POLICY.read_text()))
    change(data)
    found = errors(validator, data)
    assert any(path == where and message in text for path, text in found), found
