"""SharedRead: one read of a target serves every caller within max_age; concurrent callers wait for it.

A leaf helper (families may not import each other): the docker, postgres and redis targets use it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from watchdogd import sharedread

COPIES = [sharedread.SharedRead]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Source:
    """A read that counts itself and returns a new object each time (so reuse is visible by identity)."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail: BaseException | None = None

    def __call__(self) -> tuple[int]:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return (self.calls,)


Make = Callable[..., Any]


@pytest.fixture(params=COPIES, ids=["sharedread"])
def make(request: pytest.FixtureRequest) -> Make:
    cls = request.param

    def build(read: Callable[[], Any], **kwargs: Any) -> Any:
        return cls(read, **kwargs)

    return build


def test_rules_of_one_cycle_share_one_read_and_the_next_cycle_reads_again(make: Make) -> None:
    clock, source = Clock(), Source()
    shared = make(source, max_age=1.0, monotonic=clock)
    first = shared.get()
    clock.now += 0.999
    assert all(shared.get() is first for _ in range(10))
    assert (source.calls, shared.reads) == (1, 1)
    clock.now += 0.001  # max_age after the read started: stale
    assert shared.get() == (2,)
    assert (source.calls, shared.reads) == (2, 2)


def test_the_age_counts_from_the_start_of_the_read(make: Make) -> None:
    clock = Clock()

    def slow() -> str:
        clock.now += 0.6  # the read itself takes 0.6 s
        return "rows"

    shared = make(slow, max_age=1.0, monotonic=clock)
    shared.get()
    clock.now += 0.5  # 1.1 s after the read started, 0.5 s after it ended
    shared.get()
    assert shared.reads == 2


def test_a_changed_version_ends_the_reuse_early(make: Make) -> None:
    clock, source = Clock(), Source()
    version = [0]
    shared = make(source, max_age=10.0, monotonic=clock, version=lambda: version[0])
    shared.get()
    shared.get()
    version[0] += 1  # an engine event arrived
    shared.get()
    shared.get()
    assert source.calls == 2


def test_forget_makes_the_next_caller_read(make: Make) -> None:
    source = Source()
    shared = make(source, max_age=10.0, monotonic=Clock())
    shared.get()
    shared.forget()
    assert shared.get() == (2,)


def test_max_age_zero_never_reuses(make: Make) -> None:
    source = Source()
    shared = make(source, max_age=0.0, monotonic=Clock())
    for _ in range(3):
        shared.get()
    assert source.calls == 3
    with pytest.raises(ValueError, match="max_age"):
        make(source, max_age=-1.0)


def test_a_failed_read_is_not_cached(make: Make) -> None:
    source = Source()
    shared = make(source, max_age=10.0, monotonic=Clock())
    source.fail = RuntimeError("engine unreachable")
    with pytest.raises(RuntimeError, match="engine unreachable"):
        shared.get()
    source.fail = None
    assert shared.get() == (2,)
    assert shared.get() == (2,)
    assert source.calls == 2


def run_concurrently(shared: Any, callers: int, started: threading.Event) -> list[Any]:
    """``callers`` threads call ``get`` while the first read is held open; what each got (value or error)."""
    results: list[Any] = [None] * callers
    arrived = threading.Semaphore(0)

    def call(index: int) -> None:
        arrived.release()
        try:
            results[index] = shared.get()
        except Exception as exc:  # noqa: BLE001 (what the caller saw is the result)
            results[index] = exc

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert started.wait(10)  # the first caller is inside the read
    others = [threading.Thread(target=call, args=(i,)) for i in range(1, callers)]
    for thread in others:
        thread.start()
    for _ in range(callers):
        assert arrived.acquire(timeout=10)
    return [results, first, others]


def wait_for_waiters(shared: Any, count: int) -> None:
    """Until ``count`` threads wait on the read in flight (Condition keeps its waiters in ``_waiters``)."""
    cond = shared._cond
    for _ in range(100_000):
        with cond:
            if len(cond._waiters) >= count:
                return
        threading.Event().wait(0.001)
    raise AssertionError("the callers never waited")


@pytest.mark.parametrize("fails", [False, True], ids=["read", "failed read"])
def test_concurrent_callers_wait_for_the_read_in_flight(make: Make, fails: bool) -> None:
    started, release = threading.Event(), threading.Event()
    calls = [0]

    def read() -> tuple[str]:
        calls[0] += 1
        started.set()
        assert release.wait(10)
        if fails:
            raise ConnectionError("refused")
        return ("rows",)

    shared = make(read, max_age=10.0)
    results, first, others = run_concurrently(shared, 8, started)
    wait_for_waiters(shared, 7)
    release.set()
    for thread in [first, *others]:
        thread.join(10)
    assert calls[0] == 1  # eight callers, one read
    if not fails:
        assert all(result is results[0] for result in results)
        return
    assert all(isinstance(result, ConnectionError) and str(result) == "refused" for result in results)
    assert len({id(result) for result in results}) == 8  # each waiter its own copy of the error
    started.clear()
    release.set()
    with pytest.raises(ConnectionError):
        shared.get()  # not cached: the next caller reads again
    assert calls[0] == 2


def test_limit_caps_the_reuse_below_the_configured_max_age_never_above(make: Make) -> None:
    clock, source = Clock(), Source()
    shared = make(source, max_age=1.0, monotonic=clock)
    shared.limit(0.25)  # half the shortest interval of the rules on the target: 0.5 s
    shared.get()
    clock.now += 0.25
    shared.get()
    assert source.calls == 2
    shared.limit(30.0)  # a reload to longer intervals: back to the configured max_age, not more
    clock.now += 1.0
    shared.get()
    clock.now += 0.999
    shared.get()
    clock.now += 0.001
    shared.get()
    assert source.calls == 4


def test_every_target_client_caps_its_shared_read_at_retry_within() -> None:
    from watchdogd.families.docker.target import DockerEngine, DockerTargetParams  # noqa: PLC0415
    from watchdogd.families.postgres.target import PostgresClient, PostgresParams  # noqa: PLC0415
    from watchdogd.families.redis.target import RedisTarget, RedisTargetParams  # noqa: PLC0415

    docker = DockerEngine(DockerTargetParams())
    postgres = PostgresClient(PostgresParams(dsn="host=127.0.0.1 port=1 user=nobody"))
    redis = RedisTarget(RedisTargetParams(url="redis://127.0.0.1:1/0"))
    try:
        for client, shared in ((docker, docker._listing), (postgres, postgres._activity), (redis, redis._info)):
            assert shared._max_age == 1.0
            client.retry_within(0.05)  # rules every 0.1 s
            assert shared._max_age == 0.05
    finally:
        docker.close()
        postgres.close()
        redis.close()
