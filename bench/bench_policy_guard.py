"""CPU cost of one engine cycle of policy + guard over 10,000 subjects.

The daemon must stay cheap on the host it protects; this measures only the
pure decision code (readings are built before the clock starts), so a
regression here is ours and not a probe's.

Run: python bench/bench_policy_guard.py
"""

from __future__ import annotations

import random
import time

from watchdogd.core.guard import (
    BudgetPolicy,
    GuardPolicy,
    HostGuard,
    RuleGuard,
    budget_open,
    decide,
    host_spend,
    observe,
    record_run,
)
from watchdogd.core.policy import Thresholds, evaluate
from watchdogd.model import Decision, Reading, SubjectState

RULES = 100
SUBJECTS = 100
CYCLES = 50
INTERVAL = 15.0
TARGET_MS = 50.0

THRESHOLDS = Thresholds(above=90.0, clear_above=85.0, for_=30.0)
POLICY = GuardPolicy(
    cooldown=60.0,
    max_cooldown=3600.0,
    stable_for=300.0,
    max_actions=10,
    max_actions_per=3600.0,
    dry_run=False,
)
BUDGET = BudgetPolicy(actions=1_000_000, per=3600.0)


def make_readings(rng: random.Random) -> list[list[Reading]]:
    """About 10% of subjects breach in any cycle, and which ones drifts, so every state path is exercised."""
    return [
        [Reading(f"r{r}-s{s}", rng.uniform(80.0, 91.0), {"pid": s}) for s in range(SUBJECTS)]
        for r in range(RULES)
    ]


def main() -> None:
    rng = random.Random(42)
    cycles = [make_readings(rng) for _ in range(CYCLES)]
    states: list[dict[str, SubjectState]] = [{} for _ in range(RULES)]
    guards = [RuleGuard() for _ in range(RULES)]
    host = HostGuard()
    now = 1_700_000_000.0
    runs = 0
    cpu = 0.0
    for readings in cycles:
        now += INTERVAL
        start = time.process_time()
        for i in range(RULES):
            ev = evaluate(states[i], readings[i], THRESHOLDS, now)
            states[i] = ev.states
            breaching = [r.subject for r in ev.firing] + [r.subject for r in ev.pending]
            guards[i] = observe(guards[i], breaching, now, POLICY)
            verdict = decide(
                guards[i],
                [r.subject for r in ev.firing],
                now,
                POLICY,
                budget_closed=None if budget_open(host, BUDGET, now) else Decision.SKIPPED_BUDGET,
                in_grace=False,
                max_per_run=10,
            )
            guards[i] = verdict.guard
            if verdict.allowed:
                guards[i] = record_run(guards[i], verdict.allowed, now, POLICY)
                host = host_spend(host, now, BUDGET)
                runs += 1
        cpu += time.process_time() - start
    per_cycle_ms = cpu / CYCLES * 1000.0
    print(f"({CYCLES} cycles, {runs} action runs recorded)")
    print(
        f"policy+guard: {RULES * SUBJECTS} subject evaluations per cycle: "
        f"{per_cycle_ms:.1f} ms CPU (target <= {TARGET_MS:.0f} ms)"
    )


if __name__ == "__main__":
    main()
