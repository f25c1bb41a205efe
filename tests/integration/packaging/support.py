"""Building the packages once per session, and the host tools the packaging tests need.

The tools (lintian, rpmlint, rpm, busybox-static) are Debian packages; a
missing one is installed with apt-get, and a failure to do so fails the test
with apt's own message: nothing here skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[3]
BUILD = REPO / "packaging" / "build"
NEXT_SUFFIX = "+pkgtest2"
"""Appended to the version for the "newer build" the upgrade test installs (dpkg and rpm sort it higher)."""

HOST_TOOLS: dict[str, str] = {
    "lintian": "lintian",
    "rpmlint": "rpmlint",
    "rpm": "rpm",
    "busybox": "busybox-static",  # the shell of the scratch `rpm --root` the scriptlets run in
}
"""What the tests run -> the Debian package that provides it."""

T = TypeVar("T")


class PackagingTestError(AssertionError):
    """A step of a packaging test failed; the message names the step and carries its output."""


@dataclass(frozen=True)
class Packages:
    version: str
    deb: Path
    rpm: Path
    next_version: str
    next_deb: Path
    next_rpm: Path


def wait_until(predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not (last := predicate()):
        if time.monotonic() >= deadline:
            raise PackagingTestError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)  # polling a condition with a deadline
    return last


def run(argv: Sequence[str], *, timeout: float, what: str, check: bool = True,
        env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False,
                              env=env, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        raise PackagingTestError(f"{what}: timed out after {timeout:.0f}s: {' '.join(argv)}") from exc
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-40:])
        raise PackagingTestError(f"{what}: exit {proc.returncode}: {' '.join(argv)}\n{tail}")
    return proc


def ensure_host_tools() -> None:
    """Install the Debian packages the packaging tests use, if any is missing."""
    missing = [pkg for pkg in HOST_TOOLS.values() if not _dpkg_installed(pkg)]
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if run(install, timeout=600, what=f"apt-get install {' '.join(missing)}", check=False, env=env).returncode:
        run(["apt-get", "update", "-q"], timeout=600, what="apt-get update", env=env)
        run(install, timeout=600, what=f"apt-get install {' '.join(missing)}", env=env)


def _dpkg_installed(package: str) -> bool:
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True,
                          check=False)
    return proc.returncode == 0 and "install ok installed" in proc.stdout


def base_version() -> str:
    for line in (REPO / "watchdogd" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise PackagingTestError("no __version__ in watchdogd/__init__.py")


def build(dist: Path, version: str) -> tuple[Path, Path]:
    """Run ``packaging/build`` for ``version`` into ``dist``; return (deb, rpm)."""
    env = {**os.environ, "WATCHDOGD_VERSION": version, "WATCHDOGD_DIST": str(dist)}
    proc = run([str(BUILD)], timeout=900, what=f"packaging/build (version {version})", env=env, cwd=REPO)
    arch = run(["dpkg", "--print-architecture"], timeout=10, what="dpkg --print-architecture").stdout.strip()
    rpm_arch = {"amd64": "x86_64", "arm64": "aarch64"}[arch]
    deb, rpm = dist / f"watchdogd_{version}_{arch}.deb", dist / f"watchdogd-{version}.{rpm_arch}.rpm"
    for path in (deb, rpm):
        if not path.is_file():
            raise PackagingTestError(f"packaging/build did not produce {path}; it printed:\n{proc.stdout}{proc.stderr}")
    return deb, rpm


def build_all(dist: Path) -> Packages:
    version = base_version()
    deb, rpm = build(dist / "current", version)
    next_version = version + NEXT_SUFFIX
    next_deb, next_rpm = build(dist / "next", next_version)
    return Packages(version, deb, rpm, next_version, next_deb, next_rpm)


def busybox() -> Path:
    path = shutil.which("busybox") or "/bin/busybox"
    if not Path(path).exists():
        raise PackagingTestError("busybox not found although busybox-static is installed")
    return Path(path)
