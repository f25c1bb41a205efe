"""Talking to systemd through ``systemctl``: argv only, one call for many units, parsed ``key=value``.

Why systemctl and not D-Bus: the D-Bus client libraries are either a C
extension (dbus-python, needs libdbus at build time) or a new dependency
(jeepney), while ``systemctl show`` is on every systemd host, speaks the
same API underneath, prints stable machine-readable ``Key=value`` lines,
and answers for many units in one call. The cost (a fork per run, ~10 ms)
is negligible at a probe's interval.
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
from collections.abc import Callable, Sequence

SYSTEMCTL = "systemctl"
JOURNALCTL = "journalctl"
UNIT_SUFFIXES = (
    ".service", ".socket", ".target", ".timer", ".mount", ".automount", ".swap", ".path", ".slice", ".scope",
    ".device",
)
GLOB_CHARS = re.compile(r"[*?\[]")

Runner = Callable[[list[str], float], "subprocess.CompletedProcess[str]"]


class SystemctlError(Exception):
    """systemctl failed; the message is its own, on one line."""


class SystemctlTimeout(SystemctlError):
    """systemctl was still waiting (for a job, for the bus) when its time was up."""


def run_argv(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        encoding="utf-8",
        errors="replace",  # a journal line is whatever a service wrote: never fail on its bytes
        timeout=timeout,
        check=False,
        env={**os.environ, "LC_ALL": "C", "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "SYSTEMD_LESS": ""},
    )


def unit_name(name: str) -> str:
    """``nginx`` -> ``nginx.service``, as systemctl itself completes it."""
    return name if name.endswith(UNIT_SUFFIXES) or GLOB_CHARS.search(name) else f"{name}.service"


def is_glob(name: str) -> bool:
    return GLOB_CHARS.search(name) is not None


def one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


class Systemctl:
    """A thin argv wrapper; ``runner`` is injectable so parsing is testable without a systemd."""

    def __init__(self, runner: Runner = run_argv, timeout: float = 30.0) -> None:
        self._runner = runner
        self.timeout = timeout

    def call(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        argv = [SYSTEMCTL, "--no-pager", "--no-ask-password", *args]
        limit = self.timeout if timeout is None else timeout
        try:
            return self._runner(argv, limit)
        except FileNotFoundError:
            raise SystemctlError("systemctl is not installed on this host (is this a systemd host?)") from None
        except subprocess.TimeoutExpired:
            raise SystemctlTimeout(f"systemctl {args[0]} did not finish within {limit:.0f}s") from None

    def checked(self, *args: str, timeout: float | None = None) -> str:
        proc = self.call(*args, timeout=timeout)
        if proc.returncode != 0:
            raise SystemctlError(one_line(proc.stderr) or f"systemctl {args[0]}: exit status {proc.returncode}")
        return proc.stdout

    def list_units(self, patterns: Sequence[str]) -> list[str]:
        """Loaded units matching the glob patterns (inactive and failed ones included)."""
        out = self.checked("list-units", "--all", "--plain", "--no-legend", "--full", "--", *patterns)
        return parse_list_units(out, patterns)

    def show(
        self, units: Sequence[str], properties: Sequence[str], *, timeout: float | None = None
    ) -> dict[str, dict[str, str]]:
        """Unit id -> properties, for every unit in one call. Unknown units come back with LoadState=not-found."""
        if not units:
            return {}
        out = self.checked("show", f"--property={','.join(('Id', *properties))}", "--", *units, timeout=timeout)
        shown: dict[str, dict[str, str]] = {}
        for asked, block in zip(units, parse_show(out), strict=False):
            # Id is the canonical name; an alias asked for is answered under the real name.
            shown[asked] = block
        return shown


    def journal(self, unit: str, lines: int, *, timeout: float) -> list[str]:
        """The unit's last ``lines`` journal lines, oldest first, as ``journalctl -u UNIT -n N -o short-iso``.

        Read-only, argv only, bounded by ``timeout``; through the same
        runner as systemctl so tests can play it back. journalctl's own
        notes ("-- No entries --", "-- Journal begins at ...") are left out;
        its hint that this user cannot read the system journal is raised,
        because an empty list would say the unit logged nothing.
        """
        if not unit or unit.startswith("-"):
            raise SystemctlError(f"not a unit name: {unit!r}")
        argv = [JOURNALCTL, "--no-pager", "-u", unit, "-n", str(max(lines, 0)), "-o", "short-iso"]
        try:
            proc = self._runner(argv, timeout)
        except FileNotFoundError:
            raise SystemctlError("journalctl is not installed on this host") from None
        except subprocess.TimeoutExpired:
            raise SystemctlTimeout(f"journalctl did not finish within {timeout:.1f}s") from None
        found = parse_journal(proc.stdout)
        denied = _NOT_PERMITTED.search(proc.stderr)
        if not found and denied is not None:
            raise SystemctlError(
                f"cannot read the system journal (watchdogd needs root or the systemd-journal group): {denied[0]}"
            )
        if proc.returncode != 0:
            raise SystemctlError(one_line(proc.stderr) or f"journalctl: exit status {proc.returncode}")
        return found[-lines:] if lines > 0 else []


_NOT_PERMITTED = re.compile(
    r"No journal files were opened due to insufficient permissions|not seeing messages from other users"
)
_JOURNAL_NOTE = re.compile(r"^-- (No entries|Logs begin at|Journal begins at|Journal ends at)\b.* --$")


def parse_journal(text: str) -> list[str]:
    """``journalctl -o short-iso`` output -> its lines, without journalctl's own notes (a reboot marker stays)."""
    return [line.rstrip("\r") for line in text.splitlines() if line.strip() and not _JOURNAL_NOTE.match(line)]


def parse_show(text: str) -> list[dict[str, str]]:
    """``systemctl show`` output for several units: blank-line separated blocks of ``Key=value``."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            current[key] = value
    if current:
        blocks.append(current)
    return blocks


def parse_list_units(text: str, patterns: Sequence[str] = ()) -> list[str]:
    """Unit names from ``list-units --plain --no-legend`` (a leading status marker like ``●`` is dropped).

    Filtered again by the patterns, since old systemctl versions ignore
    patterns in some modes.
    """
    names = []
    for line in text.splitlines():
        fields = line.split()
        if fields and not fields[0].endswith(UNIT_SUFFIXES) and len(fields) > 1:
            fields = fields[1:]
        if not fields:
            continue
        name = fields[0]
        if not patterns or any(fnmatch.fnmatchcase(name, unit_name(p)) for p in patterns):
            names.append(name)
    return names


def own_unit(cgroup_file: str = "/proc/self/cgroup") -> str | None:
    """The unit this process runs in (``watchdogd.service``), from its cgroup path; None outside systemd."""
    try:
        with open(cgroup_file, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers in ("", "name=systemd"):
            for part in reversed(path.split("/")):
                if part.endswith((".service", ".scope")):
                    return part
    return None
