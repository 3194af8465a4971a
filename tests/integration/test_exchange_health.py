"""Exchange health in depth through the real pypsrp client and the lab's WSMan/PSRP endpoints."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from exporter.parsers import exchange_health as eh
from lab import free_port
from lab.exchange import ExchangeLab
from lab.exchange_health import HEALTH_SETS
from lab.kerberos import LabKerberos
from tests.helpers import metric
from tests.integration.conftest import running_exporter

FAST = {"health": {"interval_seconds": 2}}


@pytest.fixture
def exchange(tmp_path: Path, kerberos: LabKerberos) -> Iterator[ExchangeLab]:
    with ExchangeLab(tmp_path / "exchange", port=free_port(), kerberos=kerberos) as lab:
        yield lab


def health_read(text: str) -> bool:
    return all(
        metric(text, "exchange_health_set_state", server=s, health_set="AD") is not None
        and metric(text, "exchange_emergency_mitigation_service_running", server=s) is not None
        for s in ("solo-e16a", "solo-e19a")
    )


def test_every_health_cmdlet_through_pypsrp(exchange: ExchangeLab, tmp_path: Path) -> None:
    with running_exporter(None, tmp_path, exchange=exchange, exchange_overrides=FAST, interval=2, timeout=1.5) as ex:
        text = ex.wait_for(health_read)
    for server in ("solo-e16a", "solo-e19a"):
        for health_set in HEALTH_SETS:
            assert metric(text, "exchange_health_set_state", server=server, health_set=health_set) == 0
        # The recorded Test-ServiceHealth: four roles, every required service running.
        for role in ("Mailbox", "Client Access", "Unified Messaging", "Hub Transport"):
            assert metric(text, "exchange_required_services_running", server=server, role=role) == 1
        assert metric(text, "exchange_database_copy_auto_activation_policy", server=server, policy="Unrestricted") == 1
        assert metric(text, "exchange_database_copy_activation_disabled_and_move_now", server=server) == 0
        assert metric(text, "exchange_transport_back_pressure", server=server, resource="SystemMemory") == 0
        assert metric(text, "exchange_transport_resource_pressure", server=server, resource="DatabaseUsedSpace") == 33
        assert metric(text, "exchange_emergency_mitigation_service_running", server=server, start_type="Automatic") == 1
        assert metric(text, "exchange_emergency_mitigation_enabled", server=server) == 1
    # The DAG: DB01 active on SOLO-E19A, its passive copy on SOLO-E16A.
    assert metric(text, "exchange_database_copy_status", server="solo-e19a", database="DB01", status="Mounted") == 1
    assert metric(text, "exchange_database_copy_active", server="solo-e19a", database="DB01") == 1
    assert metric(text, "exchange_database_copy_status", server="solo-e16a", database="DB01", status="Healthy") == 1
    assert metric(text, "exchange_database_copy_activation_preference", server="solo-e16a", database="DB01") == 2
    assert (
        metric(text, "exchange_database_content_index_state", server="solo-e16a", database="DB01", state="Healthy") == 1
    )
    # The Auth certificate Get-AuthConfig names, found among the servers' certificates.
    auth = exchange.org.auth_certificate
    thumbprint = hashlib.sha1(auth).hexdigest().upper()  # noqa: S324 - Windows' thumbprint
    expires = x509.load_der_x509_certificate(auth).not_valid_after_utc.timestamp()
    assert metric(text, "exchange_auth_certificate_found", organization="solo") == 1
    assert metric(text, "exchange_auth_certificate_not_after_timestamp_seconds", thumbprint=thumbprint) == expires
    assert metric(text, "exchange_auth_next_certificate_configured", organization="solo") == 0
    # The recorded override on SOLO-E19A: a responder turned off, past its expiry.
    assert metric(text, "exchange_monitoring_overrides", server="solo-e19a", scope="server") == 1
    assert metric(text, "exchange_monitoring_overrides", server="solo-e16a", scope="server") == 0
    assert metric(
        text,
        "exchange_monitoring_override_expiry_timestamp_seconds",
        server="solo-e19a",
        item="ActiveDirectoryConnectivityConfigDCServerReboot",
        disables="true",
    ) == pytest.approx(1727631649.0)
    for cmdlet in ("Get-ServerHealth", "Test-ServiceHealth", "Get-MailboxDatabaseCopyStatus", "Get-AuthConfig"):
        assert metric(text, "exchange_cmdlet_success", server="solo-e19a", cmdlet=cmdlet) == 1


def test_a_failed_update_shows_and_one_refused_cmdlet_leaves_the_rest(exchange: ExchangeLab, tmp_path: Path) -> None:
    with running_exporter(None, tmp_path, exchange=exchange, exchange_overrides=FAST, interval=2, timeout=1.5) as ex:
        ex.wait_for(health_read)
        e19 = exchange.org.health["solo-e19a"]
        e19.set_monitor("FrontendTransport", "FrontendTransportServiceRunningMonitor", "Unhealthy")
        e19.stopped_services.add("MSExchangeTransportLogSearch")
        e19.copies[1].status, e19.copies[1].copy_queue = "Suspended", 240
        e19.activation_policy = "Blocked"
        e19.resource_use["UsedVersionBuckets"] = ("High", 1600)
        e19.mitigation_service = "disabled"
        # SOLO-E16A's account may not run Get-ServerHealth: only that cmdlet is missing there.
        exchange.org.fail_cmdlet("solo-e16a", "Get-ServerHealth", "The term 'Get-ServerHealth' is not recognized.")
        text = ex.wait_for(
            lambda t: (
                metric(t, "exchange_health_set_state", server="solo-e19a", health_set="FrontendTransport") == 4
                and metric(
                    t, "exchange_emergency_mitigation_service_running", server="solo-e19a", start_type="Disabled"
                )
                == 0
                and metric(t, "exchange_cmdlet_success", server="solo-e16a", cmdlet="Get-ServerHealth") == 0
            )
        )
    labels = {"server": "solo-e19a"}
    unhealthy = {"health_set": "FrontendTransport", "monitor": "FrontendTransportServiceRunningMonitor"}
    assert metric(text, "exchange_health_monitor_unhealthy_info", **labels, **unhealthy) == 1
    assert metric(text, "exchange_health_set_state", health_set="HubTransport", **labels) == 0
    assert metric(text, "exchange_required_services_running", role="Mailbox", **labels) == 0
    assert metric(text, "exchange_service_not_running_info", service="MSExchangeTransportLogSearch", **labels) == 1
    assert metric(text, "exchange_database_copy_status", database="DB02", status="Suspended", **labels) == 1
    assert metric(text, "exchange_database_copy_queue_length", database="DB02", **labels) == 240
    assert metric(text, "exchange_database_copy_auto_activation_policy", policy="Blocked", **labels) == 1
    assert metric(text, "exchange_transport_back_pressure", resource="UsedVersionBuckets", **labels) == 2
    assert metric(text, "exchange_transport_resource_pressure", resource="UsedVersionBuckets", **labels) == 1600
    # The refusal on SOLO-E16A: the server is up, its other health cmdlets answered, its health sets are gone
    # rather than stale.
    assert metric(text, "exchange_server_up", server="solo-e16a") == 1
    assert metric(text, "exchange_health_set_state", server="solo-e16a", health_set="AD") is None
    assert metric(text, "exchange_cmdlet_success", server="solo-e16a", cmdlet="Test-ServiceHealth") == 1
    assert metric(text, "exchange_required_services_running", server="solo-e16a", role="Mailbox") == 1
    assert metric(text, "exchange_server_up", server="solo-e19a") == 1
    assert eh.HEALTH_STATE_VALUES["Unhealthy"] == 4  # the value the alert and the dashboard read
