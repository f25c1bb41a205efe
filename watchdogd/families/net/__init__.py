"""Endpoints over TCP, HTTP and TLS: up, latency, status, certificate expiry."""

from watchdogd.contracts import Family
from watchdogd.families.net import probes

FAMILY = Family("net", probes=probes.PROBES)
