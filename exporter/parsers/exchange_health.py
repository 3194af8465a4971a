"""Exchange health in depth (deserialised CLIXML) to records: Managed Availability, services, database copies,
transport back pressure, the Auth certificate, Emergency Mitigation and monitoring overrides.

Real samples (CSS-Exchange's HealthChecker test data): Test-ServiceHealth, Get-MailboxServer, Get-AuthConfig,
Get-ExchangeDiagnosticInfo -Process EdgeTransport -Component ResourceThrottling, Get-Service MSExchangeMitigation
(running and disabled), Get-ServerMonitoringOverride. No public recording exists of Get-ServerHealth or
Get-MailboxDatabaseCopyStatus: their parsers follow Microsoft's documented output (MonitorHealthEntry,
DatabaseCopyStatusEntry) and read enums by their names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from exporter.parsers import safexml
from exporter.parsers.clixml import CmdletDataError, cmdlet_object, integer_of, required_text, text_of

# Managed Availability's AlertValue, worst last: a health set is as bad as its worst monitor.
HEALTH_STATES = ("Healthy", "Disabled", "Degraded", "Repairing", "Unhealthy")
HEALTH_STATE_VALUES = {state: i for i, state in enumerate(HEALTH_STATES)}
COPY_STATUSES_HEALTHY = frozenset({"Mounted", "Healthy"})
RESOURCE_USE = {"Low": 0, "Medium": 1, "High": 2}


def _texts(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else ([] if value is None else [value])
    return tuple(t for t in (text_of(i).strip() for i in items) if t)


def _flag(value: Any) -> bool:
    return value is True or text_of(value).strip().lower() == "true"


def _when(value: Any) -> float | None:
    """A DateTime, or the text Exchange writes into deserialised objects ("2024-09-29 17:40:49Z")."""
    if isinstance(value, datetime):
        return value.timestamp()
    text = text_of(value).strip()
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


# --- Get-ServerHealth ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MonitorHealth:
    health_set: str
    monitor: str
    state: str  # one of HEALTH_STATES; Unknown and anything else count as Healthy (not known to be bad)
    target: str


def parse_server_health(value: Any) -> MonitorHealth:
    cmdlet = "Get-ServerHealth"
    obj = cmdlet_object(value, cmdlet)
    monitor = required_text(obj, "Name", cmdlet)
    state = text_of(obj.get("AlertValue")).strip()
    return MonitorHealth(
        health_set=required_text(obj, "HealthSetName", cmdlet, monitor),
        monitor=monitor,
        state=state if state in HEALTH_STATE_VALUES else "Healthy",
        target=text_of(obj.get("TargetResource")).strip(),
    )


@dataclass(frozen=True)
class HealthSet:
    name: str
    state: str  # the worst of its monitors
    unhealthy: tuple[str, ...]  # monitors Unhealthy or Degraded or Repairing, sorted


def health_sets(monitors: Iterable[MonitorHealth]) -> list[HealthSet]:
    by_set: dict[str, list[MonitorHealth]] = {}
    for m in monitors:
        by_set.setdefault(m.health_set, []).append(m)
    out = []
    for name, items in sorted(by_set.items()):
        worst = max(items, key=lambda m: HEALTH_STATE_VALUES[m.state]).state
        bad = sorted({m.monitor for m in items if HEALTH_STATE_VALUES[m.state] >= HEALTH_STATE_VALUES["Degraded"]})
        out.append(HealthSet(name, worst, tuple(bad)))
    return out


# --- Test-ServiceHealth -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoleServices:
    role: str  # "Mailbox Server Role" -> "Mailbox"
    required_running: bool
    not_running: tuple[str, ...]


def parse_service_health(value: Any) -> RoleServices:
    cmdlet = "Test-ServiceHealth"
    obj = cmdlet_object(value, cmdlet)
    role = required_text(obj, "Role", cmdlet).removesuffix(" Role").removesuffix(" Server").strip()
    return RoleServices(
        role=role,
        required_running=_flag(obj.get("RequiredServicesRunning")),
        not_running=_texts(obj.get("ServicesNotRunning")),
    )


# --- Get-MailboxDatabaseCopyStatus, Get-MailboxServer --------------------------------------------------------------


@dataclass(frozen=True)
class DatabaseCopy:
    database: str
    status: str  # Mounted, Healthy, Suspended, Failed, FailedAndSuspended, Seeding, Dismounted, ...
    copy_queue: int
    replay_queue: int
    content_index: str  # Healthy, Crawling, Failed, FailedAndSuspended, Suspended, Disabled, NotApplicable, ...
    last_inspected_log: float | None
    activation_preference: int
    active: bool

    @property
    def healthy(self) -> bool:
        return self.status in COPY_STATUSES_HEALTHY


def parse_database_copy(value: Any) -> DatabaseCopy:
    cmdlet = "Get-MailboxDatabaseCopyStatus"
    obj = cmdlet_object(value, cmdlet)
    name = required_text(obj, "Name", cmdlet)  # "DB01\\SERVER"
    database = text_of(obj.get("DatabaseName")).strip() or name.split("\\", 1)[0]
    status = required_text(obj, "Status", cmdlet, name)
    return DatabaseCopy(
        database=database,
        status=status,
        copy_queue=integer_of(obj.get("CopyQueueLength"), cmdlet, "CopyQueueLength", name, missing=0),
        replay_queue=integer_of(obj.get("ReplayQueueLength"), cmdlet, "ReplayQueueLength", name, missing=0),
        content_index=text_of(obj.get("ContentIndexState")).strip() or "Unknown",
        last_inspected_log=_when(obj.get("LastInspectedLogTime")),
        activation_preference=integer_of(
            obj.get("ActivationPreference"), cmdlet, "ActivationPreference", name, missing=0
        ),
        active=_flag(obj.get("ActiveCopy")) or status == "Mounted",
    )


@dataclass(frozen=True)
class ActivationSettings:
    policy: str  # DatabaseCopyAutoActivationPolicy: Unrestricted, IntrasiteOnly, Blocked
    disabled_and_move_now: bool  # DatabaseCopyActivationDisabledAndMoveNow

    @property
    def blocked(self) -> bool:
        return self.policy == "Blocked" or self.disabled_and_move_now


def parse_mailbox_server(value: Any) -> ActivationSettings:
    cmdlet = "Get-MailboxServer"
    obj = cmdlet_object(value, cmdlet)
    return ActivationSettings(
        policy=required_text(obj, "DatabaseCopyAutoActivationPolicy", cmdlet),
        disabled_and_move_now=_flag(obj.get("DatabaseCopyActivationDisabledAndMoveNow")),
    )


# --- Get-ExchangeDiagnosticInfo -Process EdgeTransport -Component ResourceThrottling --------------------------------


@dataclass(frozen=True)
class ResourceMeter:
    resource: str  # the meter's kind: PrivateBytes, SystemMemory, UsedVersionBuckets, DatabaseUsedSpace, ...
    use: str  # CurrentResourceUse: Low, Medium, High
    pressure: float  # the meter's current pressure (percent for most)
    thresholds: Mapping[str, float]  # LowToMedium, MediumToHigh, HighToMedium, MediumToLow

    @property
    def back_pressure(self) -> bool:
        """Medium throttles submission, High stops it: ``452 4.3.1 Insufficient system resources``."""
        return self.use != "Low"


def parse_resource_throttling(value: Any) -> list[ResourceMeter]:
    cmdlet = "Get-ExchangeDiagnosticInfo"
    obj = cmdlet_object(value, cmdlet)
    text = text_of(obj.get("Result")).strip()
    if not text:
        raise CmdletDataError(cmdlet, "", "property Result is missing or empty")
    try:
        root = safexml.parse(text)
    except safexml.XmlError as exc:
        raise CmdletDataError(cmdlet, "", f"Result is not the diagnostics XML: {exc}") from None
    meters: dict[str, ResourceMeter] = {}
    for element in root.iter("ResourceMeter"):
        # UsedVersionBuckets[C:\...\mail.que]: the path is the queue database's, one per server.
        resource = (element.get("Resource") or "").split("[", 1)[0].strip()
        use = (element.findtext("CurrentResourceUse") or "").strip()
        if not resource or use not in RESOURCE_USE:
            raise CmdletDataError(cmdlet, resource, f"ResourceMeter without a Resource or a known use: {use[:20]!r}")
        thresholds = {
            k: float(v)
            for k, v in re.findall(r"(\w+To\w+)=(\d+(?:\.\d+)?)", element.findtext("PressureTransitions") or "")
        }
        try:
            pressure = float((element.findtext("Pressure") or "0").strip())
        except ValueError:
            raise CmdletDataError(cmdlet, resource, "Pressure is not a number") from None
        meter = ResourceMeter(resource, use, pressure, thresholds)
        known = meters.get(resource)
        if known is None or RESOURCE_USE[meter.use] > RESOURCE_USE[known.use]:
            meters[resource] = meter
    return [meters[k] for k in sorted(meters)]


# --- Get-AuthConfig ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthConfig:
    current_thumbprint: str
    next_thumbprint: str
    next_effective: float | None


def parse_auth_config(value: Any) -> AuthConfig:
    cmdlet = "Get-AuthConfig"
    obj = cmdlet_object(value, cmdlet)
    return AuthConfig(
        current_thumbprint=text_of(obj.get("CurrentCertificateThumbprint")).strip().upper(),
        next_thumbprint=text_of(obj.get("NextCertificateThumbprint")).strip().upper(),
        next_effective=_when(obj.get("NextCertificateEffectiveDate")),
    )


# --- Emergency Mitigation: Get-Service MSExchangeMitigation, Get-ExchangeServer's Mitigations* ---------------------


@dataclass(frozen=True)
class ServiceState:
    name: str
    status: str  # Running, Stopped, ...
    start_type: str  # Automatic, Manual, Disabled


def parse_service(value: Any) -> ServiceState:
    cmdlet = "Get-Service"
    obj = cmdlet_object(value, cmdlet)
    name = required_text(obj, "Name", cmdlet)
    return ServiceState(name, required_text(obj, "Status", cmdlet, name), text_of(obj.get("StartType")).strip())


@dataclass(frozen=True)
class Mitigations:
    enabled: bool  # MitigationsEnabled: the service may apply mitigations on this server
    applied: tuple[str, ...]
    blocked: tuple[str, ...]


def parse_mitigations(value: Any) -> Mitigations:
    obj = cmdlet_object(value, "Get-ExchangeServer")
    return Mitigations(
        enabled=_flag(obj.get("MitigationsEnabled")),
        applied=_texts(obj.get("MitigationsApplied")),
        blocked=_texts(obj.get("MitigationsBlocked")),
    )


# --- Get-ServerMonitoringOverride / Get-GlobalMonitoringOverride -----------------------------------------------------


@dataclass(frozen=True)
class MonitoringOverride:
    scope: str  # server, global
    item_type: str  # Probe, Monitor, Responder, Maintenance
    health_set: str
    item: str
    property: str
    value: str
    expires: float | None  # None: no expiry (ApplyVersion overrides last until the build changes)

    def disables(self) -> bool:
        return self.property.lower() == "enabled" and self.value.strip().lower() in ("0", "false")


def parse_monitoring_override(value: Any, scope: str) -> MonitoringOverride:
    cmdlet = "Get-ServerMonitoringOverride" if scope == "server" else "Get-GlobalMonitoringOverride"
    obj = cmdlet_object(value, cmdlet)
    item = required_text(obj, "MonitoringItemName", cmdlet)
    return MonitoringOverride(
        scope=scope,
        item_type=text_of(obj.get("ItemType")).strip() or "Unknown",
        health_set=required_text(obj, "HealthSetName", cmdlet, item),
        item=item,
        property=text_of(obj.get("PropertyName")).strip(),
        value=text_of(obj.get("PropertyValue")).strip(),
        expires=_when(obj.get("ExpirationTime")),
    )
