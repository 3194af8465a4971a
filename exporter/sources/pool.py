"""One way to run blocking clients (ldap3, pypsrp, imaplib, file reads) from the event loop.

A :class:`BlockingPool` owns the worker threads, the bound on how many targets are asked at once, the
per-client lock (one request at a time on a connection) and the deadline. A target that stops answering is
given up on at the deadline; its thread ends at the client's own socket timeout (or hard deadline, for a server
that drips its answer: sources/deadline.py), and until then the lock keeps the next refresh off that connection,
so a stuck server holds one thread, never more. How such a call ended at last is logged: nobody awaits it then.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class SourceError(Exception):
    """A source could not answer. ``reason`` is a short, bounded label value; the message is for people."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class BlockingPool:
    """Worker threads for one collector: at most ``max_concurrent`` calls at once, each within a deadline.

    ``error`` is the :class:`SourceError` subclass raised when a call is given up on, or cannot get its
    client's lock because an earlier call is still waiting for the same target (reason ``timeout`` both: the
    target has not answered), so callers catch their source's own error type.
    """

    def __init__(self, name: str, max_concurrent: int, *, error: type[SourceError] = SourceError) -> None:
        self.name = name
        # One thread more than the bound: a call given up on may hold its thread until its socket times out.
        self._executor = ThreadPoolExecutor(max_workers=max_concurrent + 1, thread_name_prefix=name)
        self._semaphore = asyncio.Semaphore(max_concurrent)
        self._error = error
        self._closed = False

    async def run(
        self,
        fn: Callable[..., T],
        *args: object,
        lock: threading.Lock | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the deadline is the pool's job, not the caller's
        lock_timeout: float | None = None,
        where: str = "",
    ) -> T:
        """``fn(*args)`` on a worker thread, holding ``lock`` if given, given up on after ``timeout`` seconds.

        Waiting for the lock counts against the same deadline, and gives up after ``lock_timeout`` if that is
        shorter (a target still busy with an earlier call is reported at once, not at the whole deadline).
        Without a timeout the call runs to its end (file reads, whose progress is committed as they go).
        ``where`` (a URL, a host) starts error messages.
        """
        prefix = f"{where}: " if where else ""
        if self._closed:
            raise self._error("shutdown", f"{prefix}the collector is stopping")
        given_up = threading.Event()

        def run() -> T:
            if lock is None:
                return fn(*args)
            wait = lock_timeout if lock_timeout is not None else timeout
            if not lock.acquire(timeout=-1 if wait is None else wait):
                raise self._error("timeout", f"{prefix}still busy with an earlier call (an answer, a read)")
            try:
                return fn(*args)
            finally:
                lock.release()

        def call() -> T:
            try:
                return run()
            except Exception as exc:
                if given_up.is_set():
                    log.warning("%s: %s%s (after the refresh had given up on it)", self.name, prefix, exc)
                raise

        loop = asyncio.get_running_loop()
        async with self._semaphore:
            future = loop.run_in_executor(self._executor, call)
            try:
                if timeout is None:
                    return await future
                return await asyncio.wait_for(future, timeout)
            except TimeoutError:
                given_up.set()
                raise self._error("timeout", f"{prefix}no answer within {timeout:g}s") from None
            except asyncio.CancelledError:  # the collector's own deadline
                given_up.set()
                raise

    @property
    def closing(self) -> bool:
        """Shutting down: a long call (a backlog read) stops at its next commit instead of reading on."""
        return self._closed

    async def shutdown(self, wait: bool) -> None:
        """Stop taking calls. ``wait``: let calls in flight finish (they commit bookmarks and checkpoints)."""
        self._closed = True
        if wait:
            await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        else:
            self._executor.shutdown(wait=False, cancel_futures=True)
