"""What a daemon does not load until it needs it (issue 17: every module a host does not use is RSS for nothing).

A fresh interpreter imports what a start imports (the daemon, the config records with
its families' models, the host family) and must not have pulled in any module
below. Imports that wait for a config or a request are tested where they
happen (bcrypt: test_exporter_http; a family's client library: its target's
tests); this keeps the module-level imports honest, which is where they creep in.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import write_config

NOT_AT_START = {
    "bcrypt": "checks a password only where /metrics has basic_auth_users",
    "difflib": "suggests a key only for a config with a typo",
    "watchdogd.faces.cli": "is watchdogctl's; the daemon shares only faces.reason with it",
    "psycopg": "is loaded by the postgres family's first connection",
    "redis": "is loaded by the redis family's (or the redis fleet coordinator's) first connection",
    "docker": "is loaded by the docker family's first call",
    "etcd3gw": "is loaded by the etcd fleet coordinator",
    "ctypes.util": "would run ldconfig at every start; memory.py finds libc through the process itself",
    "yaml": "is read by the config child; the daemon itself only for a web_config_file",
    "watchdogd.config": "is the loader: the config child runs it, the daemon gets configtypes' records",
    "pydantic": "checks configs only in the config child (watchdogd.configchild), never in the daemon",
    "pydantic_core": "is pydantic's: the daemon holds config models in their plain form (watchdogd.spec)",
}

START = """
import json, sys
from pathlib import Path
import watchdogd.daemon, watchdogd.registry, watchdogd.families.host
from watchdogd.configchild import load_config_in_child
config = load_config_in_child(Path(sys.argv[1]))
print(json.dumps(sorted(sys.modules)))
"""


def test_a_start_loads_none_of_the_modules_it_does_not_need(tmp_path: Path) -> None:
    clean = "{files.clean: {path: /tmp/x, older_than: 7d}}"
    config = write_config(tmp_path, f"rules:\n  disk: {{probe: host.disk, above: 90%, actions: [{clean}]}}\n")
    done = subprocess.run(
        [sys.executable, "-c", START, str(config)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(json.loads(done.stdout))
    assert "watchdogd.families.host.probes" in loaded  # the start really was imported
    wrong = {name: why for name, why in NOT_AT_START.items() if name in loaded}
    assert not wrong, wrong
