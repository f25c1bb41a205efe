"""What is inside the .deb and the .rpm, checked with the distributions' own tools.

lintian and rpmlint must be clean apart from the overrides the packages ship
(and whose justifications live next to them); the rpm is queried with
``rpm -qlp/-qpc/--scripts`` and installed, upgraded and erased in a scratch
``rpm --root`` whose only shell is busybox, so the scriptlets run under a
minimal POSIX sh with no systemd, as in an image build.
"""

from __future__ import annotations

import gzip
import io
import re
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.packaging.support import REPO, Packages, busybox, run
from watchdogd import buildinfo

# Builds (two packages, once per session) and a booted container take longer than the default timeout.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

EXPECTED_FILES = (
    "/usr/bin/watchdogd",
    "/usr/bin/watchdogctl",
    "/etc/watchdogd/watchdogd.yaml",
    "/var/lib/watchdogd",
    "/opt/watchdogd/bin/python3.11",
    "/opt/watchdogd/bin/watchdogd",
    "/opt/watchdogd/pyvenv.cfg",
    "/opt/watchdogd/lib/python3.11/site-packages/watchdogd/daemon.py",
    "/usr/share/man/man8/watchdogd.8.gz",
    "/usr/share/man/man8/watchdogctl.8.gz",
    "/usr/share/man/man5/watchdogd.yaml.5.gz",
    "/etc/watchdogd/conf.d",
    "/usr/share/watchdogd/watchdogd.schema.json",
    "/usr/share/watchdogd/monitoring/prometheus/watchdogd.rules.yml",
    "/usr/share/watchdogd/monitoring/prometheus/watchdogd.rules.test.yml",
    "/usr/share/watchdogd/monitoring/grafana/watchdogd.json",
    "/usr/share/watchdogd/monitoring/README.md",
)
NOT_SHIPPED = ("/site-packages/pip/", "/site-packages/setuptools/", "direct_url.json", "/tests/integration/")


def deb_files(deb: Path) -> list[str]:
    listing = run(["dpkg-deb", "--contents", str(deb)], timeout=60, what="dpkg-deb --contents").stdout
    # "-rw-r--r-- root/root 123 2026-01-01 00:00 ./usr/bin/x -> target": the path is the 6th field.
    return [line.split()[5][1:].rstrip("/") or "/" for line in listing.splitlines()]


def deb_member(deb: Path, name: str, *, control: bool = False) -> bytes:
    """One file of the .deb's data (or control) archive, read through a tar stream."""
    option = "--ctrl-tarfile" if control else "--fsys-tarfile"
    stream = subprocess.run(["dpkg-deb", option, str(deb)], capture_output=True, check=True, timeout=120).stdout
    with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
        member = tar.extractfile(f"./{name.lstrip('/')}")
        assert member is not None, f"{name} is not a regular file in {deb.name}"
        return member.read()


def test_file_names_follow_the_convention(packages: Packages) -> None:
    assert re.fullmatch(rf"watchdogd_{re.escape(packages.version)}_[a-z0-9]+\.deb", packages.deb.name)
    assert re.fullmatch(rf"watchdogd-{re.escape(packages.version)}\.[a-z0-9_]+\.rpm", packages.rpm.name)


def test_lintian_is_clean_apart_from_shipped_overrides(packages: Packages) -> None:
    proc = run(["lintian", "--fail-on", "error,warning", "--pedantic", "--info", str(packages.deb)],
               timeout=300, what="lintian", check=False)
    hints = [line for line in proc.stdout.splitlines() if re.match(r"^[EWIPX]: ", line)]
    assert proc.returncode == 0 and not hints, "lintian:\n" + "\n".join(hints or [proc.stdout + proc.stderr])


def test_rpmlint_is_clean_apart_from_shipped_filters(packages: Packages) -> None:
    proc = run(["rpmlint", "-c", str(REPO / "packaging" / "rpmlint.toml"), str(packages.rpm)],
               timeout=300, what="rpmlint", check=False)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0 and "0 errors, 0 warnings" in summary, f"rpmlint:\n{proc.stdout}{proc.stderr}"


def test_deb_metadata_and_contents(packages: Packages) -> None:
    fields = run(["dpkg-deb", "--field", str(packages.deb), "Package", "Version", "Depends"],
                 timeout=30, what="dpkg-deb --field").stdout
    assert f"Version: {packages.version}" in fields
    assert "python3.11" in fields
    assert deb_member(packages.deb, "conffiles", control=True).decode().split() == ["/etc/watchdogd/watchdogd.yaml"]
    files = deb_files(packages.deb)
    for path in (*EXPECTED_FILES, "/lib/systemd/system/watchdogd.service", "/usr/share/doc/watchdogd/copyright"):
        assert path in files, f"{path} missing from the .deb"
    for fragment in NOT_SHIPPED:
        assert not [f for f in files if fragment in f], f"{fragment} must not be shipped"


def test_package_names_the_commit_it_was_built_from(packages: Packages) -> None:
    """watchdogd_build_info's revision: the installed package has no .git beside it, so the build writes it."""
    commit = buildinfo.git_revision(REPO)  # read from .git as the build's `git rev-parse HEAD` saw it
    name = f"opt/watchdogd/lib/python3.11/site-packages/watchdogd/{buildinfo.GENERATED}"
    if commit is None:
        assert name not in {f.lstrip("/") for f in deb_files(packages.deb)}, "no checkout, no revision to claim"
        return
    assert f'REVISION = "{commit}"' in deb_member(packages.deb, name).decode()


def test_deb_keeps_debians_habit_enabled_and_started_on_install(packages: Packages) -> None:
    """Debian enables and starts a daemon on install (dh_installsystemd); the rpm does not (see below)."""
    postinst = deb_member(packages.deb, "postinst", control=True).decode()
    assert 'deb-systemd-helper enable "$UNIT"' in postinst
    assert "action=start" in postinst and 'deb-systemd-invoke "$action" "$UNIT"' in postinst


def test_man_pages_render_without_warnings(tmp_path: Path) -> None:
    for page in sorted((REPO / "packaging" / "man").glob("*.[0-9]")):
        proc = run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", str(page)], timeout=30,
                   what=f"man {page.name}", check=False)
        assert proc.returncode == 0 and not proc.stderr.strip(), f"{page.name}: {proc.stderr}"


def test_rpm_queries(packages: Packages) -> None:
    rpm = str(packages.rpm)
    files = run(["rpm", "-qlp", rpm], timeout=60, what="rpm -qlp").stdout.split()
    for path in (*EXPECTED_FILES, "/usr/lib/systemd/system/watchdogd.service"):
        assert path in files, f"{path} missing from the .rpm"
    assert not [f for f in files if f.startswith("/lib/")], "rpm units belong in /usr/lib/systemd"
    # Fedora/RHEL habit: the distribution's and the admin's presets decide, and they say disabled.
    assert not [f for f in files if "system-preset" in f], "the rpm must not ship a preset enabling itself"

    assert run(["rpm", "-qpc", rpm], timeout=60, what="rpm -qpc").stdout.split() == ["/etc/watchdogd/watchdogd.yaml"]
    flags = run(["rpm", "-qp", "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]", rpm], timeout=60,
                what="rpm -qp --qf FILEFLAGS").stdout
    assert re.search(r"^cn /etc/watchdogd/watchdogd\.yaml$", flags, re.M), "conffile must be %config(noreplace)"

    scripts = rpm_scriptlets(packages.rpm)
    assert sorted(scripts) == ["postinstall", "postuninstall", "preinstall", "preuninstall"], sorted(scripts)
    assert "groupadd -r watchdogd" in scripts["preinstall"]
    # %systemd_post: the preset decides on a first install; nothing is enabled or started by hand.
    assert "systemctl --no-reload preset watchdogd.service" in scripts["postinstall"]
    assert not re.search(r"\b(enable|start|restart|--now)\b", scripts["postinstall"]), scripts["postinstall"]
    # %systemd_preun: stop and disable on erase only.
    for command in ("disable watchdogd.service", "stop watchdogd.service"):
        assert command in scripts["preuninstall"]
    # %systemd_postun_with_restart: only what was running is restarted.
    assert "try-restart watchdogd.service" in scripts["postuninstall"]

    requires = run(["rpm", "-qpR", rpm], timeout=60, what="rpm -qpR").stdout
    assert "/usr/bin/python3.11" in requires


def rpm_scriptlets(rpm: Path) -> dict[str, str]:
    """``rpm -qp --scripts`` split by scriptlet, comments left out (they may mention what the code must not do)."""
    listing = run(["rpm", "-qp", "--scripts", str(rpm)], timeout=60, what="rpm -qp --scripts").stdout
    scripts: dict[str, list[str]] = {}
    current: list[str] = []
    for line in listing.splitlines():
        if header := re.fullmatch(r"(\w+) scriptlet \(using /bin/sh\):", line):
            current = scripts.setdefault(header[1], [])
        elif not line.lstrip().startswith("#"):
            current.append(line)
    return {name: "\n".join(lines) for name, lines in scripts.items()}


@pytest.fixture
def scratch_root(tmp_path: Path) -> Iterator[Path]:
    """An empty root with busybox as /bin/sh, a /dev/null and a groupadd that edits /etc/group.

    Debian's static busybox has no addgroup; the shim stands in for
    shadow-utils' groupadd, which every rpm distribution has.
    """
    root = tmp_path / "root"
    for directory in ("bin", "usr/sbin", "etc", "dev", "tmp", "var/tmp"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "bin" / "busybox").write_bytes(busybox().read_bytes())
    (root / "bin" / "busybox").chmod(0o755)
    for applet in ("sh", "grep", "cat", "rm", "rmdir", "echo"):
        (root / "bin" / applet).symlink_to("busybox")
    shim = root / "usr" / "sbin" / "groupadd"
    shim.write_text('#!/bin/sh\n[ "$1" = -r ] && shift\necho "$1:x:990:" >> /etc/group\n')
    shim.chmod(0o755)
    (root / "etc" / "group").write_text("root:x:0:\n")
    run(["mknod", "-m", "666", str(root / "dev" / "null"), "c", "1", "3"], timeout=10, what="mknod /dev/null")
    yield root


def rpm_in(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", *args], timeout=300,
               what=f"rpm --root {root} {' '.join(args)}", check=check)


def test_rpm_installs_upgrades_and_erases_in_a_scratch_root(packages: Packages, scratch_root: Path) -> None:
    root = scratch_root
    rpm_in(root, "--initdb")
    # --nodeps: the scratch root has no python3.11; the scriptlets still run, under busybox sh.
    first = rpm_in(root, "-i", "--nodeps", str(packages.rpm))
    assert "cannot create group" not in first.stderr, first.stderr
    assert (root / "etc/group").read_text().count("watchdogd:") == 1, "%pre must create the group"
    config = root / "etc/watchdogd/watchdogd.yaml"
    assert config.is_file() and config.stat().st_mode & 0o777 == 0o640
    assert (root / "var/lib/watchdogd").is_dir() and (root / "var/lib/watchdogd").stat().st_mode & 0o777 == 0o750
    assert (root / "usr/bin/watchdogd").is_symlink()
    assert rpm_in(root, "-q", "watchdogd").stdout.strip() == f"watchdogd-{packages.version}-1.x86_64"

    edited = config.read_text() + "\n# edited by the operator\n"
    config.write_text(edited)
    rpm_in(root, "-U", "--nodeps", str(packages.next_rpm))
    assert rpm_in(root, "-q", "watchdogd").stdout.strip() == f"watchdogd-{packages.next_version}-1.x86_64"
    assert config.read_text() == edited, "%config(noreplace): an upgrade must keep the edited policy"
    assert (root / "etc/group").read_text().count("watchdogd:") == 1, "%pre must be idempotent"

    (root / "var/lib/watchdogd/state.db").write_text("state")
    rpm_in(root, "-e", "--nodeps", "watchdogd")
    assert rpm_in(root, "-q", "watchdogd", check=False).returncode != 0
    assert not (root / "opt/watchdogd").exists() and not (root / "usr/bin/watchdogd").exists()
    # rpm has no purge: the edited policy is saved as .rpmsave and the state stays, as with Fedora's daemons.
    assert (root / "etc/watchdogd/watchdogd.yaml.rpmsave").read_text() == edited
    assert (root / "var/lib/watchdogd/state.db").exists()


def test_changelog_names_the_version(packages: Packages) -> None:
    changelog = run(["rpm", "-qp", "--changelog", str(packages.next_rpm)], timeout=60, what="rpm --changelog").stdout
    assert f"- {packages.next_version}" in changelog.splitlines()[0]
    text = gzip.decompress(deb_member(packages.deb, "usr/share/doc/watchdogd/changelog.Debian.gz")).decode()
    assert text.startswith(f"watchdogd ({packages.version}) stable; urgency=medium\n"), text[:200]


SYSTEMCTL_LOG = "var/tmp/systemctl.log"


def pretend_systemd_runs(root: Path) -> Path:
    """Make the scratch root look booted with systemd to the scriptlets; return the log of their systemctl calls.

    /run/systemd/system is what the scriptlets test for; the systemctl shim
    records its arguments; /usr/bin/python3.11 stands in for the interpreter
    the venv links to, and says yes to ``watchdogctl check-config``.
    """
    (root / "run/systemd/system").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    shims = {
        "usr/bin/systemctl": f'#!/bin/sh\necho "$*" >> /{SYSTEMCTL_LOG}\n',
        "usr/bin/python3.11": "#!/bin/sh\nexit 0\n",
    }
    for path, text in shims.items():
        (root / path).write_text(text)
        (root / path).chmod(0o755)
    log = root / SYSTEMCTL_LOG
    log.write_text("")
    return log


def drain(log: Path) -> list[str]:
    calls = log.read_text().splitlines()
    log.write_text("")
    return calls


def test_rpm_scriptlets_leave_enablement_to_the_presets(packages: Packages, scratch_root: Path) -> None:
    """%systemd_post / %systemd_preun / %systemd_postun_with_restart, as systemctl sees them.

    A first install only applies the presets (disabled on Fedora/RHEL: the
    package ships none), never enables or starts; an upgrade try-restarts
    (a stopped daemon stays stopped); an erase disables and stops.
    """
    root = scratch_root
    log = pretend_systemd_runs(root)
    rpm_in(root, "--initdb")
    rpm_in(root, "-i", "--nodeps", str(packages.rpm))
    assert drain(log) == ["--system daemon-reload", "--no-reload preset watchdogd.service"]
    assert not list((root / "usr/lib/systemd").glob("system-preset/*")), "no preset of our own"

    rpm_in(root, "-U", "--nodeps", str(packages.next_rpm))
    assert drain(log) == ["--system daemon-reload", "try-restart watchdogd.service"]

    rpm_in(root, "-e", "--nodeps", "watchdogd")
    assert drain(log) == ["--no-reload disable watchdogd.service", "stop watchdogd.service", "--system daemon-reload"]
