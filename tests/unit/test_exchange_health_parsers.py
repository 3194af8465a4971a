"""Exchange health-in-depth parsers on the CSS-Exchange samples (tests/fixtures/README.md), on the objects the lab
builds where no public recording exists, and on broken input."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.parsers import exchange_health as eh
from exporter.parsers.clixml import CmdletDataError, PSObject, parse_object
from lab.exchange import LabExchange, recorded_objects
from lab.exchange_health import HEALTH_SETS
from lab.psrp_endpoint import Invocation


def sample(name: str) -> list[Any]:
    return [parse_object(o) for o in recorded_objects(name)]


def obj(**props: Any) -> PSObject:
    out = PSObject(("Deserialized.Test",))
    out.update(props)
    return out


def test_service_health_sample_every_role_running() -> None:
    roles = [eh.parse_service_health(o) for o in sample("E16_Exchange_TestServiceHealth.xml")]
    assert roles == [
        eh.RoleServices("Mailbox", True, ()),
        eh.RoleServices("Client Access", True, ()),
        eh.RoleServices("Unified Messaging", True, ()),
        eh.RoleServices("Hub Transport", True, ()),
    ]


def test_service_health_with_a_service_stopped() -> None:
    parsed = eh.parse_service_health(
        obj(Role="Hub Transport Server Role", RequiredServicesRunning=False, ServicesNotRunning="MSExchangeTransport")
    )
    assert parsed == eh.RoleServices("Hub Transport", False, ("MSExchangeTransport",))


def test_mailbox_server_sample_and_the_maintenance_leftovers() -> None:
    assert eh.parse_mailbox_server(sample("E16_Exchange_GetMailboxServer.xml")[0]) == eh.ActivationSettings(
        "Unrestricted", False
    )
    blocked = eh.parse_mailbox_server(
        obj(DatabaseCopyAutoActivationPolicy="Blocked", DatabaseCopyActivationDisabledAndMoveNow=True)
    )
    assert blocked.blocked
    with pytest.raises(CmdletDataError, match="Get-MailboxServer: property DatabaseCopyAutoActivationPolicy"):
        eh.parse_mailbox_server(obj(Name="EX1"))


def test_resource_throttling_sample_system_memory_at_high() -> None:
    meters = {
        m.resource: m
        for m in eh.parse_resource_throttling(
            sample("E16_Exchange_GetExchangeDiagnosticInfo_EdgeTransportResourceThrottling.xml")[0]
        )
    }
    assert set(meters) == {
        "PrivateBytes",
        "SystemMemory",
        "UsedVersionBuckets",
        "JetSessions",
        "CheckpointDepth",
        "DatabaseUsedSpace",
        "UsedDiskSpace",
    }
    memory = meters["SystemMemory"]
    assert (memory.use, memory.pressure, memory.back_pressure) == ("High", 92.0, True)
    assert memory.thresholds == {"MediumToHigh": 94.0, "HighToMedium": 89.0, "LowToMedium": 88.0, "MediumToLow": 84.0}
    assert not meters["PrivateBytes"].back_pressure


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ("", "property Result is missing"),
        ("<Diagnostics><ResourceMeter", "Result is not the diagnostics XML"),
        ('<!DOCTYPE d [<!ENTITY x "y">]><Diagnostics/>', "Result is not the diagnostics XML"),
        (
            '<D><ResourceMeter Resource="X"><CurrentResourceUse>Huge</CurrentResourceUse></ResourceMeter></D>',
            "known use",
        ),
    ],
)
def test_resource_throttling_refuses_what_it_cannot_read(result: str, message: str) -> None:
    with pytest.raises(CmdletDataError, match=message):
        eh.parse_resource_throttling(obj(Result=result))


def test_auth_config_sample() -> None:
    auth = eh.parse_auth_config(sample("E16_Exchange_GetAuthConfig.xml")[0])
    assert auth == eh.AuthConfig("92E196F3C8D3D753FCFC5B7690C3173AA1C0ABE3", "", None)


def test_mitigation_service_samples_running_and_disabled() -> None:
    running = eh.parse_service(sample("E16_Exchange_GetServiceMitigation.xml")[0])
    disabled = eh.parse_service(sample("HealthChecker_GetServiceMSExchangeMitigationDisabled.xml")[0])
    assert running == eh.ServiceState("MSExchangeMitigation", "Running", "Automatic")
    assert disabled == eh.ServiceState("MSExchangeMitigation", "Stopped", "Disabled")
    assert eh.parse_mitigations(sample("E16_Exchange_GetExchangeServer.xml")[0]) == eh.Mitigations(True, (), ())


def test_monitoring_override_sample_expired_and_disabling() -> None:
    [override] = [
        eh.parse_monitoring_override(o, "server") for o in sample("E19_Exchange_GetServerMonitoringOverride.xml")
    ]
    assert (override.item_type, override.health_set, override.item) == (
        "Responder",
        "AD",
        "ActiveDirectoryConnectivityConfigDCServerReboot",
    )
    assert override.expires == 1727631649.0  # 2024-09-29 17:40:49Z, as Exchange writes it into the object
    assert override.disables()
    assert not eh.parse_monitoring_override(
        obj(
            MonitoringItemName="M",
            HealthSetName="OWA",
            PropertyName="Threshold",
            PropertyValue="5",
            ExpirationTime="not a date",
        ),
        "global",
    ).disables()


def ask(org: LabExchange, cmdlet: str, **params: Any) -> list[Any]:
    answer = org(Invocation("Microsoft.Exchange", "solo-e19a", [(cmdlet, False, list(params.items()))]))
    return [parse_object(o) for o in answer.objects]


def test_server_health_built_to_the_schema_rolls_up_to_the_worst_monitor() -> None:
    org = LabExchange()
    org.health["solo-e19a"].set_monitor("OWA.Protocol", "OwaSelfTestMonitor", "Degraded")
    org.health["solo-e19a"].set_monitor("OWA.Protocol", "OwaDeepTestMonitor", "Unhealthy")
    org.health["solo-e19a"].set_monitor("ECP", "EcpSelfTestMonitor", "Disabled")
    sets = {
        s.name: s
        for s in eh.health_sets(eh.parse_server_health(o) for o in ask(org, "Get-ServerHealth", Identity="SOLO-E19A"))
    }
    assert set(sets) == set(HEALTH_SETS)
    assert sets["OWA.Protocol"] == eh.HealthSet(
        "OWA.Protocol", "Unhealthy", ("OwaDeepTestMonitor", "OwaSelfTestMonitor")
    )
    assert (sets["ECP"].state, sets["ECP"].unhealthy) == ("Disabled", ())
    assert sets["AD"].state == "Healthy"
    with pytest.raises(CmdletDataError, match="Get-ServerHealth M: property HealthSetName"):
        eh.parse_server_health(obj(Name="M", AlertValue="Healthy"))


def test_database_copies_built_to_the_schema() -> None:
    org = LabExchange()
    org.fail_update("solo-e19a")
    copies = {
        c.database: c
        for c in map(eh.parse_database_copy, ask(org, "Get-MailboxDatabaseCopyStatus", Server="SOLO-E19A"))
    }
    assert (copies["DB01"].status, copies["DB01"].active, copies["DB01"].healthy) == ("Mounted", True, True)
    suspended = copies["DB02"]
    assert (suspended.status, suspended.copy_queue, suspended.content_index, suspended.healthy) == (
        "Suspended",
        240,
        "Failed",
        False,
    )
    assert suspended.activation_preference == 2 and suspended.last_inspected_log is not None
    with pytest.raises(CmdletDataError, match=r"DB9\\EX1: property CopyQueueLength is not a number"):
        eh.parse_database_copy(obj(Name="DB9\\EX1", Status="Healthy", CopyQueueLength="lots"))
