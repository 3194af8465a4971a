"""The one pool for blocking clients: the bound, the per-client lock, the deadline, and errors of the source's type."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from exporter.sources.ldap import LdapError
from exporter.sources.pool import BlockingPool, SourceError


async def test_deadline_and_busy_lock_raise_the_sources_error_with_reason_timeout() -> None:
    pool = BlockingPool("test", 2, error=LdapError)
    lock = threading.Lock()
    release = threading.Event()
    try:
        with pytest.raises(LdapError, match=r"ldaps://dc1:636: no answer within 0\.2s") as info:
            await pool.run(release.wait, 5, lock=lock, timeout=0.2, where="ldaps://dc1:636")
        assert info.value.reason == "timeout" and isinstance(info.value, SourceError)
        # The stuck call still holds the connection: the next one is refused at its lock timeout, not later.
        started = time.monotonic()
        with pytest.raises(LdapError, match="still busy with an earlier call") as busy:
            await pool.run(lambda: None, lock=lock, timeout=5, lock_timeout=0.1)
        assert busy.value.reason == "timeout" and time.monotonic() - started < 2
    finally:
        release.set()
        await pool.shutdown(wait=True)


async def test_at_most_max_concurrent_calls_run_at_once() -> None:
    pool = BlockingPool("test", 2)
    running, most = 0, 0
    guard = threading.Lock()

    def work() -> None:
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with guard:
            running -= 1

    await asyncio.gather(*(pool.run(work) for _ in range(6)))
    assert most == 2
    await pool.shutdown(wait=True)
    with pytest.raises(SourceError, match="stopping"):
        await pool.run(work)
