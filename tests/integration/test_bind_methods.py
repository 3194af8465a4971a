"""The exporter's own binds: simple, NTLM and Kerberos; LDAPS and StartTLS with verification; a wrong CA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from exporter.collectors.active_directory import ActiveDirectoryCollector
from exporter.config import Config
from exporter.sources.credential_guard import CredentialGuard
from lab.exporter_config import lab_config
from lab.samba import NETBIOS, REALM, SERVICE_ACCOUNT, SambaLab
from tests.helpers import samples, value

D = "lab.example"


async def _collect(lab: SambaLab, **overrides: Any) -> tuple[dict[Any, float], ActiveDirectoryCollector]:
    config = Config.model_validate(lab_config(lab, interval=30, timeout=5, **overrides)).active_directory[0]
    collector = ActiveDirectoryCollector(config, CredentialGuard())
    try:
        return samples(await collector.collect()), collector
    finally:
        await collector.close()


def bind(lab: SambaLab, method: str) -> dict[str, str]:
    user = {"simple": f"{SERVICE_ACCOUNT}@{D}", "ntlm": f"{NETBIOS}\\{SERVICE_ACCOUNT}"}.get(method)
    return {
        "method": method,
        "user": user or f"{SERVICE_ACCOUNT}@{REALM}",
        "password_file": str(lab.service_password_file),
    }


# The lab DCs run with the strictest setting Samba has, ldap server require strong auth = yes (its default): over
# TLS only simple binds, on 389 only SASL binds that sign or seal. Windows Server 2025 (LDAP signing required)
# also takes SASL over TLS unsigned; Samba does that with allow_sasl_over_tls.
@pytest.mark.parametrize(
    ("method", "tls", "works"),
    [
        ("simple", "ldaps", True),
        ("simple", "starttls", True),
        ("kerberos", "none", True),  # sealed: every message encrypted and signed with the session key
        ("kerberos", "ldaps", False),
        ("ntlm", "ldaps", False),  # with the channel binding, which Windows' LDAP channel binding checks
        ("ntlm", "starttls", False),
    ],
)
async def test_each_bind_method_against_dcs_that_require_strong_auth(
    lab: SambaLab, monkeypatch: pytest.MonkeyPatch, method: str, tls: str, works: bool
) -> None:
    monkeypatch.setenv("KRB5_CONFIG", str(lab.krb5_conf(lab.dc1)))
    monkeypatch.setenv("KRB5CCNAME", f"MEMORY:bind-{method}-{tls}")
    flat, collector = await _collect(lab, bind=bind(lab, method), tls={"mode": tls, "ca_file": str(lab.ca_bundle)})
    if works:
        for dc in lab.dcs:  # DC2 found through DC1's directory, read through that connection
            assert value(flat, "ad_dc_up", domain=D, dc=dc.host) == 1, collector.target_status()
        assert value(flat, "ad_lockout_policy_threshold", domain=D) == lab.threshold
        return
    # Refused by the seed DC (so nothing else is discovered), with the setting named.
    assert value(flat, "ad_dc_error_reason", domain=D, dc=lab.dc1.host, reason="strong_auth_required") == 1
    detail = {t.name: t.detail for t in collector.target_status()}[lab.dc1.host]
    assert "ldap server require strong auth" in detail and "LDAP server signing requirements" in detail


async def test_simple_bind_over_starttls(lab: SambaLab) -> None:
    flat, collector = await _collect(lab, tls={"mode": "starttls", "ca_file": str(lab.ca_bundle)})
    assert value(flat, "ad_dc_up", domain=D, dc=lab.dc1.host) == 1, collector.target_status()


async def test_certificate_from_an_unknown_ca_is_refused(lab: SambaLab, tmp_path: Path) -> None:
    # Only DC2's CA: DC1's certificate cannot be verified, so DC1 is down with reason "tls" and no bind is tried.
    only_dc2 = tmp_path / "dc2-ca.pem"
    only_dc2.write_text(lab.dc2.ca_file.read_text())
    flat, collector = await _collect(lab, tls={"mode": "ldaps", "ca_file": str(only_dc2)})
    assert value(flat, "ad_dc_up", domain=D, dc=lab.dc1.host) == 0
    assert value(flat, "ad_dc_error_reason", domain=D, dc=lab.dc1.host, reason="tls") == 1
    detail = {t.name: t.detail for t in collector.target_status()}[lab.dc1.host]
    assert "certificate verify failed" in detail
