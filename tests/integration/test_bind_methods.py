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


@pytest.mark.parametrize("tls", ["ldaps", "starttls"])
async def test_ntlm_bind(lab: SambaLab, tls: str) -> None:
    flat, collector = await _collect(
        lab,
        bind={
            "method": "ntlm",
            "user": f"{NETBIOS}\\{SERVICE_ACCOUNT}",
            "password_file": str(lab.service_password_file),
        },
        tls={"mode": tls, "ca_file": str(lab.ca_bundle)},
    )
    for dc in lab.dcs:
        assert value(flat, "ad_dc_up", domain=D, dc=dc.host) == 1, collector.target_status()


async def test_kerberos_bind_with_password(lab: SambaLab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRB5_CONFIG", str(lab.krb5_conf(lab.dc1)))
    monkeypatch.setenv("KRB5CCNAME", f"MEMORY:test-{id(lab)}")
    flat, collector = await _collect(
        lab,
        bind={
            "method": "kerberos",
            "user": f"{SERVICE_ACCOUNT}@{REALM}",
            "password_file": str(lab.service_password_file),
        },
    )
    for dc in lab.dcs:
        assert value(flat, "ad_dc_up", domain=D, dc=dc.host) == 1, collector.target_status()


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
