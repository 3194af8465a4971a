"""The lab's DirectAccess deployment, answered over the PSRP endpoint: one Remote Access server, two clients.

These objects are built, not recorded: no public CLIXML of the Remote Access or network cmdlets exists. Each is
built to its class as Microsoft documents it (the MOF of RemoteAccessHealthMonitor and RemoteAccessHealthHeuristic,
MSFT_NetIpHTTPsState, MSFT_NetFirewallProfile, MSFT_DAConnectionStatus, MSFT_DnsClientNrptPolicy; the example
tables of Get-RemoteAccessHealth and Get-RemoteAccessConnectionStatisticsSummary), with the type names a Windows
host gives CIM instances; nested objects (a component's monitors, the IP-HTTPS certificate) are serialised with
their properties.

The story it plays: with the server's Windows Firewall off, IP-HTTPS still comes up (LastErrorCode 0x0) but the
IPsec tunnels, which Windows Firewall enforces, do not: the clients' names through the NRPT stop resolving and
Get-DAConnectionStatus says CouldNotContactDirectAccessServer. Turning the firewall back on mends it.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from cryptography import x509

from exporter.parsers.directaccess import Monitor
from lab.clixml import Builder, dt_, s_
from lab.exchange import make_certificate
from lab.psrp_endpoint import EndpointGroup, Invocation, Output, PsrpEndpoint, unknown_command

SERVER = "DA1"
CLIENTS = ("LAPTOP-01", "LAPTOP-02")
ADDRESSES = {"DA1": "127.0.0.30", "LAPTOP-01": "127.0.0.31", "LAPTOP-02": "127.0.0.32"}
INTERNAL_NAME = "intranet.corp.contoso.com"
SERVICE_USER = "svc_directaccess"
PROFILES = ("Domain", "Private", "Public")
_CIM = "Microsoft.Management.Infrastructure.CimInstance"
# Get-RemoteAccessHealth on a healthy single server (the components of Microsoft's example table).
COMPONENTS = {
    "Server": "OK",
    "6to4": "Disabled",
    "Vpn Addressing": "OK",
    "Network Security": "OK",
    "Dns": "OK",
    "IP-Https": "OK",
    "Nat64": "OK",
    "Dns64": "OK",
    "IPsec": "OK",
    "Kerberos": "Disabled",
    "Domain Controller": "OK",
    "Management Servers": "Disabled",
    "Network Location Server": "OK",
    "Otp": "Disabled",
    "High Availability": "Disabled",
    "Isatap": "Disabled",
    "Vpn Connectivity": "OK",
    "Teredo": "Disabled",
    "Network Adapters": "OK",
    "Services": "OK",
}


def _cim(class_path: str, to_string: str, props: str, b: Builder | None = None, name: str | None = None) -> str:
    cls = class_path.rsplit("/", 1)[-1]
    types = [f"{_CIM}#{class_path}", f"{_CIM}#{cls}", _CIM, "System.Object"]
    return (b or Builder()).obj(types, to_string, props, name)


def _u32(name: str, value: int) -> str:
    return f'<U32 N="{name}">{value}</U32>'


def _strings(b: Builder, name: str, values: list[str]) -> str:
    return b.array(name, "System.String[]", "".join(f"<S>{escape(v)}</S>" for v in values))


@dataclass
class LabHost:
    name: str
    firewall: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(PROFILES, True))
    iphttps_error: int = 0
    iphttps_active: bool = True
    failures: dict[str, str] = field(default_factory=dict)  # cmdlet -> error message


class LabDirectAccess:
    """The deployment behind the lab's endpoints; thread-safe. Tests and the demo change it while it runs."""

    def __init__(self, connections: int = 12, vpn: int = 3, now: dt.datetime | None = None) -> None:
        self._lock = threading.Lock()
        self.hosts = {name: LabHost(name) for name in (SERVER, *CLIENTS)}
        self.components: dict[str, tuple[str, dt.datetime, list[Monitor]]] = {}
        now = now or dt.datetime.now(dt.UTC)
        for component, state in COMPONENTS.items():
            self.components[component] = (state, now - dt.timedelta(days=3), [])
        self.connections, self.vpn = connections, vpn
        self.certificate = make_certificate("da.contoso.com", "Contoso Ltd", 45, now)

    # --- what tests and the demo change -----------------------------------------------------------------

    def set_firewall(self, host: str, enabled: bool, profiles: tuple[str, ...] = PROFILES) -> None:
        with self._lock:
            for profile in profiles:
                self.hosts[host].firewall[profile] = enabled

    def set_component(self, component: str, state: str, monitors: list[Monitor] | None = None) -> None:
        with self._lock:
            self.components[component] = (state, dt.datetime.now(dt.UTC), monitors or [])

    def set_iphttps(self, host: str, active: bool, error: int = 0) -> None:
        with self._lock:
            self.hosts[host].iphttps_active, self.hosts[host].iphttps_error = active, error

    def fail_cmdlet(self, host: str, cmdlet: str, message: str | None) -> None:
        with self._lock:
            if message is None:
                self.hosts[host].failures.pop(cmdlet, None)
            else:
                self.hosts[host].failures[cmdlet] = message

    @property
    def tunnels_up(self) -> bool:
        """IPsec through the server needs its Windows Firewall, on every profile it serves (the story)."""
        return all(self.hosts[SERVER].firewall.values())

    # --- the endpoint's command handler -------------------------------------------------------------------

    def __call__(self, invocation: Invocation) -> Output:
        if len(invocation.commands) != 1:
            return Output(failure=("The lab answers one cmdlet per pipeline.", "LabPipeline", "InvalidOperation"))
        name, _, parameters = invocation.commands[0]
        params = {str(k).lower(): v for k, v in parameters if k is not None}
        host = self.hosts.get(invocation.server.upper())
        if host is None:
            return unknown_command(name)
        with self._lock:
            if name in host.failures:
                return Output(error=(host.failures[name], f"{name},LabFailure", "NotSpecified"))
            return self._answer(name, params, host)

    def _answer(self, name: str, params: dict[str, Any], host: LabHost) -> Output:
        cmdlet = name.lower()
        server = host.name == SERVER
        if cmdlet == "get-netfirewallprofile":
            return Output([self._firewall_profile(host, p) for p in PROFILES])
        if cmdlet == "get-netiphttpsstate":
            # "If IP-HTTPS is not active, then this cmdlet does not return an object."
            return Output([self._iphttps_state(host)] if host.iphttps_active or host.iphttps_error else [])
        if server and cmdlet == "get-remoteaccesshealth":
            return Output([self._health(c, *v) for c, v in self.components.items()])
        if server and cmdlet == "get-remoteaccessconnectionstatisticssummary":
            return Output([self._summary()])
        if server and cmdlet == "get-remoteaccess":
            return Output([self._remote_access()])
        if not server and cmdlet == "get-daconnectionstatus":
            return Output([self._connection_status()])
        if not server and cmdlet == "get-dnsclientnrptpolicy":
            return Output(self._nrpt())
        if not server and cmdlet == "resolve-dnsname":
            return self._resolve(str(params.get("name", "")))
        return unknown_command(name)

    # --- the objects -----------------------------------------------------------------------------------------

    def _firewall_profile(self, host: LabHost, profile: str) -> str:
        # GpoBoolean as CIM types it: 1 True, 0 False (ActiveStore never says NotConfigured).
        props = "".join(
            [
                s_("Name", profile),
                s_("Profile", profile),
                f'<U16 N="Enabled">{1 if host.firewall[profile] else 0}</U16>',
                '<U16 N="DefaultInboundAction">4</U16>',
                '<U16 N="DefaultOutboundAction">2</U16>',
                s_("PSComputerName", host.name),
            ]
        )
        return _cim(
            "root/standardcimv2/MSFT_NetFirewallProfile", f'MSFT_NetFirewallProfile (Name = "{profile}")', props
        )

    def _iphttps_state(self, host: LabHost) -> str:
        status = (
            "IPHTTPS interface active"
            if host.iphttps_active and not host.iphttps_error
            else ("Failed to connect to the IPHTTPS server; waiting to reconnect")
        )
        props = "".join(
            [
                s_("InterfaceName", "IPHTTPSInterface"),
                s_("InterfaceStatus", status),
                _u32("LastErrorCode", host.iphttps_error),
                s_("PSComputerName", host.name),
            ]
        )
        return _cim("root/StandardCimv2/MSFT_NetIpHTTPsState", "MSFT_NetIpHTTPsState", props)

    def _health(self, component: str, state: str, since: dt.datetime, monitors: list[Monitor]) -> str:
        b = Builder()
        heuristics = ""
        if monitors:
            items = "".join(
                _cim(
                    "root/Microsoft/Windows/RemoteAccess/RemoteAccessHealthHeuristic",
                    "RemoteAccessHealthHeuristic",
                    "".join(
                        [
                            _u32("Id", m.id),
                            s_("Status", m.status),
                            s_("OperationStatus", m.description),
                            s_("ErrorDesc", m.description),
                            s_("ErrorCause", m.cause),
                            s_("ErrorResoln", m.resolution),
                        ]
                    ),
                    b,
                )
                for m in monitors
            )
            heuristics = b.array("Heuristics", f"{_CIM}[]", items)
        else:
            heuristics = '<Nil N="Heuristics" />'
        props = "".join(
            [
                s_("Component", component),
                s_("RemoteAccessServer", SERVER.lower() + ".corp.contoso.com"),
                s_("HealthState", state),
                dt_("TimeStamp", since),
                heuristics,
            ]
        )
        return _cim(
            "root/Microsoft/Windows/RemoteAccess/RemoteAccessHealthMonitor", "RemoteAccessHealthMonitor", props, b
        )

    def _summary(self) -> str:
        # No IPsec tunnel comes up while the server's firewall is off: DirectAccess clients do not connect.
        directaccess = self.connections if self.tunnels_up else 0
        props = "".join(
            [
                _u32("TotalConnections", directaccess + self.vpn),
                _u32("TotalDAConnections", directaccess),
                _u32("TotalVpnConnections", self.vpn),
                _u32("TotalUniqueUsers", directaccess + self.vpn - 1 if directaccess + self.vpn else 0),
                _u32("MaxConcurrentConnections", self.connections + self.vpn),
                _u32("TotalCumulativeConnections", 703),
                '<U64 N="TotalBytesIn">1167785920</U64>',
                '<U64 N="TotalBytesOut">3350338848</U64>',
                '<U64 N="TotalBytesInOut">4518124768</U64>',
            ]
        )
        return _cim(
            "root/Microsoft/Windows/RemoteAccess/RemoteAccessConnectionStatisticsSummary",
            "RemoteAccessConnectionStatisticsSummary",
            props,
        )

    def _remote_access(self) -> str:
        b = Builder()
        cert = x509.load_der_x509_certificate(self.certificate)
        certificate = b.obj(
            ["System.Security.Cryptography.X509Certificates.X509Certificate2", "System.Object"],
            f"[Subject]\n  {cert.subject.rfc4514_string()}",
            "".join(
                [
                    s_("Subject", cert.subject.rfc4514_string()),
                    dt_("NotAfter", cert.not_valid_after_utc),
                    dt_("NotBefore", cert.not_valid_before_utc),
                    f'<BA N="RawData">{base64.b64encode(self.certificate).decode()}</BA>',
                ]
            ),
            "SslCertificate",
        )
        props = "".join(
            [
                s_("DAStatus", "Installed"),
                s_("VpnStatus", "Installed"),
                s_("ConnectToAddress", "da.contoso.com"),
                certificate,
            ]
        )
        return _cim("root/Microsoft/Windows/RemoteAccess/RemoteAccess", "RemoteAccess", props, b)

    def _connection_status(self) -> str:
        status, substatus = (
            ("ConnectedRemotely", "None")
            if self.tunnels_up
            else (
                "Error",
                "CouldNotContactDirectAccessServer",
            )
        )
        props = "".join([s_("Status", status), s_("Substatus", substatus)])
        return _cim("root/StandardCimv2/MSFT_DAConnectionStatus", "MSFT_DAConnectionStatus", props)

    def _nrpt(self) -> list[str]:
        rules = [
            (".corp.contoso.com", ["fd9b:9f2c:1e3a:3333::1"]),
            ("nls.corp.contoso.com", []),  # the network location server's exemption: resolved outside
        ]
        out = []
        for namespace, servers in rules:
            b = Builder()
            props = "".join(
                [
                    _strings(b, "Namespace", [namespace]),
                    '<B N="DirectAccessEnabled">true</B>',
                    _strings(b, "DirectAccessDnsServers", servers),
                    s_("QueryPolicy", ""),
                    s_("SecureNameQueryFallback", ""),
                    '<B N="DirectAccessQueryIPsecRequired">false</B>',
                ]
            )
            out.append(
                _cim("root/Microsoft/Windows/DNS/MSFT_DnsClientNrptPolicy", "MSFT_DnsClientNrptPolicy", props, b)
            )
        return out

    def _resolve(self, name: str) -> Output:
        if not self.tunnels_up:
            return Output(
                error=(
                    f"{name} : This operation returned because the timeout period expired",
                    "ERROR_TIMEOUT,Microsoft.DnsClient.Commands.ResolveDnsName",
                    "OperationTimeout",
                )
            )
        if name.lower() != INTERNAL_NAME:
            return Output(
                error=(
                    f"{name} : DNS name does not exist",
                    "DNS_ERROR_RCODE_NAME_ERROR,Microsoft.DnsClient.Commands.ResolveDnsName",
                    "ResourceUnavailable",
                )
            )
        b = Builder()
        props = "".join(
            [
                s_("Name", name),
                b.enum("Type", "Microsoft.DnsClient.Commands.RecordType", "AAAA", 28),
                _u32("TTL", 1200),
                s_("IPAddress", "fd9b:9f2c:1e3a:7777::a"),
            ]
        )
        record = b.obj(
            ["Microsoft.DnsClient.Commands.DnsRecord_AAAA", "Microsoft.DnsClient.Commands.DnsRecord", "System.Object"],
            "Microsoft.DnsClient.Commands.DnsRecord_AAAA",
            props,
        )
        return Output([record])


# --- the endpoints ---------------------------------------------------------------------------------------------


class DirectAccessLab(EndpointGroup):
    """The server and the clients, each a WinRM endpoint (/wsman, Microsoft.PowerShell) on its own address."""

    def __init__(self, root: Path, port: int = 5985) -> None:
        self.root = root
        self.port = port
        self.deployment = LabDirectAccess()
        root.mkdir(parents=True, exist_ok=True)
        self.password = secrets.token_urlsafe(18)
        self.password_file = root / "directaccess.password"
        self.password_file.write_text(self.password)
        self.password_file.chmod(0o600)
        self.endpoints = {
            name: PsrpEndpoint(
                name,
                address,
                port,
                self.deployment,
                {SERVICE_USER: self.password},
                paths={"/wsman": "Microsoft.PowerShell"},
            )
            for name, address in ADDRESSES.items()
        }

    def config(self, interval: float = 5, timeout: float = 3, **overrides: Any) -> dict[str, Any]:
        """The exporter's ``directaccess`` entry for this lab."""
        entry: dict[str, Any] = {
            "name": "contoso-da",
            "servers": [{"name": SERVER, "host": ADDRESSES[SERVER], "port": self.port}],
            "clients": [{"name": c, "host": ADDRESSES[c], "port": self.port, "server": SERVER} for c in CLIENTS],
            "resolve_name": INTERNAL_NAME,
            "auth": {"method": "basic", "user": SERVICE_USER, "password_file": str(self.password_file)},
            # Basic over plain HTTP is only acceptable because the lab never leaves loopback.
            "encryption": "never",
            "allow_unencrypted": True,
            "interval_seconds": interval,
            "timeout_seconds": timeout,
        }
        entry.update(overrides)
        return entry
