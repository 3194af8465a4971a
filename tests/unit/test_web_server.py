"""The listener's guard against clients that hold it (slowloris, idle connections, too many connections, huge
headers), and the security headers on every answer, against a real socket on the loopback."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from exporter.registry import CollectorRegistry
from exporter.web import LANDING_CONTENT_SECURITY_POLICY, build_app
from exporter.web_server import SECURITY_HEADERS, GuardedSite, Limits, ListenerStats, runner_for


@asynccontextmanager
async def listener(limits: Limits) -> AsyncIterator[tuple[int, ListenerStats]]:
    stats = ListenerStats()
    runner = runner_for(build_app(lambda: CollectorRegistry([])), limits)
    await runner.setup()
    site = GuardedSite(runner, "127.0.0.1", 0, limits, stats)
    await site.start()
    try:
        yield site.bound_port, stats
    finally:
        await runner.cleanup()


async def get(port: int, path: str = "/-/healthy") -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as response:
        await response.read()
        return response


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    """Seconds until the server closed the connection (reads until EOF or reset)."""
    started = time.monotonic()
    try:
        while await asyncio.wait_for(reader.read(1024), seconds):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - started


async def test_security_headers_on_every_answer() -> None:
    async with listener(Limits()) as (port, _):
        for path, status in (("/", 200), ("/metrics", 200), ("/-/healthy", 200), ("/nowhere", 404)):
            response = await get(port, path)
            assert response.status == status, path
            for name, value in SECURITY_HEADERS.items():
                if name != "Content-Security-Policy":
                    assert response.headers[name] == value, (path, name)
            assert "default-src 'none'" in response.headers["Content-Security-Policy"], path
        landing = await get(port, "/")
        assert landing.headers["Content-Security-Policy"] == LANDING_CONTENT_SECURITY_POLICY
        assert landing.headers["Cache-Control"] == "no-store"
        api = await get(port, "/api/v1/lockouts")  # not configured: a JSON 404, still not for caches
        assert api.status == 404 and api.headers["Cache-Control"] == "no-store"


async def test_a_slow_client_is_cut_off_and_others_are_served() -> None:
    async with listener(Limits(header_timeout=1.0)) as (port, stats):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")

        async def drip() -> None:
            for _ in range(40):  # a header byte every 0.1 s: never done within the second
                await asyncio.sleep(0.1)
                if writer.is_closing():
                    return
                writer.write(b"X")

        dripping = asyncio.create_task(drip())
        assert (await get(port)).status == 200  # served while the slow one drips
        assert await closed_within(reader, 5.0) < 2.5
        dripping.cancel()
        writer.close()
        assert stats.closed["header_timeout"] == 1
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", port)  # connects and says nothing
        assert await closed_within(silent_reader, 5.0) < 2.5
        silent.close()
        assert stats.closed["header_timeout"] == 2


async def test_keep_alive_requests_each_get_the_header_timeout() -> None:
    async with listener(Limits(header_timeout=1.0)) as (port, stats):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(3):  # three requests on one connection, 0.6 s apart: each within its own second
            writer.write(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
            status = await reader.readline()
            assert status.startswith(b"HTTP/1.1 200"), status
            while (await reader.readline()) != b"\r\n":
                pass
            await reader.readexactly(3)  # "OK\n"
            await asyncio.sleep(0.6)
        assert stats.closed["header_timeout"] == 0
        writer.close()


async def test_connections_over_the_cap_get_503_until_one_closes() -> None:
    async with listener(Limits(max_connections=4, header_timeout=30.0)) as (port, stats):
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        await asyncio.sleep(0.05)
        assert stats.open == 4
        refused = await get(port)
        assert refused.status == 503 and refused.headers["Retry-After"] == "1"
        assert stats.closed["max_connections"] == 1
        held[0][1].close()
        await held[0][1].wait_closed()
        for _ in range(50):  # the server sees the close on its next loop turn
            if stats.open < 4:
                break
            await asyncio.sleep(0.02)
        assert (await get(port)).status == 200
        for _, writer in held[1:]:
            writer.close()


async def test_oversized_headers_are_refused() -> None:
    async with listener(Limits()) as (port, _), aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}/-/healthy"
        async with session.get(url, headers={"X-Big": "a" * 9000}) as response:
            assert response.status == 400, await response.text()
        many = {f"X-H{i}": "v" for i in range(80)}
        async with session.get(url, headers=many) as response:
            assert response.status == 400, await response.text()
        async with session.get(url + "?q=" + "a" * 9000) as response:
            assert response.status == 400, await response.text()
        async with session.get(url, headers={"X-Fine": "a" * 1000}) as response:
            assert response.status == 200


async def test_malformed_requests_are_counted_and_said_once_not_logged_each(caplog: Any) -> None:
    """aiohttp logs each malformed request at ERROR with a traceback: anyone who can connect could fill the log."""
    malformed = [
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",  # an invalid header token
        b"GARBAGE\r\n\r\n",  # not HTTP
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # TLS on the plain port
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    ]
    async with listener(Limits()) as (port, stats):
        with caplog.at_level(logging.INFO):
            for i in range(40):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(malformed[i % len(malformed)])
                await writer.drain()
                answer = await reader.read(100)
                assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0], answer
                writer.close()
            assert (await get(port)).status == 200  # well-formed requests go on being served
    assert stats.closed["bad_request"] == 40
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(records) <= 1, [r.getMessage() for r in records]
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in records)
    assert all("malformed HTTP requests answered 400" in r.getMessage() for r in records)
