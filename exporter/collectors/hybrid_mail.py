"""Hybrid mail flow from the messages themselves: how Exchange Online attributed mail from on-premises.

Reads the header blocks of messages dropped into directories (a journal or pickup copy, a canary mailbox
exported by a rule) and counts them by FromEntityHeader, AuthSource and AuthAs: mail through the inbound
connector should be ``Internal``; ``Anonymous`` means the connector did not recognise the on-premises
certificate. AuthSource is bounded: a configured on-premises server keeps its name, Exchange Online's front ends
(one per message) are ``exchange_online``, anything else ``other``. Loops (a recurring run of hosts in the
Received chain, or more hops than ``hop_limit``), hop counts and transit times are recorded too. Each file is
read once; the names already read are kept in the state store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from exporter import clock as domain_time
from exporter.config import HybridMailConfig
from exporter.metrics import PARSE_ERRORS, Family, Series
from exporter.parsers.mail_headers import parse_headers
from exporter.registry import Collector, Redactor, TargetStatus
from exporter.sources.imap import ImapError, fetch_new_headers, target_from
from exporter.sources.maildrop import DropDirectory
from exporter.state import StateStore

log = logging.getLogger(__name__)

HOP_BUCKETS = (2, 4, 6, 8, 10, 15, 20, 30, 50)
TRANSIT_BUCKETS = (1, 5, 15, 60, 300, 900, 3600)


EXCHANGE_INBOUND_MESSAGES_TOTAL = Family(
    "exchange_inbound_messages_total",
    "counter",
    "Messages read from the drop directories by "
    "how Exchange attributed them: FromEntityHeader (HybridOnPrem for the "
    "inbound connector), AuthSource (a configured on-premises server, else exchange_online, other or unknown) "
    "and AuthAs (Internal, Anonymous, Partner).",
    ("flow", "from_entity", "auth_source", "auth_as"),
)
EXCHANGE_INBOUND_MESSAGE_LOOPS_TOTAL = Family(
    "exchange_inbound_message_loops_total",
    "counter",
    "Messages whose Received chain repeats a run of two or more hosts (A, B, ..., A, B) or is longer than "
    "hop_limit, and NDRs for a hop count exceeded (5.4.6, 5.4.14).",
    ("flow",),
)
# Exchange Online's host names (worldwide, 21Vianet, GCC High/DoD, Germany).
EXCHANGE_ONLINE_DOMAINS = (".outlook.com", ".outlook.cn", ".office365.us", ".outlook.de")


def auth_source_class(source: str, on_premises: dict[str, str]) -> str:
    """A bounded AuthSource: the configured on-premises server it names, else exchange_online, other or unknown.

    ``on_premises`` maps each configured name (lower case, and its short name) to the name as configured.
    """
    name = source.strip().lower().rstrip(".")
    if not name:
        return "unknown"
    if name in on_premises or name.split(".", 1)[0] in on_premises:
        return on_premises.get(name) or on_premises[name.split(".", 1)[0]]
    if name.endswith(EXCHANGE_ONLINE_DOMAINS):
        return "exchange_online"
    return "other"


EXCHANGE_INBOUND_MESSAGE_HOPS = Family(
    "exchange_inbound_message_hops",
    "histogram",
    "Received headers per message.",
    ("flow",),
)
EXCHANGE_INBOUND_MESSAGE_TRANSIT_SECONDS = Family(
    "exchange_inbound_message_transit_seconds",
    "histogram",
    "Time between the first and the last Received header.",
    ("flow",),
)
EXCHANGE_INBOUND_MESSAGE_HOP_DELAY_SECONDS = Family(
    "exchange_inbound_message_hop_delay_seconds",
    "histogram",
    "Time a message spent before each hop (between consecutive Received headers).",
    ("flow",),
)


class _Histogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        index = next((i for i, bound in enumerate(self.bounds) if value <= bound), len(self.bounds))
        self.counts[index] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, float(running)))
        return out

    def state(self) -> dict[str, Any]:
        return {"counts": self.counts, "total": self.total}

    def load(self, saved: dict[str, Any] | None) -> None:
        if saved and len(saved.get("counts", [])) == len(self.counts):
            self.counts, self.total = list(saved["counts"]), float(saved["total"])


class HybridMailCollector(Collector):
    name = "hybrid_mail"
    families = (
        EXCHANGE_INBOUND_MESSAGES_TOTAL,
        EXCHANGE_INBOUND_MESSAGE_LOOPS_TOTAL,
        EXCHANGE_INBOUND_MESSAGE_HOPS,
        EXCHANGE_INBOUND_MESSAGE_TRANSIT_SECONDS,
        EXCHANGE_INBOUND_MESSAGE_HOP_DELAY_SECONDS,
        PARSE_ERRORS,
    )

    def __init__(
        self,
        config: HybridMailConfig,
        state: StateStore,
        redact: Redactor | None = None,
        clock: Callable[[], float] = domain_time.now,
    ) -> None:
        super().__init__(config.name.lower(), config.interval_seconds, timeout=config.interval_seconds)
        self.config = config
        self.state = state
        self.redact = redact or Redactor()
        self.clock = clock
        self._key = f"hybrid_mail/{self.target}"
        saved = state.get(self._key, {})
        self.on_premises: dict[str, str] = {}
        for server in config.on_premises_servers:
            lowered = server.strip().lower().rstrip(".")
            self.on_premises.setdefault(lowered, lowered)
            self.on_premises.setdefault(lowered.split(".", 1)[0], lowered)
        self.messages: dict[tuple[str, str, str], int] = {}
        bounded = {"unknown", "exchange_online", "other", *self.on_premises.values()}
        for entity, source, auth, n in saved.get("messages", []):
            # Counts stored before AuthSource was bounded fold into their class.
            key = (entity, source if source in bounded else auth_source_class(source, self.on_premises), auth)
            self.messages[key] = self.messages.get(key, 0) + n
        self.loops = int(saved.get("loops", 0))
        self.parse_errors = int(saved.get("parse_errors", 0))
        self.drop = DropDirectory(config.drop_directories, saved.get("read", {}))
        self.hops = _Histogram(HOP_BUCKETS)
        self.hops.load(saved.get("hops"))
        self.transit = _Histogram(TRANSIT_BUCKETS)
        self.transit.load(saved.get("transit"))
        self.hop_delay = _Histogram(TRANSIT_BUCKETS)
        self.hop_delay.load(saved.get("hop_delay"))
        self._imap = target_from(config.imap) if config.imap is not None else None
        self.imap_validity, self.imap_last_uid = int(saved.get("imap_validity", 0)), int(saved.get("imap_uid", 0))
        self.imap_error = ""

    def _scan(self) -> None:
        for path, _, head in self.drop.new_messages():
            if head is None:
                self.parse_errors += 1
                log.warning("%s: %s: cannot be read", self.target, path)
            else:
                self._count(head, path)
        if self._imap is not None:
            try:
                validity, last, headers = fetch_new_headers(self._imap, self.imap_validity, self.imap_last_uid)
            except ImapError as exc:
                self.imap_error = self.redact(f"{exc.reason}: {exc}")
                log.warning("%s: IMAP: %s", self.target, self.imap_error)
            else:
                for raw in headers:
                    self._count(raw, "IMAP")
                self.imap_validity, self.imap_last_uid, self.imap_error = validity, last, ""
        # Commit what was counted with what was read, together.
        with self.state.transaction() as put:
            put(
                self._key,
                {
                    "messages": [[*k, n] for k, n in sorted(self.messages.items())],
                    "loops": self.loops,
                    "parse_errors": self.parse_errors,
                    "read": self.drop.seen,
                    "hops": self.hops.state(),
                    "transit": self.transit.state(),
                    "hop_delay": self.hop_delay.state(),
                    "imap_validity": self.imap_validity,
                    "imap_uid": self.imap_last_uid,
                },
            )

    def _count(self, raw: bytes, where: str) -> None:
        try:
            route = parse_headers(raw)
        except ValueError as exc:
            self.parse_errors += 1
            log.warning("%s: %s: %s", self.target, where, exc)
            return
        key = (
            route.from_entity or "unknown",
            auth_source_class(route.auth_source, self.on_premises),
            route.auth_as or "unknown",
        )
        self.messages[key] = self.messages.get(key, 0) + 1
        self.hops.observe(route.hop_count)
        if route.transit_seconds is not None:
            self.transit.observe(route.transit_seconds)
        for _, delay in route.delays():
            self.hop_delay.observe(delay)
        if route.looping(self.config.hop_limit):
            self.loops += 1

    def target_status(self) -> list[TargetStatus]:
        if self._imap is None:
            return []
        return [
            TargetStatus(
                f"{self.target} mailbox {self._imap.user}@{self._imap.host}", not self.imap_error, self.imap_error
            )
        ]

    async def collect(self) -> list[Series]:
        await self.pool.run(self._scan)
        target = self.target
        messages = EXCHANGE_INBOUND_MESSAGES_TOTAL.new()
        for (entity, source, auth), n in sorted(self.messages.items()):
            messages.add_metric([target, entity, source, auth], n)
        loops = EXCHANGE_INBOUND_MESSAGE_LOOPS_TOTAL.new()
        loops.add_metric([target], self.loops)
        hops = EXCHANGE_INBOUND_MESSAGE_HOPS.new()
        hops.add_histogram([target], self.hops.buckets(), self.hops.total)
        transit = EXCHANGE_INBOUND_MESSAGE_TRANSIT_SECONDS.new()
        transit.add_histogram([target], self.transit.buckets(), self.transit.total)
        hop_delay = EXCHANGE_INBOUND_MESSAGE_HOP_DELAY_SECONDS.new()
        hop_delay.add_histogram([target], self.hop_delay.buckets(), self.hop_delay.total)
        return [messages, loops, hops, transit, hop_delay, PARSE_ERRORS.one([self.name, target], self.parse_errors)]
