"""Whether an action may run now: cooldown, backoff, give-up, host budget, grace, pause, dry-run.

Pure on purpose: every function takes the guard state and ``now`` and
returns new state, so the engine can persist exactly what it decided
(write-ahead, before the action runs) and tests can walk through hours of
cooldowns with plain numbers.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from watchdogd.model import Decision

__all__ = [
    "BudgetPolicy",
    "GuardPolicy",
    "Hold",
    "HostGuard",
    "Maintenance",
    "RuleGuard",
    "SubjectGuard",
    "Verdict",
    "active_hold",
    "add_holds",
    "backoff",
    "budget_open",
    "budget_remaining",
    "cooldown_until",
    "decide",
    "holds_from_dict",
    "holds_to_dict",
    "host_guard_from_dict",
    "host_guard_to_dict",
    "host_spend",
    "in_maintenance",
    "is_gave_up",
    "is_paused",
    "maintenance_from_dict",
    "maintenance_to_dict",
    "observe",
    "pause",
    "record_run",
    "resume",
    "rule_guard_from_dict",
    "rule_guard_to_dict",
    "start_maintenance",
]

_FORMAT_VERSION = 1

# 2**62 times any sane base cooldown is far past any sane cap; stopping the
# exponent there keeps a condition that has come back thousands of times
# (weeks of hourly retries) from overflowing float and crashing the engine.
_MAX_DOUBLINGS = 62


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    """A rule's guard settings, resolved from config (``dry_run`` already merges global and per rule)."""

    cooldown: float
    max_cooldown: float
    stable_for: float
    max_actions: int | None
    max_actions_per: float
    dry_run: bool


@dataclass(frozen=True, slots=True)
class BudgetPolicy:
    """Host-wide cap on real action runs, so many rules misfiring together cannot thrash the host."""

    actions: int
    per: float
    kind: str = "host"
    """Which ``engine.budget`` implementation keeps it; ``host`` (this host's own count) is the only one yet."""


@dataclass(frozen=True, slots=True)
class SubjectGuard:
    """Backoff memory for one rule+subject; exists only after the subject was acted on."""

    attempts: int = 0
    last_action: float | None = None
    cooldown_until: float = 0.0
    clear_since: float | None = None


@dataclass(frozen=True, slots=True)
class RuleGuard:
    """Everything about a rule the guard must remember across cycles and restarts."""

    subjects: Mapping[str, SubjectGuard] = field(default_factory=dict)
    action_times: tuple[float, ...] = ()
    gave_up_at: float | None = None
    paused_until: float | None = None
    clear_since: float | None = None


@dataclass(frozen=True, slots=True)
class HostGuard:
    """Real (not dry-run) action runs of all rules: the host budget's only input."""

    action_times: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class Hold:
    """A thing some rule acted on (unit X, container Y, backend Z), in cooldown for every rule.

    Rule cooldowns alone let two rules restart the same unit a second
    apart; the thing acted on is what needs the rest, whichever rule asks.
    The key it is stored under is "action kind + thing".
    """

    rule: str
    action: str
    at: float
    until: float


@dataclass(frozen=True, slots=True)
class Maintenance:
    """Host-wide maintenance mode: no rule acts until ``until`` (inf: until ``resume --all``).

    One record for the whole host, not a pause on every rule: rules added
    by a reload are covered too, a per-rule pause stays the operator's own
    business, and ending the maintenance gives every rule back exactly the
    state it had. ``by`` is who asked (uid, pid, user from SO_PEERCRED),
    ``reason`` their own words; ``since`` is when it began, kept when a
    later ``pause --all`` extends or shortens it (``changed_at``).
    """

    since: float
    until: float
    by: Mapping[str, Any] = field(default_factory=dict)
    reason: str | None = None
    changed_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision for one rule's batch of firing subjects; every candidate appears exactly once."""

    allowed: tuple[str, ...]
    skipped: tuple[tuple[str, Decision], ...]
    decision: Decision
    gave_up_now: bool
    guard: RuleGuard


# --------------------------------------------------------------------------- observe


def observe(rg: RuleGuard, breaching: Collection[str], now: float, policy: GuardPolicy) -> RuleGuard:
    """Track recovery so backoff and give-up can reset.

    Call it after every successful evaluation with the pending and firing
    subjects. Do not call it when the probe is down: a failed measurement is
    not evidence that anything recovered.
    """
    breaching = breaching if isinstance(breaching, (set, frozenset)) else frozenset(breaching)
    subjects: dict[str, SubjectGuard] = {}
    for subject, sg in rg.subjects.items():
        kept = _observe_subject(sg, subject in breaching, now, policy.stable_for)
        if kept is not None:
            subjects[subject] = kept
    clear_since, gave_up_at, action_times = _observe_rule(rg, bool(breaching), now, policy.stable_for)
    paused_until = rg.paused_until if rg.paused_until is not None and rg.paused_until > now else None
    return RuleGuard(subjects, action_times, gave_up_at, paused_until, clear_since)


def _observe_subject(sg: SubjectGuard, in_breach: bool, now: float, stable_for: float) -> SubjectGuard | None:
    """None drops the entry: stably clear and out of cooldown, there is nothing left to remember.

    Attempts are kept while the condition keeps coming back (so backoff
    grows) and reset once it stayed away for ``stable_for``, unlike Monit,
    whose failure counter never forgets.
    """
    if in_breach:
        return sg if sg.clear_since is None else replace(sg, clear_since=None)
    clear_since = now if sg.clear_since is None else sg.clear_since
    if now - clear_since < stable_for:
        return sg if sg.clear_since == clear_since else replace(sg, clear_since=clear_since)
    if sg.cooldown_until <= now:
        return None
    return replace(sg, attempts=0, clear_since=clear_since)


def _observe_rule(
    rg: RuleGuard, any_breach: bool, now: float, stable_for: float
) -> tuple[float | None, float | None, tuple[float, ...]]:
    """A given-up rule lifts by itself once the whole rule stayed clear, with a fresh action window."""
    if any_breach:
        return None, rg.gave_up_at, rg.action_times
    clear_since = now if rg.clear_since is None else rg.clear_since
    if rg.gave_up_at is not None and now - clear_since >= stable_for:
        return clear_since, None, ()
    return clear_since, rg.gave_up_at, rg.action_times


# --------------------------------------------------------------------------- decide


def decide(
    rg: RuleGuard,
    candidates: Sequence[str],
    now: float,
    policy: GuardPolicy,
    *,
    budget_closed: Decision | None,
    in_grace: bool,
    max_per_run: int,
    held: Mapping[str, Hold] | None = None,
    maintenance: bool = False,
) -> Verdict:
    """Which firing subjects to act on now, and why each other one is skipped.

    ``budget_closed`` is the budget's answer (``engine.budget``): None when
    one more run may start now, else the skip to record (the host budget is
    spent, the fleet group is full, its coordinator did not answer). The
    budget is asked, not passed, so a budget kept elsewhere (a fleet's)
    changes nothing here.

    ``held`` names the subjects whose thing is in a shared cooldown (another
    rule, or this one through another subject, acted on it): they are
    skipped as in cooldown, like the rule's own cooldown.

    Rule-wide reasons (host maintenance, pause, give-up, grace) skip the
    whole batch before any per-subject check, so the audit log names the
    reason the operator can act on; ``maintenance`` is the host's
    (``in_maintenance``), asked by the caller like the grace. Give-up and
    budget are only checked when some subject is actually out of cooldown:
    a rule that would not act anyway must not give up.
    """
    if max_per_run < 1:
        raise ValueError(f"max_per_run must be >= 1, got {max_per_run}")
    mode = Decision.DRY_RUN if policy.dry_run else Decision.RAN
    ordered = tuple(dict.fromkeys(candidates))
    blanket = _rule_gate(rg, now, in_grace, maintenance)
    if blanket is not None:
        return Verdict((), tuple((s, blanket) for s in ordered), mode, False, rg)

    held = held or {}
    reasons: dict[str, Decision] = {
        s: Decision.SKIPPED_COOLDOWN for s in ordered if _cooling(rg, s, now) or s in held
    }
    ready = [s for s in ordered if s not in reasons]
    allowed: tuple[str, ...] = ()
    gives_up = bool(ready) and _window_full(rg.action_times, policy.max_actions, policy.max_actions_per, now)
    if gives_up:
        reasons.update(dict.fromkeys(ready, Decision.GAVE_UP))
    elif ready and budget_closed is not None:
        reasons.update(dict.fromkeys(ready, budget_closed))
    else:
        allowed = tuple(ready[:max_per_run])
        reasons.update(dict.fromkeys(ready[max_per_run:], Decision.SKIPPED_MAX_PER_RUN))
    skipped = tuple((s, reasons[s]) for s in ordered if s in reasons)
    guard = replace(rg, gave_up_at=now) if gives_up else rg
    return Verdict(allowed, skipped, mode, gives_up, guard)


def _rule_gate(rg: RuleGuard, now: float, in_grace: bool, maintenance: bool = False) -> Decision | None:
    """The first rule-wide reason to skip everything, in precedence order.

    Maintenance comes first: while the whole host is in maintenance that is
    the reason nothing runs, and the operator who ends it sees the next
    reason (a pause, a give-up) recorded as it takes over.
    """
    gates = (
        (maintenance, Decision.SKIPPED_MAINTENANCE),
        (is_paused(rg, now), Decision.SKIPPED_PAUSED),
        (is_gave_up(rg), Decision.SKIPPED_GAVE_UP),
        (in_grace, Decision.SKIPPED_GRACE),
    )
    return next((decision for applies, decision in gates if applies), None)


def _cooling(rg: RuleGuard, subject: str, now: float) -> bool:
    sg = rg.subjects.get(subject)
    return sg is not None and sg.cooldown_until > now


def _in_window(times: Sequence[float], per: float, now: float) -> tuple[float, ...]:
    """Times in ``(now - per, now]``.

    A time after ``now`` (the wall clock stepped back) still counts as recent:
    when in doubt the guard errs towards fewer actions.
    """
    start = now - per
    return tuple(t for t in times if t > start)


def _window_full(times: Sequence[float], limit: int | None, per: float, now: float) -> bool:
    return limit is not None and len(_in_window(times, per, now)) >= limit


# --------------------------------------------------------------------------- record


def record_run(rg: RuleGuard, acted: Sequence[str], now: float, policy: GuardPolicy) -> RuleGuard:
    """Book a run before it executes (write-ahead: a kill -9 mid-action never repeats it in cooldown).

    Dry-run goes through the same rule bookkeeping on purpose, so its audit
    log shows the cadence the real thing would have (the budget, booked
    apart by ``host_spend``, is spared: nothing was done to the host). An
    empty ``acted`` is not a run and changes nothing.
    """
    if not acted:
        return rg
    subjects = dict(rg.subjects)
    for subject in dict.fromkeys(acted):
        subjects[subject] = _acted_on(subjects.get(subject), now, policy)
    action_times = _in_window((*rg.action_times, now), policy.max_actions_per, now)
    return replace(rg, subjects=subjects, action_times=action_times)


def host_spend(hg: HostGuard, now: float, budget: BudgetPolicy) -> HostGuard:
    """One real run booked against the host budget; runs that left the window are forgotten."""
    return HostGuard(_in_window((*hg.action_times, now), budget.per, now))


def budget_open(hg: HostGuard, budget: BudgetPolicy, now: float) -> bool:
    return not _window_full(hg.action_times, budget.actions, budget.per, now)


def _acted_on(sg: SubjectGuard | None, now: float, policy: GuardPolicy) -> SubjectGuard:
    attempts = (0 if sg is None else sg.attempts) + 1
    return SubjectGuard(
        attempts=attempts,
        last_action=now,
        cooldown_until=now + backoff(policy.cooldown, policy.max_cooldown, attempts),
        clear_since=None,
    )


def backoff(cooldown: float, max_cooldown: float, attempts: int) -> float:
    """Cooldown after the ``attempts``-th action: doubles each time the condition comes back, capped."""
    doublings = min(max(attempts - 1, 0), _MAX_DOUBLINGS)
    return min(cooldown * 2.0**doublings, max_cooldown)


# --------------------------------------------------------------------------- shared cooldowns


def active_hold(holds: Mapping[str, Hold], keys: Iterable[str], now: float) -> Hold | None:
    """The hold on any of ``keys`` that ends last, if one is still ahead of ``now``."""
    live = [hold for key in keys if (hold := holds.get(key)) is not None and hold.until > now]
    return max(live, key=lambda hold: hold.until, default=None)


def add_holds(holds: Mapping[str, Hold], new: Mapping[str, Hold], now: float) -> dict[str, Hold]:
    """Book new holds and forget expired ones; a longer hold already in place is kept."""
    merged = {key: hold for key, hold in holds.items() if hold.until > now}
    for key, hold in new.items():
        current = merged.get(key)
        if current is None or current.until < hold.until:
            merged[key] = hold
    return merged


# --------------------------------------------------------------------------- operator


def pause(rg: RuleGuard, until: float) -> RuleGuard:
    """``until=float('inf')`` pauses with no expiry."""
    return replace(rg, paused_until=until)


def resume(rg: RuleGuard, *, reset: bool = False) -> RuleGuard:
    """An operator resume lifts the pause, and nothing else unless ``reset`` is asked for.

    A pause is not a reason to forget what the rule did: a rule with
    ``max_actions: {count: 3, per: 1h}`` paused and resumed within the hour
    still has only what is left of its 3. A given-up rule stays given up
    (it lifts by itself after ``stable_for`` clear). ``reset`` (``watchdogctl
    resume --reset``) also lifts the give-up and forgets the action window;
    otherwise the very next cycle would count the same runs and give up
    again. Per-subject attempts stay either way: backoff still protects
    each subject.
    """
    if reset:
        return replace(rg, paused_until=None, gave_up_at=None, action_times=())
    return replace(rg, paused_until=None)


def start_maintenance(
    current: Maintenance | None,
    now: float,
    until: float,
    *,
    by: Mapping[str, Any] | None = None,
    reason: str | None = None,
) -> Maintenance:
    """``pause --all``: a new maintenance, or the running one with a new end, asker and reason.

    A second ``pause --all`` replaces the end (longer or shorter: the last
    word is the operator's) but keeps ``since``, so status and history say
    how long the host has really been hands-off.
    """
    since = current.since if current is not None and in_maintenance(current, now) else now
    return Maintenance(since=since, until=until, by=dict(by or {}), reason=reason, changed_at=now)


def in_maintenance(m: Maintenance | None, now: float) -> bool:
    """Checks the expiry itself, so maintenance ends on time even before anyone records its end.

    A ``since`` after ``now`` (the wall clock stepped back) still counts:
    when in doubt the guard errs towards fewer actions.
    """
    return m is not None and m.until > now


# --------------------------------------------------------------------------- read helpers


def cooldown_until(rg: RuleGuard, now: float) -> float | None:
    """The latest cooldown end still ahead of ``now``, for status output; None if nothing is cooling."""
    if not rg.subjects:
        return None
    ends = [sg.cooldown_until for sg in rg.subjects.values() if sg.cooldown_until > now]
    return max(ends, default=None)


def budget_remaining(hg: HostGuard, budget: BudgetPolicy, now: float) -> int:
    """Real runs the host may still make in the current window."""
    return max(budget.actions - len(_in_window(hg.action_times, budget.per, now)), 0)


def is_gave_up(rg: RuleGuard) -> bool:
    return rg.gave_up_at is not None


def is_paused(rg: RuleGuard, now: float) -> bool:
    """Checks the expiry itself, so a pause ends on time even before ``observe`` tidies it away."""
    return rg.paused_until is not None and rg.paused_until > now


# --------------------------------------------------------------------------- persistence
#
# The store keeps opaque JSON. JSON has no infinity (and strict encoders
# reject it), yet a pause forever is paused_until=inf, so non-finite floats
# travel as the strings "inf", "-inf" and "nan". Every key is optional on
# the way in, so state written by an older version still loads.


def _enc(x: float | None) -> float | str | None:
    if x is None or math.isfinite(x):
        return x
    return str(x)


def _dec(x: Any) -> float | None:
    return None if x is None else float(x)


def _dec_times(raw: Any) -> tuple[float, ...]:
    return tuple(float(t) for t in raw or ())


def _subject_to_dict(sg: SubjectGuard) -> dict[str, Any]:
    return {
        "attempts": sg.attempts,
        "last_action": _enc(sg.last_action),
        "cooldown_until": _enc(sg.cooldown_until),
        "clear_since": _enc(sg.clear_since),
    }


def _subject_from_dict(d: Mapping[str, Any]) -> SubjectGuard:
    return SubjectGuard(
        attempts=int(d.get("attempts", 0)),
        last_action=_dec(d.get("last_action")),
        cooldown_until=_dec(d.get("cooldown_until")) or 0.0,
        clear_since=_dec(d.get("clear_since")),
    )


def rule_guard_to_dict(rg: RuleGuard) -> dict[str, Any]:
    return {
        "version": _FORMAT_VERSION,
        "subjects": {s: _subject_to_dict(sg) for s, sg in rg.subjects.items()},
        "action_times": [_enc(t) for t in rg.action_times],
        "gave_up_at": _enc(rg.gave_up_at),
        "paused_until": _enc(rg.paused_until),
        "clear_since": _enc(rg.clear_since),
    }


def rule_guard_from_dict(d: Mapping[str, Any]) -> RuleGuard:
    return RuleGuard(
        subjects={s: _subject_from_dict(sd) for s, sd in (d.get("subjects") or {}).items()},
        action_times=_dec_times(d.get("action_times")),
        gave_up_at=_dec(d.get("gave_up_at")),
        paused_until=_dec(d.get("paused_until")),
        clear_since=_dec(d.get("clear_since")),
    )


def host_guard_to_dict(hg: HostGuard) -> dict[str, Any]:
    return {"version": _FORMAT_VERSION, "action_times": [_enc(t) for t in hg.action_times]}


def host_guard_from_dict(d: Mapping[str, Any]) -> HostGuard:
    return HostGuard(action_times=_dec_times(d.get("action_times")))


def maintenance_to_dict(m: Maintenance | None) -> dict[str, Any]:
    """``None`` (not in maintenance) is stored too, as ``{"version": 1}``: the last word on disk wins."""
    if m is None:
        return {"version": _FORMAT_VERSION}
    return {
        "version": _FORMAT_VERSION,
        "maintenance": {
            "since": _enc(m.since),
            "until": _enc(m.until),
            "by": dict(m.by),
            "reason": m.reason,
            "changed_at": _enc(m.changed_at),
        },
    }


def maintenance_from_dict(d: Mapping[str, Any] | None) -> Maintenance | None:
    body = (d or {}).get("maintenance")
    if not isinstance(body, Mapping):
        return None
    by = body.get("by")
    reason = body.get("reason")
    return Maintenance(
        since=_dec(body.get("since")) or 0.0,
        until=_dec(body.get("until")) or 0.0,
        by=dict(by) if isinstance(by, Mapping) else {},
        reason=reason if isinstance(reason, str) else None,
        changed_at=_dec(body.get("changed_at")) or 0.0,
    )


def holds_to_dict(holds: Mapping[str, Hold]) -> dict[str, Any]:
    return {
        "version": _FORMAT_VERSION,
        "holds": {
            key: {"rule": h.rule, "action": h.action, "at": _enc(h.at), "until": _enc(h.until)}
            for key, h in holds.items()
        },
    }


def holds_from_dict(d: Mapping[str, Any]) -> dict[str, Hold]:
    return {
        str(key): Hold(
            rule=str(body.get("rule", "")),
            action=str(body.get("action", "")),
            at=_dec(body.get("at")) or 0.0,
            until=_dec(body.get("until")) or 0.0,
        )
        for key, body in (d.get("holds") or {}).items()
    }
