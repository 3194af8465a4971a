"""The lab's Exchange organisation, answered over the PSRP endpoint.

Two servers: SOLO-E16A answers with the real Exchange 2016 CLIXML samples unchanged; SOLO-E19A is
built from the same samples with its own name and the Exchange 2019 CU11 AdminDisplayVersion sample.
Cmdlets without a public sample (Get-Queue, Get-RemoteMailbox, Get-AcceptedDomain) are built to the
schema Exchange uses. Set-ServerComponentState changes the state the way an admin would, so tests and
the demo drive the "Inactive, held by Functional" story through the real client. Every change is kept
so tests can compare the metrics with what the lab holds.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import itertools
import secrets
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from defusedxml import ElementTree as SafeET
from pypsrp.wsman import WSMan

# Microsoft's published ranges are one fact: the lab's connector from Office 365 is locked to the same ones.
from exporter.parsers.routing import EOP_RANGES
from exporter.sources.winrm import connect_by_address
from lab import exchange_health as health
from lab.clixml import Builder, dt_, s_
from lab.kerberos import REMOTING_ACCOUNT, LabKerberos
from lab.pki import winrm_tls
from lab.psrp_endpoint import EndpointGroup, Invocation, Output, PsrpEndpoint, unknown_command
from lab.samba import DOMAIN as LAB_DOMAIN
from lab.winrm_auth import AuthPolicy

SAMPLES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "exchange_cmdlets"
TENANT_ROUTING_DOMAIN = "contoso.mail.onmicrosoft.com"
ANONYMOUS_LOGON = "NT AUTHORITY\\ANONYMOUS LOGON"
# What the hybrid configuration sample's TlsCertificateName holds; the send connector sample differs.
EXPECTED_TLS_CERTIFICATE_NAME = (
    "<I>CN=GeoTrust TLS RSA CA G1, OU=www.digicert.com, O=DigiCert Inc, C=US<S>CN=mail.contoso.com"
)
STATE_VALUES = {"Inactive": 0, "Active": 1, "Draining": 2}
# The CU the demo's failed update installs on SOLO-E19A (Exchange 2019 CU12, over CU11 Mar23SU).
UPDATE_BUILD = "15.2.1118.7"


def _load(name: str) -> list[ET.Element]:
    root = SafeET.fromstring((SAMPLES / name).read_text(encoding="utf-8-sig"))
    for element in root.iter():
        element.tag = element.tag.split("}", 1)[-1]
    return _inline_type_names(list(root))


def _inline_type_names(objects: list[ET.Element]) -> list[ET.Element]:
    """Each PSRP message is its own document: copy in the objects (<Ref>) and type lists (<TNRef>) that an
    Export-Clixml file only points back to."""
    types: dict[str, ET.Element] = {}
    shared: dict[str, ET.Element] = {}
    out = []
    for original in objects:
        for element in original.iter():
            if element.tag == "Obj" and element.get("RefId") is not None:
                shared.setdefault(element.get("RefId", ""), element)
        obj = copy.deepcopy(original)
        own = {e.get("RefId") for e in obj.iter("Obj")}
        for parent in list(obj.iter()):
            for i, child in enumerate(list(parent)):
                ref = child.get("RefId", "")
                if child.tag == "Ref" and ref not in own and ref in shared:
                    replacement = copy.deepcopy(shared[ref])
                    replacement.set("N", child.get("N", ""))
                    parent[i] = replacement
        defined: set[str] = set()
        for parent in list(obj.iter()):
            for i, child in enumerate(list(parent)):
                ref = child.get("RefId", "")
                if child.tag == "TN":
                    types.setdefault(ref, copy.deepcopy(child))
                    defined.add(ref)
                elif child.tag == "TNRef" and ref not in defined and ref in types:
                    parent[i] = copy.deepcopy(types[ref])
                    defined.add(ref)
        out.append(obj)
    return out


def _xml(element: ET.Element) -> str:
    return ET.tostring(element, encoding="unicode")


def recorded_objects(name: str) -> list[str]:
    """A sample's objects, each as the self-contained CLIXML one PSRP output message carries."""
    return [_xml(obj) for obj in _load(name)]


@dataclass
class LabQueue:
    identity: str  # "3", "Submission", "Shadow\\4"
    delivery_type: str
    next_hop: str
    status: str = "Ready"
    message_count: int = 0
    last_error: str | None = None

    def clixml(self, server: str) -> str:
        b = Builder()
        number = {"Active": 1, "Ready": 2, "Retry": 3, "Suspended": 4, "Connecting": 5}.get(self.status, 0)
        now = dt.datetime.now(dt.UTC)
        props = "".join(
            [
                b.enum("DeliveryType", "Microsoft.Exchange.Data.DeliveryType", self.delivery_type, 0),
                s_("NextHopDomain", self.next_hop),
                '<Nil N="TlsDomain" />',
                '<G N="NextHopConnector">00000000-0000-0000-0000-000000000000</G>',
                b.enum("Status", "Microsoft.Exchange.Data.QueueViewer.QueueStatus", self.status, number),
                f'<I32 N="MessageCount">{self.message_count}</I32>',
                s_("LastError", self.last_error),
                f'<I32 N="RetryCount">{3 if self.last_error else 0}</I32>',
                dt_("LastRetryTime", now if self.last_error else None),
                dt_("NextRetryTime", now + dt.timedelta(minutes=1) if self.last_error else None),
                dt_("FirstRetryTime", now - dt.timedelta(minutes=10) if self.last_error else None),
                '<I32 N="DeferredMessageCount">0</I32>',
                '<I32 N="LockedMessageCount">0</I32>',
                f'<Db N="IncomingRate">{self.message_count / 10:.1f}</Db>',
                '<Db N="OutgoingRate">0</Db>',
                '<Db N="Velocity">0</Db>',
                b.enum(
                    "NextHopCategory",
                    "Microsoft.Exchange.Data.QueueViewer.NextHopCategory",
                    "External" if "." in self.next_hop else "Internal",
                    1,
                ),
                b.wrapped(
                    "Identity", "Microsoft.Exchange.Data.QueueViewer.QueueIdentity", f"{server}\\{self.identity}"
                ),
                '<B N="IsValid">true</B>',
                b.enum("ObjectState", "Microsoft.Exchange.Data.ObjectState", "New", 0),
            ]
        )
        return b.obj(
            [
                "Microsoft.Exchange.Data.QueueViewer.PropertyBagBasedQueueInfo",
                "Microsoft.Exchange.Data.QueueViewer.ExtensibleQueueInfo",
                "Microsoft.Exchange.Data.QueueViewer.PagedDataObject",
                "System.Object",
            ],
            f"{server}\\{self.identity}",
            props,
        )


def _remote_mailbox(alias: str, routing_address: str) -> str:
    b = Builder()
    props = "".join(
        [
            s_("Name", alias),
            s_("Alias", alias),
            b.wrapped("PrimarySmtpAddress", "Microsoft.Exchange.Data.SmtpAddress", f"{alias}@contoso.com"),
            b.wrapped("RemoteRoutingAddress", "Microsoft.Exchange.Data.SmtpProxyAddress", f"SMTP:{routing_address}"),
            b.enum(
                "RecipientTypeDetails",
                "Microsoft.Exchange.Data.Directory.Recipient.RecipientTypeDetails",
                "RemoteUserMailbox",
                -2147483648,
            ),
            s_("Identity", f"contoso.com/Users/{alias}"),
        ]
    )
    return b.obj(
        [
            "Microsoft.Exchange.Data.Directory.Management.RemoteMailbox",
            "Microsoft.Exchange.Data.Directory.Management.MailEnabledOrgPerson",
            "System.Object",
        ],
        alias,
        props,
    )


def _accepted_domain(domain: str, domain_type: str, default: bool) -> str:
    b = Builder()
    number = {"Authoritative": 0, "ExternalRelay": 1, "InternalRelay": 2}[domain_type]
    props = "".join(
        [
            s_("Name", domain),
            b.wrapped("DomainName", "Microsoft.Exchange.Data.SmtpDomainWithSubdomains", domain),
            b.enum(
                "DomainType",
                "Microsoft.Exchange.Data.Directory.SystemConfiguration.AcceptedDomainType",
                domain_type,
                number,
            ),
            f'<B N="Default">{"true" if default else "false"}</B>',
        ]
    )
    return b.obj(
        ["Microsoft.Exchange.Data.Directory.SystemConfiguration.AcceptedDomain", "System.Object"], domain, props
    )


def _receive_connector(
    template: ET.Element,
    server: str,
    name: str,
    remote_ranges: list[str],
    permission_groups: str,
    auth_mechanism: str,
    tls_certificate_name: str | None,
) -> str:
    """A receive connector made from the real Default Frontend sample, as New-ReceiveConnector would leave it."""
    obj = copy.deepcopy(template)
    identity = f"{server}\\{name}"

    def prop(key: str) -> ET.Element:
        props = obj.find("Props")
        assert props is not None
        found = next(e for e in props if e.get("N") == key)
        return found

    identity_obj = prop("Identity")
    identity_obj.find("ToString").text = identity  # type: ignore[union-attr]
    for e in identity_obj.iter("S"):
        if e.get("N") == "Rdn":
            e.text = f"CN={name}"
    prop("Name").text = name
    ranges = prop("RemoteIPRanges").find("LST")
    assert ranges is not None
    first = copy.deepcopy(ranges[0])
    for child in list(ranges):
        ranges.remove(child)
    for text in remote_ranges:
        entry = copy.deepcopy(first)
        entry.find("ToString").text = text  # type: ignore[union-attr]
        low, _, high = text.partition("-") if "-" in text else (text, "", text)
        for e in entry.iter("S"):
            e.text = {"LowerBound": low, "UpperBound": high, "Expression": text}.get(e.get("N", ""), e.text)
        for ms in entry.findall("MS"):
            entry.remove(ms)  # the binary form would name the sample's range
        ranges.append(entry)
    prop("PermissionGroups").find("ToString").text = permission_groups  # type: ignore[union-attr]
    prop("AuthMechanism").find("ToString").text = auth_mechanism  # type: ignore[union-attr]
    cert = prop("TlsCertificateName")
    if tls_certificate_name is None:
        cert.clear()
        cert.tag, cert.attrib = "Nil", {"N": "TlsCertificateName"}
    else:
        issuer, _, subject = tls_certificate_name.removeprefix("<I>").partition("<S>")
        cert.find("ToString").text = tls_certificate_name  # type: ignore[union-attr]
        for e in cert.iter("S"):
            e.text = {"CertificateSubject": subject, "CertificateIssuer": issuer}.get(e.get("N", ""), e.text)
        for ms in cert.findall("MS"):
            cert.remove(ms)
    for e in obj.iter("ToString"):
        if e.text and "Default Frontend WIN-CTD3L0RGEN4" in e.text:
            e.text = e.text.replace("WIN-CTD3L0RGEN4\\Default Frontend WIN-CTD3L0RGEN4", identity)
    obj.find("ToString").text = name  # type: ignore[union-attr]
    return _xml(obj)


def _ad_permission(identity: str, user: str, extended_rights: list[str], deny: bool = False) -> str:
    """One ACE as Get-ADPermission shows it (ADAcePresentationObject)."""
    b = Builder()
    rights = "".join(
        b.wrapped("", "Microsoft.Exchange.Management.Tasks.ExtendedRightIdParameter", r).replace(' N=""', "")
        for r in extended_rights
    )
    props = "".join(
        [
            b.wrapped("User", "Microsoft.Exchange.Configuration.Tasks.SecurityPrincipalIdParameter", user),
            b.wrapped("Identity", "Microsoft.Exchange.Data.Directory.ADObjectId", identity),
            f'<Obj N="ExtendedRights" RefId="{(ref := next(b._ids))}"><TN RefId="{ref}"><T>System.Object[]</T>'
            f"<T>System.Array</T><T>System.Object</T></TN><LST>{rights}</LST></Obj>",
            f'<B N="Deny">{"true" if deny else "false"}</B>',
            '<B N="IsInherited">false</B>',
            b.enum("InheritanceType", "System.DirectoryServices.ActiveDirectorySecurityInheritance", "None", 0),
        ]
    )
    return b.obj(
        ["Microsoft.Exchange.Management.RecipientTasks.ADAcePresentationObject", "System.Object"],
        f"{identity} {user}",
        props,
    )


def make_certificate(subject: str, organisation: str | None, days: float, now: dt.datetime | None = None) -> bytes:
    """A self-signed certificate's DER, valid for ``days`` from ``now`` (negative: already expired)."""
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, subject)]
    if organisation:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation))
    name = x509.Name(attributes)
    now = now or dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=365))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.DER)


def _certificate(der: bytes) -> str:
    b = Builder()
    return b.obj(
        [
            "Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeCertificate",
            "System.Security.Cryptography.X509Certificates.X509Certificate2",
            "System.Object",
        ],
        "[Subject]",
        f'<BA N="RawData">{base64.b64encode(der).decode()}</BA>',
    )


# --- the organisation ----------------------------------------------------------------------------------------


@dataclass
class LabServer:
    name: str  # SOLO-E16A
    fqdn: str
    exchange_server: str  # CLIXML
    component_templates: dict[str, ET.Element]
    base_states: dict[str, str]
    # component -> (requester, scope) -> (state, timestamp)
    requesters: dict[str, dict[tuple[str, str], tuple[str, dt.datetime]]]
    queues: list[LabQueue] = field(default_factory=list)
    certificates: list[bytes] = field(default_factory=list)
    # cmdlet -> error message: answer that cmdlet with an error record instead of objects
    cmdlet_errors: dict[str, str] = field(default_factory=dict)
    hung: dict[str, threading.Event] = field(default_factory=dict)  # cmdlets that hang until released
    # ExSetup.exe's file version: the CU build plus the installed security update.
    exsetup_version: str = ""

    def exsetup_clixml(self) -> str:
        """``Get-Command -Name ExSetup.exe`` as Windows PowerShell serialises its ApplicationInfo."""
        b = Builder()
        long_form = ".".join(
            f"{int(p):0{w}d}" for p, w in zip(self.exsetup_version.split("."), (2, 2, 4, 3), strict=True)
        )
        path = "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\bin\\ExSetup.exe"
        info = (
            f"File:             {path}\nInternalName:     ExSetup\nOriginalFilename: ExSetup.exe\n"
            f"FileVersion:      {long_form}\nProductVersion:   {long_form}\nLanguage:         Language Neutral"
        )
        props = "".join(
            [
                s_("Path", path),
                s_("Extension", ".exe"),
                s_("Definition", path),
                s_("Source", path),
                f'<Version N="Version">{self.exsetup_version}</Version>',
                s_("FileVersionInfo", info),
                s_("Name", "ExSetup.exe"),
                b.enum("CommandType", "System.Management.Automation.CommandTypes", "Application", 32),
            ]
        )
        return b.obj(
            [
                "System.Management.Automation.ApplicationInfo",
                "System.Management.Automation.CommandInfo",
                "System.Object",
            ],
            "ExSetup.exe",
            props,
        )

    def component_state(self, component: str) -> str:
        held = self.requesters.get(component, {})
        if not held:
            return self.base_states[component]
        states = {state for state, _ in held.values()}
        for candidate in ("Inactive", "Draining"):
            if candidate in states:
                return candidate
        return "Active"

    def component_clixml(self, component: str) -> str:
        element = copy.deepcopy(self.component_templates[component])
        props = element.find("Props")
        assert props is not None
        state = self.component_state(component)
        state_el = props.find("Obj[@N='State']")
        if state_el is not None:
            state_el.find("ToString").text = state  # type: ignore[union-attr]
            state_el.find("I32").text = str(STATE_VALUES[state])  # type: ignore[union-attr]
        swo = props.find("B[@N='ServerWideOfflineIsOffline']")
        if swo is not None:
            swo.text = "true" if self.component_state("ServerWideOffline") == "Inactive" else "false"
        ids = itertools.count(5000)
        for scope, prop in (("local", "LocalStates"), ("remote", "RemoteStates")):
            lst = props.find(f"Obj[@N='{prop}']/LST")
            if lst is None:
                continue
            for child in list(lst):
                lst.remove(child)
            for (requester, req_scope), (rstate, when) in sorted(self.requesters.get(component, {}).items()):
                if req_scope != scope:
                    continue
                ref = next(ids)
                stamp = when.astimezone(dt.UTC)
                shown = f"{stamp.month}/{stamp.day}/{stamp.year} {stamp.strftime('%I:%M:%S %p').lstrip('0')}"
                lst.append(
                    SafeET.fromstring(
                        f'<Obj RefId="{ref}"><TN RefId="{ref}"><T>Microsoft.Exchange.Data.Directory.Management.'
                        "ServerComponentStatePresentationObject+RequesterDetails</T><T>System.Object</T></TN>"
                        f"<ToString>Requestor:{requester}; State:{rstate}; Timestamp:{shown}</ToString><Props>"
                        f'<S N="Requester">{requester}</S><S N="State">{rstate}</S>{dt_("Timestamp", stamp)}'
                        f'<S N="Component">{component}</S></Props></Obj>'
                    )
                )
        return _xml(element)


def _component_templates(
    elements: list[ET.Element], rename: tuple[str, str] | None
) -> tuple[dict[str, ET.Element], dict[str, str], dict[str, dict[tuple[str, str], tuple[str, dt.datetime]]]]:
    templates, base, held = {}, {}, {}
    for element in elements:
        if rename:
            text = _xml(element).replace(rename[0], rename[1]).replace(rename[0].upper(), rename[1].upper())
            element = SafeET.fromstring(text)
        props = element.find("Props")
        assert props is not None
        component = props.findtext("S[@N='Component']") or ""
        templates[component] = element
        base[component] = props.findtext("Obj[@N='State']/ToString") or "Active"
        entries: dict[tuple[str, str], tuple[str, dt.datetime]] = {}
        for scope, prop in (("local", "LocalStates"), ("remote", "RemoteStates")):
            for details in props.findall(f"Obj[@N='{prop}']/LST/Obj/Props"):
                when = dt.datetime.fromisoformat((details.findtext("DT[@N='Timestamp']") or "")[:26] + "+00:00")
                entries[(details.findtext("S[@N='Requester']") or "", scope)] = (
                    details.findtext("S[@N='State']") or "",
                    when,
                )
        held[component] = entries
    return templates, base, held


class LabExchange:
    """The Exchange organisation behind the lab's PSRP endpoints; thread-safe."""

    def __init__(self, remote_mailboxes: int = 120, misrouted: tuple[str, ...] = ("amy", "bob", "carl")) -> None:
        self._lock = threading.Lock()
        components = _load("E16_Exchange_GetServerComponentState.xml")
        e16_server = _load("E16_Exchange_GetExchangeServer.xml")[0]
        e19_version = _load("Shared_Tests_E19CU11AdminDisplayVersion.xml")[0]
        templates, base, held = _component_templates(components, None)
        self.servers: dict[str, LabServer] = {
            "solo-e16a": LabServer("SOLO-E16A", "Solo-E16A.Solo.local", _xml(e16_server), templates, base, held),
        }
        # SOLO-E19A: the same organisation's second server, on Exchange 2019 CU11.
        e19 = SafeET.fromstring(
            _xml(e16_server)
            .replace("Solo-E16A", "Solo-E19A")
            .replace("SOLO-E16A", "SOLO-E19A")
            .replace("solo-e16a", "solo-e19a")
        )
        props = e19.find("Props")
        assert props is not None
        old = props.find("Obj[@N='AdminDisplayVersion']")
        if old is not None:
            new = copy.deepcopy(e19_version)
            new.set("N", "AdminDisplayVersion")
            props[list(props).index(old)] = new
        templates19, base19, held19 = _component_templates(components, ("Solo-E16A", "Solo-E19A"))
        self.servers["solo-e19a"] = LabServer(
            "SOLO-E19A", "Solo-E19A.Solo.local", _xml(e19), templates19, base19, held19
        )
        # SOLO-E19A has the CU11 March 2023 security update installed; SOLO-E16A none since its CU.
        self.servers["solo-e16a"].exsetup_version = "15.1.2375.7"
        self.servers["solo-e19a"].exsetup_version = "15.2.986.42"
        for server in self.servers.values():
            server.queues = [
                LabQueue("Submission", "Undefined", "Submission", "Ready", 0),
                LabQueue("1", "SmtpRelayToMailboxDeliveryGroup", "mailbox database 0134", "Active", 2),
                LabQueue("2", "SmartHostConnectorDelivery", TENANT_ROUTING_DOMAIN, "Ready", 0),
            ]
        # SOLO-E19A's mail to Exchange Online is throttled: the hybrid story the dashboard should show.
        self.set_queue(
            "solo-e19a",
            "2",
            status="Retry",
            message_count=37,
            last_error=(
                "[{LRT=11/27/2026 7:41:12 AM};{LED=451 4.7.500 Server busy. Please try again later from "
                "[203.0.113.10]. (S77719) [AM4PEPF00027A6B.eurprd04.prod.outlook.com]};"
                "{FQDN=contoso-com.mail.protection.outlook.com};{IP=192.0.2.25}]"
            ),
        )
        self.certificates = [_xml(c) for c in _load("E19_Exchange_GetExchangeCertificate.xml")]
        self.servers["solo-e16a"].certificates = [make_certificate("mail.contoso.com", "Contoso Ltd", 20)]
        # The OAuth certificate Get-AuthConfig names, on every server as Exchange deploys it.
        # 25 days left and no next certificate: the renewal nobody scheduled (ExchangeAuthCertificateExpiring).
        self.auth_certificate = make_certificate("Microsoft Exchange Server Auth Certificate", None, 25)
        for server in self.servers.values():
            server.certificates.append(self.auth_certificate)
        self.health = {key: health.LabServerHealth(server.name) for key, server in self.servers.items()}
        # A two-copy DAG: DB01 active on SOLO-E19A, DB02 on SOLO-E16A, each with a passive copy on the other.
        for key, (active, passive) in {"solo-e19a": ("DB01", "DB02"), "solo-e16a": ("DB02", "DB01")}.items():
            self.health[key].copies = [
                health.LabCopy(active, status="Mounted", activation_preference=1),
                health.LabCopy(passive, status="Healthy", activation_preference=2),
            ]
            # The recorded diagnostics show SystemMemory under High pressure; the lab's servers start healthy.
            self.health[key].resource_use["SystemMemory"] = ("Low", 61)
        # SOLO-E19A carries the recorded override: a responder disabled in a troubleshooting session, long expired.
        self.health["solo-e19a"].overrides = True
        self.health_samples = {
            name: recorded_objects(f"{name}.xml")
            for name in (
                "E16_Exchange_TestServiceHealth",
                "E16_Exchange_GetMailboxServer",
                "E16_Exchange_GetAuthConfig",
                "E16_Exchange_GetExchangeDiagnosticInfo_EdgeTransportResourceThrottling",
                "E16_Exchange_GetServiceMitigation",
                "HealthChecker_GetServiceMSExchangeMitigationDisabled",
                "E19_Exchange_GetServerMonitoringOverride",
            )
        }
        self.send_connectors = [_xml(e) for e in _load("E19_Exchange_GetSendConnector.xml")]
        received = _load("E19_Exchange_GetReceiveConnector.xml")
        self.receive_connectors = [_xml(e) for e in received]
        # The mail routing checks' objects, right and wrong. Centralized transport: Office 365 delivers to a
        # front-end connector locked to Exchange Online Protection's ranges, and relays through it (right);
        # a connector someone opened for "the scanners" relays for anyone (wrong: an open relay).
        frontend = next(e for e in received if "Default Frontend" in _xml(e))
        self.receive_connectors += [
            _receive_connector(
                frontend,
                "SOLO-E19A",
                "From Office 365",
                list(EOP_RANGES),
                "AnonymousUsers",
                "Tls",
                EXPECTED_TLS_CERTIFICATE_NAME,
            ),
            _receive_connector(
                frontend,
                "SOLO-E19A",
                "Relay Scanners",
                ["0.0.0.0-255.255.255.255"],
                "AnonymousUsers",
                "Tls",
                EXPECTED_TLS_CERTIFICATE_NAME,
            ),
        ]
        anonymous_defaults = [
            "ms-Exch-SMTP-Submit",
            "ms-Exch-SMTP-Accept-Any-Sender",
            "ms-Exch-SMTP-Accept-Authoritative-Domain-Sender",
            "ms-Exch-Accept-Headers-Routing",
        ]
        self.ad_permissions: list[tuple[str, str, list[str]]] = [
            ("WIN-CTD3L0RGEN4\\Default Frontend WIN-CTD3L0RGEN4", ANONYMOUS_LOGON, anonymous_defaults),
            ("SOLO-E19A\\From Office 365", ANONYMOUS_LOGON, [*anonymous_defaults, "ms-Exch-SMTP-Accept-Any-Recipient"]),
            ("SOLO-E19A\\Relay Scanners", ANONYMOUS_LOGON, [*anonymous_defaults, "ms-Exch-SMTP-Accept-Any-Recipient"]),
        ]
        self.hybrid_configuration = [_xml(e) for e in _load("E19_Exchange_GetHybridConfiguration.xml")]
        aliases = [f"user{i:03d}" for i in range(remote_mailboxes - len(misrouted))] + list(misrouted)
        self.remote_mailboxes = {
            a: (f"{a}@contoso.com" if a in misrouted else f"{a}@{TENANT_ROUTING_DOMAIN}") for a in aliases
        }
        self.accepted_domains = [
            ("contoso.com", "Authoritative", True),
            (TENANT_ROUTING_DOMAIN, "InternalRelay", False),
            # Shared with another mail system, but no send connector routes it there (wrong).
            ("fabrikam.com", "InternalRelay", False),
        ]

    def server(self, identity: str) -> LabServer | None:
        return self.servers.get(identity.split(".")[0].lower())

    # --- what tests and the demo change -----------------------------------------------------------------

    def set_component_state(self, server: str, component: str, state: str, requester: str, scope: str = "both") -> None:
        """As Set-ServerComponentState does: the requester's entry in the registry (local) and AD (remote)."""
        target = self.server(server)
        if target is None:
            raise KeyError(server)
        now = dt.datetime.now(dt.UTC)
        with self._lock:
            held = target.requesters.setdefault(component, {})
            for s in ("local", "remote") if scope == "both" else (scope,):
                held[(requester, s)] = (state, now)

    def set_queue(self, server: str, identity: str, **changes: Any) -> None:
        target = self.server(server)
        assert target is not None
        with self._lock:
            for queue in target.queues:
                if queue.identity == identity:
                    for key, value in changes.items():
                        setattr(queue, key, value)

    def fail_update(self, server: str) -> None:
        """A cumulative update that fails half way, as the demo tells it: the files are the new CU's (ExSetup's
        version), AD still says the old one; ServerWideOffline is held Inactive by Functional; FrontendTransport's
        health set goes Unhealthy with its service stopped; the Emergency Mitigation service is left disabled; the
        maintenance-mode steps taken before it (a copy suspended, activation blocked) stay; the queue database
        grows into back pressure."""
        target = self.server(server)
        assert target is not None
        self.set_component_state(server, "ServerWideOffline", "Inactive", "Functional")
        with self._lock:
            target.exsetup_version = UPDATE_BUILD
            state = self.health[target.name.lower()]
            state.set_monitor("FrontendTransport", "FrontendTransportServiceRunningMonitor", "Unhealthy")
            state.stopped_services.add("MSExchangeTransport")
            passive = next(c for c in state.copies if c.status != "Mounted")
            passive.status, passive.copy_queue, passive.content_index = "Suspended", 240, "Failed"
            state.activation_policy, state.disabled_and_move_now = "Blocked", True
            state.resource_use["UsedVersionBuckets"] = ("High", 1600)
            state.mitigation_service = "disabled"

    def fix_update(self, server: str) -> None:
        """What the admin fixes first: re-runs setup's last steps (ServerWideOffline Active as Functional, the
        transport service started, back pressure gone). Left for the patch-day page to show: the suspended copy
        and its failed index, activation still blocked, Emergency Mitigation still disabled."""
        target = self.server(server)
        assert target is not None
        self.set_component_state(server, "ServerWideOffline", "Active", "Functional")
        with self._lock:
            state = self.health[target.name.lower()]
            state.set_monitor("FrontendTransport", "FrontendTransportServiceRunningMonitor", "Healthy")
            state.stopped_services.discard("MSExchangeTransport")
            state.resource_use["UsedVersionBuckets"] = ("Low", 3)

    def fail_cmdlet(self, server: str, cmdlet: str, message: str | None) -> None:
        target = self.server(server)
        assert target is not None
        with self._lock:
            if message is None:
                target.cmdlet_errors.pop(cmdlet, None)
            else:
                target.cmdlet_errors[cmdlet] = message

    def hang_cmdlet(self, server: str, cmdlet: str, hang: bool = True) -> None:
        """Make the cmdlet hang on the server (its pipeline never ends, as Get-Queue does when the transport
        service is wedged) until called again with ``hang=False``, which lets the hung ones answer."""
        target = self.server(server)
        assert target is not None
        with self._lock:
            if hang:
                target.hung.setdefault(cmdlet, threading.Event())
            elif (release := target.hung.pop(cmdlet, None)) is not None:
                release.set()

    # --- the endpoint's command handler -------------------------------------------------------------------

    def __call__(self, invocation: Invocation) -> Output:
        names = [c[0].lower() for c in invocation.commands]
        local = self.server(invocation.server)
        if names == ["get-receiveconnector", "get-adpermission"]:
            # An account without the Active Directory Permissions role is refused, as a test may make it.
            with self._lock:
                refused = local.cmdlet_errors.get("Get-ADPermission") if local is not None else None
            if refused:
                return Output(error=(refused, "Get-ADPermission,Microsoft.Exchange", "PermissionDenied"))
            return self._receive_connector_permissions(invocation.commands[1][2])
        if len(invocation.commands) != 1:
            return Output(failure=("The lab answers one cmdlet per pipeline.", "LabPipeline", "InvalidOperation"))
        name, _, parameters = invocation.commands[0]
        params = {str(k).lower(): v for k, v in parameters if k is not None}
        with self._lock:
            if local is not None and name in local.cmdlet_errors:
                return Output(
                    error=(local.cmdlet_errors[name], f"{name},Microsoft.Exchange", "ManagementObjectNotFound")
                )
            hold = local.hung.get(name) if local is not None else None
            if invocation.configuration != "Microsoft.Exchange":
                output = self._plain_powershell(name, params, local)
            else:
                output = self._answer(name, params, local)
        output.hold = hold
        return output

    def _receive_connector_permissions(self, parameters: Any) -> Output:
        """Get-ReceiveConnector | Get-ADPermission [-User U]: the connectors' ACEs (only U's when given)."""
        params = {str(k).lower(): v for k, v in parameters if k is not None}
        user = str(params.get("user", "")).lower()
        with self._lock:
            chosen = [p for p in self.ad_permissions if not user or p[1].lower() == user]
        return Output([_ad_permission(identity, who, rights) for identity, who, rights in chosen])

    def _plain_powershell(self, name: str, params: dict[str, Any], local: LabServer | None) -> Output:
        """The server's Microsoft.PowerShell endpoint: no Exchange cmdlets, but Get-Command finds ExSetup.exe and
        Get-Service the Emergency Mitigation service."""
        if name.lower() == "get-command" and str(params.get("name", "")).lower() == "exsetup.exe" and local:
            return Output([local.exsetup_clixml()])
        if name.lower() == "get-service" and str(params.get("name", "")).lower() == "msexchangemitigation" and local:
            state = self.health[local.name.lower()].mitigation_service
            sample = (
                "E16_Exchange_GetServiceMitigation"
                if state == "running"
                else ("HealthChecker_GetServiceMSExchangeMitigationDisabled")
            )
            return Output(self.health_samples[sample])
        return unknown_command(name)

    def _target(self, params: dict[str, Any], key: str, local: LabServer | None) -> LabServer | None:
        identity = params.get(key)
        return self.server(str(identity)) if identity is not None else local

    def _answer(self, name: str, params: dict[str, Any], local: LabServer | None) -> Output:
        cmdlet = name.lower()
        if cmdlet == "get-exchangeserver":
            identity = params.get("identity")
            servers = [self.server(str(identity))] if identity else list(self.servers.values())
            return Output([s.exchange_server for s in servers if s is not None])
        if cmdlet == "get-servercomponentstate":
            server = self._target(params, "identity", local)
            if server is None:
                return Output(
                    error=(
                        f"The operation couldn't be performed because object '{params.get('identity')}' "
                        "couldn't be found.",
                        "ServerNotFound",
                        "ManagementObjectNotFound",
                    )
                )
            components = [str(params["component"])] if "component" in params else list(server.component_templates)
            return Output([server.component_clixml(c) for c in components if c in server.component_templates])
        if cmdlet == "set-servercomponentstate":
            server = self._target(params, "identity", local)
            if server is None or "component" not in params or "state" not in params or "requester" not in params:
                return Output(
                    error=(
                        "Set-ServerComponentState needs -Identity, -Component, -State and -Requester.",
                        "ParameterBindingException",
                        "InvalidArgument",
                    )
                )
            now = dt.datetime.now(dt.UTC)
            held = server.requesters.setdefault(str(params["component"]), {})
            for scope in ("local", "remote"):
                held[(str(params["requester"]), scope)] = (str(params["state"]), now)
            return Output()
        if cmdlet == "get-queue":
            server = self._target(params, "server", local)
            return Output([q.clixml(server.name) for q in server.queues] if server else [])
        if cmdlet == "get-exchangecertificate":
            server = self._target(params, "server", local)
            extra = [_certificate(der) for der in server.certificates] if server else []
            return Output(self.certificates + extra)
        if cmdlet == "get-remotemailbox":
            return Output([_remote_mailbox(a, r) for a, r in self.remote_mailboxes.items()])
        if cmdlet == "get-accepteddomain":
            return Output([_accepted_domain(*d) for d in self.accepted_domains])
        if cmdlet == "get-sendconnector":
            return Output(list(self.send_connectors))
        if cmdlet == "get-receiveconnector":
            return Output(list(self.receive_connectors))
        if cmdlet == "get-hybridconfiguration":
            return Output(list(self.hybrid_configuration))
        return self._health_answer(cmdlet, name, params, local)

    def _health_answer(self, cmdlet: str, name: str, params: dict[str, Any], local: LabServer | None) -> Output:
        """The health-in-depth cmdlets (lab.exchange_health)."""
        samples = self.health_samples
        if cmdlet == "get-authconfig":
            thumbprint = hashlib.sha1(self.auth_certificate).hexdigest().upper()  # noqa: S324 - Windows' thumbprint
            return Output([health.auth_config(samples["E16_Exchange_GetAuthConfig"][0], thumbprint)])
        if cmdlet == "get-globalmonitoringoverride":
            return Output()
        key = {
            "get-serverhealth": "identity",
            "get-mailboxserver": "identity",
            "test-servicehealth": "server",
            "get-mailboxdatabasecopystatus": "server",
            "get-exchangediagnosticinfo": "server",
            "get-servermonitoringoverride": "server",
        }.get(cmdlet)
        server = self._target(params, key, local) if key else None
        if key is None or server is None:
            return unknown_command(name) if key is None else Output()
        state = self.health[server.name.lower()]
        if cmdlet == "get-serverhealth":
            return Output(health.server_health(state, server.fqdn))
        if cmdlet == "get-mailboxserver":
            return Output([health.mailbox_server(samples["E16_Exchange_GetMailboxServer"][0], state)])
        if cmdlet == "test-servicehealth":
            return Output(health.service_health(samples["E16_Exchange_TestServiceHealth"], state))
        if cmdlet == "get-mailboxdatabasecopystatus":
            return Output(health.database_copy_status(state))
        if cmdlet == "get-exchangediagnosticinfo":
            sample = samples["E16_Exchange_GetExchangeDiagnosticInfo_EdgeTransportResourceThrottling"][0]
            return Output([health.resource_throttling(sample, state)])
        return Output(samples["E19_Exchange_GetServerMonitoringOverride"] if state.overrides else [])
        return unknown_command(name)


# --- the endpoints ---------------------------------------------------------------------------------------------

SERVICE_USER = "svc_exchange"
ADDRESSES = {"solo-e16a": "127.0.0.10", "solo-e19a": "127.0.0.11"}


FQDN = {name: f"{name}.{LAB_DOMAIN}" for name in ADDRESSES}


class ExchangeLab(EndpointGroup):
    """The lab's Exchange servers: one WinRM endpoint per server on its own loopback address.

    With ``kerberos`` (the lab domain's), they authenticate as real ones do: /PowerShell takes Kerberos only,
    /wsman Negotiate (Kerberos or NTLM), message encryption on HTTP, Extended Protection on HTTPS if asked;
    without, Basic (for a lab with no domain: the benchmarks)."""

    def __init__(
        self,
        root: Path,
        port: int = 5985,
        https: bool = False,
        kerberos: LabKerberos | None = None,
        extended_protection: bool = False,
    ) -> None:
        self.root = root
        self.port = port
        self.org = LabExchange()
        self.kerberos = kerberos.provision(list(FQDN.values())) if kerberos else None
        self.password = secrets.token_urlsafe(18)
        root.mkdir(parents=True, exist_ok=True)
        self.password_file = root / "exchange.password"
        self.password_file.write_text(self.password)
        self.password_file.chmod(0o600)
        tls, self.ca_file, certificate = (None, None, None)
        if https:
            names = [*ADDRESSES, *FQDN.values()]
            tls, self.ca_file, certificate = winrm_tls(root / "tls", names, list(ADDRESSES.values()))
        self.scheme = "https" if https else "http"
        policy = (
            AuthPolicy(
                {"/PowerShell": ("kerberos",), "/wsman": ("kerberos", "ntlm")}, extended_protection=extended_protection
            )
            if kerberos
            else None
        )
        self.endpoints = {
            name: PsrpEndpoint(
                name, address, port, self.org, {SERVICE_USER: self.password}, tls, auth=policy, certificate=certificate
            )
            for name, address in ADDRESSES.items()
        }

    def admin_connection(self, name: str) -> WSMan:
        """One server's /PowerShell as an administrator's pypsrp client opens it, with the lab's authentication."""
        address, https = ADDRESSES[name], self.scheme == "https"
        options: dict[str, Any] = {"port": self.port, "ssl": https, "path": "PowerShell"}
        options.update(operation_timeout=5, read_timeout=10, cert_validation=str(self.ca_file) if https else True)
        if self.kerberos is None:
            return WSMan(
                address,
                auth="basic",
                encryption="never" if not https else "auto",
                username=SERVICE_USER,
                password=self.password,
                **options,
            )
        connection = WSMan(
            address,
            auth="kerberos",
            username=self.kerberos.principal,
            password=self.kerberos.users[REMOTING_ACCOUNT],
            negotiate_service="HTTP",
            negotiate_hostname_override=FQDN[name],
            **options,
        )
        if https:
            connect_by_address(connection, FQDN[name])
        return connection

    def config(
        self, interval: float = 5, timeout: float = 3, auth: dict[str, Any] | None = None, **overrides: Any
    ) -> dict[str, Any]:
        """The exporter's ``exchange`` entry for this lab (``auth``: instead of the lab's default)."""
        servers: list[dict[str, Any]] = [
            {"name": self.org.servers[name].name, "host": address, "port": self.port}
            for name, address in ADDRESSES.items()
        ]
        if self.kerberos:
            for server, name in zip(servers, ADDRESSES, strict=True):
                server.update(host=FQDN[name], address=ADDRESSES[name])
        entry: dict[str, Any] = {
            "organization": "solo",
            "servers": servers,
            "scheme": self.scheme,
            "auth": auth
            or (
                self.kerberos.auth_config()
                if self.kerberos
                else {"method": "basic", "user": SERVICE_USER, "password_file": str(self.password_file)}
            ),
            "interval_seconds": interval,
            "timeout_seconds": timeout,
            "hybrid": {
                "tenant_routing_domain": TENANT_ROUTING_DOMAIN,
                "expected_tls_certificate_name": EXPECTED_TLS_CERTIFICATE_NAME,
                "interval_seconds": max(interval * 3, 10),
                "routing": {"centralized_transport": True},
            },
        }
        # ExSetup's version comes from the same lab endpoint's /wsman (Microsoft.PowerShell).
        entry["security_update"] = {"enabled": True, "port": self.port}
        if self.scheme == "https":
            entry["tls"] = {"ca_file": str(self.ca_file)}
        elif entry["auth"]["method"] == "basic":
            # Basic over plain HTTP is only acceptable because the lab never leaves loopback.
            entry.update(encryption="never", allow_unencrypted=True)
        entry.update(overrides)
        return entry
