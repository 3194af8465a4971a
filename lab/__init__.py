"""The local lab: real Samba AD DCs, SMTP and IMAP servers, WS-Management/PSRP endpoints, log writers."""

from __future__ import annotations

import random
import socket
import subprocess
from pathlib import Path
from typing import Any

# Every loopback address something of the lab listens on. Samba's DCs among them take RPC endpoints from its dynamic
# range (49152-65535), which overlaps the kernel's ephemeral one: a port picked with bind(0) on 127.0.0.1 may be
# taken on a DC's address already, or by the time a lab server binds it there.
LAB_ADDRESSES = tuple(f"127.0.0.{n}" for n in (1, 2, 6, 9, 10, 11, 13, 20, 21, 22, 23, 30, 31, 32))
_handed_out: set[int] = set()


def free_port(*addresses: str) -> int:
    """A TCP port nobody listens on at any lab address (and at ``addresses``) now, and that nothing takes by itself.

    It is below the kernel's ephemeral range, so no outgoing connection and no Samba RPC endpoint lands on it
    between this check and the lab server's bind, and it is never handed out twice in one process.
    """
    low = _ephemeral_low()
    candidates = list(range(max(1024, low - 12000), low))
    random.shuffle(candidates)
    for port in candidates:
        if port not in _handed_out and all(_bindable(a, port) for a in dict.fromkeys((*addresses, *LAB_ADDRESSES))):
            _handed_out.add(port)
            return port
    raise OSError(f"no free TCP port below {low} at {', '.join(addresses or LAB_ADDRESSES)}")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(address: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


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
