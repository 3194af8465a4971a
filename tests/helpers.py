"""Shared test helpers: reading recorded LDAP fixtures, flattening metric families, finding tools."""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections.abc import Iterable
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ROOT = Path(__file__).resolve().parent.parent


# Headless Chromium that talks to nothing but the page it is given.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_binary(name: str) -> str:
    """The path of a tool ./run.sh installs; a clear failure (not a skip) when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing; run ./run.sh test")
    return path


def recorded_ldap(section: str) -> list[tuple[str, dict[str, list[bytes]]]]:
    data = json.loads((FIXTURES / "samba_lab_ldap.json").read_text())
    return [
        (e["dn"], {k: [base64.b64decode(v) for v in vs] for k, vs in e["attributes"].items()}) for e in data[section]
    ]


def samples(families: Iterable[Metric]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """{(sample name, labels): value} for easy lookups in assertions."""
    out = {}
    for family in families:
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(flat: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return flat.get((name, frozenset(labels.items())))


def series(
    flat: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> dict[frozenset[tuple[str, str]], float]:
    """All samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return {lbls: v for (n, lbls), v in flat.items() if n == name and want <= lbls}


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample of ``name`` in exposition text whose labels include ``labels``."""
    found = series(samples(text_string_to_metric_families(text)), name, **labels)
    return next(iter(found.values()), None)


class _Tables(HTMLParser):
    """Rows of text per table id, and the text of elements by id, from a DOM dump."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.texts: dict[str, str] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._ids: list[tuple[str, str]] = []  # (tag, id) open elements with an id

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        ident = dict(attrs).get("id")
        if ident:
            self._ids.append((tag, ident))
            self.texts.setdefault(ident, "")
        if tag == "table":
            self._table = ident or f"table{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        if self._ids and self._ids[-1][0] == tag:
            self._ids.pop()

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        for _, ident in self._ids:
            self.texts[ident] += data


def dom_tables(dom: str) -> tuple[dict[str, list[list[str]]], dict[str, str]]:
    """({table id: rows of cell texts}, {element id: its text}) of a page as Chromium's --dump-dom gives it."""
    parser = _Tables()
    parser.feed(dom)
    return parser.tables, {k: " ".join(v.split()) for k, v in parser.texts.items()}


def seconds(duration: str) -> int:
    """A Prometheus duration ("1h30m") in seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smhd])", duration))


def sped_up_rules(directory: Path, speedup: int, slower: dict[str, int] | None = None) -> list[str]:
    """The shipped rule files with their hold durations (``for:``) divided by ``speedup`` (per alert in
    ``slower``), written to ``directory``: expressions, labels and annotations untouched."""
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for path in sorted((ROOT / "alerts").glob("*.rules.yml")):
        data = yaml.safe_load(path.read_text())
        for group in data["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    factor = (slower or {}).get(rule.get("alert", ""), speedup)
                    rule["for"] = f"{max(1, seconds(rule['for']) // factor)}s"
        (directory / path.name).write_text(yaml.safe_dump(data, sort_keys=False))
        files.append(str(directory / path.name))
    return files
