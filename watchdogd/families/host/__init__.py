"""The host itself: CPU, memory, swap, load, disks, inodes, directory sizes, file ages."""

from watchdogd.contracts import Family
from watchdogd.families.host import probes

FAMILY = Family("host", probes=probes.PROBES)
