"""Pure decision logic: thresholds over time (policy) and whether an action may run (guard).

No I/O and no clock of their own: every input is an argument, so they are tested without sleeping.
"""
