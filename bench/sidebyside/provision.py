"""What the benchmark needs on the host: two Debian packages and a clean venv with watchdogd.

Stdlib only: this runs before the venv exists, under whatever ``python3``
started ``bench/run``.

The packages' own services must not start: a node_exporter on :9100 and a
Monit on the host would be measured by nobody and left behind. Debian's
``policy-rc.d`` hook is made for exactly this; where the host has none, a
temporary one that denies every start is put in place for the install only.
On a systemd host the units are also disabled, so a reboot does not start
them either. The benchmark runs its own copies on temporary ports and files.

The venv matters for the figures: APScheduler and pydantic look at the
installed distributions' metadata at import, so a daemon started from a
development interpreter with hundreds of packages is bigger and slower to
start than the packaged one (a small venv under /opt/watchdogd).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PACKAGES = {"prometheus-node-exporter": "prometheus-node-exporter", "monit": "monit"}
"""Debian package -> the binary it provides."""
UNITS = {"prometheus-node-exporter": "prometheus-node-exporter.service", "monit": "monit.service"}
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
APT_TIMEOUT = 900.0
PIP_TIMEOUT = 900.0
SOURCE_PARTS = ("pyproject.toml", "README.md", "LICENSE", "watchdogd")
"""What ``pip install .`` needs from the checkout; copied so the build leaves no build/ or egg-info in the tree."""


class ProvisionError(RuntimeError):
    """A package or the venv could not be installed; the message says what was run and its output."""


def binary(package: str) -> str | None:
    return shutil.which(PACKAGES[package])


def ensure_packages(log: list[str]) -> None:
    """apt-get install what is missing, with service starts denied; notes what was done in ``log``."""
    missing = [pkg for pkg in PACKAGES if binary(pkg) is None]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise ProvisionError(f"{', '.join(missing)} missing and there is no apt-get to install them")
    with _services_denied():
        _apt(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], retry_after_update=True)
    log.append(f"installed {', '.join(missing)} (apt-get) without starting the packages' services")
    _disable_at_boot(missing, log)
    still = [pkg for pkg in missing if binary(pkg) is None]
    if still:
        raise ProvisionError(f"{', '.join(still)} still missing after apt-get install")


def _disable_at_boot(packages: Sequence[str], log: list[str]) -> None:
    """The packages enable their services for the next boot; the benchmark only wanted the binaries."""
    if Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
        units = [UNITS[pkg] for pkg in packages]
        subprocess.run(["systemctl", "disable", "--now", *units], capture_output=True, check=False, timeout=60)
        log.append(f"disabled {', '.join(units)} (systemctl)")
    elif shutil.which("update-rc.d"):
        for package in packages:
            subprocess.run(["update-rc.d", package, "disable"], capture_output=True, check=False, timeout=60)
        log.append(f"disabled the init scripts of {', '.join(packages)} (update-rc.d)")


@contextmanager
def _services_denied() -> Iterator[None]:
    """A policy-rc.d that answers 101 ("action forbidden") while apt runs, unless the host already has one."""
    if POLICY_RC_D.exists():
        yield
        return
    POLICY_RC_D.write_text("#!/bin/sh\n# temporary, from watchdogd bench/run: no service starts during its apt-get\n"
                           "exit 101\n")
    POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        POLICY_RC_D.unlink(missing_ok=True)


def _apt(argv: Sequence[str], *, retry_after_update: bool) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=APT_TIMEOUT)
    if proc.returncode != 0 and retry_after_update:  # stale package lists are the usual cause
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, check=False, timeout=APT_TIMEOUT)
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=APT_TIMEOUT)
    if proc.returncode != 0:
        raise ProvisionError(f"{' '.join(argv)} failed (exit {proc.returncode}):\n{_tail(proc.stdout + proc.stderr)}")


@dataclass(frozen=True)
class Venv:
    python: Path
    rebuilt: bool


def default_venv_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "watchdogd-bench" / "venv"


def ensure_venv(repo: Path, directory: Path, log: list[str]) -> Venv:
    """A venv with watchdogd installed from ``repo`` (not editable), its dependencies pinned by pip.

    The dependencies are reinstalled only when pyproject.toml or the
    interpreter changed (a stamp file); watchdogd itself is reinstalled
    every run, so the code measured is always the checkout's.
    """
    stamp = directory / ".bench-stamp"
    want = _stamp(repo)
    python = directory / "bin" / "python"
    rebuilt = not (python.exists() and stamp.exists() and stamp.read_text() == want)
    with tempfile.TemporaryDirectory(prefix="watchdogd-bench-src-") as tmp:
        source = _copy_source(repo, Path(tmp) / "src")
        if rebuilt:
            shutil.rmtree(directory, ignore_errors=True)
            directory.parent.mkdir(parents=True, exist_ok=True)
            _run([sys.executable, "-m", "venv", str(directory)])
            _pip(python, ["install", "setuptools>=68"])
            _pip(python, ["install", str(source)])
            stamp.write_text(want)
            log.append(f"built the venv {directory} (python3 -m venv + pip install .)")
        else:
            _pip(python, ["install", "--no-deps", "--no-build-isolation", "--force-reinstall", str(source)])
            log.append(f"reinstalled watchdogd into the cached venv {directory} (pip install --no-deps .)")
    return Venv(python, rebuilt)


def _stamp(repo: Path) -> str:
    digest = hashlib.sha256((repo / "pyproject.toml").read_bytes())
    digest.update(sys.version.encode())
    return digest.hexdigest()


def _copy_source(repo: Path, target: Path) -> Path:
    target.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in SOURCE_PARTS:
        path = repo / part
        if path.is_dir():
            shutil.copytree(path, target / part, ignore=ignore)
        elif path.exists():
            shutil.copy2(path, target / part)
    return target


def _pip(python: Path, args: Sequence[str]) -> None:
    _run([str(python), "-m", "pip", args[0], "--quiet", "--disable-pip-version-check", *args[1:]])


def _run(argv: Sequence[str]) -> None:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=PIP_TIMEOUT)
    if proc.returncode != 0:
        raise ProvisionError(f"{' '.join(argv)} failed (exit {proc.returncode}):\n{_tail(proc.stdout + proc.stderr)}")


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
