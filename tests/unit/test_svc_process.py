"""procfs parsing, process selection and the process.* probes, against real child processes."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.helpers import wait_until  # noqa: F401  (re-exported for this package)
from watchdogd.contracts import ProbeError
from watchdogd.families.process import procfs
from watchdogd.families.process.probes import PROBES, RssHistory
from watchdogd.families.process.select import ProcessSelection, ProcessSelector, process_name
from watchdogd.model import Cardinality, Unit

IDLE = "import sys, time\nprint('ready', flush=True)\nwhile True: time.sleep(1)"
SPIN = "import sys\nprint('ready', flush=True)\nwhile True: pass"
LEAK = (
    "import time\nchunks = []\nprint('ready', flush=True)\n"
    "while True:\n    chunks.append(bytearray(4 << 20))\n    time.sleep(0.05)"
)


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    children: list[subprocess.Popen[bytes]] = []

    def start(code: str = IDLE, *args: str) -> subprocess.Popen[bytes]:
        child = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE)
        children.append(child)
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"  # imports done: its RSS is settled
        return child

    yield start
    for child in children:
        child.kill()
    for child in children:
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()


@pytest.fixture
def token() -> str:
    return f"svc-test-{uuid.uuid4().hex[:12]}"


def make(kind: str, **params: Any) -> Any:
    spec = PROBES[kind]
    return spec.factory(spec.params.model_validate(params), None, time.time)


# --------------------------------------------------------------------------- procfs


def test_parse_stat_handles_parentheses_and_spaces_in_the_name() -> None:
    line = b"42 (a) b (c)) S 1 42 42 0 -1 4194560 1 0 0 0 7 3 0 0 20 0 2 0 12345 1000 250 0 0"
    stat = procfs.parse_stat(42, line)
    assert stat.comm == "a) b (c)"
    assert (stat.state, stat.ppid, stat.cpu_ticks, stat.threads, stat.start_ticks) == ("S", 1, 10, 2, 12345)
    assert stat.rss == 250 * procfs.PAGE_SIZE
    assert not stat.kernel_thread


def test_read_stat_of_this_process_and_kernel_threads() -> None:
    me = procfs.read_stat(os.getpid())
    assert me is not None and me.ppid == os.getppid() and not me.kernel_thread and me.rss > 0
    kthreadd = procfs.read_stat(2)
    if kthreadd is not None and kthreadd.comm == "kthreadd":  # not visible in every pid namespace
        assert kthreadd.kernel_thread
    assert procfs.read_stat(2**22 + 7) is None


def test_limits_fds_and_ancestors_of_this_process() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert procfs.nofile_soft_limit(os.getpid()) == (None if soft == resource.RLIM_INFINITY else soft)
    with open(__file__, "rb"):
        assert procfs.count_fds(os.getpid()) >= 4
    chain = procfs.ancestors(os.getpid())
    assert {os.getpid(), os.getppid()} <= chain


def test_process_name_completes_the_15_character_kernel_name() -> None:
    assert process_name("postgres", ("postgres", "-D", "/x")) == "postgres"
    assert process_name("very-long-daemo", ("/usr/sbin/very-long-daemon-name", "-f")) == "very-long-daemon-name"
    assert process_name("very-long-daemo", ("other",)) == "very-long-daemo"


# --------------------------------------------------------------------------- selection


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "select processes with name, cmdline, user or pidfile"),
        ({"all": True, "name": "x"}, "all: true selects every process"),
        ({"cmdline": "(("}, "not a valid regular expression for cmdline"),
        ({"name": "x", "exclude_cmdline": "[z"}, "not a valid regular expression for exclude_cmdline"),
        ({"pidfile": "run/app.pid"}, "pidfile must be an absolute path"),
        ({"name": "x", "colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_selector_rejects_bad_params(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ProcessSelector.model_validate(params)


def test_select_by_cmdline_user_and_exclusion(spawn: Callable[..., Any], token: str) -> None:
    children = [spawn(IDLE, token, str(i)) for i in range(3)]
    pids = {c.pid for c in children}
    found = ProcessSelection(ProcessSelector(cmdline=token)).select()[0]
    assert {p.pid for p in found} == pids
    assert all(p.uid == os.geteuid() for p in found)
    only_two = ProcessSelection(ProcessSelector(cmdline=token, exclude_cmdline=f"{token} 2$")).select()[0]
    assert {p.pid for p in only_two} == pids - {children[2].pid}
    me = str(os.geteuid())
    assert {p.pid for p in ProcessSelection(ProcessSelector(cmdline=token, user=me)).select()[0]} == pids
    assert ProcessSelection(ProcessSelector(cmdline=token, exclude_users=[me])).select()[0] == []


def test_selection_forgets_exited_processes(spawn: Callable[..., Any], token: str) -> None:
    selection = ProcessSelection(ProcessSelector(cmdline=token))
    child = spawn(IDLE, token)
    assert [p.pid for p in selection.select()[0]] == [child.pid]
    child.kill()
    child.wait()
    assert selection.select()[0] == []


def test_unknown_user_is_a_probe_error() -> None:
    with pytest.raises(ProbeError, match="no such user 'no-such-user-xyz'"):
        ProcessSelection(ProcessSelector(user="no-such-user-xyz")).select()[0]


def test_pidfile_selection(tmp_path: Path, spawn: Callable[..., Any], token: str) -> None:
    pidfile = tmp_path / "app.pid"
    selection = ProcessSelection(ProcessSelector(pidfile=str(pidfile)))
    assert selection.select()[0] == []  # no pidfile: not running
    child = spawn(IDLE, token)
    pidfile.write_text(f"{child.pid}\n")
    assert [p.pid for p in selection.select()[0]] == [child.pid]
    # The same pidfile written long before the process started: a stale pidfile, a reused pid.
    os.utime(pidfile, (time.time() - 3600, time.time() - 3600))
    assert selection.select()[0] == []
    pidfile.write_text("garbage\n")
    with pytest.raises(ProbeError, match="does not hold a pid"):
        selection.select()[0]


# --------------------------------------------------------------------------- probes


def test_table_units_and_cardinality() -> None:
    assert PROBES["process.count"].cardinality is Cardinality.LOW
    assert {k for k, s in PROBES.items() if s.cardinality is Cardinality.HIGH} == {
        "process.cpu", "process.rss", "process.rss_growth", "process.fds", "process.age",
    }
    assert PROBES["process.rss"].unit is Unit.BYTES
    assert PROBES["process.rss_growth"].unit is Unit.BYTES
    assert PROBES["process.age"].unit is Unit.SECONDS
    assert PROBES["process.cpu"].unit is Unit.PERCENT


def test_count_rss_age_and_fds(spawn: Callable[..., Any], token: str) -> None:
    children = [spawn(IDLE, token) for _ in range(2)]
    [count] = make("process.count", cmdline=token).measure()
    assert count.value == 2 and count.subject == f"cmdline={token}"
    assert sorted(count.details["pids"]) == sorted(c.pid for c in children)
    rss = {r.subject: r for r in make("process.rss", cmdline=token).measure()}
    assert set(rss) == {f"pid:{c.pid}" for c in children}
    reading = rss[f"pid:{children[0].pid}"]
    assert 1e6 < reading.value < 1e9
    assert reading.details["start_ticks"] == procfs.read_stat(children[0].pid).start_ticks  # type: ignore[union-attr]
    assert token in reading.details["cmdline"]
    ages = make("process.age", cmdline=token).measure()
    assert all(0 <= r.value < 120 for r in ages)
    fds = make("process.fds", cmdline=token).measure()
    assert all(0 < r.value < 100 and r.details["fds"] >= 3 for r in fds)


def test_cpu_tells_a_spinning_process_from_an_idle_one(spawn: Callable[..., Any], token: str) -> None:
    busy = spawn(SPIN, token, "busy")
    idle = spawn(IDLE, token, "idle")
    probe = make("process.cpu", cmdline=token)
    first = {r.subject: r for r in probe.measure()}
    assert first[f"pid:{busy.pid}"].details["sample"] == "lifetime"
    # Let the spinner accumulate a few ticks of CPU, then measure an interval.
    ticks = procfs.read_stat(busy.pid).cpu_ticks  # type: ignore[union-attr]
    wait_until(lambda: procfs.read_stat(busy.pid).cpu_ticks > ticks + 20, what="CPU ticks")  # type: ignore[union-attr]
    second = {r.subject: r for r in probe.measure()}
    assert second[f"pid:{busy.pid}"].details["sample"] == "interval"
    # Loose bounds: the spinner shares two cores with whatever else the test host runs.
    assert second[f"pid:{busy.pid}"].value > 20
    assert second[f"pid:{idle.pid}"].value < 5


def test_rss_growth_finds_the_leaking_child_only(spawn: Callable[..., Any], token: str) -> None:
    leaker = spawn(LEAK, token, "leaker")
    steady = spawn(IDLE, token, "steady")
    probe = make("process.rss_growth", cmdline=token, window="10s", min_span="0.5s")
    assert probe.measure() == []  # one sample spans nothing yet
    start = time.monotonic()
    wait_until(lambda: time.monotonic() - start > 0.6, what="half a second")  # let RSS move
    readings = {r.subject: r for r in probe.measure()}
    assert readings[f"pid:{leaker.pid}"].value > 10 * 2**30  # tens of MiB per second, GiB per hour
    assert abs(readings[f"pid:{steady.pid}"].value) < 2**30


def test_fds_probe_is_down_when_every_match_is_unreadable(spawn: Callable[..., Any], token: str) -> None:
    """A daemon without privileges must say why it sees nothing, not report an empty, healthy selection."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root: it drops to nobody to look at a root-owned process")
    spawn(IDLE, token)
    probe = make("process.fds", cmdline=token)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child drops to nobody; everything it needs is already imported
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                probe.measure()
                message = "no error"
            except ProbeError as exc:
                message = str(exc)
            os.write(write_end, message.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    assert "permission denied reading the open files of 1 matched process" in message
    assert "CAP_SYS_PTRACE" in message


# --------------------------------------------------------------------------- rss history


def test_rss_history_slope_is_exact_for_a_straight_line() -> None:
    history = RssHistory.create(window=600.0)
    for second in range(0, 301, 5):
        history.add(1000.0 + second, 100_000_000 + second * 1_000_000)  # 1 MB/s
    assert history.per_hour() == pytest.approx(3.6e9)
    assert history.span() == pytest.approx(300.0)


def test_rss_history_is_bounded_and_slides() -> None:
    history = RssHistory.create(window=100.0, max_points=10)
    for tick in range(2000):
        history.add(tick * 0.5, 50_000_000)
    assert len(history.points) <= 12
    assert history.span() <= 100.0
    assert history.per_hour() == 0.0


def test_rss_history_sawtooth_without_trend_is_not_a_leak() -> None:
    history = RssHistory.create(window=3600.0)
    for second in range(0, 3600, 15):
        history.add(float(second), 500_000_000 + (second % 300) * 100_000)  # GC sawtooth, 30 MB peaks
    assert abs(history.per_hour()) < 30_000_000  # a leak rule at e.g. 100MiB/h stays quiet
