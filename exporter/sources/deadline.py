"""A hard deadline for one HTTP exchange of a requests session, whatever the server's pace.

requests' timeouts are per socket read: a server (or a middlebox) that sends its answer a few bytes at a time never
trips them, and the worker thread, with the server's lock, is held until the answer ends, minutes later. Here every
``session.send`` of a session is given a deadline; one watchdog thread for the process shuts down the socket of an
exchange that overruns it, so the blocked read fails at once and the exchange raises :class:`DeadlineExceeded`.
The socket in use is known because the session's connection pools make connections that say, as they send a
request, which thread they are working for.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
import requests.adapters
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_in_use: dict[int, Any] = {}  # thread ident -> the urllib3 connection it is sending on or reading from
_in_use_lock = threading.Lock()


class DeadlineExceeded(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"the answer did not arrive whole within {seconds:g}s")
        self.seconds = seconds


class _Tracked:
    """Mixed into urllib3's connections: the connection a thread sends on is the one to shut down for it."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        with _in_use_lock:
            _in_use[threading.get_ident()] = self
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _TrackedHTTPConnection(_Tracked, HTTPConnection):
    pass


class _TrackedHTTPSConnection(_Tracked, HTTPSConnection):
    pass


class _TrackedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _TrackedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


class _Watchdog:
    """One thread for the process: sleeps until the nearest deadline, then shuts down that thread's socket."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int]] = []  # (when, token, thread ident)
        self._armed: dict[int, threading.Event] = {}  # token -> set once it fired
        self._tokens = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float) -> tuple[int, threading.Event]:
        fired = threading.Event()
        with self._wake:
            token = next(self._tokens)
            self._armed[token] = fired
            heapq.heappush(self._heap, (time.monotonic() + seconds, token, threading.get_ident()))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="deadline-watchdog", daemon=True)
                self._thread.start()
            self._wake.notify()
        return token, fired

    def disarm(self, token: int) -> None:
        with self._wake:
            self._armed.pop(token, None)  # its heap entry is skipped when it comes up

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    if self._heap:
                        self._wake.wait(self._heap[0][0] - time.monotonic())
                    else:
                        self._wake.wait()
                _, token, ident = heapq.heappop(self._heap)
                fired = self._armed.pop(token, None)
            if fired is not None:
                with _in_use_lock:
                    connection = _in_use.get(ident)
                sock = getattr(connection, "sock", None)
                fired.set()
                if sock is not None:
                    with contextlib.suppress(OSError):
                        # The plain socket's shutdown, under TLS too: the reader's SSL object is left alone.
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)


_WATCHDOG = _Watchdog()


def with_deadline(session: requests.Session, seconds: float) -> None:
    """Give every ``session.send`` (authentication round trips and the body's read included) ``seconds``."""
    for prefix in ("http://", "https://"):
        adapter = session.get_adapter(prefix)
        if isinstance(adapter, requests.adapters.HTTPAdapter):
            adapter.poolmanager.pool_classes_by_scheme = {
                "http": _TrackedHTTPConnectionPool,
                "https": _TrackedHTTPSConnectionPool,
            }
    send: Callable[..., requests.Response] = session.send

    def send_within_deadline(request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        token, fired = _WATCHDOG.arm(seconds)
        try:
            response = send(request, **kwargs)
        except Exception as exc:
            if fired.is_set():
                raise DeadlineExceeded(seconds) from exc
            raise
        finally:
            _WATCHDOG.disarm(token)
            with _in_use_lock:
                _in_use.pop(threading.get_ident(), None)
        return response  # whole, even if the deadline came as it ended (that socket is then dropped, not reused)

    session.send = send_within_deadline  # type: ignore[method-assign]
