"""Package sizes and the service's memory a minute after start under systemd (a benchmark, not a test).

    python3 -m tests.integration.packaging.measure [DEB]

Without DEB it runs ``packaging/build`` first. It installs the .deb in the
systemd container with the shipped policy, waits ``--settle`` seconds (60 by
default: the figure the packaging issue asks for) and prints the .deb/.rpm
sizes, the installed size, ``systemctl show -p MemoryCurrent`` (the whole
cgroup, page cache included) and the main process's VmRSS/VmHWM.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

from tests.integration.packaging.support import base_version, build, wait_until
from tests.support.systemd_container import SystemdContainer, ensure_image


def mib(value: float) -> str:
    return f"{value / 1024 / 1024:.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("deb", nargs="?", type=Path)
    parser.add_argument("--settle", type=float, default=60.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        if args.deb is None:
            deb, rpm = build(Path(scratch), base_version())
            print(f"rpm: {rpm.name} {mib(rpm.stat().st_size)}")
        else:
            deb = args.deb
        print(f"deb: {deb.name} {mib(deb.stat().st_size)}")
        with SystemdContainer(ensure_image()) as box:
            box.wait_booted()
            box.copy_in(deb, f"/root/{deb.name}")
            box.exec(["apt-get", "install", "-y", "-q", f"/root/{deb.name}"], timeout=300,
                     env={"DEBIAN_FRONTEND": "noninteractive"})
            installed = box.exec(["dpkg-query", "-W", "-f=${Installed-Size}", "watchdogd"]).stdout
            print(f"installed size: {int(installed) / 1024:.1f} MiB (dpkg Installed-Size)")
            started = time.monotonic()
            pid = wait_until(lambda: int(box.exec(["systemctl", "show", "-p", "MainPID", "--value",
                                                   "watchdogd"]).stdout), 30, "watchdogd's main pid")
            time.sleep(max(0.0, args.settle - (time.monotonic() - started)))  # the benchmark's own settle time
            memory = box.exec(["systemctl", "show", "-p", "MemoryCurrent", "--value", "watchdogd"]).stdout.strip()
            status = box.exec(["cat", f"/proc/{pid}/status"]).stdout
            rss = {key: int(value) * 1024 for key, value in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M)}
            print(f"after {args.settle:.0f}s: MemoryCurrent {mib(int(memory)) if memory.isdigit() else memory}, "
                  f"VmRSS {mib(rss['VmRSS'])}, VmHWM {mib(rss['VmHWM'])}")
            print(box.exec(["systemctl", "status", "--no-pager", "watchdogd"], check=False).stdout)


if __name__ == "__main__":
    main()
