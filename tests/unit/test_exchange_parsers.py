"""Exchange cmdlet records, SMTP reply chains and the build table, against the real samples."""

from __future__ import annotations

import re
import warnings
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from exporter.parsers import exchange as ex
from exporter.parsers import exchange_builds as builds
from exporter.parsers.clixml import CmdletDataError, parse_document, parse_object
from exporter.parsers.smtp import parse_reply, parse_reply_chain
from exporter.parsers.x500 import split_name
from exporter.sources.smtp import certificate_from_der
from lab.exchange import LabExchange, LabQueue
from tests.fuzz_targets import _damaged_certificate
from tools import exchange_build_table

SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "exchange_cmdlets"


def sample(name: str) -> list[Any]:
    return parse_document((SAMPLES / name).read_bytes())


def components() -> dict[str, ex.ComponentState]:
    return {c.component: c for c in map(ex.parse_component_state, sample("E16_Exchange_GetServerComponentState.xml"))}


def test_every_component_of_the_sample() -> None:
    states = components()
    assert len(states) == 35
    assert {name for name, c in states.items() if c.state == "Inactive"} == {"ForwardSyncDaemon", "ProvisioningRps"}
    assert all(c.state_value in (0, 1) for c in states.values())


def test_requesters_per_scope() -> None:
    states = components()
    swo = states["ServerWideOffline"]
    assert [(r.requester, r.scope, r.state) for r in swo.requesters] == [
        ("Functional", "local", "Active"),
        ("Functional", "remote", "Active"),
    ]
    assert swo.requesters[0].timestamp == pytest.approx(1632849623.569272)
    um = states["UMCallRouter"]
    assert [(r.requester, r.scope) for r in um.requesters] == [("HealthApi", "local")]
    # Components without requester entries in the sample have none.
    assert states["HubTransport"].requesters == ()


def test_holders_name_the_requester_that_keeps_a_component_down() -> None:
    component = ex.ComponentState(
        "ServerWideOffline",
        "Inactive",
        (
            ex.RequesterState("Functional", "local", "Inactive", 1.0),
            ex.RequesterState("Maintenance", "local", "Active", 2.0),
        ),
        False,
    )
    assert [h.requester for h in component.holders()] == ["Functional"]


def test_newest_entry_of_a_requester_wins() -> None:
    obj = parse_object(
        '<Obj RefId="0"><Props><S N="Component">HubTransport</S><S N="State">Inactive</S>'
        '<Obj N="LocalStates" RefId="1"><LST>'
        '<Obj RefId="2"><Props><S N="Requester">Maintenance</S><S N="State">Active</S>'
        '<DT N="Timestamp">2024-01-01T10:00:00Z</DT></Props></Obj>'
        '<Obj RefId="3"><Props><S N="Requester">Maintenance</S><S N="State">Inactive</S>'
        '<DT N="Timestamp">2024-01-01T09:00:00Z</DT></Props></Obj>'
        "</LST></Obj></Props></Obj>"
    )
    (entry,) = ex.parse_component_state(obj).requesters
    assert entry.state == "Active"


def test_missing_component_name_is_an_error_naming_the_cmdlet() -> None:
    with pytest.raises(ex.ExchangeDataError, match="Get-ServerComponentState: property Component"):
        ex.parse_component_state(parse_object('<Obj RefId="0"><Props><S N="State">Active</S></Props></Obj>'))


def test_exchange_server_sample() -> None:
    server = ex.parse_exchange_server(sample("E16_Exchange_GetExchangeServer.xml")[0])
    assert (server.name, server.fqdn, server.edition, server.roles, server.site) == (
        "SOLO-E16A",
        "Solo-E16A.Solo.local",
        "StandardEvaluation",
        "Mailbox",
        "Default-First-Site-Name",
    )
    assert server.build.version == (15, 1, 2375, 7)
    assert (server.build.product, server.build.cu, server.build.update) == ("Exchange Server 2016", "CU22", "")


def test_admin_display_version_forms() -> None:
    (version,) = sample("Shared_Tests_E19CU11AdminDisplayVersion.xml")
    assert ex.parse_admin_display_version(version) == (15, 2, 986, 5)
    assert ex.parse_admin_display_version("Version 15.1 (Build 2375.7)") == (15, 1, 2375, 7)
    assert ex.parse_admin_display_version("15.2.1748.10") == (15, 2, 1748, 10)
    with pytest.raises(ValueError, match="four-part"):
        ex.parse_admin_display_version("Version fifteen")


def test_exsetup_version_from_either_property() -> None:
    obj = parse_object(LabExchange().servers["solo-e19a"].exsetup_clixml())
    assert ex.parse_exsetup_version(obj) == "15.2.986.42"
    del obj["Version"]  # FileVersionInfo only, in its zero-padded long form
    assert ex.parse_exsetup_version(obj) == "15.2.986.42"
    with pytest.raises(ex.ExchangeDataError, match=r"ExSetup\.exe"):
        ex.parse_exsetup_version(parse_object('<Obj RefId="0"><Props><S N="Name">ExSetup.exe</S></Props></Obj>'))
    server = ex.parse_exchange_server(sample("E16_Exchange_GetExchangeServer.xml")[0], "15.1.2375.7")
    assert server.build.update == ""


@pytest.mark.parametrize(
    ("version", "file_version", "product", "cu", "update", "in_window"),
    [
        ((15, 1, 2375, 7), None, "Exchange Server 2016", "CU22", "", True),
        ((15, 1, 2308, 8), None, "Exchange Server 2016", "CU21", "", False),
        ((15, 2, 986, 5), None, "Exchange Server 2019", "CU11", "", False),
        ((15, 2, 1748, 10), None, "Exchange Server 2019", "CU15", "", True),
        ((15, 2, 1748, 10), (15, 2, 1748, 39), "Exchange Server 2019", "CU15", "Oct25SU", True),
        ((15, 2, 1544, 4), (15, 2, 1544, 99), "Exchange Server 2019", "CU14", "unknown", True),
        ((15, 2, 2562, 17), (15, 2, 2562, 29), "Exchange Server SE", "RTM", "Oct25SU", True),
        ((15, 2, 9999, 1), None, "Exchange Server SE", "unknown", "", False),
        ((14, 3, 123, 4), None, "unknown", "unknown", "", False),
    ],
)
def test_build_lookup(
    version: builds.Version, file_version: builds.Version | None, product: str, cu: str, update: str, in_window: bool
) -> None:
    info = builds.lookup(version, file_version)
    assert (info.product, info.cu, info.update, info.in_hybrid_window) == (product, cu, update, in_window)


def test_build_table_is_newest_first_and_consistent() -> None:
    for product in builds.PRODUCTS:
        cu_builds = [builds.parse_version(b) for _, b, _ in product.cus]
        assert cu_builds == sorted(cu_builds, reverse=True), product.name
        # Release dates are kept where known (the generated table has none of its own): newest first too.
        known = [d for _, _, d in product.cus if d is not None]
        assert known == sorted(known, reverse=True)
        for name, build, _ in product.updates:
            # Every update's build belongs to a CU of its product.
            assert any(builds.parse_version(build)[:3] == cu[:3] for cu in cu_builds), (product.name, name)
        assert all(d <= builds.TABLE_AS_OF for _, _, d in product.cus + product.updates if d is not None)
    assert builds.date_to_unix(date(2021, 9, 28)) == 1632787200.0


REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "data" / "reference"
REFERENCE_TABLE = REFERENCE / "CSS-Exchange_Get-ExchangeBuildVersionInformation.ps1"


def test_every_cu_and_update_of_healthcheckers_table_maps_to_its_name() -> None:
    """The table is generated from CSS-Exchange's (see tests/fixtures/README.md): every build in it is named."""
    if not REFERENCE_TABLE.exists():
        pytest.skip(f"the reference table is not beside this checkout ({REFERENCE_TABLE})")
    table = exchange_build_table.parse_reference(REFERENCE_TABLE.read_text(encoding="utf-8-sig"))
    checked = 0
    for key, cus in table.items():
        for cu, cu_build, updates in cus:
            info = builds.lookup(builds.parse_version(cu_build))
            assert (info.product, info.cu, info.update) == (builds.NAMES[key], cu, ""), (key, cu)
            for name, build in updates:
                if build == cu_build:
                    continue  # an update shipped as the CU build itself (2013 CU22 Feb19SU)
                found = builds.lookup(builds.parse_version(cu_build), builds.parse_version(build))
                assert (found.cu, found.update, found.newer_than_table) == (cu, name, False), (key, cu, name)
                checked += 1
    assert checked > 200
    # The generated module is what the generator makes of the reference today.
    generated = Path(exchange_build_table.OUT).read_text(encoding="utf-8")
    assert exchange_build_table.render(table, generated.split("Source: ", 1)[1].split(" (MIT", 1)[0]) == generated


def test_a_2025_server_on_cu23_apr24hu_is_named_and_a_newer_build_is_flagged() -> None:
    # 15.1.2507.39, seen on a real server in 2025 mail headers: the hand table had called it "unknown".
    info = builds.lookup((15, 1, 2507, 6), (15, 1, 2507, 39))
    assert (info.product, info.cu, info.update, info.newer_than_table) == (
        "Exchange Server 2016",
        "CU23",
        "Apr24HU",
        False,
    )
    assert info.update_release == date(2024, 4, 23)  # a hotfix update: its recorded day
    assert builds.lookup((15, 1, 2507, 6), (15, 1, 2507, 37)).update_release == date(2024, 3, 12)  # SU: Patch Tuesday
    newest = max(builds.parse_version(b) for _, b, _ in builds.PRODUCTS[0].updates)
    beyond = builds.lookup((15, 2, 2562, 17), (*newest[:3], newest[3] + 1))
    assert (beyond.update, beyond.newer_than_table) == ("unknown", True)
    assert builds.lookup((15, 2, 9999, 1)).newer_than_table  # a CU the table does not know yet
    assert not builds.lookup((15, 2, 1544, 4), (15, 2, 1544, 12)).newer_than_table  # unknown, but not newer
    assert date(2026, 2, 10) <= builds.TABLE_AS_OF  # Feb26SU, the table's newest


@pytest.mark.parametrize(
    ("text", "reported", "remote"),
    [
        (
            '451 4.4.0 Primary target IP address responded with: "421 4.3.2 Service not active." Attempted failover '
            "to alternate host, but that did not succeed. The last endpoint attempted was 10.0.0.5:25",
            "451 4.4.0",
            "421 4.3.2",
        ),
        (
            "[{LRT=11/27/2026 7:05:39 AM};{LED=451 4.7.500 Server busy. Please try again later from [10.1.1.1]. "
            "(S77719) [AM4PEPF00027A6B.eurprd04.prod.outlook.com]};{FQDN=contoso-com.mail.protection.outlook.com};"
            "{IP=52.101.1.1}]",
            "451 4.7.500",
            None,
        ),
        (
            '[{LRT=};{LED=441 4.4.1 Error encountered while communicating with primary target IP address: "Failed '
            'to connect. Winsock error code: 10060, Win32 error code: 10060." Attempted failover to alternate host, '
            "but that did not succeed.};{FQDN=mail.fabrikam.com};{IP=10.0.0.1}]",
            "441 4.4.1",
            None,
        ),
        ("550 5.7.1 Unable to relay", "550 5.7.1", None),
        ("554 5.4.6 Hop count exceeded - possible mail loop ATTR34", "554 5.4.6", None),
        ("421 Service not available", "421", None),
        ("Queue is in retry; there is no error text", None, None),
        ("", None, None),
    ],
)
def test_reply_chains(text: str, reported: str | None, remote: str | None) -> None:
    chain = parse_reply_chain(text)
    assert (chain.reported.text if chain.reported else None) == reported
    assert (chain.remote.text if chain.remote else None) == remote


def test_single_reply() -> None:
    reply = parse_reply("550-5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup")
    assert reply is not None and (reply.code, reply.enhanced) == ("550", "5.1.10")
    assert parse_reply("hello 250") is None


def test_queue_built_by_the_lab_parses_back() -> None:
    lab_queue = LabQueue(
        "7",
        "SmartHostConnectorDelivery",
        "Contoso.mail.onmicrosoft.com",
        "Retry",
        42,
        '451 4.4.0 Primary target IP address responded with: "421 4.3.2 Service not active."',
    )
    queue = ex.parse_queue(parse_object(lab_queue.clixml("SOLO-E16A")))
    assert (queue.identity, queue.delivery_type, queue.next_hop, queue.status, queue.message_count) == (
        "SOLO-E16A\\7",
        "SmartHostConnectorDelivery",
        "contoso.mail.onmicrosoft.com",
        "Retry",
        42,
    )
    assert queue.reply.root_cause is not None and queue.reply.root_cause.text == "421 4.3.2"


def test_connectors_from_the_samples() -> None:
    send = [ex.parse_connector(o, "send") for o in sample("E19_Exchange_GetSendConnector.xml")]
    receive = [ex.parse_connector(o, "receive") for o in sample("E19_Exchange_GetReceiveConnector.xml")]
    hybrid = [ex.parse_connector(o, "hybrid") for o in sample("E19_Exchange_GetHybridConfiguration.xml")]
    assert [(c.name, c.hybrid) for c in send] == [("Mail to O365", True)]
    assert [c.name for c in receive if c.hybrid] == ["WIN-CTD3L0RGEN4\\Default Frontend WIN-CTD3L0RGEN4"]
    assert [c.name for c in receive if c.tls_certificate_name] == ["WIN-CTD3L0RGEN4\\Default Frontend WIN-CTD3L0RGEN4"]
    (config,) = hybrid
    assert config.tls_certificate_name == ex.X509Identifier(
        "CN=GeoTrust TLS RSA CA G1, OU=www.digicert.com, O=DigiCert Inc, C=US", "CN=mail.contoso.com"
    )


@pytest.mark.parametrize(
    ("actual", "expected", "matches"),
    [
        (
            "<I>CN=CA, O=DigiCert Inc<S>CN=mail.contoso.com, O=Contoso",
            "<I>CN=CA,O=DigiCert Inc<S>cn=mail.contoso.com,o=contoso",
            True,
        ),
        ("<I>CN=CA<S>CN=mail.contoso.com, O=Contoso", "CN=mail.contoso.com, O=Contoso", True),  # subject only
        # The common name matches but the Organisation differs: Exchange Online treats the mail as Anonymous.
        ("<I>CN=CA<S>CN=mail.contoso.com, O=Contoso Old", "CN=mail.contoso.com, O=Contoso", False),
        ("<I>CN=Other CA<S>CN=mail.contoso.com", "<I>CN=CA<S>CN=mail.contoso.com", False),
        (None, "CN=mail.contoso.com", False),
    ],
)
def test_certificate_name_matching(actual: str | None, expected: str, matches: bool) -> None:
    assert ex.identifier_matches(ex.parse_x509_identifier(actual), expected) is matches


def test_certificates_from_raw_data() -> None:
    objects = sample("E19_Exchange_GetExchangeCertificate.xml")
    for obj in objects:
        cert = ex.parse_certificate(obj)
        # The sample's ToString shows Windows' own thumbprint and subject: the DER must give the same.
        shown = obj.to_string or ""
        assert cert.thumbprint == re.search(r"\[Thumbprint\]\s+([0-9A-F]{40})", shown).group(1)  # type: ignore[union-attr]
        assert cert.subject == re.search(r"\[Subject\]\s+(.+?)\r?\n", shown).group(1)  # type: ignore[union-attr]
    assert [round(ex.parse_certificate(o).not_after) for o in objects] == [1730933252, 1733265958, 1890766393]


def test_a_certificate_damaged_in_its_subject_is_the_declared_error_in_both_readers() -> None:
    """cryptography parses a DER lazily: the subject's damage raises only when it is read (found by bench fuzz)."""
    damaged = parse_object(_damaged_certificate())
    with pytest.raises(CmdletDataError, match="RawData is not a certificate"):
        ex.parse_certificate(damaged)
    der = bytes(damaged.get("RawData"))
    assert certificate_from_der(der) is None  # what an SMTP server presents unverified: no certificate, no crash
    good = sample("E19_Exchange_GetExchangeCertificate.xml")[0]
    assert certificate_from_der(bytes(good.get("RawData"))) is not None


@pytest.mark.parametrize(
    ("address", "domain"),
    [
        ("SMTP:Amy@Contoso.mail.onmicrosoft.com", "contoso.mail.onmicrosoft.com"),
        ("smtp:bob@contoso.com", "contoso.com"),
        ("carl@fabrikam.com", "fabrikam.com"),
        ("", ""),
    ],
)
def test_routing_domain(address: str, domain: str) -> None:
    assert ex.address_domain(address) == domain


def test_the_generator_names_the_line_it_cannot_read() -> None:
    text = '"Exchange2019" = @{\n    "CU15" = (NewCUAndSUObject "15.2.1748.10" @{\n        "Oct25SU" = 15.2.1748.39\n'
    with pytest.raises(exchange_build_table.TableError, match=r"line 3: not an update of the CU above"):
        exchange_build_table.parse_reference(text)
    with pytest.raises(exchange_build_table.TableError, match="no CUs found for ExchangeSE"):
        exchange_build_table.parse_reference('"Exchange2019" = @{\n    "CU15" = (NewCUAndSUObject "15.2.1748.10")\n')


@pytest.mark.parametrize(
    "name", ["E19_Exchange_GetExchangeCertificate.xml", "HealthChecker_GetExchangeCertificateBroken.xml"]
)
def test_certificate_names_read_as_exchange_shows_them(name: str) -> None:
    """Subject and issuer as Get-ExchangeCertificate shows them ([Subject]/[Issuer] in each object's ToString),
    also for "CN=domain.com, OU=IT, O=Contoso, L=Cologne, S=NRW, C=Germany": no cryptography warning (the test
    run turns warnings into errors), none logged."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for obj in sample(name):
            cert = ex.parse_certificate(obj)
            shown = obj.to_string or ""
            assert cert.subject == re.search(r"\[Subject\]\s+(.+?)\r?\n", shown).group(1)  # type: ignore[union-attr]
            assert cert.issuer == re.search(r"\[Issuer\]\s+(.+?)\r?\n", shown).group(1)  # type: ignore[union-attr]


def test_a_certificate_with_a_long_country_matches_its_tls_certificate_name() -> None:
    (cologne,) = [
        c
        for c in map(ex.parse_certificate, sample("HealthChecker_GetExchangeCertificateBroken.xml"))
        if "Cologne" in c.subject
    ]
    presented = ex.parse_x509_identifier(f"<I>{cologne.issuer}<S>{cologne.subject}")
    shown = "CN=domain.com, OU=IT, O=Contoso, L=Cologne, S=NRW, C=Germany"
    assert ex.identifier_matches(presented, f"<I>{shown}<S>{shown}")
    # RFC 4514 spelling (ST=, no spaces) names the same certificate; another Organisation does not.
    assert ex.identifier_matches(presented, "CN=domain.com,OU=IT,O=Contoso,L=Cologne,ST=NRW,C=Germany")
    assert not ex.identifier_matches(presented, "CN=domain.com, OU=IT, O=Fabrikam, L=Cologne, S=NRW, C=Germany")


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        (
            'CN=mail.contoso.com, O="Contoso, Ltd", C=US',
            [("CN", "mail.contoso.com"), ("O", "Contoso, Ltd"), ("C", "US")],
        ),
        (
            r"CN=mail.contoso.com,O=Contoso\, Ltd,ST=WA",
            [("CN", "mail.contoso.com"), ("O", "Contoso, Ltd"), ("S", "WA")],
        ),
        ("CN=a + OU=b, C=DE", [("CN", "a"), ("OU", "b"), ("C", "DE")]),
    ],
)
def test_names_split_in_either_form(text: str, parts: list[tuple[str, str]]) -> None:
    assert split_name(text) == parts
