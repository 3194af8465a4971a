"""GET /api/v1/lockouts/{account}: the verdict as JSON from the evidence the collectors stored; bad names, unknown
accounts and too many requests answered as such."""

from __future__ import annotations

import time

from aiohttp.test_utils import TestClient, TestServer

from exporter.config import parse_config
from exporter.lockouts import LockoutService, RateLimit
from exporter.registry import CollectorRegistry
from exporter.state import Evidence, StateStore
from exporter.web import build_app

CONFIG = parse_config("""
exchange_logs:
  - server: ex1.corp.example
    addresses: [127.0.0.20]
    iis: ["/nonexistent/*.log"]
""")


def phone(status: str, count: int) -> dict[str, str]:
    return {
        "protocol": "activesync",
        "win32_status": status,
        "device_id": "ApplF17XYZ",
        "device_type": "iPhone",
        "client_ip": "198.51.100.9",
        "count": str(count),
    }


def stored(state: StateStore) -> None:
    now, dc = time.time(), "dc1.corp.example"
    hostile = {"reason": "wrong_password", "workstation": "<img src=x onerror=alert(1)>"}
    with state.transaction() as put:
        put.evidence(
            [
                Evidence(
                    "jdoe", now - 60, "security_event", dc, "4771", {"reason": "preauth_failed", "ip": "127.0.0.20"}
                ),
                Evidence("jdoe", now - 50, "iis", "ex1.corp.example", "401", phone("1326", 3)),
                Evidence("jdoe", now - 40, "iis", "ex1.corp.example", "401", phone("1909", 1)),
                Evidence("jdoe", now - 45, "security_event", dc, "4740", {"reason": "locked_out"}),
                Evidence("mallory", now - 30, "security_event", dc, "4625", hostile),
            ]
        )


async def test_the_verdict_as_json() -> None:
    state = StateStore()
    stored(state)
    app = build_app(lambda: CollectorRegistry([]), lockouts=LockoutService(state, lambda: CONFIG))
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/api/v1/lockouts/JDOE")
        assert response.status == 200 and response.content_type == "application/json"
        body = await response.json()
        assert body["api_version"] == 1 and body["account"] == "jdoe"
        top = body["sources"][0]
        assert (top["kind"], top["value"], top["via"], top["client_ip"], top["confidence"]) == (
            "device",
            "ApplF17XYZ",
            "ex1.corp.example",
            "198.51.100.9",
            "high",
        )
        assert body["origin_dcs"] == ["dc1.corp.example"]
        assert [e["kind"] for e in body["timeline"]] == ["401", "4740", "401", "4771"]  # newest first
        hostile = await (await client.get("/api/v1/lockouts/mallory")).json()
        assert hostile["sources"][0]["value"] == "<IMG SRC=X ONERROR=ALERT(1)>"  # data, for the page to escape


async def test_unknown_bad_and_too_many() -> None:
    state = StateStore()
    stored(state)
    limit = RateLimit(per_minute=3, per_account=60.0)
    app = build_app(lambda: CollectorRegistry([]), lockouts=LockoutService(state, lambda: CONFIG, limit))
    async with TestClient(TestServer(app)) as client:
        unknown = await client.get("/api/v1/lockouts/nobody")
        assert unknown.status == 404 and "nothing is known" in (await unknown.json())["error"]
        bad = await client.get("/api/v1/lockouts/a%0Ab")
        assert bad.status == 400 and "not an account name" in (await bad.json())["error"]
        assert (await client.get("/api/v1/lockouts/" + "x" * 300)).status == 400
        again = await client.get("/api/v1/lockouts/nobody")  # the same account within per_account seconds
        assert again.status == 429 and int(again.headers["Retry-After"]) >= 1
        assert (await client.get("/api/v1/lockouts/jdoe")).status == 200
        assert (await client.get("/api/v1/lockouts/mallory")).status == 200
        assert (await client.get("/api/v1/lockouts/alice")).status == 429  # three a minute in all


async def test_the_pages_escape_and_forbid_scripts() -> None:
    state = StateStore()
    stored(state)
    app = build_app(lambda: CollectorRegistry([]), lockouts=LockoutService(state, lambda: CONFIG))
    async with TestClient(TestServer(app)) as client:
        page = await client.get("/lockouts/mallory")
        assert page.status == 200 and page.content_type == "text/html"
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
        html = await page.text()
        assert "&lt;IMG SRC=X ONERROR=ALERT(1)&gt;" in html and "<img" not in html.lower()
        assert "<script" not in html.lower() and "style=" not in html  # nothing inline for the policy to allow
        css = await client.get("/static/lockouts.css")
        assert css.status == 200 and css.content_type == "text/css"
        unknown = await client.get("/lockouts/nobody")
        assert unknown.status == 404 and "Unknown account" in await unknown.text()
        search = await client.get("/lockouts/search?account=j%20doe", allow_redirects=False)
        assert search.status == 302 and search.headers["Location"] == "/lockouts/j%20doe"
        overview = await client.get("/lockouts")
        assert overview.status == 200 and "No account is locked now." in await overview.text()
