"""Docker evidence (``describe``): what ``docker inspect``, ``docker logs --tail 20`` and ``system df`` show.

The integration tests run the family's probes against the session's real
engine and containers (conftest); the log framing and the byte fitting are
pure and tested without one.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.helpers import wait_until
from tests.integration.docker.dockertest import Containers, health
from watchdogd.contracts import Describes, EvidenceLimits
from watchdogd.evidencefit import FIT_SLACK, fit_lines, json_size
from watchdogd.families.docker.probes import (
    LINE_CHARS,
    PROBES,
    ContainersParams,
    ContainersProbe,
    DiskParams,
    DiskProbe,
    EngineParams,
    EngineProbe,
    log_rows,
)
from watchdogd.families.docker.resources import MemoryParams
from watchdogd.families.docker.target import DockerEngine, DockerError, log_lines
from watchdogd.model import Reading

# Prints 30 numbered lines on stdout, waits for /tmp/go, prints one line on stderr and fails with status 3.
# The wait: dockerd copies stdout and stderr to the log in two goroutines, so without it "oops" may be
# logged amid the stdout lines (seen under load), and "the last 20 lines" would not be a fixed list.
CRASH = ["sh", "-c", "for i in $(seq 1 30); do echo line $i; done; "
         "while [ ! -e /tmp/go ]; do sleep 0.05; done; echo oops >&2; exit 3"]


def limits(seconds: float = 2.0, max_bytes: int = 64 * 1024, **more: Any) -> EvidenceLimits:
    return EvidenceLimits(deadline=time.monotonic() + seconds, max_bytes=max_bytes, **more)


def logged(containers: Containers, cid: str, text: bytes) -> bool:
    """The engine copies stdout and stderr to the log separately: the last line can land after the exit."""
    return text in containers.api.logs(cid, stdout=True, stderr=True)


def run_crash(containers: Containers, short: str = "crash") -> str:
    """A container that ran ``CRASH`` to its end, every line of it in its log in order."""
    cid = containers.create(short, CRASH)
    wait_until(lambda: logged(containers, cid, b"line 30\n"), what="the stdout lines in the log")
    containers.api.exec_start(containers.api.exec_create(cid, ["touch", "/tmp/go"]))
    containers.wait_exited(cid)
    wait_until(lambda: logged(containers, cid, b"oops"), what="the stderr line in the log")
    return cid


def timed(probe: Describes, readings: list[Reading], bounds: EvidenceLimits) -> dict[str, Any]:
    started = time.monotonic()
    sections = probe.describe(readings, bounds)
    took = time.monotonic() - started
    print(f"{type(probe).__name__}.describe: {took * 1000:.1f} ms, {json_size(sections)} bytes")
    assert started + took < bounds.deadline + 0.5  # it keeps to the deadline itself
    return sections


# --------------------------------------------------------------------------- against the engine


@pytest.mark.integration
def test_a_crashed_and_an_unhealthy_container_are_described(engine: DockerEngine, containers: Containers) -> None:
    containers.create("sick", ["sleep", "600"], healthcheck=health("echo db down; exit 1"))
    run_crash(containers)
    check = ContainersProbe(ContainersParams(names=[f"{containers.prefix}-*"]), engine, time.time)

    def both_firing() -> list[Reading] | None:
        readings = [r for r in check.measure() if r.value > 0]
        return readings if len(readings) == 2 else None

    readings = wait_until(both_firing, what="the crash and the unhealthy container to be firing")
    bounds = limits()

    sections = timed(check, readings, bounds)

    assert set(sections) == {"containers", "last log lines"}  # no "cut": everything fitted in time
    rows = {row["container"]: row for row in sections["containers"]}
    crash = rows[containers.name("crash")]
    assert crash["status"] == "exited"
    assert crash["exit_code"] == 3
    assert crash["oom_killed"] is False
    assert crash["restart_count"] == 0
    assert crash["finished_at"] is not None and crash["finished_at"].endswith("Z")
    assert crash["command"] == "<redacted>"
    assert "health" not in crash
    sick = rows[containers.name("sick")]
    assert sick["status"] == "running"
    assert sick["health"]["status"] == "unhealthy"
    assert sick["health"]["last checks"][-1]["output"] == "db down"
    assert sick["health"]["last checks"][-1]["exit_code"] == 1
    lines = sections["last log lines"][containers.name("crash")]
    assert lines == [f"line {i}" for i in range(12, 31)] + ["[stderr] oops"]  # the last 20, stderr marked
    assert sections["last log lines"][containers.name("sick")] == []
    assert json_size(sections) <= bounds.max_bytes
    crash_reading = [r for r in readings if r.subject == containers.name("crash")]
    shown = check.describe(crash_reading, limits(show_queries=True))
    assert shown["containers"][0]["command"].startswith("sh -c for i in $(seq 1 30); do echo line $i;")


@pytest.mark.integration
def test_long_lines_are_cut_and_the_whole_fits_max_bytes(engine: DockerEngine, containers: Containers) -> None:
    """20 lines of 5000 characters, 1 KiB of evidence allowed: the newest lines stay, each cut short."""
    wide = containers.create(
        "wide", ["sh", "-c", "for i in $(seq 1 20); do printf \"$i%05000d\\n\" 0; done; exit 1"]
    )
    containers.wait_exited(wide)
    wait_until(lambda: logged(containers, wide, b"\n20000"), what="the last wide line in the log")
    check = ContainersProbe(ContainersParams(names=[containers.name("wide")]), engine, time.time)
    readings = check.measure()
    bounds = limits(max_bytes=1024)

    sections = timed(check, readings, bounds)

    assert json_size(sections) <= bounds.max_bytes
    lines = sections["last log lines"][containers.name("wide")]
    assert lines, sections
    assert all(len(line) == LINE_CHARS for line in lines)
    assert lines[-1].startswith("20000")  # the newest line is kept; the oldest went first
    assert "log lines dropped" in sections["cut"]["max_bytes"]
    assert sections["containers"][0]["exit_code"] == 1


@pytest.mark.integration
def test_memory_probe_describes_its_containers(engine: DockerEngine, containers: Containers) -> None:
    cid = containers.create("capped", ["sh", "-c", "echo started; exec sleep 600"], mem_limit="64m")
    wait_until(lambda: logged(containers, cid, b"started"), what="the container to start")
    params = MemoryParams(names=[containers.name("capped")])
    memory = PROBES["docker.container_memory"].factory(params, engine, time.time)  # as the registry builds it
    readings = wait_until(memory.measure, what="a memory reading")
    assert isinstance(memory, Describes)

    sections = timed(memory, readings, limits())

    row = sections["containers"][0]
    assert row["status"] == "running"
    assert row["memory_limit_bytes"] == 64 * 2**20
    assert row["oom_killed"] is False
    assert sections["last log lines"][containers.name("capped")] == ["started"]


@pytest.mark.integration
def test_engine_and_disk_show_version_and_system_df(engine: DockerEngine, containers: Containers) -> None:
    containers.create("stopped", ["true"])
    version = containers.api.version()
    bounds = limits()

    engine_sections = timed(EngineProbe(EngineParams(), engine, time.time), [], bounds)
    disk = DiskProbe(DiskParams(), engine, time.time)
    asked = timed(disk, [], bounds)  # no run of its own yet: it asks the engine
    disk_sections = timed(disk, disk.measure(), bounds)  # after a run: that run's system df, no second one

    assert engine_sections["engine"]["version"] == version["Version"]
    assert engine_sections["engine"]["api_version"] == version["ApiVersion"]
    assert set(engine_sections) == {"engine", "disk use (system df)"}
    # The engine is shared with other test sessions: counts are checked for sense, not against a second df.
    summary = disk_sections["disk use (system df)"]
    assert set(summary) == {"images", "containers", "volumes", "build cache"}
    assert summary["images"]["count"] >= 1 and summary["images"]["bytes"] > 0
    assert summary["containers"]["count"] >= 1
    assert all(summary[kind]["bytes"] >= summary[kind]["prunable_bytes"] >= 0 for kind in summary)
    biggest = [row["bytes"] for row in disk_sections["largest images"]]
    assert biggest == sorted(biggest, reverse=True) and 1 <= len(biggest) <= 10
    assert len(disk_sections["largest container layers"]) >= 1
    assert json_size(disk_sections) <= bounds.max_bytes
    assert "system df taken" not in asked and "system df taken" in disk_sections
    assert asked["disk use (system df)"]["images"]["count"] >= 1 and asked["largest images"]
    late = DiskProbe(DiskParams(), engine, time.time).describe([], EvidenceLimits(time.monotonic(), 65536))
    assert late == {"engine": {"url": engine.url}, "cut": {"deadline": "the engine was not asked"}}


@pytest.mark.integration
def test_a_past_deadline_describes_nothing_and_says_so(engine: DockerEngine, containers: Containers) -> None:
    run_crash(containers)
    readings = ContainersProbe(ContainersParams(names=[containers.name("crash")]), engine, time.time).measure()
    probe = ContainersProbe(ContainersParams(), engine, time.time)

    sections = probe.describe(readings, EvidenceLimits(deadline=time.monotonic(), max_bytes=65536))

    assert sections["containers"] == []
    assert containers.name("crash") in sections["cut"]["deadline"]


@pytest.mark.integration
def test_unreadable_logs_and_a_slow_read_are_errors_not_an_outage(
    engine: DockerEngine, containers: Containers
) -> None:
    """A log driver that cannot be read back is shown as such; running out of the evidence deadline is
    not an engine outage: the next probe run must not fail on a backoff that describe caused."""
    cid = containers.create("nolog", ["sh", "-c", "echo hidden; exit 4"], log_config={"Type": "none"})
    up = containers.create("up", ["sleep", "600"])
    containers.wait_exited(cid)
    check = ContainersProbe(ContainersParams(names=[containers.name("nolog")]), engine, time.time)

    sections = check.describe(check.measure(), limits())

    assert sections["containers"][0]["exit_code"] == 4
    assert "does not support reading" in sections["last log lines"][containers.name("nolog")]["error"]
    # stream=false without one-shot: the engine waits for a second stats sample, a second or more.
    with pytest.raises(DockerError, match=r"no answer within 0\.2s"):
        engine.read("slow stats", f"/containers/{up}/stats", timeout=0.2, params={"stream": "false"})
    assert engine.ping() >= 0  # no "unreachable, next attempt in ..."
    assert check.measure()[0].details["exit_code"] == 4


# --------------------------------------------------------------------------- pure parts


def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def test_log_lines_unframes_stdout_and_stderr_and_joins_split_lines() -> None:
    data = (
        frame(1, b"one\n")
        + frame(2, b"err part ")  # Docker splits long lines at 16 KiB: one line in two frames
        + frame(1, b"two\nthree\n")
        + frame(2, b"two\n")
        + frame(1, b"\xffbad utf8\r\n")
        + frame(1, b"no newline at the end")
    )
    assert log_lines(data) == [
        ("stdout", "one"),
        ("stdout", "two"),
        ("stdout", "three"),
        ("stderr", "err part two"),
        ("stdout", "\ufffdbad utf8"),
        ("stdout", "no newline at the end"),
    ]


def test_log_lines_of_a_tty_container_and_of_a_cut_read() -> None:
    assert log_lines(b"raw tty\r\nline two\n") == [("stdout", "raw tty"), ("stdout", "line two")]
    cut = frame(1, b"whole\n") + frame(1, b"half of a long frame")[:15]
    assert log_lines(cut) == [("stdout", "whole"), ("stdout", "half of")]
    assert log_lines(b"") == []


def test_log_rows_keep_the_last_lines_cut_and_marked() -> None:
    lines = [("stdout", f"n{i}") for i in range(30)] + [("stderr", "x" * 500)]
    rows = log_rows(lines, 5)
    assert rows[:4] == ["n26", "n27", "n28", "n29"]
    assert rows[-1] == "[stderr] " + "x" * (LINE_CHARS - len("[stderr] "))
    assert log_rows(lines, 0) == []


def test_fit_drops_oldest_lines_of_the_longest_log_first_then_rows() -> None:
    logs = {"a": [f"a{i}" + "." * 100 for i in range(20)], "b": [f"b{i}" + "." * 100 for i in range(5)]}
    sections: dict[str, Any] = {"containers": [{"container": "a"}, {"container": "b"}], "last log lines": logs}
    dropped = fit_lines(sections, "last log lines", 2048, "log lines")
    assert json_size(sections) <= 2048 - FIT_SLACK
    assert logs["a"][-1].startswith("a19") and logs["b"][-1].startswith("b4")  # the newest stay
    assert len(logs["b"]) == 5 and len(logs["a"]) >= 5  # taken from the longest first
    assert dropped == {"log lines": 25 - len(logs["a"]) - len(logs["b"])}
    tiny: dict[str, Any] = {"containers": [{"container": "x" * 300}] * 5, "last log lines": {}}
    assert fit_lines(tiny, "last log lines", 1024, "log lines")["rows"] >= 3
    assert json_size(tiny) <= 1024
    assert json.dumps(tiny)
