"""Redis: availability, memory, clients, hit ratio, evictions, slow log, queues, replication.

Actions: kill clients, delete keys.
"""

from watchdogd.contracts import Family
from watchdogd.families.redis import actions, probes, target

FAMILY = Family("redis", probes=probes.PROBES, actions=actions.ACTIONS, targets={"redis": target.TARGET})
