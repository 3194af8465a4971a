"""Contracts with the private internals of pypsrp, pyspnego and psrpcore that the exporter and its lab rely on.

Each of these is a private attribute that a release of the dependency may drop; pyproject.toml bounds their
versions to the ones checked here, and these tests say exactly what broke when an upgrade is tried.
"""

from __future__ import annotations

import pytest


def _require(owner: object, attribute: str, used_by: str) -> object:
    if not hasattr(owner, attribute):
        pytest.fail(f"{owner!r} no longer has {attribute}; {used_by} relies on it (see the bound in pyproject.toml)")
    return getattr(owner, attribute)


def test_pypsrp_runspace_pool_takes_our_serializer() -> None:
    from pypsrp.wsman import WSMan

    from exporter.sources.winrm import _raw_output_pool, _RawOutputSerializer

    connection = WSMan("127.0.0.1", port=1, ssl=False, auth="basic", username="u", password="p", encryption="never")
    pool = _raw_output_pool(connection, "Microsoft.PowerShell")
    used_by = "exporter/sources/winrm.py (CLIXML handed over raw)"
    assert isinstance(_require(pool, "_serializer", used_by), _RawOutputSerializer)
    fragmenter = _require(pool, "_fragmenter", used_by)
    assert isinstance(_require(fragmenter, "serializer", used_by), _RawOutputSerializer)


def test_pyspnego_ntlm_internals_for_ldap_binds() -> None:
    import spnego
    from spnego import _ntlm_raw

    used_by = "exporter/sources/ldap.py (NTLM binds as SASL GSS-SPNEGO)"
    crypto = _require(_ntlm_raw, "crypto", used_by)
    ntowfv1 = _require(crypto, "ntowfv1", used_by)
    # MD4 of UTF-16-LE "password", the NT hash every NTLM implementation agrees on.
    assert ntowfv1("password").hex() == "8846f7eaee8fb117ad06bdd830b7586c"  # type: ignore[operator]
    messages = _require(_ntlm_raw, "messages", used_by)
    flags = _require(messages, "NegotiateFlags", used_by)
    key_exch = _require(flags, "key_exch", used_by)
    context = spnego.client(
        spnego.NTLMHash(username="LAB\\u", nt_hash="00" * 16), hostname="dc", service="ldap", protocol="ntlm"
    )
    requested = _require(context, "_context_req", used_by)
    assert int(requested) & int(key_exch)  # type: ignore[call-overload]  # what ldap.py clears before the first step


def test_psrpcore_internals_the_lab_endpoint_uses() -> None:
    import psrpcore
    from psrpcore import _payload

    used_by = "lab/psrp_endpoint.py (raw CLIXML output, failing a pipeline)"
    _require(_payload, "PSRPMessage", used_by)
    _require(_payload, "create_message", used_by)
    _require(psrpcore.ServerPipeline, "_change_state", used_by)


def test_aiosmtplib_client_exposes_its_protocol() -> None:
    import aiosmtplib
    from aiosmtplib.protocol import SMTPProtocol

    used_by = "exporter/sources/smtp.py (QUIT written without waiting for its reply)"
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=1)
    assert _require(client, "protocol", used_by) is None  # set once connected
    assert callable(_require(SMTPProtocol, "write", used_by))
