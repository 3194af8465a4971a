"""Hybrid mail-flow headers: Internal, Anonymous and Partner attribution, encoded headers, routes and loops."""

from __future__ import annotations

import quopri
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exporter.parsers.mail_headers import Route, parse_headers, parse_received

ONPREM_TO_EXO = (
    "Received: from AM6PR04MB1234.eurprd04.prod.outlook.com (2603:10a6:20b:1::1) by\r\n"
    " AM6PR04MB5678.eurprd04.prod.outlook.com with HTTPS; Thu, 27 Nov 2026 07:41:15 +0000\r\n"
    "Received: from AM4PEPF00027A6B.eurprd04.prod.outlook.com (2603:10a6:208::2) by\r\n"
    " AM6PR04MB1234.eurprd04.prod.outlook.com (2603:10a6:20b:1::1) with Microsoft SMTP Server\r\n"
    " (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.20.8000.1; Thu, 27 Nov 2026\r\n"
    " 07:41:14 +0000\r\n"
    "Received: from mail.contoso.com (203.0.113.10) by AM4PEPF00027A6B.mail.protection.outlook.com\r\n"
    " (10.167.16.1) with Microsoft SMTP Server (version=TLS1_2) id 15.20.8000.1 via Frontend Transport;\r\n"
    " Thu, 27 Nov 2026 07:41:13 +0000\r\n"
    "Received: from EX1.contoso.com (10.0.0.10) by EX2.contoso.com (10.0.0.11) with Microsoft SMTP Server\r\n"
    " id 15.2.986.42; Thu, 27 Nov 2026 07:41:12 +0000\r\n"
    "Message-ID: <canary-1@contoso.com>\r\n"
    "Subject: canary\r\n"
)


@pytest.mark.parametrize(
    ("headers", "auth_as", "auth_source", "from_entity", "directionality"),
    [
        (
            ONPREM_TO_EXO + "X-MS-Exchange-CrossTenant-AuthAs: Internal\r\n"
            "X-MS-Exchange-CrossTenant-AuthSource: AM4PEPF00027A6B.eurprd04.prod.outlook.com\r\n"
            "X-MS-Exchange-CrossTenant-FromEntityHeader: HybridOnPrem\r\n"
            "X-MS-Exchange-Organization-MessageDirectionality: Originating\r\n\r\n",
            "Internal",
            "am4pepf00027a6b.eurprd04.prod.outlook.com",
            "HybridOnPrem",
            "Originating",
        ),
        # The connector did not match the certificate: Anonymous, treated as internet mail.
        (
            ONPREM_TO_EXO + "X-MS-Exchange-CrossTenant-AuthAs: Anonymous\r\n"
            "X-MS-Exchange-CrossTenant-FromEntityHeader: Internet\r\n"
            "X-MS-Exchange-Organization-MessageDirectionality: Incoming\r\n\r\n",
            "Anonymous",
            "",
            "Internet",
            "Incoming",
        ),
        # A partner organisation's connector (TLS-secured partner domain).
        (
            ONPREM_TO_EXO + "X-MS-Exchange-Organization-AuthAs: Partner\r\n"
            "X-MS-Exchange-Organization-AuthSource: EX2.contoso.com\r\n"
            "X-MS-Exchange-Organization-AuthMechanism: 10\r\n\r\n",
            "Partner",
            "ex2.contoso.com",
            "",
            "",
        ),
        # Encoded words (RFC 2047, Q and B encodings) are decoded.
        (
            ONPREM_TO_EXO + "X-MS-Exchange-CrossTenant-AuthAs: =?utf-8?Q?Internal?=\r\n"
            "X-MS-Exchange-CrossTenant-FromEntityHeader: =?utf-8?B?SHlicmlkT25QcmVt?=\r\n\r\n",
            "Internal",
            "",
            "HybridOnPrem",
            "",
        ),
    ],
)
def test_attribution(headers: str, auth_as: str, auth_source: str, from_entity: str, directionality: str) -> None:
    route = parse_headers(headers.encode())
    assert (route.auth_as, route.auth_source, route.from_entity, route.directionality) == (
        auth_as,
        auth_source,
        from_entity,
        directionality,
    )


def test_route_hops_and_delays() -> None:
    route = parse_headers((ONPREM_TO_EXO + "\r\n").encode())
    assert route.hop_count == 4
    assert [h.by for h in route.hops] == [
        "ex2.contoso.com",
        "am4pepf00027a6b.mail.protection.outlook.com",
        "am6pr04mb1234.eurprd04.prod.outlook.com",
        "am6pr04mb5678.eurprd04.prod.outlook.com",
    ]
    assert route.delays() == [
        ("am4pepf00027a6b.mail.protection.outlook.com", 1.0),
        ("am6pr04mb1234.eurprd04.prod.outlook.com", 1.0),
        ("am6pr04mb5678.eurprd04.prod.outlook.com", 1.0),
    ]
    assert route.transit_seconds == 3.0
    assert not route.looping(hop_limit=30)
    assert route.subject == "canary" and route.message_id == "<canary-1@contoso.com>"


def test_a_looping_chain() -> None:
    """Centralized transport with Anonymous attribution: the message bounces between the clouds."""
    hops = []
    for i in range(6):
        hops.append(
            f"Received: from mail.contoso.com (203.0.113.10) by AM4PEPF00027A6B.mail.protection.outlook.com "
            f"with Microsoft SMTP Server id 15.20.8000.1; Thu, 27 Nov 2026 07:{40 + i:02d}:00 +0000\r\n"
        )
        hops.append(
            f"Received: from AM4PEPF00027A6B.mail.protection.outlook.com (52.101.68.10) by "
            f"mail.contoso.com (203.0.113.10) with Microsoft SMTP Server id 15.2.986.42; "
            f"Thu, 27 Nov 2026 07:{40 + i:02d}:30 +0000\r\n"
        )
    route = parse_headers(("".join(reversed(hops)) + "X-MS-Exchange-CrossTenant-AuthAs: Anonymous\r\n\r\n").encode())
    assert route.hop_count == 12
    assert route.repeated_hosts == ["am4pepf00027a6b.mail.protection.outlook.com", "mail.contoso.com"]
    assert route.looping(hop_limit=30)


def test_unreadable_received_dates() -> None:
    hop = parse_received("from a.example by b.example with ESMTP id 42")
    assert (hop.by, hop.source, hop.time) == ("b.example", "a.example", None)
    route = parse_headers(b"Received: from a by b; not a date\r\nSubject: x\r\n\r\n")
    assert route.hop_count == 1 and route.hops[0].time is None


# --- real messages (tests/fixtures/mail, provenance in tests/fixtures/README.md) ---------------------------------

MAIL = Path(__file__).resolve().parent.parent / "fixtures" / "mail"
SECUNET_LIST = "lkml_20240331_secunet_exchange_amavis_list_reinjection.headers"
SECUNET_ONPREM = "lkml_20240329_secunet_onprem_exchange_headers.qp"
SENDGRID_LKML = "lkml_20200108_sendgrid_hops_without_semicolon.eml"
OUTLOOK_COM = "outlookcom_20170319_github_sendgrid_fractional_seconds.headers"


def real(name: str) -> Route:
    raw = (MAIL / name).read_bytes()
    # The on-premises header block is quoted-printable in the body of the message that carried it.
    return parse_headers(quopri.decodestring(raw) if name.endswith(".qp") else raw)


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_fractional_seconds_and_missing_semicolons_keep_the_hop() -> None:
    # "...; Sun, 19 Mar 2017 20:53:46.917 +0000 (UTC)" made the whole first hop disappear.
    first = real(OUTLOOK_COM).hops[0]
    assert (first.by, first.source) == ("ismtpd0006p1iad1.sendgrid.net", "github-smtp2b-ext-cp1-prd.iad.github.net")
    assert first.time == utc("2017-03-19T20:53:46")
    # SendGrid writes no ";" before the date, and Go's time format on its filter hop.
    hops = real(SENDGRID_LKML).hops
    assert [(h.by, h.time) for h in hops[:2]] == [
        ("ismtpd0005p1lon1.sendgrid.net", utc("2020-01-08T21:07:48")),
        ("filterdrecv-p3mdw1-56c97568b5-s6xnl", utc("2020-01-08T21:07:48")),
    ]
    assert all(h.time is not None for h in hops)
    assert real(SENDGRID_LKML).transit_seconds == 6.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("from a by b; Tue, 1 Jul 2003 10:52:37 +0200", "2003-07-01T08:52:37"),
        ("from a by b; 1 Jul 03 10:52 EDT", "2003-07-01T14:52:00"),  # two-digit year, no seconds, obsolete zone
        ("from a by b; Tue, 1 Jul 2003 10:52:37 GMT (comment)", "2003-07-01T10:52:37"),
        ("from a by b; Tue,  1 Jul 2003 10:52:37.123456 -0000", "2003-07-01T10:52:37"),
    ],
)
def test_lenient_received_dates(value: str, expected: str) -> None:
    assert parse_received(value).time == utc(expected)


def test_on_premises_from_entity_header() -> None:
    onprem = real(SECUNET_ONPREM)
    assert (onprem.from_entity, onprem.auth_as, onprem.auth_source) == (
        "Internet",
        "Anonymous",
        "cas-essen-01.secunet.de",
    )
    # Exchange Online's CrossTenant header wins over the organization's when both are there.
    both = parse_headers(
        b"X-MS-Exchange-Organization-FromEntityHeader: Internet\r\n"
        b"X-MS-Exchange-CrossTenant-FromEntityHeader: HybridOnPrem\r\n\r\n"
    )
    assert both.from_entity == "HybridOnPrem"


@pytest.mark.parametrize("name", [SECUNET_LIST, SECUNET_ONPREM, SENDGRID_LKML, OUTLOOK_COM])
def test_normal_mail_is_not_a_loop(name: str) -> None:
    route = real(name)
    assert not route.looping(hop_limit=30), route.repeated_cycle
    assert route.repeated_cycle == []


def test_what_repeats_in_normal_mail() -> None:
    # List re-injection (smtp.subspace.kernel.org twice) and an amavis hand-back (a.mx.secunet.com twice).
    assert real(SECUNET_LIST).repeated_hosts == ["a.mx.secunet.com", "smtp.subspace.kernel.org"]
    assert real(SECUNET_ONPREM).repeated_hosts == ["b.mx.secunet.com", "smtp.subspace.kernel.org"]
    # majordomo's "via listexpand" hop: vger twice in a row.
    assert real(SENDGRID_LKML).repeated_hosts == ["vger.kernel.org"]


def test_a_hairpin_is_not_a_loop_and_a_cycle_is() -> None:
    def chain(*hosts: str) -> Route:
        lines = [
            f"Received: from x by {h} with ESMTP; Thu, 27 Nov 2026 07:41:{i:02d} +0000\r\n" for i, h in enumerate(hosts)
        ]
        return parse_headers(("".join(reversed(lines)) + "\r\n").encode())

    hairpin = chain(
        "ex1.contoso.com", "am4pepf0001.outlook.com", "am6pr04mb1.outlook.com", "ex1.contoso.com", "ex2.contoso.com"
    )
    assert not hairpin.looping(hop_limit=30)
    cycle = chain("ex1.contoso.com", "am4pepf0001.outlook.com", "ex1.contoso.com", "am4pepf0001.outlook.com")
    assert cycle.repeated_cycle == ["ex1.contoso.com", "am4pepf0001.outlook.com"]
    assert cycle.looping(hop_limit=30)
    assert chain(*[f"h{i}" for i in range(31)]).looping(hop_limit=30)


@pytest.mark.parametrize(
    ("status", "loop"),
    [("5.4.6", True), ("5.4.14", True), ("5.1.10", False), ("2.0.0", False)],
)
def test_an_ndr_for_hop_count_exceeded_is_a_loop(status: str, loop: bool) -> None:
    ndr = (
        "Received: from ex1.contoso.com by ex1.contoso.com with ESMTP; Thu, 27 Nov 2026 07:41:13 +0000\r\n"
        "Subject: Undeliverable: looping\r\nX-MS-Exchange-Message-Is-Ndr:\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns;ex1.contoso.com\r\n\r\n"
        f"Final-Recipient: rfc822;a@contoso.com\r\nAction: failed\r\nStatus: {status}\r\n\r\n--b--\r\n"
    )
    route = parse_headers(ndr.encode())
    assert route.ndr_status == status
    assert route.looping(hop_limit=30) is loop
    # The same status text in a message that is no report is not read.
    assert (
        parse_headers(
            ndr.replace("multipart/report", "multipart/mixed").replace("X-MS-Exchange-Message-Is-Ndr:\r\n", "").encode()
        ).ndr_status
        == ""
    )
