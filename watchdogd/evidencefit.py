"""Evidence within its byte budget, keeping every section rather than the engine dropping the largest.

Two shapes: ``fit`` halves the longest list (rows sorted worst first, so
the worst stay: PostgreSQL sessions, Redis keys); ``fit_lines`` drops the
oldest log or journal lines first, then rows (Docker, systemd). A leaf
helper so that families, which share no code with each other, bound their
evidence the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

FIT_SLACK = 128
"""Bytes ``fit_lines`` keeps free under ``max_bytes`` for the "cut" note's own line about the fitting."""


def fit(sections: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """Halve the longest list until the sections' JSON is within ``max_bytes``; the list's dict says so.

    Lists are already cut to ``max_items`` and texts to 200 characters, so
    this rarely does anything; when it does, the rows that survive are the
    first ones (the worst: every list is sorted worst first) and the section
    stays whole, rather than the engine dropping the largest section outright.
    """
    def size() -> int:
        return len(json.dumps(sections, default=str))

    while size() > max_bytes:
        found = _longest_list(sections)
        if found is None:
            break
        parent, key, items = found
        parent[key] = items[:len(items) // 2]
        parent["cut"] = "max_bytes"
    return sections


def _longest_list(node: dict[str, Any]) -> tuple[dict[str, Any], str, list[Any]] | None:
    """The list (of two items or more) with the longest JSON anywhere under ``node``, with its dict."""
    best: tuple[dict[str, Any], str, list[Any]] | None = None
    best_size = 0
    todo = [node]
    while todo:
        parent = todo.pop()
        for key, value in parent.items():
            if isinstance(value, dict):
                todo.append(value)
            elif isinstance(value, list):
                todo.extend(item for item in value if isinstance(item, dict))
                if len(value) > 1 and (length := len(json.dumps(value, default=str))) > best_size:
                    best, best_size = (parent, key, value), length
    return best


def json_size(sections: Mapping[str, Any]) -> int:
    """The size the engine counts against ``max_bytes`` (its own estimate, a little above the stored JSON)."""
    return sum(len(json.dumps(value, default=str)) + len(name) + 6 for name, value in sections.items())


def fit_lines(sections: dict[str, Any], lines_section: str, max_bytes: int, noun: str) -> dict[str, int]:
    """Cut ``sections`` in place until they fit ``max_bytes`` less ``FIT_SLACK``; return what was dropped.

    ``sections[lines_section]`` maps a thing (container, unit) to its lines,
    oldest first. The oldest lines go first, from the thing with the most
    lines each time (every thing keeps its newest lines longest), then rows
    from the end of every other list. ``noun`` names the lines in the
    returned counts ("log lines", "journal lines").
    """
    budget = max(max_bytes - FIT_SLACK, 0)
    dropped = {noun: 0, "rows": 0}
    size = json_size(sections)
    while size > budget:
        excess = size - budget
        lines: dict[str, list[str]] = {
            k: v for k, v in (sections.get(lines_section) or {}).items() if isinstance(v, list) and v
        }
        if lines:
            while excess > 0 and lines:
                longest = max(lines, key=lambda k: len(lines[k]))
                excess -= len(json.dumps(lines[longest].pop(0))) + 2
                dropped[noun] += 1
                if not lines[longest]:
                    del lines[longest]
        else:
            lists = [v for k, v in sections.items() if k != lines_section and isinstance(v, list) and v]
            if not lists:
                break
            max(lists, key=len).pop()
            dropped["rows"] += 1
        size = json_size(sections)
    return {k: v for k, v in dropped.items() if v}
