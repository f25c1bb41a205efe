"""bench/bench_outage.py in its shortest form: one Redis outage, the table printed, nothing left behind."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.helpers import run

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[3] / "bench" / "bench_outage.py"


def test_bench_outage_one_redis_round() -> None:
    done = run([sys.executable, str(BENCH), "--rounds", "1", "--families", "redis"], timeout=110)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    row = next((line for line in lines if line.startswith("redis ")), "")
    # family, outage, then three "median / max" cells
    assert len(re.findall(r"\d+\.\d\d / +\d+\.\d\d", row)) == 3, done.stdout
    assert lines[-1].startswith("outage: stopped -> restart finished max") and "all measured" in lines[-1], done.stdout
    assert "could not be measured" not in done.stdout
