"""Loopback SMTP servers (aiosmtpd) standing in for on-premises and cloud hops.

``SmtpLab`` runs: ``onprem`` with STARTTLS and the certificate the hybrid connector expects (CN=mail.contoso.com,
O=Contoso Ltd), ``renewed`` presenting a certificate with the same common name but another Organisation (the
renewal that breaks the inbound connector's match), ``offline`` answering ``421 4.3.2 Service not active``
before any greeting, as Exchange's front end does while its transport is inactive, and ``cloud``, standing in
for Exchange Online's inbound connector: it attributes each message by the TLS client certificate on-premises
presents (Internal when its subject, Organisation included, matches; Anonymous otherwise), stamps the
X-MS-Exchange-CrossTenant headers and drops the message into a directory.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import threading
from pathlib import Path
from typing import Any

import aiosmtplib
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from lab import free_port
from lab.pki import LabCa

EXPECTED_SUBJECT = "CN=mail.contoso.com, O=Contoso Ltd"


class _CloudInbound:
    """Exchange Online's inbound connector for mail from on-premises, attributing it by the client certificate."""

    def __init__(self, drop: Path, expected_subject: dict[str, str]) -> None:
        self.drop = drop
        self.expected = expected_subject
        self.count = 0
        # Also deliver into a mailbox (the lab's Dovecot), when one is attached.
        self.mailbox: Any = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        extra = session.ssl or {}
        peer = extra.get("peercert") or {}
        subject = {k: v for rdn in peer.get("subject", ()) for k, v in rdn}
        internal = bool(subject) and all(subject.get(k) == v for k, v in self.expected.items())
        now = dt.datetime.now(dt.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
        stamp = (
            f"Received: from {session.host_name} ({session.peer[0]}) by AM4PEPF00027A6B.mail.protection.outlook"
            f".com (10.167.16.1) with Microsoft SMTP Server (version=TLS1_3) id 15.20.8000.1 via Frontend "
            f"Transport; {now}\r\n"
            f"X-MS-Exchange-CrossTenant-AuthAs: {'Internal' if internal else 'Anonymous'}\r\n"
            f"X-MS-Exchange-CrossTenant-AuthSource: AM4PEPF00027A6B.eurprd04.prod.outlook.com\r\n"
            f"X-MS-Exchange-CrossTenant-FromEntityHeader: {'HybridOnPrem' if internal else 'Internet'}\r\n"
        )
        self.count += 1
        partial = self.drop / f".{self.count:08d}.tmp"
        partial.write_bytes(stamp.encode() + envelope.original_content)
        partial.rename(self.drop / f"{self.count:08d}.eml")  # whole files only: the reader never sees half a message
        if self.mailbox is not None:
            self.mailbox.deliver(stamp.encode() + envelope.original_content)
        return "250 2.6.0 Queued mail for delivery"


class _OnpremRelay:
    """The on-premises hybrid send path: every message is relayed to the cloud with the on-premises certificate."""

    def __init__(self, lab: SmtpLab) -> None:
        self.lab = lab

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = dt.datetime.now(dt.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
        received = (
            f"Received: from {session.host_name} ({session.peer[0]}) by mail.contoso.com (203.0.113.10) "
            f"with Microsoft SMTP Server id 15.2.986.42; {now}\r\n"
        ).encode()
        try:
            await self.lab.relay(envelope.mail_from, envelope.rcpt_tos, received + envelope.original_content)
        except (aiosmtplib.SMTPException, OSError) as exc:
            return f"451 4.4.0 Primary target IP address responded with: {exc}"
        return "250 2.6.0 Queued mail for delivery"


class _LoopRelay:
    """One side of a mail loop: adds its Received header and hands the message to the other side, until the
    hop limit, where it answers 554 5.4.6 and the NDR it returns to the sender lands in the drop directory, in
    the form Exchange writes (multipart/report, a delivery-status part, the original headers)."""

    def __init__(self, lab: SmtpLab, host: str, peer: str, limit: int) -> None:
        self.lab, self.host, self.peer, self.limit = lab, host, peer, limit

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = dt.datetime.now(dt.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
        content = (
            f"Received: from {session.host_name} ({session.peer[0]}) by {self.host} with ESMTP id "
            f"{self.lab.inbound.count}; {now}\r\n"
        ).encode() + envelope.original_content
        if content.count(b"\nReceived:") + content.startswith(b"Received:") >= self.limit:
            self.lab.inbound.count += 1
            ndr = self._ndr(envelope.mail_from, envelope.rcpt_tos, content, now)
            (self.lab.drop / f"ndr-{self.lab.inbound.count:08d}.eml").write_bytes(ndr)
            return "554 5.4.6 Hop count exceeded - possible mail loop"
        client = aiosmtplib.SMTP(
            hostname=self.lab.address,
            port=self.lab.ports[self.peer],
            start_tls=False,
            local_hostname=self.host,
            timeout=5,
        )
        await client.connect()
        try:
            await client.sendmail(envelope.mail_from, envelope.rcpt_tos, content)
        except aiosmtplib.SMTPResponseException as exc:
            return f"{exc.code} {exc.message}"
        finally:
            client.close()
        return "250 2.6.0 Queued mail for delivery"

    def _ndr(self, sender: str, recipients: list[str], content: bytes, now: str) -> bytes:
        headers = content.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        boundary = f"ndr-{self.lab.inbound.count:08d}"
        failed = "".join(
            f"Final-Recipient: rfc822;{r}\r\nAction: failed\r\nStatus: 5.4.6\r\n"
            f"Diagnostic-Code: smtp;554 5.4.6 Hop count exceeded - possible mail loop\r\n\r\n"
            for r in recipients
        )
        return (
            f"Received: from {self.host} by {self.host} with Microsoft SMTP Server id 15.2.1544.4; {now}\r\n"
            f"From: Microsoft Outlook <postmaster@contoso.com>\r\nTo: <{sender}>\r\n"
            f"Subject: Undeliverable: looping\r\nDate: {now}\r\nAuto-Submitted: auto-replied\r\n"
            f"X-MS-Exchange-Message-Is-Ndr:\r\nMIME-Version: 1.0\r\n"
            f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
            f"Delivery has failed to these recipients or groups: {', '.join(recipients)}\r\n"
            f"A problem occurred while delivering this message: the message went round in a loop.\r\n\r\n"
            f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
            f"Reporting-MTA: dns;{self.host}\r\n\r\n{failed}"
            f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n{headers}\r\n\r\n--{boundary}--\r\n"
        ).encode()


class _Accept:
    """Accepts and forgets every message (the probe never sends one)."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.6.0 Queued mail for delivery"


class _Relay:
    """A front end for contoso.com that relays for anyone (``open``, the misconfiguration) or refuses recipients
    outside its domains, as Exchange does. Counts every conversation's commands; DATA must never come from a
    relay test."""

    def __init__(self, open_relay: bool, domains: tuple[str, ...] = ("contoso.com",)) -> None:
        self.open = open_relay
        self.domains = domains
        self.rcpts: list[tuple[str, str, bool]] = []  # (address, the reply given, over TLS)
        self.data_commands = 0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        ours = address.rpartition("@")[2].lower() in self.domains
        reply = (
            "250 2.1.5 Recipient OK"
            if ours or self.open
            else ("550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain")
        )
        self.rcpts.append((address, reply, session.ssl is not None))
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.data_commands += 1
        return "554 5.7.1 The lab's relays never take a message"


class _ServiceNotActive(SMTP):
    async def _handle_client(self) -> None:
        await self.push("421 4.3.2 Service not active")
        if self.transport is not None:
            self.transport.close()


class _OfflineController(Controller):
    def factory(self) -> SMTP:
        return _ServiceNotActive(self.handler)


class SmtpLab:
    def __init__(self, directory: Path, address: str = "127.0.0.20") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.address = address
        self.drop = directory / "drop"
        self.drop.mkdir(exist_ok=True)
        ca = self._ca = LabCa("Lab Public CA G1", "Lab Trust Services")
        self.ca_file = ca.write(directory / "smtp-ca.pem")
        self.ports: dict[str, int] = {}
        self._controllers: dict[str, Controller] = {}
        contexts = {
            "onprem": self._issue("onprem", "mail.contoso.com", "Contoso Ltd", 300),
            "renewed": self._issue("renewed", "mail.contoso.com", "Contoso Holdings", 20),
        }
        for name, context in contexts.items():
            handler: Any = _OnpremRelay(self) if name == "onprem" else _Accept()
            self._add(
                name,
                Controller(
                    handler,
                    hostname=address,
                    port=free_port(address),
                    tls_context=context,
                    server_hostname="mail.contoso.com",
                    ident="Microsoft ESMTP MAIL Service",
                ),
            )
        self._add("offline", _OfflineController(_Accept(), hostname=address, port=free_port(address)))
        # The cloud asks for a client certificate and trusts the lab CA, as the inbound connector does.
        cloud = self._issue("cloud", "mail.protection.outlook.com", "Microsoft Corporation", 300)
        cloud.verify_mode = ssl.CERT_OPTIONAL
        cloud.load_verify_locations(self.ca_file)
        self.inbound = _CloudInbound(self.drop, {"commonName": "mail.contoso.com", "organizationName": "Contoso Ltd"})
        self._add(
            "cloud",
            Controller(
                self.inbound,
                hostname=address,
                port=free_port(address),
                tls_context=cloud,
                server_hostname="mail.protection.outlook.com",
                require_starttls=True,
            ),
        )
        # A loop between on-premises and the cloud (a routing mistake): each hands the message to the other.
        self._add(
            "loop_onprem",
            Controller(
                _LoopRelay(self, "mail.contoso.com", "loop_cloud", 12), hostname=address, port=free_port(address)
            ),
        )
        self._add(
            "loop_cloud",
            Controller(
                _LoopRelay(self, "am4pepf00027a6b.mail.protection.outlook.com", "loop_onprem", 12),
                hostname=address,
                port=free_port(address),
            ),
        )
        # Relay tests: a connector that relays for anyone, and one that refuses outside recipients.
        self.relays = {"open_relay": _Relay(open_relay=True), "closed_relay": _Relay(open_relay=False)}
        for name, relay in self.relays.items():
            self._add(
                name, Controller(relay, hostname=address, port=free_port(address), tls_context=contexts["onprem"])
            )
        self.renew_onprem_certificate("Contoso Ltd")
        self._lock = threading.Lock()

    def renew_onprem_certificate(self, organization: str) -> None:
        """The certificate on-premises presents to the cloud; a renewal may change its Organisation."""
        self._issue("sender", "mail.contoso.com", organization, 300)

    def _issue(self, stem: str, common_name: str, organization: str, days: float) -> ssl.SSLContext:
        domain = common_name.split(".", 1)[1]
        return self._ca.issue(
            self.directory,
            stem,
            common_name,
            organization=organization,
            dns=[common_name, f"autodiscover.{domain}"],
            days=days,
            with_chain=True,
        ).server_context()

    async def relay(self, sender: str, recipients: list[str], content: bytes) -> None:
        """Hand a message to the cloud over STARTTLS, presenting the on-premises client certificate."""
        client = aiosmtplib.SMTP(
            hostname=self.address,
            port=self.ports["cloud"],
            start_tls=False,
            local_hostname="mail.contoso.com",
            timeout=5,
        )
        await client.connect()
        try:
            await client.starttls(
                validate_certs=False,
                client_cert=str(self.directory / "sender.pem"),
                client_key=str(self.directory / "sender.key"),
            )
            await client.sendmail(sender, recipients, content)
        finally:
            client.close()

    async def send_into_loop(self, message_id: str) -> str:
        """A message into the loop; returns the reply (554 5.4.6 once the hop limit is reached)."""
        message = (
            f"From: someone@contoso.com\r\nTo: someone@contoso.com\r\nSubject: looping\r\n"
            f"Message-ID: {message_id}\r\n\r\nround and round\r\n"
        ).encode()
        client = aiosmtplib.SMTP(hostname=self.address, port=self.ports["loop_onprem"], start_tls=False, timeout=10)
        await client.connect()
        try:
            await client.sendmail("someone@contoso.com", ["someone@contoso.com"], message)
        except aiosmtplib.SMTPResponseException as exc:
            return f"{exc.code} {exc.message}"
        finally:
            client.close()
        return "250"

    async def send_from_onprem(self, subject: str, message_id: str) -> None:
        """A message from on-premises to Exchange Online, over STARTTLS with the on-premises client certificate."""
        now = dt.datetime.now(dt.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
        message = (
            f"Received: from EX1.contoso.com (10.0.0.10) by mail.contoso.com (203.0.113.10) with Microsoft "
            f"SMTP Server id 15.2.986.42; {now}\r\nFrom: canary@contoso.com\r\nTo: canary@contoso.com\r\n"
            f"Subject: {subject}\r\nMessage-ID: {message_id}\r\nDate: {now}\r\n\r\nHello.\r\n"
        )
        await self.relay("canary@contoso.com", ["canary@contoso.com"], message.encode())

    def _add(self, name: str, controller: Controller) -> None:
        self.ports[name] = controller.port
        self._controllers[name] = controller

    def target(self, name: str) -> str:
        return f"{self.address}:{self.ports[name]}"

    def start(self) -> SmtpLab:
        for controller in self._controllers.values():
            controller.start()
        return self

    def stop(self) -> None:
        for controller in self._controllers.values():
            controller.stop()

    def __enter__(self) -> SmtpLab:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


async def _selftest() -> None:  # pragma: no cover - a manual check: python -m lab.smtp
    import tempfile

    from exporter.sources.smtp import probe_smtp

    with SmtpLab(Path(tempfile.mkdtemp())) as lab:
        for name in lab.ports:
            host, port = lab.target(name).split(":")
            print(name, await probe_smtp(host, int(port), timeout=3, ehlo_hostname="probe.lab", starttls=True))


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(_selftest())
