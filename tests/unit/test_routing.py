"""The mail routing checks, rule by rule, on objects right and wrong, and the parsers on the real samples."""

from __future__ import annotations

from dataclasses import replace

import pytest

from exporter.parsers import routing as r
from exporter.parsers.exchange import AcceptedDomain, RemoteMailbox, parse_x509_identifier
from tests.unit.test_exchange_parsers import sample

CERT = "<I>CN=GeoTrust TLS RSA CA G1, OU=www.digicert.com, O=DigiCert Inc, C=US<S>CN=mail.contoso.com"
EVERYWHERE = ("0.0.0.0-255.255.255.255", "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
TO_O365 = r.SendConnector(
    "Outbound to Office 365",
    True,
    ("contoso.mail.onmicrosoft.com",),
    ("contoso-com.mail.protection.outlook.com",),
    False,
    True,
    True,
)
INTERNET = r.SendConnector("Internet", True, ("*",), (), True, False, False)
FROM_O365 = r.ReceiveConnector(
    "EX1\\From Office 365",
    True,
    "FrontendTransport",
    ("0.0.0.0:25",),
    r.EOP_RANGES,
    frozenset({"AnonymousUsers"}),
    frozenset({"Tls"}),
    False,
    parse_x509_identifier(CERT),
)
DEFAULT_FRONTEND = replace(
    FROM_O365,
    identity="EX1\\Default Frontend EX1",
    remote_ranges=EVERYWHERE,
    permission_groups=frozenset({"AnonymousUsers", "ExchangeServers", "ExchangeLegacyServers"}),
)
ANONYMOUS_DEFAULTS = frozenset({"ms-exch-smtp-submit", "ms-exch-smtp-accept-any-sender"})


def relay_right(identity: str, deny: bool = False) -> r.Permission:
    return r.Permission(identity, "NT AUTHORITY\\ANONYMOUS LOGON", frozenset({r.ACCEPT_ANY_RECIPIENT}), deny)


def kinds(**given: object) -> set[tuple[str, str]]:
    args: dict[str, object] = {
        "domains": [AcceptedDomain("contoso.com", "Authoritative", True)],
        "remote_mailboxes": [RemoteMailbox("amy@contoso.com", "smtp:amy@contoso.mail.onmicrosoft.com")],
        "sends": [TO_O365, INTERNET],
        "receives": [DEFAULT_FRONTEND, FROM_O365],
        "permissions": [relay_right(FROM_O365.identity)],
        "policy": r.RoutingPolicy(expected_tls_certificate_name=CERT),
        "centralized_transport": True,
    }
    args.update(given)
    return {(f.kind, f.object) for f in r.findings(**args)}  # type: ignore[arg-type]


def test_a_right_organisation_has_no_findings() -> None:
    assert kinds() == set()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # Namespace sharing: InternalRelay needs a connector for the domain; the internet one (DNS) is not it.
        (
            {"domains": [AcceptedDomain("fabrikam.com", "InternalRelay", False)]},
            {("internal_relay_without_send_connector", "fabrikam.com")},
        ),
        # A connector for it, or for a parent's subdomains, routes it to the other system.
        (
            {
                "domains": [AcceptedDomain("fabrikam.com", "InternalRelay", False)],
                "sends": [TO_O365, INTERNET, replace(INTERNET, name="To Notes", address_spaces=("fabrikam.com",))],
            },
            set(),
        ),
        (
            {
                "domains": [AcceptedDomain("eu.fabrikam.com", "InternalRelay", False)],
                "sends": [TO_O365, replace(INTERNET, name="To Notes", address_spaces=("*.fabrikam.com",))],
            },
            set(),
        ),
        # ... but not when that connector is disabled.
        (
            {
                "domains": [AcceptedDomain("fabrikam.com", "InternalRelay", False)],
                "sends": [TO_O365, replace(INTERNET, address_spaces=("fabrikam.com",), enabled=False)],
            },
            {("internal_relay_without_send_connector", "fabrikam.com")},
        ),
        # Hybrid: the domain of remote mailboxes stays Authoritative.
        (
            {"domains": [AcceptedDomain("contoso.com", "InternalRelay", True)]},
            {
                ("hybrid_domain_not_authoritative", "contoso.com"),
                ("internal_relay_without_send_connector", "contoso.com"),
            },
        ),
        # Anonymous relay from anywhere: an open relay; the same right locked to the allowed ranges is not.
        (
            {"permissions": [relay_right(FROM_O365.identity), relay_right(DEFAULT_FRONTEND.identity)]},
            {("open_relay", DEFAULT_FRONTEND.identity)},
        ),
        ({"permissions": [relay_right(FROM_O365.identity), relay_right(DEFAULT_FRONTEND.identity, deny=True)]}, set()),
        # Externally Secured on open ranges relays for anyone too.
        (
            {"receives": [FROM_O365, replace(DEFAULT_FRONTEND, auth_mechanisms=frozenset({"ExternalAuthoritative"}))]},
            {("open_relay", DEFAULT_FRONTEND.identity)},
        ),
        # A disabled connector relays for no one.
        (
            {
                "receives": [FROM_O365, replace(DEFAULT_FRONTEND, enabled=False)],
                "permissions": [relay_right(FROM_O365.identity), relay_right(DEFAULT_FRONTEND.identity)],
            },
            set(),
        ),
        # Centralized transport: the connector from Office 365 must relay, take TLS and carry the certificate.
        ({"permissions": []}, {("centralized_transport_cannot_relay", FROM_O365.identity)}),
        (
            {"receives": [DEFAULT_FRONTEND, replace(FROM_O365, auth_mechanisms=frozenset())]},
            {("centralized_transport_without_tls", FROM_O365.identity)},
        ),
        (
            {"receives": [DEFAULT_FRONTEND, replace(FROM_O365, tls_certificate_name=parse_x509_identifier("CN=ex1"))]},
            {("centralized_transport_certificate_mismatch", FROM_O365.identity)},
        ),
        ({"receives": [DEFAULT_FRONTEND]}, {("centralized_transport_connector_missing", "(none)")}),
        ({"receives": [DEFAULT_FRONTEND], "centralized_transport": False}, set()),
        # Permissions not readable: nothing said about rights, rather than a guess.
        ({"permissions": None}, set()),
        # Named in config, the connector is taken as is, even if it is open to all.
        (
            {"policy": r.RoutingPolicy(centralized_receive_connector="ex1\\default frontend ex1")},
            {("centralized_transport_cannot_relay", DEFAULT_FRONTEND.identity)},
        ),
        # Mail to Office 365: TLS required, the tenant's smart host.
        (
            {"sends": [replace(TO_O365, require_tls=False), INTERNET]},
            {("office365_send_connector_without_tls", TO_O365.name)},
        ),
        (
            {"sends": [replace(TO_O365, smart_hosts=("smtp.contoso.com",)), INTERNET]},
            {("office365_send_connector_smart_host", TO_O365.name)},
        ),
        (
            {"policy": r.RoutingPolicy(office365_smart_host="fabrikam-com.mail.protection.outlook.com")},
            {("office365_send_connector_smart_host", TO_O365.name)},
        ),
    ],
)
def test_each_rule_wrong_and_right(change: dict[str, object], expected: set[tuple[str, str]]) -> None:
    assert kinds(**change) == expected


def test_relay_ranges_are_compared_as_ranges() -> None:
    allowed = r.RoutingPolicy(relay_allowed_ranges=("10.0.0.0/8",)).networks
    assert r._inside("10.1.0.0-10.1.255.255", allowed) and r._inside("10.2.3.4", allowed)
    assert not r._inside("10.255.255.0-11.0.0.0", allowed) and not r._inside("::1", allowed)
    assert not r._inside("not a range", allowed)  # not understood: not known to be safe


def test_the_real_samples() -> None:
    sends = [r.parse_send_connector(o) for o in sample("E19_Exchange_GetSendConnector.xml")]
    receives = [r.parse_receive_connector(o) for o in sample("E19_Exchange_GetReceiveConnector.xml")]
    assert sends == [
        r.SendConnector(
            "Mail to O365", True, ("*",), ("microsoft-com.mail.protection.outlook.com",), False, False, True
        )
    ]
    frontend = next(c for c in receives if "Default Frontend" in c.identity)
    assert frontend.frontend_25 and frontend.remote_ranges == EVERYWHERE[::-1]
    assert frontend.permission_groups == {"AnonymousUsers", "ExchangeServers", "ExchangeLegacyServers"}
    assert "Tls" in frontend.auth_mechanisms and "ExternalAuthoritative" not in frontend.auth_mechanisms
    assert not r.centralized_transport_on(sample("E19_Exchange_GetHybridConfiguration.xml"))
    # The sample organisation's connector to Office 365 does not require TLS; nothing else is wrong with it.
    found = r.findings([], [], sends, receives, [], r.RoutingPolicy())
    assert [(f.kind, f.object) for f in found] == [("office365_send_connector_without_tls", "Mail to O365")]
