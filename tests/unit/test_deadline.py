"""The hard deadline of a requests session against a real loopback server that drips its answer: every read is
quick, the answer never ends in time; and against one that answers at once."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from exporter.sources.deadline import DeadlineExceeded, with_deadline


@pytest.fixture
def dripping_server() -> Iterator[str]:
    """HTTP on loopback: /fast answers at once; anything else sends a 100 KB body 10 bytes every 50 ms."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            # Kept alive as HTTP/1.1 says: requests reuses the connection, and a server that closed it after one
            # answer would race the next request (a reset, on a loaded machine).
            while (request := conn.recv(65536)).startswith(b"GET /fast"):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            if not request:
                return  # the client closed it
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            try:
                while not stop.is_set():
                    conn.sendall(b"x" * 10)
                    time.sleep(0.05)
            except OSError:
                return  # the client shut its socket down

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()


def test_a_dripped_answer_is_cut_at_the_deadline_and_a_quick_one_is_not(dripping_server: str) -> None:
    session = requests.Session()
    with_deadline(session, 1.0)
    assert session.get(f"{dripping_server}/fast", timeout=5).text == "ok"
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="within 1s"):
        session.get(f"{dripping_server}/drip", timeout=5)  # each read is within 5 s: only the deadline ends it
    assert 1.0 <= time.monotonic() - started < 2.5
    assert session.get(f"{dripping_server}/fast", timeout=5).text == "ok"  # the session goes on working


def test_without_the_deadline_the_drip_outlasts_it(dripping_server: str) -> None:
    """The peer in the same run: requests' own timeouts let the drip go on past the deadline."""
    session = requests.Session()
    started = time.monotonic()
    with session.get(f"{dripping_server}/drip", timeout=5, stream=True) as response:
        for _ in response.iter_content(10):
            if time.monotonic() - started > 1.5:
                break
    assert time.monotonic() - started > 1.5  # past the 1 s deadline, and still going
