"""The local lab: real Samba AD DCs, SMTP and IMAP servers, WS-Management/PSRP endpoints, log writers."""

from __future__ import annotations

import socket


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on at ``address`` right now."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])
