"""DirectAccess cmdlet output (deserialised CLIXML) to records.

Server side: Get-RemoteAccessHealth (RemoteAccessHealthMonitor: Component, HealthState, TimeStamp and the
Heuristics of the monitors that are not OK), Get-RemoteAccessConnectionStatisticsSummary, Get-RemoteAccess (the
IP-HTTPS certificate). Both sides: Get-NetIPHttpsState (MSFT_NetIpHTTPsState), Get-NetFirewallProfile
(MSFT_NetFirewallProfile). Client side: Get-DAConnectionStatus (MSFT_DAConnectionStatus), Get-DnsClientNrptPolicy
and Resolve-DnsName's refusal text.

No public recording of these objects exists: the schemas are Microsoft's class documentation (the MOF of each
class), and values that CIM types as numbers but the console shows by name (a firewall profile's Enabled, a
connection's Status) are read in either form.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from exporter.parsers.clixml import CmdletDataError, as_list, cmdlet_object, integer_of, required_text, text_of

HEALTH_STATES = ("OK", "Warning", "Error", "Disabled", "Unknown")
CONNECTION_STATUSES = ("ConnectedRemotely", "ConnectedLocally", "Error", "ActionableError", "Unknown")
FIREWALL_PROFILES = ("Domain", "Private", "Public")

# Get-NetIPHttpsState's LastErrorCode, as DirectAccess troubleshooting guides name them.
IPHTTPS_ERRORS = {
    0x0: "none",
    0x103: "no_usable_certificate",
    0x2AF9: "host_not_found",
    0x2AFC: "no_data",  # often a proxy in the way
    0x274C: "timed_out",
    0x800B0109: "untrusted_root",
    0x80090326: "illegal_message",
    0x4BE: "invalid_url",
}
# "IPHTTPS interface active": the only InterfaceStatus text in which the tunnel carries traffic.
_IPHTTPS_ACTIVE = re.compile(r"\binterface\s+active\b", re.IGNORECASE)


def _enum_text(value: Any, names: Mapping[int, str]) -> str:
    """An enum as the console shows it: its name, or a CIM number mapped through ``names`` (else the number)."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return names.get(value, str(value))
    text = text_of(value).strip()
    if text.isdigit():
        return names.get(int(text), text)
    return text


# --- Get-RemoteAccessHealth -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Monitor:
    """One of a component's monitors that is not OK (RemoteAccessHealthHeuristic): for the page, not a label."""

    id: int
    status: str
    description: str
    cause: str
    resolution: str


@dataclass(frozen=True)
class ComponentHealth:
    component: str
    server: str  # RemoteAccessServer: the server the row is about (a cluster answers for each member)
    state: str  # one of HEALTH_STATES, or "Unknown" for a value it does not know
    changed: float | None  # TimeStamp: when the component entered its state
    monitors: tuple[Monitor, ...]


def parse_component_health(value: Any) -> ComponentHealth:
    cmdlet = "Get-RemoteAccessHealth"
    obj = cmdlet_object(value, cmdlet)
    component = required_text(obj, "Component", cmdlet)
    state = text_of(obj.get("HealthState")).strip()
    monitors = []
    for item in as_list(obj.get("Heuristics")):
        if not isinstance(item, Mapping):
            continue  # serialised beyond depth as its ToString: nothing to read
        monitors.append(
            Monitor(
                id=integer_of(item.get("Id", 0), cmdlet, "Heuristics.Id"),
                status=text_of(item.get("Status")).strip(),
                description=text_of(item.get("ErrorDesc")).strip(),
                cause=text_of(item.get("ErrorCause")).strip(),
                resolution=text_of(item.get("ErrorResoln")).strip(),
            )
        )
    when = obj.get("TimeStamp")
    return ComponentHealth(
        component=component,
        server=text_of(obj.get("RemoteAccessServer")).strip(),
        state=state if state in HEALTH_STATES else "Unknown",
        changed=when.timestamp() if isinstance(when, datetime) else None,
        monitors=tuple(monitors),
    )


# --- Get-RemoteAccessConnectionStatisticsSummary ----------------------------------------------------------


@dataclass(frozen=True)
class ConnectionSummary:
    total: int
    directaccess: int
    vpn: int
    unique_users: int


def parse_connection_summary(value: Any) -> ConnectionSummary:
    cmdlet = "Get-RemoteAccessConnectionStatisticsSummary"
    obj = cmdlet_object(value, cmdlet)
    return ConnectionSummary(
        total=integer_of(obj.get("TotalConnections"), cmdlet, "TotalConnections"),
        directaccess=integer_of(obj.get("TotalDAConnections"), cmdlet, "TotalDAConnections"),
        vpn=integer_of(obj.get("TotalVpnConnections"), cmdlet, "TotalVpnConnections"),
        unique_users=integer_of(obj.get("TotalUniqueUsers", 0), cmdlet, "TotalUniqueUsers"),
    )


# --- Get-RemoteAccess: the IP-HTTPS certificate ------------------------------------------------------------


def parse_iphttps_certificate_expiry(value: Any) -> float | None:
    """SslCertificate's NotAfter, when the certificate was serialised with its properties (else None: a
    certificate serialised beyond the remoting depth arrives as its ToString only)."""
    obj = cmdlet_object(value, "Get-RemoteAccess")
    certificate = obj.get("SslCertificate")
    if isinstance(certificate, Mapping):
        not_after = certificate.get("NotAfter")
        if isinstance(not_after, datetime):
            return not_after.timestamp()
    return None


# --- Get-NetIPHttpsState -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IPHttpsState:
    active: bool
    status: str  # InterfaceStatus as Windows words it
    code: str  # LastErrorCode as hex: 0x0, 0x2afc
    reason: str  # a name from IPHTTPS_ERRORS, or "other"


def parse_iphttps_state(value: Any) -> IPHttpsState:
    cmdlet = "Get-NetIPHttpsState"
    obj = cmdlet_object(value, cmdlet)
    code = integer_of(obj.get("LastErrorCode", 0), cmdlet, "LastErrorCode") & 0xFFFFFFFF
    status = text_of(obj.get("InterfaceStatus")).strip()
    return IPHttpsState(
        active=bool(_IPHTTPS_ACTIVE.search(status)) and not re.search(r"\bnot\b|\bfailed\b", status, re.IGNORECASE),
        status=status,
        code=f"0x{code:x}",
        reason=IPHTTPS_ERRORS.get(code, "other"),
    )


# An absent answer is a state too: "If IP-HTTPS is not active, then this cmdlet does not return an object."
IPHTTPS_NOT_IN_USE = IPHttpsState(active=False, status="", code="0x0", reason="none")


# --- Get-NetFirewallProfile ----------------------------------------------------------------------------------

# MSFT_NetFirewallProfile.Enabled is a GpoBoolean: False 0, True 1, NotConfigured 2.
_GPO_BOOLEAN = {0: "False", 1: "True", 2: "NotConfigured"}


@dataclass(frozen=True)
class FirewallProfile:
    profile: str  # Domain, Private, Public
    enabled: bool


def parse_firewall_profile(value: Any) -> FirewallProfile:
    cmdlet = "Get-NetFirewallProfile"
    obj = cmdlet_object(value, cmdlet)
    name = required_text(obj, "Name", cmdlet)
    enabled = _enum_text(obj.get("Enabled"), _GPO_BOOLEAN)
    if enabled not in ("True", "False", "NotConfigured"):
        raise CmdletDataError(cmdlet, name, f"Enabled is {enabled[:40]!r}, not True, False or NotConfigured")
    # NotConfigured leaves Windows' default, which is on (ActiveStore, which the collector asks for, resolves it).
    return FirewallProfile(profile=name, enabled=enabled != "False")


# --- Get-DAConnectionStatus ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionStatus:
    status: str  # one of CONNECTION_STATUSES ("Unknown" for a value not known)
    substatus: str  # None, CouldNotContactDirectAccessServer, NameResolutionFailure, ... as Windows names it

    @property
    def connected(self) -> bool:
        return self.status in ("ConnectedRemotely", "ConnectedLocally")


def parse_connection_status(value: Any) -> ConnectionStatus:
    cmdlet = "Get-DAConnectionStatus"
    obj = cmdlet_object(value, cmdlet)
    status = required_text(obj, "Status", cmdlet)
    substatus = text_of(obj.get("Substatus")).strip() or "None"
    # A number is an enum value this exporter cannot name: kept as its number, in a bounded label.
    if not re.fullmatch(r"[A-Za-z]{1,64}|\d{1,10}", substatus):
        raise CmdletDataError(cmdlet, status, f"Substatus is not a name: {substatus[:40]!r}")
    return ConnectionStatus(status=status if status in CONNECTION_STATUSES else "Unknown", substatus=substatus)


# --- Get-DnsClientNrptPolicy ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NrptRule:
    namespaces: tuple[str, ...]
    directaccess: bool  # DirectAccessEnabled: the rule sends the names to the DirectAccess DNS servers


def parse_nrpt_rule(value: Any) -> NrptRule:
    cmdlet = "Get-DnsClientNrptPolicy"
    obj = cmdlet_object(value, cmdlet)
    namespaces = tuple(t for t in (text_of(n).strip().lower() for n in as_list(obj.get("Namespace"))) if t)
    if not namespaces:
        raise CmdletDataError(cmdlet, "", "property Namespace is missing or empty")
    flag = obj.get("DirectAccessEnabled")
    return NrptRule(namespaces=namespaces, directaccess=flag is True or text_of(flag).strip().lower() == "true")


# --- Resolve-DnsName ---------------------------------------------------------------------------------------------

RESOLUTION_FAILURES = ("name_not_found", "timeout", "server_failure", "no_records", "error")
_RESOLUTION_REASONS = (
    (re.compile(r"DNS name does not exist|DNS_ERROR_RCODE_NAME_ERROR|\b9003\b", re.IGNORECASE), "name_not_found"),
    (re.compile(r"timeout period expired|ERROR_TIMEOUT|\b1460\b|timed out", re.IGNORECASE), "timeout"),
    (re.compile(r"DNS server failure|SERVER_FAILURE|\b9002\b", re.IGNORECASE), "server_failure"),
    (re.compile(r"No records of the requested type|DNS_INFO_NO_RECORDS|\b9501\b", re.IGNORECASE), "no_records"),
)


def resolution_failure_reason(error_text: str) -> str:
    """Resolve-DnsName's error (its message or FullyQualifiedErrorId) as one of RESOLUTION_FAILURES."""
    for pattern, reason in _RESOLUTION_REASONS:
        if pattern.search(error_text):
            return reason
    return "error"
