"""The exposition, encoded when a snapshot changes rather than on every scrape.

A collector's snapshot is turned into sample lines once, off the event loop, right after its refresh; the
sample lines of the Prometheus text format (0.0.4) and of OpenMetrics 1.0 are the same, only the HELP/TYPE
headers differ. The whole body of each format (and its gzip) is put together once per generation, that is
once per refresh of any collector, and every scrape until the next refresh is served those bytes.

What changes per scrape (process CPU and memory, reload state) is a small tail encoded per request; with
gzip it is a second gzip member, which every HTTP client decompresses as one stream (RFC 1952, 2.2).
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString

_go_float: Callable[[float], str] = floatToGoString  # Go's formatting of floats, as prometheus_client writes them

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
GZIP_LEVEL = 6  # zlib's default, as Go's and so node_exporter's

# One family's sample lines (the same text in both formats).
EncodedSnapshot = dict[str, str]


@dataclass(frozen=True)
class Header:
    text: str
    openmetrics: str


def _escape_value(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def sample_lines(family: Metric) -> str:
    """A family's samples as exposition lines, label names sorted as prometheus_client writes them."""
    out = []
    for sample in family.samples:
        labels = sample.labels
        if labels:
            pairs = ",".join(f'{k}="{_escape_value(v)}"' for k, v in sorted(labels.items()))
            out.append(f"{sample.name}{{{pairs}}} {_go_float(sample.value)}\n")
        else:
            out.append(f"{sample.name} {_go_float(sample.value)}\n")
    return "".join(out)


def header(family: Metric) -> Header:
    kind = "untyped" if family.type == "unknown" else family.type
    text_name = f"{family.name}_total" if family.type == "counter" else family.name
    text_help = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
    om_help = _escape_value(family.documentation)
    om_type = family.type
    return Header(
        f"# HELP {text_name} {text_help}\n# TYPE {text_name} {kind}\n",
        f"# HELP {family.name} {om_help}\n# TYPE {family.name} {om_type}\n",
    )


def encode_snapshot(families: Iterable[Metric]) -> tuple[EncodedSnapshot, dict[str, Header]]:
    """Sample lines per family name, and each family's header."""
    encoded: EncodedSnapshot = {}
    headers: dict[str, Header] = {}
    for family in families:
        encoded[family.name] = encoded.get(family.name, "") + sample_lines(family)
        if family.name not in headers:
            headers[family.name] = header(family)
    return encoded, headers


def assemble(parts: Sequence[tuple[EncodedSnapshot, dict[str, Header]]], openmetrics: bool) -> bytes:
    """One body: each family once, its header, then its samples from every snapshot that has it."""
    order: dict[str, Header] = {}
    for _, headers in parts:
        for name, head in headers.items():
            order.setdefault(name, head)
    out = []
    for name, head in order.items():
        out.append(head.openmetrics if openmetrics else head.text)
        out.extend(encoded[name] for encoded, _ in parts if name in encoded)
    return "".join(out).encode("utf-8")


def render(families: Iterable[Metric], openmetrics: bool) -> bytes:
    """A small set of families encoded at once (the per-scrape tail, a probe)."""
    return assemble([encode_snapshot(families)], openmetrics)


class Exposition:
    """The cached bodies of one registry; ``parts`` gives the snapshots of the current generation."""

    def __init__(self, parts: Callable[[], Sequence[tuple[EncodedSnapshot, dict[str, Header]]]]) -> None:
        self._parts = parts
        self.generation = 0
        self._bodies: dict[tuple[bool, bool], tuple[int, bytes]] = {}
        self._building: dict[tuple[bool, bool], tuple[int, asyncio.Future[bytes]]] = {}
        self.builds = 0  # bodies put together since start (not per scrape)

    def changed(self) -> None:
        """A snapshot changed: the bodies scrapes have asked for are built anew, off the loop, right away, so
        that the next scrape finds them ready (a format nobody asks for is never built)."""
        self.generation += 1
        for openmetrics, compress in list(self._bodies):
            self._start(openmetrics, compress)

    def _start(self, openmetrics: bool, compress: bool) -> asyncio.Future[bytes]:
        key = (openmetrics, compress)
        building = self._building.get(key)
        if building is None or building[0] != self.generation:
            future = asyncio.ensure_future(asyncio.to_thread(self._build, openmetrics, compress))
            self._building[key] = building = (self.generation, future)
        return building[1]

    def _build(self, openmetrics: bool, compress: bool) -> bytes:
        body = assemble(self._parts(), openmetrics)
        self.builds += 1
        return gzip.compress(body, GZIP_LEVEL, mtime=0) if compress else body

    async def body(self, openmetrics: bool, compress: bool) -> bytes:
        """The body of the current generation, built off the event loop once and shared by concurrent scrapes."""
        key = (openmetrics, compress)
        generation = self.generation
        cached = self._bodies.get(key)
        if cached is not None and cached[0] == generation:
            return cached[1]
        body = await asyncio.shield(self._start(openmetrics, compress))
        if self._bodies.get(key, (-1, b""))[0] < generation:
            self._bodies[key] = (generation, body)
        return body


def tail(families: Iterable[Metric], openmetrics: bool, compress: bool) -> bytes:
    """What changes per scrape, after the cached body; OpenMetrics' ``# EOF`` ends it."""
    body = render(families, openmetrics)
    if openmetrics:
        body += b"# EOF\n"
    return gzip.compress(body, 1, mtime=0) if compress else body
