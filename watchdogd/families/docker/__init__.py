"""Docker: the engine, containers and their CPU and memory, disk use; restart and start containers, prune."""

from watchdogd.contracts import Family
from watchdogd.families.docker import actions, probes, target

FAMILY = Family("docker", probes=probes.PROBES, actions=actions.ACTIONS, targets={"docker": target.TARGET})
