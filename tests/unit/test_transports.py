"""The transports against a local receiver: what goes on the wire, and how each failure is classified.

Every request here goes to a real HTTP(S) server on 127.0.0.1
(``WebhookReceiver``); the real Alertmanager is in
``tests/integration/interfaces/test_transports_alertmanager.py``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port
from tests.support.webhook_receiver import Reply, WebhookReceiver
from watchdogd import __version__
from watchdogd.notifications.message import Notification
from watchdogd.notifications.transports import (
    MAX_DESCRIPTION,
    AlertmanagerTransport,
    DeliveryError,
    WebhookTransport,
    transport_for,
)
from watchdogd.notifyspec import AlertmanagerSink, SinkConfig, TlsSettings, WebhookSink

NOW = 1_700_000_500.0


def note(**overrides: Any) -> Notification:
    fields: dict[str, Any] = {
        "key": "disk:/var:firing:1700000000",
        "kind": "firing",
        "rule": "disk",
        "subject": "/var",
        "severity": "critical",
        "host": "web1",
        "summary": "disk /var is 97% full",
        "created": 1_700_000_100.0,
        "starts_at": 1_700_000_000.25,
        "value": 97.0,
        "value_text": "97%",
        "labels": {"team": "ops"},
        "annotations": {"runbook_url": "https://runbooks.example/disk"},
        "detail": {"actions": [{"name": "clean-tmp", "ok": True}], "verify": "still above 90%"},
    }
    fields.update(overrides)
    return Notification(**fields)


def webhook(url: str, **fields: Any) -> WebhookTransport:
    return WebhookTransport("hook", WebhookSink(url=url, **fields))


def alertmanager(url: str, **fields: Any) -> AlertmanagerTransport:
    return AlertmanagerTransport("am", AlertmanagerSink(url=url, **fields), clock=lambda: NOW)


def failure(send: Any, *args: Any) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        send(*args)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(("sink 'hook': POST ", "sink 'am': POST ")), message
    return caught.value


def secret_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "secret"
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def hook() -> Any:
    with WebhookReceiver() as receiver:
        yield receiver


def iso_millis(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{round(ts * 1000) % 1000:03d}Z"


# --------------------------------------------------------------------------- webhook: what is sent


def test_webhook_posts_the_notification_json_with_its_headers(hook: WebhookReceiver) -> None:
    n = note()
    webhook(hook.url + "/page", headers={"X-Team": "ops", "user-agent": "custom/1"}).send(n)
    [request] = hook.wait_for(1)
    assert request.method == "POST" and request.path == "/page"
    assert request.json() == json.loads(json.dumps(n.to_json()))
    assert b", " not in request.body and b": " not in request.body  # compact
    assert request.header("Content-Type") == "application/json"
    assert request.header("Content-Length") == str(len(request.body))
    assert request.header("Idempotency-Key") == n.key
    assert request.header("X-Watchdogd-Kind") == "firing"
    assert request.header("X-Team") == "ops"
    assert request.header("User-Agent") == "custom/1"  # configured headers may replace the agent
    assert [value for name, value in request.raw_headers if name.lower() == "user-agent"] == ["custom/1"]
    assert request.header("X-Watchdogd-Signature") is None  # no key, no signature


def test_webhook_user_agent_names_the_version(hook: WebhookReceiver) -> None:
    webhook(hook.url).send(note())
    [request] = hook.wait_for(1)
    assert request.header("User-Agent") == f"watchdogd/{__version__}"


def test_webhook_body_is_utf8_and_strict_json_even_for_an_infinite_value(hook: WebhookReceiver) -> None:
    webhook(hook.url).send(note(value=float("inf"), summary="pas de réponse — 🔥", detail={"lag": float("-inf")}))
    [request] = hook.wait_for(1)

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    body = json.loads(request.body.decode("utf-8"), parse_constant=refuse)
    assert body["value"] == "inf" and body["detail"]["lag"] == "-inf"
    assert body["summary"] == "pas de réponse — 🔥"


@pytest.mark.parametrize("source", ["file", "env"])
def test_webhook_signature_is_the_hmac_of_the_exact_body(
    hook: WebhookReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    key = "s3cret-hmac-key"
    if source == "file":
        transport = webhook(hook.url, secret_file=secret_file(tmp_path, key + "\n"))
    else:
        monkeypatch.setenv("WATCHDOGD_TEST_HOOK_KEY", key)
        transport = webhook(hook.url, secret_env="WATCHDOGD_TEST_HOOK_KEY")
    transport.send(note())
    [request] = hook.wait_for(1)
    signature = request.header("X-Watchdogd-Signature")
    assert signature is not None and signature.startswith("sha256=")
    expected = hmac.new(key.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature.removeprefix("sha256="), expected)
    wrong = hmac.new(b"another key", request.body, hashlib.sha256).hexdigest()
    assert signature.removeprefix("sha256=") != wrong


def test_every_attempt_carries_the_same_key_and_503_503_200_delivers_on_the_third() -> None:
    with WebhookReceiver(503, 503, 200) as hook:
        transport = webhook(hook.url)
        n = note()
        for _ in range(2):
            assert failure(transport.send, n).retry is True
        transport.send(n)
        requests = hook.wait_for(3)
    assert {r.header("Idempotency-Key") for r in requests} == {n.key}
    assert len({r.body for r in requests}) == 1


@pytest.mark.parametrize("status", [201, 202, 204, 299])
def test_any_2xx_is_delivered(status: int) -> None:
    with WebhookReceiver(status) as hook:
        webhook(hook.url).send(note())


# --------------------------------------------------------------------------- failures and retry


@pytest.mark.parametrize(
    ("status", "retry"),
    [(500, True), (502, True), (503, True), (504, True), (429, True), (408, True),
     (400, False), (401, False), (403, False), (404, False), (405, False), (413, False), (422, False)],
)
def test_status_decides_whether_a_retry_can_help(status: int, retry: bool) -> None:
    with WebhookReceiver(Reply(status, body=b'{"error": "because"}\n')) as hook:
        error = failure(webhook(hook.url + "/x").send, note())
    assert error.retry is retry
    assert str(error) == f"sink 'hook': POST {hook.url}/x: status {status}: {{\"error\": \"because\"}}"


def test_a_server_that_hangs_times_out_within_the_timeout() -> None:
    with WebhookReceiver(Reply(hold=True)) as hook:
        started = time.monotonic()
        error = failure(webhook(hook.url, timeout=0.5).send, note())
        elapsed = time.monotonic() - started
    assert error.retry is True
    assert str(error).endswith("timed out after 0.5s")
    assert 0.45 <= elapsed < 2.0


def test_connection_refused_is_worth_retrying() -> None:
    port = free_port()  # nothing listens there
    error = failure(webhook(f"http://127.0.0.1:{port}/hook").send, note())
    assert error.retry is True
    assert str(error) == f"sink 'hook': POST http://127.0.0.1:{port}/hook: connection refused"


def test_a_redirect_is_not_followed_and_not_retried(hook: WebhookReceiver) -> None:
    hook.program(Reply(302, headers={"Location": hook.url + "/elsewhere?token=abc"}))
    error = failure(webhook(hook.url + "/old").send, note())
    assert error.retry is False
    assert f"redirected to {hook.url}/elsewhere?..." in str(error) and "abc" not in str(error)
    assert [r.path for r in hook.requests] == ["/old"]  # send() has returned: a followed redirect would be here


def test_an_oversized_success_is_not_read() -> None:
    with WebhookReceiver(Reply(200, stream=1 << 40)) as hook:
        started = time.monotonic()
        webhook(hook.url, timeout=5).send(note())
        assert time.monotonic() - started < 2.0


def test_an_oversized_error_answer_is_cut() -> None:
    with WebhookReceiver(Reply(500, body=b"boom " * 1000, stream=1 << 40)) as hook:
        started = time.monotonic()
        error = failure(webhook(hook.url, timeout=5).send, note())
        assert time.monotonic() - started < 2.0  # 64 KiB read, not a gigabyte, and not until the timeout
    assert error.retry is True
    assert str(error).startswith(f"sink 'hook': POST {hook.url}: status 500: boom boom")
    assert len(str(error)) < 300


def test_messages_name_sink_and_url_but_no_secret(hook: WebhookReceiver, tmp_path: Path) -> None:
    hook.program(400)
    url = f"http://alice:pa55word@127.0.0.1:{hook.port}/hook?token=t0ken"
    error = failure(webhook(url, secret_file=secret_file(tmp_path, "hmac-k3y")).send, note())
    assert str(error) == f"sink 'hook': POST http://127.0.0.1:{hook.port}/hook?...: status 400"
    for secret in ("alice", "pa55word", "t0ken", "hmac-k3y"):
        assert secret not in str(error)
    [request] = hook.wait_for(1)
    assert request.path == "/hook?token=t0ken"
    assert request.header("Authorization") == "Basic " + base64.b64encode(b"alice:pa55word").decode()


# --------------------------------------------------------------------------- TLS


def test_tls_verifies_with_the_configured_ca(tmp_path: Path) -> None:
    with WebhookReceiver(tls_dir=tmp_path) as hook:
        assert hook.url.startswith("https://")
        webhook(hook.url, tls=TlsSettings(ca_file=hook.ca_file)).send(note())
        assert len(hook.wait_for(1)) == 1


def test_tls_without_the_ca_fails_and_is_not_retried(tmp_path: Path) -> None:
    """An untrusted certificate fails the same way until a person renews it or sets tls.ca_file: retrying
    would only keep the page quiet for give_up_after, so the deliverer is told at once."""
    with WebhookReceiver(tls_dir=tmp_path) as hook:
        error = failure(webhook(hook.url).send, note())
        assert hook.requests == []
    assert error.retry is False
    assert "TLS certificate not trusted" in str(error)


def test_tls_insecure_skip_verify_sends_anyway(tmp_path: Path) -> None:
    with WebhookReceiver(tls_dir=tmp_path) as hook:
        webhook(hook.url, tls=TlsSettings(insecure_skip_verify=True)).send(note())
        assert len(hook.wait_for(1)) == 1


def test_tls_context_is_built_on_first_use(tmp_path: Path) -> None:
    """A CA file that cannot be read is found by the first https send, not at construction (which must
    stay cheap: a plain-http sink never loads a CA store)."""
    missing = str(tmp_path / "no-such-ca.pem")
    transport = webhook("https://127.0.0.1:1/hook", tls=TlsSettings(ca_file=missing))
    error = failure(transport.send, note())
    assert error.retry is False
    assert "cannot load tls.ca_file" in str(error) and missing in str(error)


# --------------------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    "headers",
    [{"Content-Type": "text/plain"}, {"idempotency-key": "x"}, {"X-Watchdogd-Signature": "forged"},
     {"X-Bad": "a\r\nInjected: 1"}, {"Bad Name": "x"}],
)
def test_headers_watchdogd_owns_or_malformed_are_config_errors(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="sink 'hook': header"):
        webhook("http://127.0.0.1:1/", headers=headers)


def test_unusable_secrets_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sink 'hook': the HMAC key is empty"):
        webhook("http://127.0.0.1:1/", secret_file=secret_file(tmp_path, "\n"))
    readable = tmp_path / "open"
    readable.write_text("k")
    readable.chmod(0o644)
    with pytest.raises(ValueError, match="sink 'hook': secret file .* is readable by others"):
        webhook("http://127.0.0.1:1/", secret_file=str(readable))
    with pytest.raises(ValueError, match="sink 'hook': environment variable WATCHDOGD_NO_SUCH_VAR"):
        webhook("http://127.0.0.1:1/", secret_env="WATCHDOGD_NO_SUCH_VAR")
    with pytest.raises(ValueError, match="sink 'am': basic_auth_password_file needs basic_auth_user"):
        alertmanager("http://127.0.0.1:1/", basic_auth_password_file=secret_file(tmp_path, "pw"))
    with pytest.raises(ValueError, match="invalid port"):
        webhook("http://127.0.0.1:99999/")


def test_transport_for_builds_the_one_the_config_names() -> None:
    am = transport_for("am1", SinkConfig(alertmanager=AlertmanagerSink(url="http://127.0.0.1:9093", resend="30s")))
    hook = transport_for("hook1", SinkConfig(webhook=WebhookSink(url="https://hooks.example/x")))
    assert isinstance(am, AlertmanagerTransport) and am.name == "am1" and am.resend == 30.0
    assert isinstance(hook, WebhookTransport) and hook.name == "hook1" and hook.resend is None


# --------------------------------------------------------------------------- Alertmanager payload


def posted_alert(hook: WebhookReceiver, transport: AlertmanagerTransport, n: Notification) -> dict[str, Any]:
    before = len(hook.requests)
    transport.send(n)
    request = hook.wait_for(before + 1)[-1]
    body = request.json()
    assert isinstance(body, list) and len(body) == 1
    alert: dict[str, Any] = body[0]
    return alert


def test_alertmanager_posts_one_postable_alert(hook: WebhookReceiver) -> None:
    transport = alertmanager(hook.url + "/prefix/", resend="60s")
    alert = posted_alert(hook, transport, note())
    [request] = hook.requests
    assert request.path == "/prefix/api/v2/alerts"
    assert request.header("Content-Type") == "application/json"
    assert request.header("User-Agent") == f"watchdogd/{__version__}"
    assert request.header("Authorization") is None
    assert alert == {
        "labels": {"alertname": "disk", "rule": "disk", "subject": "/var", "severity": "critical",
                   "instance": "web1", "job": "watchdogd", "team": "ops"},
        "annotations": {"summary": "disk /var is 97% full", "value": "97%", "watchdogd_kind": "firing",
                        "runbook_url": "https://runbooks.example/disk",
                        "description": '{"actions":[{"name":"clean-tmp","ok":true}],"verify":"still above 90%"}'},
        "startsAt": "2023-11-14T22:13:20.250Z",
        "endsAt": iso_millis(NOW + 4 * 60),
    }
    assert transport.resend == 60.0


@pytest.mark.parametrize(
    ("kind", "alertname", "ends_at", "expected_end"),
    [
        ("firing", "disk", None, NOW + 4 * 30),
        ("not_held", "disk", None, NOW + 4 * 30),
        ("repeated", "disk", None, NOW + 4 * 30),
        ("gave_up", "WatchdogdGaveUp", None, NOW + 4 * 30),
        ("resolved", "disk", 1_700_000_300.5, 1_700_000_300.5),
        ("resolved", "disk", None, NOW),
        ("resumed", "WatchdogdGaveUp", None, NOW),
        ("test", "WatchdogdTest", None, NOW + 300),
    ],
)
def test_alertmanager_alertname_and_ends_at_by_kind(
    hook: WebhookReceiver, kind: str, alertname: str, ends_at: float | None, expected_end: float
) -> None:
    subject = "-" if kind in ("gave_up", "resumed", "test") else "/var"
    alert = posted_alert(hook, alertmanager(hook.url, resend="30s"), note(kind=kind, subject=subject, ends_at=ends_at))
    assert alert["labels"]["alertname"] == alertname
    assert alert["labels"]["rule"] == "disk"
    assert ("subject" in alert["labels"]) is (subject != "-")
    assert alert["annotations"]["watchdogd_kind"] == kind
    assert alert["endsAt"] == iso_millis(expected_end)


def test_alertmanager_never_ends_an_alert_before_it_starts(hook: WebhookReceiver) -> None:
    """Alertmanager answers 400 to endsAt < startsAt: a resolve whose clock stepped back still resolves."""
    alert = posted_alert(hook, alertmanager(hook.url), note(kind="resolved", ends_at=1_699_999_000.0))
    assert alert["endsAt"] == alert["startsAt"]


def test_alertmanager_labels_the_rule_cannot_override(hook: WebhookReceiver) -> None:
    n = note(labels={"alertname": "Hijack", "instance": "other", "team": "ops", "empty": ""},
             annotations={"watchdogd_kind": "forged", "dry_run": "false", "owner": "db-team"}, dry_run=True)
    alert = posted_alert(hook, alertmanager(hook.url), n)
    assert alert["labels"]["alertname"] == "disk" and alert["labels"]["instance"] == "web1"
    assert alert["labels"]["team"] == "ops" and "empty" not in alert["labels"]
    assert alert["annotations"]["watchdogd_kind"] == "firing"
    assert alert["annotations"]["dry_run"] == "true" and alert["annotations"]["owner"] == "db-team"


def test_alertmanager_value_and_description_are_compact_and_bounded(hook: WebhookReceiver) -> None:
    transport = alertmanager(hook.url)
    alert = posted_alert(hook, transport, note(value_text=None, value=12.5, detail={"log": "é" * 10_000}))
    assert alert["annotations"]["value"] == "12.5"
    description = alert["annotations"]["description"]
    assert len(description.encode()) <= MAX_DESCRIPTION and description.endswith("...(cut)")
    alert = posted_alert(hook, transport, note(value_text=None, value=None, detail={}))
    assert "value" not in alert["annotations"] and "description" not in alert["annotations"]
    alert = posted_alert(hook, transport, note(value_text=None, value=3.0))
    assert alert["annotations"]["value"] == "3"


def test_alertmanager_basic_auth_from_the_password_file(hook: WebhookReceiver, tmp_path: Path) -> None:
    password = "c0rrect-h0rse"
    transport = alertmanager(hook.url, basic_auth_user="watchdogd",
                             basic_auth_password_file=secret_file(tmp_path, password + "\n"))
    posted_alert(hook, transport, note())
    hook.program(401)
    error = failure(transport.send, note())
    assert error.retry is False and password not in str(error)
    first, second = hook.requests
    for request in (first, second):
        assert request.header("Authorization") == "Basic " + base64.b64encode(f"watchdogd:{password}".encode()).decode()


def test_alertmanager_errors_name_the_sink_and_the_api_url() -> None:
    port = free_port()
    error = failure(alertmanager(f"http://127.0.0.1:{port}").send, note())
    assert str(error) == f"sink 'am': POST http://127.0.0.1:{port}/api/v2/alerts: connection refused"
    assert error.retry is True
