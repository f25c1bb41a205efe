"""Per-subject ok -> pending -> firing state machine, and a rule's overall status.

Pure: the caller passes the previous states, the new readings and ``now``;
nothing here reads a clock, sleeps or keeps state between calls, so every
edge (the exact ``for`` boundary, a value hovering at the line) is testable
with plain numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from watchdogd.model import Reading, RuleStatus, Status, SubjectState, Transition

__all__ = ["Evaluation", "Thresholds", "breaches", "evaluate", "rule_status"]

_OK, _PENDING, _FIRING = Status.OK, Status.PENDING, Status.FIRING
"""For the lines run per subject per run: on Python 3.11 ``Status.FIRING`` goes through ``EnumType.__getattr__``
(165 ns a time; a module global costs 10)."""


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a subject breaches.

    The clear levels exist so a value hovering at the line does not flap:
    once firing, a subject keeps firing until it is back past the clear level,
    which the config sets on the safe side of the trigger (``clear_above`` <=
    ``above``). Unset clear levels mean "no hysteresis".
    """

    above: float | None = None
    below: float | None = None
    clear_above: float | None = None
    clear_below: float | None = None
    for_: float = 0.0
    hold: float = 0.0
    """A firing subject stays firing at least this long, even once its value is back or it is gone.

    For event-like probes (a slow-log entry, a restart, an OOM kill) whose value is in breach for
    one interval only: a scrape every 15 s or a notification batching for 30 s would miss it. Held
    subjects are in ``Evaluation.held``, not ``firing``: actions run on what is measured now.
    """
    for_slack: float = 0.0
    """How much short of ``for`` still counts as met, once a later sample confirms the breach.

    Samples are an interval apart give or take the probe's duration and
    the start jitter, so with ``for`` a whole number of intervals the
    elapsed time lands just under it about half the time, and the subject
    would fire one interval late. The config sets a quarter interval.
    """


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Everything one evaluation produced, so the engine never recomputes it.

    ``states`` holds only subjects measured this time: a vanished pid or
    container must not linger as firing forever.
    """

    states: dict[str, SubjectState]
    transitions: tuple[Transition, ...]
    firing: tuple[Reading, ...]
    pending: tuple[Reading, ...]
    held: tuple[str, ...] = ()
    """Subjects in trouble whose state was held this time: a ``no_data`` reading, or ``hold`` keeping a
    cleared or vanished subject firing. Still in trouble for the guard (stable_for), not acted on."""


@dataclass(frozen=True, slots=True)
class _Limits:
    """The four comparisons with the clear-level defaults already resolved.

    Resolved once per evaluation rather than once per subject: ``evaluate``
    runs over thousands of subjects every cycle.
    """

    trigger_above: float | None
    trigger_below: float | None
    hold_above: float | None
    hold_below: float | None

    @classmethod
    def of(cls, th: Thresholds) -> _Limits:
        return cls(
            trigger_above=th.above,
            trigger_below=th.below,
            hold_above=_unless_unset(th.above, th.clear_above),
            hold_below=_unless_unset(th.below, th.clear_below),
        )

    def breaches(self, value: float, firing: bool) -> bool:
        # NaN compares False with everything, so it never breaches; +inf is
        # greater than any finite ``above``, so it does.
        if firing:
            above, below = self.hold_above, self.hold_below
        else:
            above, below = self.trigger_above, self.trigger_below
        return (above is not None and value > above) or (below is not None and value < below)


def _unless_unset(trigger: float | None, clear: float | None) -> float | None:
    """The level a firing subject must cross to clear: a clear level only matters for a set side."""
    if trigger is None:
        return None
    return trigger if clear is None else clear


def breaches(value: float, th: Thresholds, firing: bool) -> bool:
    """Whether ``value`` is in breach; ``firing`` selects the (hysteresis) clear levels."""
    return _Limits.of(th).breaches(value, firing)


def _next_state(prev: SubjectState, in_breach: bool, value: float, now: float, th: Thresholds) -> SubjectState:
    """One subject's step. Only a pending subject needs the clock, to see whether ``for`` has passed."""
    if not in_breach:
        if prev.status is _FIRING and now - prev.since < th.hold:
            return SubjectState(_FIRING, prev.since, value, now)
        status = _OK
    elif prev.status is _FIRING:
        status = _FIRING
    else:
        # A new breach is pending from now. ``min`` re-anchors a ``since`` in
        # the future (wall clock stepped back) so it cannot stall firing by
        # the size of the step; at worst the ``for`` period restarts.
        pending_since = min(prev.since, now) if prev.status is _PENDING else now
        elapsed = now - pending_since
        # A first breaching sample never fires a rule with a ``for``, however large the slack.
        if th.for_ > 0 and (elapsed <= 0 or elapsed < th.for_ - th.for_slack):
            return SubjectState(_PENDING, pending_since, value, now)
        status = _FIRING
    since = prev.since if status is prev.status else now
    return SubjectState(status, since, value, now)


def evaluate(
    prev: Mapping[str, SubjectState],
    readings: Sequence[Reading],
    th: Thresholds,
    now: float,
) -> Evaluation:
    """Advance every subject one step and report what changed.

    A subject seen twice in ``readings`` is evaluated once, with its last
    reading: a probe should not do that, and one state per subject is the
    invariant the rest of the engine relies on. A ``no_data`` reading keeps
    the subject's state exactly as it was (its ``for`` timer runs on).
    """
    limits = _Limits.of(th)
    latest = {r.subject: r for r in readings}
    states: dict[str, SubjectState] = {}
    transitions: list[Transition] = []
    firing: list[Reading] = []
    pending: list[Reading] = []
    held: list[str] = []
    for subject, reading in latest.items():
        old = prev.get(subject)
        if reading.no_data:
            if old is not None:
                states[subject] = old
                if old.status is not _OK:
                    held.append(subject)
            continue
        if old is None:
            old = SubjectState(_OK, now)
        value = reading.value
        in_breach = limits.breaches(value, old.status is _FIRING)
        new = _next_state(old, in_breach, value, now, th)
        states[subject] = new
        if new.status is not old.status:
            transitions.append(Transition(subject, old.status, new.status, value))
        # Identity tests, not a dict keyed by Status: Enum.__hash__ is Python
        # code, and this line runs for every subject of every rule every cycle.
        if new.status is _FIRING:
            if in_breach:
                firing.append(reading)
            else:
                held.append(subject)  # back, but inside ``hold``
        elif new.status is _PENDING:
            pending.append(reading)
    for subject, state in prev.items():
        if subject in latest or state.status is _OK:
            continue
        if state.status is _FIRING and now - state.since < th.hold:
            states[subject] = state  # gone, but inside ``hold``
            held.append(subject)
        else:
            # A subject that is gone (pid exited, container removed) has recovered as far as we can tell.
            transitions.append(Transition(subject, state.status, _OK, None))
    return Evaluation(states, tuple(transitions), tuple(firing), tuple(pending), tuple(held))


def rule_status(
    states: Mapping[str, SubjectState],
    *,
    enabled: bool,
    up: bool,
    paused: bool,
    gave_up: bool,
    waiting: bool = False,
    absent: bool = False,
) -> RuleStatus:
    """One word for `watchdogctl status`: operator intent first, then health of the probe, then subjects.

    The order matters: a paused rule whose probe is down shows "paused",
    because that is the thing the operator has to undo; a rule waiting on
    an outage shows "waiting", because the outage is what to look at.
    """
    return status_of(states, (not enabled, paused, absent, waiting, gave_up, not up))


OperatorFlags = tuple[bool, bool, bool, bool, bool, bool]
"""``rule_status``'s flags in ``OPERATOR_PRECEDENCE`` order: not enabled, paused, absent, waiting, gave up, not up."""


def status_of(states: Mapping[str, SubjectState], flags: OperatorFlags) -> RuleStatus:
    """``rule_status`` with its flags as a tuple, as a rule's runtime has them."""
    status = operator_status(flags)
    if status is not None:
        return status
    present = {state.status for state in states.values()}
    return subjects_status(firing=Status.FIRING in present, pending=Status.PENDING in present)


def operator_status(flags: OperatorFlags) -> RuleStatus | None:
    """``rule_status``'s word when one of its flags applies, None when the subjects decide."""
    if True not in flags:  # most rules, most of the time: one C-level scan instead of six Python steps
        return None
    for applies, status in zip(flags, OPERATOR_PRECEDENCE, strict=True):
        if applies:
            return status
    return None


def subjects_status(*, firing: bool, pending: bool) -> RuleStatus:
    """``rule_status``'s word when no flag applies: for a view that walked its subjects already."""
    return SUBJECTS_WORDS[firing][pending]


SUBJECTS_WORDS = ((RuleStatus.OK, RuleStatus.PENDING), (RuleStatus.FIRING, RuleStatus.FIRING))
"""``subjects_status`` by [firing][pending]: firing wins over pending."""


OPERATOR_PRECEDENCE = (
    RuleStatus.DISABLED, RuleStatus.PAUSED, RuleStatus.ABSENT, RuleStatus.WAITING, RuleStatus.GAVE_UP, RuleStatus.DOWN,
)
"""``rule_status``'s words before the subjects', in the order of its flags (each view asks, 1,000 per scrape)."""
