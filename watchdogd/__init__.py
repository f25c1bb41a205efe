"""watchdogd: a host-resident, self-healing watchdog daemon."""

__version__ = "0.1.0"
