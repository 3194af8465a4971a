"""SMTP replies and enhanced status codes (RFC 5321, RFC 3463), as Exchange reports them.

Exchange nests replies: a queue's LastError reads ``451 4.4.0 Primary target IP address responded with:
"421 4.3.2 Service not active."``, where the outer code is what the queue made of the failure and the
inner one is what the next hop said. Both are kept, because the alert wants the 421 and the runbook
wants to know Exchange turned it into a retry (451).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A reply code followed by an optional enhanced status code: "421 4.3.2", "550-5.7.1", "250 ".
_REPLY = re.compile(r"(?<![\d.])([2-5][0-9]{2})(?:[ -]|$)(?:([245]\.[0-9]{1,3}\.[0-9]{1,3})(?![\d.]))?")
# Exchange 2013+ LastError: [{LRT=...};{LED=...};{FQDN=...};{IP=...}]
_LED = re.compile(r"\{LED=(.*?)\};\{(?:FQDN|IP)=", re.S)


@dataclass(frozen=True)
class SmtpReply:
    code: str  # "421"
    enhanced: str  # "4.3.2", or "" when the reply had none

    @property
    def text(self) -> str:
        return f"{self.code} {self.enhanced}".strip()


@dataclass(frozen=True)
class ReplyChain:
    """The reply Exchange reported and, when it quotes one, the reply of the remote host behind it."""

    reported: SmtpReply | None
    remote: SmtpReply | None

    @property
    def root_cause(self) -> SmtpReply | None:
        return self.remote or self.reported


def parse_reply(text: str) -> SmtpReply | None:
    """The reply at the start of ``text`` ("550 5.7.1 Unable to relay"), or None if it does not start with one."""
    match = _REPLY.match(text.strip())
    if not match:
        return None
    return SmtpReply(match.group(1), match.group(2) or "")


def parse_reply_chain(text: str) -> ReplyChain:
    """Every reply quoted in an Exchange error text: the first is Exchange's own, the last the remote host's."""
    if not text:
        return ReplyChain(None, None)
    led = _LED.search(text)
    if led:
        text = led.group(1)
    replies = [
        SmtpReply(m.group(1), m.group(2) or "")
        for m in _REPLY.finditer(text)
        if m.group(2) or m.start() == len(text) - len(text.lstrip())
    ]
    if not replies:
        return ReplyChain(None, None)
    reported = replies[0]
    remote = replies[-1] if len(replies) > 1 else None
    return ReplyChain(reported, remote)
