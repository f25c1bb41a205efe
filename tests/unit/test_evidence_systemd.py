"""systemd evidence (``describe``): ``systemctl show`` and ``journalctl`` answers played back from text.

The outputs below were captured from systemd 252 (Debian 12) in the test
container of tests/integration/services; the same code runs against it in
tests/integration/services/test_svc_systemd_evidence.py.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

import pytest

from watchdogd.contracts import Describes, EvidenceLimits, ProbeError
from watchdogd.evidencefit import json_size
from watchdogd.families.systemd import probes
from watchdogd.families.systemd.probes import (
    LINE_CHARS,
    PROBES,
    RestartsParams,
    RestartsProbe,
    UnitParams,
    UnitProbe,
    describe_units,
    unit_status,
)
from watchdogd.families.systemd.systemctl import Systemctl, parse_journal
from watchdogd.model import Reading

# systemctl show --property=Id,LoadState,... -- crashy.service systemd-journald.service nope.service
SHOW = """MainPID=0
Result=exit-code
NRestarts=0
ExecMainExitTimestamp=Thu 2026-12-03 18:04:27 UTC
ExecMainCode=1
ExecMainStatus=3
MemoryCurrent=[not set]
Id=crashy.service
LoadState=loaded
ActiveState=failed
SubState=failed
ActiveEnterTimestamp=Thu 2026-12-03 18:04:27 UTC

MainPID=28
Result=success
NRestarts=0
ExecMainExitTimestamp=
ExecMainCode=0
ExecMainStatus=0
MemoryCurrent=9859072
Id=systemd-journald.service
LoadState=loaded
ActiveState=active
SubState=running
ActiveEnterTimestamp=Thu 2026-12-03 18:04:24 UTC

MainPID=0
Result=success
NRestarts=0
ExecMainExitTimestamp=
ExecMainCode=0
ExecMainStatus=0
MemoryCurrent=[not set]
Id=nope.service
LoadState=not-found
ActiveState=inactive
SubState=dead
ActiveEnterTimestamp=
"""
CRASHY_JOURNAL = (
    "2026-12-03T18:04:27+0000 3b37e0ea0a61 systemd[1]: Started crashy.service.\n"
    "2026-12-03T18:04:27+0000 3b37e0ea0a61 sh[111]: hello 1\n"
    "2026-12-03T18:04:27+0000 3b37e0ea0a61 sh[111]: bad\n"
    "2026-12-03T18:04:27+0000 3b37e0ea0a61 systemd[1]: crashy.service: Main process exited, code=exited,"
    " status=3/NOTIMPLEMENTED\n"
    "2026-12-03T18:04:27+0000 3b37e0ea0a61 systemd[1]: crashy.service: Failed with result 'exit-code'.\n"
)
# journalctl as a user outside the systemd-journal group (exit status 1).
DENIED = (
    "Hint: You are currently not seeing messages from other users and the system.\n"
    "      Users in groups 'adm', 'systemd-journal' can see all messages.\n"
    "      Pass -q to turn off this notice.\n"
    "No journal files were opened due to insufficient permissions.\n"
)

Answer = tuple[int, str, str]


class Player:
    """Plays back systemctl/journalctl: ``show`` answers ``SHOW``, journalctl per unit from a table."""

    def __init__(self, journals: dict[str, Answer | Callable[[float], Answer]], show: str = SHOW) -> None:
        self.journals = journals
        self.show = show
        self.calls: list[tuple[list[str], float]] = []

    def __call__(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        self.calls.append((argv, timeout))
        if argv[0] == "systemctl":
            assert argv[3] == "show", argv
            return subprocess.CompletedProcess(argv, 0, self.show, "")
        unit = argv[argv.index("-u") + 1]
        answer = self.journals.get(unit, (0, "-- No entries --\n", ""))
        code, out, err = answer(timeout) if callable(answer) else answer
        return subprocess.CompletedProcess(argv, code, out, err)


def limits(seconds: float = 2.0, max_bytes: int = 64 * 1024, max_items: int = 20) -> EvidenceLimits:
    return EvidenceLimits(deadline=time.monotonic() + seconds, max_bytes=max_bytes, max_items=max_items)


UNITS = ["crashy.service", "systemd-journald.service", "nope.service"]


def test_status_and_journal_of_each_unit() -> None:
    player = Player({"crashy.service": (0, CRASHY_JOURNAL, "")})
    bounds = limits()
    started = time.monotonic()

    sections = describe_units(Systemctl(player), UNITS, bounds)

    took = time.monotonic() - started
    print(f"describe_units: {took * 1000:.2f} ms, {json_size(sections)} bytes")
    assert set(sections) == {"unit status", "last journal lines"}
    crashy, journald, nope = sections["unit status"]
    assert crashy == {
        "unit": "crashy.service", "load_state": "loaded", "active_state": "failed", "sub_state": "failed",
        "result": "exit-code", "main_exit": "exited 3", "exec_main_status": 3,
        "main_exited_at": "Thu 2026-12-03 18:04:27 UTC", "restarts": 0,
        "active_since": "Thu 2026-12-03 18:04:27 UTC", "main_pid": None, "memory_bytes": None,
    }
    assert (journald["main_pid"], journald["memory_bytes"], journald["main_exit"]) == (28, 9859072, None)
    assert (nope["load_state"], nope["active_since"], nope["main_exited_at"]) == ("not-found", None, None)
    journal = sections["last journal lines"]
    assert journal["crashy.service"] == CRASHY_JOURNAL.splitlines()
    assert journal["systemd-journald.service"] == [] and journal["nope.service"] == []  # "-- No entries --"
    show_argv = player.calls[0][0]
    assert show_argv[:4] == ["systemctl", "--no-pager", "--no-ask-password", "show"]
    assert show_argv[-4:] == ["--", *UNITS]
    assert "ExecMainStatus" in show_argv[4] and "MemoryCurrent" in show_argv[4]
    assert player.calls[1][0] == [
        "journalctl", "--no-pager", "-u", "crashy.service", "-n", "20", "-o", "short-iso"
    ]
    assert all(0 < timeout <= 2.0 for _, timeout in player.calls)  # each call bounded by what is left


def test_main_exit_reads_the_status_as_a_signal_when_killed() -> None:
    killed = unit_status("app.service", {"ExecMainCode": "2", "ExecMainStatus": "9", "MemoryCurrent": "infinity"})
    assert killed["main_exit"] == "killed 9"
    assert killed["memory_bytes"] is None
    dumped = unit_status("app.service", {"ExecMainCode": "3", "ExecMainStatus": "11", "NRestarts": "4"})
    assert (dumped["main_exit"], dumped["restarts"]) == ("dumped core 11", 4)
    assert unit_status("x.service", {"MemoryCurrent": str(2**64 - 1)})["memory_bytes"] is None
    assert unit_status("x.service", {})["load_state"] == ""


def test_an_unreadable_journal_says_why_and_the_others_are_still_shown() -> None:
    player = Player({"crashy.service": (1, "", DENIED), "nope.service": (1, "", "Failed to add match: x")})

    sections = describe_units(Systemctl(player), UNITS, limits())

    journal = sections["last journal lines"]
    assert "cannot read the system journal" in journal["crashy.service"]["error"]
    assert "systemd-journal group" in journal["crashy.service"]["error"]
    assert journal["nope.service"] == {"error": "Failed to add match: x"}
    assert journal["systemd-journald.service"] == []
    assert len(sections["unit status"]) == 3


def test_a_journalctl_that_runs_out_of_time_is_an_error_in_its_place() -> None:
    def slow(timeout: float) -> Answer:
        raise subprocess.TimeoutExpired(["journalctl"], timeout)

    sections = describe_units(Systemctl(Player({"crashy.service": slow})), UNITS, limits())

    assert "did not finish within" in sections["last journal lines"]["crashy.service"]["error"]


class FakeClock:
    """Stands in for ``time`` in the probes module: the journal player moves it forward."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_the_deadline_stops_it_between_units_and_it_says_where(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(probes, "time", clock)

    def takes_a_second(timeout: float) -> Answer:
        clock.now += 1.0
        return 0, CRASHY_JOURNAL, ""

    player = Player({"crashy.service": takes_a_second})
    bounds = EvidenceLimits(deadline=clock.now + 0.5, max_bytes=65536)

    sections = describe_units(Systemctl(player), UNITS, bounds)

    assert len(sections["unit status"]) == 3
    assert list(sections["last journal lines"]) == ["crashy.service"]
    assert sections["cut"] == {"deadline": "journal of systemd-journald.service, nope.service not read"}
    assert [argv[0] for argv, _ in player.calls] == ["systemctl", "journalctl"]
    assert player.calls[1][1] == pytest.approx(0.45)  # what was left of the deadline, less the margin

    late = describe_units(Systemctl(player), UNITS, EvidenceLimits(deadline=clock.now, max_bytes=65536))
    assert late == {"cut": {"deadline": "systemctl was not asked"}}
    assert len(player.calls) == 2  # nothing run after the deadline


def test_lines_are_cut_and_the_whole_fits_max_bytes_keeping_the_newest() -> None:
    units = [f"u{i}.service" for i in range(25)]
    show = "\n\n".join(f"Id={u}\nLoadState=loaded\nActiveState=failed" for u in units) + "\n"
    wide = "".join(f"2026-12-03T18:04:{n:02d}+0000 h app[1]: {n:02d} " + "x" * 400 + "\n" for n in range(30))
    player = Player({u: (0, wide, "") for u in units}, show=show)
    bounds = limits(max_bytes=16 * 1024)

    sections = describe_units(Systemctl(player), units, bounds)

    assert json_size(sections) <= bounds.max_bytes
    assert len(sections["unit status"]) == 20  # max_items
    assert sections["cut"]["max_items"] == "5 more unit(s) not described"
    assert "journal lines dropped to fit" in sections["cut"]["max_bytes"]
    journal = sections["last journal lines"]
    assert len(journal) == 20
    for lines in journal.values():
        assert all(len(line) == LINE_CHARS for line in lines)
        assert lines and " app[1]: 29 " in lines[-1]  # every unit keeps its newest line
    counts = [len(lines) for lines in journal.values()]
    assert max(counts) - min(counts) <= 1  # taken evenly, from the unit with the most lines each time
    json.dumps(sections)


def test_a_failing_systemctl_show_raises_for_the_engine_to_record() -> None:
    def broken(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 1, "", "Failed to connect to bus: No such file or directory")

    with pytest.raises(ProbeError, match="Failed to connect to bus"):
        describe_units(Systemctl(broken), UNITS, limits())


def test_journal_notes_are_dropped_and_a_reboot_marker_kept() -> None:
    text = (
        "-- Journal begins at Mon 2026-11-30 10:00:00 UTC, ends at Thu 2026-12-03 18:04:27 UTC. --\n"
        "2026-12-02T10:00:00+0000 h app[1]: before\n"
        "-- Boot 3f1c2e --\n"
        "2026-12-03T10:00:00+0000 h app[1]: after\r\n"
        "\n"
    )
    assert parse_journal(text) == [
        "2026-12-02T10:00:00+0000 h app[1]: before", "-- Boot 3f1c2e --", "2026-12-03T10:00:00+0000 h app[1]: after",
    ]
    assert parse_journal("-- No entries --\n") == []
    assert parse_journal("-- Logs begin at Mon 2026-11-30 10:00:00 UTC, end at Thu 2026-12-03. --\n") == []


def test_a_unit_named_like_an_option_never_reaches_journalctl() -> None:
    player = Player({})
    sections = describe_units(Systemctl(player), ["--all"], limits())
    assert "not a unit name" in sections["last journal lines"]["--all"]["error"]
    assert [argv[0] for argv, _ in player.calls] == ["systemctl"]


@pytest.mark.parametrize("kind", ["systemd.unit", "systemd.restarts"])
def test_both_probes_describe_their_readings(kind: str) -> None:
    player = Player({"crashy.service": (0, CRASHY_JOURNAL, "")})
    probe: UnitProbe | RestartsProbe
    if kind == "systemd.unit":
        params: RestartsParams = UnitParams(units=["crashy"])
        probe = UnitProbe(UnitParams(units=["crashy"]), Systemctl(player), time.monotonic)
    else:
        params = RestartsParams(units=["crashy"])
        probe = RestartsProbe(params, Systemctl(player), time.monotonic)
    assert isinstance(probe, Describes)
    assert isinstance(PROBES[kind].factory(params, None, time.time), Describes)

    sections = probe.describe([Reading("crashy.service", 1.0, {})], limits())

    assert sections["unit status"][0]["unit"] == "crashy.service"
    assert sections["last journal lines"]["crashy.service"][-1].endswith("Failed with result 'exit-code'.")


def test_journal_lines_limited_by_max_items() -> None:
    many = "".join(f"2026-12-03T18:00:{n:02d}+0000 h app[1]: line {n}\n" for n in range(20))
    sections = describe_units(Systemctl(Player({"a.service": (0, many, "")})), ["a.service"], limits(max_items=5))
    assert sections["last journal lines"]["a.service"] == many.splitlines()[-5:]
