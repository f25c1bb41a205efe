"""The shared /proc scan: reuse within max_age, one scan for concurrent callers, lazy facts, a fake /proc."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from watchdogd.families.process import procfs
from watchdogd.families.process import table as table_module
from watchdogd.families.process.probes import PROBES
from watchdogd.families.process.select import ProcessSelection, ProcessSelector
from watchdogd.families.process.table import SETTLE_SECONDS, ProcessTable, Snapshot

HZ = procfs.CLOCK_TICKS
UPTIME = 10_000.0  # seconds since boot on the fake host
BTIME = 1_700_000_000


@dataclass
class FakeProc:
    """A /proc tree on disk, the files procfs reads and nothing more."""

    root: Path
    uptime: float = UPTIME
    pids: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        (self.root / "stat").write_text(f"cpu  1 2 3 4\nbtime {BTIME}\n")
        self.set_uptime(self.uptime)

    def set_uptime(self, seconds: float) -> None:
        self.uptime = seconds
        (self.root / "uptime").write_text(f"{seconds:.2f} 1.00\n")

    def add(
        self,
        pid: int,
        comm: str,
        argv: list[str] | None = None,
        *,
        uid: int = 1000,
        state: str = "S",
        flags: int = 0,
        ticks: int = 0,
        age: float = 3600.0,
        rss_pages: int = 100,
    ) -> None:
        directory = self.root / str(pid)
        directory.mkdir(exist_ok=True)
        start = int((self.uptime - age) * HZ)
        after = [state, "1", str(pid), str(pid), "0", "-1", str(flags), "0", "0", "0", "0",
                 str(ticks), "0", "0", "0", "20", "0", "1", "0", str(start), "1000", str(rss_pages)]
        (directory / "stat").write_text(f"{pid} ({comm}) {' '.join(after)} 0 0\n")
        (directory / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in argv or []))
        (directory / "status").write_text(f"Name:\t{comm}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
        self.pids.add(pid)

    def remove(self, pid: int) -> None:
        for name in ("stat", "cmdline", "status"):
            (self.root / str(pid) / name).unlink()
        (self.root / str(pid)).rmdir()
        self.pids.discard(pid)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake(tmp_path: Path) -> FakeProc:
    proc = FakeProc(tmp_path)
    proc.add(2, "kthreadd", flags=procfs.PF_KTHREAD)
    proc.add(10, "nginx", ["nginx: master process /usr/sbin/nginx"], uid=0)
    proc.add(11, "nginx", ["nginx: worker process"], uid=33)
    proc.add(12, "nginx", ["nginx: worker process"], uid=33, state="Z")
    proc.add(20, "very-long-daemo", ["/usr/sbin/very-long-daemon-name", "--foreground"], uid=0)
    proc.add(21, "very-long-daemo", ["/opt/other", "x"], uid=0)
    proc.add(30, "python3", ["python3", "-m", "app", "--port", "8000"], uid=1000)
    proc.add(31, "python3", ["python3", "-m", "app", "--port", "8001"], uid=1001)
    proc.add(40, "bash", ["-bash"], uid=1000)
    return proc


def selected(selection: ProcessSelection) -> list[int]:
    procs, _ = selection.select()
    return sorted(p.pid for p in procs)


# --------------------------------------------------------------------------- the shared scan


def test_snapshot_is_reused_within_max_age_and_refreshed_after(fake: FakeProc) -> None:
    clock = FakeClock()
    table = ProcessTable(str(fake.root), max_age=1.0, monotonic=clock)
    first = table.scan()
    assert first.taken == 100.0 and first.uptime == UPTIME and first.boot_time == BTIME
    assert sorted(stat.pid for stat, _ in first.processes) == [10, 11, 20, 21, 30, 31, 40]  # no kthread, zombie
    fake.add(50, "late", ["late"])
    clock.now = 100.99
    assert table.scan() is first and table.scans == 1
    clock.now = 101.0
    second = table.scan()
    assert second is not first and table.scans == 2
    assert 50 in {stat.pid for stat, _ in second.processes}


def test_concurrent_callers_wait_for_one_scan(fake: FakeProc) -> None:
    """Callers that find the snapshot stale while another scans take its result instead of scanning again."""
    callers = 4
    entered, release, all_checked = threading.Event(), threading.Event(), threading.Event()
    checked: list[str] = []
    lock = threading.Lock()

    def clock() -> float:
        if threading.current_thread().name.startswith("waiter"):
            with lock:
                checked.append(threading.current_thread().name)
                if len(checked) == callers:
                    all_checked.set()  # every waiter found the snapshot stale: each will go for the lock
        return now[0]

    now = [100.0]

    class Blocking(ProcessTable):
        def _scan(self) -> Snapshot:
            if self.scans:  # the first scan (setup) runs freely
                entered.set()
                assert release.wait(10)
            return super()._scan()

    table = Blocking(str(fake.root), max_age=1.0, monotonic=clock)
    table.scan()
    now[0] = 105.0  # stale
    results: dict[str, Snapshot] = {}

    def call(name: str) -> None:
        results[name] = table.scan()

    scanner = threading.Thread(target=call, args=("scanner",), name="scanner")
    scanner.start()
    assert entered.wait(10)
    waiters = [threading.Thread(target=call, args=(f"w{i}",), name=f"waiter-{i}") for i in range(callers)]
    for thread in waiters:
        thread.start()
    assert all_checked.wait(10)
    release.set()
    for thread in [scanner, *waiters]:
        thread.join(10)
    assert table.scans == 2  # the setup scan and one more, not one per caller
    assert len({id(snapshot) for snapshot in results.values()}) == 1 and len(results) == callers + 1


def test_facts_are_read_lazily_and_once(fake: FakeProc, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    real = procfs.read_cmdline

    def counting(pid: int, proc: str = procfs.PROC) -> tuple[str, ...]:
        reads.append(pid)
        return real(pid, proc)

    monkeypatch.setattr(procfs, "read_cmdline", counting)
    table = ProcessTable(str(fake.root), max_age=0.0)
    by_name = ProcessSelection(ProcessSelector(name="nginx"), table)
    assert selected(by_name) == [10, 11]
    # The nginx processes (selected: their details need the command line) and the truncated names only.
    assert sorted(reads) == [10, 11, 20, 21]
    by_cmdline = ProcessSelection(ProcessSelector(cmdline="--port"), table)
    assert selected(by_cmdline) == [30, 31]
    assert selected(by_name) == [10, 11]
    assert sorted(reads) == [10, 11, 20, 21, 30, 31, 40]  # once each, shared by both rules


def test_young_processes_and_execs_are_read_again(fake: FakeProc) -> None:
    table = ProcessTable(str(fake.root), max_age=0.0)
    fake.add(60, "python3", ["python3", "worker.py"], age=SETTLE_SECONDS / 2)
    selection = ProcessSelection(ProcessSelector(cmdline="svc-title"), table)
    assert selected(selection) == []
    fake.add(60, "python3", ["svc-title: worker"], age=SETTLE_SECONDS / 2)  # setproctitle while young
    assert selected(selection) == [60]
    fake.add(30, "app", ["svc-title: app"])  # an exec: new kernel name, new argv
    assert selected(selection) == [30, 60]
    fake.add(30, "app", ["python3", "changed-later"])  # settled: the argv read at the last change is kept
    assert selected(selection) == [30, 60]


def test_selection_on_a_fake_proc(fake: FakeProc) -> None:
    """What each criterion selects; kernel threads and zombies never, exited processes forgotten."""
    table = ProcessTable(str(fake.root), max_age=0.0)
    cases: list[tuple[dict[str, Any], list[int]]] = [
        ({"name": "nginx"}, [10, 11]),
        ({"name": "very-long-daemon-name"}, [20]),
        ({"name": "very-long-daemo"}, [20, 21]),
        ({"name": ["nginx", "bash"], "user": 0}, [10]),
        ({"name": "nginx", "exclude_users": [0]}, [11]),
        ({"cmdline": "^python3 -m app"}, [30, 31]),
        ({"cmdline": "app", "exclude_cmdline": "8001$"}, [30]),
        ({"user": [1000]}, [30, 40]),
        ({"all": True}, [10, 11, 20, 21, 30, 31, 40]),
        ({"name": "kthreadd"}, []),
    ]
    for params, pids in cases:
        assert selected(ProcessSelection(ProcessSelector.model_validate(params), table)) == pids, params
    everyone = ProcessSelection(ProcessSelector(all=True), table)
    procs, at = everyone.select()
    worker = next(p for p in procs if p.pid == 20)
    assert (worker.name, worker.user, worker.uid) == ("very-long-daemon-name", "root", 0)
    assert worker.cmdline == "/usr/sbin/very-long-daemon-name --foreground"
    assert worker.details(at.boot_time)["create_time"] == pytest.approx(BTIME + UPTIME - 3600.0, abs=0.02)
    fake.remove(30)
    assert 30 not in selected(everyone)


def test_pidfile_selection_reads_one_pid_without_a_scan(fake: FakeProc, tmp_path: Path) -> None:
    table = ProcessTable(str(fake.root), max_age=0.0)
    pidfile = tmp_path / "app.pid"
    pidfile.write_text("30\n")
    written = BTIME + UPTIME - 3600.0 + 1  # a second after the process started
    os.utime(pidfile, (written, written))
    selection = ProcessSelection(ProcessSelector(pidfile=str(pidfile)), table)
    procs, at = selection.select()
    assert [p.pid for p in procs] == [30] and at.processes == () and table.scans == 0
    pidfile.write_text("12\n")  # a zombie
    os.utime(pidfile, (written, written))
    assert selection.select()[0] == []


# --------------------------------------------------------------------------- probes on one table


def make(kind: str, table: ProcessTable, **params: Any) -> Any:
    spec = PROBES[kind]
    return spec.factory(spec.params.model_validate(params), table, time.time)


def test_every_process_probe_names_the_same_shared_table() -> None:
    assert {spec.shared for spec in PROBES.values()} == {table_module.process_table}
    assert isinstance(table_module.process_table(time.time), ProcessTable)


def test_twenty_rules_share_one_scan(fake: FakeProc) -> None:
    clock = FakeClock()
    table = ProcessTable(str(fake.root), max_age=1.0, monotonic=clock)
    probes = [make(kind, table, name="nginx") for kind in PROBES if kind != "process.fds" for _ in range(4)]
    for probe in probes:
        probe.measure()
    assert table.scans == 1
    clock.now += 1.0
    for probe in probes:
        probe.measure()
    assert table.scans == 2


def test_cpu_rate_is_over_the_snapshots_times(fake: FakeProc) -> None:
    clock = FakeClock()
    table = ProcessTable(str(fake.root), max_age=1.0, monotonic=clock)
    probe = make("process.cpu", table, cmdline="port 8000")
    other = make("process.count", table, name="bash")
    [first] = probe.measure()
    assert first.details["sample"] == "lifetime" and first.value == 0.0
    fake.add(30, "python3", ["python3", "-m", "app", "--port", "8000"], ticks=HZ)  # one CPU second
    clock.now += 1.5
    other.measure()  # another rule scans at +1.5 s ...
    clock.now += 0.5
    [second] = probe.measure()  # ... and this one, at +2 s, reads that scan: the rate is over 1.5 s, not 2 s
    assert second.details["sample"] == "interval"
    assert second.value == pytest.approx(100.0 / 1.5)
    assert table.scans == 2


def test_a_rule_never_reads_the_same_snapshot_twice(fake: FakeProc) -> None:
    """A re-probe right after an action (the verify) must see the host after it, not the scan before."""
    clock = FakeClock()
    table = ProcessTable(str(fake.root), max_age=1.0, monotonic=clock)
    count = make("process.count", table, name="nginx")
    others = [make("process.rss", table, name="nginx") for _ in range(3)]
    assert count.measure()[0].value == 2
    for probe in others:
        probe.measure()
    assert table.scans == 1  # the other rules share the scan
    fake.remove(11)  # the action: a worker killed
    clock.now += 0.1
    assert count.measure()[0].value == 1  # the verify scans afresh
    assert table.scans == 2


def test_age_comes_from_the_snapshot_uptime(fake: FakeProc) -> None:
    table = ProcessTable(str(fake.root), max_age=0.0)
    ages = {r.subject: r.value for r in make("process.age", table, name="nginx").measure()}
    assert ages == {"pid:10": pytest.approx(3600.0, abs=0.02), "pid:11": pytest.approx(3600.0, abs=0.02)}


def test_a_name_selector_looks_only_at_its_names_and_the_truncated_ones(fake: FakeProc) -> None:
    snapshot = ProcessTable(str(fake.root), max_age=0.0).scan()
    everyone = [stat.pid for stat, _ in snapshot.processes]
    assert [stat.pid for stat, _ in snapshot.candidates(None)] == everyone
    nginx = [stat.pid for stat, _ in snapshot.candidates(frozenset({"nginx"}))]
    truncated = [stat.pid for stat, _ in snapshot.processes if len(stat.comm) >= 15]
    assert nginx == sorted([10, 11, *truncated], key=everyone.index)  # scan order kept
    assert [stat.pid for stat, _ in snapshot.candidates(frozenset({"no-such-name"}))] == truncated
