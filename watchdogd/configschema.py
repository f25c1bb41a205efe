"""The policy's JSON Schema, generated from the models the daemon validates with, for editors.

An editor with a YAML language server (``# yaml-language-server: $schema=...``)
then completes keys and flags typos while the file is written, long before
``check-config``. The schema is generated, never hand-kept: the top-level
keys from the config model, each target kind's and each probe's and action's
parameters from the registry, so a new probe is in it without anyone
remembering. It is looser than the daemon where JSON Schema cannot say what
the daemon checks (a threshold's unit depends on the probe; hazards; a rule
naming a target that exists): ``check-config`` stays the authority.

``watchdogctl schema`` prints it; the repository ships the generated file
(``etc/watchdogd/watchdogd.schema.json``) and a test keeps the two identical.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from watchdogd.config import _RawConfig, _RawRule
from watchdogd.registry import DEFAULT, Registry
from watchdogd.spec import Model

SCHEMA_ID = "https://watchdogd.invalid/watchdogd.schema.json"
"""An identifier, not a download location: editors take the schema from the file path."""


def policy_schema(registry: Registry = DEFAULT) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a policy file, drop-ins included."""
    plain: list[type[Model]] = [_RawConfig, _RawRule]
    plain += [spec.params for spec in registry.targets.values()]
    plain += [spec.params for spec in registry.probes.values()]
    plain += [spec.params for spec in registry.actions.values()]
    models: list[tuple[type[BaseModel], Any]] = [(model.twin(), "validation") for model in plain]
    refs, top = models_json_schema(models, ref_template="#/$defs/{model}")
    defs: dict[str, Any] = top.get("$defs", {})

    def ref(model: type[Model]) -> dict[str, Any]:
        return dict(refs[(model.twin(), "validation")])

    config = defs[ref(_RawConfig)["$ref"].rsplit("/", 1)[-1]]
    rule_name = ref(_RawRule)["$ref"].rsplit("/", 1)[-1]
    rule = defs[rule_name]
    rule["properties"]["probe"] = {"enum": sorted(registry.probes), "description": "what to measure"}
    rule["properties"]["actions"] = {
        "type": "array",
        "items": {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {kind: {"anyOf": [ref(spec.params), {"type": "null"}]}},
                    "required": [kind],
                    "additionalProperties": False,
                }
                for kind, spec in sorted(registry.actions.items())
            ]
        },
    }
    for spec in registry.actions.values():
        # An action may name its target (``docker.prune: {target: local}``): config takes it before the params.
        params = defs[ref(spec.params)["$ref"].rsplit("/", 1)[-1]]
        params.setdefault("properties", {})["target"] = {"type": "string", "description": "a target of its kind"}
    rule["allOf"] = [
        {
            "if": {"properties": {"probe": {"const": name}}, "required": ["probe"]},
            "then": {"properties": {"params": ref(spec.params)}},
        }
        for name, spec in sorted(registry.probes.items())
    ]
    properties = dict(config["properties"])
    properties["include"] = {
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}],
        "description": "drop-ins: a glob or globs (relative to this file) whose rules: and targets: are added",
    }
    properties["targets"] = {
        "type": "object",
        "properties": {
            kind: {"type": "object", "additionalProperties": ref(spec.params)}
            for kind, spec in sorted(registry.targets.items())
        },
        "additionalProperties": False,
    }
    properties["rules"] = {
        "type": "object",
        "propertyNames": {"not": {"const": "*"}},
        "additionalProperties": {"$ref": f"#/$defs/{rule_name}"},
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "watchdogd policy (/etc/watchdogd/watchdogd.yaml and its conf.d drop-ins)",
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        "$defs": defs,
    }


def render(registry: Registry = DEFAULT) -> str:
    """The schema as the shipped file holds it: stable key order, one trailing newline."""
    return json.dumps(policy_schema(registry), indent=1, sort_keys=True) + "\n"
