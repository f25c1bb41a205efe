"""``docker.container_memory`` and ``docker.container_cpu`` on real containers with real limits."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.docker.dockertest import Containers, wait_until
from watchdogd.families.docker.cgroup import CgroupFs
from watchdogd.families.docker.resources import CpuParams, CpuProbe, MemoryParams, MemoryProbe, Sampler
from watchdogd.families.docker.target import DockerEngine
from watchdogd.model import Reading

pytestmark = pytest.mark.integration

# dd fills its 40 MiB buffer from /dev/zero, then blocks writing into a pipe nobody reads: 40 MiB stay resident.
HOLD_40MIB = ["sh", "-c", "dd if=/dev/zero bs=40M count=2 | sleep 600"]


def short_names(readings: list[Reading], containers: Containers) -> dict[str, Reading]:
    return {r.subject.removeprefix(containers.prefix + "-"): r for r in readings}


@pytest.fixture(params=["cgroup", "api"])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Sampler]:
    """Both ways of measuring: the cgroup files, and the stats API (what a remote engine gets)."""
    if request.param == "cgroup":
        return "cgroup", Sampler()
    return "api", Sampler(CgroupFs(tmp_path))  # an empty /proc: no cgroup can be found, so the API answers


def test_memory_over_limit_is_detected(
    engine: DockerEngine, containers: Containers, source: tuple[str, Sampler]
) -> None:
    containers.create("hog", HOLD_40MIB, mem_limit="64m")
    containers.create("idle", ["sleep", "600"], mem_limit="64m")
    containers.create("unlimited", ["sleep", "600"])
    check = MemoryProbe(MemoryParams(names=[f"{containers.prefix}-*"]), engine, time.time, source[1])

    def hog_filled() -> dict[str, Reading] | None:
        readings = short_names(check.measure(), containers)
        return readings if readings.get("hog") and readings["hog"].value > 55 else None

    readings = wait_until(hog_filled, what="the hog to hold 40 MiB of its 64 MiB")
    hog = readings["hog"]
    assert 55 < hog.value < 80
    assert hog.details["limit_bytes"] == 64 * 2**20
    assert hog.details["used_bytes"] > 35 * 2**20
    assert hog.details["source"] == source[0]
    assert readings["idle"].value < 20
    assert "unlimited" not in readings  # no limit: nothing to be "over"
    everything = MemoryProbe(
        MemoryParams(names=[f"{containers.prefix}-*"], include_unlimited=True), engine, time.time, source[1]
    ).measure()
    unlimited = short_names(everything, containers)["unlimited"]
    assert unlimited.details["unlimited"] is True
    assert unlimited.value < 5


def test_cpu_is_percent_of_the_containers_allowance(
    engine: DockerEngine, containers: Containers, source: tuple[str, Sampler]
) -> None:
    containers.create("busy", ["sh", "-c", "while :; do :; done"], nano_cpus=int(0.5e9))
    containers.create("calm", ["sleep", "600"])
    check = CpuProbe(CpuParams(names=[f"{containers.prefix}-*"]), engine, time.time, source[1])
    assert check.measure() == []  # the first run only takes the baseline sample

    window = [time.monotonic()]

    def saturated() -> dict[str, Reading] | None:
        # Measure over at least a second: ten CFS periods, so the quota's on/off rhythm averages out.
        if time.monotonic() - window[0] < 1.0:
            return None
        window[0] = time.monotonic()
        readings = short_names(check.measure(), containers)
        return readings if readings.get("busy") and readings["busy"].value >= 80 else None

    readings = wait_until(saturated, timeout=15, what="the busy container to use its half core")
    assert readings["busy"].details["cores_allowed"] == 0.5
    assert 0.4 <= readings["busy"].details["cores_used"] <= 0.6
    assert readings["busy"].details["source"] == source[0]
    assert readings["calm"].value < 20
