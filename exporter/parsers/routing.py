"""Mail routing configuration checks: the mistakes that break mail silently, from the objects Exchange returns.

From Get-AcceptedDomain, Get-RemoteMailbox, Get-SendConnector, Get-ReceiveConnector, Get-ADPermission (on the
receive connectors) and Get-HybridConfiguration. Pure: objects in, findings out. One kind per rule:

- ``internal_relay_without_send_connector``: namespace sharing with another mail system needs the domain
  InternalRelay *and* a send connector for it; without one, mail to recipients who live elsewhere bounces with
  ``550 5.1.10 RESOLVER.ADR.RecipientNotFound`` (or, through a ``*`` connector using DNS, goes to the domain's own
  MX: this organisation).
- ``hybrid_domain_not_authoritative``: with Office 365 the shared domain stays Authoritative (remote mailboxes
  carry the routing); InternalRelay there sends mail for unknown recipients round in circles.
- ``open_relay``: a receive connector that lets anonymous senders relay (``ms-Exch-SMTP-Accept-Any-Recipient``
  for ANONYMOUS LOGON, or Externally Secured: every sender treated as an Exchange server) from addresses outside
  the allow-list (by default the Exchange Online Protection ranges).
- ``centralized_transport_*``: with centralized transport, Office 365 sends internet mail through on-premises; its
  receive connector must let it relay (else ``550 5.7.1 Unable to relay``), take TLS, and carry the certificate
  Exchange Online expects.
- ``office365_send_connector_without_tls`` / ``office365_send_connector_smart_host``: mail to Office 365 must
  require TLS and go to the tenant's ``*.mail.protection.outlook.com``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from exporter.parsers.clixml import cmdlet_object as _props
from exporter.parsers.clixml import text_of
from exporter.parsers.exchange import (
    AcceptedDomain,
    ExchangeDataError,
    RemoteMailbox,
    X509Identifier,
    address_domain,
    identifier_matches,
    parse_x509_identifier,
)

KINDS = (
    "internal_relay_without_send_connector",
    "hybrid_domain_not_authoritative",
    "open_relay",
    "centralized_transport_connector_missing",
    "centralized_transport_cannot_relay",
    "centralized_transport_without_tls",
    "centralized_transport_certificate_mismatch",
    "office365_send_connector_without_tls",
    "office365_send_connector_smart_host",
)
CRITICAL = frozenset({"open_relay"})
ANONYMOUS_LOGON = "NT AUTHORITY\\ANONYMOUS LOGON"
ACCEPT_ANY_RECIPIENT = "ms-exch-smtp-accept-any-recipient"
EOP_SUFFIX = ".mail.protection.outlook.com"
# Exchange Online Protection's sending ranges as Microsoft publishes them (Microsoft 365 URLs and IP address
# ranges, Exchange Online, ID 10); configuration overrides them when they change.
EOP_RANGES = (
    "40.92.0.0/15",
    "40.107.0.0/16",
    "52.100.0.0/14",
    "104.47.0.0/17",
    "2a01:111:f400::/48",
    "2a01:111:f403::/48",
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class SendConnector:
    name: str
    enabled: bool
    address_spaces: tuple[str, ...]  # domains as Exchange writes them: "*", "contoso.com", "*.contoso.com"
    smart_hosts: tuple[str, ...]
    dns_routing: bool
    require_tls: bool
    cloud_mail: bool  # CloudServicesMailEnabled: the Hybrid Configuration Wizard's connector to Office 365


@dataclass(frozen=True)
class ReceiveConnector:
    identity: str
    enabled: bool
    transport_role: str
    bindings: tuple[str, ...]
    remote_ranges: tuple[str, ...]  # as Exchange writes them: "0.0.0.0-255.255.255.255", "10.0.0.0/8", "10.1.2.3"
    permission_groups: frozenset[str]
    auth_mechanisms: frozenset[str]
    require_tls: bool
    tls_certificate_name: X509Identifier | None

    @property
    def frontend_25(self) -> bool:
        return self.transport_role == "FrontendTransport" and any(b.endswith(":25") for b in self.bindings)


@dataclass(frozen=True)
class Permission:
    """One ACE of Get-ADPermission on a receive connector."""

    identity: str  # the connector
    user: str
    extended_rights: frozenset[str]  # lower case
    deny: bool


@dataclass(frozen=True)
class Finding:
    kind: str
    object: str  # the domain or connector it is about
    detail: str

    @property
    def critical(self) -> bool:
        return self.kind in CRITICAL


@dataclass(frozen=True)
class RoutingPolicy:
    relay_allowed_ranges: tuple[str, ...] = EOP_RANGES
    # None: from the hybrid configuration's Features (CentralizedTransport).
    centralized_transport: bool | None = None
    # The receive connector Office 365 delivers to; "" finds it (front end, port 25, locked to the allowed ranges).
    centralized_receive_connector: str = ""
    expected_tls_certificate_name: str = ""
    # The tenant's smart host (contoso-com.mail.protection.outlook.com); "" accepts any *.mail.protection.outlook.com.
    office365_smart_host: str = ""
    networks: tuple[Network, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "networks", tuple(ipaddress.ip_network(r, strict=False) for r in self.relay_allowed_ranges)
        )


def _texts(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    return tuple(t for t in (text_of(i).strip() for i in items) if t)


def _flags(value: Any) -> frozenset[str]:
    """An enum of flags as Exchange shows it ("AnonymousUsers, ExchangeServers"), or a list of them."""
    return frozenset(p.strip() for t in _texts(value) for p in t.split(",") if p.strip() and p.strip() != "None")


def _name(obj: Mapping[str, Any], cmdlet: str, *keys: str) -> str:
    for key in keys:
        text = text_of(obj.get(key)).strip()
        if text:
            return text
    raise ExchangeDataError(cmdlet, "", f"no {' or '.join(keys)}")


def _address_space(text: str) -> str:
    """ "SMTP:*.contoso.com;1" (the ToString) or "*.contoso.com" -> "*.contoso.com"."""
    body = text.split(":", 1)[1] if text.lower().startswith("smtp:") else text
    return body.rsplit(";", 1)[0].strip().lower()


def parse_send_connector(value: Any) -> SendConnector:
    cmdlet = "Get-SendConnector"
    obj = _props(value, cmdlet)
    return SendConnector(
        name=_name(obj, cmdlet, "Name", "Identity"),
        enabled=obj.get("Enabled") is not False,
        address_spaces=tuple(_address_space(a) for a in _texts(obj.get("AddressSpaces"))),
        smart_hosts=tuple(h.lower().strip("[]") for h in _texts(obj.get("SmartHosts"))),
        dns_routing=obj.get("DNSRoutingEnabled") is True,
        require_tls=obj.get("RequireTLS") is True,
        cloud_mail=obj.get("CloudServicesMailEnabled") is True,
    )


def parse_receive_connector(value: Any) -> ReceiveConnector:
    cmdlet = "Get-ReceiveConnector"
    obj = _props(value, cmdlet)
    return ReceiveConnector(
        identity=_name(obj, cmdlet, "Identity", "Name"),
        enabled=obj.get("Enabled") is not False,
        transport_role=text_of(obj.get("TransportRole")),
        bindings=_texts(obj.get("Bindings")),
        remote_ranges=_texts(obj.get("RemoteIPRanges")),
        permission_groups=_flags(obj.get("PermissionGroups")),
        auth_mechanisms=_flags(obj.get("AuthMechanism")),
        require_tls=obj.get("RequireTLS") is True,
        tls_certificate_name=parse_x509_identifier(obj.get("TlsCertificateName")),
    )


def parse_permission(value: Any) -> Permission:
    cmdlet = "Get-ADPermission"
    obj = _props(value, cmdlet)
    return Permission(
        identity=_name(obj, cmdlet, "Identity"),
        user=_name(obj, cmdlet, "User"),
        extended_rights=frozenset(r.lower() for r in _texts(obj.get("ExtendedRights"))),
        deny=obj.get("Deny") is True,
    )


def centralized_transport_on(hybrid_configurations: Iterable[Any]) -> bool:
    """Get-HybridConfiguration's Features include CentralizedTransport."""
    return any(
        "centralizedtransport" in {f.lower() for f in _flags(_props(h, "Get-HybridConfiguration").get("Features"))}
        for h in hybrid_configurations
    )


def ip_range(
    text: str,
) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The first and last address of a RemoteIPRanges entry: "a-b", "net/len" or one address."""
    if "-" in text:
        first, _, last = text.partition("-")
        return ipaddress.ip_address(first.strip()), ipaddress.ip_address(last.strip())
    network = ipaddress.ip_network(text.strip(), strict=False)
    return network.network_address, network.broadcast_address


def _inside(text: str, networks: Sequence[Network]) -> bool:
    try:
        first, last = ip_range(text)
    except ValueError:
        return False  # not understood: not known to be safe
    return any(first.version == n.version and first in n and last in n for n in networks)


def _covers(space: str, domain: str) -> bool:
    if space == domain:
        return True
    return space.startswith("*.") and (domain == space[2:] or domain.endswith(space[1:]))


def _to_office365(connector: SendConnector) -> bool:
    return connector.cloud_mail or any(h.endswith(EOP_SUFFIX) for h in connector.smart_hosts)


def findings(
    domains: Sequence[AcceptedDomain],
    remote_mailboxes: Sequence[RemoteMailbox],
    sends: Sequence[SendConnector],
    receives: Sequence[ReceiveConnector],
    permissions: Sequence[Permission] | None,
    policy: RoutingPolicy,
    centralized_transport: bool = False,
) -> list[Finding]:
    """``permissions`` None: they could not be read, so the rules that need anonymous senders' rights are skipped
    (Externally Secured open relays are still found)."""
    out: list[Finding] = []
    enabled_sends = [c for c in sends if c.enabled]
    by_domain = {d.domain: d for d in domains}

    for d in domains:
        if d.domain_type != "InternalRelay":
            continue
        specific = [c for c in enabled_sends if any(_covers(s, d.domain) for s in c.address_spaces)]
        # A catch-all by smart host reaches the other system only if it goes there: to Office 365 for the tenant's
        # onmicrosoft.com domains, elsewhere for any other (Office 365 would bounce what it does not host).
        cloud = d.domain.endswith(".onmicrosoft.com")
        catch_all = [
            c
            for c in enabled_sends
            if "*" in c.address_spaces and c.smart_hosts and not c.dns_routing and _to_office365(c) == cloud
        ]
        if not specific and not catch_all:
            spaces = sorted({s for c in enabled_sends for s in c.address_spaces}) or ["none"]
            out.append(
                Finding(
                    "internal_relay_without_send_connector",
                    d.domain,
                    f"{d.domain} is InternalRelay but no enabled send connector routes it to the other system "
                    f"(address spaces: {', '.join(spaces)}): mail to its recipients who live there bounces with "
                    f"550 5.1.10 RESOLVER.ADR.RecipientNotFound. New-SendConnector -AddressSpaces {d.domain} "
                    "-SmartHosts <the other system>",
                )
            )

    hybrid_domains = sorted({address_domain(m.name) for m in remote_mailboxes} - {""})
    for name in hybrid_domains:
        domain = by_domain.get(name)
        if domain is not None and domain.domain_type != "Authoritative":
            out.append(
                Finding(
                    "hybrid_domain_not_authoritative",
                    name,
                    f"{name} holds remote mailboxes (hybrid with Office 365) but is {domain.domain_type}: keep it "
                    f"Authoritative, the remote mailboxes carry the routing. Set-AcceptedDomain {name} "
                    "-DomainType Authoritative",
                )
            )

    rights: dict[str, set[str]] = {}
    for p in permissions or ():
        if p.user.lower() == ANONYMOUS_LOGON.lower() and not p.deny:
            rights.setdefault(p.identity.lower(), set()).update(p.extended_rights)
    allowed = policy.networks
    for c in receives:
        if not c.enabled:
            continue
        anonymous_relay = ACCEPT_ANY_RECIPIENT in rights.get(c.identity.lower(), set())
        externally_secured = "ExternalAuthoritative" in c.auth_mechanisms and "ExchangeServers" in c.permission_groups
        wide = [r for r in c.remote_ranges if not _inside(r, allowed)]
        if (anonymous_relay or externally_secured) and wide:
            how = (
                "anonymous senders hold ms-Exch-SMTP-Accept-Any-Recipient"
                if anonymous_relay
                else "it is Externally Secured (every sender is treated as an Exchange server)"
            )
            out.append(
                Finding(
                    "open_relay",
                    c.identity,
                    f"{c.identity} relays for anyone: {how}, and it takes connections from "
                    f"{', '.join(wide[:3])}{' …' if len(wide) > 3 else ''}, outside the allowed ranges. "
                    f"Set-ReceiveConnector '{c.identity}' -RemoteIPRanges <the relaying hosts only>",
                )
            )

    centralized = policy.centralized_transport if policy.centralized_transport is not None else centralized_transport
    if centralized:
        if policy.centralized_receive_connector:
            chosen = [c for c in receives if c.identity.lower() == policy.centralized_receive_connector.lower()]
        else:
            chosen = [
                c
                for c in receives
                if c.enabled and c.frontend_25 and c.remote_ranges and all(_inside(r, allowed) for r in c.remote_ranges)
            ]
        if not chosen:
            name = policy.centralized_receive_connector or "(none)"
            out.append(
                Finding(
                    "centralized_transport_connector_missing",
                    name,
                    "Centralized transport is on, but no receive connector takes mail from Office 365 (front end, "
                    "port 25, locked to Exchange Online Protection's ranges): create one with New-ReceiveConnector "
                    "-TransportRole FrontendTransport -RemoteIPRanges <EOP ranges>",
                )
            )
        for c in chosen:
            if permissions is not None and ACCEPT_ANY_RECIPIENT not in rights.get(c.identity.lower(), set()):
                out.append(
                    Finding(
                        "centralized_transport_cannot_relay",
                        c.identity,
                        f"{c.identity} takes Office 365's mail but cannot relay it: cloud mail to the internet "
                        f"bounces with 550 5.7.1 Unable to relay. Get-ReceiveConnector '{c.identity}' | "
                        "Add-ADPermission -User 'NT AUTHORITY\\ANONYMOUS LOGON' "
                        "-ExtendedRights ms-Exch-SMTP-Accept-Any-Recipient",
                    )
                )
            if "Tls" not in c.auth_mechanisms:
                out.append(
                    Finding(
                        "centralized_transport_without_tls",
                        c.identity,
                        f"{c.identity} does not offer TLS: Exchange Online sends to on-premises only over TLS. "
                        f"Set-ReceiveConnector '{c.identity}' -AuthMechanism Tls",
                    )
                )
            expected = policy.expected_tls_certificate_name
            if expected and not identifier_matches(c.tls_certificate_name, expected):
                shown = c.tls_certificate_name.text if c.tls_certificate_name else "none"
                out.append(
                    Finding(
                        "centralized_transport_certificate_mismatch",
                        c.identity,
                        f"{c.identity} presents {shown}, not {expected}: Exchange Online's inbound connector "
                        "will not accept the on-premises server as itself",
                    )
                )

    for send in enabled_sends:
        if not _to_office365(send):
            continue
        if not send.require_tls:
            out.append(
                Finding(
                    "office365_send_connector_without_tls",
                    send.name,
                    f"{send.name} sends to Office 365 without requiring TLS: mail can go in clear and arrive "
                    f"Anonymous. Set-SendConnector '{send.name}' -RequireTLS $true -TlsAuthLevel DomainValidation "
                    "-TlsDomain mail.protection.outlook.com",
                )
            )
        wanted = policy.office365_smart_host.lower()
        wrong = [h for h in send.smart_hosts if (h != wanted if wanted else not h.endswith(EOP_SUFFIX))]
        if send.cloud_mail and (wrong or not send.smart_hosts):
            should = wanted or f"the tenant's *{EOP_SUFFIX}"
            out.append(
                Finding(
                    "office365_send_connector_smart_host",
                    send.name,
                    f"{send.name} carries hybrid mail but its smart hosts are {', '.join(send.smart_hosts) or 'none'}, "
                    f"not {should}",
                )
            )
    return out
