"""A real Prometheus Alertmanager of the test's own: its port, its config, its storage, killed at teardown.

``running_alertmanager(tmp_path)`` starts ``prometheus-alertmanager``
(Debian's name; ``alertmanager`` elsewhere) on a free loopback port with
clustering off, a config whose one receiver sends nowhere (nothing leaves
the machine), and ``--storage.path`` under ``tmp_path``; it waits for
``/-/ready`` with a deadline and stops the process at the end, also when the
test fails. It never touches the machine's own Alertmanager service, and a
missing binary fails the test (``apt-get install prometheus-alertmanager``,
which ``scripts/test`` does): a transport test that skips proves nothing.

What Alertmanager holds is read back through its API v2: ``alerts()``
(``GET /api/v2/alerts``) and ``find(**labels)``. That API lists only alerts
whose ``endsAt`` is still ahead, whatever the ``active``/``silenced``/
``inhibited``/``unprocessed`` filters say: a resolved alert shows as gone
from every listing (``gone(**labels)``), and in the ``/metrics`` counters
(``metric()``: ``alertmanager_alerts_received_total{status="resolved"}``).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bcrypt

from tests.helpers import free_port

BINARIES = ("prometheus-alertmanager", "alertmanager")
READY_TIMEOUT = 15.0
CONFIG = """\
route:
  receiver: nowhere
  group_wait: 1h
receivers:
  - name: nowhere
"""
"""One receiver with no integrations: alerts are stored and grouped, and sent nowhere."""


def binary() -> str:
    for name in BINARIES:
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError("prometheus-alertmanager is missing: apt-get install prometheus-alertmanager "
                         "(as scripts/test does)")


class Alertmanager:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path, auth: tuple[str, str] | None) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self._auth = auth

    def output(self) -> str:
        """The tail of Alertmanager's own log, for failure messages."""
        return self.log.read_text(errors="replace")[-4000:]

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path)
        if self._auth is not None:
            token = base64.b64encode(f"{self._auth[0]}:{self._auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            return 0, b""

    def alerts(self, *, filters: Mapping[str, str] | None = None, **flags: bool) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts``: ``filters`` are label equality matchers; ``flags`` are the API's
        ``active``, ``silenced``, ``inhibited``, ``unprocessed`` (each true by default)."""
        query: list[tuple[str, str]] = [(key, "true" if value else "false") for key, value in flags.items()]
        query += [("filter", f"{key}={json.dumps(value)}") for key, value in (filters or {}).items()]
        path = "/api/v2/alerts" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        status, body = self.get(path)
        assert status == 200, f"GET {path}: {status} {body[:300]!r}\n{self.output()}"
        alerts: list[dict[str, Any]] = json.loads(body)
        return alerts

    def find(self, **labels: str) -> list[dict[str, Any]]:
        """Alerts (any state) whose labels include these."""
        return [a for a in self.alerts(filters=labels) if all(a["labels"].get(k) == v for k, v in labels.items())]

    def gone(self, **labels: str) -> bool:
        """True when no listing shows such an alert: resolved (endsAt passed) or never there."""
        everything = {"active": True, "silenced": True, "inhibited": True, "unprocessed": True}
        return not [a for a in self.alerts(filters=labels, **everything)
                    if all(a["labels"].get(k) == v for k, v in labels.items())]

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample from ``/metrics`` (exact label match on the given labels), None when absent."""
        status, body = self.get("/metrics")
        assert status == 200, f"GET /metrics: {status}\n{self.output()}"
        for line in body.decode().splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            series, _, value = line.rpartition(" ")
            metric, _, rest = series.partition("{")
            if metric != name:
                continue
            found = dict(_labels(rest.rstrip("}")))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(value)
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _labels(text: str) -> Iterator[tuple[str, str]]:
    for part in text.split(","):
        if "=" in part:
            key, _, value = part.partition("=")
            yield key.strip(), value.strip().strip('"')


@contextmanager
def running_alertmanager(tmp_path: Path, *, users: Mapping[str, str] | None = None) -> Iterator[Alertmanager]:
    """Start Alertmanager under ``tmp_path``; ``users`` (name -> password) turns on basic auth.

    The port is free a moment before Alertmanager binds it: if another
    process takes it in between, Alertmanager exits and the start is retried
    on another port (three times at most).
    """
    path = binary()
    root = tmp_path / "alertmanager"
    root.mkdir(parents=True, exist_ok=True)
    config = root / "am.yml"
    config.write_text(CONFIG)
    extra: list[str] = []
    auth: tuple[str, str] | None = None
    if users:
        web = root / "web.yml"
        hashed = {name: bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
                  for name, password in users.items()}
        web.write_text(json.dumps({"basic_auth_users": hashed}))
        extra.append(f"--web.config.file={web}")
        auth = next(iter(users.items()))
    am: Alertmanager | None = None
    try:
        for attempt in range(3):
            port = free_port()
            log = root / f"alertmanager-{attempt}.log"
            with log.open("wb") as handle:
                proc = subprocess.Popen(
                    [
                        path,
                        f"--config.file={config}",
                        f"--storage.path={root / 'data'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                        "--cluster.listen-address=",
                        *extra,
                    ],
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                )
            am = Alertmanager(proc, port, log, auth)
            if _wait_ready(am):
                break
            am.stop()
            if "address already in use" not in am.output():
                raise AssertionError(f"Alertmanager did not get ready in {READY_TIMEOUT:g}s:\n{am.output()}")
        else:
            raise AssertionError(f"Alertmanager found no free port in three tries:\n{am.output() if am else ''}")
        yield am
    finally:
        if am is not None:
            am.stop()


def _wait_ready(am: Alertmanager) -> bool:
    """Poll ``/-/ready`` until it answers 200, the process exits, or the deadline passes."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if am.proc.poll() is not None:
            return False
        if am.get("/-/ready", timeout=1.0)[0] == 200:
            return True
        time.sleep(0.05)
    return False
