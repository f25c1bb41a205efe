"""A Redis server as a target: its connection params and the one shared, self-healing client.

This is the only module that imports ``redis`` (inside functions, so a host
with no Redis target never loads it). Probes and actions talk to
:class:`RedisTarget`, which turns every redis-py exception into one of the
small set below; that keeps redis-py's exception tree, retry defaults and
typing out of the family modules.

Reconnecting is ours, not redis-py's: redis-py 6+ retries a failed command
ten times with jittered backoff by default, which turns one down Redis into
probe timeouts and a stuck worker thread. Here a failure is reported at once,
then every user of the target fails fast until the backoff delay has passed
(never longer than half the shortest rule interval: ``retry_within``), and
the error says when the next attempt is due, so ``watchdogctl status``
explains itself at 3 a.m. A server that accepts connections but does not
answer (stopped, hung) fails each command within ``socket_timeout``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit

from watchdogd.contracts import ProbeError, TargetParams, TargetSpec
from watchdogd.secrets import resolve_secret
from watchdogd.sharedread import MAX_AGE, SharedRead
from watchdogd.spec import Field, PrivateAttr, SecretStr, field_validator, model_validator
from watchdogd.units import Duration

if TYPE_CHECKING:
    import redis

T = TypeVar("T")

CLIENT_NAME = "watchdogd"
"""CLIENT SETNAME of every connection we open: operators see us in CLIENT LIST, and idle_clients skips us."""

BACKOFF_FIRST = 1.0
"""Seconds to wait after the first failed attempt; doubled per further failure up to ``reconnect_max``."""

_SCHEMES = ("redis", "rediss", "unix")
_TLS_KEYS = ("tls_ca_file", "tls_cert_file", "tls_key_file")


class RedisError(ProbeError):
    """Anything that went wrong talking to Redis; the message is complete and names the server."""


class RedisUnavailable(RedisError):
    """No connection (refused, timed out, auth failed, loading): the target is in backoff."""


class RedisCommandError(RedisError):
    """Redis answered with an error (unknown command, wrong type, renamed command...)."""


class RedisPermissionError(RedisCommandError):
    """The ACL user lacks a command or key: a setup problem the operator fixes with ACL SETUSER."""


# --------------------------------------------------------------------------- params


class RedisTargetParams(TargetParams):
    """``targets.redis.<name>``: where the server is and how to log in.

    The database is the URL's path (``redis://host:6379/2``) or its ``?db=``
    query (unix sockets); one target is one database, because SELECT on a
    pooled connection would leak into every other rule.
    """

    url: str = "redis://127.0.0.1:6379/0"
    username: str | None = None
    password: SecretStr | None = None
    password_file: str | None = None
    password_env: str | None = None
    socket_timeout: Duration = Field(default=5.0, le=86400.0)
    connect_timeout: Duration = Field(default=3.0, le=86400.0)
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_check_hostname: bool = True
    tls_insecure_skip_verify: bool = False
    max_connections: int = Field(default=4, ge=1, le=64)
    reconnect_max: Duration = 30.0

    _password: str | None = PrivateAttr(default=None)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in _SCHEMES:
            raise ValueError(
                "url must start with redis://, rediss:// (TLS) or unix:// (socket),"
                f" got {redact_url(value)!r}"
            )
        if parts.scheme == "unix" and not parts.path.startswith("/"):
            raise ValueError(f"a unix:// url needs an absolute path like unix:///run/redis.sock, got {value!r}")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError(f"url has no host: {redact_url(value)!r}")
        _db_of(value)  # raises with a clear message
        return value

    @field_validator("socket_timeout", "connect_timeout", "reconnect_max")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value

    @model_validator(mode="after")
    def _resolve(self) -> RedisTargetParams:
        inline = self.password.get_secret_value() if self.password is not None else None
        password = resolve_secret(inline, self.password_file, self.password_env, "password")
        parts = urlsplit(self.url)
        if parts.password is not None and password is not None:
            raise ValueError("the url already carries a password: set it in one place (best: password_file)")
        if parts.username is not None and self.username is not None:
            raise ValueError("the url already carries a user name: set 'username' or the url's, not both")
        tls_given = [key for key in _TLS_KEYS if getattr(self, key) is not None]
        if tls_given and parts.scheme != "rediss":
            raise ValueError(f"{', '.join(tls_given)} need a rediss:// url (TLS)")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both tls_cert_file and tls_key_file for a client certificate, or neither")
        self._password = password
        return self

    @property
    def resolved_password(self) -> str | None:
        return self._password

    @property
    def db(self) -> int:
        return _db_of(self.url)


def _db_of(url: str) -> int:
    """The database number in a URL; redis-py silently ignores a bad one, we refuse it."""
    parts = urlsplit(url)
    raw: str | None = None
    for pair in parts.query.split("&"):
        key, _, val = pair.partition("=")
        if key == "db":
            raw = unquote(val)
    if raw is None and parts.scheme != "unix":
        raw = unquote(parts.path).strip("/") or None
    if raw is None:
        return 0
    if not raw.isdigit():
        raise ValueError(f"database must be a number (redis://host:6379/0), got {raw!r}")
    return int(raw)


def redact_url(url: str) -> str:
    """The URL without its password, for every message and log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return parts._replace(netloc=user + netloc).geturl()


def describe(params: RedisTargetParams) -> str:
    """Short name of the server for messages: ``redis 10.0.0.5:6379/0`` or ``redis unix:/run/redis.sock``."""
    parts = urlsplit(params.url)
    if parts.scheme == "unix":
        return f"redis unix:{parts.path}"
    host = parts.hostname or "?"
    host = f"[{host}]" if ":" in host else host
    tls = " (tls)" if parts.scheme == "rediss" else ""
    return f"redis {host}:{parts.port or 6379}/{params.db}{tls}"


# --------------------------------------------------------------------------- backoff


class Backoff:
    """Consecutive-failure counter with a retry time; pure, so its schedule is unit-tested.

    One attempt is let through per window (``admit`` pushes the window on),
    so many rules sharing a down target cause one connect attempt, not many.
    """

    def __init__(self, maximum: float, clock: Callable[[], float]) -> None:
        self.maximum = maximum
        self.clock = clock
        self.failures = 0
        self.retry_at = 0.0
        self.last_error = ""

    def delay(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        return float(min(self.maximum, BACKOFF_FIRST * 2 ** min(failures - 1, 30)))

    def admit(self) -> float | None:
        """None when an attempt may go ahead now, else the seconds until the next one."""
        if self.failures == 0:
            return None
        now = self.clock()
        if now < self.retry_at:
            return self.retry_at - now
        self.retry_at = now + self.delay(self.failures)  # hold the others back while this one tries
        return None

    def failed(self, error: str) -> float:
        self.failures += 1
        self.last_error = error
        wait = self.delay(self.failures)
        self.retry_at = self.clock() + wait
        return wait

    def succeeded(self) -> None:
        self.failures = 0
        self.retry_at = 0.0
        self.last_error = ""

    def cap(self, limit: float, seconds: float) -> None:
        """Wait at most ``seconds`` (and never more than ``limit``) between attempts, from now on.

        A wait already scheduled is shortened too: the cap is a promise
        about the very next attempt.
        """
        self.maximum = max(0.0, min(limit, seconds))
        if self.failures:
            self.retry_at = min(self.retry_at, self.clock() + self.maximum)


# --------------------------------------------------------------------------- the client


class RedisTarget:
    """One Redis connection pool per configured target, shared by every rule that names it.

    Thread-safe: rules probe from worker threads at once. The pool is
    created on first use (``connect`` must not block or raise) and is bounded
    (``max_connections``) so a busy daemon never adds more than a handful of
    clients to a server that may itself be short of them.
    """

    def __init__(
        self, params: RedisTargetParams, clock: Callable[[], float] = time.monotonic, *, info_max_age: float = MAX_AGE
    ) -> None:
        self.params = params
        self.name = describe(params)
        self.client_name = CLIENT_NAME
        self._user = params.username or urlsplit(params.url).username or "default"
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        self._backoff = Backoff(params.reconnect_max, clock)
        # One INFO round trip for every probe of this server due in the same cycle: the sections any
        # probe asked for so far (the set only grows: a probe's sections are asked for on its first run).
        self._info_sections: frozenset[str] = frozenset()
        self._info = SharedRead(self._read_info, max_age=info_max_age, monotonic=clock)
        self._ping = SharedRead(self._ping_twice, max_age=info_max_age, monotonic=clock)

    # -- public API used by probes and actions -------------------------------------------

    def command(self, *args: str | bytes | int | float) -> Any:
        """One command; the reply as redis-py parses it (bytes, int, list; INFO as a dict)."""
        return self.run(lambda client: _execute(client, args))

    def pipeline(self, commands: Sequence[Sequence[str | bytes | int | float]]) -> list[Any]:
        """Several commands in one round trip (not a transaction); raises on the first error reply."""

        def execute(client: redis.Redis) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for args in commands:
                _execute(pipe, args)
            return list(pipe.execute())

        return self.run(execute)

    def info(self, sections: Sequence[str]) -> list[Any]:
        """The INFO replies for ``sections`` (as ``pipeline`` returns them), from the server's shared snapshot.

        Every probe of this server due in the same cycle is served by one
        pipeline of INFO for all the sections the probes use (``SharedRead``:
        at most ``info_max_age`` old, counted from when it was sent; a
        failed read is not kept). The replies are shared: callers copy what
        they keep (``probes.read_info`` does). Rates stay exact: their
        interval is the server's own ``server_time_usec`` of the snapshot.
        """
        wanted = frozenset(sections)
        if not wanted <= self._info_sections:
            with self._lock:
                self._info_sections |= wanted
            self._info.forget()  # a section no snapshot holds yet: read them all again, once
        snapshot = self._info.get()
        if not wanted <= snapshot.keys():  # read before our sections were added, by another probe
            self._info.forget()
            snapshot = self._info.get()
        return [snapshot[name] for name in sections]

    def ping(self) -> float:
        """Round-trip seconds of PING on a warm connection: one measurement for every ``redis.up`` rule of this
        server due in the same cycle (``SharedRead``, as ``info``: a success is reused for at most
        ``info_max_age``, capped at half the shortest interval; a failure never).

        Two PINGs, the second one timed: the first may have paid for a new
        TCP (and TLS) handshake and AUTH, which is not the latency clients see.
        """
        return self._ping.get()

    @property
    def pings(self) -> int:
        """PING measurements actually made through ``ping`` (tests and benchmarks count them)."""
        return self._ping.reads

    def _ping_twice(self) -> float:
        def ping_twice(client: redis.Redis) -> float:
            client.ping()
            started = time.perf_counter()
            client.ping()
            return time.perf_counter() - started

        return self.run(ping_twice)

    def forget_info(self) -> None:
        """After an action of ours (a client killed, keys deleted): the next probe reads INFO afresh."""
        self._info.forget()

    @property
    def info_reads(self) -> int:
        """INFO round trips actually sent through ``info`` (tests and benchmarks count them)."""
        return self._info.reads

    def _read_info(self) -> Mapping[str, Any]:
        names = sorted(self._info_sections)
        return MappingProxyType(dict(zip(names, self.pipeline([("INFO", name) for name in names]), strict=True)))

    def run(self, operation: Callable[[redis.Redis], T]) -> T:
        """Run ``operation`` with the live client, mapping failures to this module's errors."""
        import redis as redis_lib  # noqa: PLC0415 -- lazy: see the module docstring

        with self._lock:
            wait = self._backoff.admit()
            if wait is not None:
                raise RedisUnavailable(self._unavailable_text(wait))
            client = self._client_locked()
        try:
            result = operation(client)
        except (redis_lib.ConnectionError, redis_lib.TimeoutError, OSError) as exc:
            with self._lock:
                wait = self._backoff.failed(_text(exc))
                message = self._unavailable_text(wait)
            raise RedisUnavailable(message) from exc
        except redis_lib.exceptions.NoPermissionError as exc:
            self._answered()
            raise RedisPermissionError(
                f"{self.name}: permission denied: {_text(exc)}"
                f" (grant it to user {self._user} with ACL SETUSER)"
            ) from exc
        except redis_lib.RedisError as exc:
            self._answered()
            raise RedisCommandError(f"{self.name}: {_text(exc)}") from exc
        self._answered()
        return result

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
            client.connection_pool.disconnect()

    @property
    def failures(self) -> int:
        return self._backoff.failures

    def retry_within(self, seconds: float) -> None:
        """Never hold back a reconnect longer than ``seconds`` (``TargetSpec.retry_within``).

        Caps ``reconnect_max``: the daemon passes half the shortest interval
        of the rules on this server, so a Redis that is back is seen on each
        rule's next run. (The backoff is already reset by any answer.)
        """
        self._info.limit(seconds)  # no rule gets the same INFO snapshot on two of its runs
        self._ping.limit(seconds)
        with self._lock:
            self._backoff.cap(self.params.reconnect_max, seconds)

    # -- internals -----------------------------------------------------------------------

    def _answered(self) -> None:
        """The server replied (even with an error reply): it is reachable again."""
        with self._lock:
            if self._backoff.failures:
                self._backoff.succeeded()

    def _unavailable_text(self, wait: float) -> str:
        backoff = self._backoff
        return (
            f"{self.name}: {backoff.last_error}; reconnecting with backoff, next attempt in {wait:.1f}s"
            f" ({backoff.failures} failed attempt{'s' * (backoff.failures != 1)} in a row)"
        )

    def _client_locked(self) -> redis.Redis:
        if self._client is None:
            self._client = _build_client(self.params)
        return self._client


def _build_client(params: RedisTargetParams) -> redis.Redis:
    # Lazy imports: a host without a Redis target never loads redis-py.
    import redis as redis_lib  # noqa: PLC0415
    from redis.backoff import NoBackoff  # noqa: PLC0415
    from redis.retry import Retry  # noqa: PLC0415

    options: dict[str, Any] = {
        "socket_timeout": params.socket_timeout,
        "socket_connect_timeout": params.connect_timeout,
        "client_name": CLIENT_NAME,
        # RESP2 on purpose: every Redis and proxy speaks it (HELLO 3 fails before Redis 6), and the
        # replies we parse have one well-known shape.
        "protocol": 2,
        "retry": Retry(NoBackoff(), 0),  # our Backoff decides when to try again
        "retry_on_timeout": False,
        "max_connections": params.max_connections,
        # CLIENT LIST with thousands of clients is megabytes: 256 KiB reads take a fifth of the
        # client-side time of redis-py's 64 KiB default (bench/bench_redis.py); small replies don't care.
        "socket_read_size": 256 * 1024,
        "timeout": params.connect_timeout,  # waiting for a free pooled connection
    }
    if params.username is not None:
        options["username"] = params.username
    if params.resolved_password is not None:
        options["password"] = params.resolved_password
    if params.url.startswith("rediss://"):
        options.update(
            ssl_ca_certs=params.tls_ca_file,
            ssl_certfile=params.tls_cert_file,
            ssl_keyfile=params.tls_key_file,
            ssl_check_hostname=params.tls_check_hostname and not params.tls_insecure_skip_verify,
            ssl_cert_reqs="none" if params.tls_insecure_skip_verify else "required",
        )
    pool = redis_lib.BlockingConnectionPool.from_url(params.url, **options)
    return redis_lib.Redis(connection_pool=pool)


def _execute(client: Any, args: Sequence[str | bytes | int | float]) -> Any:
    """redis-py's ``execute_command`` is untyped; this is the one place that calls it."""
    return client.execute_command(*args)


def _text(exc: BaseException) -> str:
    text = " ".join(str(exc).split()).rstrip(".")
    return text or type(exc).__name__


def connect(params: RedisTargetParams) -> RedisTarget:
    """No I/O here: the first probe connects, so a Redis that is down at start is a probe that is down."""
    return RedisTarget(params)


def close(target: RedisTarget) -> None:
    target.close()


def retry_within(target: RedisTarget, seconds: float) -> None:
    target.retry_within(seconds)


TARGET = TargetSpec(params=RedisTargetParams, connect=connect, close=close, retry_within=retry_within)
