"""Probes: one module per family. Each measures one thing and returns readings per subject."""
