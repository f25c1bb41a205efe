"""The Prometheus text format 0.0.4 and OpenMetrics 1.0.0, written directly for watchdogd's own families.

prometheus-client builds a ``Sample`` and a labels dict per series, sorts the
labels and checks every character of every label name on each render: at
1,000 rules (about 44,000 series) that was 124-219 ms a render, most of it
spent re-validating names that never change. Here a family knows its label
names when it is created, so its sample line is a template made once and
each series costs one ``%`` of its escaped values. The bytes are the ones
prometheus-client writes for the same families (labels in name order, Go's
float spelling, counters as ``_total``); tests render one snapshot both ways
and compare them, so prometheus-client stays the reference.

Only what our families use is here: gauges, counters without ``_created``,
summaries of count and sum, no timestamps, no exemplars, legacy names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import cast

_SPECIAL = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}
_EXPONENTS = tuple(f"e+{n:02d}" for n in range(16))
"""Go's exponent spellings for the numbers ``repr`` writes with a point, 1e6 up to 1e16 (it uses e+16 after)."""


def go_float(value: float) -> str:
    """``prometheus_client.utils.floatToGoString``, in fewer steps: timestamps (1e9 and up) are most values."""
    text = repr(float(value))
    dot = text.find(".")
    if dot > 6 and value > 0:  # 1e6 and up: the client's exponent spelling (1.7e+09), kept exactly
        return (text[0] + "." + text[1:dot] + text[dot + 1:]).rstrip("0.") + _EXPONENTS[dot - 1]
    if text[-1] in "fn":  # inf, -inf, nan
        return _SPECIAL[text]
    return text


def escape_label(value: str) -> str:
    """Label values: backslash, newline and double quote, as both formats want."""
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def _help_text(documentation: str) -> str:
    return documentation.replace("\\", r"\\").replace("\n", r"\n")


def _help_openmetrics(documentation: str) -> str:
    return _help_text(documentation).replace('"', r"\"")


def _template(sample: str, labels: Sequence[str]) -> tuple[str, tuple[int, ...]]:
    """``name{a="%s",b="%s"} %s`` with labels in name order (as the client sorts them), and that order."""
    if not labels:
        return sample + " %s\n", ()
    order = tuple(sorted(range(len(labels)), key=labels.__getitem__))
    inner = ",".join(f'{labels[i]}="%s"' for i in order)
    return sample + "{" + inner + "} %s\n", order


Line = tuple[float, str]
"""A series' last value and its whole line."""

Key = object
"""What a block's or group's text is made of (values, label values): compared with ``==``, never hashed, so a
mapping serves as one (the scheduler's counts, a fresh copy per render)."""

Block = tuple[Key, str]
"""A block's key (what its text is made of) and its text."""

Rows = Callable[..., Iterable[tuple[Sequence[str], float]]]
"""A block's series, asked for (with the block's arguments) only when its key changed."""

GroupRows = Callable[..., Iterable[tuple[int, Sequence[str], float]]]
"""A group's series as (index of its family in the group, labels, value), asked for only when its key changed."""

Group = tuple[Key, tuple[str, ...], tuple[str, ...]]
"""A group's key, its text in each of its kept families, and the heads of its fresh ones."""


def _joined(head: str, value: str) -> str:
    return head + value + "\n"


class Memo:
    """What one render keeps for the next: each series' last line, per family; blocks and groups whole.

    A rule's label values rarely change between renders, and most of its
    values do not either (the states it is not in, counters at 0, its
    interval); so a series costs a dict lookup and a comparison instead of
    escaping and formatting again. Blocks (a rule's counters) and groups (a
    rule's state, gauges, thresholds and probe series, over 14 families) go
    further: one comparison serves all their series. At 1,000 rules the per-series
    lookups alone were 15 ms of a 30 ms render. Bounded by what the last
    render wrote (see ``Families.finish``).
    """

    def __init__(self) -> None:
        self.lines: dict[str, dict[tuple[str, ...], Line]] = {}
        self.blocks: dict[str, dict[str, Block]] = {}
        self.groups: dict[str, Group] = {}


def _revalued(line: str, value: float) -> str:
    """A kept line with another value: its labels part is the line up to its last space (a value has none)."""
    return line[: line.rindex(" ") + 1] + go_float(value) + "\n"


class Family:
    """One gauge or counter; ``add_metric`` has prometheus-client's signature, so the same code fills either."""

    __slots__ = ("_blocks", "_last", "_order", "_template", "blocks_written", "documentation", "kind", "lines",
                 "name")

    def __init__(
        self,
        name: str,
        kind: str,
        documentation: str,
        labels: Sequence[str],
        *,
        last: dict[tuple[str, ...], Line],
        blocks: dict[str, Block],
    ) -> None:
        self.name = name
        self.kind = kind
        self.documentation = documentation
        self.lines: list[str] = []
        template, self._order = _template(name + "_total" if kind == "counter" else name, list(labels))
        self._template = template[: -len("%s\n")]  # the series up to its value
        self._last = last
        self._blocks = blocks
        self.blocks_written = 0

    def add_metric(self, labels: Sequence[str], value: float) -> None:
        key = tuple(labels)
        last = self._last.get(key)
        if last is not None and last[0] == value:  # (-0.0 after 0.0 keeps "0.0": the same number to a reader)
            self.lines.append(last[1])
            return
        line = self.line(labels, value) if last is None else _revalued(last[1], value)
        self._last[key] = (value, line)
        self.lines.append(line)

    def line(self, labels: Sequence[str], value: float) -> str:
        """One series' line, made from scratch and kept nowhere."""
        return self.head(labels) + go_float(value) + "\n"

    def head(self, labels: Sequence[str]) -> str:
        """A series' line up to its value: ``name{labels} ``."""
        return self._template % tuple(escape_label(labels[i]) for i in self._order)

    def add_block(self, block: str, key: Key, rows: Rows, *args: object) -> None:
        """Series written together, named ``block`` (a rule's name): their text again while ``key`` is equal.

        ``key`` must hold everything the text is made of (label values and
        values); ``rows(*args)`` is called only when it changed (arguments,
        not a closure: nothing is allocated when the text is reused).
        """
        self.blocks_written += 1
        last = self._blocks.get(block)
        if last is not None and last[0] == key:
            self.lines.append(last[1])
            return
        text = "".join(self.line(labels, value) for labels, value in rows(*args))  # kept here only, as a row's
        self.lines.append(text)
        self._blocks[block] = (key, text)

    def prune(self) -> None:
        """Forget series no longer written (a reload removed their rule), once they outnumber the live ones."""
        if len(self._last) > 2 * len(self.lines) + 16:
            self._last.clear()
        if len(self._blocks) > 2 * self.blocks_written + 16:
            self._blocks.clear()


class SummaryFamily:
    """A summary of count and sum (no quantiles), as ``SummaryMetricFamily`` writes it."""

    __slots__ = ("_count", "_order", "_sum", "documentation", "kind", "lines", "name")

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name = name
        self.kind = "summary"
        self.documentation = documentation
        self.lines: list[str] = []
        self._count, self._order = _template(name + "_count", list(labels))
        self._sum, _ = _template(name + "_sum", list(labels))

    def add_metric(self, labels: Sequence[str], count_value: float, sum_value: float) -> None:
        values = [escape_label(labels[i]) for i in self._order]
        self.lines.append(self._count % (*values, go_float(count_value)))
        self.lines.append(self._sum % (*values, go_float(sum_value)))


class Families:
    """Families by name in first-use order: the text-format twin of the exporter's reference builder."""

    def __init__(self, memo: Memo | None = None) -> None:
        self._by_name: dict[str, Family | SummaryFamily] = {}
        self._memo = memo or Memo()
        self._groups_written = 0
        self._lists: dict[int, tuple[Sequence[object], tuple[list[str], ...]]] = {}

    def gauge(self, name: str, documentation: str, labels: Sequence[str]) -> Family:
        return self._family(name, "gauge", documentation, labels)

    def counter(self, name: str, documentation: str, labels: Sequence[str]) -> Family:
        return self._family(name, "counter", documentation, labels)

    def summary(self, name: str, documentation: str, labels: Sequence[str]) -> SummaryFamily:
        family = self._by_name.get(name)
        if family is None:
            family = self._by_name[name] = SummaryFamily(name, documentation, labels)
        assert isinstance(family, SummaryFamily)
        return family

    def _family(self, name: str, kind: str, documentation: str, labels: Sequence[str]) -> Family:
        family = self._by_name.get(name)
        if family is None:
            memo = self._memo
            family = Family(name, kind, documentation, labels, last=memo.lines.setdefault(name, {}),
                            blocks=memo.blocks.setdefault(name, {}))
            self._by_name[name] = family
        assert isinstance(family, Family) and family.kind == kind, name
        return family

    def group(
        self, group: str, key: Key, families: Sequence[object], rows: GroupRows, *args: object,
        fresh: tuple[str, ...] = (),
    ) -> None:
        """Series of several families written together, named ``group`` (a rule's name): their texts again
        while ``key`` is equal.

        ``key`` must hold everything the texts are made of, the families'
        names included where they vary (a rule's threshold family goes with
        its unit). A changed key formats the whole group again: the keys
        hold what changes rarely (a state, a count of subjects, a cooldown),
        so that is one rule now and then, where comparing each series cost
        every rule at every render.

        ``fresh``: the values of the group's last ``len(fresh)`` families,
        one series each, which change at nearly every render (a probe's
        duration and last run), already formatted (``go_float``): only their
        lines' heads are kept (from the labels ``rows`` gives them).
        """
        self._groups_written += 1
        fams = cast(Sequence[Family], families)
        last = self._memo.groups.get(group)
        if last is None or last[0] != key:
            kept = len(fams) - len(fresh)
            parts: list[list[str]] = [[] for _ in fams]
            for index, labels, value in rows(*args):
                family = fams[index]
                parts[index].append(family.head(labels) if index >= kept else family.line(labels, value))
            heads = tuple(head for lines in parts[kept:] for head in lines)
            if len(heads) != len(fresh):
                raise ValueError(f"group {group!r}: rows gave {len(heads)} fresh series for {len(fresh)} values")
            last = self._memo.groups[group] = (key, tuple("".join(lines) for lines in parts[:kept]), heads)
        _, texts, heads = last
        for _ in map(list.append, self._lines_of(families), (*texts, *map(_joined, heads, fresh))):  # a C loop
            pass

    def _lines_of(self, families: Sequence[object]) -> tuple[list[str], ...]:
        """The families' line lists, kept per tuple of families for this render (a group's are the same tuple
        for every rule of a unit): one lookup where an attribute per family cost a rule 0.5 us."""
        kept = self._lists.get(id(families))
        if kept is None or kept[0] is not families:  # the tuple is kept alive here, so its id is not reused
            kept = self._lists[id(families)] = (families, tuple(cast(Family, f).lines for f in families))
        return kept[1]

    def finish(self) -> None:
        for family in self._by_name.values():
            if isinstance(family, Family):
                family.prune()
        if len(self._memo.groups) > 2 * self._groups_written + 16:
            self._memo.groups.clear()

    def __iter__(self) -> Iterator[Family | SummaryFamily]:
        return iter(self._by_name.values())


PIECE_ENTRIES = 128
"""Entries of a family's lines joined into one piece of text: a line, or a rule's block or group text (up to
9 lines). At 1,000 rules the largest family is 0.6 MB; joined whole, then encoded, it was 1.2 MB alive at once
in every render, the largest transient of a scrape (VmHWM +1.6 MiB, stop 38). 128 entries are 10-80 KB."""


def encode(families: Iterable[Family | SummaryFamily], *, openmetrics: bool) -> Iterator[str]:
    """The families' text in pieces of at most ``PIECE_ENTRIES`` entries, without OpenMetrics' closing ``# EOF``
    (the caller appends the rest first)."""
    for family in families:
        if openmetrics:
            name, documentation = family.name, _help_openmetrics(family.documentation)
            yield f"# HELP {name} {documentation}\n# TYPE {name} {family.kind}\n"
        else:
            name = family.name + "_total" if family.kind == "counter" else family.name
            yield f"# HELP {name} {_help_text(family.documentation)}\n# TYPE {name} {family.kind}\n"
        lines = family.lines
        for start in range(0, len(lines), PIECE_ENTRIES):
            yield "".join(lines[start:start + PIECE_ENTRIES])
