"""The lab DCs' Security logs, answered over the PSRP endpoint as Get-WinEvent does.

The logs hold the real event XML samples (tests/fixtures/winevent), each DC's in EventRecordID order; tests
and the demo append more events cloned from them (a new EventRecordID, time, account or caller). The endpoint
answers ``Get-WinEvent -LogName Security [-FilterXPath ...] [-MaxEvents N] [-Oldest] | ForEach-Object
-MemberName ToXml`` with each event's XML as a string, and "no events" with Get-WinEvent's own error.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import secrets
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from defusedxml import ElementTree as SafeET

from lab.kerberos import LabKerberos
from lab.pki import winrm_tls
from lab.psrp_endpoint import EndpointGroup, Invocation, Output, PsrpEndpoint
from lab.winrm_auth import AuthPolicy

SAMPLES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "winevent"
SERVICE_USER = "svc_events"
# Which sample files each lab DC's Security log holds: the PDC has the lockout and the Kerberos failures.
DC_SAMPLES = {
    "dc1.lab.example": (
        "4740_msdocs_event-4740_xml_block.txt",
        "4771_mdecrevoisier_kerberos_bruteforce_valid_user.xml",
        "4771_mdecrevoisier_kerbrute_user_enum.xml",
        "4776_mdecrevoisier_sam_the_admin.xml",
    ),
    "dc2.lab.example": (
        "4625_4776_mdecrevoisier_local_bruteforce.xml",
        "4625_4776_mdecrevoisier_openssh_nonexisting_users.xml",
        "4625_mdecrevoisier_account_restriction.xml",
        "4625_mdecrevoisier_openssh_valid_users.xml",
    ),
}
ADDRESSES = {"dc1.lab.example": "127.0.0.2", "dc2.lab.example": "127.0.0.6"}
_EVENT = re.compile(r"<Event[ >].*?</Event>", re.S)
_RECORD = re.compile(r"<EventRecordID>(\d+)</EventRecordID>")
_EVENT_ID = re.compile(r"<EventID[^>]*>(\d+)</EventID>")


def sample_events(name: str) -> list[str]:
    """The <Event> elements of a sample file, verbatim (the 4740 one without its browser-view markers)."""
    text = (SAMPLES / name).read_text(encoding="utf-8-sig")
    if name.endswith(".txt"):
        text = "\n".join(re.sub(r"^\s*-?\s", "", line) for line in text.splitlines())
    return _EVENT.findall(text)


def winlogbeat_line(xml: str) -> str:
    """An event as Winlogbeat ships it (ECS: winlog.event_id as a string, event_data, computer_name, record_id)."""
    root = SafeET.fromstring(xml)
    ns = {"e": "http://schemas.microsoft.com/win/2004/08/events/event"}
    data = {d.get("Name"): d.text or "" for d in root.findall("e:EventData/e:Data", ns)}
    system = root.find("e:System", ns)
    created = system.find("e:TimeCreated", ns) if system is not None else None
    if system is None or created is None:
        raise ValueError("an event without System/TimeCreated")
    computer = system.findtext("e:Computer", namespaces=ns)
    event_id = system.findtext("e:EventID", namespaces=ns)
    return json.dumps(
        {
            "@timestamp": (created.get("SystemTime") or "").replace(" ", "T"),
            "host": {"name": computer},
            "event": {"code": event_id, "provider": "Microsoft-Windows-Security-Auditing"},
            "winlog": {
                "channel": "Security",
                "computer_name": computer,
                "event_id": event_id,
                "event_data": data,
                "record_id": int(system.findtext("e:EventRecordID", namespaces=ns) or 0),
            },
        }
    )


def _clixml_string(text: str) -> str:
    """A string as PowerShell serialises it: XML-escaped, CR and LF as _x000D_ and _x000A_."""
    return "<S>" + escape(text).replace("\r", "_x000D_").replace("\n", "_x000A_") + "</S>"


@dataclass(frozen=True)
class Record:
    record_id: int
    event_id: int
    xml: str


class LabEventLog:
    """One DC's Security log; thread-safe."""

    def __init__(self, events: list[str]) -> None:
        self._lock = threading.Lock()
        records = [Record(int(_RECORD.findall(x)[0]), int(_EVENT_ID.findall(x)[0]), x) for x in events]
        self.records = sorted(records, key=lambda r: r.record_id)

    def append_clone(self, event_id: int, **data: str) -> Record:
        """A new event cloned from the first sample of ``event_id``: next EventRecordID, now, given Data fields."""
        with self._lock:
            template = next(r for r in self.records if r.event_id == event_id).xml
            record_id = (self.records[-1].record_id if self.records else 0) + 1
            xml = _RECORD.sub(f"<EventRecordID>{record_id}</EventRecordID>", template)
            now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00:00")
            xml = re.sub(r'SystemTime="[^"]*"', f'SystemTime="{now}"', xml)
            for name, value in data.items():
                xml = re.sub(rf'(<Data Name="{name}">)[^<]*(</Data>)', rf"\g<1>{escape(value)}\g<2>", xml)
            record = Record(record_id, event_id, xml)
            self.records.append(record)
            return record

    def append_raw(self, event_id: int, xml: str) -> Record:
        """An event whose XML is given as is (a test's malformed record), with the next EventRecordID."""
        with self._lock:
            record = Record((self.records[-1].record_id if self.records else 0) + 1, event_id, xml)
            self.records.append(record)
            return record

    def select(self, event_ids: set[int] | None, after: int, oldest: bool, limit: int | None) -> list[Record]:
        with self._lock:
            chosen = [r for r in self.records if r.record_id > after and (not event_ids or r.event_id in event_ids)]
        if not oldest:
            chosen.reverse()
        return chosen[:limit] if limit else chosen

    def __call__(self, invocation: Invocation) -> Output:
        commands = invocation.commands
        names = [name.lower() for name, _, _ in commands]
        if not names or names[0] != "get-winevent":
            return Output(
                failure=(f"The lab's DC answers only Get-WinEvent, not {names}.", "LabPipeline", "InvalidOperation")
            )
        params = {str(k).lower(): v for k, v in commands[0][2] if k is not None}
        to_xml = (
            len(commands) == 2
            and names[1] == "foreach-object"
            and any(str(k).lower() == "membername" and str(v) == "ToXml" for k, v in commands[1][2])
        )
        if not to_xml:
            return Output(
                failure=(
                    "The lab's DC sends events only as ToXml() strings: pipe into ForEach-Object -MemberName ToXml.",
                    "LabPipeline",
                    "InvalidOperation",
                )
            )
        if str(params.get("logname", "")).lower() != "security":
            return Output(failure=("The lab's DC has only the Security log.", "LabPipeline", "InvalidOperation"))
        xpath = str(params.get("filterxpath", ""))
        ids = {int(i) for i in re.findall(r"EventID=(\d+)", xpath)}
        after = int(m.group(1)) if (m := re.search(r"EventRecordID>(\d+)", xpath)) else 0
        limit = int(params["maxevents"]) if "maxevents" in params else None
        records = self.select(ids or None, after, bool(params.get("oldest")), limit)
        if not records:
            return Output(
                error=(
                    "No events were found that match the specified selection criteria.",
                    "NoMatchingEventsFound,Microsoft.PowerShell.Commands.GetWinEventCommand",
                    "ObjectNotFound",
                )
            )
        return Output([_clixml_string(r.xml) for r in records])


HARDENED = AuthPolicy({"/wsman": ("kerberos", "ntlm")})  # a DC's WinRM: Negotiate, encrypted, no Basic


def dc_endpoint(
    dc: str,
    port: int,
    log: LabEventLog,
    users: dict[str, str],
    policy: AuthPolicy | None,
    tls: ssl.SSLContext | None = None,
    certificate: bytes | None = None,
) -> PsrpEndpoint:
    """One DC's WinRM listener with its Security log (``policy`` None: Basic, unencrypted)."""
    return PsrpEndpoint(
        dc,
        ADDRESSES[dc],
        port,
        log,
        users,
        tls=tls,
        paths={"/wsman": "Microsoft.PowerShell"},
        auth=policy,
        certificate=certificate,
    )


def sample_log(dc: str) -> LabEventLog:
    return LabEventLog([x for name in DC_SAMPLES[dc] for x in sample_events(name)])


class EventLab(EndpointGroup):
    """WinRM endpoints for the lab DCs' Security logs (one per DC address). With ``kerberos`` they take Negotiate
    (Kerberos or NTLM) with message encryption, as a DC's WinRM does; without, Basic (the benchmarks)."""

    def __init__(
        self,
        root: Path,
        port: int = 5985,
        kerberos: LabKerberos | None = None,
        https: bool = False,
        extended_protection: bool = False,
    ) -> None:
        self.root = root
        self.port = port
        root.mkdir(parents=True, exist_ok=True)
        self.scheme = "https" if https else "http"
        tls, self.ca_file, certificate = (None, None, None)
        if https:
            tls, self.ca_file, certificate = winrm_tls(root / "tls", list(ADDRESSES), list(ADDRESSES.values()))
        self.kerberos = kerberos.provision(list(DC_SAMPLES)) if kerberos else None
        self.password = secrets.token_urlsafe(18)
        self.password_file = root / "events.password"
        self.password_file.write_text(self.password)
        self.password_file.chmod(0o600)
        self.logs = {dc: sample_log(dc) for dc in DC_SAMPLES}
        policy = dataclasses.replace(HARDENED, extended_protection=extended_protection) if kerberos else None
        self.endpoints = {
            dc: dc_endpoint(dc, port, self.logs[dc], {SERVICE_USER: self.password}, policy, tls, certificate)
            for dc in DC_SAMPLES
        }

    def winrm_config(self, timeout: float = 3, auth: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
        """The ``winrm`` part of the exporter's ``security_events`` entry for this lab."""
        if self.kerberos:
            entry: dict[str, Any] = {
                "domain_controllers": [{"name": dc, "address": ADDRESSES[dc], "port": self.port} for dc in DC_SAMPLES],
                "auth": auth or self.kerberos.auth_config(),
            }
        else:
            entry = {
                "domain_controllers": [{"name": dc, "host": ADDRESSES[dc], "port": self.port} for dc in DC_SAMPLES],
                "auth": auth or {"method": "basic", "user": SERVICE_USER, "password_file": str(self.password_file)},
                # Basic over plain HTTP is only acceptable because the lab never leaves loopback.
                "encryption": "never",
                "allow_unencrypted": True,
            }
        if self.ca_file is not None:
            entry.update(scheme="https", tls={"ca_file": str(self.ca_file)})
        entry.update(timeout_seconds=timeout, start_at="beginning")
        entry.update(overrides)
        return entry
