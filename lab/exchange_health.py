"""The lab Exchange servers' health in depth: Managed Availability, services, database copies, back pressure,
the Auth certificate, Emergency Mitigation and monitoring overrides.

Where CSS-Exchange has a real sample it is served (with only the values a story changes rewritten in place):
Test-ServiceHealth, Get-MailboxServer, Get-AuthConfig, Get-ExchangeDiagnosticInfo (ResourceThrottling),
Get-Service MSExchangeMitigation, Get-ServerMonitoringOverride. Get-ServerHealth and
Get-MailboxDatabaseCopyStatus have no public recording: they are built to Microsoft's documented output
(MonitorHealthEntry, DatabaseCopyStatusEntry).
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from lab.clixml import Builder, dt_, s_

# Health sets and some of their monitors, as Get-ServerHealth names them on Exchange 2016/2019.
HEALTH_SETS = {
    "AD": ["ActiveDirectoryConnectivityMonitor", "ActiveDirectoryConnectivityConfigDCMonitor"],
    "ActiveSync": ["ActiveSyncSelfTestMonitor", "ActiveSyncDeepTestMonitor"],
    "Autodiscover.Protocol": ["AutodiscoverSelfTestMonitor"],
    "ECP": ["EcpSelfTestMonitor"],
    "EWS.Protocol": ["EWSSelfTestMonitor", "EWSDeepTestMonitor"],
    "FrontendTransport": ["FrontendTransportServiceRunningMonitor", "OnPremisesInboundProxyMonitor"],
    "HubTransport": ["HubTransportServiceRunningMonitor", "TransportQueueMonitor"],
    "MailboxTransport": ["MailboxTransportDeliveryServiceRunningMonitor"],
    "OWA.Protocol": ["OwaSelfTestMonitor", "OwaDeepTestMonitor"],
    "Outlook.Protocol": ["OutlookRpcSelfTestMonitor"],
    "OutlookMapiHttp.Protocol": ["OutlookMapiHttpSelfTestMonitor"],
    "Store": ["StoreServiceRunningMonitor"],
    "DataProtection": ["DatabaseHealthReplayQueueMonitor", "DatabaseHealthCopyQueueMonitor"],
}


@dataclass
class LabCopy:
    database: str
    status: str = "Healthy"  # Mounted for the active copy
    copy_queue: int = 0
    replay_queue: int = 0
    content_index: str = "Healthy"
    activation_preference: int = 1


@dataclass
class LabServerHealth:
    """What one server's health cmdlets answer; tests and the demo change it."""

    name: str  # SOLO-E19A
    monitors: dict[tuple[str, str], str] = field(
        default_factory=lambda: {(hs, m): "Healthy" for hs, ms in HEALTH_SETS.items() for m in ms}
    )
    stopped_services: set[str] = field(default_factory=set)
    copies: list[LabCopy] = field(default_factory=list)
    activation_policy: str = "Unrestricted"
    disabled_and_move_now: bool = False
    resource_use: dict[str, tuple[str, int]] = field(default_factory=dict)  # resource -> (use, pressure)
    mitigation_service: str = "running"  # running, or disabled (the real sample of each)
    overrides: bool = False  # serve the real Get-ServerMonitoringOverride sample (an override past its expiry)

    def set_monitor(self, health_set: str, monitor: str, state: str) -> None:
        self.monitors[(health_set, monitor)] = state


def server_health(health: LabServerHealth, fqdn: str) -> list[str]:
    """Get-ServerHealth -Identity SERVER: one MonitorHealthEntry per monitor."""
    out = []
    now = dt.datetime.now(dt.UTC)
    numbers = {"Unknown": 0, "Healthy": 1, "Degraded": 2, "Unhealthy": 3, "Repairing": 4, "Disabled": 5}
    for (health_set, monitor), state in sorted(health.monitors.items()):
        b = Builder()
        props = "".join(
            [
                s_("Server", fqdn.split(".")[0].upper()),
                b.enum(
                    "CurrentHealthSetState",
                    "Microsoft.Exchange.Data.Monitoring.MonitorServerComponentState",
                    "NotApplicable",
                    0,
                ),
                s_("Name", monitor),
                s_("TargetResource", health_set.split(".")[0]),
                s_("HealthSetName", health_set),
                s_("HealthGroupName", "ServiceComponents"),
                b.enum(
                    "AlertValue",
                    "Microsoft.Office.Datacenter.ActiveMonitoring.MonitorAlertState",
                    state,
                    numbers[state],
                ),
                dt_("FirstAlertObservedTime", now if state != "Healthy" else None),
                s_("Description", ""),
                '<B N="IsHaImpacting">false</B>',
                dt_("LastTransitionTime", now - dt.timedelta(hours=2)),
                dt_("LastExecutionTime", now - dt.timedelta(minutes=1)),
                s_("Identity", f"{health_set}\\{monitor}\\{health_set.split('.')[0]}"),
                '<B N="IsValid">true</B>',
            ]
        )
        out.append(
            b.obj(
                [
                    "Microsoft.Exchange.Management.Monitoring.MonitorHealthEntry",
                    "Microsoft.Exchange.Data.ConfigurableObject",
                    "System.Object",
                ],
                f"{health_set}\\{monitor}",
                props,
            )
        )
    return out


def database_copy_status(health: LabServerHealth) -> list[str]:
    """Get-MailboxDatabaseCopyStatus -Server SERVER: one DatabaseCopyStatusEntry per copy on the server."""
    out = []
    now = dt.datetime.now(dt.UTC)
    for c in health.copies:
        b = Builder()
        active = c.status == "Mounted"
        props = "".join(
            [
                s_("Name", f"{c.database}\\{health.name}"),
                s_("DatabaseName", c.database),
                b.enum("Status", "Microsoft.Exchange.Management.SystemConfigurationTasks.CopyStatus", c.status, 0),
                s_("MailboxServer", health.name),
                s_("ActiveDatabaseCopy", health.name.lower() if active else "other"),
                f'<B N="ActiveCopy">{"true" if active else "false"}</B>',
                f'<I64 N="CopyQueueLength">{c.copy_queue}</I64>',
                f'<I64 N="ReplayQueueLength">{c.replay_queue}</I64>',
                dt_("LastInspectedLogTime", now - dt.timedelta(seconds=30 + c.copy_queue)),
                b.enum(
                    "ContentIndexState",
                    "Microsoft.Exchange.Management.SystemConfigurationTasks.ContentIndexStatusType",
                    c.content_index,
                    0,
                ),
                f'<I32 N="ActivationPreference">{c.activation_preference}</I32>',
                f'<B N="ActivationSuspended">{"true" if c.status == "Suspended" else "false"}</B>',
            ]
        )
        out.append(
            b.obj(
                [
                    "Microsoft.Exchange.Management.SystemConfigurationTasks.DatabaseCopyStatusEntry",
                    "Microsoft.Exchange.Data.ConfigurableObject",
                    "System.Object",
                ],
                f"{c.database}\\{health.name}",
                props,
            )
        )
    return out


def _retarget(xml: str, name: str) -> str:
    """A sample recorded on SOLO-E16A (or E19A) as the same object on ``name``."""
    for old in ("SOLO-E16A", "SOLO-E19A"):
        xml = xml.replace(old, name.upper()).replace(old.lower(), name.lower()).replace(old.title(), name.title())
    return xml


def service_health(samples: list[str], health: LabServerHealth) -> list[str]:
    """Test-ServiceHealth: the real sample, with the services the story stops moved to ServicesNotRunning."""
    out = []
    for xml in samples:
        root = ET.fromstring(xml)  # noqa: S314 - the lab's own fixture
        props = root.find("Props")
        assert props is not None
        running = props.find("Obj[@N='ServicesRunning']/LST")
        not_running = props.find("Obj[@N='ServicesNotRunning']/LST")
        if running is not None and not_running is not None:
            for service in list(running):
                if service.text in health.stopped_services:
                    running.remove(service)
                    not_running.append(service)
            required = props.find("B[@N='RequiredServicesRunning']")
            if required is not None:
                required.text = "false" if len(not_running) else "true"
        out.append(ET.tostring(root, encoding="unicode"))
    return out


def mailbox_server(sample: str, health: LabServerHealth) -> str:
    root = ET.fromstring(_retarget(sample, health.name))  # noqa: S314 - the lab's own fixture
    props = root.find("Props")
    assert props is not None
    policy = props.find("Obj[@N='DatabaseCopyAutoActivationPolicy']")
    if policy is not None:
        numbers = {"Unrestricted": 0, "IntrasiteOnly": 1, "Blocked": 2}
        policy.find("ToString").text = health.activation_policy  # type: ignore[union-attr]
        number = policy.find("I32")
        if number is not None:
            number.text = str(numbers[health.activation_policy])
    move_now = props.find("B[@N='DatabaseCopyActivationDisabledAndMoveNow']")
    if move_now is not None:
        move_now.text = "true" if health.disabled_and_move_now else "false"
    return ET.tostring(root, encoding="unicode")


def resource_throttling(sample: str, health: LabServerHealth) -> str:
    """The real diagnostics sample with each meter's use and pressure as the server's state says."""
    xml = _retarget(sample, health.name)
    for resource, (use, pressure) in health.resource_use.items():
        pattern = re.compile(
            rf"(ResourceMeter Resource=\"{re.escape(resource)}[^\"]*\"&gt;.*?CurrentResourceUse&gt;)(\w+)"
            rf"(.*?Pressure&gt;)(\d+)",
            re.S,
        )
        xml = pattern.sub(rf"\g<1>{use}\g<3>{pressure}", xml)  # the Result is in the object twice
    return xml


def auth_config(sample: str, thumbprint: str) -> str:
    """Get-AuthConfig as recorded, naming the lab's Auth certificate."""
    return re.sub(r"(N=\"CurrentCertificateThumbprint\">)[0-9A-F]*", rf"\g<1>{thumbprint}", sample)
