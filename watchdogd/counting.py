"""One way to count rules, for every place that tells an operator how many are in which state.

``watchdogctl status``, ``check``, ``watchdogd --once``, ``/healthz`` and
systemd's ``STATUS=`` used to count in their own words (one said "25 rules",
another "28 rules" for the same file). They all print ``count_line`` now:
every configured rule once, in the one state ``status`` shows for it, with
the state's own name. Stdlib only: ``watchdogctl`` imports it on its fast path.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

ORDER = ("firing", "pending", "gave_up", "down", "waiting", "absent", "paused", "ok", "disabled")
"""What needs a look first; a state not listed here (a newer daemon) goes last, as it is."""


def tally(states: Iterable[str]) -> dict[str, int]:
    return dict(Counter(states))


def count_line(counts: Mapping[str, int]) -> str:
    """``28 rules: 2 firing, 1 down, 2 absent, 20 ok, 3 disabled`` (states with no rule left out)."""
    total = sum(counts.values())
    known = [state for state in ORDER if counts.get(state)]
    extra = sorted(state for state in counts if state not in ORDER and counts[state])
    parts = [f"{counts[state]} {state.replace('_', ' ')}" for state in (*known, *extra)]
    return f"{total} rule{'s' * (total != 1)}: {', '.join(parts) or 'none'}"
