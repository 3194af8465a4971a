"""Runs collectors in the background and serves their latest snapshots.

Each collector refreshes on its own interval, with jitter and a timeout. ``/metrics`` reads the snapshots
already made, so a scrape never waits on a domain controller or an Exchange server, and one failing
collector never fails a scrape: it is reported by ``ad_exchange_exporter_collector_success``.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector as PromCollector

from exporter import __version__

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TargetStatus:
    """One target of a collector (a DC, a server), as the landing page shows it."""

    name: str
    up: bool
    detail: str = ""


class Redactor:
    """Removes known secret values from any text before it is logged, stored or shown."""

    def __init__(self, secrets: Sequence[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text


def capped_series_family() -> GaugeMetricFamily:
    """``ad_exchange_exporter_capped_series{collector,target,family}``: what a collector's caps left out."""
    return GaugeMetricFamily(
        "ad_exchange_exporter_capped_series",
        "Series left out of a family in the last refresh because of a configured cap.",
        labels=["collector", "target", "family"],
    )


def parse_errors_family(collector: str, target: str, count: float) -> CounterMetricFamily:
    """``ad_exchange_exporter_parse_errors_total{collector,target}``: values skipped because they did not parse."""
    family = CounterMetricFamily(
        "ad_exchange_exporter_parse_errors",
        "Values that could not be parsed and were skipped.",
        labels=["collector", "target"],
    )
    family.add_metric([collector, target], count)
    return family


class Collector(ABC):
    """A source of metric families, refreshed in the background.

    ``name`` is the kind (``active_directory``), ``target`` the instance (a domain, a server group).
    """

    name: str = ""

    def __init__(self, target: str, interval: float, timeout: float) -> None:
        self.target = target
        self.interval = interval
        self.timeout = timeout

    @abstractmethod
    async def collect(self) -> list[Metric]:
        """Return a complete snapshot. Per-target failures are reported inside it, not raised."""

    def target_status(self) -> list[TargetStatus]:
        return []

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and threads."""


@dataclass
class CollectorState:
    collector: Collector
    snapshot: list[Metric] = field(default_factory=list)
    attempts: int = 0
    success: bool = False
    last_duration: float = 0.0
    last_success: float = 0.0
    last_error: str = ""
    failures_total: int = 0


class CollectorRegistry(PromCollector):
    """Owns the collectors' refresh loops and exposes their snapshots to prometheus_client."""

    def __init__(
        self,
        collectors: Sequence[Collector],
        redact: Redactor | None = None,
        clock: Callable[[], float] = time.time,
        jitter: float = 0.1,
    ) -> None:
        self._states = [CollectorState(c) for c in collectors]
        self._redact = redact or Redactor()
        self._clock = clock
        self._jitter = jitter
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def states(self) -> list[CollectorState]:
        return list(self._states)

    @property
    def ready(self) -> bool:
        """Every collector has finished at least one attempt (successful or not)."""
        return all(s.attempts > 0 for s in self._states)

    def start(self) -> None:
        for state in self._states:
            name = f"collector {state.collector.name}/{state.collector.target}"
            self._tasks.append(asyncio.create_task(self._loop(state), name=name))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await asyncio.gather(*(s.collector.close() for s in self._states), return_exceptions=True)

    async def refresh_once(self, state: CollectorState) -> None:
        collector = state.collector
        started = time.monotonic()
        try:
            snapshot = await asyncio.wait_for(collector.collect(), timeout=collector.timeout)
        except TimeoutError:
            self._failed(state, f"timed out after {collector.timeout:g}s")
        except Exception as exc:
            log.exception("collector %s/%s failed", collector.name, collector.target)
            self._failed(state, f"{type(exc).__name__}: {exc}")
        else:
            state.snapshot = snapshot
            state.success = True
            state.last_success = self._clock()
            state.last_error = ""
        finally:
            state.attempts += 1
            state.last_duration = time.monotonic() - started

    def _failed(self, state: CollectorState, error: str) -> None:
        # The last good snapshot is kept (HELP says so) and its age is visible via last_success_timestamp.
        state.success = False
        state.failures_total += 1
        state.last_error = self._redact(error)
        log.warning("collector %s/%s: %s", state.collector.name, state.collector.target, state.last_error)

    async def _loop(self, state: CollectorState) -> None:
        interval = state.collector.interval
        while True:
            started = time.monotonic()
            await self.refresh_once(state)
            # Jitter spreads the load on the DCs when many exporters start together.
            delay = interval * (1 + random.uniform(-self._jitter, self._jitter)) - (time.monotonic() - started)  # noqa: S311
            await asyncio.sleep(max(delay, 0.0))

    # prometheus_client protocol
    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        build = GaugeMetricFamily(
            "ad_exchange_exporter_build_info",
            "The exporter's version and Python version.",
            labels=["version", "python_version"],
        )
        build.add_metric([__version__, platform.python_version()], 1.0)
        yield build
        for family_type, name, doc, read in _SELF_METRICS:
            family = family_type(name, doc, labels=["collector", "target"])
            for state in self._states:
                family.add_metric([state.collector.name, state.collector.target], read(state))
            yield family
        yield from _merge_families(s.snapshot for s in self._states)


_SELF_METRICS: tuple[
    tuple[type[GaugeMetricFamily | CounterMetricFamily], str, str, Callable[[CollectorState], float]], ...
] = (
    (
        GaugeMetricFamily,
        "ad_exchange_exporter_collector_success",
        "1 if the collector's last refresh succeeded. Its metrics are served from that refresh's cache.",
        lambda s: 1.0 if s.success else 0.0,
    ),
    (
        GaugeMetricFamily,
        "ad_exchange_exporter_collector_duration_seconds",
        "How long the collector's last refresh took.",
        lambda s: s.last_duration,
    ),
    (
        GaugeMetricFamily,
        "ad_exchange_exporter_collector_last_success_timestamp_seconds",
        "When the collector last refreshed successfully (0 if never); cached metrics are this old.",
        lambda s: s.last_success,
    ),
    (
        CounterMetricFamily,
        "ad_exchange_exporter_collector_refreshes",
        "Refreshes of the collector, successful or not. Scrapes never cause one: they read the cache.",
        lambda s: s.attempts,
    ),
    (
        CounterMetricFamily,
        "ad_exchange_exporter_collector_failures",
        "Refreshes of the collector that failed as a whole (timeout or error).",
        lambda s: s.failures_total,
    ),
    (
        GaugeMetricFamily,
        "ad_exchange_exporter_collector_interval_seconds",
        "The collector's configured refresh interval.",
        lambda s: s.collector.interval,
    ),
)


def _merge_families(snapshots: Iterator[list[Metric]]) -> Iterator[Metric]:
    """Merge families of the same name from several collectors (two domains both emit ad_dc_up)."""
    merged: dict[str, Metric] = {}
    for snapshot in snapshots:
        for family in snapshot:
            existing = merged.get(family.name)
            if existing is None:
                copy = Metric(family.name, family.documentation, family.type, family.unit)
                copy.samples = list(family.samples)
                merged[family.name] = copy
            else:
                existing.samples.extend(family.samples)
    yield from merged.values()
