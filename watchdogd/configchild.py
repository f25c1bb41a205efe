"""Load the config in a short-lived child process, so the daemon never loads pydantic (issue 17).

Checking a config needs pydantic: its import, the validators of every model
a policy uses and the load's temporaries are 6-8 MiB that would stay in the
daemon's RSS for its whole life (bench/README.md, "pydantic out of the
daemon"). So the daemon runs ``python -m watchdogd.configchild PATH``, which
loads and checks the file exactly as ``watchdogctl check-config`` does, and
reads back either the problems or the checked config in its plain form
(``watchdogd.spec``), pickled. The child is this very interpreter running
this very package, started by the daemon with an argv list: what it writes
is trusted as the daemon's own objects are.

The answer on stdout is one byte and a body: ``C`` and the pickled Config,
or ``E`` and the problems, one per line. Anything else (a crash, a kill, a
timeout) becomes one problem naming the file, and the running config stays.
"""

from __future__ import annotations

import argparse
import pickle
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from watchdogd.configtypes import Config, ConfigError

CHECK_TIMEOUT = 120.0
"""Seconds a check may take: 1,000 rules check in about 2 s; past this something is wrong, not slow."""
CONFIG, PROBLEMS = b"C", b"E"


def load_config_in_child(path: Path, *, force_dry_run: bool = False, timeout: float = CHECK_TIMEOUT) -> Config:
    """``load_config`` run by a child of this interpreter; raises ConfigError exactly as it would."""
    argv = [sys.executable, "-P", "-m", "watchdogd.configchild", *(["--dry-run"] * force_dry_run), "--", str(path)]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise ConfigError([f"{path}:1: checking the config took longer than {timeout:g}s"]) from exc
    except OSError as exc:
        raise ConfigError([f"{path}:1: cannot start the config check ({sys.executable}): {exc}"]) from exc
    kind, body = done.stdout[:1], done.stdout[1:]
    if done.returncode == 0 and kind == CONFIG:
        config: Config = pickle.loads(body)  # noqa: S301 (our own child: see the module docstring)
        return config
    if done.returncode == 0 and kind == PROBLEMS:
        raise ConfigError(body.decode("utf-8", "replace").splitlines())
    said = done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no output"]
    raise ConfigError([f"{path}:1: the config check failed (exit {done.returncode}): {said[-1]}"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="watchdogd.configchild", description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    from watchdogd.config import load_config  # noqa: PLC0415 (the child's: the daemon imports none of the loader)

    try:
        config = load_config(args.path, force_dry_run=args.dry_run)
    except ConfigError as exc:
        answer = PROBLEMS + "\n".join(exc.problems).encode()
    else:
        answer = CONFIG + pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL)
    sys.stdout.buffer.write(answer)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
