"""The exposition, encoded when a snapshot changes rather than on every scrape.

A collector's snapshot is turned into sample lines once, right after its refresh, in steps of about a
millisecond on the event loop (see encode_snapshot_async for why not in a thread); the
sample lines of the Prometheus text format (0.0.4) and of OpenMetrics 1.0 are the same, only the HELP/TYPE
headers differ. The whole body of each format (and its gzip) is put together once per generation, that is
once per refresh of any collector, and every scrape until the next refresh is served those bytes.

What changes per scrape (process CPU and memory, reload state) is a small tail encoded per request; with
gzip it is a second gzip member, which every HTTP client decompresses as one stream (RFC 1952, 2.2).
"""

from __future__ import annotations

import asyncio
import gzip
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from exporter.metrics import Series

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


_NEEDS_ESCAPE = re.compile(r'[\\\n"]')


def _escape_value(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def _generic_lines(samples: Iterable[Sample]) -> str:
    """Samples as exposition lines, label names sorted as prometheus_client writes them."""
    out = []
    for sample in samples:
        labels = sample.labels
        if labels:
            pairs = ",".join(f'{k}="{_escape_value(v)}"' for k, v in sorted(labels.items()))
            out.append(f"{sample.name}{{{pairs}}} {_go_float(sample.value)}\n")
        else:
            out.append(f"{sample.name} {_go_float(sample.value)}\n")
    return "".join(out)


def _series_lines(series: Series, start: int = 0, stop: int | None = None) -> str:
    """The hot path: one format string per family, label values escaped only when they need it."""
    names = series.family.labels
    rows = series.rows[start:stop]
    if not rows:
        return ""
    if not names:
        return "".join(f"{series.sample_name} {_go_float(value)}\n" for _, value in rows)
    order = sorted(range(len(names)), key=names.__getitem__)
    pairs = ",".join(f'{names[i]}="{{{i}}}"' for i in order)
    template = f"{series.sample_name}{{{{{pairs}}}}} {{{len(names)}}}\n"
    fmt = template.format
    values_cache: dict[float, str] = {}
    out = []
    for labels, value in rows:
        text = values_cache.get(value)
        if text is None:
            text = values_cache[value] = _go_float(value)
        if _NEEDS_ESCAPE.search("".join(labels)):
            labels = tuple(_escape_value(v) for v in labels)
        out.append(fmt(*labels, text))
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


# Work done between two turns of the event loop: about a millisecond each.
ROWS_PER_STEP = 500
GZIP_BYTES_PER_STEP = 64 * 1024


def _encode_steps(families: Iterable[Metric], encoded: EncodedSnapshot, headers: dict[str, Header]) -> Iterator[None]:
    """Encode into ``encoded``/``headers``, pausing (a ``yield``) every ROWS_PER_STEP samples."""
    for family in families:
        if family.name not in headers:
            headers[family.name] = header(family)
        pieces = [encoded.get(family.name, "")]
        if isinstance(family, Series):
            for start in range(0, len(family.rows), ROWS_PER_STEP):
                pieces.append(_series_lines(family, start, start + ROWS_PER_STEP))
                yield
            pieces.append(_generic_lines(family._extra))
        else:
            pieces.append(_generic_lines(family.samples))
        encoded[family.name] = "".join(pieces)


def encode_snapshot(families: Iterable[Metric]) -> tuple[EncodedSnapshot, dict[str, Header]]:
    """Sample lines per family name, and each family's header."""
    encoded: EncodedSnapshot = {}
    headers: dict[str, Header] = {}
    for _ in _encode_steps(families, encoded, headers):
        pass
    return encoded, headers


async def encode_snapshot_async(families: Iterable[Metric]) -> tuple[EncodedSnapshot, dict[str, Header]]:
    """The same, on the event loop in steps of about a millisecond, so that scrapes and other collectors run in
    between. (In a worker thread the encoding would hold the GIL against the loop, which must win it back after
    every socket call: the convoy effect made scrapes 10-30 times slower while a refresh was encoded.)"""
    encoded: EncodedSnapshot = {}
    headers: dict[str, Header] = {}
    for _ in _encode_steps(families, encoded, headers):
        await asyncio.sleep(0)
    return encoded, headers


def _assemble_text(parts: Sequence[tuple[EncodedSnapshot, dict[str, Header]]], openmetrics: bool) -> list[str]:
    order: dict[str, Header] = {}
    for _, headers in parts:
        for name, head in headers.items():
            order.setdefault(name, head)
    out = []
    for name, head in order.items():
        out.append(head.openmetrics if openmetrics else head.text)
        out.extend(encoded[name] for encoded, _ in parts if name in encoded)
    return out


def assemble(parts: Sequence[tuple[EncodedSnapshot, dict[str, Header]]], openmetrics: bool) -> bytes:
    """One body: each family once, its header, then its samples from every snapshot that has it."""
    return "".join(_assemble_text(parts, openmetrics)).encode("utf-8")


def render(families: Iterable[Metric], openmetrics: bool) -> bytes:
    """A small set of families encoded at once (the per-scrape tail, a probe)."""
    return assemble([encode_snapshot(families)], openmetrics)


async def _gzip(body: bytes) -> bytes:
    """gzip in steps, on the loop (one member; the same bytes gzip.compress gives)."""
    packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    view = memoryview(body)
    out = []
    for start in range(0, len(body), GZIP_BYTES_PER_STEP):
        out.append(packer.compress(view[start : start + GZIP_BYTES_PER_STEP]))
        await asyncio.sleep(0)
    out.append(packer.flush())
    return b"".join(out)


class Exposition:
    """The cached bodies of one registry; ``parts`` gives the snapshots of the current generation.

    A body is put together when a scrape asks for it and the snapshots changed since it was last built: once per
    refresh at most, once per scrape interval at most, and never for a format nobody asks for. Scrapes that
    arrive while it is built are answered with the body before (or, for the very first, wait for the build).
    """

    def __init__(self, parts: Callable[[], Sequence[tuple[EncodedSnapshot, dict[str, Header]]]]) -> None:
        self._parts = parts
        self.generation = 0
        self._bodies: dict[tuple[bool, bool], tuple[int, bytes]] = {}
        self._building: dict[tuple[bool, bool], tuple[int, asyncio.Future[bytes]]] = {}
        self.builds = 0  # bodies put together since start (not per scrape)

    def changed(self) -> None:
        """A snapshot changed: the next scrape of each format gets a body built from the new snapshots."""
        self.generation += 1

    async def _build(self, openmetrics: bool, compress: bool) -> bytes:
        pieces = _assemble_text(self._parts(), openmetrics)
        await asyncio.sleep(0)
        body = "".join(pieces).encode("utf-8")
        self.builds += 1
        return await _gzip(body) if compress else body

    async def body(self, openmetrics: bool, compress: bool, *, wait: bool = True) -> bytes:
        """The body of the current generation, built once and shared by concurrent scrapes.

        ``wait=False`` (what /metrics uses): while the new body is being built, answer with the one before, at
        most one build old, rather than hold the scrape until it is done.
        """
        key = (openmetrics, compress)
        generation = self.generation
        cached = self._bodies.get(key)
        if cached is not None and cached[0] == generation:
            return cached[1]
        building = self._building.get(key)
        if building is None or building[0] != generation:
            building = (generation, asyncio.ensure_future(self._build_and_keep(key, generation)))
            self._building[key] = building
        if cached is not None and not wait:
            return cached[1]
        return await asyncio.shield(building[1])

    async def _build_and_keep(self, key: tuple[bool, bool], generation: int) -> bytes:
        body = await self._build(*key)
        if self._bodies.get(key, (-1, b""))[0] < generation:
            self._bodies[key] = (generation, body)
        return body


def tail(families: Iterable[Metric], openmetrics: bool, compress: bool) -> bytes:
    """What changes per scrape, after the cached body; OpenMetrics' ``# EOF`` ends it."""
    body = render(families, openmetrics)
    if openmetrics:
        body += b"# EOF\n"
    return gzip.compress(body, 1, mtime=0) if compress else body
