"""The lab's port picker: a port taken at any lab address is passed over, and none is handed out twice."""

from __future__ import annotations

import random
import socket

import pytest

import lab


def test_a_port_taken_at_a_dc_address_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    # Something listens at a DC's address (as Samba's RPC endpoints do), on the port the picker would try first.
    with socket.create_server(("127.0.0.2", 0)) as taken:
        port = taken.getsockname()[1]
        monkeypatch.setattr(lab, "_ephemeral_low", lambda: port + 1)
        monkeypatch.setattr(random, "shuffle", lambda ports: ports.sort(key=lambda p: p != port))
        picked = lab.free_port()
    assert picked != port
    assert picked < port + 1
    for address in lab.LAB_ADDRESSES:
        with socket.create_server((address, picked)):
            pass


def test_no_port_is_handed_out_twice_nor_taken_from_the_ephemeral_range() -> None:
    low = lab._ephemeral_low()
    ports = [lab.free_port("127.0.0.1") for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(port < low for port in ports)
