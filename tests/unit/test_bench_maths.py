"""bench/run's pure helpers: percentiles, /proc parsing, CPU maths, timestamps, headlines."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from sidebyside import families, procstats  # noqa: E402
from sidebyside.percentiles import median, percentile  # noqa: E402
from sidebyside.reaction import parse_docker_time  # noqa: E402


def test_percentile_is_nearest_rank_of_observed_values() -> None:
    values = [float(v) for v in range(1, 201)]  # 1..200, shuffled order must not matter
    values.reverse()
    assert percentile(values, 0.5) == 100.0
    assert percentile(values, 0.99) == 198.0
    assert percentile(values, 1.0) == 200.0
    assert percentile(values, 0.0) == 1.0
    assert median([3.0, 1.0, 2.0]) == 2.0


def test_percentile_rejects_nothing_to_rank() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 0.5)
    with pytest.raises(ValueError, match="within"):
        percentile([1.0], 1.5)


STAT = ("4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1200 0 0 0 "
        "150 75 3 4 20 0 3 0 12345 100000 2000 18446744073709551615")


def test_stat_ticks_survive_parentheses_and_spaces_in_comm() -> None:
    assert procstats.parse_stat_ticks(STAT) == 225  # utime 150 + stime 75, children's 3 + 4 not counted


def test_kib_fields_of_status_and_smaps_rollup() -> None:
    status = "Name:\tpython\nVmHWM:\t   50000 kB\nVmRSS:\t   47888 kB\nThreads:\t5\n"
    rollup = "00400000-7fff [rollup]\nRss:   47888 kB\nPss:   36075 kB\nPss_Anon:  30764 kB\n"
    assert procstats.parse_kib(status, "VmRSS") == 47888
    assert procstats.parse_kib(rollup, "Pss") == 36075  # not Pss_Anon
    assert procstats.parse_kib(status, "VmSwap") is None


def test_cpu_percent_of_one_core() -> None:
    before = procstats.Sample(ticks=1000, rss_kib=1, pss_kib=None, at=100.0)
    after = procstats.Sample(ticks=1030, rss_kib=1, pss_kib=None, at=700.0)  # 0.3 s of CPU in 600 s
    assert procstats.cpu_percent(before, after, hz=100) == pytest.approx(0.05)
    with pytest.raises(ValueError):
        procstats.cpu_percent(after, before, hz=100)


def test_host_cpu_counts_idle_and_iowait_as_not_busy() -> None:
    cpu = procstats.parse_host_cpu("cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\n")
    assert cpu == procstats.HostCpu(busy=160, total=1000)


def test_sample_of_this_process_is_sane() -> None:
    sample = procstats.sample(__import__("os").getpid())
    assert sample.rss_kib > 1000 and sample.ticks >= 0


def test_sample_of_a_missing_process_says_so() -> None:
    with pytest.raises(ProcessLookupError):
        procstats.sample(2**22 + 1)  # above pid_max's ceiling


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-22T22:38:39.123456789Z", 1795387119.123456),
        ("2026-11-22T22:38:39Z", 1795387119.0),
        ("2026-11-22T23:38:39.5+01:00", 1795387119.5),
    ],
)
def test_docker_timestamps_with_nanoseconds(text: str, expected: float) -> None:
    assert parse_docker_time(text) == pytest.approx(expected, abs=1e-6)


def test_headlines_pick_the_summary_lines_or_fall_back_to_the_last_two() -> None:
    bench = families.Bench("bench_x.py", "x", headline=(r"^policy\+guard",))
    lines = ["(50 cycles)", "policy+guard: 22.8 ms CPU (target <= 50 ms)", ""]
    assert families.headlines(bench, lines) == ["policy+guard: 22.8 ms CPU (target <= 50 ms)"]
    unknown = families.Bench("bench_y.py", "y")
    assert families.headlines(unknown, ["a", "b", "c", "  "]) == ["b", "c"]


def test_verdict_from_exit_status_and_printed_failures() -> None:
    assert families.verdict(0, ["all good: PASS"]) == "ok"
    assert families.verdict(0, ["  FAIL"]) == "FAIL"
    assert families.verdict(0, ["verdict: FAILED"]) == "FAIL"
    assert families.verdict(0, ["FAILOVER tested"]) == "ok"
    assert families.verdict(3, []) == "exit 3"


def test_plan_runs_new_bench_scripts_too(tmp_path: Path) -> None:
    (tmp_path / "bench_policy_guard.py").write_text("")
    (tmp_path / "bench_zeta.py").write_text("")
    scripts = [b.script for b in families.plan(tmp_path)]
    assert scripts[: len(families.BENCHES)] == [b.script for b in families.BENCHES]
    assert scripts[-1] == "bench_zeta.py"
