"""Evidence within its byte budget, keeping every section: the longest lists are halved, worst rows kept.

A leaf helper so that families (which share no code with each other) bound their evidence the same way.
"""

from __future__ import annotations

import json
from typing import Any


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
