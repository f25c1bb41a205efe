"""An operator's own command, as an argv list, never a shell."""

from watchdogd.contracts import Family
from watchdogd.families.exec import actions

FAMILY = Family("exec", actions=actions.ACTIONS)
