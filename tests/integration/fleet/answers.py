"""Small checks both coordinators' tests use on an acquire's answer."""

from __future__ import annotations

import time

from watchdogd.fleet.coordinator import Denial, Grant


def within(seconds: float = 2.0) -> float:
    """A deadline ``seconds`` from now (coordinators take monotonic deadlines)."""
    return time.monotonic() + seconds


def grant_of(answer: Grant | Denial | None) -> Grant:
    assert isinstance(answer, Grant), answer
    return answer


def denial_of(answer: Grant | Denial | None, reason: str) -> Denial:
    """The answer is a denial for ``reason``, with a one-line detail (it goes into an audit row)."""
    assert isinstance(answer, Denial), answer
    assert answer.reason == reason, answer
    assert "\n" not in answer.detail
    return answer
