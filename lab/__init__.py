"""The local lab: real Samba AD DCs, SMTP and IMAP servers, WS-Management/PSRP endpoints, log writers."""

from __future__ import annotations

import socket
import subprocess
from typing import Any


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on at ``address`` right now."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[Any] | None, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
