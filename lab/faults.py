"""A TCP proxy on the loopback that fails the way networks and crashing servers do, for LDAP and WinRM alike.

Modes, changed while it runs (each new connection takes the mode in force when it opens; ``reset`` also acts on
connections already open):

- ``pass``: bytes both ways, untouched;
- ``reset``: ``after_bytes`` more from the server (counted from when the mode is set, over every connection), then
  every connection is reset (TCP RST), and each later one at its first byte: a DC killed in the middle of a paged
  search, a load balancer dropping flows mid-response;
- ``blackhole``: the connection is accepted and nothing ever comes back (a hung host behind a live kernel);
- ``drip``: the server's bytes are passed on ``drip_bytes`` at a time, one batch each ``drip_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field


@dataclass
class ProxyStats:
    connections: int = 0
    resets: int = 0
    bytes_down: int = 0


@dataclass
class FaultProxy:
    address: str
    port: int
    upstream: tuple[str, int]
    mode: str = "pass"
    after_bytes: int = 2048
    drip_bytes: int = 16
    drip_seconds: float = 0.2
    stats: ProxyStats = field(default_factory=ProxyStats)

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"fault-proxy-{self.port}")
        self._writers: set[asyncio.StreamWriter] = set()
        self._budget = 0

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def set(self, mode: str, **settings: float) -> None:
        for name, value in settings.items():
            setattr(self, name, value)
        self._budget = int(self.after_bytes)
        self.mode = mode

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._connection, self.address, self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            for writer in list(self._writers):
                _reset(writer)
            # The reset connections' tasks see their end here, instead of being destroyed pending with the loop.
            pending = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
            if pending:
                self._loop.run_until_complete(asyncio.wait(pending, timeout=2))

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        mode = self.mode
        self._writers.add(writer)
        try:
            if mode == "blackhole":
                await reader.read()  # hold it open until the client gives up
                return
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            self._writers.add(up_writer)
            try:
                await asyncio.gather(
                    self._pump(reader, up_writer, down=False), self._pump(up_reader, writer, down=True, mode=mode)
                )
            finally:
                self._writers.discard(up_writer)
                up_writer.close()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, down: bool, mode: str = "pass"
    ) -> None:
        try:
            while data := await reader.read(65536):
                if down and self.mode == "reset":
                    if len(data) >= self._budget:
                        writer.write(data[: self._budget])
                        await writer.drain()
                        self._budget = 0
                        self.stats.resets += 1
                        for open_writer in list(self._writers):
                            _reset(open_writer)
                        return
                    self._budget -= len(data)
                if down and mode == "drip":
                    for start in range(0, len(data), self.drip_bytes):
                        writer.write(data[start : start + self.drip_bytes])
                        await writer.drain()
                        await asyncio.sleep(self.drip_seconds)
                else:
                    writer.write(data)
                    await writer.drain()
                if down:
                    self.stats.bytes_down += len(data)
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            pass


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN: SO_LINGER with a zero timeout."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
