"""A pristine Debian 12 in a Docker container, with this working tree copied in.

"Pristine" is what a new user starts from: ``debootstrap --variant=minbase``
plus ``python3``, ``git`` and ``ca-certificates``, nothing else (no
python3-venv, no pip, no sudo, no systemd running). The README's two commands
must work from there; ``tests/integration/packaging/test_pristine_debian.py``
runs them.

Reused from ``tests/support/systemd_container.py``: the cached debootstrap
rootfs (``build_rootfs``, keyed by its package list) and the container class
(``exec``, ``copy_in``, ``write_file``, ``stop``). What differs here:

* the image is imported as ``watchdogd-test/bookworm-pristine:<tag>``, the
  tag being the rootfs's content tag, with ``sleep infinity`` as its command;
* the container runs unprivileged with ``--network host``: the commands
  under test fetch from the Debian archive and PyPI themselves, as they do on
  a real machine, and the test engine may have no bridge network. The host's
  CA bundle is mounted read-only and named by ``PIP_CERT`` (the host's
  outbound HTTPS may be re-signed by a proxy whose CA only that bundle has);
  the container's own ``/etc/ssl`` is left as debootstrap made it;
* ``copy_tree()`` copies the working tree (tracked files with their
  uncommitted changes, plus new files git does not ignore), not ``HEAD``;
* ``run_logged()``/``start_logged()`` run a shell command in the container
  with its output in a log file, so a failure or a timeout can show the tail.

With ``--network host`` the container shares the host's ports: what it starts
must listen elsewhere than the host's services (``free_port()``), and what it
probes on 127.0.0.1 is the host's.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import tarfile
import time
from pathlib import Path

from tests.support.dockerd import ensure_dockerd, file_lock
from tests.support.systemd_container import (
    CACHE_DIR,
    REPO_ROOT,
    SystemdContainer,
    SystemdContainerError,
    _image_exists,
    _run,
    build_rootfs,
    docker_cli,
)

PACKAGES: tuple[str, ...] = ("python3", "git", "ca-certificates")
IMAGE_REPO = "watchdogd-test/bookworm-pristine"
HOST_CA_BUNDLE = Path(os.environ.get("WATCHDOGD_TEST_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt"))
CONTAINER_CA_BUNDLE = "/etc/ssl/host-ca-certificates.crt"
CHECKOUT = "/root/watchdogd"
LOG_TAIL_LINES = 60


class PristineError(SystemdContainerError):
    """A step in the pristine container failed; the message carries the command's output tail."""


def ensure_pristine_image() -> str:
    """Tag of the pristine image (debootstrap once, ``docker import`` once; both cached)."""
    ensure_dockerd()
    rootfs = build_rootfs(PACKAGES)
    tag = f"{IMAGE_REPO}:{rootfs.stem.rsplit('-', 1)[-1]}"
    if _image_exists(tag):
        return tag
    with file_lock(CACHE_DIR / "pristine-image.lock"):
        if not _image_exists(tag):
            _run([docker_cli(), "import", "--change", 'CMD ["sleep", "infinity"]', str(rootfs), tag],
                 timeout=600, what=f"docker import {rootfs}")
    return tag


def working_tree_files(repo: Path = REPO_ROOT) -> list[str]:
    """The working tree as git sees it: tracked files that still exist, and untracked ones not ignored."""
    proc = _run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                timeout=60, what="git ls-files")
    names = sorted({name for name in proc.stdout.split("\0") if name})
    return [name for name in names if (repo / name).is_symlink() or (repo / name).is_file()]


def working_tree_tar(repo: Path = REPO_ROOT, prefix: str = Path(CHECKOUT).name) -> bytes:
    """A tar of ``working_tree_files()`` under ``prefix/``, owned by root, modes kept (scripts stay executable)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in working_tree_files(repo):
            info = tar.gettarinfo(str(repo / name), arcname=f"{prefix}/{name}")
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if info.isfile():
                with (repo / name).open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    return buffer.getvalue()


def free_port() -> int:
    """A TCP port nothing on this host listens on now (the container shares the host's network)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PristineContainer(SystemdContainer):
    """A container of the pristine image: ``sleep infinity`` as PID 1, host network, removed on exit."""

    def __init__(self, image: str, *, name: str | None = None) -> None:
        super().__init__(image, boot=False, name=name, network="host")

    def run_argv(self) -> list[str]:
        if not HOST_CA_BUNDLE.is_file():
            raise PristineError(f"no CA bundle at {HOST_CA_BUNDLE} to give the container (WATCHDOGD_TEST_CA_BUNDLE)")
        return [
            docker_cli(), "run", "--detach", "--name", self.name, "--network=host",
            "-v", f"{HOST_CA_BUNDLE}:{CONTAINER_CA_BUNDLE}:ro", "--env", f"PIP_CERT={CONTAINER_CA_BUNDLE}",
            self.image, "sleep", "infinity",
        ]

    def copy_tree(self, repo: Path = REPO_ROOT, dest: str = CHECKOUT) -> None:
        """Copy the working tree of ``repo`` to ``dest`` (a fresh directory)."""
        parent = str(Path(dest).parent)
        self.exec(["rm", "-rf", dest])
        self.exec(["mkdir", "-p", parent])
        _run([docker_cli(), "cp", "-", f"{self.id}:{parent}"], timeout=300, what=f"copying {repo} to {dest}",
             stdin=working_tree_tar(repo, Path(dest).name))

    def run_logged(self, script: str, log: str, *, timeout: float) -> tuple[int, float]:
        """Run ``sh -c script`` with stdout and stderr in ``log``; return (exit status, seconds taken).

        Raises ``PristineError`` with the log's tail when it does not finish in ``timeout``.
        """
        start = time.monotonic()
        argv = [docker_cli(), "exec", self.id, "sh", "-c", f"exec >{log} 2>&1 </dev/null; {script}"]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise PristineError(
                f"`{script}` did not finish in {timeout:.0f}s; tail of its output:\n{self.tail(log)}"
            ) from exc
        return proc.returncode, time.monotonic() - start

    def start_logged(self, command: str, log: str, pidfile: str) -> None:
        """Start ``command`` (one command line, exec-ed by ``sh``) in the background, output in ``log``.

        ``docker exec --detach`` returns at once; the command's pid goes to ``pidfile`` (see ``alive()``).
        """
        _run([docker_cli(), "exec", "--detach", self.id, "sh", "-c",
              f"echo $$ >{pidfile}; exec >{log} 2>&1 </dev/null; exec {command}"],
             timeout=60, what=f"starting `{command}` in the background")

    def alive(self, pidfile: str) -> bool:
        """Whether the process whose pid is in ``pidfile`` still runs (``kill -0``; minbase has no pgrep)."""
        return self.exec(["sh", "-c", f'kill -0 "$(cat {pidfile})"'], check=False).returncode == 0

    def tail(self, log: str, lines: int = LOG_TAIL_LINES) -> str:
        proc = self.exec(["tail", "-n", str(lines), log], check=False)
        return (proc.stdout + proc.stderr).rstrip() or f"({log} is empty)"


if __name__ == "__main__":  # `python -m tests.support.pristine`: prepare the cached image by hand
    print(ensure_pristine_image())
