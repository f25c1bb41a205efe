"""Files under a path: clean old ones, bounded and refusing the trees the host needs."""

from watchdogd.contracts import Family
from watchdogd.families.files import actions

FAMILY = Family("files", actions=actions.ACTIONS)
