"""Docker engine target: one lazily created API client per configured engine.

This is the only module that imports the ``docker`` SDK, and only when a
Docker target is first used, so hosts without Docker never load it.
Probes and actions get a ``DockerEngine``: a small facade over the SDK's
low-level ``APIClient`` (raw dicts: listing 200 containers is one call, not
200 inspects) that turns every SDK and transport error into a one-line
``DockerError`` saying what failed and why ("socket ... does not exist (is
dockerd running?)", "permission denied on ..."). It also owns the event
follower (``docker_events``) that tells operator stops from crashes.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlsplit

from watchdogd.contracts import Clock, Params, ProbeError, TargetParams, TargetSpec
from watchdogd.families.docker.events import EVENT_FILTERS, EventFollower, EventHistory
from watchdogd.sharedread import MAX_AGE, SharedRead
from watchdogd.spec import Field, field_validator, model_validator
from watchdogd.units import Duration

T = TypeVar("T")

DEFAULT_URL = "unix:///var/run/docker.sock"
BACKOFF_MIN, BACKOFF_MAX = 1.0, 30.0
POOL_SIZE = 40
"""HTTP connections kept to the engine: the stats fallback runs 32 calls at once (``docker_resources``)."""
LISTED = ("Id", "Names", "Image", "State", "Status", "Labels", "Created")
"""The fields of a ``GET /containers/json`` row kept in the shared listing: what selection, the probes and
their details read. The rest (ports, mounts, networks) is dropped at once: it would only be memory."""
LOG_READ_MAX = 1 << 20
"""Bytes of a container's log tail read at most: Docker splits a log line at 16 KiB, so 20 lines fit."""


class DockerError(ProbeError):
    """A Docker call failed; the message is complete and fit for status output and the audit log."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class EngineUnreachable(DockerError):
    """The engine did not answer at all (socket missing, refused, permission, timeout, TLS)."""


# --------------------------------------------------------------------------- params


class TlsParams(Params):
    """Client TLS for ``tcp://`` engines (``dockerd --tlsverify``): the CA that signed the engine, our cert and key."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _readable(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not os.path.isabs(value):
            raise ValueError(f"must be an absolute path, got {value!r}")
        if not os.access(value, os.R_OK):
            raise ValueError(f"cannot read {value}")
        return value

    @model_validator(mode="after")
    def _pair(self) -> TlsParams:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both cert_file and key_file (the client certificate and its key), or neither")
        return self


class DockerTargetParams(TargetParams):
    url: str = DEFAULT_URL
    tls: TlsParams | None = None
    timeout: Duration = Field(default=10.0, gt=0, le=86400.0)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme == "unix":
            if not parts.path.startswith("/"):
                raise ValueError(f"a unix socket URL needs an absolute path like {DEFAULT_URL}, got {value!r}")
            return value
        if parts.scheme == "tcp":
            if not parts.hostname or parts.port is None:
                raise ValueError(f"a tcp URL needs a host and port like tcp://10.0.0.5:2376, got {value!r}")
            return value
        raise ValueError(f"url must start with unix:// or tcp://, got {value!r}")

    @model_validator(mode="after")
    def _tls_needs_tcp(self) -> DockerTargetParams:
        if self.tls is not None and not self.url.startswith("tcp://"):
            raise ValueError("tls applies only to a tcp:// url")
        return self


# --------------------------------------------------------------------------- errors


_ERRNO_REASONS: Mapping[int, str] = {
    errno.ENOENT: "socket {path} does not exist (is dockerd running?)",
    errno.ECONNREFUSED: "connection refused (is dockerd running and listening there?)",
    errno.EACCES: "permission denied on {path} (watchdogd must run as root or in the docker group)",
    errno.EPERM: "permission denied on {path} (watchdogd must run as root or in the docker group)",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ECONNRESET: "connection reset by the engine",
    errno.ENOTSOCK: "{path} is not a socket",
}


def _chain(exc: BaseException) -> Iterable[BaseException]:
    """The exception and everything it wraps (requests -> urllib3 -> OSError), without looping."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        todo += [a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)


def _transport_reason(exc: BaseException, url: str, timeout: float) -> str | None:
    """Why the engine could not be reached, in words; None when it did answer (an API error)."""
    path = urlsplit(url).path
    for cause in _chain(exc):
        if isinstance(cause, TimeoutError | socket.timeout) or "timed out" in str(cause).lower():
            return f"no answer within {timeout:g}s"
        if type(cause).__name__.startswith("SSL") or "ssl" in type(cause).__module__.lower():
            return f"TLS failed: {' '.join(str(cause).split())[:200]}"
        code = cause.errno if isinstance(cause, OSError) else None
        if code is not None and code in _ERRNO_REASONS:
            return _ERRNO_REASONS[code].format(path=path)
    names = {type(c).__name__ for c in _chain(exc)}
    if names & {"ConnectionError", "ProtocolError", "NewConnectionError", "MaxRetryError", "ReadTimeout",
                "ConnectTimeout", "RemoteDisconnected", "ConnectionAbortedError"}:
        return " ".join(str(exc).split())[:200]
    return None


def _api_error(exc: BaseException, what: str) -> DockerError | None:
    status = getattr(exc, "status_code", None)
    if status is None:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
    if status is None:
        return None
    explanation = getattr(exc, "explanation", None) or str(exc)
    text = " ".join(str(explanation).split())
    if status == 403 or "permission denied" in text.lower():
        text = f"permission denied by the engine: {text}"
    return DockerError(f"{what}: {text} (HTTP {status})", int(status))


# --------------------------------------------------------------------------- the client


class DockerEngine:
    """One engine, shared by every rule that names the target. Safe to use from several threads.

    The SDK client is created on first use (``connect`` must not block) and
    re-created after a failure; while the engine is unreachable, calls fail
    fast with the last reason until the backoff (1 s doubling to 30 s, or
    less: ``retry_within``) expires, so a dead TCP engine does not hold
    every probe for ``timeout``. The SDK's HTTP session reconnects by itself
    once it exists.
    """

    def __init__(
        self,
        params: DockerTargetParams,
        clock: Clock = time.time,
        name: str = "docker",
        *,
        monotonic: Callable[[], float] = time.monotonic,
        listing_max_age: float = MAX_AGE,
    ) -> None:
        self.params = params
        self.url = params.url
        self.timeout = params.timeout
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._api: Any = None
        self._retry_at = 0.0
        self._delay = 0.0
        self._max_delay = BACKOFF_MAX
        self._last_error = ""
        self._mem_total: float | None = None
        self.history = EventHistory(clock)
        self.events = EventFollower(self.history, self._open_events, clock, name)
        # One listing for every rule of this engine due in the same cycle, reused for ``listing_max_age``
        # seconds unless a container event (start, die, ...) arrived or the event stream changed state since
        # (a generation, not ``synced``: live-then-lost between two reads would compare equal).
        self._listing = SharedRead(
            self._list_all, max_age=listing_max_age, monotonic=monotonic,
            version=lambda: (self.history.last_time_nano, self.events.generation),
        )

    # -- plumbing ----------------------------------------------------------------------------

    def _new_api(self, timeout: float | None) -> Any:
        import docker  # noqa: PLC0415  # the only import of the SDK, deferred to first use (see module doc)

        tls: Any = False
        if self.params.tls is not None:
            t = self.params.tls
            cert = (t.cert_file, t.key_file) if t.cert_file and t.key_file else None
            tls = docker.tls.TLSConfig(client_cert=cert, ca_cert=t.ca_file, verify=t.verify)

        def client(version: str) -> Any:
            api = docker.APIClient(
                base_url=self.url, version=version, timeout=timeout, tls=tls, max_pool_size=POOL_SIZE
            )
            # requests would let REQUESTS_CA_BUNDLE override the configured CA (and proxy variables
            # reroute the engine's socket): the config alone decides how we reach the engine.
            api.trust_env = False
            return api

        # The SDK's version="auto" asks the engine before trust_env can be switched off, so negotiate
        # by hand: the engine's API version, capped at what this SDK speaks.
        first = client(docker.constants.MINIMUM_DOCKER_API_VERSION)
        try:
            server = str(first.version(api_version=False)["ApiVersion"])
        finally:
            first.close()
        ours = docker.constants.DEFAULT_DOCKER_API_VERSION
        return client(min(server, ours, key=lambda v: tuple(int(p) for p in v.split("."))))

    def _client(self) -> Any:
        with self._lock:
            if self._api is not None:
                return self._api
            wait = self._retry_at - self._monotonic()
            if wait > 0:
                raise EngineUnreachable(f"{self._last_error}; next attempt in {wait:.1f}s")
            try:
                self._api = self._new_api(self.timeout)
            except Exception as exc:
                self._failed(exc)
                raise EngineUnreachable(self._last_error) from exc
            self._delay = 0.0
            return self._api

    def _failed(self, exc: BaseException, timeout: float | None = None) -> None:
        """Record a transport failure and back off; ``timeout`` is the one the failed call ran under."""
        limit = self.timeout if timeout is None else timeout
        reason = _transport_reason(exc, self.url, limit) or " ".join(str(exc).split())[:300]
        self._last_error = f"Docker engine unreachable at {self.url}: {reason}"
        self._delay = min(max(self._delay * 2, BACKOFF_MIN), self._max_delay)
        self._retry_at = self._monotonic() + self._delay

    def retry_within(self, seconds: float) -> None:
        """Never hold back the next connect attempt longer than ``seconds`` (``TargetSpec.retry_within``).

        The daemon passes half the shortest interval of the rules on this
        engine, so an engine that is back is seen on each rule's next run.
        The event follower's reconnect is capped alike: it tells operator
        stops from crashes, and must be back as soon as the engine is.
        """
        cap = max(0.0, min(BACKOFF_MAX, seconds))
        self._listing.limit(seconds)  # no rule gets the same listing on two of its runs
        with self._lock:
            self._max_delay = cap
            self._delay = min(self._delay, cap)
            self._retry_at = min(self._retry_at, self._monotonic() + cap)
        self.events.retry_within(cap)

    def call(self, what: str, fn: Callable[[Any], T], *, timeout: float | None = None) -> T:
        """Run ``fn(api)``; every failure becomes a DockerError whose message starts with ``what``.

        ``timeout``: the request timeout ``fn`` sets itself, when not the target's, for the message.
        """
        api = self._client()
        try:
            return fn(api)
        except DockerError:
            raise  # ``fn`` read an error answer itself (stats, ping): the engine answered, it is reachable
        except Exception as exc:
            api_error = _api_error(exc, what)
            if api_error is not None:
                raise api_error from exc
            with self._lock:
                if self._api is api:  # the first of possibly many parallel calls to notice: back off once
                    self._failed(exc, timeout)
                    self._api = None  # re-created (and version re-negotiated) after the backoff
                message = self._last_error
            self.events.kick()
            raise EngineUnreachable(message) from exc

    def _open_events(self, since: str, until: str | None) -> Iterable[Mapping[str, Any]]:
        # A separate client: the live stream holds its connection for hours and has no read timeout.
        api = self._new_api(None if until is None else self.timeout)
        try:
            stream = api.events(since=since, until=until, filters=EVENT_FILTERS, decode=True)
        except BaseException:
            api.close()
            raise
        return _EventStream(stream, api)

    def close(self) -> None:
        self.events.close()
        with self._lock:
            api, self._api = self._api, None
        if api is not None:
            api.close()

    # -- the calls probes and actions make ------------------------------------------------------

    def ping(self, timeout: float | None = None) -> float:
        """Seconds for the engine to answer ``GET /_ping``; ``EngineUnreachable`` when it does not.

        Only the request itself is timed: (re)creating the SDK client after
        an outage negotiates the API version first, which is no part of how
        fast the engine answers. ``timeout`` (default: the target's) bounds
        the request, so a hung engine is found within it.
        """
        limit = self.timeout if timeout is None else timeout

        def get(api: Any) -> float:
            started = self._monotonic()
            response = api.get(f"{api.base_url}/_ping", timeout=limit)
            took = self._monotonic() - started
            if response.status_code >= 400:
                raise DockerError(
                    f"engine ping: {response.text.strip()[:200]} (HTTP {response.status_code})",
                    response.status_code,
                )
            return took

        return self.call("engine ping", get, timeout=limit)

    def containers(self, filters: Mapping[str, Any], *, all_states: bool = True) -> list[dict[str, Any]]:
        """One listing call (``GET /containers/json``) of its own: for actions, which never act on a shared one."""
        return self.call("listing containers", lambda api: api.containers(all=all_states, filters=dict(filters)))

    def listing(self) -> tuple[Mapping[str, Any], ...]:
        """Every container (``docker ps -a``), read once for all the probes of this engine due together.

        Rows are read-only (``LISTED`` fields, labels as a read-only mapping,
        names as a tuple): every probe gets the same rows. At most
        ``listing_max_age`` old, and never older than the last container
        event the follower saw (see ``SharedRead``).
        """
        return self._listing.get()

    @property
    def listing_reads(self) -> int:
        """Listings actually sent to the engine through ``listing`` (tests and benchmarks count them)."""
        return self._listing.reads

    def _list_all(self) -> tuple[Mapping[str, Any], ...]:
        rows = self.containers({})
        return tuple(_frozen_row(row) for row in rows)

    def inspect(self, container: str) -> dict[str, Any] | None:
        """Full inspect, or None when the container no longer exists."""
        try:
            info: dict[str, Any] = self.call(
                f"inspecting container {container}", lambda api: api.inspect_container(container)
            )
            return info
        except DockerError as exc:
            if exc.status == 404:
                return None
            raise

    def stats(self, container: str) -> dict[str, Any] | None:
        """One stats sample without waiting for a second one; None when the container is gone or stopped.

        Sent as lowercase ``stream=false&one-shot=true``: the SDK sends
        ``stream=False``, which the engine takes as a request for the slow
        two-sample answer (one second per container).
        """

        def get(api: Any) -> dict[str, Any]:
            url = f"{api.base_url}/v{api.api_version}/containers/{container}/stats"
            response = api.get(url, params={"stream": "false", "one-shot": "true"}, timeout=self.timeout)
            if response.status_code >= 400:
                raise DockerError(
                    f"stats of container {container}: {response.text.strip()[:200]} (HTTP {response.status_code})",
                    response.status_code,
                )
            return response.json()  # type: ignore[no-any-return]

        try:
            return self.call(f"stats of container {container}", get)
        except DockerError as exc:
            if exc.status in (404, 409):
                return None
            raise

    def mem_total(self) -> float:
        """The engine host's memory: what the engine reports as the limit of a container without one."""
        if self._mem_total is None:
            info = self.call("engine info", lambda api: api.info())
            self._mem_total = float(info.get("MemTotal") or 0)
        return self._mem_total

    def df(self, timeout: float | None = None) -> dict[str, Any]:
        """``GET /system/df``; with ``timeout``, a bounded evidence read (see ``read``)."""
        if timeout is not None:
            answer: dict[str, Any] = self.read("disk usage (system df)", "/system/df", timeout=timeout)
            return answer
        return self.call("disk usage (system df)", lambda api: api.df())

    # -- bounded reads for evidence (describe) --------------------------------------------------

    def read(self, what: str, path: str, *, timeout: float, params: Mapping[str, str] | None = None) -> Any:
        """The JSON answer of ``GET path`` (``/version``, ``/containers/ID/json``), within ``timeout``.

        For a probe's ``describe``, whose deadline is its own and often
        shorter than the target's timeout: running out of it raises a
        ``DockerError`` saying so, and is not taken for the engine being
        unreachable (no backoff, the client is kept), so evidence never makes
        the next probe run fail. An engine that refuses or drops the
        connection still counts as unreachable, as for any call.
        """

        def get(api: Any) -> Any:
            response = _bounded_get(api, what, path, timeout, params or {}, stream=False)
            return response.json()

        return self.call(what, get, timeout=timeout)

    def version(self, timeout: float) -> dict[str, Any]:
        """``GET /version``: the engine's version, API version, OS, kernel."""
        answer: dict[str, Any] = self.read("engine version", "/version", timeout=timeout)
        return answer

    def info(self, timeout: float) -> dict[str, Any]:
        """``GET /info``: container and image counts, storage and logging drivers, warnings."""
        answer: dict[str, Any] = self.read("engine info", "/info", timeout=timeout)
        return answer

    def inspect_within(self, container: str, timeout: float) -> dict[str, Any] | None:
        """``inspect`` bounded by ``timeout`` (see ``read``); None when the container no longer exists."""
        try:
            answer: dict[str, Any] = self.read(
                f"inspecting container {container}", f"/containers/{container}/json", timeout=timeout
            )
            return answer
        except DockerError as exc:
            if exc.status == 404:
                return None
            raise

    def logs(
        self, container: str, *, tail: int, timeout: float, max_bytes: int = LOG_READ_MAX
    ) -> tuple[list[tuple[str, str]], bool]:
        """The last ``tail`` lines of a container's stdout and stderr as (stream, text), oldest first.

        Read-only and bounded: at most ``max_bytes`` are read (then the
        second value is True) and the read stops at ``timeout`` like
        ``read``. Works for containers with and without a TTY (the engine
        multiplexes the two streams only without one) and for stopped ones.
        """
        what = f"logs of container {container}"
        params = {"stdout": "1", "stderr": "1", "tail": str(max(tail, 0)), "timestamps": "0", "follow": "0"}
        deadline = self._monotonic() + timeout

        def get(api: Any) -> tuple[bytes, bool]:
            response = _bounded_get(api, what, f"/containers/{container}/logs", timeout, params, stream=True)
            data = bytearray()
            cut = False
            try:
                for chunk in response.iter_content(chunk_size=16384):
                    data += chunk
                    if len(data) >= max_bytes or self._monotonic() >= deadline:
                        cut = True
                        break
            except Exception as exc:
                if _timed_out(exc):
                    raise DockerError(f"{what}: no complete answer within {timeout:.1f}s") from exc
                raise
            finally:
                response.close()
            return bytes(data[:max_bytes]), cut

        data, cut = self.call(what, get, timeout=timeout)
        lines = log_lines(data)
        return lines[-tail:] if tail > 0 else [], cut

    def start(self, container: str) -> None:
        try:
            self.call(f"starting container {container}", lambda api: api.start(container))
        finally:
            self._listing.forget()  # what we just changed is seen by the next probe, events or not

    def restart(self, container: str, stop_timeout: float) -> None:
        try:
            # The SDK adds stop_timeout to the HTTP timeout itself.
            self.call(
                f"restarting container {container}", lambda api: api.restart(container, timeout=int(stop_timeout))
            )
        finally:
            self._listing.forget()

    def remove_container(self, container: str) -> None:
        try:
            self.call(f"removing container {container}", lambda api: api.remove_container(container, v=False))
        finally:
            self._listing.forget()

    def images(self, filters: Mapping[str, Any]) -> list[dict[str, Any]]:
        return self.call("listing images", lambda api: api.images(all=False, filters=dict(filters)))

    def remove_image(self, image: str) -> None:
        self.call(f"removing image {image}", lambda api: api.remove_image(image, force=False, noprune=False))

    def volumes(self, filters: Mapping[str, Any]) -> list[dict[str, Any]]:
        result = self.call("listing volumes", lambda api: api.volumes(filters=dict(filters)))
        return list(result.get("Volumes") or [])

    def remove_volume(self, name: str) -> None:
        self.call(f"removing volume {name}", lambda api: api.remove_volume(name, force=False))

    def prune_build_cache(self, older_than: float) -> dict[str, Any]:
        return self.call(
            "pruning the build cache",
            lambda api: api.prune_builds(filters={"until": f"{int(older_than)}s"}),
        )

    # -- the event history ----------------------------------------------------------------------

    def synced_history(self, timeout: float) -> EventHistory | None:
        """The event history once the replay of buffered events is done; None if not within ``timeout``."""
        return self.history if self.events.wait_synced(timeout) else None


def _frozen_row(row: Mapping[str, Any]) -> Mapping[str, Any]:
    """A listing row cut to ``LISTED`` and made read-only, so probes sharing it cannot change it for each other."""
    kept: dict[str, Any] = {}
    for key in LISTED:
        if key in row:
            value = row[key]
            if isinstance(value, dict):
                value = MappingProxyType(dict(value))
            elif isinstance(value, list):
                value = tuple(value)
            kept[key] = value
    return MappingProxyType(kept)


def _timed_out(exc: BaseException) -> bool:
    names = {"ReadTimeout", "ReadTimeoutError", "ConnectTimeout", "ConnectTimeoutError", "Timeout"}
    return any(isinstance(c, TimeoutError) or type(c).__name__ in names for c in _chain(exc))


def _bounded_get(
    api: Any, what: str, path: str, timeout: float, params: Mapping[str, str], *, stream: bool
) -> Any:
    """One GET of the versioned API; a timeout or an error answer becomes a ``DockerError`` (see ``read``)."""
    url = f"{api.base_url}/v{api.api_version}{path}"
    try:
        response = api.get(url, params=dict(params), timeout=timeout, stream=stream)
    except Exception as exc:
        if _timed_out(exc):
            raise DockerError(f"{what}: no answer within {timeout:.1f}s") from exc
        raise
    if response.status_code >= 400:
        try:
            body = response.json()
            message = str(body.get("message") or body) if isinstance(body, dict) else str(body)
        except ValueError:
            message = response.text
        finally:
            response.close()
        raise DockerError(f"{what}: {' '.join(message.split())[:200]} (HTTP {response.status_code})",
                          response.status_code)
    return response


_STREAMS = {0: "stdin", 1: "stdout", 2: "stderr"}


def log_lines(data: bytes) -> list[tuple[str, str]]:
    """Split a ``/logs`` answer into (stream, line), oldest first; undecodable bytes are replaced.

    Without a TTY the engine frames each write: one byte stream id (1
    stdout, 2 stderr), three zero bytes, a big-endian 32-bit length. With a
    TTY it sends the raw bytes, all of them "stdout". A frame may hold part
    of a line (Docker splits lines at 16 KiB) or several; a line is put
    together per stream and emitted when it ends. A cut last frame keeps
    what arrived.
    """
    framed = len(data) >= 8 and data[0] in _STREAMS and data[1:4] == b"\x00\x00\x00"
    pending: dict[str, bytearray] = {}
    lines: list[tuple[str, str]] = []

    def feed(stream: str, payload: bytes) -> None:
        buffer = pending.setdefault(stream, bytearray())
        buffer += payload
        *complete, rest = bytes(buffer).split(b"\n")
        lines.extend((stream, _text(line)) for line in complete)
        pending[stream] = bytearray(rest)

    if framed:
        at = 0
        while at + 8 <= len(data):
            stream = _STREAMS.get(data[at], "stdout")
            size = int.from_bytes(data[at + 4 : at + 8], "big")
            feed(stream, data[at + 8 : at + 8 + size])
            at += 8 + size
    else:
        feed("stdout", data)
    lines.extend((stream, _text(bytes(rest))) for stream, rest in pending.items() if rest)
    return lines


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r")


class _EventStream:
    """The SDK's event stream plus the client that opened it: closing (or exhausting) it releases both."""

    def __init__(self, stream: Any, api: Any) -> None:
        self._stream = stream
        self._api = api

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        try:
            yield from self._stream
        finally:
            self.close()

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._api.close()


def _import_sdk() -> None:
    import docker  # noqa: PLC0415, F401  # see connect()


def connect(params: DockerTargetParams) -> DockerEngine:
    """Never blocks: the SDK import (~150 ms) starts in the background so the first probe need not pay it."""
    threading.Thread(target=_import_sdk, name="docker-sdk-import", daemon=True).start()
    return DockerEngine(params, name=params.url)


def close(client: DockerEngine) -> None:
    client.close()


def retry_within(client: DockerEngine, seconds: float) -> None:
    client.retry_within(seconds)


TARGET = TargetSpec(params=DockerTargetParams, connect=connect, close=close, retry_within=retry_within)
