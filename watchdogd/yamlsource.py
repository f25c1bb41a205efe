"""YAML loading that remembers where every key came from.

Config errors must name the file and line (``watchdogd.yaml:14:
rules.pg-idle.above: expected a duration``); PyYAML's plain ``safe_load``
forgets positions, so we compose the node tree and build the objects
ourselves, recording the line of each key path on the way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Located:
    """Plain Python data (dicts, lists, scalars) plus the line of every key path."""

    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, path: KeyPath) -> int:
        """The line of the longest prefix of ``path`` we know; errors deep in a value point at its key."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return 1


class YamlError(Exception):
    """A syntax error, with the line it was found on."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def load_located(text: str) -> Located:
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            raise YamlError(mark.line + 1 if mark else 1, _one_line(exc)) from exc
        except yaml.YAMLError as exc:
            raise YamlError(1, _one_line(exc)) from exc
        if root is None:
            return Located({}, {(): 1})
        lines: dict[KeyPath, int] = {}
        data = _build(loader, root, (), lines)
        return Located(data, lines)
    finally:
        loader.dispose()


def _build(loader: yaml.SafeLoader, node: Node, path: KeyPath, lines: dict[KeyPath, int]) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise YamlError(key_node.start_mark.line + 1, "mapping keys must be plain scalars")
            key = loader.construct_object(key_node)
            if key == "<<":
                raise YamlError(key_node.start_mark.line + 1, "YAML merge keys (<<) are not supported")
            if key in result:
                # PyYAML silently keeps the last one; an operator editing at 3 a.m. gets a surprise.
                raise YamlError(key_node.start_mark.line + 1, f"duplicate key {key!r}")
            key_path = (*path, str(key))
            lines[key_path] = key_node.start_mark.line + 1
            result[key] = _build(loader, value_node, key_path, lines)
        return result
    if isinstance(node, SequenceNode):
        return [_build(loader, item, (*path, index), lines) for index, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _one_line(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = [p for p in (exc.context, exc.problem) if p]
        return "YAML syntax error: " + ", ".join(parts)
    return "YAML syntax error: " + " ".join(str(exc).split())
