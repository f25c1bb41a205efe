"""The ``notify:`` section of the config and each rule's ``notify:`` policy (validated models).

Apart from ``config.py`` because the notifications package reads them too,
and it sits above the config in the layering. Secrets (a webhook's HMAC key,
basic-auth passwords) come from a file or the environment, never inline,
like target DSNs.
"""

from __future__ import annotations

from typing import Literal

from watchdogd.spec import ConfigDict, Field, Model, model_default, model_validator
from watchdogd.units import Duration, Timeout, Window

MAX_SINKS = 32
MAX_LABELS = 32


class _Strict(Model):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsSettings(_Strict):
    ca_file: str | None = None
    """A CA bundle to verify the server with (default: the system's)."""
    insecure_skip_verify: bool = False
    """Send without verifying the server's certificate: for a lab, never for a page that matters."""


class AlertmanagerSink(_Strict):
    """Prometheus Alertmanager, API v2 (``POST <url>/api/v2/alerts``)."""

    url: str = Field(pattern=r"^https?://[^\s]+$")
    timeout: Timeout = 5.0
    tls: TlsSettings = model_default(TlsSettings)
    basic_auth_user: str | None = None
    basic_auth_password_file: str | None = None
    resend: Window = 60.0
    """How often a firing alert is sent again while it lasts: Alertmanager resolves an alert it has
    not heard of for its resolve_timeout, so silence must not look like recovery."""


class WebhookSink(_Strict):
    """Any HTTP endpoint that takes JSON (``POST``), with an optional HMAC-SHA256 signature."""

    url: str = Field(pattern=r"^https?://[^\s]+$")
    timeout: Timeout = 5.0
    tls: TlsSettings = model_default(TlsSettings)
    secret_file: str | None = None
    """A file holding the HMAC key: each request then carries ``X-Watchdogd-Signature: sha256=<hex>``
    of the body. ``secret_env`` names an environment variable instead."""
    secret_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict, max_length=MAX_LABELS)

    @model_validator(mode="after")
    def _one_secret(self) -> WebhookSink:
        if self.secret_file and self.secret_env:
            raise ValueError("give the HMAC key as secret_file or secret_env, not both")
        return self


class SinkConfig(_Strict):
    """One named sink: exactly one transport."""

    alertmanager: AlertmanagerSink | None = None
    webhook: WebhookSink | None = None

    @model_validator(mode="after")
    def _one_transport(self) -> SinkConfig:
        if (self.alertmanager is None) == (self.webhook is None):
            raise ValueError("a sink is either alertmanager: {...} or webhook: {...}")
        return self


class Repeat(_Strict):
    count: int = Field(ge=1, le=10_000)
    per: Window


class NotifyPolicy(_Strict):
    """When a rule pages, and whom.

    ``when: firing``: when a subject starts firing, and again when it resolves.
    ``act_first``: a rule with actions pages only when its fix did not hold,
    when it fired ``repeat.count`` times within ``repeat.per``, or when it
    gave up; the resolve follows. A rule without actions pages on firing.
    ``never``: no page from this rule (the alert history still has it).
    A give-up always pages, whatever ``when`` says, unless it is never.
    """

    when: Literal["firing", "act_first", "never"] = "act_first"
    """(Not ``on``: YAML reads a bare ``on`` key as the boolean true.)"""
    sinks: tuple[str, ...] | None = None
    """Sink names; default: every sink of ``notify.sinks``."""
    repeat: Repeat | None = None
    labels: dict[str, str] = Field(default_factory=dict, max_length=MAX_LABELS)
    annotations: dict[str, str] = Field(default_factory=dict, max_length=MAX_LABELS)


class NotifySection(_Strict):
    sinks: dict[str, SinkConfig] = Field(default_factory=dict, max_length=MAX_SINKS)
    default: NotifyPolicy = model_default(NotifyPolicy)
    """The policy of rules that say nothing (their own ``notify:`` is merged over it)."""
    dry_run: Literal["mark", "silent"] = "mark"
    """A dry-run rule's notifications: sent with a clear dry-run marker, or not at all."""
    give_up_after: Duration = 86400.0
    """A delivery still failing after this long is dropped (counted, logged); 0 keeps trying."""
    host: str | None = None
    """The ``instance``/``host`` label; default: the host name."""
