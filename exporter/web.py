"""The HTTP side: landing page, /metrics, /-/healthy, /-/ready (aiohttp)."""

from __future__ import annotations

import html
import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry as PromRegistry
from prometheus_client.exposition import choose_encoder

from exporter import __version__
from exporter.registry import CollectorRegistry

REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
PROM_KEY = web.AppKey("prom", PromRegistry)


def build_app(get_registry: Callable[[], CollectorRegistry], prom: Callable[[], PromRegistry]) -> web.Application:
    """The registry is fetched per request, so a config reload can swap it under a running server."""
    app = web.Application()

    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(prom())
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthy(_: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    async def ready(_: web.Request) -> web.Response:
        if get_registry().ready:
            return web.Response(text="Ready\n")
        return web.Response(status=503, text="Not ready: collectors have not finished their first refresh\n")

    async def landing(_: web.Request) -> web.Response:
        return web.Response(text=landing_page(get_registry()), content_type="text/html")

    app.router.add_get("/", landing)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    return app


def _ago(timestamp: float) -> str:
    if not timestamp:
        return "never"
    seconds = max(time.time() - timestamp, 0)
    return f"{seconds:.0f}s ago"


def landing_page(registry: CollectorRegistry) -> str:
    """Collectors, their targets, last success and last error. Errors are stored redacted."""
    esc = html.escape
    rows = []
    target_rows = []
    for state in registry.states:
        c = state.collector
        status = "ok" if state.success else ("pending" if state.attempts == 0 else "failing")
        rows.append(
            f"<tr class='{status}'><td>{esc(c.name)}</td><td>{esc(c.target)}</td><td>{status}</td>"
            f"<td>{c.interval:g}s</td><td>{state.last_duration:.2f}s</td><td>{_ago(state.last_success)}</td>"
            f"<td>{esc(state.last_error)}</td></tr>"
        )
        for target in c.target_status():
            cls = "ok" if target.up else "failing"
            target_rows.append(
                f"<tr class='{cls}'><td>{esc(c.name)}/{esc(c.target)}</td><td>{esc(target.name)}</td>"
                f"<td>{'up' if target.up else 'down'}</td><td>{esc(target.detail)}</td></tr>"
            )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ad-exchange-exporter</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse;margin-bottom:2em}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}} th{{background:#f3f3f3}}
tr.ok td:nth-child(3){{color:#1a7f37}} tr.failing td:nth-child(3){{color:#cf222e;font-weight:bold}}
</style></head><body>
<h1>ad-exchange-exporter {esc(__version__)}</h1>
<p><a href="/metrics">Metrics</a> · <a href="/-/healthy">Health</a> · <a href="/-/ready">Readiness</a></p>
<h2>Collectors</h2>
<table><tr><th>collector</th><th>target</th><th>state</th><th>interval</th><th>last duration</th>
<th>last success</th><th>last error</th></tr>
{''.join(rows) or '<tr><td colspan=7>No collectors configured.</td></tr>'}
</table>
<h2>Targets</h2>
<table><tr><th>collector</th><th>target</th><th>state</th><th>detail</th></tr>
{''.join(target_rows) or '<tr><td colspan=4>No targets yet.</td></tr>'}
</table>
</body></html>
"""
