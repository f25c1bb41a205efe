"""The two watchdogd configs of the benchmark, as text.

* The steady-state daemon runs the SHIPPED policy, byte for byte, with only
  the paths and the port moved (``relocate``): the figures are those of
  what operators install, comments and all.
* The reaction daemon runs one rule per scenario at ``every: 1s`` with
  ``for: 0s`` and no grace, each rule selecting only what the benchmark
  created (a role and application name, a container name, a temp dir), so
  it can never act on anything else on this host.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import yaml


def relocate(shipped: str, overrides: Mapping[str, str]) -> str:
    """Replace the top-level ``key: value`` lines named in ``overrides``; append the keys the file lacks."""
    text = shipped if shipped.endswith("\n") else shipped + "\n"
    for key, value in overrides.items():
        line = f"{key}: {json.dumps(value)}"
        pattern = re.compile(rf"^{re.escape(key)}:.*$", re.MULTILINE)
        text, count = pattern.subn(line.replace("\\", "\\\\"), text, count=1)
        if count == 0:
            text += line + "\n"
    return text


def reaction_config(
    *,
    state_dir: str,
    control_socket: str,
    listen: str,
    targets: Mapping[str, Mapping[str, Mapping[str, Any]]],
    rules: Mapping[str, Mapping[str, Any]],
) -> str:
    """A config running ``rules`` with nothing between the condition and the action but the probe interval."""
    document: dict[str, Any] = {
        "interval": "1s",
        "jitter": "0s",
        "grace": "0s",
        "listen": listen,
        "state_dir": state_dir,
        "control_socket": control_socket,
        "budget": {"actions": 10_000, "per": "1h"},
    }
    if targets:
        document["targets"] = {kind: {name: dict(params) for name, params in named.items()}
                               for kind, named in targets.items()}
    document["rules"] = {name: dict(rule) for name, rule in rules.items()}
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def reaction_rule(probe: str, params: Mapping[str, Any], above: str, action: str,
                  action_params: Mapping[str, Any]) -> dict[str, Any]:
    """One scenario's rule: fire on the first breaching probe run, act at once, never held back by the guard.

    ``cooldown: 0s`` and a large ``max_actions`` because the scenario is
    repeated on the same subject (the files dir) within seconds; a real
    policy would never look like this.
    """
    return {
        "probe": probe,
        "params": dict(params),
        "above": above,
        "for": "0s",
        "every": "1s",
        "cooldown": "0s",
        "max_actions": {"count": 10_000, "per": "1h"},
        "actions": [{action: dict(action_params)}],
    }
