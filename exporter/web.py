"""The HTTP side: landing page, /metrics, /probe, /api/v1/lockouts/{account}, /-/healthy, /-/ready (aiohttp)."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import time
from collections.abc import Callable, Iterable
from urllib.parse import quote

from aiohttp import web
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder

from exporter import __version__, exposition, pages, web_server
from exporter import clock as domain_time
from exporter.collectors.smtp_probe import probe_families, probe_target
from exporter.config import ProbesConfig
from exporter.lockouts import InvalidAccount, LockoutService, RateLimited
from exporter.patch_days import PatchDays
from exporter.registry import CollectorRegistry
from exporter.web_security import WebSecurity, security_middleware

TAIL_MAX_AGE = 1.0  # seconds the per-scrape families (process, reload state) are reused
PROBE_TIMEOUT_MARGIN = 0.5  # seconds kept for answering, as blackbox_exporter's scrape_timeout offset


def wants_openmetrics(accept: str) -> bool:
    """Prometheus asks for OpenMetrics first; curl and browsers get the text format."""
    return choose_encoder(accept)[1].startswith("application/openmetrics-text")


def accepts_gzip(accept_encoding: str) -> bool:
    for token in accept_encoding.split(","):
        name, _, params = token.strip().partition(";")
        if name.strip().lower() in ("gzip", "*"):
            quality = params.strip().removeprefix("q=")
            return not (params.strip().startswith("q=") and _float(quality) == 0.0)
    return False


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 1.0


def probe_timeout(module_timeout: float, header: str | None) -> float:
    """The probe's deadline: the module's, shortened to what Prometheus waits (X-Prometheus-Scrape-Timeout-Seconds)
    less a margin for the answer, never longer than the module's."""
    if header is None:
        return module_timeout
    try:
        scrape_timeout = float(header)
    except ValueError:
        return module_timeout
    if not scrape_timeout > 0:
        return module_timeout
    return max(min(module_timeout, scrape_timeout - PROBE_TIMEOUT_MARGIN), 0.1)


def build_app(
    get_registry: Callable[[], CollectorRegistry],
    per_scrape: Callable[[], Iterable[Metric]] = list,
    get_probes: Callable[[], ProbesConfig] | None = None,
    get_security: Callable[[], WebSecurity | None] | None = None,
    lockouts: LockoutService | None = None,
    patch_days: PatchDays | None = None,
) -> web.Application:
    """The registry and web security are fetched per request, so a config reload can swap them.

    ``per_scrape`` gives the few families that change between refreshes (process, reload state); the rest is
    served from the registry's encoded exposition.
    """
    app = web.Application(
        middlewares=[security_middleware(get_security or (lambda: None))], client_max_size=web_server.Limits.max_body
    )
    app.on_response_prepare.append(web_server.add_security_headers)

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
        timeout = probe_timeout(module.timeout_seconds, request.headers.get("X-Prometheus-Scrape-Timeout-Seconds"))
        result = await probe_target(target, module, timeout)
        openmetrics = wants_openmetrics(request.headers.get("Accept", ""))
        body = exposition.render(probe_families(result, module), openmetrics)
        if openmetrics:
            body += b"# EOF\n"
        return web.Response(body=body, headers={"Content-Type": _content_type(openmetrics)})

    tails: dict[tuple[bool, bool], tuple[float, bytes]] = {}

    def tail(openmetrics: bool, compress: bool) -> bytes:
        # Reading the process' own figures and packing them costs more than serving the cached body: at most
        # once a second (what 20 scrapers a second would otherwise pay 20 times).
        now = time.monotonic()
        cached = tails.get((openmetrics, compress))
        if cached is None or now - cached[0] >= TAIL_MAX_AGE:
            cached = tails[(openmetrics, compress)] = (now, exposition.tail(per_scrape(), openmetrics, compress))
        return cached[1]

    async def metrics(request: web.Request) -> web.Response:
        openmetrics = wants_openmetrics(request.headers.get("Accept", ""))
        compress = accepts_gzip(request.headers.get("Accept-Encoding", ""))
        body = await get_registry().exposition.body(openmetrics, compress, wait=False)
        body += tail(openmetrics, compress)
        headers = {"Content-Type": _content_type(openmetrics)}
        if compress:
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)

    async def healthy(_: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    async def ready(_: web.Request) -> web.Response:
        if get_registry().ready:
            return web.Response(text="Ready\n")
        return web.Response(status=503, text="Not ready: collectors have not finished their first refresh\n")

    async def landing(_: web.Request) -> web.Response:
        return web.Response(
            text=landing_page(get_registry()),
            content_type="text/html",
            headers={"Content-Security-Policy": LANDING_CONTENT_SECURITY_POLICY},
        )

    async def lockout_api(request: web.Request) -> web.Response:
        if lockouts is None:
            return _json_error(404, "the lockout investigator needs the state database (state:)")
        try:
            found = await lockouts.account(request.match_info["account"])
        except InvalidAccount as exc:
            return _json_error(400, str(exc))
        except RateLimited as exc:
            return _json_error(429, str(exc), {"Retry-After": f"{max(exc.retry_after, 1):.0f}"})
        if found is None:
            return _json_error(404, "nothing is known of this account: no failed logon, lockout or 401 kept for it")
        return web.json_response(found, dumps=_dumps)

    async def lockouts_api(_: web.Request) -> web.Response:
        if lockouts is None:
            return _json_error(404, "the lockout investigator is not configured")
        return web.json_response(await lockouts.overview(), dumps=_dumps)

    def page(status: int, template: str, **context: object) -> web.Response:
        return web.Response(
            status=status,
            text=pages.render(template, **context),
            content_type="text/html",
            headers={"Content-Security-Policy": pages.CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff"},
        )

    async def lockouts_page(_: web.Request) -> web.Response:
        if lockouts is None:
            return page(404, "error.html", title="Not configured", message="The lockout investigator is not set up.")
        overview = await lockouts.overview()
        return page(200, "lockouts.html", locked=overview["locked"], near=overview["near"])

    async def lockout_page(request: web.Request) -> web.Response:
        if lockouts is None:
            return page(404, "error.html", title="Not configured", message="The lockout investigator is not set up.")
        name = request.match_info["account"]
        try:
            found = await lockouts.account(name)
        except InvalidAccount as exc:
            return page(400, "error.html", title="Not an account name", message=str(exc))
        except RateLimited as exc:
            response = page(429, "error.html", title="Too many requests", message=str(exc))
            response.headers["Retry-After"] = f"{max(exc.retry_after, 1):.0f}"
            return response
        if found is None:
            return page(
                404,
                "error.html",
                title="Unknown account",
                message=f"No DC knows {name}, and no failed logon, lockout or 401 was kept for it.",
            )
        locked_dcs = [row["dc"] for table in found["directory"] for row in table["dcs"] if row["locked"]]
        return page(200, "lockout.html", v=found, locked_dcs=locked_dcs)

    async def lockout_search(request: web.Request) -> web.Response:
        name = request.query.get("account", "").strip()
        raise web.HTTPFound(f"/lockouts/{quote(name, safe='')}" if name else "/lockouts")

    async def stylesheet(_: web.Request) -> web.Response:
        return web.Response(body=pages.stylesheet(), content_type="text/css", headers={"Cache-Control": "max-age=3600"})

    async def patch_days_api(_: web.Request) -> web.Response:
        if patch_days is None:
            return _json_error(404, "the patch-day report is not configured")
        return web.json_response({"changes": await patch_days.report()}, dumps=_dumps)

    async def patch_days_page(_: web.Request) -> web.Response:
        if patch_days is None:
            return page(404, "error.html", title="Not configured", message="The patch-day report is not set up.")
        settings = patch_days.settings()
        return page(
            200,
            "patch_days.html",
            changes=await patch_days.report(),
            before_hours=round(settings.before_seconds / 3600, 1),
            recent_minutes=round(settings.recent_seconds / 60),
            install_minutes=round(settings.install_seconds / 60),
            sample_seconds=settings.sample_interval_seconds,
        )

    app.router.add_get("/", landing)
    app.router.add_get("/patch-days", patch_days_page)
    app.router.add_get("/api/v1/patch-days", patch_days_api)
    app.router.add_get("/lockouts", lockouts_page)
    app.router.add_get("/lockouts/search", lockout_search)
    app.router.add_get("/lockouts/{account}", lockout_page)
    app.router.add_get("/static/lockouts.css", stylesheet)
    app.router.add_get("/api/v1/lockouts", lockouts_api)
    app.router.add_get("/api/v1/lockouts/{account}", lockout_api)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/probe", probe)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    return app


def _dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def _json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers, dumps=_dumps)


def _content_type(openmetrics: bool) -> str:
    return exposition.OPENMETRICS_CONTENT_TYPE if openmetrics else exposition.TEXT_CONTENT_TYPE


def _ago(timestamp: float) -> str:
    if not timestamp:
        return "never"
    seconds = max(domain_time.now() - timestamp, 0)
    return f"{seconds:.0f}s ago"


LANDING_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222} table{border-collapse:collapse;margin-bottom:2em}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#f3f3f3} tr.ok td:nth-child(3){color:#1a7f37} tr.failing td:nth-child(3){color:#cf222e;font-weight:bold}
"""
# The landing page's one inline style block, allowed by its hash; nothing else (no script, no other style).
_LANDING_STYLE_HASH = base64.b64encode(hashlib.sha256(LANDING_STYLE.encode()).digest()).decode()
LANDING_CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_LANDING_STYLE_HASH}'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


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
<style>{LANDING_STYLE}</style></head><body>
<h1>ad-exchange-exporter {esc(__version__)}</h1>
<p><a href="/metrics">Metrics</a> · <a href="/lockouts">Lockouts</a> · <a href="/patch-days">Patch days</a> ·
<a href="/-/healthy">Health</a> · <a href="/-/ready">Readiness</a></p>
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
