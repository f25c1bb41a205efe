"""A real etcd cluster on loopback, for the fleet coordinator's tests and benchmarks.

Used by pytest fixtures and by benchmarks run outside pytest, so it imports
nothing from pytest and only the stdlib: a plain context manager
(``running_etcd_cluster``) around an ``EtcdCluster`` whose members can be
killed (SIGKILL), restarted on their data dir, frozen (SIGSTOP: a hung or
partitioned member, which keeps its sockets open) and thawed.

Every member listens on 127.0.0.1 only, on ports the OS handed out, with a
unique cluster token, so parallel sessions never join each other's cluster.
Elections are fast (heartbeat 100 ms, election timeout 1 s) so a test that
freezes the leader sees a new one in about a second. Auto-compaction stays
off: the storm test replays the whole history to check the coordinator's
record. A member that does not come up fails with the tail of its log.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ETCD = Path("/usr/bin/etcd")
HOST = "127.0.0.1"
START_TIMEOUT = 20.0
PROBE_TIMEOUT = 1.0
PORT_ATTEMPTS = 3
TIMING_FLAGS = ("--heartbeat-interval", "100", "--election-timeout", "1000")


class EtcdClusterError(RuntimeError):
    """The cluster could not be started or did not become healthy; the message says why, with log tails."""


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.name}.log"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"{self.name}: (no log)"
        return f"{self.name}: " + "\n  ".join(text.splitlines()[-lines:])


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports the OS considers free now (all bound at once, so no duplicates)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def post_json(url: str, body: dict[str, object], timeout: float = PROBE_TIMEOUT) -> dict[str, object]:
    """POST JSON to etcd's gateway and parse the answer (raises OSError/ValueError on failure)."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer = json.loads(response.read(1 << 20))
    if not isinstance(answer, dict):
        raise ValueError(f"unexpected answer from {url}: {answer!r}")
    return answer


class EtcdCluster:
    """``size`` etcd members under ``base_dir``; see the module docstring. Not started until ``start_all``."""

    def __init__(self, base_dir: Path, size: int = 3) -> None:
        if not ETCD.exists():
            raise EtcdClusterError(f"{ETCD} not found: install the Debian package etcd-server")
        if size < 1:
            raise ValueError("size must be at least 1")
        self.base_dir = base_dir
        self.token = f"watchdogd-test-{uuid.uuid4().hex[:12]}"
        self.members: list[Member] = []
        self._size = size
        self._stopped: set[int] = set()
        self._started: set[int] = set()  # members whose data dir holds a cluster (restart with state "existing")

    # --- addresses ---------------------------------------------------------------------------------------------
    @property
    def endpoints(self) -> list[str]:
        return [member.client_url for member in self.members]

    def _initial_cluster(self) -> str:
        return ",".join(f"{member.name}={member.peer_url}" for member in self.members)

    def _allocate(self) -> None:
        ports = free_ports(2 * self._size)
        self.members = [
            Member(f"m{i}", ports[2 * i], ports[2 * i + 1], self.base_dir / f"m{i}.data") for i in range(self._size)
        ]

    def argv(self, i: int) -> list[str]:
        member = self.members[i]
        state = "existing" if i in self._started else "new"
        return [
            str(ETCD),
            "--name", member.name,
            "--data-dir", str(member.data_dir),
            "--listen-client-urls", member.client_url,
            "--advertise-client-urls", member.client_url,
            "--listen-peer-urls", member.peer_url,
            "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", self._initial_cluster(),
            "--initial-cluster-token", self.token,
            "--initial-cluster-state", state,
            *TIMING_FLAGS,
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]  # fmt: skip

    # --- lifecycle ---------------------------------------------------------------------------------------------
    def start_all(self, timeout: float = START_TIMEOUT) -> None:
        """Start every member and wait for a healthy cluster, choosing new ports if one was taken meanwhile."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(PORT_ATTEMPTS):
            self._allocate()
            for i in range(self._size):
                self.start(i)
            try:
                self.wait_healthy(timeout)
                return
            except EtcdClusterError:
                if attempt + 1 == PORT_ATTEMPTS or not self._port_collision():
                    raise
                self.close()
                self.token = f"watchdogd-test-{uuid.uuid4().hex[:12]}"

    def _port_collision(self) -> bool:
        return any("address already in use" in member.log_tail(50) for member in self.members)

    def start(self, i: int) -> None:
        """(Re)start member ``i`` on its data dir; returns at once (``wait_healthy`` waits)."""
        member = self.members[i]
        if member.alive:
            raise EtcdClusterError(f"{member.name} is already running (pid {member.proc.pid if member.proc else 0})")
        member.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with member.log_path.open("ab") as log:
            log.write(f"--- starting {member.name} at {time.time():.3f}\n".encode())
            log.flush()
            member.proc = subprocess.Popen(
                self.argv(i), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        self._started.add(i)
        self._stopped.discard(i)

    def kill(self, i: int) -> None:
        """SIGKILL member ``i`` and reap it: a crash, no goodbye to its peers."""
        member = self.members[i]
        if member.proc is not None:
            if member.proc.poll() is None:
                member.proc.kill()
            member.proc.wait(timeout=10)
        member.proc = None
        self._stopped.discard(i)

    def stop(self, i: int) -> None:
        """SIGSTOP member ``i``: it keeps its sockets, accepts connections and answers nothing."""
        member = self.members[i]
        if member.proc is None or not member.alive:
            raise EtcdClusterError(f"{member.name} is not running")
        os.kill(member.proc.pid, signal.SIGSTOP)
        self._stopped.add(i)

    def cont(self, i: int) -> None:
        member = self.members[i]
        if member.proc is not None and member.alive:
            os.kill(member.proc.pid, signal.SIGCONT)
        self._stopped.discard(i)

    def running(self) -> list[int]:
        """Indexes of members that are alive and not frozen."""
        return [i for i, member in enumerate(self.members) if member.alive and i not in self._stopped]

    def restore(self, timeout: float = START_TIMEOUT) -> None:
        """Thaw frozen members, restart dead ones, and wait until the whole cluster is healthy again."""
        for i in sorted(self._stopped):
            self.cont(i)
        for i, member in enumerate(self.members):
            if not member.alive:
                self.kill(i)  # reap a member that died by itself
                self.start(i)
        self.wait_healthy(timeout)

    def close(self) -> None:
        """Kill every member (frozen ones too) and remove the data dirs; the logs stay in ``base_dir``."""
        for i in range(len(self.members)):
            with contextlib.suppress(Exception):
                self.kill(i)
        for member in self.members:
            shutil.rmtree(member.data_dir, ignore_errors=True)
        self._started.clear()
        self._stopped.clear()

    # --- health ------------------------------------------------------------------------------------------------
    def status(self, i: int, timeout: float = PROBE_TIMEOUT) -> dict[str, object]:
        return post_json(f"{self.members[i].client_url}/v3/maintenance/status", {}, timeout)

    def leader(self) -> int | None:
        """Index of the member the running members agree leads (None: no agreement or no answer)."""
        leaders: set[str] = set()
        ids: dict[str, int] = {}
        for i in self.running():
            try:
                answer = self.status(i)
            except (OSError, ValueError):
                return None
            header = answer.get("header")
            if isinstance(header, dict):
                ids[str(header.get("member_id"))] = i
            leaders.add(str(answer.get("leader")))
        if len(leaders) != 1:
            return None
        return ids.get(leaders.pop())

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """Until ``timeout``: a running leader all running members agree on, and a linearizable read works."""
        deadline = time.monotonic() + timeout
        problem = "no answer yet"
        while time.monotonic() < deadline:
            dead = [self.members[i].name for i, m in enumerate(self.members) if m.proc is not None and not m.alive]
            if dead:
                raise EtcdClusterError(f"etcd member(s) {', '.join(dead)} exited:\n{self.log_tails()}")
            problem = self._health_problem()
            if problem is None:
                return
            time.sleep(0.05)
        raise EtcdClusterError(f"etcd cluster not healthy after {timeout:.0f}s ({problem}):\n{self.log_tails()}")

    def _health_problem(self) -> str | None:
        running = self.running()
        if not running:
            return "no member running"
        leader = self.leader()
        if leader is None:
            return "no agreed leader"
        try:
            post_json(f"{self.members[leader].client_url}/v3/kv/range", {"key": "AA=="})
        except (OSError, ValueError) as exc:
            return f"read through the leader failed: {exc}"
        return None

    def log_tails(self, lines: int = 15) -> str:
        return "\n".join(member.log_tail(lines) for member in self.members)


@contextlib.contextmanager
def running_etcd_cluster(base_dir: Path, size: int = 3) -> Iterator[EtcdCluster]:
    """A started, healthy cluster of ``size`` members under ``base_dir``; killed and its data removed on exit."""
    cluster = EtcdCluster(base_dir, size)
    try:
        cluster.start_all()
        yield cluster
    finally:
        cluster.close()


def _leader_probe(base_dir: Path) -> None:  # pragma: no cover - manual check: python -m tests.support.etcd_cluster
    with running_etcd_cluster(base_dir) as cluster:
        print("endpoints", cluster.endpoints, "leader", cluster.leader())


if __name__ == "__main__":  # pragma: no cover
    import tempfile

    with tempfile.TemporaryDirectory(prefix="etcd-cluster-") as tmp:
        _leader_probe(Path(tmp))
