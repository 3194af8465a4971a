"""Exchange log parsing on real files: bad lines, a #Fields: change mid-file, overlong and unfinished lines."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from exporter.collectors.exchange_logs import ExchangeLogsCollector
from exporter.config import parse_config
from exporter.parsers import iis
from exporter.parsers.exchange_logs import AuthFailure, FieldsError, SmtpCounts, fields_index, rows
from exporter.state import StateStore
from lab.exchange_logs import IIS_FIELDS, SMTP_FIELDS
from tests.helpers import samples, value

HEADER = (
    "#Software: Microsoft Internet Information Services 10.0\r\n#Version: 1.0\r\n#Date: 2026-11-27 07:00:00\r\n"
    f"#Fields: {IIS_FIELDS}\r\n"
)


def line(stem: str, query: str, status: str, sub: str, win32: str, extra: str = "") -> str:
    return (
        f"2026-11-27 07:00:01 10.0.0.10 POST {stem} {query} 443 - 203.0.113.7 Apple-iPhone/1 - "
        f"{status} {sub} {win32} 15{extra}\r\n"
    )


def collector(tmp_path: Path, state: StateStore) -> ExchangeLogsCollector:
    config = parse_config(f"""
exchange_logs:
  - server: EX1
    iis: ["{tmp_path}/W3SVC1/*.log"]
    smtp_receive: ["{tmp_path}/SmtpReceive/*.LOG"]
    start_at: beginning
    max_line_bytes: 2048
""").exchange_logs[0]
    return ExchangeLogsCollector(config, state)


async def test_bad_lines_a_fields_change_overlong_and_unfinished_lines(tmp_path: Path) -> None:
    (tmp_path / "W3SVC1").mkdir()
    (tmp_path / "SmtpReceive").mkdir()
    eas = "/Microsoft-Server-ActiveSync/default.eas"
    query = "User=jdoe&DeviceId=ApplF17XYZ&DeviceType=iPhone&Cmd=Sync"
    web = tmp_path / "W3SVC1" / "u_ex261127.log"
    web.write_text(
        "\ufeff"
        + HEADER
        + line(eas, query, "401", "1", "1326")
        + line(eas, query, "401", "1", "1909")
        + line("/owa/", "-", "200", "0", "0")
        + "2026-11-27 07:00:02 10.0.0.10 GET /owa/ too few fields\r\n"  # malformed
        + line("/ews/Exchange.asmx", "-", "abc", "0", "0")  # garbage status code: never a label
        + line("/owa/", "x=" + "y" * 3000, "200", "0", "0")  # overlong
        + f"#Fields: {IIS_FIELDS} X-Forwarded-For\r\n"  # IIS restarted with a new field
        + line(eas, query, "401", "1", "1909", " 198.51.100.9")
        + line("/mapi/emsmdb/", "-", "200", "0", "0", " -")
        + line("/owa/", "-", "200", "0", "0")[:40],
        encoding="utf-8",
    )  # unfinished last line
    smtp = tmp_path / "SmtpReceive" / "RECV2026112707-1.LOG"
    smtp.write_text(
        f"#Software: Microsoft Exchange Server\r\n#Fields: {SMTP_FIELDS}\r\n"
        "2026-11-27T07:00:01.000Z,EX1\\Default Frontend EX1,08DD01,0,10.0.0.10:25,203.0.113.7:5100,+,,\r\n"
        "2026-11-27T07:00:01.001Z,EX1\\Default Frontend EX1,08DD01,1,10.0.0.10:25,203.0.113.7:5100,>,"
        "421 4.3.2 Service not active,\r\n"
        "2026-11-27T07:00:01.002Z,too,few\r\n"
        "#Fields: date-time,session-id\r\n"  # a header without the columns needed
        "2026-11-27T07:00:01.003Z,08DD02\r\n"
    )
    # The clock stands just after the lines were written, whatever the date the test runs on.
    state = StateStore(tmp_path / "state.db", clock=lambda: datetime(2026, 11, 27, 7, 1, tzinfo=UTC).timestamp())
    first = collector(tmp_path, state)
    flat = samples(await first.collect())
    labels = {"server": "ex1"}
    assert (
        value(
            flat,
            "exchange_http_unauthorized_total",
            protocol="activesync",
            substatus="1",
            win32_status="1326",
            reason="logon_failure",
            **labels,
        )
        == 1
    )
    assert (
        value(
            flat,
            "exchange_http_unauthorized_total",
            protocol="activesync",
            substatus="1",
            win32_status="1909",
            reason="account_locked_out",
            **labels,
        )
        == 2
    )
    assert value(flat, "exchange_http_requests_total", protocol="owa", status="200", **labels) == 1
    assert value(flat, "exchange_http_requests_total", protocol="mapi", status="200", **labels) == 1
    assert value(flat, "exchange_log_malformed_lines_total", log="iis", **labels) == 2
    assert value(flat, "exchange_log_overlong_lines_total", log="iis", **labels) == 1
    # The device that failed with 1326 and then 1909, its last address taken from X-Forwarded-For.
    assert (
        value(
            flat,
            "exchange_activesync_device_locking_out",
            user="jdoe",
            device_id="ApplF17XYZ",
            device_type="iPhone",
            **labels,
        )
        == 1
    )
    assert (
        value(
            flat,
            "exchange_activesync_device_failures",
            user="jdoe",
            device_id="ApplF17XYZ",
            device_type="iPhone",
            client_ip="198.51.100.9",
            win32_status="1909",
            **labels,
        )
        == 3
    )
    assert (
        value(
            flat,
            "exchange_smtp_responses_total",
            connector="EX1\\Default Frontend EX1",
            direction="receive",
            code="421",
            enhanced_code="4.3.2",
            **labels,
        )
        == 1
    )
    assert value(flat, "exchange_log_malformed_lines_total", log="smtp_receive", **labels) == 2
    # The device's 401s as evidence for jdoe: one row per distinct failure, newest first, with its count.
    evidence = [
        (e.kind, e.detail["win32_status"], e.detail["count"], e.detail["client_ip"]) for e in state.evidence_for("jdoe")
    ]
    assert sorted(evidence) == [
        ("401", "1326", "1", "203.0.113.7"),
        ("401", "1909", "1", "198.51.100.9"),
        ("401", "1909", "1", "203.0.113.7"),
    ]
    assert {(e.detail["device_id"], e.detail["user_agent"]) for e in state.evidence_for("jdoe")} == {
        ("ApplF17XYZ", "Apple-iPhone/1")
    }
    assert {e.time for e in state.evidence_for("jdoe")} == {datetime(2026, 11, 27, 7, 0, 1, tzinfo=UTC).timestamp()}
    await first.close()
    # The unfinished line is counted once finished, by a new collector resuming from the stored checkpoint.
    with web.open("a", encoding="utf-8") as out:
        out.write(line("/owa/", "-", "200", "0", "0", " -")[40:])
    second = collector(tmp_path, state)
    flat = samples(await second.collect())
    assert value(flat, "exchange_http_requests_total", protocol="owa", status="200", **labels) == 2
    assert (
        value(
            flat,
            "exchange_http_unauthorized_total",
            protocol="activesync",
            substatus="1",
            win32_status="1909",
            reason="account_locked_out",
            **labels,
        )
        == 2
    )
    assert len(state.evidence_for("jdoe")) == 3  # nothing read twice after the restart
    await second.close()


def test_layout_needs_the_counted_fields_in_order() -> None:
    layout = iis.Layout.from_directive(f"#Fields: {IIS_FIELDS} X-Forwarded-For")
    assert (layout.stem, layout.status, layout.after, layout.forwarded_for) == (4, 11, 2, 15)
    with pytest.raises(iis.FieldsError, match="without sc-win32-status"):
        iis.Layout.from_directive("#Fields: date time cs-uri-stem sc-status sc-substatus")
    with pytest.raises(iis.FieldsError, match="follow each other"):
        iis.Layout.from_directive("#Fields: cs-uri-stem sc-status time-taken sc-substatus sc-win32-status")
    with pytest.raises(FieldsError, match="without event-id"):
        fields_index("#Fields: date-time,source", ("event-id", "source"))


@pytest.mark.parametrize(
    ("stem", "protocol"),
    [
        (b"/Microsoft-Server-ActiveSync/default.eas", "activesync"),
        (b"/OWA/auth.owa", "owa"),
        (b"/ews/exchange.asmx", "ews"),
        (b"/autodiscover/autodiscover.xml", "autodiscover"),
        (b"/mapi/nspi/", "mapi"),
        (b"/rpc/rpcproxy.dll", "rpc"),
        (b"/ecp/", "ecp"),
        (b"/powershell", "powershell"),
        (b"/OAB/x/oab.xml", "oab"),
        (b"/wp-login.php", "other"),
        (b"/", "other"),
    ],
)
def test_protocols(stem: bytes, protocol: str) -> None:
    assert iis.protocol_of(stem) == protocol


def test_unauthorized_line_in_full() -> None:
    layout = iis.Layout.from_directive(f"#Fields: {IIS_FIELDS}")
    entry = iis.parse_unauthorized(
        line(
            "/Microsoft-Server-ActiveSync/default.eas",
            "User=CONTOSO%5Cjdoe&DeviceId=Appl1&DeviceType=iPad&Cmd=Ping",
            "401",
            "1",
            "1326",
        )
        .rstrip("\r\n")
        .encode(),
        layout,
    )
    assert entry == iis.Unauthorized(
        "activesync", "1326", "contoso\\jdoe", "Appl1", "iPad", "203.0.113.7", "2026-11-27 07:00:01"
    )
    assert iis.win32_reason("1330") == "password_expired" and iis.win32_reason("4242") == "other"


LOGS = Path(__file__).resolve().parent.parent / "fixtures" / "exchange_logs"


def count_receive_log(text: str) -> SmtpCounts:
    counts = SmtpCounts("receive")
    index: dict[str, int] = {}
    data: list[bytes] = []
    for raw in text.splitlines():
        if raw.startswith("#Fields:"):
            index = fields_index(raw, SmtpCounts.REQUIRED)
        elif not raw.startswith("#"):
            data.append(raw.encode())
    counts.count(rows(data), index)
    return counts


def test_an_auth_failure_logged_only_as_context_is_counted_once() -> None:
    # A real session: AUTH LOGIN, 334, then "Inbound AUTH LOGIN failed because of LogonDenied" twice (same
    # sequence number) and no 535 line: one failed AUTH, no success.
    counts = count_receive_log((LOGS / "artefacts_help_RECV2023011116-1.LOG").read_text())
    assert counts.auth == {("SERVER-HOSTNAME\\Default Frontend SERVER-HOSTNAME", "failure"): 1}
    # For the evidence store: who failed (the "User Name:" line that follows), from where, when the attempt began.
    assert counts.take_auth_failures() == [
        AuthFailure(
            "username@domain.com",
            datetime(2023, 1, 11, 16, 0, 3, 115000, tzinfo=UTC).timestamp(),
            "SERVER-HOSTNAME\\Default Frontend SERVER-HOSTNAME",
            "95.10.20.33",
            "LOGIN",
        )
    ]
    assert counts.take_auth_failures() == []
    assert counts.tls == {("SERVER-HOSTNAME\\Default Frontend SERVER-HOSTNAME", "success"): 1}
    assert counts.malformed == 0


def test_a_535_after_the_context_line_is_not_a_second_failure() -> None:
    real = (LOGS / "artefacts_help_RECV2023011116-1.LOG").read_text().splitlines()
    session = real[-1].split(",")[:6]
    # What Exchange writes next when it answers the attempt, then a second attempt that fails with a 535 only.
    more = [
        ",".join([*session[:3], "16", *session[4:6], ">", "535 5.7.3 Authentication unsuccessful", ""]),
        ",".join([*session[:3], "17", *session[4:6], "<", "AUTH LOGIN", ""]),
        ",".join([*session[:3], "18", *session[4:6], ">", "535 5.7.3 Authentication unsuccessful", ""]),
        ",".join([*session[:3], "19", *session[4:6], "-", "", "Remote(Disconnected)"]),
    ]
    counts = count_receive_log("\n".join(real + more))
    assert counts.auth == {("SERVER-HOSTNAME\\Default Frontend SERVER-HOSTNAME", "failure"): 2}
    assert counts.responses[("SERVER-HOSTNAME\\Default Frontend SERVER-HOSTNAME", "535", "5.7.3")] == 2


def test_real_activesync_lines_name_the_user_device_address_and_client() -> None:
    """Public lines in Exchange's front-end layout and in its back end's (X-Forwarded-For: the phone comes first)."""
    found: list[tuple[str, ...] | str] = []
    layout = None
    for raw in (LOGS / "activesync_iis_public.log").read_bytes().splitlines():
        if raw.startswith(b"#Fields:"):
            layout = iis.Layout.from_directive(raw.decode())
            continue
        assert layout is not None
        parts = raw.split(b" ")
        entry = iis.unauthorized_from_fields(iis.detail_key(parts, layout))
        found.append((entry.protocol, entry.user, entry.device_id, entry.device_type, entry.client_ip))
        found.append(iis.user_agent(parts, layout))
    assert found == [
        ("activesync", "xxxxxxx\\seanryan", "N273TC3QE567H90G6LH4LTK89G", "iPad", "192.168.124.83"),
        "Apple-iPad7C2/1805.212",
        # A web shell's stem with an ActiveSync query (from a hunt): not counted as ActiveSync.
        ("other", "abcd\\ssssss", "", "", "52.125.129.23"),
        "Outlook-iOS-Android/1.0",
        ("activesync", "domain\\user", "JUQGGDFCDD29R3H003TJA63E10", "iPhone", "44.29.25.201"),
        "Apple-iPhone11C6/1905.258",
    ]
