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

from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.utils import floatToGoString

_SPECIAL = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}


def go_float(value: float) -> str:
    """``prometheus_client.utils.floatToGoString``, with the common case (a plain ``repr``) first."""
    text = repr(float(value))
    if text[-1] in "fn":  # inf, -inf, nan
        return _SPECIAL[text]
    if text.find(".") > 6:  # 1e6 and up: the client's exponent spelling (1.7e+09), kept exactly
        return str(floatToGoString(value))  # type: ignore[no-untyped-call]
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


class Memo:
    """What one render keeps for the next: each series' last line, per family.

    A rule's label values rarely change between renders, and most of its
    values do not either (the states it is not in, counters at 0, its
    interval); so a series costs a dict lookup and a comparison instead of
    escaping and formatting again. Bounded by the series of the last render
    (see ``Families.finish``).
    """

    def __init__(self) -> None:
        self.lines: dict[str, dict[tuple[str, ...], Line]] = {}


class Family:
    """One gauge or counter; ``add_metric`` has prometheus-client's signature, so the same code fills either."""

    __slots__ = ("_last", "_order", "_template", "documentation", "kind", "lines", "name")

    def __init__(
        self, name: str, kind: str, documentation: str, labels: Sequence[str], last: dict[tuple[str, ...], Line]
    ) -> None:
        self.name = name
        self.kind = kind
        self.documentation = documentation
        self.lines: list[str] = []
        template, self._order = _template(name + "_total" if kind == "counter" else name, list(labels))
        self._template = template[: -len("%s\n")]  # the series up to its value
        self._last = last

    def add_metric(self, labels: Sequence[str], value: float) -> None:
        key = tuple(labels)
        last = self._last.get(key)
        if last is not None and last[0] == value:  # (-0.0 after 0.0 keeps "0.0": the same number to a reader)
            self.lines.append(last[1])
            return
        if last is None:
            prefix = self._template % tuple(escape_label(labels[i]) for i in self._order)
        else:  # the labels part is the line up to its last space (a value never holds one)
            prefix = last[1][: last[1].rindex(" ") + 1]
        line = prefix + go_float(value) + "\n"
        self._last[key] = (value, line)
        self.lines.append(line)

    def prune(self) -> None:
        """Forget series no longer written (a reload removed their rule), once they outnumber the live ones."""
        if len(self._last) > 2 * len(self.lines) + 16:
            self._last.clear()


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
            family = Family(name, kind, documentation, labels, self._memo.lines.setdefault(name, {}))
            self._by_name[name] = family
        assert isinstance(family, Family) and family.kind == kind, name
        return family

    def finish(self) -> None:
        for family in self._by_name.values():
            if isinstance(family, Family):
                family.prune()

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
