"""What this daemon was built from, for ``watchdogd_build_info``: version, git revision, Python version.

The revision comes from, in order:

1. ``watchdogd/_revision.py``, written by the package build (``REVISION = "<sha>"``)
   into the copy it installs. It is a ``.py`` file only so that setuptools
   installs it with the package without any package-data setup; it is read as
   text, never imported, so a stale or broken one cannot break the start.
2. In a source checkout (the package directory sits next to ``.git``), the
   commit ``.git/HEAD`` names: the loose ref, else ``packed-refs``; worktrees
   (``.git`` a file naming the git dir, refs in its ``commondir``) too. Git is
   never run: no subprocess at start, and no dependency on git being installed.
3. ``unknown``.

Only the directory holding the package is looked at, never its parents: a
virtualenv that happens to live inside some other repository must not report
that repository's commit.

Read once at start (``current``) and passed to the exporter; nothing here is cached.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass
from pathlib import Path

UNKNOWN = "unknown"
GENERATED = "_revision.py"
"""The file the package build writes into the package directory."""

_SHA = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")  # SHA-1, or SHA-256 repositories
_GENERATED_LINE = re.compile(r"""^REVISION\s*=\s*["']([0-9A-Za-z._+-]{1,80})["']\s*$""", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class BuildInfo:
    version: str
    revision: str
    python_version: str


def current(version: str) -> BuildInfo:
    """This process's build: the package's revision and the interpreter it runs on."""
    package = Path(__file__).resolve().parent
    return BuildInfo(version, revision(package), platform.python_version())


def revision(package: Path) -> str:
    """The revision of the package in directory ``package``: generated file, else the checkout, else unknown."""
    return generated_revision(package) or git_revision(package.parent) or UNKNOWN


def generated_revision(package: Path) -> str | None:
    text = _read(package / GENERATED)
    match = _GENERATED_LINE.search(text) if text is not None else None
    return match.group(1) if match else None


def git_revision(root: Path) -> str | None:
    """The commit checked out in ``root`` (a working tree), from the files under ``.git`` alone."""
    gitdir = _git_dir(root)
    head = _read(gitdir / "HEAD") if gitdir is not None else None
    if gitdir is None or head is None:
        return None
    head = head.strip()
    if not head.startswith("ref:"):
        return head if _SHA.fullmatch(head) else None  # detached HEAD
    ref = head.removeprefix("ref:").strip()
    if not ref.startswith("refs/") or ".." in ref.split("/"):
        return None
    common = _common_dir(gitdir)
    for directory in dict.fromkeys((gitdir, common)):
        loose = _read(directory / ref)
        if loose is not None and _SHA.fullmatch(loose.strip()):
            return loose.strip()
    return _packed(common, ref)


def _git_dir(root: Path) -> Path | None:
    dot_git = root / ".git"
    if dot_git.is_dir():
        return dot_git
    pointer = _read(dot_git)  # a worktree or submodule: "gitdir: <path>"
    if pointer is None or not pointer.startswith("gitdir:"):
        return None
    return root / pointer.removeprefix("gitdir:").strip()  # an absolute path replaces root


def _common_dir(gitdir: Path) -> Path:
    """Where a worktree's shared refs live (its ``commondir``), or the git dir itself."""
    common = _read(gitdir / "commondir")
    return gitdir / common.strip() if common else gitdir


def _packed(common: Path, ref: str) -> str | None:
    for line in (_read(common / "packed-refs") or "").splitlines():
        sha, _, name = line.partition(" ")
        if name.strip() == ref and _SHA.fullmatch(sha):
            return sha
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
