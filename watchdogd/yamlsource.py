"""YAML loading that remembers where every key came from.

Config errors must name the file and line (``watchdogd.yaml:14:
rules.pg-idle.above: expected a duration``); PyYAML's plain ``safe_load``
forgets positions, so we compose the node tree and build the objects
ourselves, recording the line of each key path on the way.

Building it ourselves is also where a hostile file would blow up: aliases
share nodes, so a 1 KB "billion laughs" composes to a small graph that
expands to GBs. The graph is measured before anything is built, and
refused when it nests deeper or expands to more values than any real
config, each with the line where it happens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.events import AliasEvent, Event
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

KeyPath = tuple[str | int, ...]

MAX_DEPTH = 64
"""Deepest nesting of mappings and lists, aliases expanded; real configs stay under 10."""
MAX_VALUES = 20_000
"""Most keys and values a document may hold, aliases expanded: the shipped example has about 400, and
PyYAML composes about 10,000 a second, so this also bounds the time a check takes."""
MAX_ALIASES = 1_000
"""Most alias uses (``*name``) in one document."""


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
    try:
        loader = _BoundedLoader(text)
    except yaml.reader.ReaderError as exc:  # the reader checks every character up front
        raise YamlError(text.count("\n", 0, max(exc.position, 0)) + 1, _one_line(exc)) from exc
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            raise YamlError(mark.line + 1 if mark else 1, _one_line(exc)) from exc
        except yaml.YAMLError as exc:
            raise YamlError(1, _one_line(exc)) from exc
        except RecursionError as exc:  # MAX_DEPTH should make this unreachable; never a traceback
            raise YamlError(loader.get_mark().line + 1, "nested too deeply") from exc
        if root is None:
            return Located({}, {(): 1})
        _measure(root, [], {})
        lines: dict[KeyPath, int] = {}
        data = _build(loader, root, (), lines)
        return Located(data, lines)
    finally:
        loader.dispose()


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's composer recurses once per nesting level and never stops: stop it at the limits, with a line."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0
        self._aliases = 0
        self._nodes = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise YamlError(self._event_line(), f"too many YAML aliases (more than {MAX_ALIASES})")
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:
            raise YamlError(self._event_line(), _TOO_DEEP)
        self._nodes += 1
        if self._nodes > MAX_VALUES:
            raise YamlError(self._event_line(), _TOO_MANY)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _event_line(self) -> int:
        event: Event = self.peek_event()  # type: ignore[no-untyped-call]
        return event.start_mark.line + 1 if event.start_mark else 1


_TOO_DEEP = f"nested too deeply (more than {MAX_DEPTH} levels of mappings and lists)"
_TOO_MANY = f"more than {MAX_VALUES} keys and values in one config"


def _measure(node: Node, stack: list[Node], seen: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """How many values ``node`` expands to and how deep; refuses cycles, depth and size past the limits.

    Memoized per node, so a billion laughs costs one visit per node of its
    small graph; ``stack`` is the current path, so recursion stays within MAX_DEPTH.
    """
    line = node.start_mark.line + 1
    known = seen.get(id(node))
    if known is None:
        if any(node is parent for parent in stack):
            raise YamlError(line, "a YAML alias refers to a collection that contains it")
        if len(stack) >= MAX_DEPTH:
            raise YamlError(line, f"YAML aliases nest this more than {MAX_DEPTH} levels deep")
        stack.append(node)
        children: list[Node] = []
        if isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        elif isinstance(node, SequenceNode):
            children = list(node.value)
        measured = [_measure(child, stack, seen) for child in children]
        stack.pop()
        known = (1 + sum(size for size, _ in measured), 1 + max((height for _, height in measured), default=0))
        seen[id(node)] = known
    size, height = known
    if len(stack) + height > MAX_DEPTH:  # a node met again through an alias, now deeper down
        raise YamlError(line, f"YAML aliases nest this more than {MAX_DEPTH} levels deep")
    if size > MAX_VALUES:
        raise YamlError(line, f"YAML aliases expand this to more than {MAX_VALUES} keys and values")
    return known


def _build(loader: yaml.SafeLoader, node: Node, path: KeyPath, lines: dict[KeyPath, int]) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise YamlError(key_node.start_mark.line + 1, "mapping keys must be plain scalars")
            key = _scalar(loader, key_node)
            if key == "<<":
                raise YamlError(key_node.start_mark.line + 1, "YAML merge keys (<<) are not supported")
            if key in result:
                # PyYAML silently keeps the last one; an operator editing at 3 a.m. gets a surprise.
                raise YamlError(key_node.start_mark.line + 1, f"duplicate key {_short(key)}")
            key_path = (*path, str(key))
            lines[key_path] = key_node.start_mark.line + 1
            result[key] = _build(loader, value_node, key_path, lines)
        return result
    if isinstance(node, SequenceNode):
        return [_build(loader, item, (*path, index), lines) for index, item in enumerate(node.value)]
    return _scalar(loader, node)


def _scalar(loader: yaml.SafeLoader, node: Node) -> Any:
    """PyYAML's constructors raise plain ValueError for ``2024-13-45`` or a 5000-digit int: give them a line."""
    try:
        return loader.construct_object(node, deep=True)
    except yaml.MarkedYAMLError as exc:
        raise YamlError(node.start_mark.line + 1, _one_line(exc)) from exc
    except (ValueError, OverflowError, TypeError) as exc:
        reason = str(exc).split(": ")[0]  # "Exceeds the limit (4300 digits) ...: value has ...; use ..."
        raise YamlError(node.start_mark.line + 1, f"cannot read the value {_short(node.value)}: {reason}") from exc


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _one_line(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = [p for p in (exc.context, exc.problem) if p]
        return "YAML syntax error: " + ", ".join(parts)
    return "YAML syntax error: " + " ".join(str(exc).split())
