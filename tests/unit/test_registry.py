"""The registry: background refreshes, timeouts, cached snapshots, redaction."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry as PromRegistry
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from exporter.metrics import DeclarationError, Family, Series
from exporter.registry import Collector, CollectorRegistry, Redactor
from tests.helpers import samples, value

FAKE_VALUE = Family("fake_value", "gauge", "A value.", ("target",))


class Fake(Collector):
    name = "fake"
    families = (FAKE_VALUE,)

    def __init__(self, target: str, behaviour: list[str], timeout: float = 0.2) -> None:
        super().__init__(target, interval=60, timeout=timeout)
        self.behaviour = behaviour

    async def collect(self) -> list[Series]:
        step = self.behaviour.pop(0)
        if step == "fail":
            raise RuntimeError("bind failed for password Sup3r-Secret")
        if step == "hang":
            await asyncio.sleep(10)
        return [FAKE_VALUE.one([self.target], float(len(self.behaviour)))]


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


async def test_encoded_exposition_equals_prometheus_clients_and_is_cached() -> None:
    registry = CollectorRegistry([Fake("a", ["ok", "ok"]), Fake("b", ["ok"])])
    for state in registry.states:
        await registry.refresh_once(state)
    prom = PromRegistry(auto_describe=False)
    prom.register(registry)
    expected = {(s.name, tuple(sorted(s.labels.items())), s.value) for f in registry.collect() for s in f.samples}
    body = (await registry.exposition.body(openmetrics=False, compress=False)).decode()
    parsed = {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for f in text_string_to_metric_families(body)
        for s in f.samples
    }
    assert parsed == expected
    assert body == generate_latest(prom).decode()  # byte for byte what prometheus_client writes
    builds = registry.exposition.builds
    again = await asyncio.gather(*(registry.exposition.body(openmetrics=False, compress=False) for _ in range(5)))
    assert all(b.decode() == body for b in again)
    assert registry.exposition.builds == builds  # served from the cache: no new encoding per scrape
    await registry.refresh_once(registry.states[0])
    changed = (await registry.exposition.body(openmetrics=False, compress=False)).decode()
    assert registry.exposition.builds == builds + 1
    assert 'fake_value{target="a"} 0.0' in changed and 'fake_value{target="a"} 1.0' in body


async def test_undeclared_family_fails_the_refresh() -> None:
    class Sloppy(Fake):
        async def collect(self) -> list[Series]:
            family = GaugeMetricFamily("fake_undeclared", "Not declared.", labels=["target"])
            family.add_metric([self.target], 1.0)
            return [family]  # type: ignore[list-item]

    registry = CollectorRegistry([Sloppy("a", [])])
    await registry.refresh_once(registry.states[0])
    state = registry.states[0]
    assert not state.success
    assert "fake_undeclared, which it does not declare" in state.last_error


def test_wrong_labels_and_conflicting_declarations_are_refused() -> None:
    with pytest.raises(DeclarationError, match=r"fake_value: 2 label value\(s\)"):
        FAKE_VALUE.new().add_metric(["a", "b"], 1.0)
    with pytest.raises(DeclarationError, match="declared twice, differently"):
        Family("fake_value", "gauge", "Another HELP.", ("target",))
    with pytest.raises(DeclarationError, match="ends in _total"):
        Family("fake_events", "counter", "Events.")


def test_collectors_declaring_one_family_differently_fail_at_start() -> None:
    class Other(Collector):
        name = "other"
        # Built around the module-level check, as a collector made at run time would be.
        families = (object.__new__(Family),)

        async def collect(self) -> list[Series]:
            return []

    clash = Other.families[0]
    for field, setting in (("name", "fake_value"), ("kind", "counter"), ("help", "Something else."), ("labels", ())):
        object.__setattr__(clash, field, setting)
    with pytest.raises(DeclarationError, match="fake_value is declared twice"):
        CollectorRegistry([Fake("a", []), Other("x", 60, 1)])


class Behind(Fake):
    """Behind for its first refreshes (a backlog it works off), then caught up."""

    def __init__(self, behind_for: int) -> None:
        super().__init__("backlog", ["ok"] * (behind_for + 2))
        self.behind_for = behind_for
        self.refreshes = 0
        self.caught_up = asyncio.Event()

    async def collect(self) -> list[Series]:
        self.refreshes += 1
        if self.refreshes > self.behind_for:
            self.caught_up.set()
        return await super().collect()

    def behind(self) -> bool:
        return self.refreshes <= self.behind_for


async def test_a_collector_behind_refreshes_again_without_waiting_its_interval() -> None:
    behind, steady = Behind(3), Fake("steady", ["ok"] * 5)
    registry = CollectorRegistry([behind, steady])
    registry.start()
    try:
        # Its interval is 60 s: only catching up brings the fourth refresh within the wait.
        await asyncio.wait_for(behind.caught_up.wait(), timeout=10)
    finally:
        await registry.stop()
    assert behind.refreshes == 4
    # Once caught up it waits its interval again, and the other collector was never made to wait or hurry.
    assert registry.states[1].attempts == 1
