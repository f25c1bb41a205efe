"""One package per family of things watched: its target, probes, actions and helpers.

A family imports ``watchdogd.contracts`` and the shared leaf helpers (units, logs, secrets, hazards), never the
engine, the config or another family (checked by import-linter in CI).
"""
