"""Rules that measure the same thing on the same beat share one probe and one measure per cycle (issue 17).

Operators write several rules over one measurement: "disk above 90 %: prune
Docker", "above 95 %: delete old files", a warning and a page on the same
queue. Each rule ran its own probe: the same ``statvfs``, the same Redis
pipeline, the same glob, twice or more per cycle. Rules with the same probe,
target, parameters and schedule bucket (interval and jitter: they run in the
same tick) now hold one ``SharedProbe``: the first run of the cycle
measures, the others get its readings (inline, without a probe thread).

One probe *instance*, not only one reading, because probes keep memory
between runs (rate baselines, log offsets, the last run's files for the
evidence): a group behaves exactly like one rule's probe, run once a cycle.
A group of one is the bare probe: nothing changes for a rule that measures
alone. Each rule keeps its own timeout, hung-probe record, state and
thresholds; a failed or hung measure is every member's (``SharedRead``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from watchdogd import inline
from watchdogd.configtypes import Rule
from watchdogd.contracts import Probe
from watchdogd.model import Reading
from watchdogd.sharedread import MAX_AGE, SharedRead


class SharedProbe:
    """A probe measured once per cycle for every rule of its group; the rest of the probe is delegated.

    ``describe``, ``outage_subjects`` and any other attribute are the probe's
    own (``__getattr__``), so the engine's protocol checks see the probe.
    """

    inline = True
    """Always tried on the rule's thread: a fresh measure is handed out from memory, and a probe that is
    itself inline may even measure there (``SharedRead``'s ``inline_reads``)."""

    def __init__(self, probe: Probe, max_age: float) -> None:
        self.probe = probe
        self._measure = SharedRead(
            self._readings, max_age=max_age, inline_reads=bool(getattr(probe, inline.INLINE_ATTRIBUTE, False))
        )

    def measure(self) -> list[Reading]:
        return list(self._measure.get())  # each rule its own list; the readings are frozen

    @property
    def measures(self) -> int:
        """Measures actually made (tests: one per cycle, whatever the group's size)."""
        return self._measure.reads

    def _readings(self) -> tuple[Reading, ...]:
        return tuple(self.probe.measure())

    def __getattr__(self, name: str) -> Any:
        if name == "probe":  # not set yet (a copy, or __init__ failed): no recursion through ourselves
            raise AttributeError(name)
        return getattr(self.probe, name)


def group_key(rule: Rule) -> Hashable | None:
    """What makes two rules' measurements the same; None: this rule measures alone.

    Parameters by identity: a config load already hands rules that say the
    same one params object (``config`` ``share``: frozen, equal by repr and
    by ``==``, so two secrets never merge), and a load keeps every params
    object alive, so an identity is never reused within one config.
    """
    if not rule.enabled:
        return None
    return (rule.probe, rule.target, rule.every, rule.jitter, id(rule.params))


class ProbeGroups:
    """The groups of the config being installed, planned again at each load.

    A reload builds the groups anew: the probe a group wraps is its first
    member's kept probe (``build_runtime`` unwraps it), so a group keeps its
    memory across reloads without this holding anything from one load to
    the next (an identity from an old load could be a new object's).
    """

    def __init__(self) -> None:
        self._sizes: Counter[Hashable] = Counter()
        self._probes: dict[Hashable, SharedProbe] = {}

    def plan(self, rules: Iterable[Rule]) -> None:
        """Count each group's members in the config about to be installed."""
        self._sizes = Counter(key for key in map(group_key, rules) if key is not None)
        self._probes = {}

    def probe_for(self, rule: Rule, make: Callable[[], Probe]) -> Probe:
        """The group's shared probe (``make`` builds the probe it wraps, once), or ``make()`` for a rule alone."""
        key = group_key(rule)
        if key is None or self._sizes[key] < 2:
            return make()
        shared = self._probes.get(key)
        if shared is None:
            shared = self._probes[key] = SharedProbe(make(), min(MAX_AGE, rule.every / 2))
        return shared
