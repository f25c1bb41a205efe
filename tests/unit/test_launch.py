"""The shipped ways of starting the daemon say what watchdogd.launch says (tests and benches use it)."""

from __future__ import annotations

import shlex
from pathlib import Path

from watchdogd.launch import SHIPPED_PYCACHE, SHIPPED_PYTHON, daemon_argv

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "watchdogd.service"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_the_unit_starts_the_interpreter_with_the_flags_and_a_cache_it_may_write() -> None:
    settings = unit_settings()
    [exec_start] = settings["ExecStart"]
    assert shlex.split(exec_start) == [*daemon_argv(SHIPPED_PYTHON, SHIPPED_PYCACHE),
                                       "--config", "/etc/watchdogd/watchdogd.yaml"]
    assert settings["CacheDirectory"] == ["watchdogd"]  # /var/cache/watchdogd: writable under ProtectSystem=strict
    assert Path(SHIPPED_PYCACHE).parent == Path("/var/cache/watchdogd")


def test_scripts_run_starts_the_daemon_as_the_unit_does() -> None:
    text = (ROOT / "scripts" / "run").read_text()
    assert f"PYCACHE={SHIPPED_PYCACHE}\n" in text
    line = next(line for line in text.splitlines() if line.startswith("DAEMON=("))
    words = shlex.split(line.removeprefix("DAEMON=(").removesuffix(")"))
    assert words == daemon_argv("$VENV/bin/python", "$PYCACHE")


def test_the_packages_empty_the_cache_on_install_and_remove_it_with_the_package() -> None:
    scripts = ROOT / "packaging" / "scripts"
    for installs in (scripts / "deb" / "postinst", scripts / "rpm" / "post"):
        assert f"rm -rf {SHIPPED_PYCACHE}\n" in installs.read_text(), installs
    for removes in (scripts / "deb" / "postrm", scripts / "rpm" / "postun"):
        assert "rm -rf /var/cache/watchdogd\n" in removes.read_text(), removes
