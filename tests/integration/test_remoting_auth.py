"""Remoting authenticates as hardened Windows servers demand, through the unmodified pypsrp client.

The lab's acceptors (lab/winrm_auth.py) check Kerberos tickets with keys exported from the lab's Samba domain,
refuse unencrypted bodies on HTTP, and under Extended Protection refuse tokens without the TLS channel binding.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pypsrp.exceptions import AuthenticationError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from exporter.collectors.exchange import ExchangeCollector
from exporter.collectors.security_events import SecurityEventsCollector
from exporter.config import Config
from exporter.sources.credential_guard import CredentialGuard
from exporter.sources.winrm import connect_by_address
from exporter.state import StateStore
from lab import free_port, stop_process
from lab.exchange import FQDN, SERVICE_USER, ExchangeLab
from lab.exporter_config import lab_config
from lab.kerberos import REMOTING_PASSWORD, LabKerberos
from lab.pki import LabCa
from lab.samba import NETBIOS, REALM, SambaLab
from lab.winevent import EventLab
from tests.helpers import metric, samples, value
from tests.integration.conftest import running_exporter

SERVERS = ("solo-e16a", "solo-e19a")
Flat = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def collect_exchange(
    lab: ExchangeLab, guard: CredentialGuard | None = None, refreshes: int = 1, **overrides: Any
) -> tuple[Flat, ExchangeCollector]:
    config = Config.model_validate(lab_config(None, exchange=lab, interval=30, timeout=5, exchange_overrides=overrides))
    collector = ExchangeCollector(config.exchange[0], guard or CredentialGuard())
    try:
        flat: Flat = {}
        for _ in range(refreshes):
            flat = samples(await collector.collect())
        return flat, collector
    finally:
        await collector.close()


async def collect_events(
    lab: EventLab, tmp_path: Path, guard: CredentialGuard | None = None, refreshes: int = 1, **overrides: Any
) -> Flat:
    config = Config.model_validate(
        lab_config(None, events=lab, interval=30, timeout=5, events_overrides={"winrm": lab.winrm_config(**overrides)})
    )
    state = StateStore(tmp_path / "state.db")
    collector = SecurityEventsCollector(config.security_events[0], guard or CredentialGuard(), state)
    try:
        flat: Flat = {}
        for _ in range(refreshes):
            flat = samples(await collector.collect())
        return flat
    finally:
        await collector.close()
        state.close()


def reasons(flat: Flat, family: str, **labels: str) -> set[str]:
    return {
        dict(key)["reason"]
        for (name, key), v in flat.items()
        if name == family and v == 1 and all(dict(key).get(k) == x for k, x in labels.items())
    }


def assert_encrypted_only(lab: ExchangeLab | EventLab, mechanism: str) -> None:
    """Every endpoint authenticated with this mechanism alone, and no body arrived unencrypted on HTTP."""
    for endpoint in lab.endpoints.values():
        behaviour = endpoint.behaviour
        assert set(behaviour.authentications) == {mechanism}, (endpoint.name, behaviour.authentications)
        assert behaviour.plain_bodies == 0, endpoint.name
        if endpoint.scheme == "http":
            assert behaviour.encrypted_bodies > 0, endpoint.name
        assert not behaviour.refusals.counts, (endpoint.name, behaviour.refusals.counts)


# --- what works --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["password", "keytab", "cache"])
async def test_exchange_over_kerberos_with_message_encryption(kerberos: LabKerberos, tmp_path: Path, key: str) -> None:
    with ExchangeLab(tmp_path / "exchange", port=free_port(), kerberos=kerberos) as lab:
        # Several refreshes, health in depth among them: its Emergency Mitigation read shares ExSetup's runspace.
        auth = kerberos.auth_config("kerberos", key)
        flat, collector = await collect_exchange(lab, refreshes=4, auth=auth, health={"interval_seconds": 1})
        for server in SERVERS:
            assert value(flat, "exchange_server_up", server=server) == 1, collector.target_status()
        assert_encrypted_only(lab, "kerberos")
        for endpoint in lab.endpoints.values():
            # Three runspaces (core, health, the plain endpoint), each authenticated once and reused.
            assert endpoint.behaviour.count["Create"] <= 3, endpoint.behaviour.count
            assert sum(endpoint.behaviour.authentications.values()) == endpoint.behaviour.count["Create"]


@pytest.mark.parametrize("method", ["kerberos", "ntlm"])
async def test_dc_event_logs_over_negotiate_with_message_encryption(
    kerberos: LabKerberos, tmp_path: Path, method: str
) -> None:
    with EventLab(tmp_path / "events", port=free_port(), kerberos=kerberos) as lab:
        flat = await collect_events(lab, tmp_path, auth=kerberos.auth_config(method))
        for dc, log in lab.logs.items():
            assert value(flat, "ad_security_events_source_up", dc=dc, source="winrm") == 1
            read = sum(v for (name, key), v in flat.items() if name == "ad_security_events_total" and ("dc", dc) in key)
            assert read > 0 and read <= len(log.records)
        assert_encrypted_only(lab, method)


@pytest.fixture
def protected_exchange(kerberos: LabKerberos, tmp_path: Path) -> Iterator[ExchangeLab]:
    """The Exchange servers over HTTPS with Extended Protection (Exchange 2019 CU14 and later)."""
    with ExchangeLab(
        tmp_path / "exchange", port=free_port(), https=True, kerberos=kerberos, extended_protection=True
    ) as lab:
        yield lab


async def test_exchange_over_https_with_extended_protection(protected_exchange: ExchangeLab) -> None:
    flat, collector = await collect_exchange(protected_exchange)
    for server in SERVERS:
        assert value(flat, "exchange_server_up", server=server) == 1, collector.target_status()
    assert_encrypted_only(protected_exchange, "kerberos")


async def test_dc_event_logs_over_https_with_extended_protection_and_ntlm(
    kerberos: LabKerberos, tmp_path: Path
) -> None:
    with EventLab(
        tmp_path / "events", port=free_port(), kerberos=kerberos, https=True, extended_protection=True
    ) as lab:
        flat = await collect_events(lab, tmp_path, auth=kerberos.auth_config("ntlm"))
        for dc in lab.logs:
            assert value(flat, "ad_security_events_source_up", dc=dc, source="winrm") == 1
        assert_encrypted_only(lab, "ntlm")


@pytest.mark.parametrize("auth", ["kerberos", "ntlm"])
def test_extended_protection_refuses_a_token_without_channel_binding(
    kerberos: LabKerberos, tmp_path: Path, auth: str
) -> None:
    """pypsrp as it is, once with its channel binding and once told not to send it."""
    with EventLab(
        tmp_path / "events", port=free_port(), kerberos=kerberos, https=True, extended_protection=True
    ) as lab:
        dc = "dc1.lab.example"
        user = kerberos.principal if auth == "kerberos" else f"{NETBIOS}\\{kerberos.principal.split('@')[0]}"

        def open_pool(send_cbt: bool) -> None:
            connection = WSMan(
                lab.endpoints[dc].address,
                port=lab.port,
                ssl=True,
                auth=auth,
                username=user,
                password=REMOTING_PASSWORD,
                cert_validation=str(lab.ca_file),  # type: ignore[arg-type]
                negotiate_send_cbt=send_cbt,
                negotiate_service="HTTP",
                negotiate_hostname_override=dc,
                operation_timeout=5,
                read_timeout=10,
            )
            connect_by_address(connection, dc)
            with RunspacePool(connection) as pool:
                ps = PowerShell(pool)
                ps.add_cmdlet("Get-Date")
                ps.invoke()

        open_pool(send_cbt=True)
        refusals = lab.endpoints[dc].behaviour.refusals.counts
        assert not refusals
        with pytest.raises(AuthenticationError):
            open_pool(send_cbt=False)
        assert refusals == {"channel_binding": 1}


# --- what fails, and how it is told --------------------------------------------------------------------------------


async def test_a_wrong_kerberos_password_is_tried_once_and_never_locks_the_account(
    lab: SambaLab, kerberos: LabKerberos, tmp_path: Path
) -> None:
    user = "svc_wrongkey"
    kerberos.add_user(user, "Lab-Wrongkey-Pass1!")
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password")
    auth = {"method": "kerberos", "user": f"{user}@{REALM}", "password_file": str(wrong)}
    guard = CredentialGuard()
    with (
        ExchangeLab(tmp_path / "exchange", port=free_port(), kerberos=kerberos) as exchange,
        EventLab(tmp_path / "events", port=free_port(), kerberos=kerberos) as events,
    ):
        # Two Exchange servers and two DCs, five refreshes each, with the same wrong password.
        flat, collector = await collect_exchange(exchange, guard, refreshes=5, auth=auth)
        event_flat = await collect_events(events, tmp_path, guard, refreshes=5, auth=auth)
        # The good account reads both DCs meanwhile: nothing held back for it.
        good = await collect_events(events, tmp_path / "good", auth=kerberos.auth_config())
    details = " ".join(t.detail for t in collector.target_status())
    assert "the KDC refused the password" in details and "held back" in details
    for server in SERVERS:
        assert value(flat, "exchange_server_up", server=server) == 0
        assert reasons(flat, "exchange_server_error_reason", server=server) <= {"auth_failed", "credential_suspended"}
    assert "credential_suspended" in {
        r for s in SERVERS for r in reasons(flat, "exchange_server_error_reason", server=s)
    }
    for dc in events.logs:
        assert value(event_flat, "ad_security_events_source_up", dc=dc, source="winrm") == 0
        assert value(good, "ad_security_events_source_up", dc=dc, source="winrm") == 1
    account = lab.account(user, lab.dc1)
    assert account["badPwdCount"] == 1, account  # one try, across 20 refreshes of 4 servers
    assert account["lockoutTime"] == 0


async def test_a_server_reached_by_an_alias_has_no_spn_until_one_is_given(
    kerberos: LabKerberos, tmp_path: Path
) -> None:
    with ExchangeLab(tmp_path / "exchange", port=free_port(), kerberos=kerberos) as lab:
        base = lab.config()["servers"]
        alias = [dict(base[0], host="mail.lab.example"), base[1]]  # a CNAME to SOLO-E16A, no SPN of its own
        flat, collector = await collect_exchange(lab, servers=alias)
        assert reasons(flat, "exchange_server_error_reason", server="solo-e16a") == {"spn_unknown"}
        detail = {t.name: t.detail for t in collector.target_status()}
        assert "HTTP/mail.lab.example" in str(detail)
        assert value(flat, "exchange_server_up", server="solo-e19a") == 1
        # The explicit SPN, as for a load balancer: the alias works.
        explicit = [dict(alias[0], spn=f"HTTP/{FQDN['solo-e16a']}"), base[1]]
        flat, _ = await collect_exchange(lab, servers=explicit)
        assert value(flat, "exchange_server_up", server="solo-e16a") == 1


async def test_extended_protection_behind_a_tls_offloader_refuses_the_binding(
    protected_exchange: ExchangeLab, tmp_path: Path
) -> None:
    lab = protected_exchange
    # SOLO-E19A expects the binding of the certificate on a load balancer in front, not the one we see.
    offloader = LabCa("Offloader CA").issue(tmp_path / "offloader", "lb", "mail.lab.example")
    e19a = lab.endpoints["solo-e19a"]
    e19a.auth = dataclasses.replace(e19a.auth, binding_certificate=offloader.certificate_der())
    flat, collector = await collect_exchange(lab)
    assert reasons(flat, "exchange_server_error_reason", server="solo-e19a") == {"channel_binding_refused"}
    assert "Extended Protection" in {t.name: t.detail for t in collector.target_status()}["solo-e19a"]
    assert e19a.behaviour.refusals.counts and not e19a.behaviour.authentications
    assert value(flat, "exchange_server_up", server="solo-e16a") == 1


async def test_basic_is_refused_by_hardened_servers(kerberos: LabKerberos, tmp_path: Path) -> None:
    with ExchangeLab(tmp_path / "exchange", port=free_port(), https=True, kerberos=kerberos) as lab:
        basic = {"method": "basic", "user": SERVICE_USER, "password_file": str(lab.password_file)}
        flat, _ = await collect_exchange(lab, auth=basic)
        for server in SERVERS:
            assert value(flat, "exchange_server_up", server=server) == 0
            assert reasons(flat, "exchange_server_error_reason", server=server) <= {
                "auth_failed",
                "credential_suspended",
            }
        assert sum(e.behaviour.refusals.counts.get("basic", 0) for e in lab.endpoints.values()) == 1  # tried once


async def test_unencrypted_messages_are_refused_on_http(kerberos: LabKerberos, tmp_path: Path) -> None:
    with ExchangeLab(tmp_path / "exchange", port=free_port(), kerberos=kerberos) as lab:
        flat, collector = await collect_exchange(lab, encryption="never", allow_unencrypted=True)
        for server in SERVERS:
            assert reasons(flat, "exchange_server_error_reason", server=server) == {"encryption_refused"}
        assert "AllowUnencrypted" in str([t.detail for t in collector.target_status()])
        assert all(e.behaviour.refusals.counts.get("unencrypted", 0) >= 1 for e in lab.endpoints.values())


FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
needs_faketime = pytest.mark.skipif(
    not FAKETIME.exists(), reason="libfaketime (Debian faketime) is installed by run.sh"
)


@needs_faketime
def test_the_exporters_clock_ten_minutes_off_is_corrected_from_the_kdc(kerberos: LabKerberos, tmp_path: Path) -> None:
    """The exporter's clock 10 minutes ahead (libfaketime, its process only): MIT Kerberos takes the KDC's time
    from its answer (kdc_timesync) and every later timestamp, the servers' authenticators included, is corrected;
    the DCs are read. A server whose own clock is off is what refuses (clock_skew)."""
    skewed = {"LD_PRELOAD": str(FAKETIME), "FAKETIME": "+10m", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    with (
        EventLab(tmp_path / "events", port=free_port(), kerberos=kerberos) as events,
        running_exporter(None, tmp_path / "skewed", events=events, interval=3, timeout=2, env=skewed) as exporter,
    ):
        text = exporter.wait_for(
            lambda t: all(metric(t, "ad_security_events_source_up", dc=dc, source="winrm") == 1 for dc in events.logs),
            timeout=30,
        )
        assert "ad_security_events_total{" in text
        assert set(events.endpoints["dc1.lab.example"].behaviour.authentications) == {"kerberos"}


@needs_faketime
def test_a_dc_whose_clock_is_ten_minutes_off_is_told_as_clock_skew(kerberos: LabKerberos, tmp_path: Path) -> None:
    """DC1's WinRM in a process of its own whose clock is 10 minutes ahead (libfaketime): its acceptor refuses the
    ticket with KRB_AP_ERR_SKEW in the 401, as Windows does; DC2 is read as usual."""
    port = free_port()
    with EventLab(tmp_path / "events", port=free_port(), kerberos=kerberos) as events:  # the keys, then DC1 apart
        skewed = subprocess.Popen(
            [sys.executable, "-m", "lab", "dc-events-endpoint", "dc1.lab.example", "--port", str(port)],
            env={**os.environ, "LD_PRELOAD": str(FAKETIME), "FAKETIME": "+10m", "FAKETIME_DONT_FAKE_MONOTONIC": "1"},
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert skewed.stdout is not None and "listening" in skewed.stdout.readline()
            dcs = events.winrm_config()["domain_controllers"]
            dcs[0]["port"] = port  # dc1.lab.example: the skewed process
            flat = asyncio.run(collect_events(events, tmp_path, domain_controllers=dcs))
        finally:
            stop_process(skewed)
    assert reasons(flat, "ad_security_events_source_error_reason", dc="dc1.lab.example") == {"clock_skew"}
    assert value(flat, "ad_security_events_source_up", dc="dc2.lab.example", source="winrm") == 1


async def test_no_kdc_answering_is_told_as_kdc_unreachable(
    kerberos: LabKerberos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unreachable = tmp_path / "krb5.conf"
    realm = f"[realms]\n {REALM} = {{\n  kdc = 127.0.0.2:1\n }}\n"  # nothing listens on port 1
    unreachable.write_text(kerberos.krb5_conf.read_text().split("[realms]")[0] + realm)
    with ExchangeLab(tmp_path / "exchange", port=free_port(), kerberos=kerberos) as lab:
        monkeypatch.setenv("KRB5_CONFIG", str(unreachable))
        flat, collector = await collect_exchange(lab)
    for server in SERVERS:
        assert reasons(flat, "exchange_server_error_reason", server=server) == {"kdc_unreachable"}
    assert "krb5.conf" in str([t.detail for t in collector.target_status()])


async def test_an_account_the_kdc_does_not_know_is_told_and_held_back(kerberos: LabKerberos, tmp_path: Path) -> None:
    auth = {"method": "kerberos", "user": f"svc_nobody@{REALM}", "password_file": str(kerberos.password_file)}
    with ExchangeLab(tmp_path / "exchange", port=free_port(), kerberos=kerberos) as lab:
        flat, collector = await collect_exchange(lab, refreshes=2, auth=auth)
    found = {r for s in SERVERS for r in reasons(flat, "exchange_server_error_reason", server=s)}
    assert found <= {"unknown_principal", "credential_suspended"} and found, found
    assert "the KDC does not know this account" in " ".join(t.detail for t in collector.target_status())
    assert not any(e.behaviour.authentications for e in lab.endpoints.values())  # no server was even asked
