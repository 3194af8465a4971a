"""Writes an Exchange server's logs as Exchange and IIS write them, and keeps the ground truth.

IIS W3C logs of the front end (W3SVC1/u_ex*.log), SMTP receive and send protocol logs and message tracking logs,
each with the headers Exchange writes (#Software, #Version, #Log-type, #Date, #Fields). Traffic is drawn from
a seeded generator: ActiveSync phones (one keeps an old password: 1326, then 1909 once its user is locked out),
OWA, EWS, Autodiscover, MAPI; SMTP sessions with STARTTLS, relay denials (550 5.7.54), 421 4.3.2 while the
transport is inactive, throttling by Exchange Online (451 4.7.500); tracking events with recipients not
found (550 5.1.10) and loops (554 5.4.6). Files rotate by rename-and-create or by copytruncate. Every line
written is counted in ``truth`` under the labels the exporter uses.
"""

from __future__ import annotations

import datetime as dt
import random
import shutil
import threading
from collections import Counter
from pathlib import Path
from typing import Any

SERVER = "EX1"
IIS_FIELDS = (
    "date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) cs(Referer) "
    "sc-status sc-substatus sc-win32-status time-taken"
)
SMTP_FIELDS = "date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,event,data,context"
TRACKING_FIELDS = (
    "date-time,client-ip,client-hostname,server-ip,server-hostname,source-context,connector-id,source,"
    "event-id,internal-message-id,message-id,network-message-id,recipient-address,recipient-status,"
    "total-bytes,recipient-count,related-recipient-address,reference,message-subject,sender-address,"
    "return-path,message-info,directionality,tenant-id,original-client-ip,original-server-ip,"
    "custom-data,transport-traffic-type,log-id,schema-version"
)
PROTOCOL_STEMS = {
    "activesync": "/Microsoft-Server-ActiveSync/default.eas",
    "owa": "/owa/service.svc",
    "ews": "/EWS/Exchange.asmx",
    "autodiscover": "/Autodiscover/Autodiscover.xml",
    "mapi": "/mapi/emsmdb/",
    "ecp": "/ecp/default.aspx",
    "oab": "/OAB/8f1d2a/oab.xml",
    "rpc": "/rpc/rpcproxy.dll",
    "powershell": "/PowerShell",
    "other": "/favicon.ico",
}
SEND_CONNECTOR = "Outbound to Office 365"


class LogWriter:
    """One Exchange server's log directories; thread-safe; ``truth`` counts what was written."""

    def __init__(self, root: Path, seed: int = 1, server: str = SERVER, address: str = "127.0.0.11") -> None:
        self.root = root
        self.server = server
        self.address = address  # the server's address as the DCs see it (the ActiveSync stand-in binds from it)
        self.receive_connector = f"{server}\\Default Frontend {server}"
        self.rng = random.Random(seed)
        self._lock = threading.Lock()
        self.dirs = {
            "iis": root / "W3SVC1",
            "smtp_receive": root / "ProtocolLog" / "SmtpReceive",
            "smtp_send": root / "ProtocolLog" / "SmtpSend",
            "message_tracking": root / "MessageTracking",
        }
        self.names = {
            "iis": "u_ex261127.log",
            "smtp_receive": "RECV2026112707-1.LOG",
            "smtp_send": "SEND2026112707-1.LOG",
            "message_tracking": "MSGTRK2026112707-1.LOG",
        }
        for directory in self.dirs.values():
            directory.mkdir(parents=True, exist_ok=True)
        self.truth: Counter[tuple[Any, ...]] = Counter()
        self.generation = 0
        self.transport_inactive = False  # answer 421 4.3.2 to every new session
        self.session = 0
        self.iis_fields = IIS_FIELDS
        for kind in self.dirs:
            self._create(kind)

    def globs(self) -> dict[str, list[str]]:
        """The exporter's exchange_logs globs: the live files and their rotated copies."""
        return {kind: [str(self.dirs[kind] / (self.names[kind] + "*"))] for kind in self.dirs}

    def path(self, kind: str) -> Path:
        return self.dirs[kind] / self.names[kind]

    # --- files ---------------------------------------------------------------------------------------------

    def _header(self, kind: str) -> str:
        self.generation += 1
        now = dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=self.generation)
        if kind == "iis":
            return (
                "#Software: Microsoft Internet Information Services 10.0\n#Version: 1.0\n"
                f"#Date: {now:%Y-%m-%d %H:%M:%S}.{self.generation:03d}\n#Fields: {self.iis_fields}\n"
            )
        log_type = {
            "smtp_receive": "SMTP Receive Protocol Log",
            "smtp_send": "SMTP Send Protocol Log",
            "message_tracking": "Message Tracking Log",
        }[kind]
        fields = TRACKING_FIELDS if kind == "message_tracking" else SMTP_FIELDS
        version = "15.02.0986.042" if kind == "message_tracking" else "15.0.0.0"
        return (
            f"#Software: Microsoft Exchange Server\n#Version: {version}\n#Log-type: {log_type}\n"
            f"#Date: {now:%Y-%m-%dT%H:%M:%S.%f}Z\n#Fields: {fields}\n"
        )

    def _create(self, kind: str) -> None:
        self.path(kind).write_text(
            ("\ufeff" if kind == "message_tracking" else "") + self._header(kind), encoding="utf-8"
        )

    def _append(self, kind: str, lines: list[str]) -> None:
        with self.path(kind).open("a", encoding="utf-8", newline="") as out:
            out.write("".join(line + "\r\n" for line in lines))

    def rotate(self, kind: str, style: str) -> None:
        """rename: the file moves to NAME.N and a new one is created; copytruncate: copied to NAME.N, emptied."""
        with self._lock:
            target = self.dirs[kind] / f"{self.names[kind]}.{self.generation}"
            if style == "rename":
                self.path(kind).rename(target)
                self._create(kind)
            else:
                shutil.copyfile(self.path(kind), target)
                with self.path(kind).open("r+b") as handle:
                    handle.truncate(0)
                with self.path(kind).open("a", encoding="utf-8") as out:
                    out.write(self._header(kind))

    def change_iis_fields(self) -> None:
        """IIS writes a new header block mid-file when its logging fields change (here: X-Forwarded-For added)."""
        with self._lock:
            self.iis_fields = IIS_FIELDS.replace(" time-taken", " time-taken X-Forwarded-For")
            self._append("iis", [f"#Fields: {self.iis_fields}"])

    # --- traffic -----------------------------------------------------------------------------------------------

    def write(self, requests: int = 100, sessions: int = 5, messages: int = 10) -> None:
        with self._lock:
            self._append("iis", [self._request() for _ in range(requests)])
            receive, send = [], []
            for _ in range(sessions):
                receive += self._receive_session()
                send += self._send_session()
            self._append("smtp_receive", receive)
            self._append("smtp_send", send)
            self._append("message_tracking", [self._tracking() for _ in range(messages)])

    def _now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def log_request(
        self,
        *,
        stem: str,
        query: str,
        username: str,
        client_ip: str,
        user_agent: str,
        status: str,
        substatus: str,
        win32: str,
        server_ip: str = "10.0.0.10",
    ) -> None:
        """One request as IIS logs it, from a real client (the ActiveSync stand-in): appended now."""
        now = self._now()
        fields = [
            f"{now:%Y-%m-%d}",
            f"{now:%H:%M:%S}",
            server_ip,
            "POST",
            stem,
            query or "-",
            "443",
            username or "-",
            client_ip,
            user_agent.replace(" ", "+") or "-",
            "-",
            status,
            substatus,
            win32,
            "15",
        ]
        if "X-Forwarded-For" in self.iis_fields:
            fields.append("-")
        with self._lock:
            self._append("iis", [" ".join(fields)])

    def _request(self) -> str:
        rng = self.rng
        protocol = rng.choices(list(PROTOCOL_STEMS), weights=[30, 20, 15, 10, 15, 3, 2, 2, 1, 2])[0]
        status, substatus, win32 = "200", "0", "0"
        query, user, username = "-", f"user{rng.randrange(40)}", "-"
        roll = rng.random()
        if protocol == "activesync":
            device = rng.randrange(12)
            user = f"user{device}"
            if device == 0:  # the phone with the old password: 1326 until its user is locked out, then 1909
                status, substatus = "401", "1"
                win32 = "1326" if self.truth[("iis_device", user, "1326")] < 5 else "1909"
                self.truth[("iis_device", user, win32)] += 1
            query = (
                f"User={user}&DeviceId=Appl{device:04d}XK&DeviceType=iPhone&Cmd=Sync"
                f"&Log=V161_Ers1_Sst{rng.randrange(9)}"
            )
        elif roll < 0.03:
            status, substatus, win32 = "401", "2", "5"
        elif roll < 0.06:
            status, substatus, win32 = "401", "1", rng.choice(["1326", "1330", "1331"])
        elif roll < 0.10:
            status = "302"
        elif roll < 0.12:
            status, substatus, win32 = "500", "0", "64"
        if status != "401":
            username = f"CONTOSO\\{user}"
        self.truth[("iis_requests", protocol, status)] += 1
        if status == "401":
            self.truth[("iis_unauthorized", protocol, substatus, win32)] += 1
        now = self._now()
        fields = [
            f"{now:%Y-%m-%d}",
            f"{now:%H:%M:%S}",
            "10.0.0.10",
            rng.choice(["GET", "POST"]),
            PROTOCOL_STEMS[protocol],
            query,
            "443",
            username,
            f"203.0.113.{rng.randrange(1, 250)}",
            "Apple-iPhone14C2/2008.130" if protocol == "activesync" else "Microsoft+Office/16.0",
            "-",
            status,
            substatus,
            win32,
            str(rng.randrange(1, 900)),
        ]
        if "X-Forwarded-For" in self.iis_fields:
            fields.append(f"198.51.100.{rng.randrange(1, 250)}")
        return " ".join(fields)

    def _smtp(
        self, connector: str, session: str, seq: int, remote: str, event: str, data: str, context: str = ""
    ) -> str:
        quoted = f'"{data}"' if "," in data or '"' in data else data
        return (
            f"{self._now():%Y-%m-%dT%H:%M:%S.%f}Z,{connector},{session},{seq},10.0.0.10:25,{remote},{event},"
            f"{quoted},{context}"
        )

    def _receive_session(self) -> list[str]:
        self.session += 1
        sid, c = f"08DD0F{self.session:010X}", self.receive_connector
        remote = f"203.0.113.{self.rng.randrange(1, 250)}:{40000 + self.session}"
        lines = [self._smtp(c, sid, 0, remote, "+", "")]
        self.truth[("smtp_sessions", c, "receive")] += 1
        replies: list[str]
        if self.transport_inactive:
            replies = ["421 4.3.2 Service not active"]
        else:
            relay = self.rng.random() < 0.1
            replies = [
                f"220 {self.server}.contoso.com Microsoft ESMTP MAIL Service ready at Thu, 27 Nov 2026",
                f"250  {self.server}.contoso.com Hello [{remote.split(':')[0]}] SIZE 37748736 STARTTLS",
                "220 2.0.0 SMTP server ready",
            ]
            if self.rng.random() < 0.15:  # an authenticated submission; now and then with a wrong password
                replies.append(
                    "535 5.7.3 Authentication unsuccessful"
                    if self.rng.random() < 0.3
                    else "235 2.7.0 Authentication successful"
                )
            replies += [
                "250 2.1.0 Sender OK",
                "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain"
                if relay
                else "250 2.1.5 Recipient OK",
            ]
            if not relay:
                replies += [
                    "354 Start mail input; end with <CRLF>.<CRLF>",
                    "250 2.6.0 <a1b2@contoso.com> [InternalId=1, Hostname=mail.contoso.com] Queued mail",
                ]
            replies.append("221 2.0.0 Service closing transmission channel")
        seq = 1
        for reply in replies:
            if reply.startswith("535 "):  # as Exchange logs it: the reason as context, then the reply
                lines.append(self._smtp(c, sid, seq, remote, "<", "AUTH LOGIN"))
                lines.append(
                    self._smtp(c, sid, seq + 1, remote, "*", "", "Inbound AUTH LOGIN failed because of LogonDenied")
                )
                seq += 2
            lines.append(self._smtp(c, sid, seq, remote, ">", reply))
            code, enhanced = reply.split(" ")[0], reply.split(" ")[1] if reply[4:5].isdigit() else ""
            self.truth[("smtp_responses", c, "receive", code, enhanced)] += 1
            if code in ("235", "535"):
                self.truth[("smtp_auth", c, "success" if code == "235" else "failure")] += 1
            seq += 1
            if reply.startswith("220 2.0.0"):
                lines.append(self._smtp(c, sid, seq, remote, "*", "", "Sending certificate"))
                tls = (
                    "TLS protocol SP_PROT_TLS1_2_SERVER negotiation succeeded using bulk encryption algorithm "
                    "CALG_AES_256 with strength 256 bits"
                )
                lines.append(self._smtp(c, sid, seq + 1, remote, "*", tls, ""))
                self.truth[("smtp_tls", c, "receive", "success")] += 1
                seq += 2
        lines.append(self._smtp(c, sid, seq, remote, "-", "", "Remote(Disconnected)"))
        return lines

    def _send_session(self) -> list[str]:
        self.session += 1
        sid, remote, c = f"08DD1F{self.session:010X}", "52.101.68.10:25", SEND_CONNECTOR
        lines = [self._smtp(c, sid, 0, remote, "+", "")]
        self.truth[("smtp_sessions", c, "send")] += 1
        throttled = self.rng.random() < 0.2
        replies = [
            "220 AM4PEPF00027A6B.mail.protection.outlook.com Microsoft ESMTP MAIL Service ready",
            "250 AM4PEPF00027A6B.mail.protection.outlook.com Hello [192.0.2.25]",
            "451 4.7.500 Server busy. Please try again later from [192.0.2.25]. (S77719)"
            if throttled
            else "250 2.1.0 Sender OK",
        ]
        for seq, reply in enumerate(replies, start=1):
            lines.append(self._smtp(c, sid, seq, remote, "<", reply))
            code = reply.split(" ")[0]
            enhanced = reply.split(" ")[1] if reply[4:5].isdigit() and "." in reply.split(" ")[1] else ""
            self.truth[("smtp_responses", c, "send", code, enhanced)] += 1
        lines.append(self._smtp(c, sid, len(replies) + 1, remote, "-", "", "Local"))
        return lines

    def _tracking(self) -> str:
        rng = self.rng
        event, source, status, direction = rng.choice(
            [
                ("RECEIVE", "SMTP", "", "Incoming"),
                ("SEND", "SMTP", "250 2.6.0 Queued mail for delivery", "Originating"),
                ("DELIVER", "STOREDRIVER", "", "Incoming"),
                ("SUBMIT", "STOREDRIVER", "", "Originating"),
                (
                    "FAIL",
                    "SMTP",
                    "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
                    "Originating",
                ),
                ("DSN", "DSN", "554 5.4.6 Hop count exceeded - possible mail loop ATTR34", "Originating"),
            ]
        )
        self.truth[("tracking_events", event, source, self.receive_connector, direction)] += 1
        if event in ("FAIL", "DSN"):
            code, enhanced = status.split(" ")[:2]
            self.truth[("tracking_failures", event, code, enhanced)] += 1
        now = self._now()
        values = [
            f"{now:%Y-%m-%dT%H:%M:%S.%f}Z",
            "10.0.0.10",
            f"{self.server}.contoso.com",
            "10.0.0.11",
            f"{self.server}.contoso.com",
            "08DD0F00000001;250 2.0.0 OK",
            self.receive_connector,
            source,
            event,
            str(rng.randrange(10**6)),
            f"<msg{rng.randrange(10**9)}@contoso.com>",
            "d3b0c4a2-1111-2222-3333-444455556666",
            f"user{rng.randrange(40)}@contoso.com",
            status,
            "4821",
            "1",
            "",
            "",
            "Quarterly numbers, final",
            "boss@contoso.com",
            "boss@contoso.com",
            "",
            direction,
            "",
            "",
            "",
            "",
            "Email",
            "MessageTrackingLog",
            "15.02.0986.042",
        ]
        return ",".join(f'"{v}"' if "," in v or ";" in v else v for v in values)
