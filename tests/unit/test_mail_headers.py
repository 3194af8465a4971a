"""Hybrid mail-flow headers: Internal, Anonymous and Partner attribution, encoded headers, routes and loops."""

from __future__ import annotations

import pytest

from exporter.parsers.mail_headers import parse_headers, parse_received

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
