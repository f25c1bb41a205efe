"""Who stopped a container: the engine's event stream, followed in a background thread.

Docker records no "stopped by" field, but its event stream tells the two
cases apart: a stop or kill requested through the API (``docker stop``,
``docker kill``, ``docker compose stop``, an engine shutdown) emits a
``kill`` event (with the signal) before the container's ``die``, and
``docker stop`` a ``stop`` event after it. A process that exits by itself, or
is OOM-killed by the kernel, emits ``die`` alone. So:

* ``die`` within ``KILL_WINDOW`` of an API ``kill`` with a stopping signal
  (INT, QUIT, KILL, TERM), or followed by ``stop``: stopped on purpose;
* the same, but the kill was one watchdogd announced (``expect_own``) just
  before restarting the container itself: ours, not an operator's;
* ``die`` with no such kill: the container's own exit (a crash).

``EventHistory`` is the pure part (fed event dicts, queried by probes and
actions); ``EventFollower`` keeps it fed: it replays the engine's buffered
events on start (so a watchdogd restart still knows about a ``docker stop``
from an hour ago), follows live events, and reconnects with backoff when the
engine restarts, replaying from the last event it saw so nothing is missed.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from watchdogd.contracts import Clock
from watchdogd.logs import event as log_event

log = logging.getLogger(__name__)

KILL_WINDOW = 600.0
"""A die this long after an API kill still counts as that kill's result (``docker stop -t 600``)."""
STOP_SIGNALS = frozenset({"2", "3", "9", "15", "SIGINT", "SIGQUIT", "SIGKILL", "SIGTERM"})
"""Signals sent to stop. ``docker kill -s HUP`` (reload) is not a stop, so a later crash is still a crash."""
MATCH_SLACK = 10.0
"""A recorded die belongs to the container's current stop if it is this close to ``State.FinishedAt``."""
MAX_TRACKED = 10_000
"""Containers remembered; the oldest are forgotten first, so a churning host cannot grow us without bound."""
EVENT_NAMES = ("kill", "die", "stop", "start", "destroy", "oom", "health_status")
LOOKBACK = 86_400.0
"""How far back the first connection replays (the engine keeps only its last few hundred events anyway)."""
RECONNECT_MIN, RECONNECT_MAX = 1.0, 30.0

CAUSE_OPERATOR = "operator"
CAUSE_WATCHDOGD = "watchdogd"
CAUSE_EXIT = "exit"


@dataclass(slots=True)
class _Track:
    """What the events said about one container since it last started."""

    kill_at: float | None = None
    kill_own: bool = False
    own_until: float = 0.0  # watchdogd announced it stops/restarts this container until then
    # (compared with the event's own time, so a replay hours later still attributes it right;
    # the local clock and a local engine's clock are the same clock)
    die_at: float | None = None
    exit_code: int | None = None
    cause: str | None = None
    unhealthy_since: float | None = None
    oom_at: float | None = None  # the kernel OOM-killed a process in it since it last started
    generation: int = 0


class EventHistory:
    """Per container: how its current stop came about, and since when it is unhealthy.

    Thread-safe: the follower thread feeds it while probe and action threads query it.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._fed = threading.Condition(self._lock)  # notified on every event applied: see wait_for_die
        self._tracks: OrderedDict[str, _Track] = OrderedDict()
        self._seen: deque[tuple[int, str, str]] = deque(maxlen=1024)
        self._seen_set: set[tuple[int, str, str]] = set()
        self.last_time_nano = 0

    def feed(self, event: Mapping[str, Any]) -> None:
        """Apply one decoded engine event (other types and actions are ignored)."""
        if event.get("Type", "container") != "container":
            return
        cid = str(event.get("id") or event.get("Actor", {}).get("ID") or "")
        action = str(event.get("Action") or event.get("status") or "")
        time_nano = int(event.get("timeNano") or int(event.get("time") or 0) * 1_000_000_000)
        if not cid or not action:
            return
        key = (time_nano, cid, action)
        with self._lock:
            if key in self._seen_set:  # replays after a reconnect overlap the last second
                return
            if len(self._seen) == self._seen.maxlen:
                self._seen_set.discard(self._seen[0])
            self._seen.append(key)
            self._seen_set.add(key)
            self.last_time_nano = max(self.last_time_nano, time_nano)
            attributes = event.get("Actor", {}).get("Attributes", {}) or {}
            self._apply(cid, action, time_nano / 1e9, attributes)
            self._fed.notify_all()

    def _apply(self, cid: str, action: str, at: float, attributes: Mapping[str, Any]) -> None:
        name, _, argument = action.partition(":")  # "health_status: unhealthy"
        if name == "destroy":
            self._tracks.pop(cid, None)
            return
        handler = _HANDLERS.get(name)
        if handler is not None:
            handler(self._track(cid), _Event(at, attributes, argument.strip()))

    def _track(self, cid: str) -> _Track:
        track = self._tracks.get(cid)
        if track is None:
            track = self._tracks[cid] = _Track()
            while len(self._tracks) > MAX_TRACKED:
                self._tracks.popitem(last=False)
        else:
            self._tracks.move_to_end(cid)
        return track

    def expect_own(self, container_id: str, seconds: float) -> None:
        """Announce that watchdogd itself is about to stop/restart this container, so it is not an operator stop."""
        with self._lock:
            track = self._track(container_id)
            track.own_until = max(track.own_until, self._clock() + seconds)

    def stop_cause(self, container_id: str, finished_at: float | None) -> str | None:
        """``operator``/``watchdogd``/``exit`` for the stop that ended at ``finished_at``; None if unseen."""
        with self._lock:
            track = self._tracks.get(container_id)
            if track is None or track.die_at is None or track.cause is None:
                return None
            if finished_at is not None and abs(track.die_at - finished_at) > MATCH_SLACK:
                return None  # a die we saw belongs to an earlier stop; this one happened while we were away
            return track.cause

    def wait_for_die(self, container_id: str, finished_at: float | None, timeout: float) -> bool:
        """Wait (at most ``timeout``) until the ``die`` that ended at ``finished_at`` has been fed.

        The engine answers an inspect before its event stream has delivered the
        ``die`` of a container that stopped a moment ago, so a probe right after
        a stop would read a ``docker stop`` as a crash (and restart what the
        operator stopped). Returns whether that die is known now.
        """

        def seen() -> bool:
            track = self._tracks.get(container_id)
            return (
                track is not None
                and track.die_at is not None
                and (finished_at is None or abs(track.die_at - finished_at) <= MATCH_SLACK)
            )

        with self._fed:
            return self._fed.wait_for(seen, max(timeout, 0.0))

    def oom_killed(self, container_id: str, finished_at: float | None) -> bool:
        """Whether an ``oom`` event preceded the die that ended at ``finished_at``.

        Docker's own ``OOMKilled`` flag races with the exit under load and can
        read false for a container the kernel killed; the event does not.
        """
        with self._lock:
            track = self._tracks.get(container_id)
            if track is None or track.oom_at is None or track.die_at is None:
                return False
            if finished_at is not None and abs(track.die_at - finished_at) > MATCH_SLACK:
                return False
            return track.oom_at <= track.die_at

    def unhealthy_since(self, container_id: str) -> float | None:
        with self._lock:
            track = self._tracks.get(container_id)
            return None if track is None else track.unhealthy_since

    def generation(self, container_id: str) -> int:
        """Changes whenever the container starts or dies: cached inspect data is stale after that."""
        with self._lock:
            track = self._tracks.get(container_id)
            return 0 if track is None else track.generation


@dataclass(frozen=True, slots=True)
class _Event:
    at: float  # engine time, seconds
    attributes: Mapping[str, Any]
    argument: str  # what follows "action:" (the health status)


def _on_kill(track: _Track, ev: _Event) -> None:
    if str(ev.attributes.get("signal", "")).upper() not in STOP_SIGNALS:
        return
    track.kill_at = ev.at
    track.kill_own = track.own_until >= ev.at


def _on_die(track: _Track, ev: _Event) -> None:
    track.die_at = ev.at
    track.generation += 1
    code = str(ev.attributes.get("exitCode", ""))
    track.exit_code = int(code) if code.lstrip("-").isdigit() else None
    if track.kill_at is not None and 0 <= ev.at - track.kill_at <= KILL_WINDOW:
        track.cause = CAUSE_WATCHDOGD if track.kill_own else CAUSE_OPERATOR
    else:
        track.cause = CAUSE_EXIT
    track.kill_at, track.kill_own = None, False


def _on_stop(track: _Track, ev: _Event) -> None:
    """``docker stop`` ends with this event after ``die``: definitive, however long the stop took."""
    if track.die_at is not None and track.cause == CAUSE_EXIT:
        track.cause = CAUSE_WATCHDOGD if track.own_until >= ev.at else CAUSE_OPERATOR


def _on_start(track: _Track, ev: _Event) -> None:
    track.kill_at, track.kill_own, track.cause, track.die_at, track.exit_code = None, False, None, None, None
    track.unhealthy_since = track.oom_at = None
    track.generation += 1


def _on_oom(track: _Track, ev: _Event) -> None:
    track.oom_at = ev.at


def _on_health(track: _Track, ev: _Event) -> None:
    if ev.argument == "unhealthy":
        track.unhealthy_since = track.unhealthy_since or ev.at
    elif ev.argument:
        track.unhealthy_since = None


_HANDLERS: dict[str, Callable[[_Track, _Event], None]] = {
    "kill": _on_kill,
    "die": _on_die,
    "stop": _on_stop,
    "start": _on_start,
    "oom": _on_oom,
    "health_status": _on_health,
}


# --------------------------------------------------------------------------- the follower thread

OpenStream = Callable[[str, str | None], Iterable[Mapping[str, Any]]]
"""(since, until or None) -> decoded events; a stream with ``close()`` when until is None."""


class EventFollower:
    """Keeps an ``EventHistory`` fed from the engine, reconnecting with backoff.

    Started lazily by the first probe or action that needs it. ``wait_synced``
    lets a probe wait (briefly) for the replay of buffered events, so the very
    first run after a watchdogd restart already knows who stopped what; while
    the follower is backing off after a failure nobody waits for it, so a
    broken event stream costs the probes nothing.
    """

    def __init__(self, history: EventHistory, open_stream: OpenStream, clock: Clock, target: str) -> None:
        self.history = history
        self._open = open_stream
        self._clock = clock
        self._target = target
        self._cond = threading.Condition()
        self._state = _IDLE
        self.generation = 0
        """Bumped on every change of state: the shared listing compares it, since a stream that went live and
        was lost again between two reads is back at "not synced" but may have missed events in between."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stream: Any = None
        self._max_delay = RECONNECT_MAX

    def retry_within(self, seconds: float) -> None:
        """Cap the reconnect backoff (see ``DockerEngine.retry_within``); a wait already begun still ends."""
        self._max_delay = max(0.0, min(RECONNECT_MAX, seconds))

    def ensure_started(self) -> None:
        with self._cond:
            if self._thread is not None or self._stop.is_set():
                return
            self._set(_REPLAYING)  # the condition's lock is reentrant
            self._thread = threading.Thread(target=self._run, name=f"docker-events-{self._target}", daemon=True)
            self._thread.start()

    def wait_synced(self, timeout: float) -> bool:
        """True once buffered events are replayed and live ones followed; waits only while a replay runs."""
        self.ensure_started()
        with self._cond:
            self._cond.wait_for(lambda: self._state != _REPLAYING, timeout)
            return self._state == _LIVE

    @property
    def synced(self) -> bool:
        return self._state == _LIVE

    def kick(self) -> None:
        """Drop the live stream so the thread reconnects (the probe saw the engine fail)."""
        self._close_stream()

    def close(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._close_stream()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _set(self, state: str) -> None:
        with self._cond:
            if state != self._state:
                self._state = state
                self.generation += 1
            self._cond.notify_all()

    def _close_stream(self) -> None:
        stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception as exc:  # the socket may already be gone; we only want the reader unblocked
                log.debug("closing the docker event stream failed: %s", exc)

    def _run(self) -> None:
        delay = RECONNECT_MIN
        cursor = int((self._clock() - LOOKBACK) * 1e9)
        connected_once = outage_logged = False
        while not self._stop.is_set():
            self._set(_REPLAYING)
            try:
                until = int(self._clock() * 1e9)
                # Replay first, as a bounded request, so "synced" has a definite moment.
                for item in self._open(_nanos_timestamp(cursor), _nanos_timestamp(until)):
                    self.history.feed(item)
                cursor = max(cursor, until)
                self._set(_LIVE)
                if outage_logged or not connected_once:
                    log_event(log, logging.INFO, "docker events followed", target=self._target)
                connected_once, outage_logged, delay = True, False, RECONNECT_MIN
                self._stream = self._open(_nanos_timestamp(cursor), None)
                if self._stop.is_set():
                    self._close_stream()
                for item in self._stream:
                    self.history.feed(item)
            except Exception as exc:  # any failure means: reconnect later; the probes report the engine's state
                if not outage_logged and not self._stop.is_set():
                    log_event(log, logging.WARNING, "docker events lost, reconnecting", target=self._target,
                              error=" ".join(str(exc).split())[:300] or type(exc).__name__)
                    outage_logged = True
            finally:
                self._stream = None
                self._set(_BACKOFF)
            cursor = max(cursor, self.history.last_time_nano)  # resume where the stream stopped: nothing missed
            if self._stop.wait(min(delay, self._max_delay)):
                break
            delay = min(delay * 2, RECONNECT_MAX)
        self._set(_STOPPED)


_IDLE, _REPLAYING, _LIVE, _BACKOFF, _STOPPED = "idle", "replaying", "live", "backoff", "stopped"


def _nanos_timestamp(nanos: int) -> str:
    """The engine's own ``seconds.nanoseconds`` form: ``1.5`` would be read as 1 s + 5 ns."""
    whole, frac = divmod(nanos, 1_000_000_000)
    return f"{whole}.{frac:09d}"


EVENT_FILTERS: dict[str, list[str]] = {"type": ["container"], "event": list(EVENT_NAMES)}
