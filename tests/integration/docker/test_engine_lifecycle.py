"""The engine going away and coming back, and TLS: clear probe-down reasons, a daemon that stays up,
and an event follower that reconnects (checked on private engines, never the shared one)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import DaemonProcess, run_once, write_config
from tests.integration.docker.dockertest import RUN_LABEL, wait_until
from tests.integration.docker.private_engine import PrivateEngine, TlsFiles, make_tls, started
from tests.support.dockerd import BUSYBOX_TAG
from watchdogd.contracts import ProbeError
from watchdogd.families.docker.probes import ContainersParams, ContainersProbe, EngineParams, EngineProbe
from watchdogd.families.docker.target import DockerEngine, DockerTargetParams, TlsParams

pytestmark = pytest.mark.integration

TRAPS_TERM = ["sh", "-c", "trap 'exit 3' TERM; sleep 600 & wait"]


@pytest.fixture
def private() -> Iterator[PrivateEngine]:
    engine = started()
    try:
        yield engine
    finally:
        engine.close()


def test_missing_engine_is_probe_down_with_the_reason_and_the_daemon_stays_up(tmp_path: Path) -> None:
    socket_path = tmp_path / "docker.sock"
    config = write_config(
        tmp_path,
        f"""\
        interval: 1s
        targets:
          docker:
            gone: {{url: "unix://{socket_path}"}}
        rules:
          workers:
            probe: docker.containers
            above: 0s
            actions:
              - docker.start: {{}}
        """,
    )
    reason = (
        f"Docker engine unreachable at unix://{socket_path}:"
        f" socket {socket_path} does not exist (is dockerd running?)"
    )

    once = run_once(config)
    assert once.returncode == 0, once.stderr
    assert f"workers: down; error: {reason}" in once.stdout

    with DaemonProcess(config) as daemon:
        line = daemon.wait_for_log("probe down", rule="workers")
        assert reason in line
        assert daemon.returncode is None
    assert daemon.returncode == 0  # it stopped on our SIGTERM, cleanly, not on the missing engine


def test_event_follower_reconnects_after_the_engine_restarts(private: PrivateEngine) -> None:
    engine = DockerEngine(DockerTargetParams(url=private.url, timeout=5))
    api = private.api()
    try:
        probe = ContainersProbe(ContainersParams(), engine, time.time)
        assert probe.measure() == []
        assert engine.events.synced

        private.stop()
        wait_until(lambda: not engine.events.synced, what="the follower to notice the engine is gone")
        with pytest.raises(ProbeError, match="Docker engine unreachable at unix://.*(does not exist|refused)"):
            probe.measure()
        private.restart()
        api = private.api()

        def measured() -> bool:
            try:
                probe.measure()
            except ProbeError:
                return False
            return True

        wait_until(measured, timeout=60, what="the probe to reach the restarted engine")
        wait_until(lambda: engine.events.synced, timeout=60, what="the follower to reconnect")
        cid = api.create_container(BUSYBOX_TAG, TRAPS_TERM, name="trap", labels={RUN_LABEL: "private"},
                                   host_config=api.create_host_config(network_mode="none"))["Id"]
        api.start(cid)
        wait_until(lambda: api.inspect_container(cid)["State"]["Running"], what="the container to run")
        api.stop(cid, timeout=5)  # exit 3: only the live events (not the exit code) say it was a stop

        [reading] = wait_until(lambda: [r for r in probe.measure() if r.details.get("stopped_by")],
                               what="the stop to be classified")
        assert reading.details["exit_code"] == 3
        assert reading.details["stopped_by"] == "operator"
        assert reading.value == 0
    finally:
        engine.close()
        api.close()


def test_engine_probe_finds_a_stopped_and_a_hung_engine_and_sees_it_back(private: PrivateEngine) -> None:
    engine = DockerEngine(DockerTargetParams(url=private.url, timeout=5))
    engine.retry_within(0.5)  # what the daemon does for rules every second
    probe = EngineProbe(EngineParams(timeout=1), engine, time.time)
    try:
        [reading] = probe.measure()
        assert reading.subject == private.url == probe.outage_subjects()[0] and 0 < reading.value < 1
        assert private.proc is not None
        os.kill(private.proc.pid, signal.SIGSTOP)  # the socket still accepts; nobody answers
        try:
            started_at = time.monotonic()
            with pytest.raises(ProbeError, match=f"Docker engine unreachable at {private.url}: no answer within 1s"):
                probe.measure()
            assert time.monotonic() - started_at < 2.0
        finally:
            os.kill(private.proc.pid, signal.SIGCONT)
        private.stop()
        with pytest.raises(ProbeError, match="Docker engine unreachable at unix://.*(does not exist|refused)"):
            time.sleep(0.6)  # past the capped backoff, so this is a real attempt
            probe.measure()
        private.start()
        time.sleep(0.6)
        [back] = probe.measure()  # the first run after the engine is back: no 30 s backoff in the way
        assert back.subject == private.url
    finally:
        engine.close()


@pytest.fixture
def tls_engine(tmp_path: Path) -> Iterator[tuple[PrivateEngine, TlsFiles]]:
    files = make_tls(tmp_path / "tls")
    engine = started(files)
    try:
        yield engine, files
    finally:
        engine.close()


def test_tcp_with_tls(tls_engine: tuple[PrivateEngine, TlsFiles]) -> None:
    private, files = tls_engine
    assert private.tcp_url is not None
    tls = TlsParams(ca_file=str(files.ca), cert_file=str(files.client_cert), key_file=str(files.client_key))
    good = DockerEngine(DockerTargetParams(url=private.tcp_url, tls=tls, timeout=5))
    no_client_cert = DockerEngine(DockerTargetParams(url=private.tcp_url, tls=TlsParams(ca_file=str(files.ca)),
                                                     timeout=5))
    plain = DockerEngine(DockerTargetParams(url=private.tcp_url, timeout=5))
    try:
        assert ContainersProbe(ContainersParams(), good, time.time).measure() == []
        for bad in (no_client_cert, plain):
            with pytest.raises(ProbeError, match=f"Docker engine unreachable at {private.tcp_url}: ") as info:
                ContainersProbe(ContainersParams(), bad, time.time).measure()
            assert "\n" not in str(info.value)
    finally:
        for engine in (good, no_client_cert, plain):
            engine.close()
