"""Reproducible builds: the same tree and SOURCE_DATE_EPOCH give bit-identical .deb and .rpm.

The session's first build (``packages``, SOURCE_DATE_EPOCH left to
packaging/build's default) is the first of the two; this module builds once
more into a fresh directory with the epoch the first one recorded, and the
files must have the same sha256. On a mismatch the message names what
differs (archive members, file metadata, rpm header tags), which is what
someone fixing the build needs first; ``diffoscope`` then shows the bytes.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.packaging.support import BUILD, REPO, Packages, run

# A third build of the session (about 20 s with a warm pip cache).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

MAX_REPORTED = 40
"""Differences listed in a failure message; the rest are counted."""

RPM_FILE_QUERY = (
    "[%{FILENAMES}\t%{FILEMODES:perms}\t%{FILEUSERNAME}:%{FILEGROUPNAME}\t%{FILEMTIMES}\t%{FILESIZES}\t"
    "%{FILEDIGESTS}\t%{FILELINKTOS}\t%{FILEFLAGS:fflags}\n]"
)


@dataclass(frozen=True)
class Rebuild:
    epoch: int
    deb: Path
    rpm: Path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rpm_build_time(rpm: Path) -> int:
    return int(run(["rpm", "-qp", "--qf", "%{BUILDTIME}", str(rpm)], timeout=60, what="rpm BUILDTIME").stdout)


@pytest.fixture(scope="module")
def rebuild(packages: Packages, tmp_path_factory: pytest.TempPathFactory) -> Rebuild:
    """The same version built again, into a directory of its own, with the first build's epoch."""
    epoch = rpm_build_time(packages.rpm)  # nFPM records SOURCE_DATE_EPOCH as the rpm's build time
    dist = tmp_path_factory.mktemp("rebuild")
    env = {**os.environ, "WATCHDOGD_VERSION": packages.version, "WATCHDOGD_DIST": str(dist),
           "SOURCE_DATE_EPOCH": str(epoch)}
    run([str(BUILD)], timeout=900, what="packaging/build (the second build)", env=env, cwd=REPO)
    deb, rpm = dist / packages.deb.name, dist / packages.rpm.name
    for path in (deb, rpm):
        assert path.is_file(), f"the second build did not produce {path.name}"
    return Rebuild(epoch, deb, rpm)


# --- what differs, for the failure message ---------------------------------------------------

def deb_members(deb: Path) -> dict[str, str]:
    """Each member of the control and data archives -> its metadata and content hash, in archive order."""
    members: dict[str, str] = {}
    for option, part in (("--ctrl-tarfile", "control"), ("--fsys-tarfile", "data")):
        stream = subprocess.run(["dpkg-deb", option, str(deb)], capture_output=True, check=True, timeout=120).stdout
        with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
            for position, member in enumerate(tar):
                handle = tar.extractfile(member) if member.isfile() else None
                digest = hashlib.sha256(handle.read()).hexdigest()[:16] if handle else "-"
                members[f"{part}:{member.name}"] = (
                    f"#{position} {member.mode:o} {member.uname}:{member.gname} mtime={member.mtime} "
                    f"size={member.size} link={member.linkname or '-'} sha256={digest}"
                )
    return members


def rpm_members(rpm: Path) -> dict[str, str]:
    """Each header tag (file arrays included) and each file's metadata, keyed by name."""
    xml = run(["rpm", "-qp", "--xml", str(rpm)], timeout=60, what="rpm -qp --xml").stdout
    members = {f"tag:{tag.get('name')}": hashlib.sha256(ET.tostring(tag)).hexdigest()[:16]
               for tag in ET.fromstring(xml)}
    files = run(["rpm", "-qp", "--qf", RPM_FILE_QUERY, str(rpm)], timeout=60, what="rpm -qp files").stdout
    for line in files.splitlines():
        name, _, rest = line.partition("\t")
        members[f"file:{name}"] = rest
    return members


def differences(first: Path, second: Path, members: Callable[[Path], dict[str, str]]) -> str:
    a, b = members(first), members(second)
    lines = [f"{name}: {a.get(name, '(absent)')} != {b.get(name, '(absent)')}"
             for name in sorted(a.keys() | b.keys()) if a.get(name) != b.get(name)]
    if not lines:
        lines = ["no member differs: the archives' own framing or compression does (try diffoscope)"]
    more = f"\n... and {len(lines) - MAX_REPORTED} more" if len(lines) > MAX_REPORTED else ""
    return "\n".join(lines[:MAX_REPORTED]) + more


# --- the tests -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["deb", "rpm"])
def test_two_builds_are_bit_identical(packages: Packages, rebuild: Rebuild, kind: str) -> None:
    first: Path = getattr(packages, kind)
    second: Path = getattr(rebuild, kind)
    if sha256(first) != sha256(second):
        report = differences(first, second, deb_members if kind == "deb" else rpm_members)
        pytest.fail(f"two builds with SOURCE_DATE_EPOCH={rebuild.epoch} differ: {first} != {second}:\n{report}")


def test_everything_packaged_carries_the_source_date(packages: Packages) -> None:
    """The clamp itself: no build-time mtime anywhere, in the files or in what nFPM adds."""
    epoch = rpm_build_time(packages.rpm)
    stray = {name: line for name, line in deb_members(packages.deb).items() if f" mtime={epoch} " not in line}
    assert not stray, f"{len(stray)} .deb members with another mtime, e.g. {sorted(stray.items())[:5]}"
    mtimes = run(["rpm", "-qp", "--qf", "[%{FILEMTIMES}\n]", str(packages.rpm)], timeout=60,
                 what="rpm FILEMTIMES").stdout.split()
    assert mtimes and set(mtimes) == {str(epoch)}, f"rpm file mtimes: {sorted(set(mtimes))[:5]}"
