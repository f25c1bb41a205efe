"""Evidence: what the runbook would look at first, taken when a rule starts firing and before it acts.

By 3 a.m. the state that made a rule fire is gone; the person paged needs
what the runbook's "quick diagnosis" would have shown at that moment. A
probe that can say (``contracts.Describes``) is asked once per transition
to firing and once before its rule's actions run, in a worker thread, for
at most ``evidence.timeout`` (then it is abandoned like a hung probe); what
it returns is cut to ``evidence.max_bytes`` and stored with the moment in
the state database, pruned with the history. ``watchdogctl show ID``
prints it; pages and audit rows carry its id.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from watchdogd.configtypes import EvidenceSettings
from watchdogd.contracts import Describes, EvidenceLimits
from watchdogd.engine.probepool import ProbePool
from watchdogd.engine.runtime import RuleRuntime
from watchdogd.engine.state import StateStore
from watchdogd.model import Clock, Reading


@dataclass(frozen=True, slots=True)
class Evidence:
    id: int
    ts: float
    rule: str
    reason: str  # firing, before action
    subjects: tuple[str, ...]
    sections: dict[str, Any]
    bytes: int
    duration: float
    error: str | None
    cut: tuple[str, ...]  # sections dropped to keep within max_bytes


@dataclass(frozen=True, slots=True)
class Taken:
    """Evidence as it is written: the sections' JSON already cut to size."""

    ts: float
    rule: str
    reason: str
    subjects: tuple[str, ...]
    body: str
    duration: float
    error: str | None


class EvidenceStore:
    def __init__(self, store: StateStore) -> None:
        self._store = store

    def add(self, taken: Taken) -> int:
        t = taken
        with self._store.transaction("evidence add") as conn:
            rowid = conn.execute(
                "INSERT INTO evidence (ts, rule, reason, subjects, body, bytes, duration, error)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (t.ts, t.rule, t.reason, json.dumps(list(t.subjects)), t.body, len(t.body.encode()), t.duration,
                 t.error),
            ).lastrowid
        assert rowid is not None
        return rowid

    def get(self, evidence_id: int) -> Evidence | None:
        with self._store.transaction("evidence get", write=False) as conn:
            row = conn.execute(
                "SELECT id, ts, rule, reason, subjects, body, bytes, duration, error FROM evidence WHERE id = ?",
                (evidence_id,),
            ).fetchone()
        if row is None:
            return None
        body = json.loads(row["body"])
        return Evidence(
            id=row["id"],
            ts=row["ts"],
            rule=row["rule"],
            reason=row["reason"],
            subjects=tuple(json.loads(row["subjects"])),
            sections=body.get("sections", {}),
            bytes=row["bytes"],
            duration=row["duration"],
            error=row["error"],
            cut=tuple(body.get("cut", ())),
        )

    def prune(self, older_than: float) -> int:
        with self._store.transaction("evidence prune") as conn:
            return conn.execute("DELETE FROM evidence WHERE ts < ?", (older_than,)).rowcount


class EvidenceTaker:
    """Runs a probe's ``describe`` under the deadline and stores what came back (or why nothing did)."""

    def __init__(self, store: EvidenceStore, pool: ProbePool, clock: Clock, settings: EvidenceSettings) -> None:
        self.store = store
        self._pool = pool
        self._clock = clock
        self.settings = settings  # replaced by a reload

    def take(self, rt: RuleRuntime, readings: Sequence[Reading], reason: str) -> int | None:
        """The stored evidence's id; None when the probe cannot describe (or nothing is concerned)."""
        probe = rt.probe
        if not readings or not isinstance(probe, Describes):
            return None
        settings = self.settings
        started = time.monotonic()
        limits = EvidenceLimits(
            deadline=started + settings.timeout, max_bytes=settings.max_bytes, show_queries=settings.show_queries
        )
        subjects = tuple(reading.subject for reading in readings)
        future = self._pool.submit(lambda: probe.describe(readings, limits))
        sections: dict[str, Any] = {}
        error: str | None = None
        try:
            sections = future.result(timeout=settings.timeout)
        except FutureTimeout:
            self._pool.abandon(future)
            error = f"timed out after {settings.timeout:g}s"
        except Exception as exc:  # a describe that fails leaves its error as the evidence, never a crash
            error = " ".join(str(exc).split())[:500] or type(exc).__name__
        if not isinstance(sections, dict):
            sections, error = {}, f"describe returned {type(sections).__name__}, not sections"
        body = _bounded(sections, settings.max_bytes)
        return self.store.add(
            Taken(self._clock(), rt.rule.name, reason, subjects, body, time.monotonic() - started, error)
        )


def _bounded(sections: dict[str, Any], max_bytes: int) -> str:
    """The JSON of the sections within ``max_bytes``: the largest sections are dropped first, and named."""
    encoded = {name: json.dumps(value, default=str, allow_nan=True) for name, value in sections.items()}
    kept = dict(encoded)
    cut: list[str] = []
    while kept and sum(len(text) + len(name) + 6 for name, text in kept.items()) > max_bytes:
        largest = max(kept, key=lambda name: len(kept[name]))
        cut.append(largest)
        del kept[largest]
    return json.dumps(
        {"sections": {name: json.loads(text) for name, text in kept.items()}, "cut": cut},
        default=str,
        allow_nan=True,
        separators=(",", ":"),
    )
