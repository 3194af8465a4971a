"""Exchange cmdlet output (deserialised CLIXML) to records.

Input is what :mod:`exporter.parsers.clixml` makes of Get-ServerComponentState, Get-ExchangeServer,
Get-Queue, Get-RemoteMailbox, Get-AcceptedDomain, Get-SendConnector, Get-ReceiveConnector,
Get-HybridConfiguration and Get-ExchangeCertificate objects. A missing or malformed property raises
:class:`ExchangeDataError` naming the cmdlet, the object and the property; callers count and skip it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from exporter.parsers import exchange_builds
from exporter.parsers.clixml import CmdletDataError, as_list, cmdlet_object, required_text, text_of
from exporter.parsers.smtp import ReplyChain, parse_reply_chain
from exporter.parsers.x500 import certificate_names, same_name

# Exchange's ServiceState enum.
COMPONENT_STATES = {"Inactive": 0, "Active": 1, "Draining": 2}


# Exchange's objects fail as any cmdlet's do; the old name stays for callers.
ExchangeDataError = CmdletDataError
_props = cmdlet_object
_required = required_text


def _timestamp(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None


# --- Get-ServerComponentState ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RequesterState:
    requester: str  # Functional, Maintenance, HealthApi, Sidelined, Deployment
    scope: str  # "local" (the server's registry) or "remote" (Active Directory)
    state: str
    timestamp: float | None


@dataclass(frozen=True)
class ComponentState:
    component: str
    state: str  # Active, Inactive, Draining
    requesters: tuple[RequesterState, ...]
    offline_by_server_wide_offline: bool

    @property
    def state_value(self) -> int:
        return COMPONENT_STATES.get(self.state, -1)

    def holders(self) -> list[RequesterState]:
        """The requesters that hold the component in its non-active state (the one to reset)."""
        return [r for r in self.requesters if r.state != "Active"]


def parse_component_state(value: Any) -> ComponentState:
    cmdlet = "Get-ServerComponentState"
    obj = _props(value, cmdlet)
    component = _required(obj, "Component", cmdlet)
    state = _required(obj, "State", cmdlet, component)
    latest: dict[tuple[str, str], RequesterState] = {}
    for scope, prop in (("local", "LocalStates"), ("remote", "RemoteStates")):
        for entry in as_list(obj.get(prop)):
            details = _props(entry, cmdlet)
            requester = _required(details, "Requester", cmdlet, f"{component} {prop}")
            rstate = _required(details, "State", cmdlet, f"{component} {prop}")
            record = RequesterState(requester, scope, rstate, _timestamp(details.get("Timestamp")))
            key = (requester, scope)
            # A requester's newest entry is the one in force.
            if key not in latest or (record.timestamp or 0) >= (latest[key].timestamp or 0):
                latest[key] = record
    requesters = tuple(sorted(latest.values(), key=lambda r: (r.requester, r.scope)))
    swo = obj.get("ServerWideOfflineIsOffline")
    return ComponentState(component, state, requesters, swo is True)


# --- Get-ExchangeServer -----------------------------------------------------------------------------------

_ADMIN_DISPLAY_VERSION = re.compile(r"Version (\d+)\.(\d+) \(Build (\d+)\.(\d+)\)")


def parse_admin_display_version(value: Any) -> exchange_builds.Version:
    """A ServerVersion object, or its text "Version 15.1 (Build 2375.7)", or "15.1.2375.7"."""
    if isinstance(value, Mapping) and all(k in value for k in ("Major", "Minor", "Build", "Revision")):
        try:
            return (int(value["Major"]), int(value["Minor"]), int(value["Build"]), int(value["Revision"]))
        except (TypeError, ValueError):
            pass
    text = text_of(value)
    match = _ADMIN_DISPLAY_VERSION.search(text)
    if match:
        major, minor, build, revision = (int(g) for g in match.groups())
        return major, minor, build, revision
    return exchange_builds.parse_version(text)


@dataclass(frozen=True)
class ExchangeServer:
    name: str
    fqdn: str
    edition: str
    roles: str
    site: str
    build: exchange_builds.BuildInfo


def parse_exchange_server(value: Any, file_version: str | None = None) -> ExchangeServer:
    cmdlet = "Get-ExchangeServer"
    obj = _props(value, cmdlet)
    name = _required(obj, "Name", cmdlet)
    try:
        version = parse_admin_display_version(obj.get("AdminDisplayVersion"))
        exact = exchange_builds.parse_version(file_version) if file_version else None
    except ValueError as exc:
        raise ExchangeDataError(cmdlet, name, f"AdminDisplayVersion: {exc}") from None
    site = text_of(obj.get("Site")).rsplit("/", 1)[-1]
    return ExchangeServer(
        name=name,
        fqdn=text_of(obj.get("Fqdn")) or name,
        edition=text_of(obj.get("Edition")),
        roles=text_of(obj.get("ServerRole")).replace(" ", ""),
        site=site,
        build=exchange_builds.lookup(version, exact),
    )


_FILE_VERSION = re.compile(r"FileVersion:\s*(\d+)\.(\d+)\.(\d+)\.(\d+)")


def parse_exsetup_version(value: Any) -> str:
    """``Get-Command -Name ExSetup.exe``: the file version (15.2.1748.39), which moves with each SU/HU.

    Its Version property where serialised, else the FileVersion line of FileVersionInfo (15.02.1748.039).
    """
    cmdlet = "Get-Command ExSetup.exe"
    obj = _props(value, cmdlet)
    text = text_of(obj.get("Version")).strip()
    if not text:
        match = _FILE_VERSION.search(text_of(obj.get("FileVersionInfo")))
        if match is None:
            raise ExchangeDataError(cmdlet, "", "neither Version nor FileVersionInfo carries a version")
        text = ".".join(str(int(part)) for part in match.groups())
    try:
        return ".".join(str(p) for p in exchange_builds.parse_version(text))
    except ValueError as exc:
        raise ExchangeDataError(cmdlet, "", str(exc)) from None


# --- Get-Queue --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Queue:
    identity: str  # EX1\3, EX1\Submission, EX1\Shadow\5
    delivery_type: str
    next_hop: str
    status: str  # Active, Ready, Retry, Suspended, Connecting
    message_count: int
    last_error: str
    reply: ReplyChain
    incoming_rate: float
    outgoing_rate: float


def parse_queue(value: Any) -> Queue:
    cmdlet = "Get-Queue"
    obj = _props(value, cmdlet)
    identity = _required(obj, "Identity", cmdlet)
    try:
        count = int(obj.get("MessageCount") or 0)
        incoming = float(obj.get("IncomingRate") or 0.0)
        outgoing = float(obj.get("OutgoingRate") or 0.0)
    except (TypeError, ValueError) as exc:
        raise ExchangeDataError(cmdlet, identity, f"numeric property: {exc}") from None
    last_error = text_of(obj.get("LastError")).strip()
    return Queue(
        identity=identity,
        delivery_type=text_of(obj.get("DeliveryType")) or "Undefined",
        next_hop=text_of(obj.get("NextHopDomain")).lower(),
        status=text_of(obj.get("Status")) or "None",
        message_count=count,
        last_error=last_error,
        reply=parse_reply_chain(last_error),
        incoming_rate=incoming,
        outgoing_rate=outgoing,
    )


# --- hybrid configuration ---------------------------------------------------------------------------------


def address_domain(address: str) -> str:
    """The domain of "SMTP:user@Contoso.mail.onmicrosoft.com" (prefix and case dropped)."""
    address = address.strip()
    prefix, sep, rest = address.partition(":")
    if sep and "@" not in prefix:
        address = rest
    return address.rpartition("@")[2].lower()


@dataclass(frozen=True)
class RemoteMailbox:
    name: str  # the identity admins search for: primary SMTP address, else alias, else name
    remote_routing_address: str

    @property
    def routing_domain(self) -> str:
        return address_domain(self.remote_routing_address)

    def routed_to(self, tenant_routing_domain: str) -> bool:
        return self.routing_domain == tenant_routing_domain.lower()


def parse_remote_mailbox(value: Any) -> RemoteMailbox:
    cmdlet = "Get-RemoteMailbox"
    obj = _props(value, cmdlet)
    name = text_of(obj.get("PrimarySmtpAddress")) or text_of(obj.get("Alias")) or _required(obj, "Name", cmdlet)
    return RemoteMailbox(name=name.lower(), remote_routing_address=text_of(obj.get("RemoteRoutingAddress")))


@dataclass(frozen=True)
class AcceptedDomain:
    domain: str
    domain_type: str  # Authoritative, InternalRelay, ExternalRelay
    default: bool


def parse_accepted_domain(value: Any) -> AcceptedDomain:
    cmdlet = "Get-AcceptedDomain"
    obj = _props(value, cmdlet)
    domain = _required(obj, "DomainName", cmdlet).lower()
    return AcceptedDomain(domain, _required(obj, "DomainType", cmdlet, domain), obj.get("Default") is True)


@dataclass(frozen=True)
class X509Identifier:
    """Exchange's SmtpX509Identifier: "<I>issuer<S>subject" (TlsCertificateName)."""

    issuer: str
    subject: str

    @property
    def text(self) -> str:
        return f"<I>{self.issuer}<S>{self.subject}" if self.issuer else self.subject


def parse_x509_identifier(value: Any) -> X509Identifier | None:
    if value is None:
        return None
    if isinstance(value, Mapping) and ("CertificateSubject" in value or "CertificateIssuer" in value):
        return X509Identifier(text_of(value.get("CertificateIssuer")), text_of(value.get("CertificateSubject")))
    text = text_of(value).strip()
    if not text:
        return None
    if text.startswith("<I>") and "<S>" in text:
        issuer, _, subject = text[3:].partition("<S>")
        return X509Identifier(issuer, subject)
    return X509Identifier("", text.removeprefix("<S>"))


def identifier_matches(actual: X509Identifier | None, expected: str) -> bool:
    """Compare as Exchange Online does: every RDN of the subject (and of the issuer, if expected names one)."""
    if actual is None:
        return False
    want = parse_x509_identifier(expected)
    if want is None:
        return False
    if not same_name(actual.subject, want.subject):
        return False
    return not want.issuer or same_name(actual.issuer, want.issuer)


@dataclass(frozen=True)
class Connector:
    kind: str  # "send", "receive" or "hybrid"
    name: str
    enabled: bool
    tls_certificate_name: X509Identifier | None
    # The connectors the Hybrid Configuration Wizard manages: the send connector with cloud mail enabled,
    # the front-end receive connectors on port 25, and the hybrid configuration itself.
    hybrid: bool


def parse_connector(value: Any, kind: str) -> Connector:
    cmdlet = {"send": "Get-SendConnector", "receive": "Get-ReceiveConnector", "hybrid": "Get-HybridConfiguration"}[kind]
    obj = _props(value, cmdlet)
    name = text_of(obj.get("Identity")) if kind == "receive" else ""
    name = name or _required(obj, "Name", cmdlet)
    if kind == "send":
        hybrid = obj.get("CloudServicesMailEnabled") is True
    elif kind == "receive":
        bindings = [text_of(b) for b in as_list(obj.get("Bindings"))]
        hybrid = text_of(obj.get("TransportRole")) == "FrontendTransport" and any(b.endswith(":25") for b in bindings)
    else:
        hybrid = True
    return Connector(
        kind, name, obj.get("Enabled") is not False, parse_x509_identifier(obj.get("TlsCertificateName")), hybrid
    )


# --- Get-ExchangeCertificate --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    thumbprint: str
    subject: str
    issuer: str
    not_after: float
    services: str  # "IMAP, POP, IIS, SMTP", or "" when not serialised


def parse_certificate(value: Any) -> Certificate:
    """From the object's own properties where serialised, else from the DER in RawData (always present)."""
    cmdlet = "Get-ExchangeCertificate"
    obj = _props(value, cmdlet)
    raw = obj.get("RawData")
    if not isinstance(raw, bytes | bytearray):
        raise ExchangeDataError(cmdlet, text_of(obj.get("Thumbprint")), "RawData is missing")
    try:
        cert = x509.load_der_x509_certificate(bytes(raw))
        # The DER is parsed lazily: a damaged subject or validity only raises when read.
        names = certificate_names(cert)
        not_after = cert.not_valid_after_utc.timestamp()
    except ValueError as exc:
        raise ExchangeDataError(
            cmdlet, text_of(obj.get("Thumbprint")), f"RawData is not a certificate: {exc}"
        ) from None
    thumbprint = hashlib.sha1(cert.public_bytes(Encoding.DER)).hexdigest().upper()  # noqa: S324 - Windows' thumbprint
    return Certificate(
        thumbprint=thumbprint,
        subject=names.subject,  # as Get-ExchangeCertificate shows it
        issuer=names.issuer,
        not_after=not_after,
        services=text_of(obj.get("Services")),
    )
