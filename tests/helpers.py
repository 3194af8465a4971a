"""Shared test helpers: reading recorded LDAP fixtures, flattening metric families, finding tools."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterable
from pathlib import Path

import pytest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

FIXTURES = Path(__file__).resolve().parent / "fixtures"


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
