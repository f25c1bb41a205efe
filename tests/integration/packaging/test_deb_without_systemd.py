"""The .deb in a root where systemd is not running (an image build, a chroot, a container).

The maintainer scripts must not fail there: the unit is enabled for the next
boot, nothing is started, and purge still cleans up.
"""

from __future__ import annotations

import pytest

from tests.integration.packaging.support import Packages
from tests.support.systemd_container import SystemdContainer, SystemdContainerError, ensure_image

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

WANTS = "/etc/systemd/system/multi-user.target.wants/watchdogd.service"


def test_install_enables_for_next_boot_and_purge_cleans_up(packages: Packages) -> None:
    try:
        box = SystemdContainer(ensure_image(), boot=False)
        box.start()
    except SystemdContainerError as exc:
        pytest.fail(f"cannot start the container: {exc}")
    try:
        assert box.exec(["test", "-d", "/run/systemd/system"], check=False).returncode == 1
        box.copy_in(packages.deb, f"/root/{packages.deb.name}")
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        box.exec(["apt-get", "install", "-y", "-q", f"/root/{packages.deb.name}"], env=env, timeout=300)
        status = box.exec(["dpkg-query", "-W", "-f=${Status}", "watchdogd"]).stdout
        assert status == "install ok installed"
        assert box.exec(["readlink", WANTS]).stdout.strip() == "/lib/systemd/system/watchdogd.service"
        assert box.exec(["pgrep", "-f", "watchdogd.daemon"], check=False).returncode == 1, "nothing may start"
        assert box.exec(["getent", "group", "watchdogd"]).returncode == 0
        # The venv works on this root's own python3.11, outside the build host.
        assert box.exec(["watchdogctl", "check-config", "/etc/watchdogd/watchdogd.yaml"]).returncode == 0

        box.exec(["apt-get", "purge", "-y", "-q", "watchdogd"], env=env, timeout=300)
        for path in (WANTS, "/var/lib/watchdogd", "/etc/watchdogd", "/opt/watchdogd"):
            assert box.exec(["test", "-e", path], check=False).returncode == 1, f"{path} left after purge"
    finally:
        box.stop()
