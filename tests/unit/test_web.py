"""/metrics and /probe negotiation: formats, gzip, and the probe's deadline from Prometheus' scrape timeout."""

from __future__ import annotations

import gzip

from aiohttp.test_utils import TestClient, TestServer

from exporter.metrics import Family, Series
from exporter.registry import Collector, CollectorRegistry
from exporter.web import accepts_gzip, build_app, probe_timeout, wants_openmetrics

WEB_VALUE = Family("test_web_value", "gauge", "A value.", ("target",))


class One(Collector):
    name = "test_web"
    families = (WEB_VALUE,)

    async def collect(self) -> list[Series]:
        return [WEB_VALUE.one([self.target], 42.0)]


def test_probe_timeout_follows_the_scrape_timeout_but_never_exceeds_the_modules() -> None:
    assert probe_timeout(10.0, None) == 10.0
    assert probe_timeout(10.0, "4") == 3.5  # half a second kept for the answer
    assert probe_timeout(3.0, "30") == 3.0
    assert probe_timeout(10.0, "nonsense") == 10.0
    assert probe_timeout(10.0, "0.2") == 0.1


def test_negotiation_helpers() -> None:
    assert accepts_gzip("gzip, deflate") and accepts_gzip("br;q=1.0, gzip;q=0.8") and accepts_gzip("*")
    assert not accepts_gzip("") and not accepts_gzip("identity") and not accepts_gzip("gzip;q=0")
    assert wants_openmetrics("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
    assert not wants_openmetrics("") and not wants_openmetrics("text/plain")


async def test_metrics_serves_text_openmetrics_and_gzip_from_one_encoding() -> None:
    registry = CollectorRegistry([One("a", interval=60, timeout=5)])
    await registry.refresh_once(registry.states[0])
    async with TestClient(TestServer(build_app(lambda: registry))) as client:
        plain = await client.get("/metrics")
        text = await plain.text()
        assert plain.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert 'test_web_value{target="a"} 42.0' in text
        zipped = await client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text;version=1.0.0", "Accept-Encoding": "gzip"},
            auto_decompress=False,
        )  # fmt: skip
        assert zipped.headers["Content-Encoding"] == "gzip"
        body = gzip.decompress(await zipped.read()).decode()
        assert body.endswith("# EOF\n") and 'test_web_value{target="a"} 42.0' in body
        builds = registry.exposition.builds
        for _ in range(3):
            await client.get("/metrics")
        assert registry.exposition.builds == builds  # scrapes reuse the encoded body
