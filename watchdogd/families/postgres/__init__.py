"""PostgreSQL: availability, connections, idle and long sessions, blocking, replication, dead tuples.

Actions: terminate and cancel backends, vacuum tables.
"""

from watchdogd.contracts import Family
from watchdogd.families.postgres import actions, probes, target

FAMILY = Family("postgres", probes=probes.PROBES, actions=actions.ACTIONS, targets={"postgres": target.TARGET})
