"""The AD collector against the real two-DC Samba lab: per-DC bad-password state, locks, origins, unlocks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from exporter.collectors.active_directory import ActiveDirectoryCollector
from exporter.config import Config
from exporter.sources.credential_guard import CredentialGuard
from lab.exporter_config import lab_config
from lab.samba import ADMIN_PASSWORD, UF_LOCKOUT_BIT, SambaLab
from tests.helpers import samples, series, value

D = "lab.example"


@pytest.fixture
async def collector(lab: SambaLab) -> AsyncIterator[ActiveDirectoryCollector]:
    config = Config.model_validate(lab_config(lab, interval=30, timeout=5)).active_directory[0]
    c = ActiveDirectoryCollector(config, CredentialGuard())
    yield c
    await c.close()


async def test_both_dcs_found_pdc_and_policy(lab: SambaLab, collector: ActiveDirectoryCollector) -> None:
    flat = samples(await collector.collect())
    assert value(flat, "ad_dc_up", domain=D, dc=lab.dc1.host) == 1, collector.target_status()
    # DC2 is not in the config: it was found from its nTDSDSA object and resolved through the lab's DNS.
    assert value(flat, "ad_dc_up", domain=D, dc=lab.dc2.host) == 1
    assert value(flat, "ad_dc_is_pdc_emulator", domain=D, dc=lab.dc1.host) == 1
    assert value(flat, "ad_dc_is_pdc_emulator", domain=D, dc=lab.dc2.host) == 0
    assert value(flat, "ad_dc_info", domain=D, dc=lab.dc2.host, site="Default-First-Site-Name") == 1
    assert value(flat, "ad_lockout_policy_threshold", domain=D) == lab.threshold
    assert value(flat, "ad_lockout_policy_duration_seconds", domain=D) == lab.duration
    assert value(flat, "ad_lockout_policy_observation_window_seconds", domain=D) == lab.window


async def test_bad_passwords_by_ldap_kerberos_and_ntlm_match_each_dc(
    lab: SambaLab, collector: ActiveDirectoryCollector
) -> None:
    user = lab.create_user("frank")
    assert "data 52e" in lab.fail_ldap(user, lab.dc1)
    assert "Password incorrect" in lab.fail_kerberos(user, lab.dc2)
    assert "NT_STATUS_LOGON_FAILURE" in lab.fail_smb(user, lab.dc1)
    truth = {dc.host: lab.account(user, dc)["badPwdCount"] for dc in lab.dcs}
    assert truth == {lab.dc1.host: 2, lab.dc2.host: 1}  # badPwdCount is per DC, not replicated
    flat = samples(await collector.collect())
    for dc, count in truth.items():
        assert value(flat, "ad_account_bad_passwords", domain=D, dc=dc, user=user) == count
        last = value(flat, "ad_account_last_bad_password_timestamp_seconds", domain=D, dc=dc, user=user)
        assert last is not None and abs(last - time.time()) < 60
        assert (value(flat, "ad_accounts_with_bad_password", domain=D, dc=dc) or 0) >= 1
    assert not series(flat, "ad_account_locked", user=user)


async def test_lockout_on_second_dc_names_it_as_origin_then_expires(
    lab: SambaLab, collector: ActiveDirectoryCollector
) -> None:
    user = lab.create_user("grace")
    lab.lock_out(user, lab.dc2, "kerberos")
    lab.replicate(lab.dc1, lab.dc2)
    for dc in lab.dcs:
        assert lab.account(user, dc)["uac_computed"] & UF_LOCKOUT_BIT, f"{user} not locked on {dc.name}"
    flat = samples(await collector.collect())
    assert value(flat, "ad_account_locked", domain=D, user=user, origin_dc=lab.dc2.host) == 1
    for dc in lab.dcs:
        assert (value(flat, "ad_accounts_locked", domain=D, dc=dc.host) or 0) >= 1
        assert (value(flat, "ad_lockouts_in_observation_window", domain=D, dc=dc.host) or 0) >= 1
    assert value(flat, "ad_account_bad_passwords", domain=D, dc=lab.dc2.host, user=user) == lab.threshold

    # After lockoutDuration the account is no longer locked, although lockoutTime is still set.
    await asyncio.sleep(lab.duration + 1)
    assert all(lab.account(user, dc)["lockoutTime"] != 0 for dc in lab.dcs)
    flat = samples(await collector.collect())
    assert not series(flat, "ad_account_locked", user=user)


async def test_unlock_clears_the_lock(lab: SambaLab, collector: ActiveDirectoryCollector) -> None:
    user = lab.create_user("heidi")
    await collector.collect()  # first refresh: the baseline for the lockout counter
    lab.lock_out(user, lab.dc1, "smb")
    flat = samples(await collector.collect())
    assert value(flat, "ad_account_locked", domain=D, user=user, origin_dc=lab.dc1.host) == 1
    assert (value(flat, "ad_account_lockouts_total", domain=D, origin_dc=lab.dc1.host) or 0) >= 1
    lab.unlock(user)
    assert lab.account(user, lab.dc1)["lockoutTime"] == 0
    flat = samples(await collector.collect())
    assert not series(flat, "ad_account_locked", user=user)


async def test_watched_service_account_lock(lab: SambaLab, collector: ActiveDirectoryCollector) -> None:
    flat = samples(await collector.collect())
    assert value(flat, "ad_watched_account_locked", domain=D, user="svc_sql") == 0
    lab.lock_out("svc_sql", lab.dc1, "ldap")
    try:
        flat = samples(await collector.collect())
        assert value(flat, "ad_watched_account_locked", domain=D, user="svc_sql") == 1
    finally:
        lab.unlock("svc_sql")


async def test_dcs_discovered_by_dns_srv_alone(lab: SambaLab) -> None:
    """No DC configured: the SRV records _ldap._tcp.dc._msdcs.<domain> in the lab's DNS name them."""
    overrides: dict[str, Any] = {
        "domain_controllers": [],
        "discovery": {"dns_srv": True, "ntds_settings": True, "dns_servers": [lab.dc1.address]},
    }
    config = Config.model_validate(lab_config(lab, interval=30, timeout=5, **overrides)).active_directory[0]
    collector = ActiveDirectoryCollector(config, CredentialGuard())
    try:
        flat = samples(await collector.collect())
    finally:
        await collector.close()
    for dc in lab.dcs:
        assert value(flat, "ad_dc_up", domain=D, dc=dc.host) == 1, collector.target_status()


async def test_fine_grained_password_settings(
    lab: SambaLab, collector: ActiveDirectoryCollector, tmp_path: Path
) -> None:
    """PSOs are exported where the bind account may read the Password Settings Container.

    By default only administrators can (as on Windows): the plain service account sees none and reports
    nothing, without error; an account with read rights (here the lab's administrator) sees them.
    """
    lab.samba_tool(
        "domain",
        "passwordsettings",
        "pso",
        "create",
        "service-accounts",
        "10",
        "--account-lockout-threshold=20",
        "--account-lockout-duration=60",
        "--reset-account-lockout-after=30",
    )
    admin_password = tmp_path / "admin.password"
    admin_password.write_text(ADMIN_PASSWORD)
    reader = Config.model_validate(
        lab_config(
            lab,
            interval=30,
            timeout=5,
            bind={"method": "simple", "user": f"Administrator@{D}", "password_file": str(admin_password)},
        )
    ).active_directory[0]
    privileged = ActiveDirectoryCollector(reader, CredentialGuard())
    pso = {"domain": D, "pso": "service-accounts"}
    try:
        plain = samples(await collector.collect())
        assert value(plain, "ad_password_settings_lockout_threshold", **pso) is None
        assert value(plain, "ad_dc_up", domain=D, dc=lab.dc1.host) == 1
        flat = samples(await privileged.collect())
        assert value(flat, "ad_password_settings_lockout_threshold", **pso) == 20
        assert value(flat, "ad_password_settings_lockout_duration_seconds", **pso) == 3600
        assert value(flat, "ad_password_settings_observation_window_seconds", **pso) == 1800
    finally:
        await privileged.close()
        lab.samba_tool("domain", "passwordsettings", "pso", "delete", "service-accounts")
