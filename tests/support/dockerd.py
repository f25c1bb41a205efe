"""A real Docker engine and a local busybox image for tests, with no registry.

Shared by the Docker family tests, the systemd-in-a-container tests and the
package install test, so it depends on nothing but the stdlib and the
``docker`` CLI/daemon binaries (it installs Debian's ``docker.io`` and
``busybox-static`` when they are missing).

The engine is treated like the PostgreSQL and Redis the test setup starts:
a host service that is started once when it is not running and then left
running for the next test session (starting it takes seconds; other test
sessions on this host may be using it). Containers and images a test makes
are the test's to remove.

Every step runs with a deadline and fails with a message that says what was
tried and ends with the tail of dockerd's log: a test must never skip or hang
because the engine is missing.

Containers should use ``network_mode="none"`` (``NETWORK_MODE``): when the
host cannot give dockerd a bridge (no iptables), the engine is started with
``--bridge=none`` and only that mode works everywhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

DEFAULT_SOCKET = Path("/var/run/docker.sock")
DEFAULT_URL = f"unix://{DEFAULT_SOCKET}"
BUSYBOX_TAG = "watchdogd-test/busybox:latest"
NETWORK_MODE = "none"

STATE_DIR = Path("/tmp/watchdogd-test-dockerd")
LOG_FILE = STATE_DIR / "dockerd.log"
LOCK_FILE = STATE_DIR / "lock"

START_TIMEOUT = 60.0
APT_TIMEOUT = 600.0

# Tried in order: the first that answers wins. overlay2 is fast; vfs works on
# any filesystem; the last one gives up the bridge network for hosts whose
# kernel or sandbox has no usable iptables.
DAEMON_VARIANTS: tuple[tuple[str, ...], ...] = (
    ("--storage-driver=overlay2",),
    ("--storage-driver=vfs",),
    ("--storage-driver=vfs", "--iptables=false", "--ip-masq=false", "--bridge=none"),
)

# Applets linked into the image's /bin besides the ones `busybox --list` gives
# (that list is used when it works; these are the ones tests rely on).
REQUIRED_APPLETS = ("sh", "sleep", "true", "false", "cat", "echo", "ls", "kill", "dd", "head", "yes")


class DockerdError(RuntimeError):
    """The engine could not be made available; the message says why and shows the log tail."""


def ensure_dockerd(timeout: float = START_TIMEOUT) -> str:
    """Return the URL of a Docker engine that answers, starting one if needed.

    Safe to call from several processes at once: a file lock makes exactly
    one of them start dockerd while the others wait for it to answer.
    """
    if _ping(DEFAULT_SOCKET):
        return DEFAULT_URL
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with file_lock(LOCK_FILE):
        if _ping(DEFAULT_SOCKET):
            return DEFAULT_URL
        _install_missing()
        failures: list[str] = []
        for variant in DAEMON_VARIANTS:
            error = _start_daemon(variant, timeout)
            if error is None:
                return DEFAULT_URL
            failures.append(f"dockerd {' '.join(variant)}: {error}")
        raise DockerdError(
            "could not start a Docker engine; tried:\n  "
            + "\n  ".join(failures)
            + f"\n--- tail of {LOG_FILE} ---\n{_tail(LOG_FILE)}"
        )


def ensure_busybox_image(tag: str = BUSYBOX_TAG, host: str = DEFAULT_URL) -> str:
    """Return ``tag`` after making sure the engine has it (a busybox rootfs via ``docker import``).

    Idempotent and safe to race: an existing image is kept as is. ``host``
    names another engine (a test's private dockerd), which must be running.
    """
    if host == DEFAULT_URL:
        ensure_dockerd()
    if _image_exists(tag, host):
        return tag
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with file_lock(STATE_DIR / "image.lock"):
        if _image_exists(tag, host):
            return tag
        proc = subprocess.run(
            [_docker_cli(), "-H", host, "import", "--change", 'CMD ["sh"]', "-", tag],
            input=busybox_rootfs(),
            capture_output=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            raise DockerdError(
                f"docker import of {tag} failed (exit {proc.returncode}): "
                f"{proc.stderr.decode(errors='replace').strip()}"
            )
    if not _image_exists(tag, host):
        raise DockerdError(f"docker import reported success but {tag} is not listed")
    return tag


def busybox_rootfs() -> bytes:
    """A tar of a busybox root filesystem (static /bin/busybox, one link per applet), for ``docker import``."""
    return _busybox_rootfs(_static_busybox())


# --- engine --------------------------------------------------------------------------------------


def _ping(sock: Path, timeout: float = 2.0) -> bool:
    """GET /_ping over the unix socket: the cheapest "does the engine answer" there is."""
    if not sock.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(str(sock))
            conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = b""
            while chunk := conn.recv(4096):
                reply += chunk
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0] and reply.endswith(b"OK")


def _start_daemon(variant: tuple[str, ...], timeout: float) -> str | None:
    """Start dockerd detached; None once it answers, else why it did not (it is stopped again)."""
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        return "dockerd is not on PATH after installing docker.io"
    with LOG_FILE.open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting dockerd {' '.join(variant)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            [dockerd, *variant],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # outlives the test session on purpose (see module doc)
            cwd="/",
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _ping(DEFAULT_SOCKET) and _info_ok():
            return None
        code = proc.poll()
        if code is not None:
            return f"exited with status {code}"
        time.sleep(0.2)  # polling a condition with a deadline, not waiting for time to pass
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    return f"did not answer on {DEFAULT_SOCKET} within {timeout:.0f}s"


def _info_ok() -> bool:
    proc = subprocess.run(
        [_docker_cli(), "info", "--format", "{{.ServerVersion}}"],
        capture_output=True,
        timeout=15,
        check=False,
        env={**os.environ, "DOCKER_HOST": DEFAULT_URL},
    )
    return proc.returncode == 0 and bool(proc.stdout.strip())


def _docker_cli() -> str:
    cli = shutil.which("docker")
    if cli is None:
        raise DockerdError("the docker CLI is not on PATH (Debian package docker.io provides it)")
    return cli


def _image_exists(tag: str, host: str = DEFAULT_URL) -> bool:
    proc = subprocess.run(
        [_docker_cli(), "-H", host, "image", "inspect", "--format", "{{.Id}}", tag],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return proc.returncode == 0


# --- packages ------------------------------------------------------------------------------------


def _install_missing() -> None:
    missing = [pkg for pkg in ("docker.io", "busybox-static") if not _dpkg_installed(pkg)]
    if shutil.which("dockerd") is not None and "docker.io" in missing:
        missing.remove("docker.io")  # a dockerd from elsewhere (docker-ce) is as good
    if missing:
        _apt_install(missing)


def _dpkg_installed(package: str) -> bool:
    if shutil.which("dpkg-query") is None:
        return False
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Status}", package], capture_output=True, text=True, check=False
    )
    return proc.returncode == 0 and proc.stdout.strip() == "install ok installed"


def _apt_install(packages: list[str]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    argv = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=APT_TIMEOUT, env=env, check=False)
    if proc.returncode != 0:  # stale package lists are the usual cause: refresh once
        subprocess.run(
            ["apt-get", "update"], capture_output=True, text=True, timeout=APT_TIMEOUT, env=env, check=False
        )
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=APT_TIMEOUT, env=env, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise DockerdError(f"apt-get install {' '.join(packages)} failed (exit {proc.returncode}):\n{tail}")


# --- image ---------------------------------------------------------------------------------------


def _static_busybox() -> Path:
    """The busybox-static binary: a dynamic one would not run in an image with no libc."""
    if not _dpkg_installed("busybox-static"):
        _apt_install(["busybox-static"])
    path = Path("/bin/busybox")
    if not path.exists():
        raise DockerdError("/bin/busybox is missing after installing busybox-static")
    if b"ld-linux" in path.read_bytes()[:4096]:
        raise DockerdError("/bin/busybox is dynamically linked; install busybox-static")
    return path


def _busybox_rootfs(busybox: Path) -> bytes:
    """A tar of /bin/busybox, one symlink per applet and the empty dirs a container expects."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("bin", "tmp", "etc", "proc", "sys", "dev", "root", "var", "run"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        tar.add(str(busybox), arcname="bin/busybox")
        for applet in sorted(set(_applets(busybox)) | set(REQUIRED_APPLETS)):
            if applet == "busybox" or "/" in applet:
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"), ("etc/group", "root:x:0:\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _applets(busybox: Path) -> list[str]:
    proc = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, timeout=10, check=False)
    return proc.stdout.split() if proc.returncode == 0 else []


# --- helpers -------------------------------------------------------------------------------------


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise cache builds across concurrent test sessions on one machine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


if __name__ == "__main__":  # `python -m tests.support.dockerd`: bring the engine and image up by hand
    print(ensure_dockerd())
    print(ensure_busybox_image())
