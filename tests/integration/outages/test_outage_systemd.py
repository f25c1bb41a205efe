"""A unit killed under a real systemd (PID 1 in a Debian 12 container, watchdogd installed in it and run as a
service of that systemd): ``systemd.unit`` fires, ``systemd.restart`` runs once and holds; when the unit dies
again inside the cooldown, a second rule on the same unit is held back by the first rule's cooldown.

The container and its image come from ``tests/support/systemd_container.py`` (cached; the first build
takes minutes), as in ``tests/integration/services/test_svc_systemd.py``.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import wait_until
from tests.integration.outages.box import VENV_BIN, AppUnit, BoxDaemon, install_app, prop, remove_app, write
from tests.integration.outages.watch import break_and_heal

pytestmark = pytest.mark.integration

INTERVAL = 1.0
SLACK = 1.0  # every observation here is a `docker exec` (~0.1-0.3 s)
SECOND_FOR = 3.0

RULES = f"""
    rules:
      app-down:
        probe: systemd.unit
        params: {{units: [app]}}
        above: 0
        severity: critical
        cooldown: 60s
        max_actions: {{count: 3, per: 1h}}
        actions:
          - systemd.restart: {{settle: 10s}}
      app-stuck:
        probe: systemd.unit
        params: {{units: [app.service]}}
        above: 0
        for: {SECOND_FOR:g}s
        severity: warning
        cooldown: 60s
        actions:
          - systemd.restart: {{}}
"""


@pytest.fixture
def box(systemd_box: Any) -> Iterator[Any]:
    install_app(systemd_box)
    try:
        yield systemd_box
    finally:
        remove_app(systemd_box)


def test_killed_unit_is_restarted_once_and_a_second_rule_respects_its_cooldown(box: Any) -> None:
    config = write(box, "/etc/watchdogd/outage.yaml", "interval: 1s\n" + textwrap.dedent(RULES))
    with BoxDaemon(box, config) as d:
        tl = d.timeline
        for rule in ("app-down", "app-stuck"):
            tl.wait(rule, lambda s: s.state == "ok" and s.real_value, 60, what=f"{rule} to measure the unit")
        old_pid = prop(box, "app.service", "MainPID")

        app = AppUnit(box)
        out = break_and_heal(d, "app-down", app.kill, app.answers, poll=0.05)
        print(f"\noutage systemd (unit's main process killed): -> firing {out.to_firing:.2f}s; -> systemd.restart "
              f"finished {out.to_action_finished:.2f}s; active again -> app-down ok {out.back_to_ok:.2f}s\n"
              f"  app-down: {tl.story('app-down')}\n  app-stuck: {tl.story('app-stuck')}")
        assert out.to_firing <= INTERVAL + SLACK, tl.story("app-down")
        assert out.action["result"] == "ok" and out.action["detail"]["held"] is True, out.action
        assert out.action["subject"] == "app.service" and out.action["action"] == "systemd.restart", out.action
        assert prop(box, "app.service", "ActiveState") == "active"
        assert prop(box, "app.service", "MainPID") not in ("0", old_pid)
        assert out.back_to_ok <= INTERVAL + SLACK, tl.story("app-down")

        # Dies again inside the cooldown: the second rule sees it and is held back by the first one's restart.
        # The second rule saw the fix too (its pending from the first crash is over) before the next crash.
        tl.wait("app-stuck", lambda s: s.state == "ok" and s.real_value, 10, after=out.back)
        again = time.time()
        app.kill()
        wait_until(lambda: prop(box, "app.service", "ActiveState") == "failed", 10, "app.service to stay failed")
        skipped = wait_until(
            lambda: [e for e in d.history("app-stuck") if e["decision"] == "skipped_cooldown"],
            SECOND_FOR + 15, "app-stuck to be held back by the shared cooldown", interval=0.3,
        )[0]
        print(f"  second kill: app-stuck skipped {float(skipped['ts']) - again:.2f}s later, held_by "
              f"{skipped['detail'].get('held_by')}")
        held_by = skipped["detail"]["held_by"]
        assert held_by["rule"] == "app-down" and held_by["action"] == "systemd.restart", skipped
        assert float(held_by["at"]) == pytest.approx(float(out.action["ts"]), abs=0.01), (held_by, out.action)
        assert skipped["subject"] == "app.service", skipped
        assert prop(box, "app.service", "ActiveState") == "failed"
        runs = [e for e in d.history() if e["decision"] == "ran"]
        assert [(e["rule"], e["action"]) for e in runs] == [("app-down", "systemd.restart")], runs

        check = d.ctl("check")
        assert check.returncode == 2, check.stdout + check.stderr
        assert check.stdout.startswith("WATCHDOGD CRITICAL") and "app-down" in check.stdout, check.stdout

    # The same outage, from cron: --once exits 1 and names the rule (no actions in this config).
    once_config = write(box, "/etc/watchdogd/outage-once.yaml", """
        rules:
          app-down:
            probe: systemd.unit
            params: {units: [app]}
            above: 0
            severity: critical
        """)
    once = box.exec([f"{VENV_BIN}/watchdogd", "--config", once_config, "--once"], check=False, timeout=120)
    assert once.returncode == 1, once.stdout + once.stderr
    assert any(line.startswith("app-down: firing") for line in once.stdout.splitlines()), once.stdout
