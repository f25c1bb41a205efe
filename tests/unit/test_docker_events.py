"""Who stopped a container, from event sequences as the engine emits them (recorded from dockerd 20.10)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from watchdogd.families.docker.events import (
    CAUSE_EXIT,
    CAUSE_OPERATOR,
    CAUSE_WATCHDOGD,
    KILL_WINDOW,
    MAX_TRACKED,
    EventHistory,
    _nanos_timestamp,
)

CID = "c" * 64
T0 = 1_700_000_000.0


def ev(action: str, at: float, cid: str = CID, **attributes: str) -> dict[str, Any]:
    return {
        "Type": "container",
        "Action": action,
        "id": cid,
        "Actor": {"ID": cid, "Attributes": {"name": "web", **attributes}},
        "time": int(at),
        "timeNano": int(at * 1e9),
    }


def history(*events: dict[str, Any], now: float = T0) -> EventHistory:
    h = EventHistory(lambda: now)
    for event in events:
        h.feed(event)
    return h


def test_docker_stop_is_an_operator_stop() -> None:
    # docker stop: SIGTERM, SIGKILL after the timeout, die, then stop.
    h = history(ev("start", T0), ev("kill", T0 + 5, signal="15"), ev("kill", T0 + 15, signal="9"),
                ev("die", T0 + 15.02, exitCode="137"), ev("stop", T0 + 15.03))
    assert h.stop_cause(CID, T0 + 15.0) == CAUSE_OPERATOR


def test_docker_kill_is_an_operator_stop() -> None:
    h = history(ev("start", T0), ev("kill", T0 + 5, signal="9"), ev("die", T0 + 5.02, exitCode="137"))
    assert h.stop_cause(CID, T0 + 5.0) == CAUSE_OPERATOR


def test_an_exit_without_a_kill_is_the_containers_own() -> None:
    h = history(ev("start", T0), ev("die", T0 + 3, exitCode="3"))
    assert h.stop_cause(CID, T0 + 3) == CAUSE_EXIT


def test_a_reload_signal_does_not_make_a_later_crash_a_stop() -> None:
    h = history(ev("start", T0), ev("kill", T0 + 5, signal="1"), ev("die", T0 + 30, exitCode="2"))
    assert h.stop_cause(CID, T0 + 30) == CAUSE_EXIT


def test_a_kill_long_before_the_death_is_not_its_cause() -> None:
    h = history(ev("start", T0), ev("kill", T0 + 5, signal="15"), ev("die", T0 + 5 + KILL_WINDOW + 1, exitCode="1"))
    assert h.stop_cause(CID, T0 + 5 + KILL_WINDOW + 1) == CAUSE_EXIT


def test_a_slow_graceful_stop_is_still_an_operator_stop_thanks_to_the_stop_event() -> None:
    h = history(ev("start", T0), ev("kill", T0, signal="15"), ev("die", T0 + KILL_WINDOW + 60, exitCode="0"),
                ev("stop", T0 + KILL_WINDOW + 60.1))
    assert h.stop_cause(CID, T0 + KILL_WINDOW + 60) == CAUSE_OPERATOR


def test_a_restart_announced_by_watchdogd_is_ours() -> None:
    h = EventHistory(lambda: T0)
    h.feed(ev("start", T0 - 100))
    h.expect_own(CID, 40)
    for event in (ev("kill", T0 + 1, signal="15"), ev("die", T0 + 1.1, exitCode="143"), ev("stop", T0 + 1.2)):
        h.feed(event)
    assert h.stop_cause(CID, T0 + 1.1) == CAUSE_WATCHDOGD


def test_our_announcement_expires() -> None:
    h = EventHistory(lambda: T0)
    h.expect_own(CID, 10)
    h.feed(ev("kill", T0 + 60, signal="15"))
    h.feed(ev("die", T0 + 60.1, exitCode="143"))
    assert h.stop_cause(CID, T0 + 60.1) == CAUSE_OPERATOR


def test_start_forgets_the_previous_stop() -> None:
    h = history(ev("kill", T0, signal="9"), ev("die", T0 + 0.1, exitCode="137"), ev("start", T0 + 10))
    assert h.stop_cause(CID, T0 + 0.1) is None


def test_a_die_we_saw_does_not_explain_a_later_stop_we_missed() -> None:
    h = history(ev("kill", T0, signal="9"), ev("die", T0 + 0.1, exitCode="137"))
    assert h.stop_cause(CID, T0 + 3600) is None  # it was started and died again while we were away


def test_destroy_forgets_the_container() -> None:
    h = history(ev("kill", T0, signal="9"), ev("die", T0 + 0.1, exitCode="137"), ev("destroy", T0 + 1))
    assert h.stop_cause(CID, T0 + 0.1) is None


def test_replayed_events_are_applied_once() -> None:
    h = EventHistory(lambda: T0)
    sequence = [ev("start", T0), ev("kill", T0 + 1, signal="9"), ev("die", T0 + 1.1, exitCode="137")]
    for event in sequence + sequence:  # a reconnect replays the overlap
        h.feed(event)
    assert h.generation(CID) == 2  # one start and one die
    assert h.stop_cause(CID, T0 + 1.1) == CAUSE_OPERATOR


def test_generation_changes_on_start_and_die_only() -> None:
    h = history(ev("start", T0))
    first = h.generation(CID)
    h.feed(ev("kill", T0 + 1, signal="1"))
    assert h.generation(CID) == first
    h.feed(ev("die", T0 + 2, exitCode="1"))
    assert h.generation(CID) == first + 1


def test_oom_event_marks_the_death_even_when_dockers_flag_loses_the_race() -> None:
    h = history(ev("start", T0), ev("oom", T0 + 1), ev("die", T0 + 1.01, exitCode="137"))
    assert h.oom_killed(CID, T0 + 1.0)
    assert h.stop_cause(CID, T0 + 1.0) == CAUSE_EXIT
    h.feed(ev("start", T0 + 5))
    h.feed(ev("die", T0 + 6, exitCode="1"))
    assert not h.oom_killed(CID, T0 + 6)


def test_unhealthy_since_the_first_unhealthy_event_until_healthy_or_restart() -> None:
    h = history(ev("start", T0), ev("health_status: unhealthy", T0 + 30), ev("health_status: unhealthy", T0 + 60))
    assert h.unhealthy_since(CID) == T0 + 30
    h.feed(ev("health_status: healthy", T0 + 90))
    assert h.unhealthy_since(CID) is None
    h.feed(ev("health_status: unhealthy", T0 + 120))
    h.feed(ev("start", T0 + 130))
    assert h.unhealthy_since(CID) is None


def test_other_event_types_and_junk_are_ignored() -> None:
    h = history({"Type": "network", "Action": "connect", "id": CID, "timeNano": 1}, {"Type": "container"}, {})
    assert h.generation(CID) == 0


def test_memory_is_bounded() -> None:
    h = EventHistory(lambda: T0)
    for n in range(MAX_TRACKED + 50):
        h.feed(ev("start", T0 + n / 1000, cid=f"{n:064d}"))
    assert h.generation(f"{0:064d}") == 0  # the oldest were forgotten
    assert h.generation(f"{MAX_TRACKED + 49:064d}") == 1


@pytest.mark.parametrize(
    ("nanos", "text"),
    [(1_700_000_000_000_000_001, "1700000000.000000001"), (1_500_000_000, "1.500000000"), (0, "0.000000000")],
)
def test_engine_timestamps_keep_nanoseconds(nanos: int, text: str) -> None:
    assert _nanos_timestamp(nanos) == text


def test_a_probe_can_wait_for_the_die_still_in_flight() -> None:
    """The engine answers an inspect before its stream delivers the die: waiting for it keeps a stop a stop."""
    h = history(ev("start", T0), ev("kill", T0 + 5, signal="15"))
    feeder = threading.Timer(0.05, lambda: h.feed(ev("die", T0 + 5.02, exitCode="3")))
    feeder.start()
    try:
        assert h.wait_for_die(CID, T0 + 5.0, timeout=30)
    finally:
        feeder.join()
    assert h.stop_cause(CID, T0 + 5.0) == CAUSE_OPERATOR


def test_waiting_for_a_die_that_never_comes_ends_at_the_timeout() -> None:
    h = history(ev("start", T0), ev("die", T0 - 600, exitCode="1"))  # an earlier stop is not this one
    assert not h.wait_for_die(CID, T0, timeout=0.01)
    assert not h.wait_for_die("unknown", None, timeout=0)
