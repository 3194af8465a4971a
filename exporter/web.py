"""The HTTP side: landing page, /metrics, /probe, /-/healthy, /-/ready (aiohttp)."""

from __future__ import annotations

import html
import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry as PromRegistry
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder

from exporter import __version__
from exporter.collectors.smtp_probe import probe_families
from exporter.config import ProbesConfig
from exporter.registry import CollectorRegistry
from exporter.sources.smtp import probe_smtp
from exporter.web_security import WebSecurity, security_middleware

REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
PROM_KEY = web.AppKey("prom", PromRegistry)


class _Families:
    """A one-off prometheus_client collector around the families of one probe."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def build_app(
    get_registry: Callable[[], CollectorRegistry],
    prom: Callable[[], PromRegistry],
    get_probes: Callable[[], ProbesConfig] | None = None,
    get_security: Callable[[], WebSecurity | None] | None = None,
) -> web.Application:
    """The registry and web security are fetched per request, so a config reload can swap them."""
    app = web.Application(middlewares=[security_middleware(get_security or (lambda: None))])

    async def probe(request: web.Request) -> web.Response:
        probes = get_probes() if get_probes else ProbesConfig()
        module_name, target = request.query.get("module", ""), request.query.get("target", "")
        module = probes.modules.get(module_name)
        if module is None:
            return web.Response(
                status=400,
                text=f"unknown module {module_name!r}; configured: {', '.join(sorted(probes.modules)) or 'none'}\n",
            )
        if target not in probes.allowed_targets:
            return web.Response(status=403, text=f"target {target!r} is not in probes.allowed_targets\n")
        host, _, port = target.rpartition(":")
        result = await probe_smtp(
            host.strip("[]"),
            int(port),
            timeout=module.timeout_seconds,
            ehlo_hostname=module.ehlo_hostname,
            starttls=module.starttls,
            verify=module.verify,
            ca_file=module.ca_file,
            server_name=module.server_name,
        )
        registry = PromRegistry(auto_describe=False)
        registry.register(_Families(probe_families(result, module)))
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(registry), headers={"Content-Type": content_type})

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
    app.router.add_get("/probe", probe)
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
{"".join(rows) or "<tr><td colspan=7>No collectors configured.</td></tr>"}
</table>
<h2>Targets</h2>
<table><tr><th>collector</th><th>target</th><th>state</th><th>detail</th></tr>
{"".join(target_rows) or "<tr><td colspan=4>No targets yet.</td></tr>"}
</table>
</body></html>
"""
