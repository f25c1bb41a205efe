"""The README's two commands on a pristine Debian 12 (issue 13, Must 1).

Each test starts a container of ``debootstrap --variant=minbase
--include=python3,git,ca-certificates`` (``tests/support/pristine.py``), copies
this working tree in, and runs one command exactly as a new user would, as
root (a minbase root has no sudo): the command itself must install whatever
else it needs (python3-venv, the test tools) from the Debian archive and PyPI.

* ``scripts/run`` installs, puts the shipped policy in place and brings the
  daemon up: ``watchdogctl status`` answers and ``/healthz`` says 200.
* ``scripts/test`` builds its virtualenv and passes, restricted to the unit
  tests (the whole suite needs dockerd and systemd, which a plain container
  does not have, and would not fit CI's time budget twice).

The container shares the host's network (``--network host``), so the daemon is
given a free port, and runs with ``--dry-run``: the shipped policy probes
127.0.0.1, which here is the host, and nothing may act on it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from tests.support.pristine import CHECKOUT, PristineContainer, ensure_pristine_image, free_port
from tests.support.systemd_container import SystemdContainerError

pytestmark = [pytest.mark.integration]

CONFIG = "/etc/watchdogd/watchdogd.yaml"
VENV = "/opt/watchdogd"
RUN_TIMEOUT = 600.0
UP_TIMEOUT = 300.0
TEST_TIMEOUT = 1500.0
UP = (0, 1)  # watchdogctl status: 0 all ok, 1 something needs attention; 3 = no daemon answers


@pytest.fixture(scope="module")
def image() -> str:
    try:
        return ensure_pristine_image()
    except Exception as exc:  # any failure to build the image is this test's failure
        pytest.fail(f"cannot build the pristine Debian 12 image: {exc}")


@pytest.fixture
def box(image: str) -> Iterator[PristineContainer]:
    container = PristineContainer(image)
    try:
        container.start()
        container.copy_tree()
    except SystemdContainerError as exc:
        container.stop()
        pytest.fail(f"cannot prepare the pristine container: {exc}")
    try:
        yield container
    finally:
        container.stop()


def healthz(box: PristineContainer, port: int) -> tuple[int, str]:
    """GET /healthz with the container's own python3 (minbase has no curl); (status, body), status 0 if no answer."""
    script = (
        "import sys, urllib.error, urllib.request\n"
        "try:\n"
        "    r = urllib.request.urlopen('http://127.0.0.1:' + sys.argv[1] + '/healthz', timeout=10)\n"
        "except urllib.error.HTTPError as e:\n"
        "    r = e\n"
        "except OSError as e:\n"
        "    print(0); print(e); sys.exit()\n"
        "print(r.status); print(r.read().decode())\n"
    )
    out = box.exec(["python3", "-c", script, str(port)], check=False).stdout
    status, _, body = out.partition("\n")
    return int(status or 0), body.strip()


@pytest.mark.timeout(RUN_TIMEOUT + UP_TIMEOUT + 300)
def test_run_installs_and_starts_the_daemon(box: PristineContainer) -> None:
    assert box.exec(["python3", "-c", "import ensurepip"], check=False).returncode != 0, (
        "the image is not pristine: python3 -m venv already works (python3-venv is installed)"
    )

    # First run on the fresh machine: python3-venv, the venv, watchdogd and the shipped
    # policy get installed; `--version` makes the daemon print its version and exit.
    code, took = box.run_logged(f"{CHECKOUT}/scripts/run --version", "/root/run-first.log", timeout=RUN_TIMEOUT)
    log = box.tail("/root/run-first.log")
    print(f"scripts/run --version on a pristine Debian 12: {took:.0f}s")
    assert code == 0, f"scripts/run --version exited {code}; tail of its output:\n{log}"
    assert "installing python3-venv" in log, log
    assert "installed the shipped policy" in log, log
    assert re.search(r"^watchdogd \d", log, re.MULTILINE), log
    assert box.exec(["cmp", CONFIG, f"{CHECKOUT}/etc/watchdogd/watchdogd.yaml"], check=False).returncode == 0
    assert box.exec(["stat", "-c", "%a", CONFIG]).stdout.strip() == "640"

    # The shipped policy, listening on a port the host does not use (the network is shared).
    port = free_port()
    shipped = box.exec(["cat", CONFIG]).stdout
    config, count = re.subn(r"^listen:.*$", f"listen: 127.0.0.1:{port}", shipped, flags=re.MULTILINE)
    assert count == 1, f"no single top-level `listen:` line in the shipped {CONFIG}"
    box.write_file(CONFIG, config, mode=0o640)

    # Second run, in the background as a service manager would: it keeps that config and the daemon comes up.
    started = time.monotonic()
    box.start_logged(f"{CHECKOUT}/scripts/run --dry-run", "/root/run.log", "/root/run.pid")
    status = None
    while time.monotonic() - started < UP_TIMEOUT:
        if not box.alive("/root/run.pid"):
            pytest.fail("scripts/run exited before the daemon answered; tail of its output:\n"
                        + box.tail("/root/run.log"))
        # Until scripts/run execs the daemon, pip may be replacing watchdogctl (exit 2, no such file).
        if "scripts/run: starting" in box.tail("/root/run.log"):
            status = box.exec([f"{VENV}/bin/watchdogctl", "status"], check=False, timeout=60)
            if status.returncode in UP:
                break
        time.sleep(1)  # polling the daemon with a deadline
    assert status is not None and status.returncode in UP, (
        f"watchdogctl status: exit {status and status.returncode} after {time.monotonic() - started:.0f}s "
        f"(0/1 = up, 3 = unreachable; none = scripts/run never started the daemon)\n"
        f"{status and status.stdout + status.stderr}\n"
        f"tail of scripts/run's output:\n{box.tail('/root/run.log')}"
    )
    print(f"scripts/run --dry-run, daemon answering: {time.monotonic() - started:.0f}s")
    deadline = time.monotonic() + 60
    while (health := healthz(box, port))[0] != 200 and time.monotonic() < deadline:
        time.sleep(1)  # polling /healthz with a deadline
    assert health[0] == 200, f"/healthz on :{port}: {health}\ntail of scripts/run's output:\n" + box.tail(
        "/root/run.log")
    log = box.tail("/root/run.log")
    assert f"keeping the existing {CONFIG}" in log, log

    # It stops on SIGTERM.
    box.exec(["sh", "-c", 'kill -TERM "$(cat /root/run.pid)"'])
    deadline = time.monotonic() + 30
    while box.alive("/root/run.pid") and time.monotonic() < deadline:
        time.sleep(0.5)  # polling the process with a deadline
    assert not box.alive("/root/run.pid"), f"the daemon did not stop on SIGTERM:\n{box.tail('/root/run.log')}"


@pytest.mark.timeout(TEST_TIMEOUT + 300)
def test_test_command_builds_its_venv_and_passes(box: PristineContainer) -> None:
    started = time.monotonic()
    code, took = box.run_logged(f"cd {CHECKOUT} && scripts/test tests/unit -q -x", "/root/test.log",
                                timeout=TEST_TIMEOUT)
    log = box.tail("/root/test.log")
    print(f"scripts/test tests/unit -q -x on a pristine Debian 12: {took:.0f}s")
    assert code == 0, f"scripts/test tests/unit -q -x exited {code} after {took:.0f}s; tail of its output:\n{log}"
    full = box.exec(["cat", "/root/test.log"]).stdout
    assert "python3-venv" in full and f"creating the virtual environment {CHECKOUT}/.venv" in full, full[-4000:]
    assert re.search(r"\d+ passed", log), log

    # Into the venv, never into the system interpreter.
    venv_import = box.exec([f"{CHECKOUT}/.venv/bin/python", "-c", "import watchdogd, sys; print(watchdogd.__file__)"],
                           check=False)
    assert venv_import.returncode == 0 and venv_import.stdout.startswith(f"{CHECKOUT}/watchdogd/"), venv_import
    system = box.exec(["sh", "-c", "cd / && python3 -c 'import watchdogd'"], check=False)
    assert system.returncode != 0, "watchdogd is importable from the system python3"
    assert box.exec(["python3", "-m", "pip", "--version"], check=False).returncode != 0, "pip in the system python3"
    print(f"pristine scripts/test: {time.monotonic() - started:.0f}s in all")
