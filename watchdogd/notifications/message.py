"""What is sent: one notification, the same for every transport (Alertmanager, webhooks).

Plain data, stored as JSON in the outbox before any attempt, so a restart
or ``kill -9`` re-sends exactly what was decided, under the same key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

KINDS: tuple[str, ...] = ("firing", "resolved", "not_held", "gave_up", "resumed", "repeated", "test")
"""firing: a subject started firing; resolved: it cleared (or the rule resumed after a give-up page);
not_held: an action ran but the fix did not hold; gave_up: the rule stopped acting (max_actions);
resumed: it acts again; repeated: it fired ``repeat.count`` times within ``repeat.per``; test: watchdogctl
test-notify."""


@dataclass(frozen=True, slots=True)
class Notification:
    key: str
    """Idempotency key: the same for every attempt and across restarts (webhooks get it as a header;
    Alertmanager dedupes by labels anyway)."""
    kind: str
    rule: str
    subject: str  # "-" for the rule itself (gave_up, resumed, test)
    severity: str
    host: str
    summary: str  # one line for a person at 3 a.m.
    created: float  # when the daemon decided to send it (Unix time)
    starts_at: float  # when the condition began (the subject firing since; the give-up's time)
    ends_at: float | None = None  # set on resolved: when it cleared
    value: float | None = None
    value_text: str | None = None
    dry_run: bool = False  # the rule runs in dry-run: nothing was or will be done to the host
    labels: Mapping[str, str] = field(default_factory=dict)  # the rule's own extra labels
    annotations: Mapping[str, str] = field(default_factory=dict)  # the rule's own extra annotations
    detail: Mapping[str, Any] = field(default_factory=dict)  # actions tried, verify reason, error...

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, **asdict(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Notification:
        fields = {key: value for key, value in data.items() if key != "version"}
        return cls(**fields)
