"""The Alertmanager transport against a real Alertmanager (API v2), started by each test on its own port.

What Alertmanager holds is read back through its own API. It lists only
alerts whose ``endsAt`` is ahead, whatever the state filters say, so a
resolve shows as the alert gone from every listing, while an alert with
other labels stays (the firing alerts end ``4 * resend`` = 4 minutes
ahead: nothing else could make them go within a test), and as one more
received resolved alert, none invalid, in its ``/metrics``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_until
from tests.support.alertmanager import Alertmanager, running_alertmanager
from watchdogd.notifications.message import Notification
from watchdogd.notifications.transports import AlertmanagerTransport, DeliveryError
from watchdogd.notifyspec import AlertmanagerSink

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

RESEND = 60.0


@pytest.fixture
def am(tmp_path: Path) -> Iterator[Alertmanager]:
    with running_alertmanager(tmp_path) as manager:
        yield manager


def transport(url: str, **fields: Any) -> AlertmanagerTransport:
    return AlertmanagerTransport("am", AlertmanagerSink(url=url, resend=RESEND, **fields))


def note(kind: str = "firing", subject: str = "/var", **overrides: Any) -> Notification:
    now = time.time()
    fields: dict[str, Any] = {
        "key": f"disk:{subject}:{kind}:{now}",
        "kind": kind,
        "rule": "disk",
        "subject": subject,
        "severity": "critical",
        "host": "web1",
        "summary": f"disk {subject} is 97% full",
        "created": now,
        "starts_at": now - 120.5,
        "value": 97.0,
        "value_text": "97%",
        "labels": {"team": "ops"},
        "annotations": {"runbook_url": "https://runbooks.example/disk"},
        "detail": {"actions": [{"name": "clean-tmp", "ok": True}]},
    }
    fields.update(overrides)
    return Notification(**fields)


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def received(am: Alertmanager, status: str) -> float:
    return am.metric("alertmanager_alerts_received_total", status=status, version="v2") or 0.0


def test_a_firing_notification_is_an_active_alert_with_our_labels(am: Alertmanager) -> None:
    n = note()
    sent_at = time.time()
    transport(am.url).send(n)
    [alert] = wait_until(lambda: am.find(alertname="disk", subject="/var"), 5, "the alert in Alertmanager")
    assert alert["labels"] == {"alertname": "disk", "rule": "disk", "subject": "/var", "severity": "critical",
                               "instance": "web1", "job": "watchdogd", "team": "ops"}
    annotations = alert["annotations"]
    assert annotations["summary"] == "disk /var is 97% full"
    assert annotations["value"] == "97%" and annotations["watchdogd_kind"] == "firing"
    assert annotations["runbook_url"] == "https://runbooks.example/disk"
    assert annotations["description"] == '{"actions":[{"name":"clean-tmp","ok":true}]}'
    assert "dry_run" not in annotations
    assert alert["status"]["state"] == "active"
    assert abs(parse_time(alert["startsAt"]) - n.starts_at) < 0.001  # Alertmanager keeps milliseconds
    assert sent_at + 4 * RESEND - 1 <= parse_time(alert["endsAt"]) <= time.time() + 4 * RESEND + 1
    assert am.alerts(active=True, filters={"alertname": "disk"}) == [alert]


def test_a_resolved_notification_closes_the_alert_with_the_same_labels(am: Alertmanager) -> None:
    am_transport = transport(am.url)
    am_transport.send(note(subject="/var"))
    am_transport.send(note(subject="/home"))
    wait_until(lambda: len(am.find(alertname="disk")) == 2, 5, "both alerts in Alertmanager")
    assert not am.gone(alertname="disk", subject="/var")
    resolved_before, invalid_before = received(am, "resolved"), am.metric("alertmanager_alerts_invalid_total",
                                                                           version="v2")
    am_transport.send(note(kind="resolved", subject="/var", ends_at=time.time()))
    wait_until(lambda: am.gone(alertname="disk", subject="/var"), 5, "the resolved alert to leave every listing")
    [left] = am.find(alertname="disk")
    assert left["labels"]["subject"] == "/home" and left["status"]["state"] == "active"
    assert received(am, "resolved") == resolved_before + 1
    assert am.metric("alertmanager_alerts_invalid_total", version="v2") == invalid_before


def test_gave_up_opens_watchdogd_gave_up_and_resumed_closes_it(am: Alertmanager) -> None:
    am_transport = transport(am.url)
    am_transport.send(note(subject="/var"))
    am_transport.send(note(kind="gave_up", subject="-", summary="disk: gave up after 3 actions in 1h",
                           value=None, value_text=None, dry_run=True))
    [gave_up] = wait_until(lambda: am.find(alertname="WatchdogdGaveUp"), 5, "WatchdogdGaveUp in Alertmanager")
    assert gave_up["labels"] == {"alertname": "WatchdogdGaveUp", "rule": "disk", "severity": "critical",
                                 "instance": "web1", "job": "watchdogd", "team": "ops"}
    assert gave_up["annotations"]["watchdogd_kind"] == "gave_up"
    assert gave_up["annotations"]["dry_run"] == "true"
    assert gave_up["status"]["state"] == "active"
    assert not am.gone(alertname="WatchdogdGaveUp")
    am_transport.send(note(kind="resumed", subject="-", summary="disk acts again", value=None, value_text=None,
                           dry_run=True))
    wait_until(lambda: am.gone(alertname="WatchdogdGaveUp"), 5, "WatchdogdGaveUp to be resolved")
    assert [a["labels"]["alertname"] for a in am.find(rule="disk")] == ["disk"]  # the subject's page stays


def test_a_test_notification_is_watchdogd_test(am: Alertmanager) -> None:
    transport(am.url).send(note(kind="test", subject="-", rule="-", summary="watchdogctl test-notify"))
    [alert] = wait_until(lambda: am.find(alertname="WatchdogdTest"), 5, "WatchdogdTest in Alertmanager")
    assert alert["annotations"]["watchdogd_kind"] == "test"
    assert parse_time(alert["endsAt"]) - time.time() == pytest.approx(300, abs=5)


def test_a_wrong_path_is_a_delivery_error_not_worth_retrying(am: Alertmanager) -> None:
    with pytest.raises(DeliveryError) as caught:
        transport(am.url + "/not-alertmanager").send(note())
    assert caught.value.retry is False
    assert str(caught.value).startswith(f"sink 'am': POST {am.url}/not-alertmanager/api/v2/alerts: status 404")
    assert am.find(alertname="disk") == []


def test_basic_auth_with_the_password_file(tmp_path: Path) -> None:
    password_file = tmp_path / "am-password"
    password_file.write_text("c0rrect-h0rse\n")
    password_file.chmod(0o600)
    wrong_file = tmp_path / "wrong-password"
    wrong_file.write_text("guess\n")
    wrong_file.chmod(0o600)
    with running_alertmanager(tmp_path, users={"watchdogd": "c0rrect-h0rse"}) as am:
        with pytest.raises(DeliveryError) as caught:
            transport(am.url, basic_auth_user="watchdogd", basic_auth_password_file=str(wrong_file)).send(note())
        assert caught.value.retry is False and "status 401" in str(caught.value) and "guess" not in str(caught.value)
        transport(am.url, basic_auth_user="watchdogd", basic_auth_password_file=str(password_file)).send(note())
        assert wait_until(lambda: am.find(alertname="disk"), 5, "the alert behind basic auth")
