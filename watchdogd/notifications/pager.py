"""Which transitions page whom: the rule's ``notify`` policy applied to the event stream.

A queued sink (a disk write per page must never hold up a rule): it turns
events into notifications, one per sink, and puts them in the durable
outbox together with the alert they open or close, then wakes the
deliverer. What is open is kept in the store too, so a resolve is sent
only for what was paged, and a restart can settle what changed while the
daemon was down (``reconcile``).

``when: firing`` pages when a subject starts firing; ``act_first`` (the
default) lets the rule's actions try first and pages only when the fix did
not hold, when the subject fired ``repeat.count`` times within
``repeat.per``, or when the rule gave up (a rule without actions pages on
firing); a give-up pages under either. Every page is followed by its
resolve.

Maintenance mode (``watchdogctl pause --all``) is a silence: while it is on,
nothing opens a page (the alert history still records every transition,
and resolves of pages opened before still go out). What still fires when
it ends is paged then by ``reconcile`` (at ``resume --all``, or within its
half-minute tick after an expiry) for rules that page on firing; a rule
that acts first acts again and pages if its fix does not hold.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from watchdogd.configtypes import Config, Rule
from watchdogd.engine import events as ev
from watchdogd.engine.outbox import OpenAlert, Outbox, Queued
from watchdogd.engine.snapshot import EngineSnapshot, RuleSnapshot
from watchdogd.logs import event as log_event
from watchdogd.model import Clock, Status
from watchdogd.notifications.message import Notification
from watchdogd.units import format_duration, format_value

log = logging.getLogger(__name__)

RULE_ITSELF = "-"


@dataclass(frozen=True, slots=True)
class _Page:
    """A decision before it is addressed: the notification, and whether it opens or closes its alert."""

    notification: Notification
    opens: bool


class Pager:
    name = "notify"

    def __init__(
        self,
        outbox: Outbox,
        config: Callable[[], Config],
        clock: Clock,
        host: str,
        wake: Callable[[], None],
        *,
        maintenance: Callable[[float], bool] = lambda now: False,
    ) -> None:
        self._outbox = outbox
        self._maintenance = maintenance
        """Whether the host is in maintenance mode at a time (``Engine.maintenance``): no page opens then."""
        self._config = config
        self._clock = clock
        self._host = host
        self._wake = wake
        self._open = {(a.sink, a.rule, a.subject): a.since for a in outbox.open_alerts()}
        """Open alerts (sink, rule, subject) -> when their condition began."""
        self._fired: dict[tuple[str, str], tuple[float, deque[float]]] = {}
        """(rule, subject) -> (the rule's repeat.per, when the subject fired within it)."""
        self._swept_at = 0  # len(self._fired) after the last sweep
        self._lock = threading.Lock()  # the sink's thread pages; reconcile runs from the deliverer's

    # -- the event stream --------------------------------------------------------

    def handle(self, event: ev.Event) -> None:
        rule = self._config().rules.get(getattr(event, "rule", ""))
        if rule is None or rule.notify.when == "never":
            return
        with self._lock:
            page = self._decide(event, rule)
            if page is not None and page.opens and self._maintenance(self._clock()):
                if self._sinks(rule):
                    n = page.notification
                    log_event(log, logging.INFO, "page held: maintenance mode", rule=n.rule, subject=n.subject,
                              kind=n.kind)
                return
            if page is not None:
                self._put([page], rule)

    def _decide(self, event: ev.Event, rule: Rule) -> _Page | None:
        acts_first = rule.notify.when == "act_first" and bool(rule.actions)
        match event:
            case ev.SubjectChanged(new=Status.FIRING):
                if not acts_first:
                    seen = _evidence(event.evidence)
                    return self._page("firing", rule, event.subject, event.ts, event.value, opens=True, detail=seen)
                return self._repeated(rule, event)
            case ev.SubjectChanged(old=Status.FIRING, new=Status.OK):
                return self._page("resolved", rule, event.subject, event.ts, event.value, opens=False)
            case ev.FixNotHeld() if acts_first:
                held: dict[str, object] = {"action": event.action, "reason": event.reason, **_evidence(event.evidence)}
                began = event.since if event.since is not None else event.ts
                return self._page("not_held", rule, event.subject, began, event.value, opens=True, detail=held)
            case ev.GaveUp():
                detail: dict[str, object] = {"max_actions": event.max_actions, "per": event.per}
                return self._page("gave_up", rule, RULE_ITSELF, event.ts, None, opens=True, detail=detail)
            case ev.Resumed():
                return self._page("resumed", rule, RULE_ITSELF, event.ts, None, opens=False, detail={"by": event.by})
        return None

    def _repeated(self, rule: Rule, event: ev.SubjectChanged) -> _Page | None:
        """act_first: the fix keeps coming undone; page once the subject fired ``repeat.count`` times."""
        repeat = rule.notify.repeat
        if repeat is None:
            return None
        key = (rule.name, event.subject)
        times = self._fired[key][1] if key in self._fired else deque()
        self._fired[key] = (repeat.per, times)  # the per of the config in force (a reload may change it)
        times.append(event.ts)
        while times and times[0] <= event.ts - repeat.per:
            times.popleft()
        self._sweep(event.ts)
        if len(times) < repeat.count:
            return None
        detail: dict[str, object] = {"count": len(times), "per": repeat.per, **_evidence(event.evidence)}
        return self._page("repeated", rule, event.subject, event.ts, event.value, opens=True, detail=detail)

    def _sweep(self, now: float) -> None:
        """Forget subjects whose window has emptied, whenever the table has doubled since the last sweep.

        A high-cardinality rule (a pid, a container) would otherwise keep
        one entry per subject it ever saw; amortised, this costs O(1) a call.
        """
        if len(self._fired) < max(64, 2 * self._swept_at):
            return
        self._fired = {
            key: (per, times) for key, (per, times) in self._fired.items() if times and times[-1] > now - per
        }
        self._swept_at = len(self._fired)

    # -- building and queueing -----------------------------------------------------

    def _page(
        self,
        kind: str,
        rule: Rule,
        subject: str,
        ts: float,
        value: float | None,
        *,
        opens: bool,
        detail: Mapping[str, object] | None = None,
    ) -> _Page:
        text = None if value is None else format_value(value, rule.unit)
        notification = Notification(
            key=_key(rule.name, subject, kind, ts),
            kind=kind,
            rule=rule.name,
            subject=subject,
            severity=rule.severity,
            host=self._host,
            summary=_summary(kind, rule, subject, text, detail or {}),
            created=self._clock(),
            starts_at=ts,
            ends_at=None if opens else ts,
            value=value,
            value_text=text,
            dry_run=rule.dry_run,
            labels=dict(rule.notify.labels),
            annotations=dict(rule.notify.annotations),
            detail=dict(detail or {}),
        )
        return _Page(notification, opens)

    def _put(self, pages: Iterable[_Page], rule: Rule) -> None:
        """Queue each page for its sinks: a page opens an alert on the rule's sinks that do not have it open;
        a resolve goes to every sink where the alert is open (also one the rule no longer names)."""
        config = self._config()
        if rule.dry_run and config.notify.dry_run == "silent":
            return
        wanted = self._sinks(rule)
        queued: list[Queued] = []
        opened: list[OpenAlert] = []
        closed: list[tuple[str, str, str]] = []
        for page in pages:
            n = page.notification
            if page.opens:
                sinks = [sink for sink in wanted if (sink, n.rule, n.subject) not in self._open]
            else:
                sinks = sorted(s for s, r, subject in self._open if (r, subject) == (n.rule, n.subject))
            for sink in sinks:
                if not page.opens:  # a resolve says when what it resolves began: the open alert knows
                    n = replace(page.notification, starts_at=self._open[(sink, n.rule, n.subject)])
                body = _body(n)
                if sink in config.notify.sinks:
                    queued.append(Queued(sink, n.key, body))
                if page.opens:
                    opened.append(OpenAlert(sink, n.rule, n.subject, body, n.starts_at))
                else:
                    closed.append((sink, n.rule, n.subject))
        self._commit(queued, opened, closed)

    def _sinks(self, rule: Rule) -> tuple[str, ...]:
        """The sinks a page of ``rule`` would open on: its own list, else every sink."""
        return tuple(rule.notify.sinks) if rule.notify.sinks is not None else tuple(self._config().notify.sinks)

    def _commit(self, queued: list[Queued], opened: list[OpenAlert], closed: list[tuple[str, str, str]]) -> None:
        if not (queued or opened or closed):
            return
        self._outbox.put(queued, self._clock(), opened=opened, closed=closed)
        self._open.update({(a.sink, a.rule, a.subject): a.since for a in opened})
        for key in closed:
            self._open.pop(key, None)
        if queued:
            self._wake()

    # -- after a restart or a reload ---------------------------------------------------

    def reconcile(self, snap: EngineSnapshot) -> None:
        """Settle what the event stream did not say: at start, after a reload, and every half minute.

        An open alert is resolved when its rule is gone or disabled, when
        its rule measured since the start and the subject no longer fires
        (a restart restores firing states without values, so a rule that has
        not run yet proves nothing), or when a give-up has lifted; an alert
        of a sink that is gone is closed without a word. A rule that pages
        on firing and has a firing subject without an open alert is paged:
        the daemon died between the transition and the outbox write, or a
        sink was added.
        """
        with self._lock:
            config, now = self._config(), self._clock()
            states = {r.name: r for r in snap.rules}
            queued: list[Queued] = []
            closed: list[tuple[str, str, str]] = []
            for alert in self._outbox.open_alerts():
                rule, state = config.rules.get(alert.rule), states.get(alert.rule)
                key = (alert.sink, alert.rule, alert.subject)
                if alert.sink not in config.notify.sinks:
                    closed.append(key)
                elif rule is None or state is None or not rule.enabled or _cleared(alert.subject, state):
                    queued.append(_closing(alert, now, gone=rule is None or not rule.enabled))
                    closed.append(key)
            self._commit(queued, [], closed)
            if self._maintenance(now):
                return  # a silence: what still fires is paged once it ends
            for state in snap.rules:
                rule = config.rules.get(state.name)
                if rule is None or not _pages_on_firing(rule):
                    continue
                pages = [
                    self._page("firing", rule, subject, now, state.firing.get(subject), opens=True)
                    for subject in state.firing_subjects
                ]
                self._put(pages, rule)


def _evidence(evidence: int | None) -> dict[str, object]:
    """The page's pointer to what the runbook would have looked at (``watchdogctl show ID``)."""
    return {} if evidence is None else {"evidence": evidence, "evidence_command": f"watchdogctl show {evidence}"}


def _pages_on_firing(rule: Rule) -> bool:
    return rule.notify.when == "firing" or (rule.notify.when == "act_first" and not rule.actions)


def _cleared(subject: str, state: RuleSnapshot) -> bool:
    if subject == RULE_ITSELF:
        return state.gave_up_at is None
    return state.last_run is not None and state.up is True and subject not in state.firing_subjects


def _closing(alert: OpenAlert, now: float, *, gone: bool) -> Queued:
    """The resolve of an open alert, built from the page that opened it (its rule may be gone)."""
    opened = Notification.from_json(json.loads(alert.body))
    kind = "resumed" if alert.subject == RULE_ITSELF else "resolved"
    what = "acting again" if kind == "resumed" else f"{alert.subject} resolved"
    closing = replace(
        opened,
        key=_key(alert.rule, alert.subject, kind, now),
        kind=kind,
        summary=f"{alert.rule}: {what}" + (" (the rule was removed or disabled)" if gone else ""),
        created=now,
        ends_at=now,
        detail={},
    )
    return Queued(alert.sink, closing.key, _body(closing))


def _key(rule: str, subject: str, kind: str, ts: float) -> str:
    """Stable for one decision (same rule, subject, kind and moment), so a resend dedupes."""
    return hashlib.sha256(f"{rule}\0{subject}\0{kind}\0{ts:.6f}".encode()).hexdigest()[:32]


def _body(notification: Notification) -> str:
    # allow_nan: an outage's value is inf; the outbox is read back by Python only, and each transport
    # writes strict JSON of its own.
    return json.dumps(notification.to_json(), separators=(",", ":"), allow_nan=True, default=str)


def _summary(kind: str, rule: Rule, subject: str, value: str | None, detail: Mapping[str, object]) -> str:
    mark = "[dry-run] " if rule.dry_run else ""
    side = "above" if rule.thresholds.above is not None else "below"
    line = rule.thresholds.above if rule.thresholds.above is not None else rule.thresholds.below
    limit = "" if line is None else f" {side} {format_value(line, rule.unit)}"
    texts = {
        "firing": f"{subject} firing: {value}{limit}" if value is not None else f"{subject} firing{limit} "
        "(restored at start, not measured yet)",
        "resolved": f"{subject} resolved",
        "not_held": f"{subject}: {detail.get('action')} ran but the fix did not hold ({detail.get('reason')})",
        "repeated": f"{subject} fired {detail.get('count')} times in {_duration(detail.get('per'))}",
        "gave_up": f"gave up after {detail.get('max_actions')} actions in {_duration(detail.get('per'))}; "
        "alerting only until it stays clear or is resumed",
        "resumed": f"acting again ({detail.get('by') or 'resumed'})",
    }
    return f"{mark}{rule.name}: {texts.get(kind, kind)}"


def _duration(value: object) -> str:
    return format_duration(float(value)) if isinstance(value, int | float) else "?"
