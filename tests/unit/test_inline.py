"""Inline probe runs (``watchdogd.inline``): served on the rule's own thread from what shared reads hold, or
sent to a probe thread; never a read, nor a wait for one, on the rule's thread.

The engine is driven with fake probes (tests.support.fake_family) and a real SQLite store; the shared
layers (``SharedRead``, the process table) are the real ones, over a fake ``/proc`` where needed.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.unit.test_engine import BASE, Clock, make_engine
from tests.unit.test_process_table import FakeProc
from watchdogd import inline
from watchdogd.families.process.select import ProcessSelection, ProcessSelector
from watchdogd.families.process.table import ProcessTable
from watchdogd.model import Reading
from watchdogd.sharedread import SharedRead


def test_a_fresh_shared_value_is_served_inside_only() -> None:
    clock = Clock(100.0)
    shared = SharedRead(lambda: ("read",), max_age=1.0, monotonic=clock)
    assert shared.get() == ("read",)
    with inline.only():
        assert shared.get() == ("read",)
    assert shared.reads == 1


def test_a_stale_shared_value_refuses_inside_only_and_reads_outside() -> None:
    clock = Clock(100.0)
    shared = SharedRead(lambda: ("read",), max_age=1.0, monotonic=clock)
    with inline.only(), pytest.raises(inline.WouldBlock):
        shared.get()  # never read yet
    shared.get()
    clock.now += 1.0
    with inline.only(), pytest.raises(inline.WouldBlock):
        shared.get()
    assert shared.reads == 1  # the refusals read nothing
    assert not inline.active()  # the flag is dropped on the way out of only()
    shared.get()
    assert shared.reads == 2


def test_a_read_in_flight_is_not_waited_for_inside_only() -> None:
    started, release = threading.Event(), threading.Event()

    def slow() -> tuple[str]:
        started.set()
        release.wait(10)
        return ("slow",)

    shared = SharedRead(slow, max_age=1.0)
    reader = threading.Thread(target=shared.get)
    reader.start()
    try:
        assert started.wait(10)
        with inline.only(), pytest.raises(inline.WouldBlock):
            shared.get()  # would wait for the slow read: refused at once instead
    finally:
        release.set()
        reader.join(10)
    assert shared.reads == 1


def test_would_block_gets_past_a_probes_own_except_exception() -> None:
    """Probes turn failed reads into ProbeError with ``except Exception``: the refusal must not become one."""
    assert not issubclass(inline.WouldBlock, Exception)


def test_the_flag_is_per_thread() -> None:
    seen: list[bool] = []
    with inline.only():
        other = threading.Thread(target=lambda: seen.append(inline.active()))
        other.start()
        other.join(10)
        assert inline.active()
    assert seen == [False]


class ThreadProbe:
    """Records the thread each measure ran on; refuses inside only() while ``needs_read`` is set."""

    inline = True

    def __init__(self) -> None:
        self.threads: list[int] = []
        self.needs_read = False
        self.error: Exception | None = None

    def measure(self) -> list[Reading]:
        if self.needs_read:
            inline.check("test read")
        self.threads.append(threading.get_ident())
        if self.error is not None:
            raise self.error
        return [Reading("a", 95.0)]


ALERT_ONLY = """\
    probe: fake.percent
    params: {key: r}
    above: 90
    timeout: 1s
"""
"""A rule without actions: no verify, whose re-probes run on a probe thread (see the end of this file)."""


def _engine_with(tmp_path: Path, probe: ThreadProbe):  # type: ignore[no-untyped-def]
    engine, _fake, _action, store = make_engine(tmp_path, ALERT_ONLY, Clock())
    for rt in engine._runtimes.values():
        rt.probe = probe
    return engine, store


def test_an_inline_probe_runs_on_the_rules_thread_without_the_pool(tmp_path: Path) -> None:
    probe = ThreadProbe()
    engine, _store = _engine_with(tmp_path, probe)
    report = engine.run_rule("r")
    assert report.up
    assert probe.threads == [threading.get_ident()]
    assert engine.runner.pool.threads == 0  # no probe thread was ever started


def test_a_refused_inline_run_goes_to_a_probe_thread(tmp_path: Path) -> None:
    probe = ThreadProbe()
    probe.needs_read = True
    engine, _store = _engine_with(tmp_path, probe)
    report = engine.run_rule("r")
    assert report.up and report.firing == ("a",)
    assert probe.threads and threading.get_ident() not in probe.threads


def test_an_inline_probe_error_is_a_down_result(tmp_path: Path) -> None:
    probe = ThreadProbe()
    probe.error = RuntimeError("no such\nthing")
    engine, _store = _engine_with(tmp_path, probe)
    report = engine.run_rule("r")
    assert (report.up, report.error) == (False, "no such thing")
    assert engine.runner.pool.threads == 0


def test_a_probe_without_the_flag_always_uses_a_probe_thread(tmp_path: Path) -> None:
    probe = ThreadProbe()
    probe.inline = False  # type: ignore[misc]
    engine, _store = _engine_with(tmp_path, probe)
    engine.run_rule("r")
    assert probe.threads and threading.get_ident() not in probe.threads


# -- the process table -------------------------------------------------------------------------------------


def test_a_selection_served_from_known_facts_runs_inline_and_one_that_needs_a_read_refuses(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path)
    fake.add(10, "worker", ["/usr/bin/worker", "--flag"])
    fake.add(11, "worker", ["/usr/bin/worker", "--flag"])
    fake.add(20, "other", ["/usr/bin/other", "--flag"])
    clock = Clock(100.0)
    table = ProcessTable(str(fake.root), max_age=1.0, monotonic=clock)
    workers = ProcessSelection(ProcessSelector.model_validate({"name": "worker"}), table)
    with inline.only(), pytest.raises(inline.WouldBlock):
        workers.select()  # no scan yet
    procs, first = workers.select()  # scans, and reads the workers' argv and owner (not "other"'s)
    assert sorted(p.pid for p in procs) == [10, 11] and table.scans == 1

    same = ProcessSelection(ProcessSelector.model_validate({"name": "worker"}), table)
    with inline.only():
        served, snapshot = same.select()  # fresh snapshot, facts known: no read at all
    assert snapshot is first and sorted(p.pid for p in served) == [10, 11]

    flagged = ProcessSelection(ProcessSelector.model_validate({"cmdline": "--flag"}), table)
    with inline.only(), pytest.raises(inline.WouldBlock):
        flagged.select()  # would read the argv of "other"
    again, snapshot = flagged.select()  # on a probe thread: the same snapshot, not a second scan
    assert snapshot is first and table.scans == 1 and sorted(p.pid for p in again) == [10, 11, 20]


def test_a_pidfile_selection_never_runs_inline(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    fake = FakeProc(tmp_path / "proc")
    table = ProcessTable(str(fake.root), max_age=1.0)
    table.scan()
    pidfile = ProcessSelection(ProcessSelector.model_validate({"pidfile": str(tmp_path / "none.pid")}), table)
    with inline.only(), pytest.raises(inline.WouldBlock):
        pidfile.select()


# -- a verify reads afresh -----------------------------------------------------------------------------------


def test_a_fresh_block_reads_again_though_a_value_is_fresh() -> None:
    calls = []
    shared = SharedRead(lambda: calls.append(1) or len(calls), max_age=60.0)
    assert shared.get() == 1
    assert shared.get() == 1
    with inline.fresh():
        assert shared.get() == 2
    assert shared.get() == 2 and not inline.wants_fresh()


class SharedProbe:
    """A probe over a shared read that never expires by itself: only a fresh read sees the action's fix."""

    inline = True

    def __init__(self, values: dict[str, float]) -> None:
        self.shared = SharedRead(lambda: dict(values), max_age=3600.0)

    def measure(self) -> list[Reading]:
        return [Reading(subject, value) for subject, value in self.shared.get().items()]


def test_the_verify_after_an_action_reads_what_the_action_changed(tmp_path: Path) -> None:
    engine, fake, action, store = make_engine(tmp_path, BASE, Clock())
    probe = SharedProbe(fake.values)  # the fake action sets fake.values["a"] = 0.0: the fix
    for rt in engine._runtimes.values():
        rt.probe = probe
    report = engine.run_rule("r")
    assert action.calls == [(["a"], False)]
    [entry] = store.history()
    assert entry.detail["held"] is True and entry.value_after == 0.0
    assert report.firing == ()
    assert probe.shared.reads == 2  # the run's read, then the verify's own
