"""The Redis fleet coordinator against a private redis-server: the contract's promises, checked on the server.

Each test gets its own redis-server on a free port (never the shared 6379),
so tests may stop, freeze and restart it. Waiting for expiry is a bounded
poll on the coordinator's or the server's state, never a fixed sleep.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.fleet.answers import denial_of, grant_of, within
from tests.integration.redis.server import RedisServer, TlsFiles, wait_until
from tests.integration.services.servers import make_tls
from watchdogd.fleet.coordinator import CoordinatorError, Denial, Grant, GroupLimits
from watchdogd.fleet.redis import RedisCoordinator

pytestmark = pytest.mark.integration

PREFIX = "watchdogd:fleet:"
PASSWORD = "s3cret-fleet-pw"
LOCKED = ["--user", "fleet", "on", f">{PASSWORD}", "~*", "&*", "+@all"]
"""A password-protected ACL user (the default user stays open so the server helper's PING probe works)."""



def slot_key(group: str, slot: int) -> str:
    return f"{PREFIX}{group}:slot:{slot}"


@pytest.fixture
def make_coordinator(server: RedisServer) -> Iterator[Callable[..., RedisCoordinator]]:
    made: list[RedisCoordinator] = []

    def make(host: str, url: str | None = None, **kwargs: Any) -> RedisCoordinator:
        kwargs.setdefault("lease_ttl", 3.0)
        kwargs.setdefault("timeout", 1.0)
        coordinator = RedisCoordinator(url or server.url, host, **kwargs)
        made.append(coordinator)
        return coordinator

    try:
        yield make
    finally:
        for coordinator in made:
            coordinator.close()




def poll_grant(coordinator: RedisCoordinator, group: GroupLimits, *, denied_by: str, what: str) -> Grant:
    """Acquire until granted (a bounded poll); every denial on the way must have reason ``denied_by``."""
    reasons: set[str] = set()

    def attempt() -> Grant | None:
        answer = coordinator.acquire(group, "r", within())
        if isinstance(answer, Denial):
            reasons.add(answer.reason)
            return None
        return answer

    grant: Grant = wait_until(attempt, timeout=5, what=what)
    assert reasons <= {denied_by}, reasons
    return grant


# --------------------------------------------------------------------------- grants, holders, tokens


def test_grant_is_a_key_on_the_server_and_release_deletes_it(
    make_coordinator: Callable[..., RedisCoordinator], admin: redis.Redis
) -> None:
    group = GroupLimits("app-restarts", max_hosts=2)
    web1 = make_coordinator("web1")

    grant = grant_of(web1.acquire(group, "nginx-down", within()))
    assert (grant.group, grant.host, grant.rule) == ("app-restarts", "web1", "nginx-down")
    assert grant.token >= 1 and grant.slot in (0, 1)
    assert web1.holding(grant)
    assert admin.get(slot_key("app-restarts", grant.slot)) == grant.handle.encode()
    assert 0 < admin.pttl(slot_key("app-restarts", grant.slot)) <= 3000
    view = web1.view(group, within())
    holders = [(h.host, h.rule, h.slot, h.token) for h in view.holders]
    assert holders == [("web1", "nginx-down", grant.slot, grant.token)]
    assert view.max_runs is None and view.runs_in_window is None
    assert web1.peek(group, within()) is None

    web1.release(grant, within())
    assert not web1.holding(grant)
    assert admin.exists(slot_key("app-restarts", grant.slot)) == 0
    assert web1.view(group, within()).holders == ()


def test_full_group_denial_names_every_holder(make_coordinator: Callable[..., RedisCoordinator]) -> None:
    group = GroupLimits("app-restarts", max_hosts=2)
    web1, web2, web3 = (make_coordinator(name) for name in ("web1", "web2", "web3"))
    grant_of(web1.acquire(group, "rule-x", within()))
    grant_of(web2.acquire(group, "rule-y", within()))

    denial = denial_of(web3.acquire(group, "rule-z", within()), "full")
    assert denial.detail.startswith("app-restarts full: 2/2 held by ")
    assert "web1 (rule rule-x, 0s)" in denial.detail and "web2 (rule rule-y, 0s)" in denial.detail
    assert sorted(h.host for h in denial.holders) == ["web1", "web2"]
    assert denial_of(web3.peek(group, within()), "full").holders == denial.holders
    assert len(web3.view(group, within()).holders) == 2


def test_tokens_only_grow_and_are_recorded_in_the_slot(make_coordinator: Callable[..., RedisCoordinator]) -> None:
    group = GroupLimits("db", max_hosts=1)
    hosts = [make_coordinator("web1"), make_coordinator("web2")]
    tokens: list[int] = []
    for i in range(10):
        host = hosts[i % 2]
        grant = grant_of(host.acquire(group, "r", within()))
        assert [h.token for h in host.view(group, within()).holders] == [grant.token]
        tokens.append(grant.token)
        host.release(grant, within())
    assert tokens == sorted(set(tokens)), tokens


def test_a_foreign_value_in_a_slot_is_holder_unknown(
    make_coordinator: Callable[..., RedisCoordinator], admin: redis.Redis
) -> None:
    group = GroupLimits("db", max_hosts=2)
    admin.set(slot_key("db", 0), b"\xff not json")
    admin.set(slot_key("db", 1), b'{"host": 5, "since": "x", "token": -3, "rule": "' + b"r" * 5000 + b'"}')
    denial = denial_of(make_coordinator("web1").acquire(group, "r", within()), "full")
    assert [(h.host, h.rule, h.token, h.since) for h in denial.holders] == [("unknown", "unknown", 0, 0.0)] * 2
    assert denial.detail == "db full: 2/2 held by unknown (rule unknown, ?), unknown (rule unknown, ?)"


# --------------------------------------------------------------------------- the run window


def test_run_window_denies_then_slides(make_coordinator: Callable[..., RedisCoordinator]) -> None:
    group = GroupLimits("deploys", max_hosts=5, max_runs=2, per=1.2)
    web1 = make_coordinator("web1")
    first = time.monotonic()
    web1.release(grant_of(web1.acquire(group, "r", within())), within())
    # The window slides: a second run half a window later outlives the first one in it. (Waiting for time
    # itself to pass: there is no event to await.)
    wait_until(lambda: time.monotonic() >= first + 0.6, timeout=2, what="half a window", interval=0.01)
    web1.release(grant_of(web1.acquire(group, "r", within())), within())

    denial = denial_of(web1.acquire(group, "r", within()), "rate")
    assert denial.detail == "deploys: 2 runs in the last 1.2s, limit 2"
    assert denial_of(web1.peek(group, within()), "rate").detail == denial.detail
    assert web1.view(group, within()).runs_in_window == 2

    wait_until(lambda: web1.view(group, within()).runs_in_window == 1, timeout=5, what="the first run to age out")
    assert time.monotonic() - first >= 1.1, "a run left the window before `per` had passed"
    assert web1.peek(group, within()) is None
    grant_of(web1.acquire(group, "r", within()))
    assert web1.view(group, within()).runs_in_window == 2


# --------------------------------------------------------------------------- leases


def test_close_releases_its_slots_at_once(
    make_coordinator: Callable[..., RedisCoordinator], admin: redis.Redis
) -> None:
    group = GroupLimits("db", max_hosts=1)
    web1, web2 = make_coordinator("web1", lease_ttl=30.0), make_coordinator("web2")
    grant = grant_of(web1.acquire(group, "r", within()))
    web1.close()
    assert admin.exists(slot_key("db", grant.slot)) == 0
    assert not web1.holding(grant)
    grant_of(web2.acquire(group, "r", within()))
    web1.close()  # idempotent
    assert "closed" in denial_of(web1.acquire(group, "r", within()), "unavailable").detail


def test_a_vanished_host_stops_holding_before_anyone_else_is_granted(
    make_coordinator: Callable[..., RedisCoordinator], admin: redis.Redis
) -> None:
    group = GroupLimits("db", max_hosts=1)
    gone, web2 = make_coordinator("gone", lease_ttl=1.0), make_coordinator("web2", lease_ttl=1.0)
    old = grant_of(gone.acquire(group, "r", within()))
    gone._keeper.halt()  # the host vanishes: no more refreshes, no release
    assert gone.holding(old)
    assert denial_of(web2.acquire(group, "r", within()), "full").holders[0].host == "gone"

    new = poll_grant(web2, group, denied_by="full", what="the vanished host's slot to expire")
    assert not gone.holding(old), "the old holder still believes it holds a slot Redis gave away"

    gone.release(old, within())  # stale: must not free the new holder's slot
    forged = dataclasses.replace(new, handle=new.handle.replace('"nonce":"', '"nonce":"0'))
    web2.release(forged, within())
    assert admin.get(slot_key("db", new.slot)) == new.handle.encode()
    assert web2.holding(new)
    assert [h.host for h in web2.view(group, within()).holders] == ["web2"]


def test_the_keeper_keeps_a_held_slot_past_its_ttl(
    make_coordinator: Callable[..., RedisCoordinator], admin: redis.Redis
) -> None:
    group = GroupLimits("db", max_hosts=1)
    web1 = make_coordinator("web1", lease_ttl=0.6)
    grant = grant_of(web1.acquire(group, "r", within()))
    before = web1.stats.requests
    wait_until(lambda: web1.stats.requests >= before + 4, timeout=5, what="four lease refreshes (> one TTL)")
    assert web1.holding(grant)
    assert admin.get(slot_key("db", grant.slot)) == grant.handle.encode()
    assert web1.stats.leases_lost == 0 and web1.stats.errors == 0


def test_a_slot_gone_from_the_server_is_lost_on_the_next_refresh(
    make_coordinator: Callable[..., RedisCoordinator], admin: redis.Redis
) -> None:
    group = GroupLimits("db", max_hosts=2)
    web1 = make_coordinator("web1", lease_ttl=0.6)
    first = grant_of(web1.acquire(group, "a", within()))
    second = grant_of(web1.acquire(group, "b", within()))
    admin.set(slot_key("db", first.slot), b"someone else")
    wait_until(lambda: not web1.holding(first), timeout=5, what="the changed slot to be seen as lost")
    assert web1.stats.leases_lost == 1
    assert web1.holding(second), "one lost slot must not cost the host its other slots"
    assert admin.get(slot_key("db", first.slot)) == b"someone else"


# --------------------------------------------------------------------------- outages


def test_stopped_server_is_unavailable_within_the_deadline_then_works_again(
    make_server: Callable[..., RedisServer],
    make_coordinator: Callable[..., RedisCoordinator],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="watchdogd.fleet")
    locked = make_server(extra=LOCKED)
    url = f"redis://fleet:{PASSWORD}@127.0.0.1:{locked.port}/0"
    group = GroupLimits("db", max_hosts=1)
    web1 = make_coordinator("web1", url=url, lease_ttl=1.0)
    grant = grant_of(web1.acquire(group, "r", within()))

    locked.stop()
    started = time.monotonic()
    denial = denial_of(web1.acquire(group, "r", started + 1.0), "unavailable")
    assert time.monotonic() - started < 1.0
    assert denial.detail == (
        f"fleet budget unavailable: redis redis://fleet@127.0.0.1:{locked.port}/0: Connection refused"
    )
    assert denial_of(web1.peek(group, within(1.0)), "unavailable").detail == denial.detail
    with pytest.raises(CoordinatorError) as raised:
        web1.view(group, within(1.0))
    assert web1.holding(grant)  # until its lease deadline: the refreshes fail, nothing says it is gone
    wait_until(lambda: not web1.holding(grant), timeout=5, what="the holding to lapse without keep-alives")
    web1.release(grant, within(0.5))  # never raises
    assert web1.stats.errors >= 3 and web1.stats.last_error == str(raised.value)

    locked.start()
    again = grant_of(web1.acquire(group, "r", within()))
    assert web1.holding(again)
    shown = [str(raised.value), denial.detail, str(web1.stats.last_error), web1.stats.endpoint]
    shown += [r.getMessage() + repr(getattr(r, "fields", "")) for r in caplog.records]
    assert not [text for text in shown if PASSWORD in text]
    assert any("unavailable" in r.getMessage() for r in caplog.records)


def test_a_frozen_server_answers_unavailable_by_the_deadline(
    server: RedisServer, make_coordinator: Callable[..., RedisCoordinator]
) -> None:
    group = GroupLimits("db", max_hosts=1)
    warm = make_coordinator("warm", lease_ttl=1.0)  # has an idle connection when the server freezes
    cold = make_coordinator("cold", lease_ttl=1.0)  # connects to a frozen server (the kernel still accepts)
    warm.release(grant_of(warm.acquire(group, "r", within())), within())
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        for coordinator in (warm, cold):
            started = time.monotonic()
            denial = denial_of(coordinator.acquire(group, "r", started + 0.3), "unavailable")
            assert time.monotonic() - started < 0.3 + 0.1, denial
            assert denial.detail.endswith(": timed out"), denial
            started = time.monotonic()
            assert coordinator.peek(group, started + 0.2) is not None
            with pytest.raises(CoordinatorError):
                coordinator.view(group, started + 0.4)
            assert time.monotonic() - started < 0.6 + 0.2
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    # The timed-out acquires were queued and run once the server woke: their slots belong to no grant,
    # nobody refreshes them, and they expire within one lease TTL.
    assert warm._keeper.held == 0 and cold._keeper.held == 0
    poll_grant(cold, group, denied_by="full", what="the orphaned slot to expire")


def test_a_wrong_password_is_unavailable_and_never_shown(
    make_server: Callable[..., RedisServer], make_coordinator: Callable[..., RedisCoordinator]
) -> None:
    locked = make_server(extra=LOCKED)
    url = f"redis://fleet@127.0.0.1:{locked.port}/0"
    web1 = make_coordinator("web1", url=url, password="wrong-" + PASSWORD)
    denial = denial_of(web1.acquire(GroupLimits("db", max_hosts=1), "r", within()), "unavailable")
    assert denial.detail.startswith(f"fleet budget unavailable: redis redis://fleet@127.0.0.1:{locked.port}/0: ")
    assert PASSWORD not in denial.detail and "invalid username-password" in denial.detail
    right = make_coordinator("web1", url=url, password=PASSWORD)
    grant_of(right.acquire(GroupLimits("db", max_hosts=1), "r", within()))


def test_settings_that_cannot_work_are_refused_without_showing_the_password() -> None:
    with pytest.raises(ValueError, match="redis://") as raised:
        RedisCoordinator(f"http://:{PASSWORD}@127.0.0.1:1/0", "web1")
    assert PASSWORD not in str(raised.value)
    with pytest.raises(ValueError, match="one place"):
        RedisCoordinator(f"redis://:{PASSWORD}@127.0.0.1:1/0", "web1", password=PASSWORD)
    with pytest.raises(ValueError, match="rediss://"):
        RedisCoordinator("redis://127.0.0.1:1/0", "web1", ca_file="/etc/ssl/ca.pem")


# --------------------------------------------------------------------------- the storm


def test_twenty_hosts_at_once_never_exceed_max_hosts(
    make_coordinator: Callable[..., RedisCoordinator], admin: redis.Redis
) -> None:
    group = GroupLimits("storm", max_hosts=3)
    hosts = [make_coordinator(f"web{i}") for i in range(20)]
    start = threading.Barrier(len(hosts))
    lock = threading.Lock()
    active = peak = 0
    tokens: list[int] = []
    denials: list[Denial] = []
    failures: list[BaseException] = []

    def storm(coordinator: RedisCoordinator) -> None:
        nonlocal active, peak
        try:
            start.wait(timeout=10)
            for _ in range(15):
                answer = coordinator.acquire(group, "r", within())
                if isinstance(answer, Denial):
                    with lock:
                        denials.append(answer)
                    continue
                with lock:  # counted after the grant arrived, uncounted before the release is sent:
                    active += 1  # inside the server's holding interval, so never more than the server's
                    peak = max(peak, active)
                    tokens.append(answer.token)
                holders = coordinator.view(group, within()).holders
                assert len(holders) <= group.max_hosts
                assert answer.token in {h.token for h in holders}, "the server does not record our grant"
                with lock:
                    active -= 1
                coordinator.release(answer, within())
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=storm, args=(host,)) for host in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not failures, failures[0]
    assert 1 <= peak <= group.max_hosts, peak
    assert {d.reason for d in denials} <= {"full"}, [d.detail for d in denials if d.reason != "full"][:3]
    assert denials, "no contention: the storm proved nothing"
    assert len(tokens) == len(set(tokens))
    assert int(admin.get(f"{PREFIX}storm:token") or 0) == len(tokens), "a token was taken without a grant"
    assert hosts[0].view(group, within()).holders == ()


# --------------------------------------------------------------------------- TLS


def test_rediss_with_a_ca_file(
    make_server: Callable[..., RedisServer], make_coordinator: Callable[..., RedisCoordinator], tmp_path: Path
) -> None:
    made = make_tls(tmp_path / "tls", expires_in=dt.timedelta(days=1))
    tls_files = TlsFiles(ca=made.ca, cert=made.cert, key=made.key)
    secure = make_server(tls=tls_files)
    group = GroupLimits("db", max_hosts=1)
    web1 = make_coordinator("web1", url=secure.url, ca_file=str(tls_files.ca))
    assert secure.url.startswith("rediss://")
    web1.release(grant_of(web1.acquire(group, "r", within())), within())
    untrusting = make_coordinator("web2", url=secure.url)  # the system CAs do not know our test CA
    denial = denial_of(untrusting.acquire(group, "r", within()), "unavailable")
    assert "certificate verify failed" in denial.detail.lower(), denial
