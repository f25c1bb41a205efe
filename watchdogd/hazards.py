"""Configurations that would turn a root watchdog against its own host, refused when the config loads.

Each check is a pure function over config values returning a problem (one
line, saying why and what to do instead) or None, backed by a table rather
than a ladder of ifs. The exec and files.clean parameter validators call the
checks that need only their own values; ``config._Builder.build`` calls the
ones that compare an action with the daemon's own paths (state_dir, the
config's directory). ``docs/safety.md`` lists every refusal for operators.

The shell check looks at *where a subject lands*: inside a script's text
(``sh -c "... {subject}"``, ``python3 -c``, an awk program) or in the name of
the script to run, a subject name becomes code; as its own argv element after
the script (``sh -c 'fix "$1"' sh {subject}``) it stays data. What a script
then does with its arguments (``eval "$1"``) is the operator's own code, like
any script file, and beyond what a config check can see.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, Self, runtime_checkable

Tainted = Callable[[str], bool]
"""Whether one argv element carries a subject's text (``{subject}``, ``{subjects}``)."""

SHELL_OPT_IN = "unsafe_shell_with_subject"


# ---------------------------------------------------------------------------------------------
# exec: shells, interpreters and the wrappers that lead to them


@dataclass(frozen=True)
class Interpreter:
    """How a program's command line says "here is code": a flag's value, or its first operand.

    Letters are short options: ``inline`` take code (rest of the cluster or the next argument),
    ``files`` a script file, ``values`` any other value (``-W ignore``); ``glued`` take an optional
    value glued on only (``perl -i.bak``), ``digits`` optional digits (``perl -l0``) and ``stop``
    ends the options (``python -m module args``). A ``flag_then_operand`` program (sh) has a ``-c``
    *flag* and reads its script from the first operand.
    """

    inline: str = ""
    inline_long: frozenset[str] = frozenset()
    files: str = ""
    files_long: frozenset[str] = frozenset()
    values: str = ""
    values_long: frozenset[str] = frozenset()
    glued: str = ""
    digits: str = ""
    stop: str = ""
    program_text: bool = False  # awk, sed: without -e/-f the first operand is the program
    inline_ends_options: bool = False  # python -c CODE: what follows is the code's own argv
    flag_then_operand: bool = False  # sh -c: "c" is a flag, the script is the first operand
    what: str = "an interpreter running inline code"


_POSIX_SHELL = Interpreter(
    inline="c", values="oO", values_long=frozenset({"--rcfile", "--init-file"}),
    inline_long=frozenset({"--command"}), flag_then_operand=True, what="a shell",
)
_PYTHON = Interpreter(inline="c", values="WXQ", stop="m", inline_ends_options=True)
_AWK = Interpreter(
    inline="e", inline_long=frozenset({"--source"}), files="f", files_long=frozenset({"--file"}),
    values="Fvil", values_long=frozenset({"--field-separator", "--assign", "--include", "--load"}),
    program_text=True,
)
_SED = Interpreter(
    inline="e", inline_long=frozenset({"--expression"}), files="f", files_long=frozenset({"--file"}),
    values="l", values_long=frozenset({"--line-length"}), glued="i", program_text=True,
)

INTERPRETERS: Mapping[str, Interpreter] = {
    **dict.fromkeys(
        ("sh", "bash", "rbash", "dash", "zsh", "ksh", "mksh", "lksh", "pdksh", "oksh", "loksh", "ash", "hush",
         "yash", "posh", "csh", "tcsh", "fish"),
        _POSIX_SHELL,
    ),
    "python": _PYTHON,
    "pypy": _PYTHON,
    "perl": Interpreter(inline="eE", glued="MmIxCdDiF", digits="l0"),
    "ruby": Interpreter(inline="e", values="rICE", glued="xTWK0F"),
    **dict.fromkeys(("node", "nodejs", "bun"), Interpreter(
        inline="ep", inline_long=frozenset({"--eval", "--print"}), values="r",
        values_long=frozenset({"--require", "--import"}),
    )),
    "php": Interpreter(inline="rBRE", files="fF", values="cdzt"),
    **dict.fromkeys(("lua", "luajit"), Interpreter(inline="e", values="l")),
    **dict.fromkeys(("R", "Rscript"), Interpreter(inline="e", files="f")),
    "julia": Interpreter(inline="eE", inline_long=frozenset({"--eval", "--print"})),
    "expect": Interpreter(inline="c", files="f"),
    **dict.fromkeys(("awk", "gawk", "mawk", "nawk", "original-awk", "busybox-awk"), _AWK),
    **dict.fromkeys(("sed", "gsed"), _SED),
}
"""Programs whose command line can carry code, by basename without a version (``python3.11`` -> python)."""

WHOLE_LINE_SHELLS = frozenset({"pwsh", "nu", "elvish", "xonsh", "rc", "es"})
"""Shells whose options we do not model: a subject anywhere on their command line is refused."""


@dataclass(frozen=True)
class Wrapper:
    """A program that runs the command on the rest of its command line (``env``, ``sudo``, ``timeout``).

    ``values``: options whose value is the next argument unless glued on. ``positionals``:
    operands before the command (timeout's DURATION). ``shell``: options that hand the command
    line to a shell (``sudo -s``, ``flock -c``); ``always_shell``: it always does (``su``,
    ``ssh``'s remote shell, ``watch``) unless one of ``unless`` is given (``watch -x``).
    ``split``: the value is itself a command line (``env -S``). ``command_after``: the command
    follows one of these words (``find -exec``).
    """

    values: frozenset[str] = frozenset()
    positionals: int = 0
    shell: frozenset[str] = frozenset()
    always_shell: bool = False
    unless: frozenset[str] = frozenset()
    split: frozenset[str] = frozenset()
    assignments: bool = False
    command_after: frozenset[str] = frozenset()


def _opts(text: str) -> frozenset[str]:
    return frozenset(text.split())


_SUDO_VALUES = _opts(
    "-u -g -C -D -h -p -r -t -T -U --user --group --close-from --chdir --host --prompt --role --type"
    " --command-timeout --other-user"
)
WRAPPERS: Mapping[str, Wrapper] = {
    "env": Wrapper(values=_opts("-u --unset -C --chdir -a --argv0"), split=_opts("-S --split-string"),
                   assignments=True),
    "nice": Wrapper(values=_opts("-n --adjustment")),
    "ionice": Wrapper(values=_opts("-c --class -n --classdata")),
    "timeout": Wrapper(values=_opts("-s --signal -k --kill-after"), positionals=1),
    "setsid": Wrapper(),
    "nohup": Wrapper(),
    "eatmydata": Wrapper(),
    "unbuffer": Wrapper(),
    "busybox": Wrapper(),
    "toybox": Wrapper(),
    "stdbuf": Wrapper(values=_opts("-i -o -e --input --output --error")),
    "chrt": Wrapper(positionals=1),
    "taskset": Wrapper(positionals=1),
    "chroot": Wrapper(values=_opts("--userspec --groups"), positionals=1),
    "time": Wrapper(values=_opts("-f --format -o --output")),
    "cgexec": Wrapper(values=_opts("-g")),
    "xargs": Wrapper(values=_opts(
        "-a --arg-file -d --delimiter -E -I -L -n --max-args -P --max-procs -s --max-chars --process-slot-var"
    )),
    "setpriv": Wrapper(values=_opts(
        "--reuid --regid --ruid --euid --rgid --egid --groups --inh-caps --ambient-caps --bounding-set"
        " --securebits --pdeathsig --selinux-label --apparmor-profile"
    )),
    "unshare": Wrapper(values=_opts(
        "-S --setuid -G --setgid -R --root -w --wd --propagation --map-user --map-group --map-users --map-groups"
    )),
    "nsenter": Wrapper(values=_opts("-t --target -S --setuid -G --setgid")),
    "systemd-run": Wrapper(values=_opts(
        "-p --property -u --unit -E --setenv --uid --gid --nice --working-directory --slice --description"
        " -M --machine -H --host --on-active --on-boot --on-startup --on-unit-active --on-unit-inactive"
        " --on-calendar --timer-property --path-property --socket-property --service-type"
    )),
    "strace": Wrapper(values=_opts("-e -o -p -s -u -E -a -b -I -O -P -S -X")),
    "sudo": Wrapper(values=_SUDO_VALUES, shell=_opts("-s --shell -i --login")),
    "doas": Wrapper(values=_opts("-u -C"), shell=_opts("-s")),
    "pkexec": Wrapper(values=_opts("--user")),
    "flock": Wrapper(values=_opts("-w --wait --timeout -E --conflict-exit-code"), positionals=1,
                     shell=_opts("-c --command")),
    "su": Wrapper(always_shell=True),
    "runuser": Wrapper(values=_opts("-u --user -g --group -G --supp-group -w --whitelist-environment"),
                       always_shell=True, unless=_opts("-u --user")),
    "watch": Wrapper(values=_opts("-n --interval"), always_shell=True, unless=_opts("-x --exec")),
    "script": Wrapper(always_shell=True),
    "capsh": Wrapper(always_shell=True),
    "ssh": Wrapper(always_shell=True),
    "find": Wrapper(command_after=_opts("-exec -execdir -ok -okdir")),
}
"""Programs that run another program: what they run is checked in their place."""

_VERSION = re.compile(r"(?P<name>.+?)[\d.]*")
_MAX_DEPTH = 16


def program_name(path: str) -> str:
    """``/usr/bin/python3.11`` -> ``python``: tables key on names without their version."""
    base = os.path.basename(path)
    match = _VERSION.fullmatch(base)
    return match.group("name") if match else base


def _names(program: str, resolve: Callable[[str], str]) -> list[str]:
    """The name as written, then (absolute paths) the name it resolves to: ``/usr/local/bin/x -> bash``.

    busybox and toybox pick their applet by the name they are called by, so a
    resolved name of theirs says nothing.
    """
    names = [program_name(program)]
    if os.path.isabs(program):
        real = program_name(resolve(program))
        if real not in names and real not in ("busybox", "toybox"):
            names.append(real)
    return names


def shell_with_subject(
    argv: Sequence[str], tainted: Tainted, resolve: Callable[[str], str] = os.path.realpath
) -> str | None:
    """What turns a subject into code on this command line ("a shell (sh -c)"), or None.

    ``resolve`` maps an absolute program path to the file it runs (symlinks);
    injectable so tests do not depend on the host's links.
    """
    return _check(list(argv), tainted, resolve, 0)


def _check(argv: list[str], tainted: Tainted, resolve: Callable[[str], str], depth: int) -> str | None:
    if not argv or depth > _MAX_DEPTH:
        return None
    args = argv[1:]
    for name in _names(argv[0], resolve):
        if name in WHOLE_LINE_SHELLS:
            return f"a shell ({name})" if any(map(tainted, args)) else None
        if name in INTERPRETERS:
            return _interpreted(name, INTERPRETERS[name], args, tainted)
        if name in WRAPPERS:
            return _wrapped(name, WRAPPERS[name], args, tainted, resolve=resolve, depth=depth)
    return None


@dataclass
class _Parsed:
    """What an interpreter's command line holds: its code texts and the script (or module) it runs."""

    code: list[str]
    flag: str = ""
    script: str | None = None
    file_given: bool = False
    operand: str | None = None


def _interpreted(name: str, spec: Interpreter, args: list[str], tainted: Tainted) -> str | None:
    parsed = _code_of(spec, args)
    code, flag, script = parsed.code, parsed.flag, parsed.script
    if spec.flag_then_operand and flag:  # sh -c: the script is the first operand, not the flag's value
        code = [parsed.operand] if parsed.operand is not None else []
    elif not code and script is None and not parsed.file_given:
        if spec.program_text and parsed.operand is not None:
            code, flag = [parsed.operand], "program"
        else:
            script = parsed.operand
    if any(map(tainted, code)):
        return f"{spec.what} ({name} {flag})"
    if script is not None and not code and tainted(script):
        return f"{spec.what} ({name}) whose script is named by the subject"
    return None


def _code_of(spec: Interpreter, args: list[str]) -> _Parsed:
    parsed = _Parsed(code=[])
    i = 0
    while i < len(args):
        arg = args[i]
        nxt = args[i + 1] if i + 1 < len(args) else ""
        if arg in ("--", "-"):
            i += 1
            break
        if arg.startswith("--"):
            key, eq, value = arg.partition("=")
            taken = value if eq else nxt
            if key in spec.inline_long:
                parsed.code.append(taken)
                parsed.flag = key
            parsed.file_given |= key in spec.files_long
            takes = key in spec.inline_long | spec.files_long | spec.values_long
            i += 2 if takes and not eq else 1
            continue
        if not (arg.startswith(("-", "+")) and len(arg) > 1):
            break
        step, text, kind, letter = _cluster(spec, arg, nxt)
        i += step
        if kind == "inline" and arg[0] == "-":
            parsed.code.append(text)
            parsed.flag = f"-{letter}"
            if spec.inline_ends_options:
                return parsed
        elif kind == "stop":
            parsed.script = text
            return parsed
        parsed.file_given |= kind == "file"
    parsed.operand = args[i] if i < len(args) else None
    return parsed


def _cluster(spec: Interpreter, arg: str, nxt: str) -> tuple[int, str, str, str]:
    """Read one short-option cluster: (arguments used, value text, what it was, the letter)."""
    j = 1
    while j < len(arg):
        letter, rest = arg[j], arg[j + 1:]
        if letter in spec.inline and spec.flag_then_operand:
            return 1, "", "inline", letter
        for letters, kind in ((spec.inline, "inline"), (spec.files, "file"), (spec.values, "value"),
                              (spec.stop, "stop")):
            if letter in letters:
                return ((1, rest, kind, letter) if rest else (2, nxt, kind, letter))
        if letter in spec.glued:
            return 1, rest, "value", letter
        j += 1
        if letter in spec.digits:
            while j < len(arg) and arg[j].isdigit():
                j += 1
    return 1, "", "flags", ""


def _wrapped(
    name: str, spec: Wrapper, args: list[str], tainted: Tainted, *, resolve: Callable[[str], str], depth: int
) -> str | None:
    if spec.command_after:
        for i, arg in enumerate(args):
            if arg in spec.command_after:
                return _check(args[i + 1:], tainted, resolve, depth + 1)
        return None
    shell = spec.always_shell
    positionals = spec.positionals
    i = 0
    options = True
    while i < len(args):
        arg = args[i]
        if options and arg == "--":
            options = False
            i += 1
            continue
        if options and arg.startswith("-") and len(arg) > 1:
            key, eq, value = arg.partition("=") if arg.startswith("--") else (arg[:2], "", arg[2:])
            if key in spec.unless:
                shell = False
            if key in spec.shell or (not arg.startswith("--") and any(f"-{c}" in spec.shell for c in arg[1:])):
                return f"a command run by a shell ({name} {key})" if any(map(tainted, args)) else None
            glued = bool(eq or value)
            if key in spec.split:
                line = value if glued else (args[i + 1] if i + 1 < len(args) else "")
                rest = args[i + (1 if glued else 2):]
                return _check([*_split(line), *rest], tainted, resolve, depth + 1)
            i += 1 if glued or key not in spec.values else 2
            continue
        if spec.assignments and "=" in arg and not arg.startswith("/"):
            i += 1
            continue
        if positionals:
            positionals -= 1
            i += 1
            continue
        break
    if shell:
        return f"a command run by a shell ({name})" if any(map(tainted, args)) else None
    return _check(args[i:], tainted, resolve, depth + 1)


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError:  # an unbalanced quote: env -S would refuse it too; words are enough to judge
        return line.split()


def shell_problem(what: str, placeholder: str) -> str:
    return (
        f"exec: {what} with {placeholder} in its script lets a subject name run commands (a Redis key "
        f"'x$(reboot)'); pass the subject as its own argv element to a script, or set {SHELL_OPT_IN}: true"
    )


# ---------------------------------------------------------------------------------------------
# files.clean and state_dir: paths that must never be cleaned or shared

SYSTEM_TREES: tuple[str, ...] = (
    "/etc", "/usr", "/boot", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sys", "/dev",
)
"""The operating system itself: nothing inside is ever cleaned, an allowed root or a state_dir."""

WHOLE_TREES: tuple[str, ...] = (
    "/", "/var", "/var/lib", "/var/cache", "/var/spool", "/var/mail", "/var/opt", "/var/local", "/var/backups",
    "/home", "/root", "/srv", "/opt", "/run", "/mnt", "/media",
)
"""Directories that hold everyone's data: a subdirectory may be cleaned, the directory as a whole not."""

SHARED_TREES: tuple[str, ...] = ("/tmp", "/var/tmp", "/var/log")
"""Shared directories that may be cleaned as a whole, but only of files nobody has touched for a while."""

SHARED_MIN_AGE = 3600.0
"""Seconds: a younger file in /tmp or /var/log may be one a running program is still using."""

NOT_STATE_DIRS: tuple[str, ...] = (*WHOLE_TREES, *SHARED_TREES)
"""A state_dir equal to one of these would share it with other software (and get cleaned with it)."""


def _parts(path: str) -> tuple[str, ...]:
    return tuple(part for part in os.path.normpath(path).split("/") if part)


def _forms(path: str, resolve: Callable[[str], str]) -> list[tuple[str, ...]]:
    """The path as written (``..`` applied) and where it really is (symlinks), when that differs."""
    written = _parts(os.path.abspath(path))
    real = _parts(resolve(path))
    return [written] if real == written else [written, real]


def _inside(path: tuple[str, ...], root: tuple[str, ...]) -> bool:
    return path[: len(root)] == root


def _show(parts: tuple[str, ...]) -> str:
    return "/" + "/".join(parts)


def _system_tree(parts: tuple[str, ...]) -> str | None:
    return next((tree for tree in SYSTEM_TREES if _inside(parts, _parts(tree))), None)


def clean_path_problem(path: str, resolve: Callable[[str], str] = os.path.realpath) -> str | None:
    """A files.clean ``path`` inside the system or equal to a directory everyone shares."""
    for parts in _forms(path, resolve):
        shown = _show(parts)
        if (tree := _system_tree(parts)) is not None:
            return f"path {path} is {'inside ' * (shown != tree)}{tree}, a system tree that is never cleaned"
        if shown in WHOLE_TREES:
            return (
                f"path {path}{f' (really {shown})' * (shown != path)} is a directory everyone's data lives in; "
                "clean the application's own subdirectory (/var/lib/app/cache, /var/log/app)"
            )
    return None


def clean_age_problem(path: str, older_than: float, resolve: Callable[[str], str] = os.path.realpath) -> str | None:
    """/tmp, /var/tmp and /var/log as a whole only for files older than an hour."""
    for parts in _forms(path, resolve):
        if _show(parts) in SHARED_TREES and older_than < SHARED_MIN_AGE:
            return (
                f"path {path} is shared by every program: cleaning it as a whole needs older_than of at "
                f"least 1h (files younger than that may be in use), got {older_than:g}s"
            )
    return None


def allowed_root_problem(root: str, resolve: Callable[[str], str] = os.path.realpath) -> str | None:
    for parts in _forms(root, resolve):
        if (tree := _system_tree(parts)) is not None:
            return f"allowed_roots entry {root} is inside {tree}, a system tree that is never cleaned"
    return None


@dataclass(frozen=True)
class OwnPaths:
    """The daemon's own directories, which no action may clean."""

    state_dir: str
    config_dir: str

    def protected(self) -> tuple[str, ...]:
        return (self.state_dir, self.config_dir)


def own_paths_problem(
    what: str, path: str, own: OwnPaths, *, root: bool = False, resolve: Callable[[str], str] = os.path.realpath
) -> str | None:
    """A cleaned path (or an allowed root: ``root``) that would reach the state or the config.

    A path may not equal, contain or lie inside state_dir (the database and
    audit history), nor equal or contain the config's directory (the policy and
    its secrets); a subdirectory of a config directory outside /etc may be
    cleaned, it holds neither. An allowed root only bounds where paths may be,
    so it may contain either (``/var/lib`` holds ``/var/lib/watchdogd``) and be
    the config's directory: it may not be or lie inside state_dir.
    """
    owned = [("state_dir", own.state_dir)] if root else [
        ("state_dir", own.state_dir), ("the config's directory", own.config_dir)
    ]
    for parts in _forms(path, resolve):
        for label, own_path in owned:
            for mine in _forms(own_path, resolve):
                same = parts == mine
                holds = _inside(mine, parts) and not root
                within = _inside(parts, mine) and label == "state_dir"
                if same or holds or within:
                    relation = "is" if same else ("contains" if holds else "is inside")
                    return f"{what} {path} {relation} {label} {_show(mine)}; watchdogd never cleans its own files"
    return None


def state_dir_problem(
    state_dir: str, config_dir: str, resolve: Callable[[str], str] = os.path.realpath
) -> str | None:
    """state_dir must be a directory of watchdogd's own, never a system or shared one."""
    for parts in _forms(state_dir, resolve):
        shown = _show(parts)
        if (tree := _system_tree(parts)) is not None:
            return f"{state_dir} is {'inside ' * (shown != tree)}{tree}; use a directory of its own such as " \
                   "/var/lib/watchdogd"
        if shown in NOT_STATE_DIRS:
            return f"{state_dir} is shared with other software; use a directory of its own such as /var/lib/watchdogd"
        if any(parts == mine for mine in _forms(config_dir, resolve)):
            return f"{state_dir} is the config's directory; use a directory of its own such as /var/lib/watchdogd"
    return None


DEFAULT_OWN_PATHS = OwnPaths(state_dir="/var/lib/watchdogd", config_dir="/etc/watchdogd")
"""The packaged locations: what an action built without a config (a test, a tool) still never cleans."""


@runtime_checkable
class GuardsOwnPaths(Protocol):
    """Action params that must be told the daemon's own directories, to fence them off at run time too."""

    def protecting(self, own: OwnPaths) -> Self:
        """A copy that refuses to touch ``own``; config calls this with the real state_dir and config dir."""
        ...

    def own_paths_problems(self, own: OwnPaths) -> list[tuple[str, str]]:
        """(parameter key, problem) for each configured path that reaches ``own``."""
        ...
