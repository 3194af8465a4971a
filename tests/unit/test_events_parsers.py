"""Security event parsers: every shared sample to the right counts per event ID and reason, and each format."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from exporter.parsers import events as ev
from lab.winevent import sample_events, winlogbeat_line

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
WINEVENT = FIXTURES / "winevent"


def sample_text(name: str) -> str:
    text = (WINEVENT / name).read_text(encoding="utf-8-sig")
    if name.endswith(".txt"):  # the documentation's browser view: drop its "- " markers
        text = "\n".join(re.sub(r"^\s*-?\s", "", line) for line in text.splitlines())
    return text


def counts(name: str) -> Counter[tuple[int, str]]:
    found: Counter[tuple[int, str]] = Counter()
    for event in ev.iter_event_document(sample_text(name)):
        assert not isinstance(event, ev.EventParseError), event
        found[(event.event_id, event.reason)] += 1
    return found


# Expected numbers from the samples' MANIFEST (written by hand from the events, not by this parser).
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("4625_4776_mdecrevoisier_local_bruteforce.xml", {(4625, "wrong_password"): 16}),
        (
            "4625_4776_mdecrevoisier_openssh_nonexisting_users.xml",
            {(4625, "no_such_user"): 5, (4776, "no_such_user"): 5},
        ),
        ("4625_mdecrevoisier_openssh_valid_users.xml", {(4625, "wrong_password"): 5}),
        ("4625_mdecrevoisier_account_restriction.xml", {(4625, "account_restriction"): 2}),
        ("4771_mdecrevoisier_kerberos_bruteforce_valid_user.xml", {(4771, "preauth_failed"): 20}),
        ("4771_mdecrevoisier_kerbrute_user_enum.xml", {(4771, "preauth_failed"): 22}),
        ("4776_mdecrevoisier_sam_the_admin.xml", {(4776, "success"): 5}),
        ("4740_msdocs_event-4740_xml_block.txt", {(4740, "locked_out"): 1}),
        # The whole .evtx: its 50 x 4768 are passed over, not errors.
        ("4768_4771_mdecrevoisier_kerberos_bruteforce_nonexisting_users_unfiltered.xml", {(4771, "preauth_failed"): 2}),
    ],
)
def test_every_sample_counts_per_event_id_and_reason(name: str, expected: dict[tuple[int, str], int]) -> None:
    assert counts(name) == Counter(expected)


def test_fields_of_the_samples() -> None:
    (lockout,) = ev.iter_event_document(sample_text("4740_msdocs_event-4740_xml_block.txt"))
    assert isinstance(lockout, ev.SecurityEvent)
    # 4740's caller computer is in TargetDomainName.
    assert (lockout.user, lockout.caller_computer, lockout.caller_kind, lockout.computer, lockout.record_id) == (
        "auditor",
        "WIN81",
        "domain_computer",
        "dc01.contoso.local",
        175703,
    )
    assert lockout.time == pytest.approx(1440194768.5768875)
    kerberos = next(iter(ev.iter_event_document(sample_text("4771_mdecrevoisier_kerberos_bruteforce_valid_user.xml"))))
    assert isinstance(kerberos, ev.SecurityEvent)
    assert (kerberos.ip, kerberos.user, kerberos.protocol) == ("10.23.123.11", "admin-hacker", "kerberos")
    assert kerberos.time == pytest.approx(1638456861.232643)  # python-evtx's "2021-12-02 14:54:21.232643+00:00"
    ntlm = [
        e
        for e in ev.iter_event_document(sample_text("4776_mdecrevoisier_sam_the_admin.xml"))
        if isinstance(e, ev.SecurityEvent)
    ]
    assert Counter(e.workstation for e in ntlm) == Counter({"EXCHANGE01": 3, "attacker": 1, "": 1})
    restricted = [
        e
        for e in ev.iter_event_document(sample_text("4625_mdecrevoisier_account_restriction.xml"))
        if isinstance(e, ev.SecurityEvent)
    ]
    assert {(e.user, e.ip) for e in restricted} == {("", "10.23.23.9")}  # TargetUserName "-"


def test_windows_to_xml_form() -> None:
    """What Get-WinEvent's .ToXml() returns: no Qualifiers attribute, 7-digit fractions with Z."""
    xml = (
        '<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System>'
        '<Provider Name="Microsoft-Windows-Security-Auditing"/><EventID>4740</EventID>'
        '<TimeCreated SystemTime="2026-11-27T07:05:39.1234567Z"/><EventRecordID>900</EventRecordID>'
        "<Computer>DC1.corp.example</Computer></System><EventData>"
        '<Data Name="TargetUserName">jdoe</Data><Data Name="TargetDomainName"></Data></EventData></Event>'
    )
    event = ev.parse_event_xml(xml)
    assert event is not None
    assert (event.record_id, event.caller_kind, event.user) == (900, "non_domain_source", "jdoe")
    assert event.time == pytest.approx(1795763139.1234567)


@pytest.mark.parametrize(
    ("status", "sub_status", "reason"),
    [
        ("0xc000006d", "0xc000006a", "wrong_password"),
        ("0xC000006D", "0xC0000064", "no_such_user"),
        ("0xc0000234", "0x0", "account_locked_out"),
        ("0xc0000072", None, "account_disabled"),
        ("0xc0000071", None, "password_expired"),
        ("0xc0000193", None, "account_expired"),
        ("0xc000006f", None, "logon_hours"),
        ("0xc0000070", None, "workstation_restriction"),
        ("0xc0000224", None, "must_change_password"),
        ("0xc000006e", "0x0", "account_restriction"),
        ("0xc000006d", "0xc00000aa", "0xc00000aa"),
        ("0x0", None, "success"),
        ("-", None, "unknown"),
    ],
)
def test_ntstatus_reasons(status: str, sub_status: str | None, reason: str) -> None:
    assert ev.status_reason(status, sub_status) == reason


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("0x18", "preauth_failed"),
        ("0x12", "revoked"),
        ("0x17", "password_expired"),
        ("0x25", "clock_skew"),
        ("0x6", "unknown_principal"),
        ("0x00000018", "preauth_failed"),
        ("0x44", "0x44"),
        ("0x0", "success"),
    ],
)
def test_kerberos_reasons(status: str, reason: str) -> None:
    assert ev.kerberos_reason(status) == reason


@pytest.mark.parametrize(
    ("raw", "ip"),
    [
        ("::ffff:10.23.123.11", "10.23.123.11"),
        ("-", ""),
        ("", ""),
        ("::1", "::1"),
        ("10.0.0.5", "10.0.0.5"),
        ("ipv4:127.0.0.1:54599", "127.0.0.1"),
        ("ipv6:::1:5123", "::1"),
        ("FE80::0001", "fe80::1"),
    ],
)
def test_addresses(raw: str, ip: str) -> None:
    assert ev.normalise_ip(raw) == ip


def test_simple_binds_over_tls_are_ldap_simple_too() -> None:
    """A DC that takes simple binds only over TLS logs them as "simple bind/TLS" (recorded from the lab)."""
    lines = (FIXTURES / "samba_auth_json_ldaps.log").read_text().splitlines()
    events = [ev.parse_samba_auth(line, "dc1.lab.example") for line in lines]
    assert [(e.reason, e.protocol) for e in events if e is not None] == [
        ("wrong_password", "ldap_simple"),
        ("account_locked_out", "ldap_simple"),
        ("no_such_user", "ldap_simple"),
    ]


def test_samba_audit_lines_recorded_from_the_lab() -> None:
    lines = (FIXTURES / "samba_auth_json.log").read_text().splitlines()
    parsed = [ev.parse_samba_auth(line, "dc1.lab.example") for line in lines]
    events = [e for e in parsed if e is not None]
    assert len(events) == 14  # two of the lines are authorizations, not authentications
    failures = Counter((e.event_id, e.reason, e.protocol) for e in events if e.failed)
    assert failures == Counter(
        {
            (4625, "wrong_password", "ldap_simple"): 4,
            (4625, "wrong_password", "kerberos"): 1,
            (4625, "wrong_password", "ntlm"): 1,
            (4625, "no_such_user", "ldap_simple"): 1,
            (4625, "no_such_user", "kerberos"): 1,
            (4625, "no_such_user", "ntlm"): 1,
            (4625, "account_locked_out", "ldap_simple"): 1,
            (4625, "account_locked_out", "kerberos"): 1,
            (4625, "account_locked_out", "ntlm"): 1,
        }
    )
    assert {e.ip for e in events} == {"127.0.0.1"}
    assert {e.user for e in events if e.failed} == {"alice", "nosuchuser", "zed"}
    assert all(e.computer == "dc1.lab.example" and e.time for e in events)


def test_winlogbeat_lines_give_what_the_xml_gives() -> None:
    for name in ("4771_mdecrevoisier_kerbrute_user_enum.xml", "4625_4776_mdecrevoisier_openssh_nonexisting_users.xml"):
        xml_events = re.findall(r"<Event[ >].*?</Event>", sample_text(name), re.S)
        from_json = [ev.parse_winlogbeat(winlogbeat_line(x)) for x in xml_events]
        from_xml = [ev.parse_event_xml(x) for x in xml_events]
        assert from_json == from_xml
    assert ev.parse_winlogbeat('{"winlog": {"event_id": "4624", "event_data": {}}}') is not None
    assert ev.parse_winlogbeat('{"winlog": {"event_id": "1102", "event_data": {}}}') is None
    assert ev.parse_event_xml("<Event><System><EventID>1102</EventID></System></Event>") is None


@pytest.mark.parametrize(
    ("parse", "line", "message"),
    [
        (ev.parse_winlogbeat, '{"winlog": {"event_id": "4625"', "not JSON"),
        (ev.parse_winlogbeat, '["not", "an", "object"]', "not a JSON object"),
        (ev.parse_winlogbeat, '{"message": "no winlog"}', "no winlog"),
        (
            lambda line: ev.parse_samba_auth(line, "dc1"),
            '{"type": "Authentication", "Authentication": {}}',
            "without eventId",
        ),
        (ev.parse_event_xml, "<Event><System><EventID>4625</EventID>", "not well-formed"),
        (ev.parse_event_xml, "<Event><EventData/></Event>", "without <System>"),
        (
            ev.parse_event_xml,
            '<Event><System><EventID>4625</EventID><TimeCreated SystemTime="noon"/></System></Event>',
            "not a time",
        ),
    ],
)
def test_malformed_input_says_what(parse: object, line: str, message: str) -> None:
    with pytest.raises(ev.EventParseError, match=message):
        parse(line)  # type: ignore[operator]


# --- Winlogbeat: the document Winlogbeat sends and the one Elastic's ingest pipeline leaves ------------------------

WINLOGBEAT = FIXTURES / "winlogbeat"
# Written by hand from the events' rendered message text in the samples (not by this parser).
WINLOGBEAT_EXPECTED = {
    "security-windows2016_4740_Account_Locked_Out.json": dict(
        event_id=4740, user="elastictest1", reason="locked_out", ip="", workstation="",
        caller_computer="WIN-41OB2LO92CR", computer="win-41ob2lo92cr", record_id=2883,
    ),
    "security-windows2012_4771.json": dict(
        event_id=4771, user="mpuig", reason="revoked", ip="192.168.5.44", workstation="",
        caller_computer="", computer="dc_test2k12.test.saas", record_id=5027836,
    ),
    "security-windows2012_4776.json": dict(
        event_id=4776, user="at_adm", reason="success", ip="", workstation="EQP01777",
        caller_computer="", computer="dc_test2k12.test.saas", record_id=5040222,
    ),
    "security-windows2012r2-logon_4625.json": dict(
        event_id=4625, user="bosch", reason="no_such_user", ip="::1", workstation="VAGRANT-2012-R2",
        caller_computer="", computer="vagrant-2012-r2", record_id=1585,
    ),
}  # fmt: skip


@pytest.mark.parametrize("form", ["raw", "ingested"])
@pytest.mark.parametrize("name", sorted(WINLOGBEAT_EXPECTED))
def test_winlogbeat_raw_and_ingested_forms(form: str, name: str) -> None:
    import json

    (document,) = json.loads((WINLOGBEAT / form / name).read_text(encoding="utf-8"))
    event = ev.parse_winlogbeat(json.dumps(document))
    assert event is not None
    fields = {key: getattr(event, key) for key in WINLOGBEAT_EXPECTED[name]}
    assert fields == WINLOGBEAT_EXPECTED[name]
    assert event.time is not None


def test_winlogbeat_ingested_form_reads_the_same_as_the_raw_form() -> None:
    import json

    for name in WINLOGBEAT_EXPECTED:
        pair = [
            ev.parse_winlogbeat(json.dumps(json.loads((WINLOGBEAT / form / name).read_text())[0]))
            for form in ("raw", "ingested")
        ]
        assert pair[0] == pair[1], name


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE Event [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">' for i in range(1, 10))
    + ']><Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System><EventID>4625</EventID>'
    '</System><EventData><Data Name="TargetUserName">&lol9;</Data></EventData></Event>'
)


@pytest.mark.parametrize(
    "document",
    [
        BILLION_LAUGHS,
        BILLION_LAUGHS.encode(),
        # An external entity: never fetched (no file, no network), the document is refused.
        '<!DOCTYPE Event [<!ENTITY x SYSTEM "file:///etc/passwd">]><Event><System><EventID>4625</EventID></System>'
        '<EventData><Data Name="TargetUserName">&x;</Data></EventData></Event>',
        '<!DOCTYPE Event SYSTEM "http://example.invalid/event.dtd"><Event/>',
    ],
)
def test_entities_and_dtds_are_refused_not_expanded(document: str | bytes) -> None:
    with pytest.raises(ev.EventParseError, match="not well-formed XML"):
        ev.parse_event_xml(document)
    assert [type(e) for e in ev.iter_event_document(document)] == [ev.EventParseError]


def test_an_xml_declaration_in_a_str_is_not_a_problem() -> None:
    xml = sample_events("4740_msdocs_event-4740_xml_block.txt")[0]
    declared = '<?xml version="1.0" encoding="utf-16"?>\n' + xml
    assert ev.parse_event_xml(declared) == ev.parse_event_xml(xml)
