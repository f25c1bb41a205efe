"""Redis target params, secrets, URL handling and the reconnect backoff schedule (no server needed)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from watchdogd.config import ConfigError, parse_config
from watchdogd.families.redis.target import (
    TARGET,
    Backoff,
    RedisTarget,
    RedisTargetParams,
    connect,
    describe,
    redact_url,
)


def error_of(**params: object) -> str:
    with pytest.raises(ValidationError) as caught:
        RedisTargetParams(**params)  # type: ignore[arg-type]
    return str(caught.value)


@pytest.mark.parametrize(
    ("url", "db"),
    [
        ("redis://127.0.0.1:6379/0", 0),
        ("redis://cache.internal/3", 3),
        ("rediss://cache.internal:6380/1", 1),
        ("redis://[::1]:6379", 0),
        ("unix:///run/redis/redis.sock", 0),
        ("unix:///run/redis/redis.sock?db=4", 4),
    ],
)
def test_accepted_urls_and_their_database(url: str, db: int) -> None:
    assert RedisTargetParams(url=url).db == db


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:6379", "url must start with redis://, rediss:// (TLS) or unix://"),
        ("127.0.0.1:6379", "url must start with redis://"),
        ("redis:///0", "url has no host"),
        ("redis://127.0.0.1/abc", "database must be a number"),
        ("unix://relative.sock", "a unix:// url needs an absolute path"),
    ],
)
def test_refused_urls(url: str, message: str) -> None:
    assert message in error_of(url=url)


def test_tls_options_need_rediss_and_come_in_pairs() -> None:
    assert "tls_ca_file need a rediss:// url" in error_of(url="redis://h/0", tls_ca_file="/ca.pem")
    assert "set both tls_cert_file and tls_key_file" in error_of(url="rediss://h/0", tls_cert_file="/c.pem")
    params = RedisTargetParams(url="rediss://h/0", tls_ca_file="/ca.pem", tls_cert_file="/c", tls_key_file="/k")
    assert params.tls_ca_file == "/ca.pem"


def test_password_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    secret.chmod(0o600)
    assert RedisTargetParams(password_file=str(secret)).resolved_password == "from-file"
    monkeypatch.setenv("REDIS_PW_FOR_TEST", "from-env")
    assert RedisTargetParams(password_env="REDIS_PW_FOR_TEST").resolved_password == "from-env"
    assert RedisTargetParams(password="inline").resolved_password == "inline"
    assert RedisTargetParams().resolved_password is None
    assert "set only one of password, password_file" in error_of(password="a", password_file=str(secret))
    assert "environment variable NOT_SET_ANYWHERE is not set" in error_of(password_env="NOT_SET_ANYWHERE")
    assert "the url already carries a password" in error_of(url="redis://:pw@h/0", password="x")
    assert "the url already carries a user name" in error_of(url="redis://bob@h/0", username="alice")


def test_the_password_never_shows(tmp_path: Path) -> None:
    params = RedisTargetParams(password="hunter2")
    assert "hunter2" not in repr(params) and "hunter2" not in str(params.model_dump())
    assert redact_url("redis://user:hunter2@h:6379/0") == "redis://user:***@h:6379/0"
    assert redact_url("redis://:hunter2@h/0") == "redis://:***@h/0"
    assert redact_url("redis://h/0") == "redis://h/0"
    assert "hunter2" not in describe(RedisTargetParams(url="redis://:hunter2@h/0"))


def test_describe_names_the_server() -> None:
    assert describe(RedisTargetParams(url="redis://10.0.0.5/2")) == "redis 10.0.0.5:6379/2"
    assert describe(RedisTargetParams(url="rediss://[::1]:7000/0")) == "redis [::1]:7000/0 (tls)"
    assert describe(RedisTargetParams(url="unix:///run/redis.sock")) == "redis unix:/run/redis.sock"


def test_timeouts_must_be_positive() -> None:
    assert "must be greater than 0" in error_of(socket_timeout=0)
    assert RedisTargetParams(socket_timeout="250ms").socket_timeout == 0.25


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_up_to_the_maximum_and_admits_one_attempt_per_window() -> None:
    clock = FakeClock()
    backoff = Backoff(maximum=30.0, clock=clock)
    assert backoff.admit() is None  # healthy: always go ahead
    assert [backoff.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.failed("refused") == 1.0
    assert backoff.admit() == pytest.approx(1.0)  # inside the window: wait
    clock.now += 1.0
    assert backoff.admit() is None  # the one attempt of this window...
    assert backoff.admit() == pytest.approx(1.0)  # ...holds the others back while it runs
    assert backoff.failed("refused") == 2.0
    clock.now += 2.0
    assert backoff.admit() is None
    backoff.succeeded()
    assert backoff.failures == 0 and backoff.admit() is None


def test_connect_does_not_import_or_touch_redis() -> None:
    code = textwrap.dedent("""
        import sys
        from watchdogd import registry
        from watchdogd.families.redis.target import RedisTargetParams, connect
        target = connect(RedisTargetParams(url="redis://192.0.2.1:6379/0"))
        assert "redis" not in sys.modules, "redis-py imported before first use"
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "ok", result.stderr


def test_target_spec() -> None:
    target = TARGET.connect(RedisTargetParams())
    assert isinstance(target, RedisTarget)
    assert target.client_name == "watchdogd"
    TARGET.close(target)  # closing a never-used target is fine
    connect(RedisTargetParams()).close()


def test_config_reports_bad_targets_one_line_per_key(tmp_path: Path) -> None:
    text = textwrap.dedent("""
        targets:
          redis:
            cache: {url: "redis://h/x", socket_timeout: soon, tls_ca_file: /ca.pem}
        rules: {}
    """)
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "w.yaml")
    problems = caught.value.problems
    assert any("targets.redis.cache.url: database must be a number" in p for p in problems), problems
    assert any("targets.redis.cache.socket_timeout: expected a duration" in p for p in problems), problems
    assert all("\n" not in p for p in problems)
