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
from typing import ClassVar

from prometheus_client.core import Metric
from prometheus_client.registry import Collector as PromCollector

from exporter import __version__, exposition
from exporter import clock as domain_time
from exporter.metrics import DeclarationError, Family, Series, check_families
from exporter.sources.pool import BlockingPool, SourceError

log = logging.getLogger(__name__)
# Between refreshes of a collector that is behind (a backlog): short, so a backlog drains in minutes, not hours,
# but a pause all the same, so the DC and the event loop get a breath.
CATCH_UP_PAUSE = 0.5


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


class Collector(ABC):
    """A source of metric families, refreshed in the background.

    ``name`` is the kind (``active_directory``), ``target`` the instance (a domain, a server group).
    """

    name: str = ""
    # Every family the collector exports, declared at module level; describe() returns them.
    families: ClassVar[tuple[Family, ...]] = ()
    # On close, let the pool's calls in flight finish (they commit bookmarks and checkpoints); collectors whose
    # calls only read from a server that may never answer do not wait.
    wait_on_close: bool = True

    def __init__(
        self,
        target: str,
        interval: float,
        timeout: float,
        *,
        concurrency: int = 1,
        error: type[SourceError] = SourceError,
    ) -> None:
        self.target = target
        self.interval = interval
        self.timeout = timeout
        # The collector's blocking I/O runs here: at most ``concurrency`` targets at once, each within a deadline.
        self.pool = BlockingPool(f"{self.name}-{target}", concurrency, error=error)

    @abstractmethod
    async def collect(self) -> list[Series]:
        """Return a complete snapshot. Per-target failures are reported inside it, not raised."""

    def describe(self) -> tuple[Family, ...]:
        return self.families

    def target_status(self) -> list[TargetStatus]:
        return []

    def target_deadlines(self, per_request: float) -> tuple[float, float]:
        """(deadline, lock wait) for one target's calls in a refresh: several requests of ``per_request`` each, kept
        well inside the collector's own timeout, so that a target that stops answering is reported as timing out
        in this refresh instead of taking the whole refresh, and every other target's figures, down with it."""
        deadline = min(per_request * 2, self.timeout * 0.9)
        return deadline, min(per_request, deadline / 2)

    def behind(self) -> bool:
        """True when the last refresh stopped at its per-refresh limit with more to read (a backlog): the next
        refresh then starts after CATCH_UP_PAUSE instead of the interval, until it has caught up."""
        return False

    async def close(self) -> None:
        """Release connections and threads (subclasses close their clients, then call this)."""
        await self.pool.shutdown(wait=self.wait_on_close)


BUILD_INFO = Family(
    "ad_exchange_exporter_build_info",
    "gauge",
    "The exporter's version and Python version.",
    ("version", "python_version"),
)
_PER_COLLECTOR = ("collector", "target")
COLLECTOR_SUCCESS = Family(
    "ad_exchange_exporter_collector_success",
    "gauge",
    "1 if the collector's last refresh succeeded. Its metrics are served from that refresh's cache.",
    _PER_COLLECTOR,
)
COLLECTOR_DURATION = Family(
    "ad_exchange_exporter_collector_duration_seconds",
    "gauge",
    "How long the collector's last refresh took.",
    _PER_COLLECTOR,
)
COLLECTOR_LAST_SUCCESS = Family(
    "ad_exchange_exporter_collector_last_success_timestamp_seconds",
    "gauge",
    "When the collector last refreshed successfully (0 if never); cached metrics are this old.",
    _PER_COLLECTOR,
)
COLLECTOR_REFRESHES = Family(
    "ad_exchange_exporter_collector_refreshes_total",
    "counter",
    "Refreshes of the collector, successful or not. Scrapes never cause one: they read the cache.",
    _PER_COLLECTOR,
)
COLLECTOR_FAILURES = Family(
    "ad_exchange_exporter_collector_failures_total",
    "counter",
    "Refreshes of the collector that failed as a whole (timeout or error).",
    _PER_COLLECTOR,
)
COLLECTOR_INTERVAL = Family(
    "ad_exchange_exporter_collector_interval_seconds",
    "gauge",
    "The collector's configured refresh interval.",
    _PER_COLLECTOR,
)


@dataclass
class CollectorState:
    collector: Collector
    snapshot: list[Series] = field(default_factory=list)
    # The snapshot's sample lines and headers, encoded once per refresh.
    encoded: tuple[exposition.EncodedSnapshot, dict[str, exposition.Header]] = ({}, {})
    attempts: int = 0
    success: bool = False
    last_duration: float = 0.0
    last_success: float = 0.0
    last_error: str = ""
    failures_total: int = 0


_SELF_METRICS: tuple[tuple[Family, Callable[[CollectorState], float]], ...] = (
    (COLLECTOR_SUCCESS, lambda s: 1.0 if s.success else 0.0),
    (COLLECTOR_DURATION, lambda s: s.last_duration),
    (COLLECTOR_LAST_SUCCESS, lambda s: s.last_success),
    (COLLECTOR_REFRESHES, lambda s: s.attempts),
    (COLLECTOR_FAILURES, lambda s: s.failures_total),
    (COLLECTOR_INTERVAL, lambda s: s.collector.interval),
)
SELF_FAMILIES = (BUILD_INFO, *(family for family, _ in _SELF_METRICS))


class CollectorRegistry(PromCollector):
    """Owns the collectors' refresh loops, their snapshots and the encoded exposition."""

    def __init__(
        self,
        collectors: Sequence[Collector],
        redact: Redactor | None = None,
        clock: Callable[[], float] = domain_time.now,
        jitter: float = 0.1,
    ) -> None:
        # Two collectors declaring one family differently fail here, at start.
        check_families([*SELF_FAMILIES, *(f for c in collectors for f in c.describe())])
        self._states = [CollectorState(c) for c in collectors]
        self._redact = redact or Redactor()
        self._clock = clock
        self._jitter = jitter
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._self_encoded: tuple[exposition.EncodedSnapshot, dict[str, exposition.Header]] = ({}, {})
        self.exposition = exposition.Exposition(self._parts)
        self._encode_self()

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
        # Python 3.11's wait_for can swallow a cancel that lands as its inner call finishes; the flag ends the
        # loop at its next turn all the same.
        self._stopping = True
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
            _check_snapshot(collector, snapshot)
            # Once per refresh, in short steps between scrapes: scrapes serve these lines until the next one.
            encoded = await exposition.encode_snapshot_async(snapshot)
        except TimeoutError:
            self._failed(state, f"timed out after {collector.timeout:g}s")
        except Exception as exc:
            log.exception("collector %s/%s failed", collector.name, collector.target)
            self._failed(state, f"{type(exc).__name__}: {exc}")
        else:
            state.snapshot = snapshot
            state.encoded = encoded
            state.success = True
            state.last_success = self._clock()
            state.last_error = ""
        finally:
            state.attempts += 1
            state.last_duration = time.monotonic() - started
            self._encode_self()
            self.exposition.changed()

    def _failed(self, state: CollectorState, error: str) -> None:
        # The last good snapshot is kept (HELP says so) and its age is visible via last_success_timestamp.
        state.success = False
        state.failures_total += 1
        state.last_error = self._redact(error)
        log.warning("collector %s/%s: %s", state.collector.name, state.collector.target, state.last_error)

    async def _loop(self, state: CollectorState) -> None:
        interval = state.collector.interval
        while not self._stopping:
            started = time.monotonic()
            await self.refresh_once(state)
            # Jitter spreads the load on the DCs when many exporters start together.
            delay = interval * (1 + random.uniform(-self._jitter, self._jitter)) - (time.monotonic() - started)  # noqa: S311
            if state.success and state.collector.behind():
                delay = min(delay, CATCH_UP_PAUSE)  # a backlog is drained back to back, with a breath between
            await asyncio.sleep(max(delay, 0.0))

    def _self_metrics(self) -> list[Series]:
        families = [BUILD_INFO.one([__version__, platform.python_version()], 1.0)]
        for family, read in _SELF_METRICS:
            series = family.new()
            for state in self._states:
                series.add_metric([state.collector.name, state.collector.target], read(state))
            families.append(series)
        return families

    def _encode_self(self) -> None:
        self._self_encoded = exposition.encode_snapshot(self._self_metrics())

    def _parts(self) -> list[tuple[exposition.EncodedSnapshot, dict[str, exposition.Header]]]:
        return [self._self_encoded, *(s.encoded for s in self._states)]

    # prometheus_client protocol (tests, and anything that wants the families rather than bytes)
    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self._self_metrics()
        yield from _merge_families(s.snapshot for s in self._states)


def _check_snapshot(collector: Collector, snapshot: Sequence[Metric]) -> None:
    """A family the collector did not declare is a bug: the refresh fails and says which."""
    declared = set(collector.describe())
    for family in snapshot:
        if not isinstance(family, Series) or family.family not in declared:
            raise DeclarationError(f"{collector.name} returned {family.name}, which it does not declare")


def _merge_families(snapshots: Iterator[list[Series]]) -> Iterator[Metric]:
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
