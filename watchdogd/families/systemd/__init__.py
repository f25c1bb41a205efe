"""systemd units: state and restarts; restart or reload them; vacuum the journal."""

from watchdogd.contracts import Family
from watchdogd.families.systemd import actions, journal, probes

FAMILY = Family("systemd", probes=probes.PROBES, actions={**actions.ACTIONS, **journal.ACTIONS})
