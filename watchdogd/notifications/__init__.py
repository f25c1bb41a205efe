"""Telling people: which transitions page whom (per rule), a durable outbox, and the transports."""
