"""Log files and the journal: lines matching a pattern, counted over a window."""

from watchdogd.contracts import Family
from watchdogd.families.logs import probes

FAMILY = Family("logs", probes=probes.PROBES)
