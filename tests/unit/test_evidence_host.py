"""Evidence of the host and process probes (``describe``), against this machine's real /proc and files in tmp_path.

The processes looked for are real children (spinning, holding memory, holding
a deleted file open); the trees scanned are built in tmp_path. What is checked
is what the runbook needs: the culprit is in the list, the lists are bounded,
secrets in command lines stay out, and a scan cut short says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from watchdogd.contracts import Describes, EvidenceLimits, Reading
from watchdogd.families.host import evidence
from watchdogd.families.host.probes import PROBES as HOST
from watchdogd.families.process import procfs
from watchdogd.families.process.probes import PROBES as PROCESS
from watchdogd.families.process.probes import _fit_rows

SPIN = "print('ready', flush=True)\nwhile True: pass"
HOLD = "import time\nblob = b'x' * (160 << 20)\nprint('ready', flush=True)\nwhile True: time.sleep(1)"
IDLE = "import time\nprint('ready', flush=True)\nwhile True: time.sleep(1)"


def limits(seconds: float = 2.0, **kwargs: Any) -> EvidenceLimits:
    return EvidenceLimits(deadline=time.monotonic() + seconds, max_bytes=kwargs.pop("max_bytes", 64 * 1024), **kwargs)


def make(table: dict[str, Any], kind: str, **params: Any) -> Any:
    spec = table[kind]
    return spec.factory(spec.params(**params), None, time.time)


def size(sections: dict[str, Any]) -> int:
    return len(json.dumps(sections))


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    children: list[subprocess.Popen[bytes]] = []

    def start(code: str, *args: str) -> subprocess.Popen[bytes]:
        child = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE)
        children.append(child)
        assert child.stdout is not None and child.stdout.readline() == b"ready\n", "child did not start"
        return child

    try:
        yield start
    finally:
        for child in children:
            child.kill()
        for child in children:
            child.wait(timeout=10)
            if child.stdout is not None:
                child.stdout.close()


@pytest.fixture
def secret() -> str:
    return f"--password=s3cret-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- host: processes


def test_every_host_probe_describes() -> None:
    for kind in HOST:
        assert isinstance(make(HOST, kind, **_params(kind)), Describes), kind


def _params(kind: str) -> dict[str, Any]:
    return {"host.file_age": {"path": "/tmp/*"}, "host.dir_size": {"path": "/tmp"}}.get(kind, {})


def test_cpu_evidence_finds_the_spinning_process_and_hides_its_arguments(spawn: Any, secret: str) -> None:
    child = spawn(SPIN, secret)
    probe = make(HOST, "host.cpu")
    started = time.monotonic()
    sections = probe.describe(probe.measure(), limits())
    elapsed = time.monotonic() - started
    assert elapsed < 1.9
    by_cpu = sections["top processes by CPU"]
    assert 0 < len(by_cpu) <= 20
    row = next(r for r in by_cpu if r["pid"] == child.pid)
    assert row["cpu_percent"] > 20  # it spins on one core; the box may be busy with others
    assert row["user"] == psutil.Process().username()
    assert row["cmdline"] == f"{sys.executable} <redacted>"
    assert [r["cpu_percent"] for r in by_cpu] == sorted((r["cpu_percent"] for r in by_cpu), reverse=True)
    assert secret not in json.dumps(sections)
    assert sections["process sample"]["cut"] is None
    print(f"host.cpu describe: {elapsed * 1000:.0f} ms, {size(sections)} bytes")


def test_show_queries_shows_the_whole_command_line_cut_short(spawn: Any, secret: str) -> None:
    child = spawn(SPIN, secret, "x" * 500)
    sections = make(HOST, "host.load").describe([], limits(show_queries=True, max_items=3))
    assert len(sections["top processes by CPU"]) <= 3
    row = next(r for r in sections["top processes by CPU"] if r["pid"] == child.pid)
    assert row["cmdline"].startswith(f"{sys.executable} -c ")
    assert secret in row["cmdline"]
    assert len(row["cmdline"]) == evidence.CUT
    assert isinstance(sections["processes waiting on I/O (state D)"], list)


def test_memory_evidence_breakdown_and_the_process_holding_memory(spawn: Any) -> None:
    child = spawn(HOLD)
    probe = make(HOST, "host.memory")
    sections = probe.describe(probe.measure(), limits())
    breakdown = sections["memory breakdown (bytes)"]
    assert breakdown["total"] == psutil.virtual_memory().total
    assert 0 < breakdown["available"] <= breakdown["total"]
    assert {"cached", "swap_used", "swap_total"} <= set(breakdown)
    row = next(r for r in sections["top processes by memory"] if r["pid"] == child.pid)
    assert row["rss_bytes"] >= 160 << 20
    rss = [r["rss_bytes"] for r in sections["top processes by memory"]]
    assert rss == sorted(rss, reverse=True)
    assert set(make(HOST, "host.swap").describe([], limits())) == set(sections)


def test_process_sample_stops_at_the_deadline() -> None:
    started = time.monotonic()
    sections = evidence.processes(EvidenceLimits(deadline=time.monotonic(), max_bytes=65536))
    assert time.monotonic() - started < 0.5
    assert sections["process sample"]["cut"] == "deadline"
    assert sections["top processes by CPU"] == []


def test_command_redaction() -> None:
    assert evidence.command(["/usr/bin/mysql", "-psecret"], "mysql", show=False) == "/usr/bin/mysql <redacted>"
    assert evidence.command(["/usr/sbin/nginx"], "nginx", show=False) == "/usr/sbin/nginx"
    assert evidence.command([], "kworker/0:1", show=False) == "[kworker/0:1]"
    assert evidence.command(["a", "-psecret"], "a", show=True) == "a -psecret"


# --------------------------------------------------------------------------- host: trees


def write(path: Path, nbytes: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(nbytes))
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write(root / "logs" / "app.log", 3 << 20)
    write(root / "logs" / "old" / "app.log.1", 1 << 20)
    write(root / "cache" / "a.bin", 256 << 10)
    for i in range(40):
        write(root / "sessions" / f"s{i}", 10)
    sparse = root / "disk.img"
    with sparse.open("wb") as handle:
        handle.truncate(1 << 30)  # 1 GiB apparent, no blocks: not what fills a disk
    (root / "cache" / "again").mkdir()
    # The same 3 MiB again, found after the first name (breadth first): counted once, as du does.
    os.link(root / "logs" / "app.log", root / "cache" / "again" / "hardlink.log")
    os.symlink("/", root / "to-root")  # never followed
    return root


def test_scan_finds_where_the_bytes_are(tree: Path) -> None:
    scan = evidence.scan_tree(str(tree), time.monotonic() + 5, max_files=3, one_filesystem=True)
    assert scan.cut is None and scan.unscanned == 0
    logs = tree / "logs"
    assert scan.bytes[str(logs / "old")] >= 1 << 20
    assert scan.bytes[str(logs)] >= (4 << 20)  # its own file plus its subdirectory's
    assert scan.bytes[str(tree)] < 5 << 20  # the sparse file and the second hard link add nothing
    assert scan.inodes[str(tree / "sessions")] == 40
    assert scan.direct[str(tree)] == 5  # logs, cache, sessions, disk.img, to-root
    files = sorted(scan.files, reverse=True)
    assert len(files) == 3
    assert files[0][1] == str(logs / "app.log")
    assert files[1][1] == str(logs / "old" / "app.log.1")
    assert not any("to-root/" in d for d in scan.bytes)

    sections = evidence.scan_sections(scan, limits(max_items=2), by_inodes=False)
    largest = sections[f"largest directories under {tree}"]
    assert [r["path"] for r in largest] == [str(logs), str(logs / "old")]
    assert len(sections[f"largest files under {tree}"]) == 2
    crowded = evidence.scan_sections(scan, limits(max_items=2), by_inodes=True)
    assert crowded[f"directories with most entries directly in them under {tree}"][0] == {
        "path": str(tree / "sessions"), "entries": 40,
    }


def test_scan_cut_by_entries_and_by_deadline_says_so(tree: Path) -> None:
    scan = evidence.scan_tree(str(tree), time.monotonic() + 5, max_files=3, one_filesystem=True, max_entries=10)
    assert scan.entries == 10
    assert scan.cut == "entry limit (10)"
    late = evidence.scan_tree(str(tree), time.monotonic(), max_files=3, one_filesystem=True)
    assert late.cut == "deadline" and late.entries == 0 and late.unscanned == 1


def test_scan_stays_on_one_filesystem() -> None:
    if os.stat("/").st_dev == os.stat("/proc").st_dev:
        pytest.skip("/proc is not a filesystem of its own here")
    scan = evidence.scan_tree("/", time.monotonic() + 1.0, max_files=1, one_filesystem=True, max_entries=500)
    assert "/proc" not in scan.bytes
    assert any(d.startswith("/usr") or d.startswith("/etc") for d in scan.bytes)


def test_disk_evidence_scans_the_subject_and_finds_a_deleted_file_held_open(tree: Path) -> None:
    held = write(tree / "logs" / "rotated-away.log", 2 << 20)
    with held.open("rb"):
        held.unlink()
        probe = make(HOST, "host.disk")
        started = time.monotonic()
        sections = probe.describe([Reading(str(tree), 97.0, {})], limits())
        elapsed = time.monotonic() - started
    assert elapsed < 1.9
    assert sections[f"scan of {tree}"]["partial"] is None
    assert sections[f"largest directories under {tree}"][0]["path"] == str(tree / "logs")
    deleted = sections["deleted files still open"]
    row = next(r for r in deleted if r["path"] == str(held))
    assert row["pid"] == os.getpid() and row["bytes"] >= 2 << 20
    assert sections["deleted files search"]["total_bytes"] >= 2 << 20
    journal = sections.get("journal disk usage")
    journal_dev = {os.stat(d).st_dev for d in evidence.JOURNAL_DIRS if os.path.isdir(d)}
    assert (journal is not None) == (os.stat(tree).st_dev in journal_dev)
    print(f"host.disk describe (small tree): {elapsed * 1000:.0f} ms, {size(sections)} bytes")


def test_inodes_evidence_names_the_crowded_directory(tree: Path) -> None:
    sections = make(HOST, "host.inodes").describe([Reading(str(tree), 99.0, {})], limits(max_items=1))
    assert sections[f"directories with most entries directly in them under {tree}"] == [
        {"path": str(tree / "sessions"), "entries": 40}
    ]


def test_dir_size_and_file_age_evidence(tree: Path) -> None:
    sections = make(HOST, "host.dir_size", path=str(tree)).describe([], limits(max_items=1))
    assert sections[f"largest directories under {tree}"][0]["path"] == str(tree / "logs")
    backups = [write(tree / "backups" / f"db-{i}.sql.gz", 100 * i) for i in range(30)]
    for i, backup in enumerate(backups):
        os.utime(backup, (1_700_000_000 + i * 86400, 1_700_000_000 + i * 86400))
    probe = make(HOST, "host.file_age", path=f"{tree}/backups/*.sql.gz")
    assert probe.describe([], limits()) == {"newest matching files": [], "pattern": f"{tree}/backups/*.sql.gz"}
    readings = probe.measure()
    found = probe.describe(readings, limits(max_items=3))
    assert found["newest matching files"] == [
        {"path": str(backups[i]), "modified": evidence.iso(1_700_000_000 + i * 86400), "bytes": 100 * i}
        for i in (29, 28, 27)
    ]
    assert len(probe.describe(readings, limits(max_items=50))["newest matching files"]) == 20  # KEPT


def test_journal_usage_runs_journalctl_only_where_the_journal_lives() -> None:
    assert evidence.journal_usage(set(), time.monotonic() + 2) is None
    present = [d for d in evidence.JOURNAL_DIRS if os.path.isdir(d)]
    if not present:
        pytest.skip("no journal directory on this host")
    usage = evidence.journal_usage({os.stat(present[0]).st_dev}, time.monotonic() + 2)
    assert usage is not None and present[0] in usage["directories"]
    if usage.get("error") is None:
        assert usage["usage"] is not None, usage  # "Archived and active journals take up 8.0M ..."


def test_fit_keeps_the_first_rows_and_says_what_it_left_out() -> None:
    sections: dict[str, Any] = {
        "summary": {"entries": 5},
        "big": [{"path": f"/p/{i}", "bytes": i} for i in range(200)],
        "small": [{"path": "/q"}],
    }
    fitted = evidence.fit(sections, 2000)
    assert size(fitted) <= 2000
    assert fitted["big"] == [{"path": f"/p/{i}", "bytes": i} for i in range(len(fitted["big"]))]
    assert 0 < len(fitted["big"]) < 200
    assert "big" in fitted["cut short"] and "small" not in fitted["cut short"]
    untouched = {"a": [1, 2, 3]}
    assert evidence.fit(dict(untouched), 1000) == untouched


def test_a_whole_disk_describe_keeps_to_a_small_max_bytes() -> None:
    sections = make(HOST, "host.disk").describe([Reading("/", 97.0, {})], limits(max_bytes=4096))
    assert size(sections) <= 4096
    assert "scan of /" in sections


# --------------------------------------------------------------------------- process


def test_every_process_probe_describes() -> None:
    for kind, spec in PROCESS.items():
        assert isinstance(spec.factory(spec.params(name="x"), None, time.time), Describes), kind


def test_process_evidence_rows_for_the_measured_processes(spawn: Any, secret: str) -> None:
    token = uuid.uuid4().hex
    spinner = spawn(SPIN, token, secret)
    idler = spawn(IDLE, token, secret)
    probe = make(PROCESS, "process.cpu", cmdline=token)
    readings = probe.measure()
    assert {r.details["pid"] for r in readings} == {spinner.pid, idler.pid}
    started = time.monotonic()
    sections = probe.describe(readings, limits())
    elapsed = time.monotonic() - started
    rows = {row["pid"]: row for row in sections["matching processes"]}
    assert set(rows) == {spinner.pid, idler.pid}
    assert rows[spinner.pid]["cpu_percent"] > 20
    assert rows[idler.pid]["cpu_percent"] < 5
    for row in rows.values():
        assert row["name"].startswith("python")
        assert row["user"] == psutil.Process().username()
        assert row["state"] in {"R", "S"}
        assert row["rss_bytes"] > 1 << 20  # a Python interpreter
        assert 0 <= row["age_seconds"] < 600
        assert row["fds"] >= 3 and row["fd_limit"] is not None
        assert row["cmdline"] == f"{sys.executable} <redacted>"
    assert token not in json.dumps(sections) and secret not in json.dumps(sections)
    assert sections["process sample"]["gone_since_measured"] == []
    print(f"process.cpu describe, 2 processes: {elapsed * 1000:.0f} ms, {size(sections)} bytes")


def test_process_evidence_asks_nss_once_per_owner(spawn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three rows of one owner: one user-name lookup (NSS may be a directory server, inside the deadline)."""
    import pwd  # noqa: PLC0415

    token = uuid.uuid4().hex
    children = [spawn(IDLE, token) for _ in range(3)]
    probe = make(PROCESS, "process.count", cmdline=token)
    readings = probe.measure()
    me = psutil.Process().username()
    asked: list[int] = []
    real = pwd.getpwuid

    def counting(uid: int) -> Any:
        asked.append(uid)
        return real(uid)

    monkeypatch.setattr(pwd, "getpwuid", counting)
    sections = probe.describe(readings, limits())
    assert {r["pid"] for r in sections["matching processes"]} == {c.pid for c in children}
    assert {r["user"] for r in sections["matching processes"]} == {me}
    assert asked == [os.getuid()]


def test_process_count_evidence_uses_the_pids_and_notices_the_gone(spawn: Any) -> None:
    token = uuid.uuid4().hex
    children = [spawn(IDLE, token) for _ in range(3)]
    probe = make(PROCESS, "process.count", cmdline=token)
    readings = probe.measure()
    children[0].kill()
    children[0].wait(timeout=10)
    sections = probe.describe(readings, limits(max_items=20, show_queries=True))
    assert {r["pid"] for r in sections["matching processes"]} == {c.pid for c in children[1:]}
    assert sections["process sample"]["gone_since_measured"] == [children[0].pid]
    assert all(token in r["cmdline"] for r in sections["matching processes"])  # show_queries: arguments too


def test_process_evidence_refuses_a_reused_pid() -> None:
    me = procfs.read_stat(os.getpid())
    assert me is not None
    reading = Reading(f"pid:{me.pid}", 1.0, {"pid": me.pid, "start_ticks": me.start_ticks + 1})
    sections = make(PROCESS, "process.rss", all=True).describe([reading], limits())
    assert sections["matching processes"] == []
    assert sections["process sample"]["gone_since_measured"] == [me.pid]


def test_process_rows_are_bounded_by_max_items_and_max_bytes(spawn: Any) -> None:
    token = uuid.uuid4().hex
    for _ in range(4):
        spawn(IDLE, token)
    probe = make(PROCESS, "process.age", cmdline=token)
    readings = probe.measure()
    assert len(probe.describe(readings, limits(max_items=2))["matching processes"]) == 2
    small = probe.describe(readings, limits(max_bytes=1024))
    assert size(small) <= 1024
    assert 0 < len(small["matching processes"]) < 4
    assert "matching processes" in small["cut short"]


def test_fit_rows_leaves_out_rows_from_the_end() -> None:
    sections: dict[str, Any] = {"rows": [{"n": i, "pad": "x" * 50} for i in range(50)]}
    fitted = _fit_rows(sections, "rows", 1500)
    assert size(fitted) <= 1500
    assert [r["n"] for r in fitted["rows"]] == list(range(len(fitted["rows"])))
