"""Rules that measure the same thing on the same beat share one probe (``engine.probegroups``).

Real ``host.*`` probes on this host's /proc, a real engine and SQLite store: what is checked is which rules
hold which probe object and how many measures a cycle makes.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.unit.test_engine import Clock
from watchdogd import inline
from watchdogd.config import parse_config
from watchdogd.engine.engine import Engine
from watchdogd.engine.probegroups import SharedProbe
from watchdogd.engine.state import StateStore
from watchdogd.sharedread import SharedRead

RULES = {
    "warn": "probe: host.load\n    params: {period: 1}\n    above: 1000",
    "page": "probe: host.load\n    params: {period: 1}\n    above: 2000",  # same measure, other threshold
    "other_period": "probe: host.load\n    params: {period: 5}\n    above: 1000",
    "slower": "probe: host.load\n    params: {period: 1}\n    above: 1000\n    every: 10s",
    "disabled": "probe: host.load\n    params: {period: 1}\n    above: 1000\n    enabled: false",
}


def config_text(tmp_path: Path, names: list[str]) -> str:
    body = "".join(f"  {name}:\n    {RULES[name]}\n" for name in names)
    return f"state_dir: {tmp_path}/state\ninterval: 5s\nrules:\n{body}"


def engine_for(tmp_path: Path, names: list[str]) -> Engine:
    config = parse_config(config_text(tmp_path, names), tmp_path / "w.yaml")
    return Engine(config, StateStore(tmp_path / "state.db", Clock()), {}, Clock())


def test_rules_with_the_same_probe_params_and_beat_share_one_probe_and_one_measure(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, list(RULES))
    probes = {name: engine._runtime(name).probe for name in RULES}
    shared = probes["warn"]
    assert isinstance(shared, SharedProbe) and probes["page"] is shared
    for alone in ("other_period", "slower"):  # other params, other interval: a probe of their own, unwrapped
        assert not isinstance(probes[alone], SharedProbe)
    assert probes["other_period"] is not probes["slower"]

    warn, page = engine.run_rule("warn"), engine.run_rule("page")
    assert warn.up and page.up
    assert shared.measures == 1  # the second rule of the cycle got the first one's readings
    assert engine._runtime("warn").last.readings == engine._runtime("page").last.readings  # type: ignore[union-attr]


def test_a_reload_regroups_and_keeps_the_probe_it_wrapped(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, ["warn", "page"])
    shared = engine._runtime("warn").probe
    assert isinstance(shared, SharedProbe)
    inner = shared.probe

    engine.reconfigure(parse_config(config_text(tmp_path, ["warn"]), tmp_path / "w.yaml"), {})
    assert engine._runtime("warn").probe is inner  # alone again: the bare probe, with its memory

    engine.reconfigure(parse_config(config_text(tmp_path, ["warn", "page"]), tmp_path / "w.yaml"), {})
    regrouped = engine._runtime("warn").probe
    assert isinstance(regrouped, SharedProbe) and regrouped.probe is inner
    assert engine._runtime("page").probe is regrouped


def test_the_shared_probe_is_the_probe_to_the_engines_protocol_checks(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, ["warn", "page"])
    shared = engine._runtime("warn").probe
    assert isinstance(shared, SharedProbe)
    assert shared.inline and shared.describe.__self__ is shared.probe  # type: ignore[attr-defined]


# -- SharedRead's inline reads --------------------------------------------------------------------------------


def test_an_inline_read_runs_on_the_callers_thread_inside_only() -> None:
    shared = SharedRead(lambda: ("read",), max_age=60.0, inline_reads=True)
    with inline.only():
        assert shared.get() == ("read",)
    assert shared.reads == 1
    plain = SharedRead(lambda: ("read",), max_age=60.0)
    with inline.only(), pytest.raises(inline.WouldBlock):
        plain.get()  # a read that may block is never started inside only()


def test_an_inline_read_that_needs_a_thread_is_not_kept_as_an_error() -> None:
    def read() -> tuple[str]:
        inline.check("a read of its own")
        return ("read",)

    shared = SharedRead(read, max_age=60.0, inline_reads=True)
    with inline.only(), pytest.raises(inline.WouldBlock):
        shared.get()
    assert shared.get() == ("read",)  # outside only(): read at once, not handed the refusal


def test_a_waiter_on_an_inline_read_that_refused_reads_for_itself() -> None:
    entered, go_on = threading.Event(), threading.Event()
    outcomes: list[object] = []

    def read() -> tuple[str]:
        if inline.active():
            entered.set()
            go_on.wait(10)
            inline.check("a read of its own")
        return ("read",)

    shared = SharedRead(read, max_age=60.0, inline_reads=True)

    def inline_caller() -> None:
        try:
            with inline.only():
                shared.get()
        except inline.WouldBlock:
            outcomes.append("refused")

    first = threading.Thread(target=inline_caller)
    first.start()
    assert entered.wait(10)
    waiter = threading.Thread(target=lambda: outcomes.append(shared.get()))
    waiter.start()
    deadline = time.monotonic() + 10
    while not shared._cond._waiters and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.001)  # until the waiter waits on the read in flight (no event to await inside Condition)
    assert shared._cond._waiters  # type: ignore[attr-defined]
    go_on.set()
    first.join(10)
    waiter.join(10)
    assert sorted(map(str, outcomes)) == ["('read',)", "refused"]
    assert shared.reads == 2
