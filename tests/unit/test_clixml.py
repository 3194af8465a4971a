"""The CLIXML parser against the real Export-Clixml samples and the corners of the format."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from exporter.parsers.clixml import (
    ClixmlError,
    CmdletDataError,
    PSObject,
    integer_of,
    parse_datetime,
    parse_document,
    parse_duration,
    parse_object,
    unescape,
)

SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "exchange_cmdlets"


def sample(name: str) -> list[PSObject]:
    return parse_document((SAMPLES / name).read_bytes())


@pytest.mark.parametrize(
    ("name", "count", "type_name"),
    [
        (
            "E16_Exchange_GetServerComponentState.xml",
            35,
            "Microsoft.Exchange.Data.Directory.Management.ServerComponentStatePresentationObject",
        ),
        ("E16_Exchange_GetExchangeServer.xml", 1, "Microsoft.Exchange.Data.Directory.Management.ExchangeServer"),
        (
            "E19_Exchange_GetExchangeCertificate.xml",
            3,
            "Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeCertificate",
        ),
        (
            "E19_Exchange_GetHybridConfiguration.xml",
            1,
            "Microsoft.Exchange.Data.Directory.SystemConfiguration.HybridConfiguration",
        ),
        (
            "E19_Exchange_GetReceiveConnector.xml",
            5,
            "Microsoft.Exchange.Data.Directory.SystemConfiguration.ReceiveConnector",
        ),
        (
            "E19_Exchange_GetSendConnector.xml",
            1,
            "Microsoft.Exchange.Data.Directory.SystemConfiguration.SmtpSendConnectorConfig",
        ),
        ("Shared_Tests_E19CU11AdminDisplayVersion.xml", 1, "Microsoft.Exchange.Data.ServerVersion"),
    ],
)
def test_every_sample_parses(name: str, count: int, type_name: str) -> None:
    objects = sample(name)
    assert len(objects) == count
    assert all(isinstance(o, PSObject) and o.type_names[0] == type_name for o in objects)


def test_component_state_object_in_detail() -> None:
    first = sample("E16_Exchange_GetServerComponentState.xml")[0]
    assert first["Component"] == "ServerWideOffline"
    # An enum: ToString carries the name, the I32 the value.
    assert str(first["State"]) == "Active" and first["State"].value == 1
    assert first["ServerWideOfflineIsOffline"] is False
    (local,) = first["LocalStates"]
    assert local["Requester"] == "Functional" and local["State"] == "Active"
    assert local["Timestamp"] == datetime(2021, 9, 28, 17, 20, 23, 569272, tzinfo=UTC)
    # A later object's <TNRef> resolves to the type list declared by an earlier one.
    assert local.type_names[0].endswith("+RequesterDetails")


def test_references_resolve_to_the_same_object() -> None:
    connectors = sample("E19_Exchange_GetReceiveConnector.xml")
    # Later connectors refer back (<Ref RefId=...>) to values serialised with the first.
    assert all(str(c["Server"]) == "WIN-CTD3L0RGEN4" for c in connectors)


def test_escapes_and_containers() -> None:
    obj = parse_object(
        '<Obj RefId="0"><TN RefId="0"><T>Demo</T></TN><ToString>a_x000D__x000A_b</ToString><Props>'
        '<S N="Text">line_x000A_two _xD83D__xDE00_</S><Obj N="Map" RefId="1"><DCT><En><S N="Key">k</S>'
        '<I32 N="Value">7</I32></En></DCT></Obj><Obj N="Items" RefId="2"><LST><S>x</S><Ref RefId="1" /></LST></Obj>'
        '<TS N="Span">PT1H2M3.5S</TS><Nil N="Nothing" /><BA N="Bytes">AAE=</BA><B N="Flag">true</B>'
        '<Version N="V">15.2.986.5</Version></Props></Obj>'
    )
    assert obj.to_string == "a\r\nb"
    assert obj["Text"] == "line\ntwo \U0001f600"
    assert obj["Map"] == {"k": 7}
    assert obj["Items"] == ["x", {"k": 7}]
    assert obj["Span"] == 3723.5
    assert obj["Nothing"] is None and obj["Bytes"] == b"\x00\x01" and obj["Flag"] is True
    assert obj["V"] == "15.2.986.5"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-09-28T17:20:23.4772745Z", datetime(2021, 9, 28, 17, 20, 23, 477274, tzinfo=UTC)),
        ("2021-09-28T12:20:23-05:00", datetime(2021, 9, 28, 12, 20, 23, tzinfo=timezone(timedelta(hours=-5)))),
        ("2021-09-28T17:20:23", datetime(2021, 9, 28, 17, 20, 23, tzinfo=UTC)),
        (
            "2021-09-28T17:20:23.5+01:30",
            datetime(2021, 9, 28, 17, 20, 23, 500000, tzinfo=timezone(timedelta(hours=1, minutes=30))),
        ),
    ],
)
def test_datetimes(text: str, expected: datetime) -> None:
    assert parse_datetime(text) == expected


@pytest.mark.parametrize(("text", "seconds"), [("PT9S", 9.0), ("P1DT2H", 93600.0), ("-PT0.5S", -0.5), ("PT0S", 0)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_unescape_leaves_plain_text_alone() -> None:
    assert unescape("_x_not_an_escape") == "_x_not_an_escape"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<Obj RefId='0'><Props><S N='a'>x</Props></Obj>", "not well-formed XML"),
        ("<Obj RefId='0'><Props><Zz N='a'>x</Zz></Props></Obj>", "unknown element <Zz>"),
        ("<Obj RefId='0'><Props><I32 N='a'>seven</I32></Props></Obj>", "I32: not an integer"),
        ("<Obj RefId='0'><Props><Ref N='a' RefId='9' /></Props></Obj>", "RefId '9' does not name"),
        ("<Obj RefId='0'><Props><DT N='a'>yesterday</DT></Props></Obj>", "DT: not a date and time"),
        ('<!DOCTYPE x [<!ENTITY e "boom">]><S>&e;</S>', "not well-formed XML"),  # no entity expansion
    ],
)
def test_bad_input_says_what_and_where(text: str, message: str) -> None:
    with pytest.raises(ClixmlError, match=message):
        parse_object(text)


def test_document_must_be_objs() -> None:
    with pytest.raises(ClixmlError, match="expected <Objs>"):
        parse_document("<Obj RefId='0' />")


def test_integer_of_takes_whole_numbers_only_and_names_what_is_wrong() -> None:
    assert integer_of(7, "Get-X", "Count") == 7
    assert integer_of(" -12 ", "Get-X", "Count") == -12
    assert integer_of(None, "Get-X", "Count", missing=0) == 0
    assert integer_of("", "Get-X", "Count", missing=3) == 3
    for bad in (None, "", True, "1.5", "12 items"):
        with pytest.raises(CmdletDataError, match=r"^Get-X DB01: property Count is not a number"):
            integer_of(bad, "Get-X", "Count", "DB01")


def test_the_characters_xml_cannot_hold_come_back_from_their_escapes() -> None:
    # U+FFFE and U+FFFF, a C0 control, an astral character as its two surrogates, and an escaped "_x".
    text = "<S>a_xFFFF_b_xFFFE__x0007__xD83D__xDE00__x005F_x0041_</S>"
    assert parse_object(text) == "a\uffffb\ufffe\x07\U0001f600_x0041_"
