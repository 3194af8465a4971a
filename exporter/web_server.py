"""The listener: aiohttp's server behind a guard that bounds what one client can hold, and the headers every
answer carries.

aiohttp bounds header sizes but not time: a client that sends its headers a byte a minute (slowloris) or opens
connections and says nothing keeps a connection, a file descriptor and memory for as long as it likes, and a few
hundred of them starve Prometheus' scrapes. The guard sits between the transport and aiohttp's protocol: it caps
the open connections (one more is answered 503 and closed), gives every request ``header_timeout`` seconds from
its first byte (and a new connection as long to send one) to finish its headers, and aborts the connection
otherwise. aiohttp's own keep-alive timeout closes connections idle between requests. A malformed request
(aiohttp answers it 400 and closes) is counted, and said once a minute at most: aiohttp logs each one at ERROR
with a traceback, which lets anyone who can connect fill the log.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from exporter.metrics import Family, Series

_REFUSED = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\nRetry-After: 1\r\n\r\n"
_END_OF_HEADERS = b"\r\n\r\n"

# Every answer; a page or the web config may set its own (a page's CSP allows its stylesheet).
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
}
# Answers about accounts and lockouts are not for a proxy's or browser's cache.
_NO_STORE_TYPES = ("text/html", "application/json")

CONNECTIONS = Family("ad_exchange_exporter_web_connections", "gauge", "Connections open to the exporter's listener.")
CONNECTIONS_CLOSED_TOTAL = Family(
    "ad_exchange_exporter_web_connections_closed_total",
    "counter",
    "Connections the listener closed itself, by reason: max_connections (refused with 503 at the cap), "
    "header_timeout (headers not complete within header_timeout_seconds: a slow or stalled client), bad_request "
    "(a malformed request, answered 400).",
    ("reason",),
)


@dataclass(frozen=True)
class Limits:
    max_connections: int = 256
    header_timeout: float = 10.0  # seconds for a request's headers, from its first byte
    idle_timeout: float = 120.0  # keep-alive: longer than a scrape interval, so Prometheus reuses its connection
    max_line_size: int = 8190  # the request line and each header line, bytes
    max_field_size: int = 8190
    max_headers: int = 64
    max_body: int = 64 * 1024  # every endpoint is a GET


@dataclass
class ListenerStats:
    open: int = 0
    closed: dict[str, int] = field(
        default_factory=lambda: {"max_connections": 0, "header_timeout": 0, "bad_request": 0}
    )

    def series(self) -> list[Series]:
        closed = CONNECTIONS_CLOSED_TOTAL.new()
        for reason, n in sorted(self.closed.items()):
            closed.add_metric([reason], n)
        return [CONNECTIONS.one([], self.open), closed]


class _MalformedRequests(logging.Filter):
    """On aiohttp's server logger, which reports every request it cannot parse (400, then close): at ERROR with a
    traceback, or at DEBUG for a first request that is not HTTP at all (TLS on the plain port). Each is counted;
    one WARNING line a minute at most says how many came since the last and what the last one was. The logger is
    kept at DEBUG so that none goes uncounted; its other DEBUG records pass only if the root logger wants them."""

    REPORT_EVERY = 60.0

    def __init__(self) -> None:
        super().__init__()
        self.stats = ListenerStats()
        self._unreported = 0
        self._last_report = -self.REPORT_EVERY

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return logging.getLogger().isEnabledFor(record.levelno)
        self.stats.closed["bad_request"] += 1
        self._unreported += 1
        now = time.monotonic()
        if now - self._last_report < self.REPORT_EVERY:
            return False
        what = " ".join(str(exc.message or type(exc).__name__).split())[:160]  # one line, whatever was sent
        record.msg, record.args = (
            "malformed HTTP requests answered 400: %d since the last report (the last: %s)",
            (
                self._unreported,
                what,
            ),
        )
        record.levelno, record.levelname, record.exc_info, record.exc_text = logging.WARNING, "WARNING", None, None
        self._unreported, self._last_report = 0, now
        return True


_MALFORMED = _MalformedRequests()
logging.getLogger("aiohttp.server").addFilter(_MALFORMED)
logging.getLogger("aiohttp.server").setLevel(logging.DEBUG)


class _Guard(asyncio.Protocol):
    """One connection: counted against the cap, timed until each request's headers are complete."""

    def __init__(self, inner_factory: Callable[[], asyncio.Protocol], limits: Limits, stats: ListenerStats) -> None:
        self._inner_factory = inner_factory
        self._inner: asyncio.Protocol | None = None
        self._limits = limits
        self._stats = stats
        self._transport: Any = None  # asyncio's or uvloop's transport (uvloop's are not asyncio's classes)
        self._timer: asyncio.TimerHandle | None = None
        self._in_headers = True  # a new connection owes its first request's headers
        self._tail = b""  # the last bytes seen, so an end of headers split across reads is found

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        if self._stats.open >= self._limits.max_connections:
            self._stats.closed["max_connections"] += 1
            self._transport.write(_REFUSED)
            transport.close()
            return
        self._stats.open += 1
        self._inner = self._inner_factory()
        self._inner.connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        self._cancel()
        self._timer = asyncio.get_running_loop().call_later(self._limits.header_timeout, self._timed_out)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._transport is not None and not self._transport.is_closing():
            self._stats.closed["header_timeout"] += 1
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if not self._in_headers:  # GET only: what follows a request's headers is the next request
            self._in_headers, self._tail = True, b""
            self._arm()
        seen = self._tail + data
        if _END_OF_HEADERS in seen:
            # Pipelined requests may follow in the same read: only the last one's headers are still owed.
            last = seen.rindex(_END_OF_HEADERS) + len(_END_OF_HEADERS)
            self._in_headers = last < len(seen)
            self._tail = seen[last:][-3:]
            if self._in_headers:
                self._arm()
            else:
                self._cancel()
        else:
            self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        if self._inner is not None:
            self._stats.open -= 1
            self._inner.connection_lost(exc)
            self._inner = None


class GuardedSite(web.BaseSite):
    """aiohttp's TCPSite with the guard in front of each connection."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        limits: Limits,
        stats: ListenerStats,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host, self._port, self._limits, self._stats = host, port, limits, stats

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    @property
    def bound_port(self) -> int:
        """The port listened on (the one the system chose for port 0)."""
        server = self._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else self._port

    async def start(self) -> None:
        await super().start()
        _MALFORMED.stats = self._stats  # the process's listener counts them
        server = self._runner.server
        assert server is not None
        inner: Callable[[], asyncio.Protocol] = server
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Guard(inner, self._limits, self._stats),
            self._host,
            self._port,
            ssl=self._ssl_context,
            reuse_address=True,
        )


def runner_for(app: web.Application, limits: Limits) -> web.AppRunner:
    return web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=limits.idle_timeout,
        max_line_size=limits.max_line_size,
        max_field_size=limits.max_field_size,
        max_headers=limits.max_headers,
    )


async def add_security_headers(_: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer, the router's 404s and 405s included."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if response.content_type in _NO_STORE_TYPES:
        response.headers.setdefault("Cache-Control", "no-store")
