"""IIS (W3C extended) logs of Exchange's front end: requests and 401s by protocol, status and win32 status.

Aggregation is the hot path (a busy front end writes millions of lines a day), so it works on raw bytes in
bulk: for the current ``#Fields:`` layout each line is split once from the left up to cs-uri-stem and once
from the right down to sc-status, and counted under its stem's first bytes; the stems are mapped to protocols
when the counts are folded, once per batch. The few 401 lines get a full parse: user, ActiveSync device (from
cs-uri-query) and client address (c-ip, or X-Forwarded-For where logged).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote_to_bytes

# The first path segment of cs-uri-stem -> protocol (lower case).
PROTOCOLS = {
    b"microsoft-server-activesync": "activesync",
    b"owa": "owa",
    b"ews": "ews",
    b"autodiscover": "autodiscover",
    b"mapi": "mapi",
    b"rpc": "rpc",
    b"ecp": "ecp",
    b"powershell": "powershell",
    b"oab": "oab",
}
_STEM_PREFIX = 32  # enough to tell the protocols apart; bounds the raw keys
# sc-win32-status values that say why a 401 happened.
WIN32_REASONS = {
    "0": "none",
    "5": "access_denied",
    "64": "network_name_deleted",
    "1326": "logon_failure",
    "1330": "password_expired",
    "1331": "account_disabled",
    "1909": "account_locked_out",
    "1327": "account_restriction",
    "1328": "logon_hours",
    "1329": "workstation_restriction",
    "1793": "account_expired",
    "1907": "password_must_change",
    "2148074254": "no_credentials",
    "2148074248": "token_invalid",
}


def protocol_of(stem: bytes) -> str:
    segment = stem.lstrip(b"/").split(b"/", 1)[0].lower()
    return PROTOCOLS.get(segment, "other")


def win32_reason(code: str) -> str:
    return WIN32_REASONS.get(code, "other")


class FieldsError(ValueError):
    """A ``#Fields:`` directive this parser cannot count with."""


@dataclass(frozen=True)
class Layout:
    """Where the counted fields are in the current ``#Fields:`` order."""

    fields: tuple[str, ...]
    stem: int
    status: int  # sc-status; sc-substatus and sc-win32-status follow it
    after: int  # fields after sc-win32-status
    query: int | None
    user: int | None
    client_ip: int | None
    forwarded_for: int | None
    date: int | None = None
    time: int | None = None
    user_agent: int | None = None

    @classmethod
    def from_directive(cls, line: str) -> Layout:
        names = tuple(line.split(":", 1)[1].split()) if ":" in line else ()
        index = {name.lower(): i for i, name in enumerate(names)}
        missing = [n for n in ("cs-uri-stem", "sc-status", "sc-substatus", "sc-win32-status") if n not in index]
        if missing:
            raise FieldsError(f"#Fields: without {', '.join(missing)}")
        status = index["sc-status"]
        if index["sc-substatus"] != status + 1 or index["sc-win32-status"] != status + 2:
            raise FieldsError("#Fields: sc-status, sc-substatus, sc-win32-status must follow each other")
        if index["cs-uri-stem"] >= status:
            raise FieldsError("#Fields: cs-uri-stem must come before sc-status")
        forwarded = next((i for n, i in index.items() if n in ("x-forwarded-for", "cs(x-forwarded-for)")), None)
        return cls(
            names,
            index["cs-uri-stem"],
            status,
            len(names) - status - 3,
            index.get("cs-uri-query"),
            index.get("cs-username"),
            index.get("c-ip"),
            forwarded,
            index.get("date"),
            index.get("time"),
            index.get("cs(user-agent)"),
        )


@dataclass(frozen=True)
class Unauthorized:
    """One 401, fully parsed."""

    protocol: str
    win32_status: str
    user: str
    device_id: str
    device_type: str
    client_ip: str
    time: str  # "date time" as logged (UTC)


def _query_values(query: bytes) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for pair in query.split(b"&"):
        key, _, value = pair.partition(b"=")
        if key:
            out[key.lower()] = value
    return out


def _text(value: bytes) -> str:
    if b"%" in value or b"+" in value:
        value = unquote_to_bytes(value.replace(b"+", b" "))
    return value.decode("utf-8", "replace")


def parse_unauthorized(line: bytes, layout: Layout) -> Unauthorized | None:
    parts = line.split(b" ")
    if len(parts) != len(layout.fields):
        return None
    return unauthorized_from_fields(
        detail_key(parts, layout), " ".join(p.decode("ascii", "replace") for p in parts[:2])
    )


def line_time(parts: list[bytes], layout: Layout) -> float | None:
    """The line's ``date time`` (UTC, as IIS writes it), or None when the layout has no such fields."""
    if layout.date is None or layout.time is None:
        return None
    try:
        text = f"{parts[layout.date].decode('ascii')}T{parts[layout.time].decode('ascii')}+00:00"
        return datetime.fromisoformat(text).timestamp()
    except (ValueError, UnicodeDecodeError):
        return None


def user_agent(parts: list[bytes], layout: Layout) -> str:
    """The line's cs(User-Agent), decoded (IIS writes spaces as +), at most 200 characters; "" when not logged."""
    if layout.user_agent is None or parts[layout.user_agent] == b"-":
        return ""
    return _text(parts[layout.user_agent][:600])[:200]


def detail_key(parts: list[bytes], layout: Layout) -> tuple[bytes, ...]:
    """What a 401 says about who and where, as raw fields: 401s repeat these, so they are parsed once each."""
    return (
        parts[layout.stem][:_STEM_PREFIX],
        parts[layout.status + 2],
        *(b"-" if i is None else parts[i] for i in (layout.query, layout.user, layout.client_ip, layout.forwarded_for)),
    )


def unauthorized_from_fields(key: tuple[bytes, ...], time: str = "") -> Unauthorized:
    stem, win32, raw_query, raw_user, client_ip, forwarded = (b"" if v == b"-" else v for v in key)
    protocol = protocol_of(stem)
    # Only ActiveSync names the user and device in the query; 401s carry no cs-username (not authenticated).
    query = _query_values(raw_query) if protocol == "activesync" else {}
    user = _text(raw_user or query.get(b"user", b"")).lower()
    client = (forwarded.split(b",")[0] if forwarded else client_ip).strip()
    return Unauthorized(
        protocol=protocol,
        win32_status=win32.decode("ascii", "replace"),
        user=user,
        device_id=_text(query.get(b"deviceid", b"")),
        device_type=_text(query.get(b"devicetype", b"")),
        client_ip=client.decode("ascii", "replace"),
        time=time,
    )


_LOOP_TEMPLATE = """
def count(lines, raw, found):
    get = raw.get
    malformed = 0
    for line in lines:
        try:
            {head} = line.split(b" ", {left})
            {tail} = rest.rsplit(b" ", {right})
        except ValueError:
            if line:
                malformed += 1
            continue
        key = (stem[:{prefix}], status, substatus, win32)
        raw[key] = get(key, 0) + 1
        if status == b"401":
            found.append(line)
    return malformed
"""


@functools.lru_cache(maxsize=32)
def _counting_loop(stem: int, after: int) -> Callable[[Iterable[bytes], dict[Any, int], list[bytes]], int]:
    """The hot loop, written out for one layout: one split from each side unpacked straight into names.

    Unpacking a fixed number of fields is the fastest per-line code CPython runs (a line with another number
    of fields raises ValueError and is counted as malformed); only integers from the layout go into the code.
    """
    head = ", ".join(["_"] * stem + ["stem", "rest"])
    tail = ", ".join(["_", "status", "substatus", "win32"] + ["_"] * after)
    source = _LOOP_TEMPLATE.format(head=head, left=stem + 1, tail=tail, right=after + 3, prefix=_STEM_PREFIX)
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<iis counting loop stem={stem} after={after}>", "exec"), namespace)  # noqa: S102
    loop: Callable[[Iterable[bytes], dict[Any, int], list[bytes]], int] = namespace["count"]
    return loop


def _digits(value: bytes, most: int) -> bool:
    return 0 < len(value) <= most and value.isdigit()


class IisCounts:
    """Requests by (protocol, status) and 401s by (protocol, substatus, win32 status); counts lines it skips."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = {}
        self.unauthorized: dict[tuple[str, str, str], int] = {}
        self.malformed = 0
        self.layout_errors = 0

    def count(self, lines: Iterable[bytes], layout: Layout, found: list[bytes]) -> None:
        """Count data lines (no directives) of one layout; 401 lines are appended to ``found``."""
        raw: dict[tuple[bytes, bytes, bytes, bytes], int] = {}
        self.malformed += _counting_loop(layout.stem, layout.after)(lines, raw, found)
        self._fold(raw)

    def _fold(self, raw: dict[tuple[bytes, bytes, bytes, bytes], int]) -> None:
        protocols: dict[bytes, str] = {}
        for (stem, status, substatus, win32), n in raw.items():
            # An HTTP status has three digits: "00" or "2000" is a damaged line (found by fuzzing).
            if not (len(status) == 3 and _digits(status, 3) and _digits(substatus, 5) and _digits(win32, 10)):
                self.malformed += n  # garbage where the status codes should be: never a label value
                continue
            protocol = protocols.get(stem)
            if protocol is None:
                protocol = protocols[stem] = protocol_of(stem)
            code = status.decode()
            key = (protocol, code)
            self.requests[key] = self.requests.get(key, 0) + n
            if code == "401":
                ukey = (protocol, substatus.decode(), win32.decode())
                self.unauthorized[ukey] = self.unauthorized.get(ukey, 0) + n

    def state(self) -> dict[str, Any]:
        return {
            "requests": [[p, s, n] for (p, s), n in sorted(self.requests.items())],
            "unauthorized": [[p, ss, w, n] for (p, ss, w), n in sorted(self.unauthorized.items())],
            "malformed": self.malformed,
            "layout_errors": self.layout_errors,
        }

    def load(self, saved: dict[str, Any] | None) -> None:
        if not saved:
            return
        self.requests = {(p, s): n for p, s, n in saved.get("requests", [])}
        self.unauthorized = {(p, ss, w): n for p, ss, w, n in saved.get("unauthorized", [])}
        self.malformed = int(saved.get("malformed", 0))
        self.layout_errors = int(saved.get("layout_errors", 0))
