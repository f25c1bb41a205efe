"""The families' side of the outage model (DESIGN.md "Outage model", issue 12).

* which probes are availability probes, and the subjects an outage of each takes down;
* "no answer" is found within the probe's own timeout, against real local sockets that
  refuse, drop the SYN, or accept and then never say a word (a SIGSTOPped or hung server);
* the targets' reconnect backoff capped by ``retry_within``, on an injected clock;
* what each action says it changes (``NamesThing``), and the kinds' ``settle`` defaults.

Every "server" here is a real socket on 127.0.0.1, never a mock: the point is what the
kernel, libpq, redis-py and http.client really do with them.
"""

from __future__ import annotations

import http.server
import math
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.unit.test_svc_systemd import FakeSystemctl
from watchdogd import registry
from watchdogd.contracts import NamesThing, NoParams, ProbeError, ReportsOutage
from watchdogd.families.docker import target as docker_target
from watchdogd.families.docker.actions import _RESTART as DOCKER_RESTART
from watchdogd.families.docker.actions import ContainerAction, PruneAction, PruneParams
from watchdogd.families.docker.actions import RestartParams as DockerRestartParams
from watchdogd.families.docker.probes import EngineParams, EngineProbe
from watchdogd.families.docker.target import DockerEngine, DockerTargetParams, EngineUnreachable
from watchdogd.families.exec.actions import ExecAction, ExecParams
from watchdogd.families.files.actions import CleanAction, CleanParams
from watchdogd.families.net.probes import PROBES as NET_PROBES
from watchdogd.families.postgres import target as postgres_target
from watchdogd.families.postgres.actions import CancelAction, CancelParams, SignalParams, TerminateAction
from watchdogd.families.postgres.probes import UpParams, UpProbe
from watchdogd.families.postgres.target import PostgresClient, PostgresParams, PostgresUnavailable
from watchdogd.families.process.actions import SignalAction
from watchdogd.families.process.actions import SignalParams as ProcessSignalParams
from watchdogd.families.redis import target as redis_target
from watchdogd.families.redis.actions import ClientKillAction, ClientKillParams, DeleteKeysAction, DeleteKeysParams
from watchdogd.families.redis.probes import PingProbe
from watchdogd.families.redis.target import Backoff, RedisTarget, RedisTargetParams, RedisUnavailable
from watchdogd.families.systemd.actions import RestartParams, UnitAction
from watchdogd.families.systemd.journal import VacuumAction as JournalVacuum
from watchdogd.families.systemd.journal import VacuumParams as JournalParams
from watchdogd.families.systemd.probes import UnitParams, UnitProbe
from watchdogd.families.systemd.systemctl import Systemctl
from watchdogd.model import Reading

SLACK = 0.75
"""Seconds a check may overrun its own timeout here (thread start, a loaded CI machine)."""

# --------------------------------------------------------------------------- local sockets


@contextmanager
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never sends a byte.

    Nothing calls ``accept``: the kernel completes the handshake and queues
    the connection, exactly what a SIGSTOPped Redis or PostgreSQL looks like
    from outside.
    """
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield int(server.getsockname()[1])


@contextmanager
def full_port() -> Iterator[int]:
    """A port whose accept queue is full: the kernel drops the SYN, so the connect itself never completes."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = int(server.getsockname()[1])
        with socket.create_connection(("127.0.0.1", port)):  # takes the one queue slot
            yield port


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A port whose every connection is given to ``handle`` in its own thread."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.05)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(2)
        server.close()


def reset_after_request(conn: socket.socket) -> None:
    """Read the request, then reset the connection (RST, no FIN) without answering: a crashing server."""
    conn.recv(4096)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def trickle(conn: socket.socket) -> None:
    """Answer 200 at once, then send the promised body one byte every 50 ms."""
    with conn:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n")
        try:
            for _ in range(1000):
                conn.sendall(b"x")
                time.sleep(0.05)
        except OSError:
            pass


@contextmanager
def http_server(status: int, body: bytes, extra: dict[str, bytes] | None = None) -> Iterator[int]:
    """A real HTTP server answering every GET with ``status`` and ``body`` (``extra`` overrides by path)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            payload = (extra or {}).get(self.path, body)
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def net(kind: str, **params: Any) -> Any:
    spec = NET_PROBES[kind]
    return spec.factory(spec.params.model_validate(params), None, time.time)


def raises_within(seconds: float, call: Callable[[], object], error: type[Exception], match: str) -> str:
    """``call`` raises ``error`` matching ``match`` no later than ``seconds`` (plus SLACK); its message."""
    started = time.monotonic()
    with pytest.raises(error, match=match) as caught:
        call()
    took = time.monotonic() - started
    assert took < seconds + SLACK, f"took {took:.2f}s, more than {seconds}s: {caught.value}"
    assert "\n" not in str(caught.value)
    return str(caught.value)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- which probes, which subjects


def test_the_availability_probes_are_exactly_these() -> None:
    assert {name for name, spec in registry.DEFAULT.probes.items() if spec.availability} == {
        "postgres.up", "redis.up", "net.tcp", "net.http", "systemd.unit", "docker.engine",
    }


def test_docker_engine_is_registered_like_the_other_docker_probes() -> None:
    spec = registry.DEFAULT.probes["docker.engine"]
    assert (spec.target_kind, spec.unit.value, spec.cardinality.value) == ("docker", "seconds", "low")
    assert spec.params.model_validate({}).timeout == 5.0


def test_outage_subjects_need_no_io_and_name_what_the_probe_reports() -> None:
    pg = PostgresClient(PostgresParams(dsn="host=db.internal port=5433 dbname=app user=watchdog"))
    redis = RedisTarget(RedisTargetParams(url="redis://127.0.0.1:1/0"))
    engine = DockerEngine(DockerTargetParams(url="tcp://127.0.0.1:1"))
    systemd = UnitProbe(UnitParams(units=["nginx", "worker@*.service", "nginx.service"]),
                        Systemctl(FakeSystemctl({})), time.monotonic)
    probes: dict[str, tuple[object, list[str]]] = {
        "postgres.up": (UpProbe(UpParams(), pg, time.time), ["db.internal:5433/app"]),
        "redis.up": (PingProbe(NoParams(), redis, time.time), ["ping"]),
        "net.tcp": (net("net.tcp", host="::1", port=6379), ["[::1]:6379"]),
        "net.http": (net("net.http", url="http://app.local:8080/health"), ["http://app.local:8080/health"]),
        "systemd.unit": (systemd, ["nginx.service"]),  # the glob has matched nothing yet
        "docker.engine": (EngineProbe(EngineParams(), engine, time.time), ["tcp://127.0.0.1:1"]),
    }
    for kind, (probe, subjects) in probes.items():
        assert isinstance(probe, ReportsOutage), kind
        assert probe.outage_subjects() == subjects, kind


def test_systemd_outage_subjects_are_the_units_measure_reported() -> None:
    fake = FakeSystemctl({
        "nginx.service": {"LoadState": "loaded", "ActiveState": "active"},
        "worker@1.service": {"LoadState": "loaded", "ActiveState": "failed"},
        "worker@2.service": {"LoadState": "loaded", "ActiveState": "active"},
    })
    bus = threading.Event()
    bus.set()

    def runner(argv: list[str], timeout: float) -> Any:
        if not bus.is_set():
            raise subprocess.TimeoutExpired(argv, timeout)  # systemd busy or its bus gone
        return fake(argv, timeout)

    probe = UnitProbe(UnitParams(units=["nginx", "worker@*"]), Systemctl(runner), time.monotonic)
    measured = [r.subject for r in probe.measure()]
    assert probe.outage_subjects() == measured == ["nginx.service", "worker@1.service", "worker@2.service"]
    bus.clear()
    with pytest.raises(ProbeError, match="systemctl"):
        probe.measure()
    assert probe.outage_subjects() == measured  # what the globs matched before the outage


def test_net_subjects_match_between_up_and_down() -> None:
    with silent_port() as port:
        tcp = net("net.tcp", port=port)
        [reading] = tcp.measure()
        assert [reading.subject] == tcp.outage_subjects()
    with http_server(200, b"ok") as port:
        url = f"http://127.0.0.1:{port}/health"
        check = net("net.http", url=url)
        [reading] = check.measure()
        assert [reading.subject] == check.outage_subjects() == [url] and reading.details["status"] == 200


# ------------------------------------------------------------- net: no answer raises, bad answers are values


def test_tcp_refused_raises_at_once() -> None:
    port = closed_port()
    message = raises_within(0.5, net("net.tcp", port=port, timeout=5).measure, ProbeError, "refused")
    assert message == f"no answer from 127.0.0.1:{port}: Connection refused"


def test_tcp_connect_that_never_completes_raises_within_the_timeout() -> None:
    with full_port() as port:
        message = raises_within(0.5, net("net.tcp", port=port, timeout=0.5).measure, ProbeError, "timed out")
    assert message == f"no answer from 127.0.0.1:{port}: timed out after 0.5s"


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_http_server_that_accepts_and_never_answers_raises_within_the_timeout(scheme: str) -> None:
    with silent_port() as port:
        url = f"{scheme}://127.0.0.1:{port}/health"
        message = raises_within(0.5, net("net.http", url=url, timeout=0.5).measure, ProbeError, "timed out")
    assert message == f"no answer from {url}: timed out after 0.5s"


def test_http_name_with_several_addresses_shares_one_deadline() -> None:
    """``localhost`` may resolve to ::1 and 127.0.0.1; the check still ends within its one timeout."""
    with silent_port() as port:
        check = net("net.http", url=f"http://localhost:{port}/", timeout=0.5)
        raises_within(0.5, check.measure, ProbeError, "no answer from")


def test_http_refused_and_reset_raise() -> None:
    port = closed_port()
    raises_within(0.5, net("net.http", url=f"http://127.0.0.1:{port}/").measure, ProbeError,
                  r"^no answer from http://127\.0\.0\.1:\d+/: Connection refused$")
    with serving(reset_after_request) as port:
        raises_within(1.0, net("net.http", url=f"http://127.0.0.1:{port}/").measure, ProbeError,
                      r"^no answer from .*: Connection reset by peer$")


def test_http_tls_handshake_failure_raises() -> None:
    with http_server(200, b"plain") as port:  # speaks HTTP, not TLS
        raises_within(1.0, net("net.http", url=f"https://127.0.0.1:{port}/").measure, ProbeError,
                      r"^no answer from https://")


def test_http_bad_answers_are_measured_not_raised() -> None:
    with http_server(500, b"database unavailable\n") as port:
        [reading] = net("net.http", url=f"http://127.0.0.1:{port}/").measure()
    assert math.isinf(reading.value)
    assert reading.details["status"] == 500 and reading.details["error"] == "status 500, expected 200-399"
    assert reading.details["body"] == "database unavailable\n"
    with http_server(200, b'{"status": "degraded"}') as port:
        [reading] = net("net.http", url=f"http://127.0.0.1:{port}/", body_regex='"ok"').measure()
    assert math.isinf(reading.value) and reading.details["error"].startswith("body does not match")


def test_http_body_trickling_in_is_cut_at_the_deadline() -> None:
    with serving(trickle) as port:
        started = time.monotonic()
        [reading] = net("net.http", url=f"http://127.0.0.1:{port}/", timeout=0.6).measure()
        took = time.monotonic() - started
    assert took < 0.6 + SLACK
    assert math.isinf(reading.value)  # it answered 200, then not in time: a slow answer, measured
    assert reading.details["status"] == 200 and reading.details["error"] == "timed out"


def test_tls_cert_connect_shares_the_deadline_too() -> None:
    with silent_port() as port:
        raises_within(0.5, net("net.tls_cert", port=port, timeout=0.5).measure, OSError, "timed out")


# --------------------------------------------------------------------------- hung Redis / PostgreSQL / Docker


def test_a_redis_that_accepts_and_never_answers_is_down_within_socket_timeout() -> None:
    assert RedisTargetParams().socket_timeout <= 5.0  # found well inside the default 10 s probe_timeout
    with silent_port() as port:
        target = RedisTarget(RedisTargetParams(url=f"redis://127.0.0.1:{port}/0", socket_timeout=0.5))
        try:
            message = raises_within(0.5, PingProbe(NoParams(), target, time.time).measure, RedisUnavailable,
                                    "Timeout reading")
        finally:
            target.close()
    assert message.startswith(f"redis 127.0.0.1:{port}/0: ")
    assert issubclass(RedisUnavailable, ProbeError)


def test_a_postgres_that_accepts_and_never_authenticates_is_down_within_connect_timeout() -> None:
    with silent_port() as port:
        client = PostgresClient(PostgresParams(dsn=f"host=127.0.0.1 port={port} user=watchdog dbname=app",
                                               connect_timeout=2))
        try:
            probe = UpProbe(UpParams(), client, time.time)
            raises_within(2.0, probe.measure, PostgresUnavailable, "timeout")
            shared = UpProbe(UpParams(new_connection=False), client, time.time)
            raises_within(2.0, shared.measure, PostgresUnavailable, "timeout")
        finally:
            client.close()


def test_a_docker_engine_that_accepts_and_never_answers_is_down_within_the_timeout() -> None:
    with silent_port() as port:
        engine = DockerEngine(DockerTargetParams(url=f"tcp://127.0.0.1:{port}", timeout=0.5))
        try:
            probe = EngineProbe(EngineParams(timeout=0.5), engine, time.time)
            message = raises_within(0.5, probe.measure, EngineUnreachable, "no answer within 0.5s")
        finally:
            engine.close()
    assert message.startswith(f"Docker engine unreachable at tcp://127.0.0.1:{port}")


def fake_engine_api(conn: socket.socket) -> None:
    """Just enough of the Engine API for the client: ``/version`` and ``/_ping``, on one request each."""
    with conn:
        request = conn.recv(4096).decode()
        path = request.split(" ")[1] if " " in request else ""
        if path.endswith("/version"):
            body, status = b'{"ApiVersion": "1.43", "Version": "24.0.0"}', "200 OK"
        elif path.endswith("/_ping"):
            body, status = b"OK", "200 OK"
        else:
            body, status = b'{"message": "page not found"}', "404 Not Found"
        conn.sendall(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                     + body)


def test_docker_engine_measures_the_ping() -> None:
    with serving(fake_engine_api) as port:
        url = f"tcp://127.0.0.1:{port}"
        engine = DockerEngine(DockerTargetParams(url=url, timeout=2))
        try:
            [reading] = EngineProbe(EngineParams(), engine, time.time).measure()
        finally:
            engine.close()
    assert reading.subject == url and 0 <= reading.value < 2 and reading.details == {"url": url}


def test_docker_engine_socket_missing_is_down() -> None:
    engine = DockerEngine(DockerTargetParams(url="unix:///nonexistent/docker.sock", timeout=1))
    probe = EngineProbe(EngineParams(), engine, time.time)
    raises_within(1.0, probe.measure, EngineUnreachable, "does not exist")
    assert probe.outage_subjects() == ["unix:///nonexistent/docker.sock"]


# --------------------------------------------------------------------------- reconnect within one interval


def retry_within(module: Any, client: object, seconds: float) -> None:
    """What the daemon does for every target in use (``clients.py``), through the module's ``TARGET``."""
    hook = module.TARGET.retry_within
    assert hook is not None, module.__name__
    hook(client, seconds)


def test_the_targets_declare_retry_within() -> None:
    for module in (postgres_target, redis_target, docker_target):
        assert module.TARGET.retry_within is not None, module.__name__


def test_redis_backoff_cap_bounds_every_wait_and_shortens_the_current_one() -> None:
    clock = Clock()
    backoff = Backoff(30.0, clock)
    waits = [backoff.failed("refused") for _ in range(6)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    backoff.cap(30.0, 2.5)
    assert backoff.retry_at == clock.now + 2.5  # the 30 s wait already scheduled is cut
    assert backoff.failed("refused") == 2.5
    backoff.cap(10.0, 60.0)  # never beyond the target's own reconnect_max
    assert backoff.failed("refused") == 10.0
    backoff.succeeded()
    backoff.cap(10.0, 1.0)
    assert backoff.retry_at == 0.0 and backoff.admit() is None  # nothing to shorten while connected


def test_redis_target_reconnects_within_the_cap() -> None:
    clock = Clock()
    target = RedisTarget(RedisTargetParams(url=f"redis://127.0.0.1:{closed_port()}/0"), clock)
    retry_within(redis_target, target, 3.0)
    nexts = []
    for attempt in range(4):
        clock.now += 60 if attempt else 0
        with pytest.raises(RedisUnavailable) as caught:
            target.command("PING")
        nexts.append(str(caught.value).split("next attempt in ")[1].split("s")[0])
    assert nexts == ["1.0", "2.0", "3.0", "3.0"]
    clock.now += 1.0
    with pytest.raises(RedisUnavailable, match=r"next attempt in 2\.0s \(4 failed attempts in a row\)"):
        target.command("PING")  # no attempt inside the backoff: the wait is shown
    clock.now += 2.0
    with pytest.raises(RedisUnavailable, match=r"refused.*\(5 failed attempts in a row\)"):
        target.command("PING")  # tried again after 3 s, not after reconnect_max (30 s)
    target.close()


def test_postgres_client_reconnects_within_the_cap() -> None:
    clock = Clock()
    client = PostgresClient(PostgresParams(dsn=f"host=127.0.0.1 port={closed_port()} user=x dbname=x"),
                            monotonic=clock)
    try:
        delays = []
        for _ in range(5):
            with pytest.raises(PostgresUnavailable) as caught:
                client.query("SELECT 1")
            delays.append(str(caught.value).split(":")[0])
            clock.now += 100
        assert delays == [f"reconnecting in {n}s" for n in (1, 2, 4, 8, 16)]
        with pytest.raises(PostgresUnavailable, match="^reconnecting in 32s"):
            client.query("SELECT 1")
        retry_within(postgres_target, client, 2.0)
        with pytest.raises(PostgresUnavailable, match="^reconnecting in 2s"):
            client.query("SELECT 1")  # the scheduled 32 s wait was cut to 2 s
        clock.now += 2.0
        with pytest.raises(PostgresUnavailable, match="^reconnecting in 2s: .*refused"):
            client.query("SELECT 1")  # a real attempt, and the next wait is capped too
    finally:
        client.close()


def test_docker_engine_reconnects_within_the_cap() -> None:
    clock = Clock()
    engine = DockerEngine(DockerTargetParams(url=f"tcp://127.0.0.1:{closed_port()}", timeout=1), monotonic=clock)
    try:
        waits = []
        for _ in range(7):
            with pytest.raises(EngineUnreachable):
                engine.ping()
            with pytest.raises(EngineUnreachable) as caught:
                engine.ping()  # inside the backoff: says when the next attempt is
            waits.append(float(str(caught.value).split("next attempt in ")[1].rstrip("s")))
            clock.now += 100
        assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
        clock.now -= 100
        retry_within(docker_target, engine, 2.0)
        with pytest.raises(EngineUnreachable, match=r"next attempt in 2\.0s"):
            engine.ping()
        clock.now += 2.0
        with pytest.raises(EngineUnreachable, match="refused"):
            engine.ping()
        with pytest.raises(EngineUnreachable, match=r"next attempt in 2\.0s"):
            engine.ping()
    finally:
        engine.close()


# --------------------------------------------------------------------------- what an action changes


def test_systemd_actions_name_the_unit() -> None:
    fixed = UnitAction("restart", RestartParams(unit="nginx"), Systemctl(FakeSystemctl({})), None)
    assert fixed.thing(Reading("http://127.0.0.1/health", math.inf, {"down": True})) == "nginx.service"
    own = UnitAction("restart", RestartParams(), Systemctl(FakeSystemctl({})), None)
    assert own.thing(Reading("app.service", 1.0, {"unit": "app.service"})) == "app.service"
    # An outage reading of systemd.unit: no details, the subject is the unit.
    assert own.thing(Reading("worker@2.service", math.inf, {"down": True, "error": "x"})) == "worker@2.service"
    assert own.thing(Reading("127.0.0.1:80", math.inf, {"down": True})) == "127.0.0.1:80"
    assert isinstance(own, NamesThing)


def test_systemd_restart_acts_on_a_unit_taken_down_with_systemctl() -> None:
    fake = FakeSystemctl({"app.service": {"LoadState": "loaded", "ActiveState": "failed", "CanStart": "yes"}})
    action = UnitAction("restart", RestartParams(), Systemctl(fake), None)
    result = action.run([Reading("app.service", math.inf, {"down": True}),
                         Reading("ping", math.inf, {"down": True})], dry_run=True)
    details = {item.subject: (item.ok, item.detail) for item in result.items}
    assert details["app.service"] == (True, "would restart app.service (now failed/None)")
    assert details["ping"][0] is False and "set unit:" in details["ping"][1]  # never "ping.service"


def test_docker_actions_name_the_container_on_its_engine() -> None:
    engine = DockerEngine(DockerTargetParams())
    restart = ContainerAction(DOCKER_RESTART, DockerRestartParams(), engine, time.time)
    assert restart.thing(Reading("web", 30.0, {"id": "0123abcd"})) == (
        "container 0123abcd on unix:///var/run/docker.sock"
    )
    assert restart.thing(Reading("web", 30.0, {})) == "container web on unix:///var/run/docker.sock"
    prune = PruneAction(PruneParams(), engine, time.time)
    assert prune.thing(Reading("images", 1e9, {})) == prune.thing(Reading("total", 2e9, {}))


def test_exec_names_its_command_without_the_changing_value() -> None:
    per = ExecAction(ExecParams(argv=["/usr/bin/systemctl", "restart", "{subject}", "--why={value}"]), time.time)
    assert per.thing(Reading("app.service", 97.5, {})) == "/usr/bin/systemctl restart app.service '--why={value}'"
    assert per.thing(Reading("app.service", 99.0, {})) == per.thing(Reading("app.service", 97.5, {}))
    batch = ExecAction(ExecParams(argv=["/usr/local/bin/notify", "{subjects}"], per_subject=False), time.time)
    assert batch.thing(Reading("a", 1.0, {})) == batch.thing(Reading("b", 2.0, {})) == (
        "/usr/local/bin/notify '{subjects}'"
    )


def test_postgres_signals_name_the_backend_by_pid_and_start() -> None:
    client = PostgresClient(PostgresParams(dsn="host=db port=5432 dbname=app user=w"))
    reading = Reading("pid:4242", 700.0, {"pid": 4242, "backend_start": "2024-05-01T10:00:00+00:00",
                                          "check": "idle", "mark": None})
    terminate = TerminateAction(SignalParams(), client, time.time)
    cancel = CancelAction(CancelParams(), client, time.time)
    key = "backend 4242 started 2024-05-01T10:00:00+00:00 on db:5432/app"
    assert terminate.thing(reading) == cancel.thing(reading) == key
    assert terminate.thing(Reading("pid:1", 1.0, {})) == "pid:1 on db:5432/app"


def test_other_actions_name_their_thing() -> None:
    signal = SignalAction(ProcessSignalParams(), time.time)
    assert signal.thing(Reading("worker[77]", 1e9, {"pid": 77, "start_ticks": 123456})) == "pid 77 started 123456"
    clean = CleanAction(CleanParams(path="/var/log/app", older_than=86400, pattern="*.gz"), time.time)
    assert clean.thing(Reading("/", 95.0, {})) == clean.thing(Reading("/var", 91.0, {})) == "/var/log/app (*.gz)"
    journal = JournalVacuum(JournalParams(max_size=1 << 30), time.time)
    assert journal.thing(Reading("/var/log", 95.0, {})) == "journal"
    redis = RedisTarget(RedisTargetParams(url="redis://127.0.0.1:6379/2"))
    kill = ClientKillAction(ClientKillParams(), redis)
    assert kill.thing(Reading("10.0.0.5:5555", 600.0, {"id": 17, "run_id": "abc"})) == (
        "client 17 of run abc on redis 127.0.0.1:6379/2"
    )
    delete = DeleteKeysAction(DeleteKeysParams(match="cache:*", type="string"), redis)
    assert delete.thing(Reading("memory", 95.0, {})) == "keys cache:* of type string on redis 127.0.0.1:6379/2"


# --------------------------------------------------------------------------- settle


def test_settle_defaults_per_action_kind() -> None:
    expected = {
        "systemd.restart": 30.0, "systemd.reload": 10.0,
        "docker.restart": 30.0, "docker.start": 30.0, "docker.prune": 10.0,
        "exec": 15.0,
        "postgres.terminate": 5.0, "postgres.cancel": 5.0, "postgres.vacuum": 60.0,
        "process.signal": 10.0,
        "redis.client_kill": 5.0, "redis.delete_keys": 5.0,
        "files.clean": 5.0, "journal.vacuum": 5.0,
    }
    assert {kind: spec.settle for kind, spec in registry.DEFAULT.actions.items() if kind in expected} == expected
