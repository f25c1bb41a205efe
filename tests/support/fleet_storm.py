"""A fleet storm: many simulated hosts race for one group's slots on a real coordinator while it is hurt.

Issue 16, Must 4. Each simulated host is a thread running the real budget
code path of one host: its own ``Coordinator`` (its own lease, its own
keeper), a rule whose subject keeps firing, an action that lasts a moment.
A few worker processes run them (``python -m tests.support.fleet_storm
worker ...``) so the hosts' requests really interleave; the parent process
watches the coordinator's own record (``view()`` every 50 ms, from a
separate coordinator that never acquires), hurts the coordinator (kills,
SIGSTOPs, restarts) on a schedule, and then judges the run from what was
*recorded*, not from what a host believed:

1. at no moment more than ``max_hosts`` hosts acting (sweep over the act
   intervals each host recorded with ``time.monotonic()``, which is
   CLOCK_MONOTONIC on Linux, one clock for every process of the machine);
2. per slot, in fencing-token order, a holder starts acting only after
   every earlier token's holder stopped; no token granted twice; tokens the
   observer saw on a slot never go back;
3. no slot outlives its holder by more than the lease TTL (the observer's
   last sighting of each token against when its holder released, lost or
   "crashed");
4. acquire latency, and no attempt overrunning its deadline;
5. the same figures per fault phase; plus the run window (``max_runs`` per
   ``per``) when the group has one.

A host's "act" is a series of instants: before each one it asks
``holding(grant)`` (no I/O), so it never acts on a slot that may be gone.
The act interval recorded is [first instant, last instant], both taken
*before* the ``holding`` call that returned True.

A crashed host must stop its keep-alives and send nothing more (``close()``
would revoke the lease: a clean exit, not a crash): see ``crash``.

No pytest here: the CI test (tests/integration/fleet/test_storm.py) and the
benchmark (bench/bench_fleet.py) both drive it.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import math
import os
import random
import resource
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Protocol

from watchdogd.fleet.coordinator import Coordinator, CoordinatorError, Denial, Grant, GroupLimits

REPO = Path(__file__).resolve().parents[2]
OUTCOMES = ("granted", "full", "rate", "unavailable", "error")
PROBE_HOST = "probe"


# ==================================================================================================================
# What a storm is
# ==================================================================================================================
@dataclass(frozen=True)
class HostProfile:
    """How one simulated host behaves (seconds). The defaults are the issue's: a rule every 5 s +-20 %."""

    first_offset: float = 5.0
    """Hosts start firing at a random moment in [0, first_offset] after the storm starts."""
    acquire_timeout: float = 2.0
    interval: float = 5.0
    jitter: float = 0.2
    act_min: float = 0.1
    act_max: float = 1.0
    long_share: float = 0.0
    """Share of acts that last ``long_min``-``long_max`` instead: long enough that a fault can take the lease
    from under them, so ``holding`` turning false mid-action (a "lost" run) is exercised too."""
    long_min: float = 3.0
    long_max: float = 8.0
    check_every: float = 0.02
    cooldown_min: float = 1.0
    cooldown_max: float = 10.0
    crash_share: float = 0.02
    """Share of grants whose host dies mid-action: keeper stopped, nothing released, nothing sent."""
    restart_min: float = 2.0
    restart_max: float = 6.0
    release_timeout: float = 2.0


PROBE_PROFILE = HostProfile(
    first_offset=1.0, interval=0.2, act_min=0.05, act_max=0.1, cooldown_min=0.2, cooldown_max=0.3, crash_share=0.0
)


@dataclass(frozen=True)
class StormSpec:
    """Everything a worker needs (written as JSON for it)."""

    kind: str
    """``etcd`` or ``redis``."""
    target: tuple[str, ...]
    """etcd endpoints, or the one Redis URL."""
    hosts: int
    duration: float
    processes: int = 4
    group: str = "app-restarts"
    max_hosts: int = 2
    max_runs: int | None = None
    per: float = 600.0
    lease_ttl: float = 3.0
    timeout: float = 1.0
    """The coordinator's per-call timeout (config ``fleet.coordinator.timeout``; under lease_ttl / 2)."""
    prefix: str = ""
    seed: int = 1
    profile: HostProfile = field(default_factory=HostProfile)
    host_offset: int = 0
    """First host number (``sim-<n>``); lets two storms on one coordinator use distinct names."""
    probe: bool = False
    """One more host, ``probe``, alone in its own process and firing every ~0.2 s: the latency a real host (one
    daemon, one process) sees in the storm, without the GIL of hundreds of simulated neighbours."""

    def worker_of(self, host: str) -> int:
        """Which worker process runs ``host`` (the probe has the last one to itself)."""
        if host == PROBE_HOST:
            return self.processes
        return (int(host.removeprefix("sim-")) - self.host_offset) % self.processes

    @property
    def workers(self) -> int:
        return self.processes + self.probe

    @property
    def limits(self) -> GroupLimits:
        return GroupLimits(self.group, self.max_hosts, self.max_runs, self.per)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> StormSpec:
        raw = json.loads(text)
        raw["target"] = tuple(raw["target"])
        raw["profile"] = HostProfile(**raw["profile"])
        return cls(**raw)


def fresh_prefix(kind: str) -> str:
    """A key prefix nobody else uses, so storms never see each other's (or a test's) keys."""
    tag = uuid.uuid4().hex[:10]
    return {"etcd": f"/storm-{tag}/", "redis": f"storm:{tag}:"}[kind]


# ==================================================================================================================
# Coordinators: how to build one, and how a host dies without a word
# ==================================================================================================================
def _etcd(spec: StormSpec, host: str) -> Coordinator:
    from watchdogd.fleet.etcd import EtcdCoordinator  # noqa: PLC0415  (a Redis storm needs no etcd3gw)

    return EtcdCoordinator(list(spec.target), host, prefix=spec.prefix, lease_ttl=spec.lease_ttl, timeout=spec.timeout)


def _redis(spec: StormSpec, host: str) -> Coordinator:
    from watchdogd.fleet.redis import RedisCoordinator  # noqa: PLC0415  (lazy, as above)

    return RedisCoordinator(spec.target[0], host, prefix=spec.prefix, lease_ttl=spec.lease_ttl, timeout=spec.timeout)


FACTORIES: dict[str, Callable[[StormSpec, str], Coordinator]] = {"etcd": _etcd, "redis": _redis}


def make_coordinator(spec: StormSpec, host: str) -> Coordinator:
    return FACTORIES[spec.kind](spec, host)


def crash(coordinator: Coordinator) -> None:
    """Make ``coordinator`` fall silent as a dead host would: keep-alives stop, nothing is released or revoked.

    ``close()`` revokes the lease, which a dead host never does. Both
    coordinators keep their ``LeaseKeeper`` as ``_keeper``; ``halt()`` stops
    the refresh thread (joining any refresh in flight), sends nothing and
    leaves what the host believes as it was (a dead host's belief runs out on
    its own; the checks need the last valid moment it would have had). The
    coordinator object is then dropped without ``close()``; its sockets die
    with the garbage collector, which tells neither etcd nor Redis anything.
    """
    keeper = getattr(coordinator, "_keeper", None)
    if keeper is None:
        raise RuntimeError(f"{type(coordinator).__name__} has no _keeper: the storm cannot simulate a crash")
    keeper.halt()


# ==================================================================================================================
# Worker side: simulated hosts writing JSON lines
# ==================================================================================================================
class EventLog:
    """JSON lines shared by a worker's host threads (one lock; lines are small and rare)."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._file: IO[str] = path.open("w", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"))
        with self._lock:
            self._file.write(line + "\n")

    def close(self) -> None:
        with self._lock:
            self._file.close()


class SimHost:
    """One host: fire, acquire, act while ``holding``, release, cool down; now and then die mid-action."""

    def __init__(
        self,
        number: int,
        spec: StormSpec,
        log: EventLog,
        abort: threading.Event,
        start_at: float,
        stop_at: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.number = number
        self.name = PROBE_HOST if number < 0 else f"sim-{number}"
        self.rule = f"rule-{number % 5}"
        self.spec = spec
        self.profile = PROBE_PROFILE if number < 0 else spec.profile
        self.limits = spec.limits
        self.log = log
        self.abort = abort
        self.start_at = start_at
        self.stop_at = stop_at
        self.now = monotonic
        self.rng = random.Random(spec.seed * 1_000_003 + number)
        self.coordinators: list[Coordinator] = []

    # --- the life ------------------------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._life()
        except Exception as exc:  # a coordinator must not raise: record it as the finding it is
            self.log.write({"k": "error", "host": self.name, "t": self.now(), "where": "host",
                            "error": f"{type(exc).__name__}: {exc}"})

    def _life(self) -> None:
        coordinator = self._new_coordinator()
        self._pause_until(self.start_at + self.rng.uniform(0.0, self.profile.first_offset))
        while not self._over():
            answer = self._attempt(coordinator)
            if not isinstance(answer, Grant):
                self._pause(self.profile.interval * self.rng.uniform(1 - self.profile.jitter, 1 + self.profile.jitter))
                continue
            if self._act(coordinator, answer) == "crashed":
                self._pause(self.rng.uniform(self.profile.restart_min, self.profile.restart_max))
                coordinator = self._new_coordinator()
                self.log.write({"k": "restart", "host": self.name, "t": self.now()})
                continue
            self._pause(self.rng.uniform(self.profile.cooldown_min, self.profile.cooldown_max))
        coordinator.close()

    def _new_coordinator(self) -> Coordinator:
        coordinator = make_coordinator(self.spec, self.name)
        self.coordinators.append(coordinator)
        return coordinator

    def _over(self) -> bool:
        return self.abort.is_set() or self.now() >= self.stop_at

    def _pause(self, seconds: float) -> None:
        """The simulated host's idle time (a rule interval, a cooldown), cut short by the storm's end."""
        self.abort.wait(max(0.0, min(seconds, self.stop_at - self.now())))

    def _pause_until(self, moment: float) -> None:
        self._pause(moment - self.now())

    # --- one attempt ----------------------------------------------------------------------------------------------
    def _attempt(self, coordinator: Coordinator) -> Grant | Denial | None:
        t0 = self.now()
        deadline = t0 + self.profile.acquire_timeout
        try:
            answer: Grant | Denial | None = coordinator.acquire(self.limits, self.rule, deadline)
            outcome = "granted" if isinstance(answer, Grant) else answer.reason
            detail = "" if isinstance(answer, Grant) else answer.detail[:300]
        except Exception as exc:  # the protocol says never: record it and count it as a failure
            answer, outcome, detail = None, "error", f"{type(exc).__name__}: {exc}"[:300]
        t1 = self.now()
        record = {"k": "attempt", "host": self.name, "t0": t0, "t1": t1, "deadline": deadline, "outcome": outcome}
        if outcome in ("unavailable", "error"):
            record["detail"] = detail
        self.log.write(record)
        return answer

    # --- one grant: act, then release, lose or crash ------------------------------------------------------------
    def _act(self, coordinator: Coordinator, grant: Grant) -> str:
        granted_at = self.now()
        planned = self.rng.uniform(self.profile.act_min, self.profile.act_max)
        if self.rng.random() < self.profile.long_share:
            planned = self.rng.uniform(self.profile.long_min, self.profile.long_max)
        crash_after = planned * self.rng.random() if self.rng.random() < self.profile.crash_share else None
        first: float | None = None
        last: float | None = None
        checks = 0
        while True:
            instant = self.now()
            if not self._holding(coordinator, grant):
                ending = "lost"
                break
            checks += 1
            first = instant if first is None else first
            last = instant
            if crash_after is not None and instant - granted_at >= crash_after:
                ending = "crashed"
                break
            if instant - granted_at >= planned or self.abort.is_set():
                ending = "released"
                break
            self.abort.wait(self.profile.check_every)
        lost_at = self.now() if ending == "lost" else None
        record = {"k": "grant", "host": self.name, "token": grant.token, "slot": grant.slot, "granted_at": granted_at,
                  "act_start": first, "act_end": last, "checks": checks, "end": ending, "lost_at": lost_at}
        if ending == "crashed":
            crash(coordinator)
            record["end_at"] = self.now()
        else:
            record["release_t0"] = self.now()
            self._release(coordinator, grant)
            record["release_t1"] = record["end_at"] = self.now()
        self.log.write(record)
        return ending

    def _holding(self, coordinator: Coordinator, grant: Grant) -> bool:
        try:
            return coordinator.holding(grant)
        except Exception as exc:
            self.log.write({"k": "error", "host": self.name, "t": self.now(), "where": "holding",
                            "error": f"{type(exc).__name__}: {exc}"})
            return False

    def _release(self, coordinator: Coordinator, grant: Grant) -> None:
        try:
            coordinator.release(grant, self.now() + self.profile.release_timeout)
        except Exception as exc:
            self.log.write({"k": "error", "host": self.name, "t": self.now(), "where": "release",
                            "error": f"{type(exc).__name__}: {exc}"})


def _tick(log: EventLog, index: int, abort: threading.Event, stop_at: float, every: float = 0.05) -> None:
    """How late this process's threads get the CPU: a late tick is the GIL or the machine, not the coordinator,
    and the report puts each overrun next to it."""
    while not abort.is_set() and time.monotonic() < stop_at + 5.0:
        before = time.monotonic()
        abort.wait(every)
        late = time.monotonic() - before - every
        if late > 0.02:
            log.write({"k": "lag", "worker": index, "t": before, "late": late})


def _watch_stdin(abort: threading.Event) -> None:
    """The parent closes our stdin (or dies): stop at once."""
    for line in sys.stdin:
        if line.strip() == "abort":
            break
    abort.set()


def worker_main(spec_path: Path, index: int, out_path: Path) -> int:
    """Run hosts ``index``, ``index + processes``, ... of the storm; "ready", then wait for "go START STOP"."""
    spec = StormSpec.from_json(spec_path.read_text(encoding="utf-8"))
    numbers = [-1] if index == spec.processes else range(spec.host_offset + index, spec.host_offset + spec.hosts,
                                                              spec.processes)
    print("ready", flush=True)
    words = sys.stdin.readline().split()
    if len(words) != 3 or words[0] != "go":
        return 2
    start_at, stop_at = float(words[1]), float(words[2])
    abort = threading.Event()
    threading.Thread(target=_watch_stdin, args=(abort,), daemon=True).start()
    log = EventLog(out_path)
    hosts = [SimHost(n, spec, log, abort, start_at, stop_at) for n in numbers]
    threads = [threading.Thread(target=host.run, name=host.name, daemon=True) for host in hosts]
    threading.Thread(target=_tick, args=(log, index, abort, stop_at), daemon=True).start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1.0, stop_at - time.monotonic() + 60.0))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    log.write({"k": "stats", "worker": index, "alive": sum(thread.is_alive() for thread in threads),
               "cpu_ms": round((usage.ru_utime + usage.ru_stime) * 1000),
               **_stats_of(c for host in hosts for c in host.coordinators)})
    log.close()
    print("done", flush=True)
    return 0


def _stats_of(coordinators: Iterable[Coordinator]) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for coordinator in coordinators:
        stats = coordinator.stats
        totals.update(requests=stats.requests, errors=stats.errors, failovers=stats.failovers,
                      leases_lost=stats.leases_lost, coordinators=1)
    return dict(totals)


# ==================================================================================================================
# Parent side: the observer (the coordinator's own record)
# ==================================================================================================================
@dataclass
class Sighting:
    """One token as the observer saw it: when first and last (monotonic, when the view was *sent*)."""

    token: int
    slot: int
    host: str
    first: float
    last: float
    polls: int = 1


@dataclass
class ObserverRecord:
    sightings: dict[int, Sighting] = field(default_factory=dict)
    polls: int = 0
    failed: int = 0
    max_holders: int = 0
    over_limit: list[str] = field(default_factory=list)
    token_regressions: list[str] = field(default_factory=list)
    longest_blind: float = 0.0
    """Longest stretch without a successful view (the observer was blind then)."""
    last_holders: int = -1


class Observer:
    """Polls ``view()`` every ``every`` seconds from its own coordinator (host "observer"), which never acquires."""

    def __init__(self, coordinator: Coordinator, limits: GroupLimits, *, every: float = 0.05,
                 timeout: float = 1.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.coordinator = coordinator
        self.limits = limits
        self.every = every
        self.timeout = timeout
        self.now = monotonic
        self.record = ObserverRecord()
        self._stop = threading.Event()
        self._slot_tokens: dict[int, int] = {}
        self._last_ok = monotonic()
        self._thread = threading.Thread(target=self._run, name="storm-observer", daemon=True)

    def start(self) -> None:
        self._last_ok = self.now()
        self._thread.start()

    def stop(self) -> ObserverRecord:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 5.0)
        self.coordinator.close()
        return self.record

    def empty_since(self) -> bool:
        return self.record.last_holders == 0

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = self.now()
            try:
                view = self.coordinator.view(self.limits, sent + self.timeout)
            except CoordinatorError:
                self.record.failed += 1
                self.record.longest_blind = max(self.record.longest_blind, self.now() - self._last_ok)
            else:
                self._note(sent, view.holders)
            self._stop.wait(max(0.0, sent + self.every - self.now()))

    def _note(self, sent: float, holders: Sequence[Any]) -> None:
        record = self.record
        record.polls += 1
        record.longest_blind = max(record.longest_blind, sent - self._last_ok)
        self._last_ok = sent
        record.last_holders = len(holders)
        record.max_holders = max(record.max_holders, len(holders))
        if len(holders) > self.limits.max_hosts:
            record.over_limit.append(f"{len(holders)} holders at {sent:.3f}: {[h.token for h in holders]}")
        for holder in holders:
            seen = record.sightings.get(holder.token)
            if seen is None:
                record.sightings[holder.token] = Sighting(holder.token, holder.slot, holder.host, sent, sent)
            else:
                seen.last, seen.polls = sent, seen.polls + 1
            before = self._slot_tokens.get(holder.slot)
            if before is not None and holder.token < before:
                record.token_regressions.append(f"slot {holder.slot}: token {before} then {holder.token} at {sent:.3f}")
            self._slot_tokens[holder.slot] = max(holder.token, before or 0)


# ==================================================================================================================
# Parent side: faults
# ==================================================================================================================
class Cluster(Protocol):
    """What the fault injector needs of tests/support/etcd_cluster.py's EtcdCluster."""

    def kill(self, i: int) -> None: ...
    def start(self, i: int) -> None: ...
    def stop(self, i: int) -> None: ...
    def cont(self, i: int) -> None: ...
    def leader(self) -> int | None: ...
    def wait_healthy(self, timeout: float = 20) -> None: ...
    def running(self) -> list[int]: ...
    def status(self, i: int, timeout: float = 1.0) -> dict[str, Any]: ...


class Server(Protocol):
    """What the fault injector needs of tests/integration/redis/server.py's RedisServer."""

    def stop(self) -> None: ...
    def start(self, timeout: float = 10.0) -> None: ...


@dataclass(frozen=True)
class Fault:
    kind: str
    at: float
    """Seconds after the storm started."""
    duration: float


@dataclass
class Phase:
    """A fault as it happened (monotonic): begun at ``start``, undone at ``end``, healthy again at ``recovered``."""

    name: str
    start: float
    end: float | None = None
    recovered: float | None = None
    members: tuple[int, ...] = ()
    error: str | None = None


Undo = Callable[[], None]


def _leader(cluster: Cluster, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        leader = cluster.leader()
        if leader is not None:
            return leader
        if time.monotonic() > deadline:
            raise RuntimeError("the etcd cluster has no leader")
        time.sleep(0.1)  # polling an external process with a deadline


def _followers(cluster: Cluster) -> list[int]:
    leader = _leader(cluster)
    return [i for i in range(len(cluster.members)) if i != leader]  # type: ignore[attr-defined]


def _follower_kill(cluster: Cluster) -> tuple[tuple[int, ...], Undo]:
    victim = _followers(cluster)[0]
    cluster.kill(victim)
    return (victim,), lambda: cluster.start(victim)


def _leader_kill(cluster: Cluster) -> tuple[tuple[int, ...], Undo]:
    victim = _leader(cluster)
    cluster.kill(victim)
    return (victim,), lambda: cluster.start(victim)


def _leader_stop(cluster: Cluster) -> tuple[tuple[int, ...], Undo]:
    victim = _leader(cluster)
    cluster.stop(victim)
    return (victim,), lambda: cluster.cont(victim)


def _no_quorum(cluster: Cluster) -> tuple[tuple[int, ...], Undo]:
    victims = tuple(_followers(cluster)[:2])
    for victim in victims:
        cluster.kill(victim)

    def undo() -> None:
        for victim in victims:
            cluster.start(victim)

    return victims, undo


def _server_restart(server: Server) -> tuple[tuple[int, ...], Undo]:
    server.stop()
    return (), server.start


def _server_freeze(server: Server) -> tuple[tuple[int, ...], Undo]:
    """SIGSTOP the server: connections stay open and nothing answers (a hung or partitioned Redis)."""
    pid = server.proc.pid  # type: ignore[attr-defined]
    os.kill(pid, signal.SIGSTOP)
    return (), lambda: os.kill(pid, signal.SIGCONT)


FAULTS: dict[str, Callable[[Any], tuple[tuple[int, ...], Undo]]] = {
    "follower-kill": _follower_kill,
    "leader-kill": _leader_kill,
    "leader-stop": _leader_stop,
    "no-quorum": _no_quorum,
    "server-restart": _server_restart,
    "server-freeze": _server_freeze,
}
ETCD_FAULTS = ("follower-kill", "leader-kill", "leader-stop")
ETCD_LONG_FAULTS = (*ETCD_FAULTS, "no-quorum")
REDIS_FAULTS = ("server-restart", "server-freeze")
REDIS_DURABLE = ("--appendonly", "yes", "--appendfsync", "always")
"""redis-server flags for a coordinator that survives its own restart: without them a restart forgets every
slot and the token counter, and the storm would (rightly) count two holders and reused tokens."""


def spread(kinds: Sequence[str], duration: float, down: float = 5.0) -> list[Fault]:
    """Faults evenly over the storm, each centred in its share, so every fault has quiet time before and after."""
    share = duration / (len(kinds) + 1)
    return [Fault(kind, share * (i + 1) - down / 2, down) for i, kind in enumerate(kinds)]


class FaultInjector:
    """Runs the faults on schedule against ``target`` (an EtcdCluster or a RedisServer) and records the phases."""

    def __init__(self, target: Any, faults: Sequence[Fault], start_at: float, *,
                 healthy: Callable[[], None] | None = None, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.target = target
        self.faults = sorted(faults, key=lambda f: f.at)
        self.start_at = start_at
        self.healthy = healthy or (lambda: None)
        self.now = monotonic
        self.phases: list[Phase] = []
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._run, name="storm-faults", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._abort.set()
        self._thread.join(timeout)

    def _wait_until(self, moment: float) -> bool:
        return not self._abort.wait(max(0.0, moment - self.now()))

    def _run(self) -> None:
        for fault in self.faults:
            if not self._wait_until(self.start_at + fault.at):
                return
            phase = Phase(fault.kind, self.now())
            self.phases.append(phase)
            try:
                phase.members, undo = FAULTS[fault.kind](self.target)
                self._abort.wait(max(0.0, phase.start + fault.duration - self.now()))
                undo()
                phase.end = self.now()
                self.healthy()
                phase.recovered = self.now()
            except Exception as exc:  # recorded and reported: a storm whose fault did not happen proves less
                phase.error = f"{type(exc).__name__}: {exc}"
                phase.end = phase.end or self.now()


@dataclass(frozen=True)
class Election:
    """A new raft term with a leader, first seen at ``seen``; the term before it was last seen at ``before``."""

    term: int
    before: float
    seen: float


class TermWatch:
    """Notes every election of the etcd cluster (a raft term that grows), including a leader re-elected.

    Why: etcd's new leader renews *every* lease to a full TTL plus an election
    timeout when it takes over (lessor Promote), and nobody revokes leases while
    there is no leader. A slot whose holder died shortly before or during an
    election rightly outlives it by more than a TTL; the leak check allows for
    exactly that and no more.
    """

    def __init__(self, cluster: Cluster, every: float = 0.2, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.cluster = cluster
        self.every = every
        self.now = monotonic
        self.elections: list[Election] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="storm-terms", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> list[Election]:
        self._stop.set()
        self._thread.join(timeout=10.0)
        return self.elections

    def _run(self) -> None:
        term, seen_at = 0, self.now()
        while not self._stop.is_set():
            polled = self.now()
            current = self._term()
            if current is not None and current > term:
                if term:
                    self.elections.append(Election(current, seen_at, self.now()))
                term = current
            if current is not None and current >= term:
                seen_at = polled
            self._stop.wait(self.every)

    def _term(self) -> int | None:
        """The highest raft term among running members that know a leader (None: no leader known)."""
        terms: list[int] = []
        for i in self.cluster.running():
            with contextlib.suppress(Exception):
                answer = self.cluster.status(i, timeout=0.5)
                if int(str(answer.get("leader", 0))):
                    terms.append(int(str(answer.get("raft_term") or answer["header"]["raft_term"])))
        return max(terms) if terms else None


# ==================================================================================================================
# Parent side: running a storm
# ==================================================================================================================
@dataclass
class StormRun:
    """What a storm left behind, before judging."""

    spec: StormSpec
    start_at: float
    stop_at: float
    attempts: list[dict[str, Any]]
    grants: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    restarts: int
    stats: dict[str, int]
    observer: ObserverRecord
    phases: list[Phase]
    elections: list[Election]
    election_timeout: float
    workdir: Path
    stuck_workers: int = 0
    lags: list[dict[str, Any]] = field(default_factory=list)
    """Late ticks of the workers' scheduling probe (``_tick``): when a worker process was starved."""


class Workers:
    """The worker processes: started, made ready, told to go, awaited, killed if they hang."""

    def __init__(self, spec: StormSpec, workdir: Path) -> None:
        self.spec = spec
        self.workdir = workdir
        self.procs: list[subprocess.Popen[str]] = []
        self.outputs = [workdir / f"events-{i}.jsonl" for i in range(spec.workers)]

    def launch(self, timeout: float = 60.0) -> None:
        spec_path = self.workdir / "spec.json"
        spec_path.write_text(self.spec.to_json(), encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        for i, out in enumerate(self.outputs):
            argv = [sys.executable, "-m", "tests.support.fleet_storm", "worker", str(spec_path), str(i), str(out)]
            stderr = (self.workdir / f"worker-{i}.err").open("w")
            self.procs.append(subprocess.Popen(argv, cwd=REPO, env=env, text=True, stdin=subprocess.PIPE,
                                               stdout=subprocess.PIPE, stderr=stderr))
            stderr.close()
        deadline = time.monotonic() + timeout
        for i, proc in enumerate(self.procs):
            self._expect(i, proc, "ready", deadline)

    def go(self, start_at: float, stop_at: float) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(f"go {start_at!r} {stop_at!r}\n")
            proc.stdin.flush()

    def wait(self, deadline: float) -> int:
        """Wait for every worker to say "done" and exit; kill the ones still running at ``deadline``."""
        stuck = 0
        for i, proc in enumerate(self.procs):
            try:
                self._expect(i, proc, "done", deadline)
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except (RuntimeError, subprocess.TimeoutExpired):
                stuck += 1
                proc.kill()
                proc.wait()
        return stuck

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def _expect(self, i: int, proc: subprocess.Popen[str], word: str, deadline: float) -> None:
        assert proc.stdout is not None
        line = _readline(proc.stdout, deadline - time.monotonic())
        if line is None or line.strip() != word:
            tail = (self.workdir / f"worker-{i}.err").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"storm worker {i} did not say {word!r} (got {line!r}, exit {proc.poll()}): {tail}")


def _readline(stream: IO[str], timeout: float) -> str | None:
    """A line from a pipe within ``timeout`` seconds (a worker that hangs must not hang the storm)."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(max(0.0, timeout))
    return box[0] if box else None


def run_storm(
    spec: StormSpec,
    workdir: Path,
    *,
    faults: Sequence[Fault] = (),
    target: Any = None,
    healthy: Callable[[], None] | None = None,
    cluster: Cluster | None = None,
    election_timeout: float = 1.0,
    observe_every: float = 0.05,
) -> StormRun:
    """Run one storm and collect its records.

    ``target`` is what the faults act on (the EtcdCluster, or the RedisServer);
    ``healthy`` blocks until the coordinator serves again after a fault;
    ``cluster`` (etcd) is watched for elections (``TermWatch``); ``election_timeout`` is its setting.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    if not spec.prefix:
        spec = replace(spec, prefix=fresh_prefix(spec.kind))
    workers = Workers(spec, workdir)
    observer = Observer(make_coordinator(spec, "observer"), spec.limits, every=observe_every)
    watch = TermWatch(cluster) if cluster is not None else None
    try:
        workers.launch()
        observer.start()
        if watch is not None:
            watch.start()
        start_at = time.monotonic() + 0.5
        stop_at = start_at + spec.duration
        injector = FaultInjector(target, faults, start_at, healthy=healthy)
        workers.go(start_at, stop_at)
        injector.start()
        profile = spec.profile
        stuck = workers.wait(stop_at + profile.act_max + profile.release_timeout + spec.timeout + 30.0)
        injector.join(timeout=60.0)
        _linger(observer, spec.lease_ttl + 2.0)
    finally:
        workers.kill()
        record = observer.stop()
        elections = watch.stop() if watch is not None else []
    return _collect(spec, workdir, workers.outputs, start_at, stop_at, record, injector.phases, elections,
                    election_timeout, stuck)


def _linger(observer: Observer, longest: float) -> None:
    """Keep watching after the hosts stopped until no slot is left (or a TTL and a bit passed): the leak check
    needs each slot's true last sighting, and a crashed host's slot lives up to a TTL after the storm."""
    deadline = time.monotonic() + longest
    while time.monotonic() < deadline and not observer.empty_since():
        time.sleep(observer.every)


def _collect(spec: StormSpec, workdir: Path, outputs: Sequence[Path], start_at: float, stop_at: float,
             record: ObserverRecord, phases: list[Phase], elections: list[Election], election_timeout: float,
             stuck: int, *, save: bool = True) -> StormRun:
    kinds: dict[str, list[dict[str, Any]]] = {k: [] for k in ("attempt", "grant", "error", "restart", "stats", "lag")}
    for path in outputs:
        for line in _lines(path):
            event = json.loads(line)
            kinds[event["k"]].append(event)
    stats: Counter[str] = Counter()
    for worker in kinds["stats"]:
        stats.update({k: v for k, v in worker.items() if k not in ("k", "worker")})
    run = StormRun(spec, start_at, stop_at, kinds["attempt"], kinds["grant"], kinds["error"], len(kinds["restart"]),
                   dict(stats), record, phases, elections, election_timeout, workdir, stuck, kinds["lag"])
    if save:
        _save(run)
    return run


def _save(run: StormRun) -> None:
    """What the parent saw, next to the workers' events, for a post-mortem of a failed storm."""
    summary = {
        "start_at": run.start_at, "stop_at": run.stop_at, "phases": [asdict(p) for p in run.phases],
        "elections": [asdict(e) for e in run.elections], "election_timeout": run.election_timeout,
        "stuck": run.stuck_workers, "observer": asdict(run.observer),
    }
    (run.workdir / "run.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")


def load_run(workdir: Path) -> StormRun:
    """A storm again from its directory (``spec.json``, the workers' events, ``run.json``): judge it anew.

    ``python -m tests.support.fleet_storm report DIR`` prints its report.
    """
    spec = StormSpec.from_json((workdir / "spec.json").read_text(encoding="utf-8"))
    summary = json.loads((workdir / "run.json").read_text(encoding="utf-8"))
    observer = ObserverRecord(**{**summary["observer"], "sightings": {
        int(token): Sighting(**seen) for token, seen in summary["observer"]["sightings"].items()}})
    phases = [Phase(**{**p, "members": tuple(p["members"])}) for p in summary["phases"]]
    outputs = [workdir / f"events-{i}.jsonl" for i in range(spec.workers)]
    elections = [Election(**e) for e in summary["elections"]]
    return _collect(spec, workdir, outputs, summary["start_at"], summary["stop_at"], observer, phases, elections,
                    summary["election_timeout"], summary["stuck"], save=False)


def _lines(path: Path) -> Iterator[str]:
    if path.exists():
        with path.open(encoding="utf-8") as handle:
            yield from (line for line in handle if line.strip())


# ==================================================================================================================
# Judging a storm
# ==================================================================================================================
def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (``share`` in 0..1); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


@dataclass(frozen=True)
class Concurrency:
    max_acting: int
    moments_over: int
    """Separate stretches of time with more than max_hosts hosts acting."""
    seconds_over: float


def concurrency(grants: Sequence[dict[str, Any]], limit: int) -> Concurrency:
    """Sweep line over the act intervals: an interval's end sorts before a start at the same instant."""
    edges = sorted([(g["act_start"], 1) for g in _acted(grants)] + [(g["act_end"], -1) for g in _acted(grants)],
                   key=lambda e: (e[0], e[1]))
    acting = peak = moments = 0
    over_since: float | None = None
    seconds = 0.0
    for moment, step in edges:
        acting += step
        peak = max(peak, acting)
        if acting > limit and over_since is None:
            over_since, moments = moment, moments + 1
        elif acting <= limit and over_since is not None:
            seconds += moment - over_since
            over_since = None
    return Concurrency(peak, moments, seconds)


def _acted(grants: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [g for g in grants if g["act_start"] is not None]


@dataclass(frozen=True)
class SlotOrder:
    violations: tuple[str, ...]
    duplicate_tokens: tuple[int, ...]
    slots: int


def slot_order(grants: Sequence[dict[str, Any]]) -> SlotOrder:
    """Per slot, in token order, each holder acts only after every earlier token's holder stopped acting."""
    counts = Counter(g["token"] for g in grants)
    duplicates = tuple(sorted(t for t, n in counts.items() if n > 1))
    by_slot: dict[int, list[dict[str, Any]]] = {}
    for grant in _acted(grants):
        by_slot.setdefault(grant["slot"], []).append(grant)
    violations: list[str] = []
    for slot, held in sorted(by_slot.items()):
        held.sort(key=lambda g: g["token"])
        latest: dict[str, Any] | None = None
        for grant in held:
            if latest is not None and grant["act_start"] < latest["act_end"]:
                violations.append(
                    f"slot {slot}: token {grant['token']} ({grant['host']}) acted from {grant['act_start']:.3f}, "
                    f"before token {latest['token']} ({latest['host']}, {latest['end']}) stopped at "
                    f"{latest['act_end']:.3f}"
                )
            if latest is None or grant["act_end"] > latest["act_end"]:
                latest = grant
    return SlotOrder(tuple(violations), duplicates, len(by_slot))


@dataclass(frozen=True)
class Leaks:
    ttl: float
    lag: float
    """The server's own expiry granularity, allowed on top of the TTL (``EXPIRY_LAG``)."""
    checked: int
    excess_max: float
    """max(last sighting - holder's end - TTL) over grants, after etcd's renewal at a leader election."""
    leaked_slot_seconds: float
    leaked: tuple[str, ...]
    """Grants whose slot outlived its holder by more than TTL + slack (after the election rule)."""
    raw_excess_max: float
    """The same without the election rule (what a naive reading of "TTL" would expect)."""
    extended: int
    """Grants whose allowance an election or a thaw moved past the holder's end."""
    released_late: int
    """Released slots still seen more than 0.1 s after their release returned (release failed: a fault)."""
    release_vanish_p99: float
    left_at_end: int


EXPIRY_LAG = {"etcd": 0.5, "redis": 0.0}
"""How late a server may forget an expired key, by design: etcd's leader looks for expired leases every 500 ms
(lease/lessor.go, runLoop) and then revokes them through a raft commit; Redis hides an expired key at once."""


def leaks(run: StormRun, slack: float) -> Leaks:
    """Each grant's slot, as the observer last saw it, against when its holder stopped touching it.

    The holder's end: when ``release`` returned (released, or lost: the
    keeper may refresh until the release unholds it), or when the keeper was
    stopped (crashed). After that the server forgets the slot within the TTL,
    except in two cases the server has every right to, which this allows for:

    - etcd renews every lease to a full TTL (plus an election timeout) when a
      new leader is elected, and nobody revokes while there is no leader;
    - a frozen (SIGSTOPped) server keeps the requests that reached its socket
      before the client gave up on them: a keep-alive sent into it while the
      holder still held is applied at the thaw, so the TTL may count from then.
    """
    lag = EXPIRY_LAG.get(run.spec.kind, 0.0)
    ttl = run.spec.lease_ttl + lag
    excess: list[float] = []
    raw: list[float] = []
    leaked: list[str] = []
    extended = released_late = 0
    vanish: list[float] = []
    spans = leaderless(run)
    for grant in run.grants:
        seen = run.observer.sightings.get(grant["token"])
        if seen is None:
            continue
        end = grant["end_at"]
        allowed = _allowed_end(_thawed(grant, run.phases), ttl, spans, run.election_timeout)
        extended += allowed > end
        raw.append(seen.last - end - ttl)
        excess.append(seen.last - allowed - ttl)
        if excess[-1] > slack:
            leaked.append(f"token {grant['token']} ({grant['host']}, {grant['end']} at {end:.3f}): seen until "
                          f"{seen.last:.3f}, {excess[-1]:.2f} s beyond TTL")
        if grant["end"] == "released":
            vanish.append(seen.last - end)
            released_late += seen.last - end > 0.1
    return Leaks(
        run.spec.lease_ttl, lag, len(excess), max(excess, default=0.0), sum(max(0.0, e) for e in excess), tuple(leaked),
        max(raw, default=0.0), extended, released_late, percentile(vanish, 0.99) if vanish else 0.0,
        max(0, run.observer.last_holders),
    )


LEADER_FAULTS = frozenset({"leader-kill", "leader-stop", "no-quorum"})
FREEZE_FAULTS = frozenset({"leader-stop", "server-freeze"})


def _thawed(grant: dict[str, Any], phases: Sequence[Phase]) -> float:
    """The holder's end, or the thaw of a freeze during which it may have sent a keep-alive or a release."""
    end: float = grant["end_at"]
    for phase in phases:
        overlaps = phase.end is not None and grant["granted_at"] <= phase.end and grant["end_at"] >= phase.start
        if phase.name in FREEZE_FAULTS and overlaps:
            end = max(end, phase.recovered or phase.end or end)
    return end


def leaderless(run: StormRun) -> list[tuple[float, float]]:
    """Stretches [leader lost, new leader elected]: from the term watch, and from the faults that removed the
    leader (the watch sees a loss only at its next poll; the injector knows when it struck)."""
    spans = [(e.before, e.seen) for e in run.elections]
    for phase in run.phases:
        if phase.name in LEADER_FAULTS:
            after = [e.seen for e in run.elections if e.seen >= phase.start]
            spans.append((phase.start, min(after) if after else (phase.recovered or phase.start)))
    return sorted(spans)


def _allowed_end(end: float, ttl: float, spans: Sequence[tuple[float, float]], extend: float) -> float:
    """When the server may count the TTL from: the holder's end, or the end of an election the lease was alive
    for (etcd's new leader renews every lease to now + ``extend`` + TTL; nobody revokes while leaderless)."""
    allowed = end
    for lost, elected in spans:
        if lost <= allowed + ttl and elected + extend > allowed:
            allowed = elected + extend
    return allowed


@dataclass(frozen=True)
class Latency:
    attempts: int
    outcomes: dict[str, int]
    p50: float
    p99: float
    max: float
    granted_p50: float
    granted_p99: float
    granted_max: float
    overruns: tuple[str, ...]
    """Attempts past deadline + slack that the process's own starvation does not explain: the coordinator's."""
    starved: tuple[str, ...]
    """Attempts past deadline + slack while their worker process was starved at least that long (the GIL of
    hundreds of simulated hosts, or a saturated machine): no code can keep a deadline while not scheduled."""


def latency(run: StormRun, slack: float, *, probe: bool = False) -> Latency:
    """Latency of the simulated hosts' attempts (``probe``: of the probe host's only)."""
    attempts = [a for a in run.attempts if (a["host"] == PROBE_HOST) == probe]
    every = [a["t1"] - a["t0"] for a in attempts]
    granted = [a["t1"] - a["t0"] for a in attempts if a["outcome"] == "granted"]
    overruns: list[str] = []
    starved: list[str] = []
    for a in attempts:
        late = a["t1"] - a["deadline"]
        if late > slack:
            lag = _starved(run, a)
            (overruns if late - lag > slack else starved).append(
                f"{a['host']} {a['outcome']}: {a['t1'] - a['t0']:.3f} s, {late:.3f} s past its deadline "
                f"(its process was starved {lag:.2f} s meanwhile){_detail(a)}"
            )
    return Latency(
        len(every), dict(Counter(a["outcome"] for a in attempts)), percentile(every, 0.5), percentile(every, 0.99),
        max(every, default=math.nan), percentile(granted, 0.5), percentile(granted, 0.99),
        max(granted, default=math.nan), tuple(overruns), tuple(starved),
    )


def _starved(run: StormRun, attempt: dict[str, Any]) -> float:
    """Seconds the attempt's worker process was late to schedule its threads while the attempt ran: an overrun
    no longer than that is the machine's (GIL, CPU), not the coordinator's."""
    worker = run.spec.worker_of(attempt["host"])
    return sum(lag["late"] for lag in run.lags
               if lag["worker"] == worker and attempt["t0"] <= lag["t"] < attempt["t1"])


def _detail(attempt: dict[str, Any]) -> str:
    return f": {attempt['detail']}" if attempt.get("detail") else ""


@dataclass(frozen=True)
class Window:
    max_runs: int
    per: float
    tightest: float
    """The shortest span that holds max_runs + 1 grants for sure (must be >= per)."""
    violations: int


def run_window(grants: Sequence[dict[str, Any]], attempts: Sequence[dict[str, Any]], max_runs: int,
               per: float, tolerance: float = 0.05) -> Window:
    """No ``max_runs + 1`` grants taken within less than ``per``: each was taken within its attempt's [t0, t1]."""
    spans = sorted((a["t0"], a["t1"]) for a in attempts if a["outcome"] == "granted")
    spans.sort(key=lambda s: s[1])
    tightest = math.inf
    violations = 0
    for i in range(len(spans) - max_runs):
        group = spans[i:i + max_runs + 1]
        span = group[-1][1] - min(s[0] for s in group)
        tightest = min(tightest, span)
        violations += span < per - tolerance
    return Window(max_runs, per, tightest, violations)


@dataclass(frozen=True)
class PhaseRow:
    name: str
    start: float
    end: float
    attempts: int
    outcomes: dict[str, int]
    lost: int
    crashed: int
    first_grant_after_start: float | None
    first_grant_after_end: float | None
    recovered_after: float | None
    error: str | None = None


def phase_rows(run: StormRun) -> list[PhaseRow]:
    """Baseline, then each fault (start -> undone) and the calm after it (undone -> next fault or the end)."""
    grants_at = sorted(a["t1"] for a in run.attempts if a["outcome"] == "granted")
    rows: list[PhaseRow] = []
    bounds = [p.start for p in run.phases] + [run.stop_at]
    rows.append(_row(run, "baseline", run.start_at, bounds[0], grants_at, None))
    for phase, following in zip(run.phases, bounds[1:], strict=True):
        end = phase.end if phase.end is not None else following
        rows.append(_row(run, phase.name, phase.start, end, grants_at, phase))
        rows.append(_row(run, f"after {phase.name}", end, following, grants_at, None))
    return rows


def _row(
    run: StormRun, name: str, start: float, end: float, grants_at: Sequence[float], phase: Phase | None
) -> PhaseRow:
    inside = [a for a in run.attempts if start <= a["t0"] < end]
    ended = [g for g in run.grants if g["end_at"] is not None and start <= g["end_at"] < end]
    return PhaseRow(
        name, start - run.start_at, end - run.start_at, len(inside), dict(Counter(a["outcome"] for a in inside)),
        sum(g["end"] == "lost" for g in ended), sum(g["end"] == "crashed" for g in ended),
        _first_after(grants_at, start), _first_after(grants_at, end) if phase is not None else None,
        (phase.recovered - phase.end) if phase and phase.recovered and phase.end else None,
        phase.error if phase else None,
    )


def _first_after(moments: Sequence[float], start: float) -> float | None:
    i = bisect.bisect_left(moments, start)
    return moments[i] - start if i < len(moments) else None


@dataclass(frozen=True)
class StormReport:
    spec: StormSpec
    grants: int
    endings: dict[str, int]
    restarts: int
    errors: tuple[str, ...]
    stuck_workers: int
    stats: dict[str, int]
    concurrency: Concurrency
    slot_order: SlotOrder
    leaks: Leaks
    latency: Latency
    probe: Latency | None
    """The probe host's (alone in its process): what one real host sees during the storm."""
    window: Window | None
    phases: list[PhaseRow]
    observer: ObserverRecord


def analyse(run: StormRun, *, leak_slack: float = 0.5, overrun_slack: float = 0.5) -> StormReport:
    spec = run.spec
    window = (run_window(run.grants, run.attempts, spec.max_runs, spec.per) if spec.max_runs else None)
    return StormReport(
        spec, len(run.grants), dict(Counter(g["end"] for g in run.grants)), run.restarts,
        tuple(f"{e['host']} {e['where']}: {e['error']}" for e in run.errors), run.stuck_workers, run.stats,
        concurrency(run.grants, spec.max_hosts), slot_order(run.grants), leaks(run, leak_slack),
        latency(run, overrun_slack), latency(run, overrun_slack, probe=True) if spec.probe else None, window,
        phase_rows(run), run.observer,
    )


def failures(report: StormReport) -> list[str]:
    """Every broken promise, one line each (empty: the storm passed checks 1-4 and the run window)."""
    found: list[str] = []
    limit = report.spec.max_hosts
    if report.concurrency.max_acting > limit:
        found.append(f"1. {report.concurrency.max_acting} hosts acting at once (limit {limit}), "
                     f"{report.concurrency.moments_over} times, {report.concurrency.seconds_over:.3f} s in all")
    found += [f"2. {v}" for v in report.slot_order.violations[:10]]
    if report.slot_order.duplicate_tokens:
        found.append(f"2. tokens granted twice: {list(report.slot_order.duplicate_tokens[:10])}")
    found += [f"2. observer: {r}" for r in report.observer.token_regressions[:10]]
    found += [f"1. observer: {o}" for o in report.observer.over_limit[:10]]
    found += [f"3. {leak}" for leak in report.leaks.leaked[:10]]
    if report.leaks.left_at_end:
        found.append(f"3. {report.leaks.left_at_end} slots still held after the storm and a TTL")
    found += [f"4. {o}" for o in report.latency.overruns[:10]]
    if report.probe is not None:
        found += [f"4. {o}" for o in report.probe.overruns[:10]]
    found += [f"4. raised: {e}" for e in report.errors[:10]]
    if report.window is not None and report.window.violations:
        found.append(f"window: {report.window.violations} spans with {report.window.max_runs + 1} grants in "
                     f"{report.window.tightest:.2f} s < per {report.window.per:.0f} s")
    if report.stuck_workers:
        found.append(f"{report.stuck_workers} worker processes hung and were killed")
    if report.grants == 0:
        found.append("no grant at all: the storm proved nothing")
    return found


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None or math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f} s"


def format_report(report: StormReport) -> str:
    """The storm as a human reads it: settings, the four checks, the per-phase table."""
    spec, lat, leak, conc = report.spec, report.latency, report.leaks, report.concurrency
    window = "" if spec.max_runs is None else f", max_runs={spec.max_runs}/{spec.per:g}s"
    lines = [
        f"storm: {spec.kind}, {spec.hosts} hosts in {spec.processes} processes, {spec.duration:g} s, "
        f"group {spec.group} max_hosts={spec.max_hosts}{window}, lease TTL {spec.lease_ttl:g} s",
        f"grants: {report.grants} ({', '.join(f'{k} {v}' for k, v in sorted(report.endings.items()))}), "
        f"host restarts {report.restarts}, coordinator stats {report.stats}",
        f"1. max acting at once: {conc.max_acting} (limit {spec.max_hosts}); over the limit: {conc.moments_over} "
        f"times, {conc.seconds_over:.3f} s; observer: max {report.observer.max_holders} holders in "
        f"{report.observer.polls} views ({report.observer.failed} failed, blind at most "
        f"{report.observer.longest_blind:.2f} s)",
        f"2. slot order: {len(report.slot_order.violations)} violations over {report.slot_order.slots} slots, "
        f"{len(report.slot_order.duplicate_tokens)} duplicate tokens, "
        f"{len(report.observer.token_regressions)} token regressions seen",
        f"3. leaks: {leak.checked} slots seen; beyond TTL {leak.ttl:g} s + expiry lag {leak.lag:g} s: "
        f"max {leak.excess_max:+.2f} s "
        f"(raw, from the holder's end only: {leak.raw_excess_max:+.2f} s; {leak.extended} renewed "
        f"by an election or a thaw), leaked slot-seconds {leak.leaked_slot_seconds:.2f}, {len(leak.leaked)} leaks; "
        f"released slots gone p99 {_ms(leak.release_vanish_p99)} after release, {leak.released_late} seen "
        f"> 0.1 s later; {leak.left_at_end} left at the end",
        f"4. acquire: {lat.attempts} attempts {lat.outcomes}; all p50 {_ms(lat.p50)} p99 {_ms(lat.p99)} "
        f"max {_ms(lat.max)}; granted p50 {_ms(lat.granted_p50)} p99 {_ms(lat.granted_p99)} "
        f"max {_ms(lat.granted_max)}; {len(lat.overruns)} past deadline + 0.5 s (and {len(lat.starved)} more "
        f"while their process was starved as long); {len(report.errors)} raised",
    ]
    if report.probe is not None:
        probe = report.probe
        lines.append(f"4. probe host (own process, fires every ~0.2 s): {probe.attempts} attempts {probe.outcomes}; "
                     f"all p50 {_ms(probe.p50)} p99 {_ms(probe.p99)} max {_ms(probe.max)}; granted p50 "
                     f"{_ms(probe.granted_p50)} p99 {_ms(probe.granted_p99)}; {len(probe.overruns)} past deadline")
    if report.window is not None:
        lines.append(f"window: tightest {report.window.max_runs + 1} grants within {report.window.tightest:.2f} s "
                     f"(per {report.window.per:g} s): {report.window.violations} violations")
    lines.append(format_phases(report.phases))
    return "\n".join(lines)


def format_phases(rows: Sequence[PhaseRow]) -> str:
    head = ("| phase | from-to (s) | attempts | granted | full | rate | unavail. | lost | crashed "
            "| 1st grant after start | after end | healthy after |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        out = row.outcomes
        lines.append(
            f"| {row.name} | {row.start:.1f}-{row.end:.1f} | {row.attempts} | {out.get('granted', 0)} | "
            f"{out.get('full', 0)} | {out.get('rate', 0)} | {out.get('unavailable', 0)} | {row.lost} | "
            f"{row.crashed} | {_s(row.first_grant_after_start)} | {_s(row.first_grant_after_end)} | "
            f"{_s(row.recovered_after)}{' ERROR ' + row.error if row.error else ''} |"
        )
    return "\n".join(lines)


# ==================================================================================================================
# Entry point (workers)
# ==================================================================================================================
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.fleet_storm")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run a share of a storm's hosts (started by run_storm)")
    worker.add_argument("spec", type=Path)
    worker.add_argument("index", type=int)
    worker.add_argument("out", type=Path)
    report = sub.add_parser("report", help="judge a kept storm directory again and print its report")
    report.add_argument("workdir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "report":
        judged = analyse(load_run(args.workdir))
        print(format_report(judged))
        print("\n".join(failures(judged)) or "checks: PASS")
        return 1 if failures(judged) else 0
    with contextlib.suppress(KeyboardInterrupt):
        return worker_main(args.spec, args.index, args.out)
    return 130


if __name__ == "__main__":
    sys.exit(main())
