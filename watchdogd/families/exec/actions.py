"""``exec``: run an operator's command for the breaching subjects.

This is the escape hatch for runbook steps no built-in action covers, so it
is where a root daemon is easiest to turn against its host. Hence: argv
lists only (never a shell), an absolute program path (no PATH lookup that a
writable directory could hijack), a minimal environment, placeholders that
can only ever fill *part of one argument*, and a hard deadline that kills
the command's whole process group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import selectors
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from watchdogd import hazards
from watchdogd.contracts import ANY_SUBJECT, ActionParams, ActionResult, ActionSpec, Clock, ItemResult, Reading
from watchdogd.spec import Field, field_validator, model_validator
from watchdogd.units import Size

BASE_ENV: dict[str, str] = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
"""What a command sees besides the operator's ``env``: nothing of the daemon's own environment leaks."""

PLACEHOLDERS: dict[str, str] = {
    "subject": "the subject's name (per_subject: true)",
    "value": "the subject's measured value (per_subject: true)",
    "subjects": "all subjects, comma-joined",
}
_PER_SUBJECT_ONLY = frozenset({"subject", "value"})
_SUBJECT_TEXT = frozenset({"subject", "subjects"})
"""Placeholders that carry a subject's name, which whoever names a key, a unit or a file chooses."""

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"\{\{|\}\}|\{(\w+)\}")
"""A placeholder, or an escaped brace. Anything else, ``{print $1}`` included, is literal text.

Deliberately not ``str.format``: its ``{0.__class__}`` attribute access and
format specs are an injection surface we have no use for.
"""

_KILL_GRACE = 5.0
"""Seconds to wait for a SIGKILLed group to be reaped before giving up on it."""


def placeholders_in(arg: str) -> list[str]:
    return [m.group(1) for m in _TOKEN.finditer(arg) if m.group(1) is not None]


def substitute(arg: str, values: dict[str, str]) -> str:
    """Fill placeholders inside one argv item; the result is still exactly one item."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return match.group(0)[0]  # "{{" -> "{", "}}" -> "}"
        return values[name]

    return _TOKEN.sub(replace, arg)


def format_value(value: float) -> str:
    """``90`` rather than ``90.0`` for whole numbers: commands often parse integers."""
    return str(int(value)) if value.is_integer() else repr(value)


class ExecParams(ActionParams):
    argv: list[str] = Field(min_length=1)
    env: dict[str, str] = {}
    cwd: str = "/"
    per_subject: bool = True
    max_output: Size = Field(default=4096, le=2**30)
    unsafe_shell_with_subject: bool = False
    """Run a shell or inline code with a subject in its script anyway (logged as a warning on every run)."""

    @field_validator("argv")
    @classmethod
    def _check_argv(cls, argv: list[str]) -> list[str]:
        if not os.path.isabs(argv[0]):
            raise ValueError(
                f"argv[0] must be an absolute path (no PATH lookup for a root daemon), got {argv[0]!r}"
            )
        if placeholders_in(argv[0]):
            raise ValueError("argv[0] must not contain placeholders: a subject must never choose the program")
        allowed = ", ".join("{" + name + "}" for name in PLACEHOLDERS)
        for index, arg in enumerate(argv):
            if "\0" in arg:
                raise ValueError(f"argv[{index}] contains a NUL byte")
            for name in placeholders_in(arg):
                if name not in PLACEHOLDERS:
                    raise ValueError(
                        f"argv[{index}] {arg!r}: unknown placeholder {{{name}}}; allowed: {allowed}"
                        " (write {{ and }} for literal braces)"
                    )
        return argv

    @field_validator("env")
    @classmethod
    def _check_env(cls, env: dict[str, str]) -> dict[str, str]:
        for key, value in env.items():
            if not key or "=" in key or "\0" in key or "\0" in value:
                raise ValueError(f"env: {key!r} is not a valid environment variable")
        return env

    @field_validator("cwd")
    @classmethod
    def _check_cwd(cls, cwd: str) -> str:
        if not os.path.isabs(cwd):
            raise ValueError(f"cwd must be an absolute path, got {cwd!r}")
        return cwd

    @model_validator(mode="after")
    def _check_mode(self) -> ExecParams:
        if not self.per_subject:
            used = sorted({name for arg in self.argv for name in placeholders_in(arg)} & _PER_SUBJECT_ONLY)
            if used:
                names = ", ".join("{" + name + "}" for name in used)
                raise ValueError(
                    f"argv uses {names}, which needs per_subject: true; with per_subject: false "
                    "the command runs once for all subjects: use {subjects}"
                )
        return self

    @model_validator(mode="after")
    def _check_shell(self) -> ExecParams:
        """A subject in a shell's script is a command injection: refused unless loudly opted in."""
        what = self.shell_hazard()
        if what is not None and not self.unsafe_shell_with_subject:
            used = next(
                name for arg in self.argv for name in placeholders_in(arg) if name in _SUBJECT_TEXT
            )
            raise ValueError(hazards.shell_problem(what, "{" + used + "}"))
        if what is None and self.unsafe_shell_with_subject:
            raise ValueError(
                f"{hazards.SHELL_OPT_IN} is set but argv runs no shell or inline code with a subject in its"
                " script: remove it, so it cannot silently cover a later edit"
            )
        return self

    def shell_hazard(self) -> str | None:
        return hazards.shell_with_subject(self.argv, _carries_subject)


def _carries_subject(arg: str) -> bool:
    return any(name in _SUBJECT_TEXT for name in placeholders_in(arg))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one command did; separate from ItemResult so the runner is testable alone."""

    returncode: int | None  # None: timed out or never started
    output: str
    duration: float
    timed_out: bool = False
    spawn_error: str | None = None


def _decode(kept: bytes, total: int) -> str:
    text = kept.decode("utf-8", errors="replace")
    if total > len(kept):
        text += f"\n[output truncated: {total - len(kept)} more bytes]"
    return text


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # The leader is not reaped yet, so its pid still names our process group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    # A process stuck in the kernel (D state) ignores even SIGKILL; do not hang the daemon on it.
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=_KILL_GRACE)


def run_command(
    argv: list[str], *, env: dict[str, str], cwd: str, timeout: float, max_output: int
) -> Outcome:
    """Run argv in its own session, keep the first ``max_output`` bytes, kill the group at the deadline.

    Output is drained as it comes (and the excess discarded) instead of
    ``communicate()``, which would hold a runaway command's gigabytes in
    the daemon's memory. The deadline also covers a grandchild that keeps
    the pipe open after the command itself exited.
    """
    started = time.monotonic()
    deadline = started + timeout
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    except (OSError, ValueError) as exc:
        return Outcome(None, "", time.monotonic() - started, spawn_error=str(exc))
    assert proc.stdout is not None
    kept = bytearray()
    total = 0
    timed_out = False
    with proc.stdout, selectors.DefaultSelector() as selector:
        fd = proc.stdout.fileno()
        selector.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            if not selector.select(remaining):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            total += len(chunk)
            if len(kept) < max_output:
                kept += chunk[: max_output - len(kept)]
        if not timed_out:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
        if timed_out:
            _kill_group(proc)
    return Outcome(
        None if timed_out else proc.returncode,
        _decode(bytes(kept), total),
        time.monotonic() - started,
        timed_out=timed_out,
    )


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


class ExecAction:
    """Runs the command once per subject (default) or once for the whole batch.

    Commands run one after another under one deadline (``timeout``) for the
    whole run, so an action never outlives its budget however many subjects
    it was given; subjects left when it runs out are reported as not run.
    """

    def __init__(self, params: ExecParams, clock: Clock) -> None:
        self._params = params
        self._env = {**BASE_ENV, **params.env}
        self._unsafe = params.shell_hazard() if params.unsafe_shell_with_subject else None
        if self._unsafe is not None:
            log.warning(
                "exec runs %s with a subject in its script (%s: true): a subject name can run commands",
                self._unsafe, hazards.SHELL_OPT_IN, extra={"fields": {"argv": params.argv}},
            )

    def _batches(self, subjects: Sequence[Reading]) -> list[tuple[str, dict[str, str]]]:
        joined = ",".join(r.subject for r in subjects)
        if not self._params.per_subject:
            return [(joined, {"subjects": joined})]
        return [
            (r.subject, {"subject": r.subject, "value": format_value(r.value), "subjects": joined})
            for r in subjects
        ]

    def thing(self, reading: Reading) -> str:
        """The command this reading makes us run (``NamesThing``), as one shell-quoted line.

        Per subject: argv with ``{subject}`` filled in, so two rules running
        the same script for the same subject share a cooldown. ``{value}``
        and ``{subjects}`` stay as written: they change from run to run and
        would make every key new. Once per batch: the argv as configured,
        the same command whatever breached.
        """
        keep = {name: "{" + name + "}" for name in PLACEHOLDERS}
        if self._params.per_subject:
            keep["subject"] = reading.subject
        return shlex.join(substitute(arg, keep) for arg in self._params.argv)

    def run(self, subjects: Sequence[Reading], *, dry_run: bool) -> ActionResult:
        params = self._params
        deadline = time.monotonic() + params.timeout
        items: list[ItemResult] = []
        for subject, values in self._batches(subjects):
            argv = [substitute(arg, values) for arg in params.argv]
            if dry_run:
                items.append(ItemResult(subject, True, f"would run: {argv!r}", {"argv": argv}))
                continue
            remaining = deadline - time.monotonic()
            if self._unsafe is not None:
                log.warning(
                    "exec runs %s with a subject in its script (%s: true)", self._unsafe, hazards.SHELL_OPT_IN,
                    extra={"fields": {"argv": argv, "subject": subject}},
                )
            if remaining <= 0:
                detail = f"not run: the action's timeout of {_seconds(params.timeout)} was used up"
                items.append(ItemResult(subject, False, detail, {"argv": argv}))
                continue
            outcome = run_command(
                argv, env=self._env, cwd=params.cwd, timeout=remaining, max_output=int(params.max_output)
            )
            items.append(self._item(subject, argv, outcome, remaining))
        failed = [item for item in items if not item.ok]
        error = f"{len(failed)} of {len(items)} commands failed" if failed else None
        verb = "would run" if dry_run else "ran"
        return ActionResult(
            ok=not failed, items=tuple(items), detail=f"{verb} {len(items)} command(s)", error=error
        )

    @staticmethod
    def _item(subject: str, argv: list[str], outcome: Outcome, timeout: float) -> ItemResult:
        info: dict[str, object] = {
            "argv": argv,
            "exit_status": outcome.returncode,
            "duration": round(outcome.duration, 3),
        }
        if outcome.spawn_error is not None:
            return ItemResult(subject, False, f"cannot run: {outcome.spawn_error}", info)
        if outcome.timed_out:
            detail = f"timed out after {_seconds(round(timeout, 3))}"
            if outcome.output:
                detail += f"\n{outcome.output}"
            return ItemResult(subject, False, detail, info)
        assert outcome.returncode is not None
        if outcome.returncode != 0:
            info["failure"] = _describe_exit(outcome.returncode)
        return ItemResult(subject, outcome.returncode == 0, outcome.output, info)


def _factory(params: ExecParams, _target: object, clock: Clock) -> ExecAction:
    return ExecAction(params, clock)


ACTIONS: dict[str, ActionSpec] = {
    "exec": ActionSpec(ExecParams, _factory, "run a command (argv, no shell) for the breaching subjects",
                       settle=15.0, accepts=ANY_SUBJECT),
}
