"""Windows Security events 4740, 4625, 4771, 4776 (and Samba's 4624/4625) to records.

Four input forms, all pure: event XML as Windows' ``.ToXml()`` writes it and as python-evtx renders it
(``<EventID Qualifiers="">``, ``SystemTime="2021-12-02 14:54:21.232643+00:00"``), Winlogbeat/ECS JSON lines
(as Winlogbeat sends them, or after Elastic's ingest pipeline moved fields to ``source.*``/``user.*``),
and Samba's ``auth_json_audit`` lines. Well-formed events of other IDs are passed over (None), not errors.
Status codes become named reasons (a bounded label); unknown codes are kept as their hex. Addresses are
normalised (``::ffff:a.b.c.d``, ``-``, Samba's ``ipv4:a.b.c.d:port``).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from exporter.parsers import safexml

EVENT_NS = "{http://schemas.microsoft.com/win/2004/08/events/event}"
LOCKOUT, FAILED_LOGON, KERBEROS_PREAUTH, NTLM_VALIDATION, LOGON = 4740, 4625, 4771, 4776, 4624
FAILURE_EVENTS = (LOCKOUT, FAILED_LOGON, KERBEROS_PREAUTH, NTLM_VALIDATION)

# NTSTATUS codes of failed logons (4625 Status/SubStatus, 4776 Status).
NTSTATUS_REASONS = {
    0x00000000: "success",
    0xC000006A: "wrong_password",
    0xC0000064: "no_such_user",
    0xC0000234: "account_locked_out",
    0xC0000072: "account_disabled",
    0xC0000071: "password_expired",
    0xC0000193: "account_expired",
    0xC000006F: "logon_hours",
    0xC0000070: "workstation_restriction",
    0xC0000224: "must_change_password",
    0xC000006D: "bad_user_or_password",  # generic: the SubStatus says which
    0xC000006E: "account_restriction",  # generic: the SubStatus says which, if any
    0xC000015B: "logon_type_not_granted",
    0xC0000133: "clock_skew",
    0xC0000413: "authentication_firewall",
    0xC000018C: "trust_failure",
    0xC0000192: "netlogon_not_started",
    0xC000005E: "no_logon_servers",
}
_GENERIC_STATUS = {0xC000006D, 0xC000006E}
# Kerberos result codes (4771 Status, RFC 4120).
KERBEROS_REASONS = {
    0x06: "unknown_principal",
    0x12: "revoked",  # disabled, expired, locked out or outside logon hours
    0x17: "password_expired",
    0x18: "preauth_failed",  # the wrong password
    0x25: "clock_skew",
    0x0E: "unsupported_etype",
    0x1F: "integrity_check_failed",
}
# Samba names the NTSTATUS instead of giving its number.
SAMBA_REASONS = {
    "NT_STATUS_OK": "success",
    "NT_STATUS_WRONG_PASSWORD": "wrong_password",
    "NT_STATUS_NO_SUCH_USER": "no_such_user",
    "NT_STATUS_ACCOUNT_LOCKED_OUT": "account_locked_out",
    "NT_STATUS_ACCOUNT_DISABLED": "account_disabled",
    "NT_STATUS_PASSWORD_EXPIRED": "password_expired",
    "NT_STATUS_ACCOUNT_EXPIRED": "account_expired",
    "NT_STATUS_INVALID_LOGON_HOURS": "logon_hours",
    "NT_STATUS_INVALID_WORKSTATION": "workstation_restriction",
    "NT_STATUS_PASSWORD_MUST_CHANGE": "must_change_password",
    "NT_STATUS_LOGON_FAILURE": "bad_user_or_password",
    "NT_STATUS_ACCOUNT_RESTRICTION": "account_restriction",
    "NT_STATUS_LOGON_TYPE_NOT_GRANTED": "logon_type_not_granted",
}


class EventParseError(ValueError):
    """An event that cannot be read; the message says what and, where known, which record."""


# Not frozen: a frozen dataclass's __init__ costs 2 µs for these fields, a quarter of parsing a Winlogbeat line.
# Treated as immutable all the same.
@dataclass(slots=True)
class SecurityEvent:
    event_id: int
    record_id: int | None  # EventRecordID (per log, increasing); None for Samba lines
    time: float | None
    computer: str  # the machine that logged it (a DC), lower case
    user: str  # TargetUserName (lower case; "" when "-")
    reason: str  # named reason, or the status as hex ("0xc00000aa") when unknown
    protocol: str  # kerberos, ntlm, ldap_simple, negotiate, other
    ip: str  # source address, normalised; "" when not logged
    workstation: str  # the client's name as it gave it (4625 WorkstationName, 4776 Workstation)
    caller_computer: str = ""  # 4740: the machine the lockout came from; "" = not a domain computer
    logon_type: str = ""  # 4625: 2 interactive, 3 network, 8 network cleartext, 10 remote interactive, ...
    process: str = ""  # 4625: the process that asked (MSExchangeFrontendTransport.exe: SMTP AUTH on Exchange)

    @property
    def caller_kind(self) -> str:
        """For 4740: a blank caller computer means the source is not a domain machine (a phone, a proxy)."""
        return "domain_computer" if self.caller_computer else "non_domain_source"

    @property
    def failed(self) -> bool:
        return self.event_id != LOGON and self.reason != "success"

    def evidence_detail(self) -> dict[str, str]:
        """What an investigation needs of this event, without the empty fields."""
        fields = {
            "reason": self.reason,
            "protocol": self.protocol,
            "ip": self.ip,
            "workstation": self.workstation,
            "caller_computer": self.caller_computer,
            "logon_type": self.logon_type,
            "process": self.process,
        }
        return {k: v for k, v in fields.items() if v}


# --- helpers -------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)  # a flood repeats a handful of addresses
def normalise_ip(value: str | None) -> str:
    """'::ffff:10.0.0.1' -> '10.0.0.1'; '-', '' -> ''; Samba's 'ipv4:10.0.0.1:5123' -> '10.0.0.1'."""
    text = (value or "").strip()
    if text in ("", "-", "::", "0.0.0.0"):  # noqa: S104 - not a bind address: Windows' "no address"
        return ""
    if text.startswith(("ipv4:", "ipv6:")):
        text = text[5:].rpartition(":")[0].strip("[]")  # drop the family and the port
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text.lower()
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _code(text: str | None) -> int | None:
    value = (text or "").strip()
    if not value or value == "-":
        return None
    try:
        return int(value, 16) if value.lower().startswith("0x") else int(value)
    except ValueError:
        return None


def status_reason(status: str | None, sub_status: str | None = None) -> str:
    """4625/4776: the SubStatus when the Status is the generic 'bad user or password'/'restriction'."""
    code, sub = _code(status), _code(sub_status)
    if code in _GENERIC_STATUS and sub not in (None, 0):
        code = sub
    if code is None:
        return "unknown"
    return NTSTATUS_REASONS.get(code, f"0x{code:08x}")


def kerberos_reason(status: str | None) -> str:
    code = _code(status)
    if code is None:
        return "unknown"
    if code == 0:
        return "success"
    return KERBEROS_REASONS.get(code, f"0x{code:x}")


def _user(value: str | None) -> str:
    text = (value or "").strip()
    return "" if text == "-" else text.lower()


def _name(value: str | None) -> str:
    text = (value or "").strip()
    return "" if text == "-" else text


def parse_system_time(text: str) -> float | None:
    """'2015-08-21T22:06:08.576887500Z' (Windows) or '2021-12-02 14:54:21.232643+00:00' (python-evtx)."""
    value = text.strip()
    if not value:
        return None
    match = re.match(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2})?$", value)
    if not match:
        raise EventParseError(f"TimeCreated: not a time: {text!r}")
    day, clock, fraction, zone = match.groups()
    stamp = datetime.fromisoformat(f"{day}T{clock}").replace(tzinfo=UTC).timestamp()
    if fraction:
        stamp += int(fraction[:9].ljust(9, "0")) / 1e9
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        hours, minutes = int(zone[1:3]), int(zone[-2:])
        stamp -= sign * (hours * 3600 + minutes * 60)
    return stamp


def _protocol_4625(package: str, process: str) -> str:
    text = f"{package} {process}".lower()
    if "kerberos" in text:
        return "kerberos"
    if "ntlm" in text:
        return "ntlm"
    if "negotiate" in text:
        return "negotiate"
    return "other"


def build_event(
    event_id: int, record_id: int | None, time: float | None, computer: str, data: Mapping[str, str]
) -> SecurityEvent:
    """One event from its System fields and EventData, whatever the form it came in."""
    get = data.get
    if event_id == LOCKOUT:
        return SecurityEvent(
            event_id,
            record_id,
            time,
            computer,
            _user(get("TargetUserName")),
            "locked_out",
            "other",
            "",
            "",
            caller_computer=_name(get("TargetDomainName")),
        )
    if event_id == KERBEROS_PREAUTH:
        return SecurityEvent(
            event_id,
            record_id,
            time,
            computer,
            _user(get("TargetUserName")),
            kerberos_reason(get("Status")),
            "kerberos",
            normalise_ip(get("IpAddress")),
            "",
        )
    if event_id == NTLM_VALIDATION:
        return SecurityEvent(
            event_id,
            record_id,
            time,
            computer,
            _user(get("TargetUserName")),
            status_reason(get("Status")),
            "ntlm",
            "",
            _name(get("Workstation")),
        )
    if event_id in (FAILED_LOGON, LOGON):
        reason = status_reason(get("Status"), get("SubStatus")) if event_id == FAILED_LOGON else "success"
        return SecurityEvent(
            event_id,
            record_id,
            time,
            computer,
            _user(get("TargetUserName")),
            reason,
            _protocol_4625(get("AuthenticationPackageName") or "", get("LogonProcessName") or ""),
            normalise_ip(get("IpAddress")),
            _name(get("WorkstationName")),
            logon_type=_name(get("LogonType")),
            process=_name(get("ProcessName")),
        )
    raise EventParseError(f"event {event_id}: not an event this exporter reads")


# --- event XML -------------------------------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag[len(EVENT_NS) :] if tag.startswith(EVENT_NS) else tag.rsplit("}", 1)[-1]


READ_EVENTS = frozenset((*FAILURE_EVENTS, LOGON))
# The elements read, by tag with and without Windows' event namespace: one lookup each, no string work.
_READ_TAGS = {
    tag: name
    for name in ("System", "EventData", "EventID", "EventRecordID", "TimeCreated", "Computer")
    for tag in (name, EVENT_NS + name)
}


def event_from_element(element: Any) -> SecurityEvent | None:
    """The event, or None for a well-formed event of an ID this exporter does not read (4768, 4672, 1102...):
    a Security log export holds those beside the four it reads, and they are not errors."""
    system = None
    data: dict[str, str] = {}
    read = _READ_TAGS.get
    for section in element:
        name = read(section.tag) or _local(section.tag)  # another namespace: the local name decides
        if name == "System":
            system = section
        elif name == "EventData":
            for item in section:
                key = item.get("Name")
                if key:
                    data[key] = item.text or ""
    if system is None:
        raise EventParseError("event XML without <System>")
    fields = {}
    for child in system:
        name = read(child.tag) or _local(child.tag)
        if name in _READ_TAGS:
            fields[name] = child
    event_id = _code(fields["EventID"].text if "EventID" in fields else None)
    if event_id is None:
        raise EventParseError("event XML without an EventID")
    if event_id not in READ_EVENTS:
        return None
    record_id = _code(fields["EventRecordID"].text) if "EventRecordID" in fields else None
    created = fields.get("TimeCreated")
    time = parse_system_time(created.get("SystemTime", "")) if created is not None else None
    computer = (fields["Computer"].text or "").strip().lower() if "Computer" in fields else ""
    try:
        return build_event(event_id, record_id, time, computer, data)
    except EventParseError as exc:
        raise EventParseError(f"record {record_id}: {exc}") from None


def parse_event_xml(text: str | bytes) -> SecurityEvent | None:
    """One ``<Event>`` as ``.ToXml()`` returns it; None for an event of an ID this exporter does not read."""
    try:
        root = safexml.parse(text)
    except safexml.XmlError as exc:
        raise EventParseError(f"not well-formed XML: {exc}") from None
    if _local(root.tag) != "Event":
        raise EventParseError(f"expected <Event>, found <{_local(root.tag)}>")
    return event_from_element(root)


def iter_event_document(text: str | bytes) -> Iterator[SecurityEvent | EventParseError]:
    """An exported ``<Events>`` document (wevtutil qe /f:xml, python-evtx): each event it reads, or its error;
    events of other IDs are passed over."""
    try:
        root = safexml.parse(text)
    except safexml.XmlError as exc:
        yield EventParseError(f"not well-formed XML: {exc}")
        return
    events = [root] if _local(root.tag) == "Event" else [e for e in root if _local(e.tag) == "Event"]
    for element in events:
        try:
            event = event_from_element(element)
        except EventParseError as exc:
            yield exc
        else:
            if event is not None:
                yield event


# --- JSON lines ------------------------------------------------------------------------------------------------


def _json(line: str | bytes) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EventParseError(f"not JSON: {exc.msg if isinstance(exc, json.JSONDecodeError) else exc}") from None
    if not isinstance(value, dict):
        raise EventParseError("not a JSON object")
    return value


def _iso_time(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise EventParseError(f"not a time: {text!r}") from None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def parse_winlogbeat(line: str | bytes) -> SecurityEvent | None:
    """A Winlogbeat (ECS) JSON line; None for events of other IDs."""
    doc = _json(line)
    winlog = doc.get("winlog")
    if not isinstance(winlog, dict):
        raise EventParseError("no winlog object")
    raw_id = winlog.get("event_id", "")
    event_id = raw_id if type(raw_id) is int else _code(str(raw_id))
    if event_id is None:
        raise EventParseError("winlog.event_id missing")
    if event_id not in READ_EVENTS:
        return None
    record = winlog.get("record_id")
    data = winlog.get("event_data") or {}
    if not isinstance(data, dict):
        raise EventParseError("winlog.event_data is not an object")
    computer = str(winlog.get("computer_name") or (doc.get("host") or {}).get("name") or "").lower()
    fields: dict[str, str] = data
    if not all(type(v) is str for v in data.values()):
        fields = {k: v if type(v) is str else str(v) for k, v in data.items()}
    # Only Elastic's ingest pipeline (or Winlogbeat's own security processor) writes these ECS objects.
    paths = _ECS_PATHS[event_id] if ("source" in doc or "user" in doc or "process" in doc) else ()
    for name, path in paths:
        present = fields.get(name)
        # Winlogbeat as it sends has them all in event_data; after Elastic's pipeline some are elsewhere.
        if (present is None or present.strip() in ("", "-")) and (value := _at(doc, path)):
            fields = fields if fields is not data else dict(data)  # never change the caller's document
            fields[name] = value
    return build_event(
        event_id,
        record if type(record) is int else _code(str(record)) if record is not None else None,
        _iso_time(doc.get("@timestamp")),
        computer,
        fields,
    )


def _blank(value: str | None) -> bool:
    return value is None or value.strip() in ("", "-")


def _at(doc: Mapping[str, Any], path: tuple[str, ...]) -> str:
    value: Any = doc
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return "" if value is None or isinstance(value, (dict, list)) else str(value)


def _ecs_paths(event_id: int) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """EventData fields Elastic's ingest pipeline moves out of ``winlog.event_data`` into ECS fields.

    The pipeline renames IpAddress/IpPort to source.ip/source.port and the client's name to source.domain,
    and ProcessName to process.executable. For 4740 ``user.name`` is the *subject* (the DC's machine account):
    the locked-out account and its caller computer are ``user.target.*``.
    """
    if event_id == LOCKOUT:
        pairs = {"TargetUserName": "user.target.name", "TargetDomainName": "user.target.domain"}
    else:
        pairs = {
            "TargetUserName": "user.name",
            "IpAddress": "source.ip",
            "IpPort": "source.port",
            "WorkstationName" if event_id != NTLM_VALIDATION else "Workstation": "source.domain",
            "ProcessName": "process.executable",
        }
    return tuple((name, tuple(path.split("."))) for name, path in pairs.items())


_ECS_PATHS = {event_id: _ecs_paths(event_id) for event_id in READ_EVENTS}


def _samba_protocol(service: str, auth: str) -> str:
    if "kerberos" in service.lower() or "kerberos" in auth.lower() or "ENC-TS" in auth:
        return "kerberos"
    if auth.lower().startswith("simple bind"):  # "simple bind", or "simple bind/TLS" over LDAPS and StartTLS
        return "ldap_simple"
    if "ntlm" in auth.lower():
        return "ntlm"
    return "other"


def _client_workstation(workstation: str, dc: str) -> str:
    return "" if workstation.lower() == dc.lower().split(".", 1)[0] else workstation


_NTSTATUS_NAME = re.compile(r"NT_STATUS_[A-Z0-9_]{1,54}")


def samba_reason(status: str) -> str:
    """A named reason, else the NTSTATUS name without its prefix; anything else is no label value (found by
    fuzzing: a status of "<nt_status_wrong_password" came out as a reason as it was)."""
    if status in SAMBA_REASONS:
        return SAMBA_REASONS[status]
    if _NTSTATUS_NAME.fullmatch(status):
        return status.lower().removeprefix("nt_status_")
    return "unknown_status"


def parse_samba_auth(line: str | bytes, dc: str) -> SecurityEvent | None:
    """A Samba auth_json_audit line; None for records that are not authentications (authorizations, ...)."""
    doc = _json(line)
    if doc.get("type") != "Authentication":
        return None
    auth = doc.get("Authentication")
    if not isinstance(auth, dict):
        raise EventParseError("Authentication is not an object")
    event_id = _code(str(auth.get("eventId", "")))
    status = str(auth.get("status") or "")
    if event_id is None or not status:
        raise EventParseError("Authentication without eventId or status")
    if event_id not in READ_EVENTS:
        return None  # another record kind (found by fuzzing: a damaged "eventId":625 became a label value)
    account = str(auth.get("clientAccount") or auth.get("mappedAccount") or "")
    user = account.split("@")[0].split("\\")[-1].lower()
    service, description = str(auth.get("serviceDescription") or ""), str(auth.get("authDescription") or "")
    return SecurityEvent(
        event_id=event_id,
        record_id=None,
        time=_iso_time(str(doc.get("timestamp") or "").replace("+0000", "+00:00")),
        computer=dc,
        user=user,
        reason=samba_reason(status),
        protocol=_samba_protocol(service, description),
        ip=normalise_ip(str(auth.get("remoteAddress") or "")),
        # For an LDAP bind Samba names itself as the workstation: that is no client's name.
        workstation=_client_workstation(str(auth.get("workstation") or ""), dc),
    )
