"""Secrets (DSNs, passwords) from a file or the environment, never only inline.

Targets accept ``<name>`` inline for development, ``<name>_file`` (the
systemd-credentials / Docker-secrets way) or ``<name>_env``. Reading happens
at config load so a missing secret is a config error with file and line, not a
probe failure at 3 a.m.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def resolve_secret(inline: str | None, file: str | None, env: str | None, name: str) -> str | None:
    """Return the one configured source's value; raise ValueError when several or an unreadable one."""
    given = [source for source, value in (("", inline), ("_file", file), ("_env", env)) if value is not None]
    if len(given) > 1:
        raise ValueError(f"set only one of {', '.join(name + g for g in given)}")
    if file is not None:
        return _read_secret_file(Path(file))
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ValueError(f"environment variable {env} is not set")
        return value
    return inline


def _read_secret_file(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from exc
    if mode & stat.S_IROTH:
        raise ValueError(f"secret file {path} is readable by others; chmod o-r it")
    return text.strip()
