"""The registry: background refreshes, timeouts, cached snapshots, redaction."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry as PromRegistry
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.registry import Collector, CollectorRegistry, Redactor
from tests.helpers import samples, value


class Fake(Collector):
    name = "fake"

    def __init__(self, target: str, behaviour: list[str], timeout: float = 0.2) -> None:
        super().__init__(target, interval=60, timeout=timeout)
        self.behaviour = behaviour

    async def collect(self) -> list[Metric]:
        step = self.behaviour.pop(0)
        if step == "fail":
            raise RuntimeError("bind failed for password Sup3r-Secret")
        if step == "hang":
            await asyncio.sleep(10)
        family = GaugeMetricFamily("fake_value", "A value.", labels=["target"])
        family.add_metric([self.target], float(len(self.behaviour)))
        return [family]


async def test_failure_keeps_last_snapshot_and_other_collectors() -> None:
    good, flaky = Fake("a", ["ok", "ok"]), Fake("b", ["ok", "fail", "hang"])
    registry = CollectorRegistry([good, flaky], Redactor(["Sup3r-Secret"]))
    for _ in range(2):
        for state in registry.states:
            await registry.refresh_once(state)
    flat = samples(registry.collect())
    assert value(flat, "ad_exchange_exporter_collector_success", collector="fake", target="a") == 1
    assert value(flat, "ad_exchange_exporter_collector_success", collector="fake", target="b") == 0
    assert value(flat, "ad_exchange_exporter_collector_failures_total", collector="fake", target="b") == 1
    # b's last good snapshot is still served (its age shows in last_success_timestamp)
    assert value(flat, "fake_value", target="b") == 2
    assert value(flat, "fake_value", target="a") == 0
    state_b = registry.states[1]
    assert "Sup3r-Secret" not in state_b.last_error and "<redacted>" in state_b.last_error
    await registry.refresh_once(state_b)  # hangs past its timeout
    assert state_b.last_error == "timed out after 0.2s"
    assert registry.ready


async def test_scrape_output_is_valid_with_families_merged_across_collectors() -> None:
    registry = CollectorRegistry([Fake("a", ["ok"]), Fake("b", ["ok"])])
    for state in registry.states:
        await registry.refresh_once(state)
    prom = PromRegistry(auto_describe=False)
    prom.register(registry)
    text = generate_latest(prom).decode()
    assert text.count("# TYPE fake_value gauge") == 1
    assert 'fake_value{target="a"}' in text and 'fake_value{target="b"}' in text


async def test_background_loop_runs_and_stops() -> None:
    collector = Fake("a", ["ok"] * 100)
    collector.interval = 0.01
    registry = CollectorRegistry([collector], jitter=0.0)
    assert not registry.ready
    registry.start()
    await asyncio.sleep(0.1)
    await registry.stop()
    assert registry.ready
    assert registry.states[0].attempts >= 3
