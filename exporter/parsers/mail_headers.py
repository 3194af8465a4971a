"""Message headers of hybrid mail flow: how Exchange Online attributed a message, and the route it took.

Exchange stamps ``X-MS-Exchange-Organization-AuthAs`` (Internal, Anonymous, Partner, External), ``-AuthSource``
(the server that authenticated it) and ``-AuthMechanism``; Exchange Online adds the ``X-MS-Exchange-CrossTenant-*``
set (AuthAs, AuthSource, FromEntityHeader: HybridOnPrem, Hosted, Internet). Mail from on-premises through the
inbound connector should arrive ``Internal`` with ``FromEntityHeader: HybridOnPrem``; ``Anonymous`` means the
connector did not recognise the on-premises certificate. On-premises Exchange stamps the same attribution as
``X-MS-Exchange-Organization-FromEntityHeader``; Exchange Online's CrossTenant header wins when both are there
(it is the attribution the hybrid connectors are about), the organization's header is read otherwise.

The Received chain gives the hop count, the delay at each hop, and loops: a run of two or more hops that recurs (A,
B, ..., A, B), or more hops than ``hop_limit``; a non-delivery report whose status is 5.4.6 (on-premises) or 5.4.14
(Exchange Online), hop count exceeded, is a loop too. A host that appears twice is not a loop by itself: a mailing
list re-injects a message, a content filter (amavis) hands it back, hybrid mail hairpins on-premises -> Exchange
Online -> on-premises. Dates are read leniently (fractional seconds, no ``;``, Go's ``2006-01-02 15:04:05 +0000
UTC``, obsolete zones, comments); a hop whose date cannot be read keeps its hosts. Headers are read with the
standard library's email parser (RFC 2047 encoded words, folded lines).
"""

from __future__ import annotations

import calendar
import email.policy
import re
from dataclasses import dataclass
from email.parser import BytesParser
from typing import Any

_FROM = re.compile(r"\bfrom\s+(\S+)", re.I)
_BY = re.compile(r"\bby\s+(\S+)", re.I)
_WITH = re.compile(r"\bwith\s+(.+?)(?:\s+id\s|\s+via\s|;|$)", re.I)
_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_abbr) if m}
# RFC 5322 and its obsolete forms: "Sun, 19 Mar 2017 20:53:46.917 +0000 (UTC)", "8 Jan 20 16:07 EST".
_RFC_DATE = re.compile(
    r"\b(\d{1,2})\s+(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+(\d{2,4})\s+"
    r"(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,]\d+)?)?(?:\s*([+-]\d{4}|[a-z]{1,5})\b)?",
    re.I,
)
# ISO 8601 and Go's time.String(): "2020-01-08 21:07:48.851520111 +0000 UTC".
_ISO_DATE = re.compile(
    r"\b(\d{4})-(\d{2})-(\d{2})[t ](\d{2}):(\d{2})(?::(\d{2})(?:[.,]\d+)?)?\s*(z\b|[+-]\d{2}:?\d{2}|utc\b|gmt\b)?",
    re.I,
)
# RFC 5322 4.3 obsolete zones; military letters and unknown names count as UTC (-0000: "zone unknown").
_ZONES = {"ut": 0, "utc": 0, "gmt": 0, "z": 0, "est": -5, "edt": -4, "cst": -6, "cdt": -5, "mst": -7, "mdt": -6}
_ZONES |= {"pst": -8, "pdt": -7}
# Hop count exceeded: 5.4.6 from on-premises Exchange, 5.4.14 from Exchange Online.
LOOP_STATUSES = ("5.4.6", "5.4.14")
_DSN_STATUS = re.compile(rb"^Status:\s*([245]\.\d{1,3}\.\d{1,3})", re.I | re.M)


@dataclass(frozen=True)
class Hop:
    by: str  # the host that wrote this Received header, lower case
    source: str  # the host it says it received from
    protocol: str  # "with ..." (ESMTPS, Microsoft SMTP Server (version=TLS1_2 ...))
    time: float | None  # the header's own timestamp


@dataclass(frozen=True)
class Route:
    auth_as: str  # Internal, Anonymous, Partner, External, or "" when not stamped
    auth_source: str
    auth_mechanism: str
    directionality: str  # Incoming, Originating
    from_entity: str  # HybridOnPrem, Hosted, Internet
    hops: tuple[Hop, ...]  # oldest first
    message_id: str
    subject: str
    ndr_status: str = ""  # a non-delivery report's status (5.4.6), "" for other messages

    @property
    def hop_count(self) -> int:
        return len(self.hops)

    @property
    def repeated_hosts(self) -> list[str]:
        """Hosts that handled the message more than once (not a loop by itself: lists, filters, hairpins)."""
        seen: dict[str, int] = {}
        for hop in self.hops:
            if hop.by:
                seen[hop.by] = seen.get(hop.by, 0) + 1
        return sorted(host for host, n in seen.items() if n > 1)

    @property
    def repeated_cycle(self) -> list[str]:
        """The shortest run of two or more hosts that recurs later in the chain, or [] when none does: a loop.

        A host handing a message to itself (a list expanding, a filter on the same host) is one stop.
        """
        hosts: list[str] = []
        for hop in self.hops:
            if hop.by and (not hosts or hosts[-1] != hop.by):
                hosts.append(hop.by)
        for size in range(2, len(hosts) // 2 + 1):
            first: dict[tuple[str, ...], int] = {}
            for start in range(len(hosts) - size + 1):
                run = tuple(hosts[start : start + size])
                if run in first and first[run] + size <= start:
                    return list(run)
                first.setdefault(run, start)
        return []

    def looping(self, hop_limit: int) -> bool:
        """More hops than ``hop_limit``, a recurring run of hosts, or an NDR for a hop count exceeded."""
        return self.ndr_status in LOOP_STATUSES or self.hop_count > hop_limit or bool(self.repeated_cycle)

    def delays(self) -> list[tuple[str, float]]:
        """(host, seconds the message spent before it) for each hop after the first with a timestamp."""
        out = []
        previous = None
        for hop in self.hops:
            if hop.time is not None:
                if previous is not None:
                    out.append((hop.by, max(0.0, hop.time - previous)))
                previous = hop.time
        return out

    @property
    def transit_seconds(self) -> float | None:
        stamps = [h.time for h in self.hops if h.time is not None]
        return max(stamps) - min(stamps) if len(stamps) > 1 else None


def _offset_minutes(zone: str | None) -> int:
    if not zone:
        return 0
    if zone[0] in "+-":
        digits = zone[1:].replace(":", "")
        minutes = int(digits[:2]) * 60 + int(digits[2:4])
        return -minutes if zone[0] == "-" else minutes
    return _ZONES.get(zone.lower(), 0) * 60


def received_time(text: str) -> float | None:
    """The timestamp of a Received header: after its last ``;`` when it has one, else the last date in it."""
    tail = text.rsplit(";", 1)[1] if ";" in text else text
    for candidate in (tail, text):
        matches = [*_RFC_DATE.finditer(candidate), *_ISO_DATE.finditer(candidate)]
        if not matches:
            continue
        match = max(matches, key=lambda m: m.start())
        try:
            if match.re is _RFC_DATE:
                day, month, year, hour, minute, second, zone = match.groups()
                number = int(year)
                number += 2000 if len(year) == 2 and number < 50 else 1900 if len(year) < 4 else 0
                fields = (number, _MONTHS[month[:3].lower()], int(day))
            else:
                year, month, day, hour, minute, second, zone = match.groups()
                fields = (int(year), int(month), int(day))
            clock = (int(hour), int(minute), int(second or 0))
            if not (1 <= fields[1] <= 12 and 1 <= fields[2] <= 31 and clock[0] < 24 and clock[1] < 60):
                continue
            return float(calendar.timegm((*fields, *clock, 0, 0, 0)) - _offset_minutes(zone) * 60)
        except (ValueError, OverflowError):
            continue
    return None


def parse_received(value: str) -> Hop:
    """One Received header; its hosts are kept whatever its date looks like."""
    text = " ".join(value.split())
    stamp = received_time(text)
    by = _BY.search(text)
    source = _FROM.search(text)
    protocol = _WITH.search(text)
    return Hop(
        by.group(1).lower().rstrip(";") if by else "",
        source.group(1).lower() if source else "",
        protocol.group(1).strip() if protocol else "",
        stamp,
    )


def _header(message: Any, name: str) -> str | None:
    """A header's value as text. The stdlib parses structured headers (Message-ID, Content-Type) on access and
    some malformed values make it raise (an IndexError in get_msg_id, found by fuzzing): then the raw value."""
    try:
        value = message.get(name)
    except Exception:
        value = next((v for k, v in message.raw_items() if k.lower() == name.lower()), None)
    return None if value is None else str(value)


def _first(message: Any, *names: str) -> str:
    for name in names:
        value = _header(message, name)
        if value is not None and value.strip():
            return value.strip()
    return ""


def _ndr_status(message: Any, raw: bytes) -> str:
    """The first Status of a delivery report's delivery-status part (RFC 3464), when the bytes read hold it."""
    content_type = (_header(message, "Content-Type") or "").lower()
    report = "multipart/report" in content_type and "delivery-status" in content_type
    if not report and _header(message, "X-MS-Exchange-Message-Is-Ndr") is None:
        return ""
    match = _DSN_STATUS.search(raw)
    return match.group(1).decode() if match else ""


def parse_headers(raw: bytes) -> Route:
    """A message's header block (or the whole message: only the headers are read)."""
    message = BytesParser(policy=email.policy.default).parsebytes(raw, headersonly=True)
    hops = []
    for value in reversed(message.get_all("Received") or []):  # the newest is on top
        hops.append(parse_received(str(value)))
    return Route(
        ndr_status=_ndr_status(message, raw),
        auth_as=_first(message, "X-MS-Exchange-CrossTenant-AuthAs", "X-MS-Exchange-Organization-AuthAs"),
        auth_source=_first(
            message, "X-MS-Exchange-CrossTenant-AuthSource", "X-MS-Exchange-Organization-AuthSource"
        ).lower(),
        auth_mechanism=_first(message, "X-MS-Exchange-Organization-AuthMechanism"),
        directionality=_first(message, "X-MS-Exchange-Organization-MessageDirectionality"),
        from_entity=_first(
            message, "X-MS-Exchange-CrossTenant-FromEntityHeader", "X-MS-Exchange-Organization-FromEntityHeader"
        ),
        hops=tuple(hops),
        message_id=_first(message, "Message-ID"),
        subject=_first(message, "Subject"),
    )
