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

from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import cast

_SPECIAL = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}


def go_float(value: float) -> str:
    """``prometheus_client.utils.floatToGoString``, without its second ``repr``: timestamps are most values."""
    text = repr(float(value))
    if text[-1] in "fn":  # inf, -inf, nan
        return _SPECIAL[text]
    dot = text.find(".")
    if dot > 6 and value > 0:  # 1e6 and up: the client's exponent spelling (1.7e+09), kept exactly
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
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

Block = tuple[Hashable, str]
"""A block's key (what its text is made of) and its text."""

Rows = Callable[..., Iterable[tuple[Sequence[str], float]]]
"""A block's series, asked for (with the block's arguments) only when its key changed."""

Row = tuple[tuple[float, ...], tuple[str, ...]]
"""A row's values and its line in each of its families."""


class Memo:
    """What one render keeps for the next: each series' last line, per family; blocks and rows whole.

    A rule's label values rarely change between renders, and most of its
    values do not either (the states it is not in, counters at 0, its
    interval); so a series costs a dict lookup and a comparison instead of
    escaping and formatting again. Blocks (a rule's one-hot state, its
    counters) and rows (a rule's gauges, one per family) go further: one
    comparison serves all their series. At 1,000 rules the per-series
    lookups alone were 15 ms of a 30 ms render. Bounded by what the last
    render wrote (see ``Families.finish``).
    """

    def __init__(self) -> None:
        self.lines: dict[str, dict[tuple[str, ...], Line]] = {}
        self.blocks: dict[str, dict[str, Block]] = {}
        self.rows: dict[tuple[str, tuple[str, ...]], Row] = {}


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
        return self._template % tuple(escape_label(labels[i]) for i in self._order) + go_float(value) + "\n"

    def add_block(self, block: str, key: Hashable, rows: Rows, *args: object) -> None:
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
        self._rows_written = 0

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

    def row(self, row: str, families: Sequence[object], labels: tuple[str, ...], values: tuple[float, ...]) -> None:
        """One series in each of ``families`` (this sink's) with the same labels (a rule's gauges): one lookup.

        ``row`` names the set of families (the memo is kept per row and
        labels). When some values changed (a rule's subject count), only
        those are formatted again, after the labels of the last line.
        """
        self._rows_written += 1
        fams = cast(Sequence[Family], families)
        key = (row, labels)
        last = self._memo.rows.get(key)
        if last is None:  # the row keeps its lines itself: in the families' memo too they were 1 MiB more
            lines = tuple(family.line(labels, value) for family, value in zip(fams, values, strict=True))
        else:
            old_values, lines = last
            if old_values != values:
                fresh = []
                for old, new, line in zip(old_values, values, lines, strict=True):
                    fresh.append(line if old == new else _revalued(line, new))
                lines = tuple(fresh)
        for family, line in zip(fams, lines, strict=True):
            family.lines.append(line)
        self._memo.rows[key] = (values, lines)

    def finish(self) -> None:
        for family in self._by_name.values():
            if isinstance(family, Family):
                family.prune()
        if len(self._memo.rows) > 2 * self._rows_written + 16:
            self._memo.rows.clear()

    def __iter__(self) -> Iterator[Family | SummaryFamily]:
        return iter(self._by_name.values())


def encode(families: Iterable[Family | SummaryFamily], *, openmetrics: bool) -> Iterator[str]:
    """The families' text, without OpenMetrics' closing ``# EOF`` (the caller appends the rest first)."""
    for family in families:
        if openmetrics:
            name, documentation = family.name, _help_openmetrics(family.documentation)
            yield f"# HELP {name} {documentation}\n# TYPE {name} {family.kind}\n"
        else:
            name = family.name + "_total" if family.kind == "counter" else family.name
            yield f"# HELP {name} {_help_text(family.documentation)}\n# TYPE {name} {family.kind}\n"
        yield "".join(family.lines)
