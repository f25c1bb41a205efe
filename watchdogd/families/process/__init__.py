"""Processes matched by name, user, cmdline or pidfile: count, age, CPU, RSS and its growth, fds; signal them."""

from watchdogd.contracts import Family
from watchdogd.families.process import actions, probes

FAMILY = Family("process", probes=probes.PROBES, actions=actions.ACTIONS)
