"""A canary message through the on-premises SMTP path, found where it should arrive: end-to-end proof of flow.

Every interval the exporter submits a message with a unique Message-ID to the on-premises SMTP endpoint, then
looks for the canaries in flight in the destination's drop directories (a mailbox exported by a rule, a
journal copy). A canary found gives its end-to-end latency, how it was attributed (AuthAs) and its hop count;
one not found within ``late_seconds`` is lost. Failures are counted by stage: submit (the SMTP conversation)
or deliver (never arrived).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib

from exporter import clock as domain_time
from exporter.config import CanaryConfig
from exporter.metrics import Family, Series
from exporter.parsers.mail_headers import parse_headers
from exporter.registry import Collector, Redactor, TargetStatus
from exporter.sources.imap import ImapError, fetch_new_headers, target_from
from exporter.sources.maildrop import DropDirectory
from exporter.sources.smtp import tls_context

log = logging.getLogger(__name__)


EXCHANGE_CANARY_SENT_TOTAL = Family("exchange_canary_sent_total", "counter", "Canaries submitted.", ("canary",))
EXCHANGE_CANARY_RECEIVED_TOTAL = Family(
    "exchange_canary_received_total", "counter", "Canaries found at the destination.", ("canary",)
)
EXCHANGE_CANARY_FAILURES_TOTAL = Family(
    "exchange_canary_failures_total",
    "counter",
    "Canaries that failed, by stage: submit (the SMTP conversation), deliver (not found within late_seconds), "
    "mailbox (the destination mailbox could not be read).",
    ("canary", "stage"),
)
EXCHANGE_CANARY_IN_FLIGHT = Family(
    "exchange_canary_in_flight", "gauge", "Canaries sent and not yet found.", ("canary",)
)
EXCHANGE_CANARY_LATENCY_SECONDS = Family(
    "exchange_canary_latency_seconds", "gauge", "End-to-end time of the last canary found.", ("canary",)
)
EXCHANGE_CANARY_LAST_RECEIVED_TIMESTAMP_SECONDS = Family(
    "exchange_canary_last_received_timestamp_seconds",
    "gauge",
    "When the last canary arrived (0 if none yet).",
    ("canary",),
)
EXCHANGE_CANARY_HOPS = Family(
    "exchange_canary_hops", "gauge", "Received headers of the last canary found.", ("canary",)
)
EXCHANGE_CANARY_AUTH_AS_INFO = Family(
    "exchange_canary_auth_as_info",
    "gauge",
    "How the last canary was attributed at the destination (Internal expected).",
    ("canary", "auth_as"),
)


class CanaryCollector(Collector):
    name = "canary"
    families = (
        EXCHANGE_CANARY_SENT_TOTAL,
        EXCHANGE_CANARY_RECEIVED_TOTAL,
        EXCHANGE_CANARY_FAILURES_TOTAL,
        EXCHANGE_CANARY_IN_FLIGHT,
        EXCHANGE_CANARY_LATENCY_SECONDS,
        EXCHANGE_CANARY_LAST_RECEIVED_TIMESTAMP_SECONDS,
        EXCHANGE_CANARY_HOPS,
        EXCHANGE_CANARY_AUTH_AS_INFO,
    )

    def __init__(
        self, config: CanaryConfig, redact: Redactor | None = None, clock: Callable[[], float] = domain_time.now
    ) -> None:
        super().__init__(config.name.lower(), config.interval_seconds, timeout=config.interval_seconds)
        self.config = config
        self.redact = redact or Redactor()
        self.clock = clock
        self.in_flight: dict[str, float] = {}  # Message-ID -> sent at
        self.drop = DropDirectory(config.drop_directories)
        self.sent = self.received = self.lost = 0
        self.failures: dict[str, int] = {}
        self.latency = self.last_received = 0.0
        self.last_auth_as, self.last_hops = "", 0
        self.last_error = ""
        self._imap = target_from(config.imap) if config.imap is not None else None
        self.imap_validity = self.imap_last_uid = 0

    def _fail(self, stage: str, error: str) -> None:
        self.failures[stage] = self.failures.get(stage, 0) + 1
        self.last_error = self.redact(f"{stage}: {error}")
        log.warning("canary %s: %s", self.target, self.last_error)

    async def _submit(self) -> None:
        config = self.config
        host, _, port = config.smtp.rpartition(":")
        message_id = f"<canary-{uuid.uuid4().hex}@{config.sender.rpartition('@')[2]}>"
        message = EmailMessage()
        message["From"], message["To"] = config.sender, config.recipient
        message["Subject"] = f"ad-exchange-exporter canary {config.name}"
        message["Message-ID"], message["Date"] = message_id, formatdate(usegmt=True)
        message["X-Canary"] = config.name
        message.set_content("A canary: it proves mail flows end to end. It can be deleted.")
        client = aiosmtplib.SMTP(
            hostname=host.strip("[]"), port=int(port), timeout=config.timeout_seconds, start_tls=False, use_tls=False
        )
        started = self.clock()  # the relay may deliver before the submission's last reply reaches us
        try:
            await client.connect()
            if config.starttls:
                await client.starttls(tls_context=tls_context(config.verify, config.ca_file))
            await client.send_message(message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            self._fail("submit", f"{type(exc).__name__}: {exc}")
            return
        finally:
            client.close()
        self.sent += 1
        self.in_flight[message_id] = started

    def _find(self) -> None:
        """Canaries that arrived since the last look; files are read once (by name and mtime)."""
        for _, mtime, head in self.drop.new_messages():
            if head is not None:
                self._arrived(head, mtime)
        if self._imap is not None:
            try:
                validity, last, headers = fetch_new_headers(self._imap, self.imap_validity, self.imap_last_uid)
            except ImapError as exc:
                self._fail("mailbox", f"{exc.reason}: {exc}")
                return
            seen_at = self.clock()  # arrival is known only to the poll: latency is bounded by the interval
            for raw in headers:
                self._arrived(raw, seen_at)
            self.imap_validity, self.imap_last_uid = validity, last

    def _arrived(self, raw: bytes, when: float) -> None:
        try:
            route = parse_headers(raw)
        except ValueError:
            return
        sent = self.in_flight.pop(route.message_id, None)
        if sent is None:
            return
        self.received += 1
        self.last_received = when
        self.latency = max(0.0, when - sent)
        self.last_auth_as, self.last_hops = route.auth_as or "unknown", route.hop_count

    async def collect(self) -> list[Series]:
        await self.pool.run(self._find)
        now = self.clock()
        for message_id, sent in list(self.in_flight.items()):
            if now - sent > self.config.late_seconds:
                del self.in_flight[message_id]
                self.lost += 1
                self._fail("deliver", f"{message_id} not found within {self.config.late_seconds:g}s")
        await self._submit()
        return self._metrics()

    def _metrics(self) -> list[Series]:
        label = [self.target]
        failures = EXCHANGE_CANARY_FAILURES_TOTAL.new()
        for stage in ("submit", "deliver", "mailbox"):
            failures.add_metric([self.target, stage], self.failures.get(stage, 0))
        families = [
            EXCHANGE_CANARY_SENT_TOTAL.one(label, self.sent),
            EXCHANGE_CANARY_RECEIVED_TOTAL.one(label, self.received),
            failures,
            EXCHANGE_CANARY_IN_FLIGHT.one(label, len(self.in_flight)),
            EXCHANGE_CANARY_LATENCY_SECONDS.one(label, self.latency),
            EXCHANGE_CANARY_LAST_RECEIVED_TIMESTAMP_SECONDS.one(label, self.last_received),
            EXCHANGE_CANARY_HOPS.one(label, self.last_hops),
        ]
        if self.last_auth_as:
            families.append(EXCHANGE_CANARY_AUTH_AS_INFO.one([self.target, self.last_auth_as], 1.0))
        return families

    def target_status(self) -> list[TargetStatus]:
        healthy = not self.last_error or (self.received > 0 and self.last_received >= self.clock() - self.interval * 3)
        return [TargetStatus(f"canary {self.target} via {self.config.smtp}", healthy, self.last_error)]
