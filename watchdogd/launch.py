"""How the daemon's interpreter is started: one place for tests and benches; the unit and scripts/run are held to it.

``-OO`` drops the docstrings (and asserts) of every module the daemon loads.
The daemon never reads them, yet kept them resident for its whole life:
2.1 MiB at 1,000 rules, about 1.5 at the shipped policy (bench/README,
stop 37). Its asserts only narrow types for mypy.

``-X no_debug_ranges`` leaves out the column of every instruction (PEP
657's position tables), which the daemon's code objects also kept for its
whole life: 0.4-0.8 MiB at 1,000 rules (started twice each, bench/README,
stop 38). A traceback in the journal then lacks its ``^^^`` markers; its
file, line and source line stay.

Debian ships no ``.opt-2.pyc`` and the unit's file system is read-only, so
without a cache every start would compile each module again (+0.7 s and a
65 MiB peak): ``-X pycache_prefix`` keeps them in the unit's CacheDirectory,
written by the first start and read by the next ones. The packages clear it
on install and upgrade, as their sources carry the build's fixed mtime.

Command-line flags, not PYTHONOPTIMIZE, PYTHONNODEBUGRANGES or PYTHONPYCACHEPREFIX, so that
nothing the daemon starts inherits them: not an ``exec`` action's Python
script, whose asserts are its own business, and not the config child, which
reads docstrings (pydantic's checking models, argparse). ``-P``: ``-m`` would
put the working directory on sys.path.
"""

from __future__ import annotations

from pathlib import Path

FLAGS = ("-P", "-OO", "-X", "no_debug_ranges")
SHIPPED_PYTHON = "/opt/watchdogd/bin/python"
SHIPPED_PYCACHE = "/var/cache/watchdogd/pycache"

_WARM = """\
import importlib, pkgutil, watchdogd
for module in pkgutil.walk_packages(watchdogd.__path__, "watchdogd."):
    importlib.import_module(module.name)
"""


def interpreter(python: str | Path, pycache: str | Path) -> list[str]:
    """The interpreter and its flags, as the unit's ExecStart starts it."""
    return [str(python), *FLAGS, "-X", f"pycache_prefix={pycache}"]


def daemon_argv(python: str | Path, pycache: str | Path) -> list[str]:
    """``python -m watchdogd.daemon`` as shipped; the caller appends ``--config`` and the rest."""
    return [*interpreter(python, pycache), "-m", "watchdogd.daemon"]


def warm_argv(python: str | Path, pycache: str | Path) -> list[str]:
    """Compile into ``pycache`` every module the daemon could load, so that a measured start is not a cold one."""
    return [*interpreter(python, pycache), "-c", _WARM]
