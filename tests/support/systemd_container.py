"""A real systemd as PID 1, in a Docker container built from a Debian 12 debootstrap rootfs.

systemd is not PID 1 on the test hosts, so the tests that need the real
thing (``systemctl`` against a live manager, a unit that fails and gets
restarted, the .deb installed and its service started) boot one here.

The expensive parts are cached outside the repo and reused between runs:

* the rootfs tarball (``debootstrap``, minutes, needs the Debian mirror once):
  ``/var/cache/watchdogd-tests/bookworm-rootfs-<hash>.tar``;
* the image ``docker import``-ed from it, tagged by the same hash;
* the Python wheels watchdogd needs (``pip download`` on the host, because a
  container has no PyPI): ``ensure_wheels()``; and an image with a venv at
  ``/opt/watchdogd`` holding them (``ensure_deps_image()``), tagged by a hash
  of the base image and the wheel set.

API, for the service tests and the package install test alike:
``build_rootfs()``, ``ensure_image()``, ``ensure_wheels()``,
``ensure_deps_image()``, and ``SystemdContainer`` with ``start()``,
``wait_booted()``, ``exec(argv)``, ``copy_in(path, dest)``,
``write_file(dest, text)``, ``install_watchdogd()``, ``logs()`` and
``stop()`` (which removes the container). Everything takes argv lists, runs
with a deadline and fails with a message saying what was tried; nothing here
skips a test. The docker CLI talks to the engine ``tests/support/dockerd.py``
starts.

Typical use::

    with SystemdContainer(ensure_image()) as box:
        box.wait_booted()
        box.copy_in(Path("app.deb"), "/tmp/app.deb")
        box.exec(["apt-get", "install", "-y", "/tmp/app.deb"])
        box.exec(["systemctl", "is-active", "watchdogd"])

Installing a .deb inside needs the package's dependencies: apt inside the
container reaches the Debian mirror as is, but the container runs with
``--network=none`` by default (``network=`` changes that).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.support.dockerd import NETWORK_MODE, ensure_dockerd, file_lock

CACHE_DIR = Path(os.environ.get("WATCHDOGD_TEST_CACHE", "/var/cache/watchdogd-tests"))
SUITE = "bookworm"
MIRROR = os.environ.get("WATCHDOGD_TEST_MIRROR", "http://deb.debian.org/debian")
PACKAGES: tuple[str, ...] = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "procps")
IMAGE_REPO = "watchdogd-test/bookworm-systemd"
DEPS_IMAGE_REPO = "watchdogd-test/bookworm-systemd-deps"
VENV = "/opt/watchdogd"
CONTAINER_PYTHON = "3.11.2"  # Debian 12's python3: dependency markers are evaluated for it
REPO_ROOT = Path(__file__).resolve().parents[2]

DEBOOTSTRAP_TIMEOUT = 1800.0
BOOT_TIMEOUT = 60.0


class SystemdContainerError(RuntimeError):
    """A step failed; the message names the step and carries its output."""


# --- rootfs and image ----------------------------------------------------------------------------


def _content_tag(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def rootfs_path(packages: Sequence[str] = PACKAGES) -> Path:
    return CACHE_DIR / f"{SUITE}-rootfs-{_content_tag(SUITE, *sorted(packages))}.tar"


def build_rootfs(packages: Sequence[str] = PACKAGES) -> Path:
    """The cached rootfs tarball for ``packages``, running debootstrap only when it is missing.

    Built in a scratch directory and renamed into place, under a file lock, so
    an interrupted or concurrent build never leaves a half tarball behind.
    """
    target = rootfs_path(packages)
    if target.exists():
        return target
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with file_lock(CACHE_DIR / "rootfs.lock"):
        if target.exists():
            return target
        if shutil.which("debootstrap") is None:
            _run(["apt-get", "install", "-y", "--no-install-recommends", "debootstrap"], timeout=600,
                 what="installing debootstrap")
        scratch = CACHE_DIR / f"build-{uuid.uuid4().hex[:8]}"
        try:
            _run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", SUITE, str(scratch), MIRROR],
                timeout=DEBOOTSTRAP_TIMEOUT,
                what=f"debootstrap {SUITE} from {MIRROR}",
            )
            # Leave apt's downloads out of the image; they are half its size.
            for cache in (scratch / "var/cache/apt/archives").glob("*.deb"):
                cache.unlink()
            partial = target.with_suffix(".tar.partial")
            _run(["tar", "-C", str(scratch), "--numeric-owner", "-cf", str(partial), "."], timeout=600,
                 what="packing the rootfs")
            partial.rename(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def ensure_image(packages: Sequence[str] = PACKAGES) -> str:
    """Tag of a local image whose rootfs is the debootstrap tarball (imported once)."""
    ensure_dockerd()
    rootfs = build_rootfs(packages)
    tag = f"{IMAGE_REPO}:{rootfs.stem.rsplit('-', 1)[-1]}"
    if _image_exists(tag):
        return tag
    with file_lock(CACHE_DIR / "image.lock"):
        if not _image_exists(tag):
            _run(
                [docker_cli(), "import", "--change", 'CMD ["/lib/systemd/systemd"]',
                 "--change", "ENV container=docker", str(rootfs), tag],
                timeout=600,
                what=f"docker import {rootfs}",
            )
    return tag


def project_requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    """Runtime dependencies of watchdogd, plus what pip needs to build it offline."""
    with pyproject.open("rb") as handle:
        data = tomllib.load(handle)
    build = list(data["build-system"]["requires"])
    return sorted({*data["project"]["dependencies"], *build, "wheel"})


def ensure_wheels(requirements: Sequence[str] | None = None) -> Path:
    """A directory of wheels for ``requirements``, for the container's Python, fetched once on the host.

    The container has no package index, so whatever it installs comes from
    here. Two steps, because dependency markers must be evaluated for the
    container's Python (bookworm's 3.11.2 needs ``async-timeout`` for redis,
    the host's newer 3.11 does not) and pip only does that for binary-only
    downloads: first the top-level requirements are turned into wheels
    (building the few that ship only an sdist), then the full set is
    resolved for the container's interpreter with those wheels on hand.
    """
    reqs = list(requirements if requirements is not None else project_requirements())
    directory = CACHE_DIR / f"wheels-{_content_tag(CONTAINER_PYTHON, *reqs)}"
    done = directory / ".complete"
    if done.exists():
        return directory
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with file_lock(CACHE_DIR / "wheels.lock"):
        if not done.exists():
            directory.mkdir(parents=True, exist_ok=True)
            pip = [sys.executable, "-m", "pip"]
            _run([*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(directory), *reqs],
                 timeout=600, what="pip wheel of watchdogd's direct dependencies")
            _run([*pip, "download", "--quiet", "--dest", str(directory), "--find-links", str(directory),
                  *_binary_for_container(), *reqs],
                 timeout=600, what=f"pip download of watchdogd's dependencies for Python {CONTAINER_PYTHON}")
            done.write_text("\n".join(reqs) + "\n")
    return directory


def ensure_deps_image(base: str | None = None) -> str:
    """An image with a venv at ``VENV`` holding watchdogd's dependencies (not watchdogd itself).

    Installing ~20 wheels takes longer than everything else a test does in the
    container, and they change far less often than the source, so the result
    is committed once per dependency set.
    """
    base = base or ensure_image()
    wheels = ensure_wheels()
    tag = f"{DEPS_IMAGE_REPO}:{_content_tag(base, wheels.name)}"
    if _image_exists(tag):
        return tag
    with file_lock(CACHE_DIR / "deps-image.lock"):
        if _image_exists(tag):
            return tag
        with SystemdContainer(base, boot=False) as box:
            box.exec(["python3", "-m", "venv", VENV], timeout=120)
            _install_offline(box, wheels, project_requirements())
            _run([docker_cli(), "commit", "--change", 'CMD ["/lib/systemd/systemd"]', box.id, tag],
                 timeout=300, what=f"docker commit {tag}")
    return tag


def _install_offline(box: SystemdContainer, wheels: Path, requirements: Sequence[str], rounds: int = 5) -> None:
    """pip-install ``requirements`` from ``wheels`` in the container, fetching what its markers add.

    pip evaluates environment markers with the interpreter it runs on, so a
    dependency that only the container's Python needs (``async-timeout;
    python_full_version < "3.11.3"``) is missed on the host; the container's
    pip names it, the host downloads it for the container's Python, and the
    install is tried again.
    """
    argv = [f"{VENV}/bin/pip", "install", "--quiet", "--no-index", "--find-links", "/wheels", *requirements]
    for _ in range(rounds):
        box.exec(["rm", "-rf", "/wheels"])
        box.copy_in(wheels, "/wheels")
        proc = box.exec(argv, timeout=600, check=False)
        if proc.returncode == 0:
            box.exec(["rm", "-rf", "/wheels"])
            return
        missing = re.findall(r"No matching distribution found for ([^;\s]+)", proc.stdout + proc.stderr)
        if not missing:
            raise SystemdContainerError(f"pip install in the container failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(wheels), "--find-links", str(wheels),
              *_binary_for_container(), *missing],
             timeout=600, what=f"pip download of {', '.join(missing)} for the container")
    raise SystemdContainerError(f"pip install in the container still missed packages after {rounds} rounds")


def _binary_for_container() -> list[str]:
    return [
        "--only-binary=:all:", "--implementation", "cp", "--python-version", CONTAINER_PYTHON,
        "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
        "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_34_x86_64",
        "--platform", "linux_x86_64",
    ]


# --- container -----------------------------------------------------------------------------------


class SystemdContainer:
    """One container running ``/lib/systemd/systemd`` as PID 1; removed on ``stop()``/exit.

    ``boot=False`` runs ``sleep infinity`` instead, for image preparation
    steps that need no init.
    """

    def __init__(
        self, image: str, *, boot: bool = True, name: str | None = None, network: str = NETWORK_MODE
    ) -> None:
        self.image = image
        self.boot = boot
        self.name = name or f"watchdogd-test-{uuid.uuid4().hex[:10]}"
        self.network = network
        self.id = ""

    def __enter__(self) -> SystemdContainer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run_argv(self) -> list[str]:
        """The ``docker run`` argv, exposed so a failing start can be reproduced by hand."""
        argv = [
            docker_cli(), "run", "--detach", "--name", self.name, f"--network={self.network}",
            "--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined",
            "--security-opt", "apparmor=unconfined",
            "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp:exec",
            *cgroup_args(),
            "--stop-signal", "SIGRTMIN+3",  # systemd's "halt" signal: clean shutdown on docker stop
            self.image,
        ]
        argv += ["/lib/systemd/systemd"] if self.boot else ["sleep", "infinity"]
        return argv

    def start(self) -> None:
        proc = _run(self.run_argv(), timeout=120, what=f"starting a container from {self.image}")
        self.id = proc.stdout.strip()

    def wait_booted(self, timeout: float = BOOT_TIMEOUT) -> str:
        """Wait until systemd finished starting up; return its state (``running`` or ``degraded``).

        ``degraded`` is fine in a container (some host-only units fail); a
        manager still ``starting`` at the deadline is an error with the journal tail.
        """
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            proc = self.exec(["systemctl", "is-system-running"], check=False, timeout=15)
            state = proc.stdout.strip()
            if state in ("running", "degraded"):
                return state
            time.sleep(0.3)  # polling a condition with a deadline
        raise SystemdContainerError(
            f"systemd in {self.name} did not finish booting in {timeout:.0f}s (state {state!r});\n"
            f"docker logs:\n{self.logs()}"
        )

    def exec(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        user: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the container (no shell) and return its output."""
        cmd = [docker_cli(), "exec"]
        if user:
            cmd += ["--user", user]
        for key, value in (env or {}).items():
            cmd += ["--env", f"{key}={value}"]
        cmd += [self.id or self.name, *argv]
        return _run(cmd, timeout=timeout, what=f"exec {' '.join(argv)} in {self.name}", check=check)

    def copy_in(self, source: Path, dest: str) -> None:
        """Copy a host file or directory to ``dest`` in the container (parents are created)."""
        parent = str(Path(dest).parent)
        self.exec(["mkdir", "-p", parent])
        _run([docker_cli(), "cp", str(source), f"{self.id}:{dest}"], timeout=300,
             what=f"docker cp {source} -> {dest}")

    def write_file(self, dest: str, text: str, mode: int = 0o644) -> None:
        """Create ``dest`` in the container with ``text``, through a tar stream (no shell quoting)."""
        data = text.encode()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo(Path(dest).name)
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))
        self.exec(["mkdir", "-p", str(Path(dest).parent)])
        _run([docker_cli(), "cp", "-", f"{self.id}:{Path(dest).parent}"], timeout=60,
             what=f"writing {dest}", stdin=buffer.getvalue())

    def install_watchdogd(self, source: Path = REPO_ROOT) -> str:
        """pip-install the working tree into the container's venv (deps must already be there).

        Returns the path of the ``watchdogd`` entry point. Only what the
        package build needs is copied: not tests, not .git.
        """
        for name in ("watchdogd", "pyproject.toml", "README.md"):
            path = source / name
            if path.exists():
                self.copy_in(path, f"/src/watchdogd/{name}")
        self.exec([f"{VENV}/bin/pip", "install", "--quiet", "--no-index", "--no-deps",
                   "--no-build-isolation", "/src/watchdogd"], timeout=300)
        return f"{VENV}/bin/watchdogd"

    def logs(self) -> str:
        proc = _run([docker_cli(), "logs", "--tail", "60", self.id or self.name], timeout=30,
                    what="docker logs", check=False)
        return (proc.stdout + proc.stderr)[-6000:]

    def stop(self) -> None:
        """Remove the container whatever state it is in; safe to call twice."""
        if not (self.id or self.name):
            return
        _run([docker_cli(), "rm", "--force", "--volumes", self.id or self.name], timeout=60,
             what="docker rm", check=False)
        self.id = ""


@contextmanager
def booted_watchdogd_box() -> Iterator[SystemdContainer]:
    """A booted Debian 12 container, systemd as PID 1, this tree's watchdogd in /opt/watchdogd; stopped after."""
    box = SystemdContainer(ensure_deps_image())
    try:
        box.start()
        box.wait_booted()
        box.install_watchdogd()
        yield box
    finally:
        box.stop()


def cgroup_args() -> list[str]:
    """What systemd as PID 1 needs from the host's cgroup setup.

    cgroup v1/hybrid (this project's test hosts): seeing the hierarchy
    read-only is enough; Docker gives the container its own writable
    ``name=systemd`` subtree. cgroup v2 (a single ``cgroup2`` mount): systemd
    must create its own subtree, so it needs the host's cgroup namespace and a
    writable hierarchy, the setup molecule and kind use for systemd
    containers. (Not exercised here: the test hosts run cgroup v1.)
    """
    if _fstype("/sys/fs/cgroup") == "cgroup2":
        return ["--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw"]
    return ["-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro"]


def _fstype(path: str) -> str:
    try:
        with open("/proc/self/mounts", encoding="utf-8") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) > 2 and fields[1] == path:
                    return fields[2]
    except OSError:
        pass
    return ""


# --- helpers -------------------------------------------------------------------------------------


def docker_cli() -> str:
    cli = shutil.which("docker")
    if cli is None:
        raise SystemdContainerError("the docker CLI is not on PATH (Debian package docker.io provides it)")
    return cli


def _image_exists(tag: str) -> bool:
    proc = _run([docker_cli(), "image", "inspect", "--format", "{{.Id}}", tag], timeout=30,
                what="docker image inspect", check=False)
    return proc.returncode == 0


def _run(
    argv: Sequence[str],
    *,
    timeout: float,
    what: str,
    check: bool = True,
    stdin: bytes | None = None,

) -> subprocess.CompletedProcess[str]:
    try:
        if stdin is not None:
            raw = subprocess.run(list(argv), input=stdin, capture_output=True, timeout=timeout, check=False)
            proc = subprocess.CompletedProcess(
                raw.args, raw.returncode, raw.stdout.decode(errors="replace"), raw.stderr.decode(errors="replace")
            )
        else:
            proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise SystemdContainerError(f"{what}: timed out after {timeout:.0f}s: {' '.join(argv)}") from exc
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise SystemdContainerError(f"{what}: exit {proc.returncode}: {' '.join(argv)}\n{tail}")
    return proc


if __name__ == "__main__":  # `python -m tests.support.systemd_container`: prepare the caches by hand
    print(build_rootfs())
    print(ensure_image())
    print(ensure_deps_image())
