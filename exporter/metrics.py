"""Metric families declared once, at module level, like node_exporter's ``NewDesc``; and the one top-N cap.

A collector declares each family it exports (name, type, HELP, labels) as a :class:`Family` and lists them
in its ``families``; ``describe()`` returns them, the README's metric tables are generated from them, and a
refresh makes its samples with ``FAMILY.new()``. A sample with the wrong number of label values, or a family
the collector did not declare, is refused at once. Two declarations of one name with a different type or HELP
fail at import, that is at start.

:class:`Caps` is the one way to cap a label set: keep the top N by a key, sum the rest under ``<other>``, and
count what was left out in ``ad_exchange_exporter_capped_series``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from prometheus_client.core import Metric
from prometheus_client.samples import Sample

Kind = Literal["gauge", "counter", "histogram"]
T = TypeVar("T")

# Stands for everything a cap left out. '<' and '>' occur in no sAMAccountName, server, device or queue name,
# so it never names a real one.
OTHER = "<other>"


class DeclarationError(ValueError):
    """Two declarations of one metric name disagree (type or HELP), or a sample does not fit its declaration."""


_DECLARED: dict[str, Family] = {}


@dataclass(frozen=True)
class Family:
    """One metric family as exposed: ``name`` is the full name (counters end in ``_total``)."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind == "counter" and not self.name.endswith("_total"):
            raise DeclarationError(f"{self.name}: a counter's name ends in _total")
        if self.kind != "counter" and self.name.endswith("_total"):
            raise DeclarationError(f"{self.name}: only counters end in _total")
        _check_agrees(_DECLARED.setdefault(self.name, self), self)

    @property
    def base_name(self) -> str:
        """The name prometheus_client's families carry (without a counter's ``_total``)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name

    def with_leading_labels(self, *labels: str) -> Family:
        """The same family with more labels in front (a scheduled probe's target and module)."""
        return Family(self.name, self.kind, self.help, (*labels, *self.labels))

    def new(self) -> Series:
        return Series(self)

    def one(self, labels: Sequence[str], value: float) -> Series:
        """A family with a single sample."""
        series = Series(self)
        series.add_metric(labels, value)
        return series


def declared() -> dict[str, Family]:
    """Every family declared so far (by the modules imported), by name."""
    return dict(_DECLARED)


class Series(Metric):
    """The samples of one declared family in one refresh (a prometheus_client ``Metric``).

    Samples are kept as (label values, value) rows, the compact form the exposition encodes from directly;
    ``samples`` gives prometheus_client's Sample objects for whoever asks (tests, the families API).
    """

    def __init__(self, family: Family) -> None:
        self.rows: list[tuple[tuple[str, ...], float]] = []
        self._extra: list[Sample] = []  # histogram samples, which carry an le label of their own
        super().__init__(family.base_name, family.help, family.kind)
        self.family = family
        self.sample_name = family.name if family.kind == "counter" else family.base_name

    @property
    def samples(self) -> list[Sample]:
        names = self.family.labels
        return [
            Sample(self.sample_name, dict(zip(names, values, strict=True)), value) for values, value in self.rows
        ] + self._extra

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        self._extra = list(value)

    def _check(self, values: Sequence[str]) -> tuple[str, ...]:
        names = self.family.labels
        if len(values) != len(names):
            raise DeclarationError(
                f"{self.family.name}: {len(values)} label value(s) {list(values)} for labels {list(names)}"
            )
        return tuple(values)

    def add_metric(self, labels: Sequence[str], value: float) -> None:
        if self.family.kind == "histogram":
            raise DeclarationError(f"{self.family.name}: a histogram takes add_histogram")
        self.rows.append((self._check(labels), float(value)))

    def add_histogram(self, labels: Sequence[str], buckets: Sequence[tuple[str, float]], sum_value: float) -> None:
        """``buckets``: cumulative counts by upper bound, the last one ``+Inf``."""
        if self.family.kind != "histogram":
            raise DeclarationError(f"{self.family.name}: add_histogram on a {self.family.kind}")
        base = dict(zip(self.family.labels, self._check(labels), strict=True))
        for bound, count in buckets:
            self._extra.append(Sample(f"{self.name}_bucket", {**base, "le": bound}, float(count)))
        self._extra.append(Sample(f"{self.name}_count", base, float(buckets[-1][1])))
        self._extra.append(Sample(f"{self.name}_sum", base, float(sum_value)))

    def extend(self, other: Series) -> None:
        """Another refresh's or target's samples of a family with the same labels."""
        if other.family.labels != self.family.labels:
            raise DeclarationError(f"{self.family.name}: merging samples with labels {other.family.labels}")
        self.rows.extend(other.rows)
        self._extra.extend(other._extra)


def _check_agrees(known: Family, family: Family) -> None:
    # One name is one type and one HELP; the label sets may differ (a scheduled probe adds target and module).
    if (known.kind, known.help) != (family.kind, family.help):
        raise DeclarationError(
            f"{family.name} is declared twice, differently: as a {known.kind} ({known.help!r}) and as a "
            f"{family.kind} ({family.help!r})"
        )


def check_families(families: Iterable[Family]) -> None:
    """Declarations given by several collectors must agree: one name, one type and one HELP."""
    seen: dict[str, Family] = {}
    for family in families:
        _check_agrees(seen.setdefault(family.name, family), family)


# --- shared families --------------------------------------------------------------------------------------------

CAPPED_SERIES = Family(
    "ad_exchange_exporter_capped_series",
    "gauge",
    "Series left out of a family in the last refresh because of a configured cap.",
    ("collector", "target", "family"),
)
PARSE_ERRORS = Family(
    "ad_exchange_exporter_parse_errors_total",
    "counter",
    "Values that could not be parsed and were skipped.",
    ("collector", "target"),
)


@dataclass
class Top(Generic[T]):
    """What a cap kept and what it left out."""

    kept: list[T]
    rest: list[T]

    def add(
        self,
        series: Series,
        labels: Callable[[T], Sequence[str]],
        value: Callable[[T], float],
        other: Sequence[str] | None = None,
    ) -> None:
        """One sample per kept item; with ``other`` (its label values), one more summing the rest."""
        for item in self.kept:
            series.add_metric(labels(item), value(item))
        if other is not None and self.rest:
            series.add_metric(other, sum(value(item) for item in self.rest))


@dataclass
class Caps:
    """The caps of one refresh of one collector, and what they left out."""

    collector: str
    target: str
    dropped: dict[str, int] = field(default_factory=dict)

    def top(self, family: Family, items: Iterable[T], n: int, *keys: Callable[[T], Any]) -> Top[T]:
        """The first ``n`` of ``items`` by each key (several keys keep the union, in the first key's order).

        What is left out is added to the family's count (a family capped per target adds up over targets).
        """
        items = list(items)
        ranked = sorted(items, key=keys[0]) if keys else items
        chosen = {id(item) for key in keys[1:] for item in sorted(items, key=key)[:n]}
        chosen.update(id(item) for item in ranked[:n])
        kept = [item for item in ranked if id(item) in chosen]
        rest = [item for item in ranked if id(item) not in chosen]
        self.dropped[family.name] = self.dropped.get(family.name, 0) + len(rest)
        return Top(kept, rest)

    def note(self, family: Family) -> None:
        """A family with a cap that left nothing out this time still reports 0."""
        self.dropped.setdefault(family.name, 0)

    def series(self) -> Series:
        capped = CAPPED_SERIES.new()
        for name, count in self.dropped.items():
            capped.add_metric([self.collector, self.target, name], count)
        return capped
