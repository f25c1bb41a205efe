"""LeaseKeeper: the no-I/O safety answer (valid/generation) on a fake clock, and its refresh thread.

The clock the keeper reads is fake (the safety rule is arithmetic on it);
the refresh thread's pauses are real but short (ttl 0.3 s -> a refresh every
0.1 s), and the tests await refresh calls through a queue, never a sleep.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator

import pytest

from watchdogd.fleet import keeper as keeper_module
from watchdogd.fleet.coordinator import CoordinatorError, CoordinatorStats
from watchdogd.fleet.keeper import LeaseKeeper

TTL = 0.3
WAIT = 5.0


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeRefresh:
    """Records each call; answers from a script (True, False, or raises).

    ``stepped``: each call waits for a permit (``step()``), so a test sees
    call n+1 only after the keeper has applied call n's answer, and can
    look at the keeper while call n+1 is in flight.
    """

    def __init__(self, clock: FakeClock, answers: Callable[[int], bool] | None = None, *, stepped: bool) -> None:
        self.clock = clock
        self.calls: queue.Queue[tuple[float, float]] = queue.Queue()  # (clock when called, deadline given)
        self.answers = answers or (lambda n: True)
        self.count = 0
        self.stepped = stepped
        self.permits: queue.Queue[None] = queue.Queue()

    def __call__(self, deadline: float) -> bool:
        self.count += 1
        self.calls.put((self.clock(), deadline))
        if self.stepped:
            try:
                self.permits.get(timeout=WAIT)
            except queue.Empty:
                raise AssertionError("the test never let this refresh answer") from None
        return self.answers(self.count)

    def step(self) -> None:
        self.permits.put(None)

    def free(self) -> None:
        """Stop stepping (teardown): a call waiting for a permit answers now."""
        self.stepped = False
        self.permits.put(None)

    def next_call(self) -> tuple[float, float]:
        try:
            return self.calls.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError("the keeper did not refresh within 5s") from None


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def stats() -> CoordinatorStats:
    return CoordinatorStats()


@pytest.fixture
def make_keeper(clock: FakeClock, stats: CoordinatorStats) -> Iterator[Callable[..., LeaseKeeper]]:
    made: list[tuple[LeaseKeeper, Callable[[float], bool]]] = []

    def make(refresh: Callable[[float], bool], ttl: float = TTL, timeout: float = 1.0) -> LeaseKeeper:
        keeper = LeaseKeeper(refresh, ttl, clock, stats, timeout=timeout, name="test-keeper")
        made.append((keeper, refresh))
        return keeper

    yield make
    for keeper, refresh in made:
        if isinstance(refresh, FakeRefresh):
            refresh.free()
        keeper.close()


def never(deadline: float) -> bool:
    raise AssertionError("no refresh expected")


# --- the safety rule, no thread ---------------------------------------------------------------------------------
def test_ttl_must_be_positive(clock: FakeClock, stats: CoordinatorStats) -> None:
    with pytest.raises(ValueError):
        LeaseKeeper(never, 0, clock, stats, timeout=1.0)


def test_nothing_is_valid_before_a_lease(make_keeper: Callable[..., LeaseKeeper]) -> None:
    keeper = make_keeper(never)
    assert not keeper.valid(keeper.generation)
    assert keeper.remaining() < 0


def test_valid_until_sent_plus_ttl_counted_from_the_send(
    make_keeper: Callable[..., LeaseKeeper], clock: FakeClock
) -> None:
    keeper = make_keeper(never, ttl=15.0)
    sent = clock.now
    clock.now += 0.4  # the answer came back later: the safety window still starts at the send
    generation = keeper.renewed(sent, new_lease=True)
    assert keeper.valid(generation)
    assert keeper.remaining() == pytest.approx(15.0 - 0.4)
    clock.now = sent + 15.0 - 1e-6
    assert keeper.valid(generation)
    clock.now = sent + 15.0
    assert not keeper.valid(generation), "valid must end exactly at sent + ttl"


def test_a_new_lease_invalidates_grants_of_the_old_one(
    make_keeper: Callable[..., LeaseKeeper], clock: FakeClock
) -> None:
    keeper = make_keeper(never, ttl=10.0)
    old = keeper.renewed(clock.now, new_lease=True)
    new = keeper.renewed(clock.now, new_lease=True)
    assert new == old + 1 == keeper.generation
    assert keeper.valid(new)
    assert not keeper.valid(old)


def test_an_older_refresh_never_shortens_the_window(make_keeper: Callable[..., LeaseKeeper], clock: FakeClock) -> None:
    keeper = make_keeper(never, ttl=10.0)
    generation = keeper.renewed(clock.now, new_lease=True)
    assert keeper.renewed(clock.now - 5.0) == generation  # a late answer to an older refresh
    assert keeper.remaining() == pytest.approx(10.0)
    assert keeper.renewed(clock.now + 2.0) == generation
    assert keeper.remaining() == pytest.approx(12.0)


def test_lost_invalidates_and_counts_once(
    make_keeper: Callable[..., LeaseKeeper], clock: FakeClock, stats: CoordinatorStats
) -> None:
    keeper = make_keeper(never, ttl=10.0)
    generation = keeper.renewed(clock.now, new_lease=True)
    keeper.lost()
    assert not keeper.valid(generation)
    assert keeper.generation == generation + 1
    assert not keeper.valid(keeper.generation), "after lost() nothing is valid until a new lease"
    assert stats.leases_lost == 1
    keeper.lost()
    assert stats.leases_lost == 1, "losing a lease already lost is not a second loss"


# --- the refresh thread -----------------------------------------------------------------------------------------
def test_hold_starts_refreshing_and_renews_from_the_send(
    make_keeper: Callable[..., LeaseKeeper], clock: FakeClock
) -> None:
    refresh = FakeRefresh(clock, stepped=True)
    keeper = make_keeper(refresh, timeout=1.0)
    generation = keeper.renewed(clock.now, new_lease=True)
    clock.now += 0.25  # most of the TTL gone: only a refresh keeps the grant valid
    keeper.hold()
    called_at, deadline = refresh.next_call()
    assert called_at == clock.now
    assert deadline == pytest.approx(called_at + min(1.0, TTL / 3)), "refresh deadline: sent + min(timeout, ttl/3)"
    assert keeper.remaining() == pytest.approx(TTL - 0.25), "not renewed before the answer"
    refresh.step()
    refresh.next_call()  # the loop came round again, so the first answer has been applied
    assert keeper.valid(generation)
    assert keeper.remaining() == pytest.approx(TTL)


def test_no_refresh_while_nothing_is_held(make_keeper: Callable[..., LeaseKeeper], clock: FakeClock) -> None:
    refresh = FakeRefresh(clock, stepped=False)
    keeper = make_keeper(refresh)
    keeper.renewed(clock.now, new_lease=True)
    assert keeper._thread is None
    assert refresh.calls.empty()


def test_unhold_of_the_last_slot_stops_the_thread(make_keeper: Callable[..., LeaseKeeper], clock: FakeClock) -> None:
    refresh = FakeRefresh(clock, stepped=False)
    keeper = make_keeper(refresh)
    keeper.renewed(clock.now, new_lease=True)
    keeper.hold()
    keeper.hold()
    thread = keeper._thread
    assert thread is not None
    refresh.next_call()
    keeper.unhold()
    assert keeper.held == 1
    refresh.next_call()  # still refreshing for the slot left
    keeper.unhold()
    thread.join(WAIT)
    assert not thread.is_alive(), "the refresh thread must stop when no slot is held"
    while not refresh.calls.empty():  # a call that was in flight when unhold came
        refresh.calls.get_nowait()
    assert keeper.held == 0
    keeper.unhold()
    assert keeper.held == 0, "held never goes negative"
    keeper.hold()  # a new slot starts a new thread
    refresh.next_call()


def test_failed_refresh_counts_and_retries_without_extending(
    make_keeper: Callable[..., LeaseKeeper],
    clock: FakeClock,
    stats: CoordinatorStats,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(keeper_module, "RETRY_AFTER", 0.01)

    def answers(n: int) -> bool:
        if n == 1:
            raise CoordinatorError("etcd http://127.0.0.1:1: connection refused")
        if n == 2:
            raise RuntimeError("a bug in the refresh")
        return True

    refresh = FakeRefresh(clock, answers, stepped=True)
    keeper = make_keeper(refresh, timeout=1.0)
    generation = keeper.renewed(clock.now, new_lease=True)
    start = clock.now
    clock.now += 0.1
    keeper.hold()
    refresh.next_call()
    refresh.step()
    refresh.next_call()  # retried soon (RETRY_AFTER, not ttl/3) after the CoordinatorError
    assert stats.errors == 1
    assert stats.last_error is not None and "connection refused" in stats.last_error
    assert keeper.remaining() == pytest.approx(start + TTL - clock.now), "a failed refresh must not extend"
    refresh.step()
    refresh.next_call()  # retried after the unexpected exception too
    assert stats.errors == 2
    assert stats.last_error == "RuntimeError: a bug in the refresh"
    assert keeper.valid(generation)
    refresh.step()
    refresh.next_call()
    assert keeper.valid(generation)
    assert keeper.remaining() == pytest.approx(TTL)


def test_refresh_saying_gone_marks_the_lease_lost(
    make_keeper: Callable[..., LeaseKeeper], clock: FakeClock, stats: CoordinatorStats
) -> None:
    refresh = FakeRefresh(clock, lambda n: False, stepped=True)
    keeper = make_keeper(refresh)
    generation = keeper.renewed(clock.now, new_lease=True)
    keeper.hold()
    refresh.next_call()
    assert keeper.valid(generation)
    refresh.step()
    refresh.next_call()
    assert not keeper.valid(generation)
    assert keeper.generation > generation
    assert stats.leases_lost == 1


def test_an_answer_for_a_replaced_lease_is_ignored(make_keeper: Callable[..., LeaseKeeper], clock: FakeClock) -> None:
    refresh = FakeRefresh(clock, lambda n: n != 1, stepped=True)
    keeper = make_keeper(refresh)
    keeper.renewed(clock.now, new_lease=True)
    keeper.hold()
    refresh.next_call()  # in flight for the old lease, waiting for its permit
    new_sent = clock.now - 0.1
    new = keeper.renewed(new_sent, new_lease=True)  # the coordinator granted a new lease meanwhile
    refresh.step()  # the old lease's refresh now answers "gone"
    refresh.next_call()
    assert keeper.valid(new), "a 'gone' for the replaced lease must not invalidate the new one"
    assert keeper.remaining() == pytest.approx(new_sent + TTL - clock.now)


def test_close_stops_the_thread_and_ignores_later_holds(
    make_keeper: Callable[..., LeaseKeeper], clock: FakeClock
) -> None:
    refresh = FakeRefresh(clock, stepped=False)
    keeper = make_keeper(refresh)
    keeper.renewed(clock.now, new_lease=True)
    keeper.hold()
    thread = keeper._thread
    assert thread is not None
    refresh.next_call()
    keeper.close()
    assert not thread.is_alive()
    keeper.hold()
    assert keeper._thread is None or not keeper._thread.is_alive()
    assert keeper.held == 0


def test_close_invalidates_every_grant_without_counting_a_lost_lease(
    make_keeper: Callable[..., LeaseKeeper], clock: FakeClock, stats: CoordinatorStats
) -> None:
    keeper = make_keeper(never)
    generation = keeper.renewed(clock.now, new_lease=True)
    keeper.close()
    assert not keeper.valid(generation)
    assert stats.leases_lost == 0


def test_halt_stops_refreshing_but_the_holding_lasts_until_its_deadline(
    make_keeper: Callable[..., LeaseKeeper], clock: FakeClock
) -> None:
    """A host that hangs: nothing more is sent, and what it may believe runs out on the TTL, not before."""
    refresh = FakeRefresh(clock, stepped=False)
    keeper = make_keeper(refresh)
    generation = keeper.renewed(clock.now, new_lease=True)
    keeper.hold()
    refresh.next_call()
    keeper.halt()
    while not refresh.calls.empty():
        refresh.calls.get_nowait()
    clock.now += TTL * 0.9
    assert keeper.valid(generation)
    clock.now += TTL * 0.2
    assert not keeper.valid(generation)
    assert refresh.calls.empty(), "a halted keeper sends nothing"

