"""watchdogd running under a real systemd (PID 1 in a ``SystemdContainer``), seen from the host.

The daemon runs as the transient unit ``watchdogd-outage`` (``systemd-run``,
as the package runs it as a service), its status and audit log are read
with the container's own ``watchdogctl``, and the unit it heals is
``app.service`` (``/bin/sleep infinity``, ``Restart=no``: only watchdogd
brings it back). Used by the systemd outage test and ``bench/bench_outage.py``.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

from tests.helpers import wait_until
from tests.integration.outages.watch import Observed, Timeline

VENV_BIN = "/opt/watchdogd/bin"
SOCKET = "/run/watchdogd-outage.sock"
STATE_DIR = "/var/lib/watchdogd-outage"

APP_UNIT = """
    [Unit]
    Description=the service the runbook restarts
    [Service]
    ExecStart=/bin/sleep infinity
    Restart=no
"""


class BoxDaemon(Observed):
    """watchdogd running as the unit ``watchdogd-outage`` inside the container, seen through watchdogctl."""

    def __init__(self, box: Any, config: str) -> None:
        self.box = box
        self.config = config
        self.timeline = Timeline(self.status, period=0.1)

    def __enter__(self) -> BoxDaemon:
        self.box.exec(["systemd-run", "--unit=watchdogd-outage", "--property=Type=exec",
                       f"{VENV_BIN}/watchdogd", "--config", self.config])
        self.timeline.__enter__()
        try:
            wait_until(lambda: self.ctl("status").returncode in (0, 1), 30, "watchdogd to answer in the container",
                       interval=0.3)
        except AssertionError as exc:
            self.__exit__()
            raise AssertionError(f"{exc}\n{self.log()}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.timeline.__exit__()
        self.box.exec(["systemctl", "stop", "watchdogd-outage"], check=False)
        self.box.exec(["systemctl", "reset-failed", "watchdogd-outage"], check=False)

    def ctl(self, *args: str) -> Any:
        return self.box.exec([f"{VENV_BIN}/watchdogctl", "--socket", SOCKET, *args], check=False, timeout=30)

    def status(self) -> dict[str, Any]:
        done = self.ctl("status", "--json")
        return dict(json.loads(done.stdout))  # exit 1 while something fires: still a document

    def history(self, rule: str | None = None) -> list[dict[str, Any]]:
        args = ["history", "--json", "--limit", "1000"] + (["--rule", rule] if rule else [])
        done = self.ctl(*args)
        assert done.returncode == 0, done.stdout + done.stderr
        doc = json.loads(done.stdout)
        return list(reversed(doc["entries"] if isinstance(doc, dict) else doc))

    def log(self) -> str:
        return str(self.box.exec(["journalctl", "-u", "watchdogd-outage", "-o", "cat"], check=False).stdout)


def prop(box: Any, unit: str, name: str) -> str:
    return str(box.exec(["systemctl", "show", f"--property={name}", "--value", unit]).stdout.strip())


class AppUnit:
    """``app.service`` as a test sees it: killed like a crash, "answers" only with a new main process."""

    def __init__(self, box: Any) -> None:
        self.box = box
        self.killed: set[str] = set()

    def show(self) -> dict[str, str]:
        out = self.box.exec(["systemctl", "show", "--property=MainPID", "--property=ActiveState", "app.service"])
        return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)

    def kill(self) -> str:
        """SIGKILL the main process from inside (a crash, not ``systemctl stop``); the unit turns failed.

        Returns once systemd has noticed (the main PID is no longer the killed one): a watchdogd
        running every second may have restarted it already, so "failed" can be too short to see.
        """
        pid = self.show().get("MainPID", "0")
        assert int(pid) > 0, "app.service is not running"
        self.killed.add(pid)
        self.box.exec(["kill", "-KILL", pid])
        wait_until(lambda: self.show().get("MainPID") != pid, 20, "systemd to notice app.service died")
        return pid

    def answers(self) -> bool:
        """Active, with a main process that is not one we killed."""
        state = self.show()
        return state.get("ActiveState") == "active" and state.get("MainPID", "0") not in ("0", *self.killed)


def install_app(box: Any) -> None:
    """(Re)install ``app.service`` and start it; a leftover failed state from an earlier test is reset."""
    box.write_file("/etc/systemd/system/app.service", textwrap.dedent(APP_UNIT))
    box.exec(["systemctl", "daemon-reload"])
    box.exec(["systemctl", "reset-failed", "app.service"], check=False)
    box.exec(["systemctl", "restart", "app.service"])


def remove_app(box: Any) -> None:
    box.exec(["systemctl", "stop", "app.service"], check=False)
    box.exec(["rm", "-rf", STATE_DIR], check=False)


def write(box: Any, path: str, body: str) -> str:
    """A config in the container (mode 0600) whose state and socket are this module's; ``body`` is dedented."""
    header = f"state_dir: {STATE_DIR}\ncontrol_socket: {SOCKET}\nlisten: null\ngrace: 0s\n"
    box.write_file(path, header + textwrap.dedent(body), mode=0o600)
    return path
