"""Remoting authentication without a KDC: settings, failure reasons, and message encryption both ways."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import krb5
import pytest
import spnego
from gssapi.raw.misc import GSSError
from pydantic import ValidationError
from pypsrp.encryption import WinRMEncryption

from exporter.config.remoting import Remoting
from exporter.sources.winrm import kerberos_failure
from lab import winrm_auth


def remoting(**auth: Any) -> Remoting:
    return Remoting.model_validate({"auth": auth})


def test_kerberos_takes_one_key_source(tmp_path: Path) -> None:
    secret, keytab = tmp_path / "pw", tmp_path / "svc.keytab"
    secret.write_text("pw")
    keytab.write_bytes(b"\x05\x02")
    assert remoting(method="kerberos", user="svc@CORP.EXAMPLE", keytab_file=str(keytab)).auth.keytab_file == keytab
    assert remoting(method="kerberos", credential_cache="FILE:/tmp/cc").auth.credential_cache == "FILE:/tmp/cc"
    assert remoting(method="kerberos").auth.password is None  # the default cache
    with pytest.raises(ValidationError, match="one key source, not a password and keytab_file"):
        remoting(method="kerberos", user="svc@CORP.EXAMPLE", password_file=str(secret), keytab_file=str(keytab))
    with pytest.raises(ValidationError, match="only for method kerberos"):
        remoting(method="ntlm", user="CORP\\svc", password_file=str(secret), keytab_file=str(keytab))
    with pytest.raises(ValidationError, match="user: required with a password"):
        remoting(method="kerberos", password_file=str(secret))
    with pytest.raises(ValidationError, match="credential_cache"):
        remoting(method="kerberos", credential_cache="/tmp/no-type")


def krb5_error(code: int) -> krb5.Krb5Error:
    """What pyspnego's kinit raises: krb5's own error, with the KDC's answer as a signed code."""
    error = krb5.Krb5Error(krb5.init_context(), code)
    return error


@pytest.mark.parametrize(
    ("error", "reason", "of_account"),
    [
        (krb5_error(-1765328360), "auth_failed", True),  # KDC_ERR_PREAUTH_FAILED: the wrong password
        (krb5_error(-1765328378), "unknown_principal", True),  # KDC_ERR_C_PRINCIPAL_UNKNOWN
        (krb5_error(-1765328366), "auth_failed", True),  # KDC_ERR_CLIENT_REVOKED: locked out or disabled
        (krb5_error(-1765328228), "kdc_unreachable", False),  # KRB5_KDC_UNREACH
        # What gssapi raises for a service ticket or an AP exchange: an unsigned minor code.
        (GSSError(851968, 2529638919), "spn_unknown", False),  # KDC_ERR_S_PRINCIPAL_UNKNOWN
        (GSSError(851968, 2529638949), "clock_skew", False),  # KRB_AP_ERR_SKEW
    ],
)
def test_kerberos_failures_are_named(error: Exception, reason: str, of_account: bool) -> None:
    wrapped = RuntimeError("Processing security token")  # pyspnego and requests wrap them
    wrapped.__cause__ = error
    for raised in (error, wrapped):
        found = kerberos_failure(raised)
        assert found is not None and (found[0], found[2]) == (reason, of_account), (error, found)


def test_a_failure_that_is_not_kerberos_is_left_to_the_transport() -> None:
    assert kerberos_failure(ConnectionRefusedError(111, "Connection refused")) is None


def ntlm_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    users = tmp_path / "ntlm"
    users.write_text("LAB:svc:Pass-1!\n")
    monkeypatch.setenv("NTLM_USER_FILE", str(users))
    client = spnego.client("LAB\\svc", "Pass-1!", protocol="ntlm", options=spnego.NegotiateOptions.wrapping_winrm)
    server = spnego.server(protocol="negotiate")
    token = client.step()
    while not client.complete or not server.complete:
        token = server.step(token)
        if token is not None and not client.complete:
            token = client.step(token)
    return client, server


def test_message_encryption_both_ways_against_pypsrp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client, server = ntlm_pair(tmp_path, monkeypatch)
    message = b"<s:Envelope>" + b"x" * 5000 + b"</s:Envelope>"
    # pypsrp's client side, the lab's server side.
    content_type, body = WinRMEncryption(client, WinRMEncryption.SPNEGO).wrap_message(message)
    header = f'{content_type};protocol="{WinRMEncryption.SPNEGO}";boundary="Encrypted Boundary"'
    assert winrm_auth.unwrap(server, body, header) == (message, WinRMEncryption.SPNEGO)
    reply_type, reply = winrm_auth.wrap(server, WinRMEncryption.SPNEGO, b"<reply/>")
    assert reply_type.startswith("multipart/encrypted;")
    assert WinRMEncryption(client, WinRMEncryption.SPNEGO).unwrap_message(reply, "Encrypted Boundary") == b"<reply/>"


def test_a_tampered_or_truncated_body_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client, server = ntlm_pair(tmp_path, monkeypatch)
    content_type, body = WinRMEncryption(client, WinRMEncryption.SPNEGO).wrap_message(b"<s:Envelope/>")
    header = f'{content_type};protocol="{WinRMEncryption.SPNEGO}";boundary="Encrypted Boundary"'
    with pytest.raises(winrm_auth.EncryptionError):
        winrm_auth.unwrap(server, body[:40], header)
    tampered = body[:-30] + bytes([body[-30] ^ 1]) + body[-29:]
    with pytest.raises(spnego.exceptions.SpnegoError):
        winrm_auth.unwrap(server, tampered, header)


def test_tokens_are_told_apart() -> None:
    assert winrm_auth.token_mechanism(b"NTLMSSP\x00\x01\x00\x00\x00") == "ntlm"
    kerberos = b"\x60\x82\x02\x00" + bytes.fromhex("06092a864886f712010202") + b"\x01\x00"
    assert winrm_auth.token_mechanism(kerberos) == "kerberos"
    assert winrm_auth.token_mechanism(b"\x60\x28" + bytes.fromhex("06062b0601050502") + b"\xa0") == "negotiate"
    assert winrm_auth.token_mechanism(b"\x00garbage") == "unknown"


class XorContext:
    """Stands in for a GSS context: wrap and unwrap are inverse, and visibly change the bytes."""

    class Result:
        def __init__(self, message: bytes) -> None:
            self.message = message

    def wrap(self, data: bytes, encrypt: bool) -> Result:
        assert encrypt
        return self.Result(b"W" + bytes(b ^ 0x5A for b in data))

    def unwrap(self, data: bytes) -> Result:
        assert data[:1] == b"W"
        return self.Result(bytes(b ^ 0x5A for b in data[1:]))


def test_the_sasl_layer_frames_each_message_and_reads_buffers_whole() -> None:
    import socket

    from exporter.sources.ldap import SaslSealedSocket

    ours, theirs = socket.socketpair()
    with ours, theirs:
        sealed = SaslSealedSocket(ours, XorContext())
        sealed.sendall(b"\x30\x05hello")
        length = int.from_bytes(theirs.recv(4), "big")
        assert XorContext().unwrap(theirs.recv(length)).message == b"\x30\x05hello"
        # Two buffers from the DC, the second arriving in pieces; ldap3 asks for small reads.
        for message in (b"first-message", b"second"):
            wrapped = XorContext().wrap(message, True).message
            framed = len(wrapped).to_bytes(4, "big") + wrapped
            theirs.sendall(framed[:3])
            theirs.sendall(framed[3:])
        received = b"".join(sealed.recv(4) for _ in range(6))
        assert received.startswith(b"first-messagesecond")
        theirs.close()
        assert sealed.recv(4) == b""  # the DC went away: what a closed socket gives
        assert sealed.family == socket.AF_UNIX  # everything else is the socket's own
