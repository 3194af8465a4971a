"""Message headers of hybrid mail flow: how Exchange Online attributed a message, and the route it took.

Exchange stamps ``X-MS-Exchange-Organization-AuthAs`` (Internal, Anonymous, Partner, External), ``-AuthSource``
(the server that authenticated it) and ``-AuthMechanism``; Exchange Online adds the ``X-MS-Exchange-CrossTenant-*``
set (AuthAs, AuthSource, FromEntityHeader: HybridOnPrem, Hosted, Internet). Mail from on-premises through the
inbound connector should arrive ``Internal`` with ``FromEntityHeader: HybridOnPrem``; ``Anonymous`` means the
connector did not recognise the on-premises certificate. The Received chain gives the hop count, loops (a
host that appears twice) and the delay at each hop. Headers are read with the standard library's email parser
(RFC 2047 encoded words, folded lines).
"""

from __future__ import annotations

import email.policy
import email.utils
import re
from dataclasses import dataclass
from email.parser import BytesParser
from typing import Any

_FROM = re.compile(r"\bfrom\s+(\S+)", re.I)
_BY = re.compile(r"\bby\s+(\S+)", re.I)
_WITH = re.compile(r"\bwith\s+(.+?)(?:\s+id\s|\s+via\s|;|$)", re.I)


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

    @property
    def hop_count(self) -> int:
        return len(self.hops)

    @property
    def repeated_hosts(self) -> list[str]:
        """Hosts that handled the message more than once: a loop."""
        seen: dict[str, int] = {}
        for hop in self.hops:
            if hop.by:
                seen[hop.by] = seen.get(hop.by, 0) + 1
        return sorted(host for host, n in seen.items() if n > 1)

    def looping(self, hop_limit: int) -> bool:
        return bool(self.repeated_hosts) or self.hop_count > hop_limit

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


def parse_received(value: str) -> Hop:
    text = " ".join(value.split())
    stamp = None
    date_text = text.rsplit(";", 1)[1].strip() if ";" in text else ""
    if date_text:
        when = email.utils.parsedate_to_datetime(date_text)
        stamp = when.timestamp() if when.tzinfo is not None else None
    by = _BY.search(text)
    source = _FROM.search(text)
    protocol = _WITH.search(text)
    return Hop(
        by.group(1).lower().rstrip(";") if by else "",
        source.group(1).lower() if source else "",
        protocol.group(1).strip() if protocol else "",
        stamp,
    )


def _first(message: Any, *names: str) -> str:
    for name in names:
        value = message.get(name)
        if value is not None and str(value).strip():
            return str(value).strip()
    return ""


def parse_headers(raw: bytes) -> Route:
    """A message's header block (or the whole message: only the headers are read)."""
    message = BytesParser(policy=email.policy.default).parsebytes(raw, headersonly=True)
    hops = []
    for value in reversed(message.get_all("Received") or []):  # the newest is on top
        try:
            hops.append(parse_received(str(value)))
        except (TypeError, ValueError, IndexError):
            hops.append(Hop("", "", "", None))  # an unreadable date still counts as a hop
    return Route(
        auth_as=_first(message, "X-MS-Exchange-CrossTenant-AuthAs", "X-MS-Exchange-Organization-AuthAs"),
        auth_source=_first(
            message, "X-MS-Exchange-CrossTenant-AuthSource", "X-MS-Exchange-Organization-AuthSource"
        ).lower(),
        auth_mechanism=_first(message, "X-MS-Exchange-Organization-AuthMechanism"),
        directionality=_first(message, "X-MS-Exchange-Organization-MessageDirectionality"),
        from_entity=_first(message, "X-MS-Exchange-CrossTenant-FromEntityHeader"),
        hops=tuple(hops),
        message_id=_first(message, "Message-ID"),
        subject=_first(message, "Subject"),
    )
