"""Where the daemon's RSS goes: each import's share, step by step in a fresh interpreter, and the daemon itself.

Issue 17 asks for a host-only policy in 35 MiB and the shipped policy in 2 x
node_exporter; most of the daemon's RSS is what it imports. This prints:

1. **Steps**: one fresh interpreter imports the steps below in order and
   reports VmRSS after each, so a step's delta is what it adds on top of the
   steps before it (a module already loaded by an earlier step costs
   nothing again: the order is the daemon's own, stdlib pieces first).
2. **Floor**: the interpreter plus the required third-party stack alone
   (psutil, APScheduler, PyYAML, prometheus-client, sdnotify and sqlite3 for
   the state): what no change to watchdogd's own code can go below. pydantic is
   not in it: the daemon checks its config in a child (``watchdogd.configchild``).
3. **Daemon**: the real daemon (``watchdogd.daemon.main``, in-process under a
   small driver thread) with (a) a host-only policy and (b) the shipped policy
   (``etc/watchdogd/watchdogd.yaml`` with state_dir, control_socket and listen
   moved): its VmRSS once every rule has run once, and which client libraries
   it loaded (from its ``sys.modules``).
4. **Accounting** (per policy: those two, and ``bench_scale``'s 1,000-rule
   mix): from the same daemon runs, a fresh interpreter then
   imports exactly those modules, group by group, in this order: the required
   stack (and the stdlib it pulls in), the client libraries the policy loaded,
   pydantic (none: it is the config child's), our other libraries, the rest of
   the stdlib, watchdogd's own modules. What the daemon holds over
   the last step is the running daemon itself: config, rules, threads,
   connections, heap. The required stack and client libraries together are the
   floor no change to watchdogd can go below; a target under it is impossible
   with the required stack. Then where that daemon's memory lives: pages of
   mapped files (shared libraries, which the kernel reclaims first), CPython's
   arenas (live objects in them) and glibc's heap (in use and free, after
   ``malloc_trim``): how much of the RSS is anything but live data.
5. **Start-up pages handed back**: each policy's daemon again, its config
   setting ``release_start_pages_after`` to one second past the reading above;
   its VmRSS and resident file pages ``--released-for`` seconds (30) after it
   handed the pages of shared libraries it touched only while starting back
   to the kernel, with the pages its rules touched since come back. Before
   that, every reading above is taken with the release off.
6. **The config child**: what checking each policy costs the process that
   does it for the daemon, at each start and reload (its peak RSS and its
   wall time); it exits before the daemon runs a rule.

Run it with the interpreter of a clean venv (bench/run's, or
``python3 -m venv V && V/bin/pip install .``): a development interpreter with
hundreds of distributions makes pydantic's plugin scan and APScheduler's
entry points look bigger than they are.

    python bench/bench_imports.py [--no-daemon] [--no-accounting] [--rules N] [--settle SECONDS]
                                  [--released-for SECONDS]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "etc" / "watchdogd" / "watchdogd.yaml"
HOST_ONLY_TARGET_MIB = 35.0
MIX_TARGET_MIB = 60.0

STEPS: tuple[tuple[str, str], ...] = (
    ("stdlib: threading, logging, json, dataclasses, typing", "threading, logging, json, dataclasses, typing"),
    ("stdlib: ssl", "ssl"),
    ("stdlib: asyncio", "asyncio"),
    ("stdlib: email, http.client, http.server, urllib.request",
     "email.message, http.client, http.server, urllib.request"),
    ("stdlib: sqlite3", "sqlite3"),
    ("psutil", "psutil"),
    ("yaml", "yaml"),
    ("sdnotify", "sdnotify"),
    ("apscheduler (background scheduler, thread pool)",
     "apscheduler.schedulers.background, apscheduler.executors.pool, apscheduler.triggers.interval"),
    ("prometheus_client", "prometheus_client"),
    ("watchdogd.model, units, contracts", "watchdogd.model, watchdogd.units, watchdogd.contracts"),
    ("watchdogd.registry (no family)", "watchdogd.registry"),
    ("watchdogd.config", "watchdogd.config"),
    ("watchdogd.engine.engine", "watchdogd.engine.engine"),
    ("watchdogd.engine.scheduler", "watchdogd.engine.scheduler"),
    ("watchdogd.faces (exporter, httpserver, control, notify)",
     "watchdogd.faces.exporter, watchdogd.faces.httpserver, watchdogd.faces.control, watchdogd.faces.notify"),
    ("watchdogd.daemon (the rest)", "watchdogd.daemon"),
    ("families.host", "watchdogd.families.host"),
    ("families.process, files, exec, logs", "watchdogd.families.process, watchdogd.families.files, "
     "watchdogd.families.exec, watchdogd.families.logs"),
    ("families.net, systemd", "watchdogd.families.net, watchdogd.families.systemd"),
    ("families.postgres, redis, docker (no client library)",
     "watchdogd.families.postgres, watchdogd.families.redis, watchdogd.families.docker"),
    ("psycopg", "psycopg"),
    ("redis", "redis"),
    ("docker", "docker"),
    ("bcrypt (only where basic auth is on)", "bcrypt"),
)

REQUIRED = ("psutil, yaml, sdnotify, sqlite3, prometheus_client, "
            "apscheduler.schedulers.background, apscheduler.executors.pool, apscheduler.triggers.interval")
CLIENTS = "psycopg, redis, docker"

RSS = """
def rss():
    with open('/proc/self/status') as f:
        return next(int(l.split()[1]) for l in f if l.startswith('VmRSS:'))
"""
"""VmRSS in KiB, for the scripts below: each runs in an interpreter of its own."""

PROBE = RSS + """
import gc, importlib, json, sys
out = [('interpreter', rss())]
for label, names in json.loads(sys.argv[1]):
    for name in names.split(','):
        importlib.import_module(name.strip())
    gc.collect()
    out.append((label, rss()))
print(json.dumps(out))
"""

FLOOR_RELEASED = RSS + """
import gc, importlib, json, sys
for name in sys.argv[1].split(','):
    importlib.import_module(name.strip())
gc.collect()
imported = rss()
from watchdogd.memory import release_file_pages, resident_kib  # after the stack: what asking adds is taken off
asking = rss() - imported
release_file_pages()
print(json.dumps({'imported': imported, 'released': rss() - asking, 'anon': resident_kib('RssAnon') - asking}))
"""
"""An interpreter that imports only ``argv[1]`` and then hands back its start-up pages: the floor as a daemon
that does the same would see it (less what importing ``watchdogd.memory`` to ask adds)."""

HOST_ONLY = """\
state_dir: {tmp}/state
control_socket: {tmp}/c.sock
listen: 127.0.0.1:0
rules:
  cpu: {{probe: host.cpu, above: 90, for: 5m}}
  memory: {{probe: host.memory, above: 90}}
  swap: {{probe: host.swap, above: 80}}
  load: {{probe: host.load, above: 20}}
  disk: {{probe: host.disk, above: 90}}
  inodes: {{probe: host.inodes, above: 90}}
  backup: {{probe: host.file_age, params: {{path: /var/backups/*}}, above: 2d}}
"""


def interpreter() -> list[str]:
    """This interpreter with its own ``-O``/``-OO``, ``-X no_debug_ranges`` and bytecode cache, for every child
    but the config check's.

    Run the script as ``python -OO -X no_debug_ranges -X pycache_prefix=DIR bench/bench_imports.py``
    to measure the daemon as the systemd unit starts it (watchdogd.launch);
    the config child runs without them, as the daemon starts it.
    """
    flags = ["-" + "O" * sys.flags.optimize] if sys.flags.optimize else []
    if "no_debug_ranges" in sys._xoptions:
        flags += ["-X", "no_debug_ranges"]
    if sys.pycache_prefix:
        flags += ["-X", f"pycache_prefix={sys.pycache_prefix}"]
    return [sys.executable, *flags]


def steps(pairs: tuple[tuple[str, str], ...]) -> list[tuple[str, int]]:
    proc = subprocess.run([*interpreter(), "-c", PROBE, json.dumps(pairs)], capture_output=True, text=True,
                          check=False, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "import probe failed")
    return [(label, int(kib)) for label, kib in json.loads(proc.stdout)]


def floor_released(names: str) -> str:
    """``FLOOR_RELEASED`` of ``names``: RSS imported -> after the release (anonymous), MiB."""
    proc = subprocess.run([*interpreter(), "-c", FLOOR_RELEASED, names], capture_output=True, text=True,
                          check=False, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip()[-500:] or "floor probe failed")
    got = json.loads(proc.stdout)
    return f"{got['imported'] / 1024:.1f} -> {got['released'] / 1024:.1f} MiB (anonymous {got['anon'] / 1024:.1f})"


def print_steps(title: str, rows: list[tuple[str, int]]) -> None:
    print(f"\n{title}\n| step | RSS MiB | + MiB |\n|---|---|---|")
    previous = 0
    for label, kib in rows:
        print(f"| {label} | {kib / 1024:.1f} | {(kib - previous) / 1024:+.1f} |")
        previous = kib


def shipped_config(tmp: Path) -> str:
    """The shipped policy byte for byte but for its paths and listen address."""
    text = SHIPPED.read_text()
    for key, value in (("state_dir", f"{tmp}/state"), ("control_socket", f"{tmp}/c.sock"),
                       ("listen", "127.0.0.1:0")):
        text, count = re.subn(rf"(?m)^{key}:.*$", f"{key}: {value}", text)
        if count == 0:
            text = f"{key}: {value}\n" + text
    return text


@contextlib.contextmanager
def policy_file(text: str) -> Iterator[Path]:
    """``text`` as a config file (mode 0600, as the daemon demands) in a temp dir its ``{tmp}`` names."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "w.yaml"
        config.write_text(text.format(tmp=tmp) if "{tmp}" in text else text)
        config.chmod(0o600)
        yield config


DRIVER = RSS + """
import ctypes, gc, json, os, sys, tempfile, threading, time
out, settle, config, released_for = sys.argv[1], float(sys.argv[2]), sys.argv[3], float(sys.argv[4])
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks',
                                                'fsmblks', 'uordblks', 'fordblks', 'keepcost')]
def malloc_stats():
    # CPython writes them to the C stderr: caught in a file for the moment (a log line then may land there).
    with tempfile.TemporaryFile('w+') as caught:
        saved = os.dup(2)
        os.dup2(caught.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        caught.seek(0)
        return caught.read()
def report():
    time.sleep(settle)  # the rules' first cycles: the daemon offers nothing to wait on from inside
    gc.collect()
    libc = ctypes.CDLL(None)
    libc.malloc_trim(0)
    libc.mallinfo2.restype = MallInfo2
    heap = libc.mallinfo2()
    with open('/proc/self/smaps') as f:
        smaps = f.read()
    from watchdogd.memory import resident_kib as resident  # loaded by the daemon already: costs nothing here
    report = {'rss': rss(), 'file': resident('RssFile'), 'anon': resident('RssAnon'), 'modules': sorted(sys.modules),
              'smaps': smaps, 'pymalloc': malloc_stats(), 'heap_used': heap.uordblks, 'heap_free': heap.fordblks}
    if released_for:
        time.sleep(1 + released_for)  # the config hands the pages back at settle + 1: then the rules run on
        report.update(released=[rss(), resident('RssFile'), resident('RssAnon')])
    with open(out, 'w') as f:
        json.dump(report, f)
    os._exit(0)
threading.Thread(target=report, daemon=True).start()
from watchdogd.daemon import main
sys.exit(main(['--config', config, '--dry-run']))
"""
"""The daemon in-process, unchanged but for a thread that ends it after ``settle`` seconds, reporting its VmRSS,
its modules and where its memory lives (smaps; CPython's arenas; glibc's heap, after ``malloc_trim``); with
``released_for``, its VmRSS and file pages that long after it handed back its start-up pages as well."""

GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("required stack (psutil, APScheduler, PyYAML, prometheus-client, sdnotify, sqlite3) and the stdlib it imports",
     ("psutil", "apscheduler", "tzlocal", "yaml", "_yaml", "prometheus_client", "sdnotify", "sqlite3", "_sqlite3")),
    ("client libraries the policy loaded (psycopg, redis, docker) and what they import",
     ("psycopg", "psycopg_binary", "psycopg_c", "redis", "async_timeout", "docker", "requests", "urllib3",
      "charset_normalizer", "idna", "certifi", "websocket")),
    ("pydantic and what it imports", ("pydantic", "pydantic_core", "annotated_types", "typing_inspection",
                                      "typing_extensions")),
    ("our other libraries (bcrypt, etcd3gw, ...)", ()),
    ("the rest of the stdlib watchdogd imports", ()),
    ("watchdogd's own modules", ("watchdogd",)),
)
"""Import groups in order; a module joins the first group naming its top-level package; () groups take the
third-party (4th) or stdlib (5th) modules no group names."""

ACCOUNT = RSS + """
import gc, importlib, json, sys
groups, modules = json.loads(sys.argv[1]), json.loads(sys.argv[2])
def group_of(name):
    top = name.split('.')[0]
    for index, (_, tops) in enumerate(groups):
        if top in tops:
            return index
    return 4 if top in sys.stdlib_module_names or top.startswith('_') else 3
buckets = [[] for _ in groups]
for name in modules:
    if name not in sys.modules and not name.startswith('__'):
        buckets[group_of(name)].append(name)
out, failed = [('interpreter', rss())], []
for (label, _), names in zip(groups, buckets):
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a private module that only imports from its package's own order
            failed.append(f'{name}: {type(exc).__name__}')
    gc.collect()
    out.append((label, rss()))
print(json.dumps({'steps': out, 'failed': failed, 'groups': buckets}))
"""


class Daemon(NamedTuple):
    kib: int
    modules: list[str]
    where: str
    resident: tuple[int, int]
    """Resident pages of files and anonymous memory, KiB."""
    released: tuple[int, int, int] | None
    """VmRSS, resident file pages and anonymous memory, KiB, ``released_for`` seconds after the start-up pages
    went back."""


def run_daemon(text: str, settle: float, released_for: float = 0.0) -> Daemon:
    """VmRSS, ``sys.modules`` and where the memory lives, of the daemon in-process (``DRIVER``) after ``settle``
    seconds; with ``released_for``, also that long after its start-up pages went back (at ``settle`` + 1)."""
    release = f"{settle + 1:g}s" if released_for else "null"
    with policy_file(f"release_start_pages_after: {release}\n{text}") as config:
        out = config.parent / "out.json"
        proc = subprocess.run([*interpreter(), "-c", DRIVER, str(out), str(settle), str(config), str(released_for)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              timeout=settle + released_for + 120, check=False)
        if not out.exists():
            raise RuntimeError(f"daemon exited with {proc.returncode}: {proc.stderr.strip()[-500:]}")
        report = json.loads(out.read_text())
    rss, files, anon = report.get("released") or (0, 0, 0)
    released = (int(rss), int(files), int(anon)) if released_for else None
    return Daemon(int(report["rss"]), list(report["modules"]), where(report),
                  (int(report["file"]), int(report["anon"])), released)


def handed_back(title: str, daemon: Daemon, released_for: float) -> None:
    """One line: the daemon before and ``released_for`` seconds after its start-up pages went back."""
    assert daemon.released is not None
    (rss, files, anon), (files_before, anon_before) = daemon.released, daemon.resident
    print(f"{title}: {daemon.kib / 1024:.1f} MiB after its first cycles -> {rss / 1024:.1f} MiB "
          f"{released_for:g} s after it handed back its start-up pages (pages of files "
          f"{files_before / 1024:.1f} -> {files / 1024:.1f} MiB, anonymous {anon_before / 1024:.1f} -> "
          f"{anon / 1024:.1f})")


def where(report: dict[str, Any]) -> str:
    """One line from ``DRIVER``'s report: mapped files, CPython's arenas, glibc's heap."""
    live, arenas = pymalloc_use(report["pymalloc"])
    files = mapped_files(report["smaps"])
    top = ", ".join(f"{name} {kib / 1024:.1f}" for name, kib in sorted(files.items(), key=lambda kv: -kv[1])[:6])
    return (f"mapped files {sum(files.values()) / 1024:.1f} MiB (shared libraries; the largest: {top}); "
            f"Python's arenas {live / 2**20:.1f} MiB of objects in {arenas} of 1 MiB; "
            f"glibc's heap {report['heap_used'] / 2**20:.1f} MiB in use, {report['heap_free'] / 2**20:.1f} free")


def mapped_files(smaps: str) -> dict[str, int]:
    """Resident KiB of each mapped file (by its base name) in a ``/proc/<pid>/smaps`` text."""
    files: dict[str, int] = {}
    current: str | None = None
    for line in smaps.splitlines():
        fields = line.split()
        if not fields:
            continue
        if not fields[0].endswith(":"):  # a mapping's header: range perms offset dev inode [path]
            path = fields[5] if len(fields) > 5 else ""
            current = path.rsplit("/", 1)[-1] if path.startswith("/") else None
        elif fields[0] == "Rss:" and current is not None:
            files[current] = files.get(current, 0) + int(fields[1])
    return files


def pymalloc_use(stats: str) -> tuple[int, int]:
    """Bytes in live blocks and arenas in use, from ``sys._debugmallocstats()``'s text."""
    figures = {}
    for line in stats.splitlines():
        if line.startswith("#") and "=" in line:
            key, _, value = line[1:].partition("=")
            figures[key.strip()] = int(value.strip().replace(",", ""))
    return figures["bytes in allocated blocks"], figures["arenas allocated current"]


def import_groups(modules: list[str]) -> dict[str, Any]:
    """A fresh interpreter imports ``modules`` group by group (``ACCOUNT``): its VmRSS after each, the modules
    of each group, and those that would not import on their own."""
    proc = subprocess.run([*interpreter(), "-c", ACCOUNT, json.dumps(GROUPS), json.dumps(modules)],
                          capture_output=True, text=True, check=False, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "accounting failed")
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def client_libraries(modules: list[str]) -> str:
    return ", ".join(name for name in ("psycopg", "redis", "docker") if name in modules) or "none"


def accounting(title: str, daemon: Daemon) -> None:
    report = import_groups(daemon.modules)
    rows = [(label, int(kib)) for label, kib in report["steps"]]
    rows.append(("the running daemon (config, rules, threads, connections, heap)", daemon.kib))
    print_steps(f"Accounting: {title} ({len(daemon.modules)} modules; the daemon's VmRSS {daemon.kib / 1024:.1f} MiB)",
                rows)
    floor = rows[2][1]
    print(f"floor (interpreter + required stack + client libraries): {floor / 1024:.1f} MiB")
    print(f"where the daemon's memory lives: {daemon.where}")
    if report["failed"]:
        print(f"(not imported on their own: {', '.join(report['failed'])})")


CHILD = """
import json, pathlib, pickle, resource, sys, time
from watchdogd.configchild import load_config_in_child
started = time.perf_counter()
config = load_config_in_child(pathlib.Path(sys.argv[1]), force_dry_run=True)
took = time.perf_counter() - started
print(json.dumps({'ms': took * 1000, 'answer': len(pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL)),
                  'peak': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""
"""The daemon's own config load (``load_config_in_child``) from a fresh parent, so that the peak RSS
(``RUSAGE_CHILDREN``) is the child's alone: peak KiB, wall time and the size of its answer."""


def child_cost(title: str, text: str) -> None:
    with policy_file(text) as config:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(config)], capture_output=True, text=True,
                              check=False, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip()[-500:] or "config child failed")
    got = json.loads(proc.stdout)
    print(f"config child, {title}: peak RSS {got['peak'] / 1024:.1f} MiB for {got['ms']:.0f} ms "
          f"(pydantic, the checks, the load), then it exits; its answer {got['answer'] / 1024:.0f} KiB")


def mix_config(rules: int) -> str:
    """``bench_scale``'s mix of ``rules`` rules (the services that answer here), paths under ``{tmp}``."""
    from bench_scale import PG, REDIS, answers, config_text, mix, templates  # noqa: PLC0415 (only this policy)

    available = frozenset(name for name, up in (("postgres", answers(PG)), ("redis", answers(REDIS))) if up)
    kinds = templates("{tmp}/files/f*.txt", 9, "watchdogd-bench-imports-absent")
    text = config_text(Path("{tmp}"), 0, mix(rules, kinds, available), available)
    return text.replace("{", "{{").replace("}", "}}").replace("{{tmp}}", "{tmp}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--no-daemon", action="store_true", help="only the import steps and the floor")
    parser.add_argument("--no-accounting", action="store_true", help="skip the per-policy accounting")
    parser.add_argument("--rules", type=int, default=1000, help="rules in the accounting's bench_scale mix")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds before the daemon's RSS is read")
    parser.add_argument("--released-for", type=float, default=30.0, metavar="SECONDS",
                        help="seconds the rules run after the start-up pages went back (0: skip that reading)")
    args = parser.parse_args()
    print(f"interpreter: {' '.join(interpreter())} (Python {sys.version.split()[0]})")
    print_steps("Import steps (cumulative, one fresh interpreter)", steps(STEPS))
    (_, bare), (_, required) = steps((("required", REQUIRED),))
    print(f"\nfloor: interpreter {bare / 1024:.1f} MiB + required libraries (psutil, APScheduler, PyYAML, "
          f"prometheus-client, sdnotify, sqlite3) {(required - bare) / 1024:.1f} MiB = {required / 1024:.1f} MiB, "
          f"before any of watchdogd's own code (host-only target {HOST_ONLY_TARGET_MIB:.0f} MiB)")
    print(f"floor with its start-up pages handed back: the required libraries {floor_released(REQUIRED)}; "
          f"with psycopg, redis and docker {floor_released(REQUIRED + ', ' + CLIENTS)} (the shipped policy's "
          f"target is 2 x node_exporter, about 41 MiB)")
    if args.no_daemon:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        host, shipped = run_daemon(HOST_ONLY, args.settle), run_daemon(shipped_config(Path(tmp)), args.settle)
    print(f"daemon RSS, host-only policy, after its first cycles: {host.kib / 1024:.1f} MiB "
          f"(target <= {HOST_ONLY_TARGET_MIB:.0f} MiB); client libraries loaded: {client_libraries(host.modules)}")
    print(f"daemon RSS, shipped policy, after its first cycles: {shipped.kib / 1024:.1f} MiB "
          f"(target <= 2 x node_exporter, see bench/run); client libraries loaded: "
          f"{client_libraries(shipped.modules)}")
    if args.no_accounting:
        released_readings(args)
        return 0
    accounting(f"host-only policy (target <= {HOST_ONLY_TARGET_MIB:.0f} MiB)", host)
    accounting("shipped policy (target <= 2 x node_exporter)", shipped)
    accounting(f"bench_scale's mix, {args.rules:,} rules (target <= {MIX_TARGET_MIB:.0f} MiB at 1,000)",
               run_daemon(mix_config(args.rules), args.settle))
    released_readings(args)
    print()
    with tempfile.TemporaryDirectory() as tmp:
        for title, text in (("host-only policy", HOST_ONLY), ("shipped policy", shipped_config(Path(tmp))),
                            (f"bench_scale's mix, {args.rules:,} rules", mix_config(args.rules))):
            child_cost(title, text)
    return 0


def released_readings(args: argparse.Namespace) -> None:
    """Each policy's daemon again, its start-up pages handed back one second after ``--settle``."""
    if not args.released_for:
        return
    print("\nStart-up pages handed back (release_start_pages_after), same policies:")
    with tempfile.TemporaryDirectory() as tmp:
        policies = (("host-only policy", HOST_ONLY), ("shipped policy", shipped_config(Path(tmp))),
                    (f"bench_scale's mix, {args.rules:,} rules", mix_config(args.rules)))
        for title, text in policies:
            handed_back(title, run_daemon(text, args.settle, args.released_for), args.released_for)


if __name__ == "__main__":
    sys.exit(main())
