"""Exchange transport logs: SMTP protocol logs (receive and send) and message tracking logs.

Both are CSV with a ``#Fields:`` header (which can change within a file) and quoted fields. Counts are keyed
by bounded values only: connector names, directions, event ids, sources and SMTP codes; addresses, subjects
and message ids are never labels.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from exporter.parsers.smtp import parse_reply, parse_reply_chain


class FieldsError(ValueError):
    """A ``#Fields:`` directive without the columns a counter needs."""


def fields_index(directive: str, required: Sequence[str]) -> dict[str, int]:
    names = [n.strip().lower() for n in directive.split(":", 1)[1].split(",")] if ":" in directive else []
    index = {name: i for i, name in enumerate(names)}
    missing = [n for n in required if n not in index]
    if missing:
        raise FieldsError(f"#Fields: without {', '.join(missing)}")
    return index


class _OneLine:
    """Feeds the CSV reader one line at a time: a line with an unbalanced quote then ends its own row instead of
    swallowing the lines after it into one field."""

    def __init__(self) -> None:
        self.line: str | None = None

    def __iter__(self) -> _OneLine:
        return self

    def __next__(self) -> str:
        line, self.line = self.line, None
        if line is None:
            raise StopIteration
        return line


def rows(lines: Iterable[bytes]) -> Iterator[list[str]]:
    """CSV rows of data lines (quoted fields, commas inside quotes), decoded as UTF-8 with replacement, one row per
    line; a line the CSV reader refuses (a bare CR) is an empty row, which counts as malformed. Found by fuzzing:
    one such line raised out of the count and lost the lines after it."""
    feed = _OneLine()
    reader = csv.reader(feed)
    for line in lines:
        feed.line = line.decode("utf-8", "replace")
        try:
            yield next(reader)
        except csv.Error:
            feed.line = None
            yield []
        except StopIteration:  # an empty line
            yield []


def _bump(table: dict[Any, int], key: Any, n: int = 1) -> None:
    table[key] = table.get(key, 0) + n


# Exchange logs a failed AUTH as context before (or instead of) the 535 reply; 2010 words it differently.
_AUTH_FAILED = re.compile(r"Inbound (?:AUTH (\S+)|authentication) failed", re.I)
_USER_NAME = re.compile(r"^User Name:\s*(\S+)", re.I)
_OPEN_SESSIONS = 10_000  # sessions whose AUTH outcome is remembered, so one failure is counted once


@dataclass(frozen=True)
class AuthFailure:
    """A failed SMTP AUTH attempt, for the evidence store: who (from the "User Name:" context line) and from where."""

    user: str
    time: float | None
    connector: str
    client_ip: str
    mechanism: str


@dataclass
class _Attempt:
    connector: str
    client_ip: str
    time: float | None
    mechanism: str = ""
    failed: bool = False
    user: str = ""
    reported: bool = False


def _log_time(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _address(endpoint: str) -> str:
    """'203.0.113.7:5100' or '[2001:db8::1]:5100' -> the address."""
    host = endpoint.rpartition(":")[0] if endpoint.count(":") == 1 or endpoint.startswith("[") else endpoint
    return host.strip("[]")


class SmtpCounts:
    """An SMTP receive or send protocol log: sessions, replies, TLS and AUTH outcomes per connector.

    A failed AUTH shows as a context line ("Inbound AUTH LOGIN failed because of LogonDenied", sometimes twice)
    and/or a 535 reply: each attempt counts once, whichever of them the log holds.
    """

    REQUIRED = ("connector-id", "event", "data")

    def __init__(self, direction: str) -> None:
        self.direction = direction  # "receive" or "send"
        self.sessions: dict[str, int] = {}
        self.responses: dict[tuple[str, str, str], int] = {}
        self.tls: dict[tuple[str, str], int] = {}
        self.auth: dict[tuple[str, str], int] = {}
        self.malformed = 0
        self._attempts: dict[str, _Attempt] = {}  # session id -> its current AUTH attempt
        self._failures: list[AuthFailure] = []

    def _attempt(self, session: str, connector: str, row: list[str], index: dict[str, int]) -> _Attempt:
        attempt = self._attempts.get(session)
        if attempt is None:
            remote = index.get("remote-endpoint")
            when = index.get("date-time")
            attempt = self._attempts[session] = _Attempt(
                connector,
                _address(row[remote]) if remote is not None else "",
                _log_time(row[when]) if when is not None else None,
            )
            if len(self._attempts) > _OPEN_SESSIONS:
                self._end(next(iter(self._attempts)))
        return attempt

    def _auth_failure(self, attempt: _Attempt) -> None:
        if attempt.failed:
            return
        attempt.failed = True
        _bump(self.auth, (attempt.connector, "failure"))
        self._report(attempt)

    def _report(self, attempt: _Attempt) -> None:
        if attempt.failed and attempt.user and not attempt.reported:
            attempt.reported = True
            self._failures.append(
                AuthFailure(attempt.user, attempt.time, attempt.connector, attempt.client_ip, attempt.mechanism)
            )

    def _end(self, session: str) -> None:
        self._attempts.pop(session, None)

    def take_auth_failures(self) -> list[AuthFailure]:
        """The failed AUTH attempts with a user name read since the last call."""
        out, self._failures = self._failures, []
        return out

    def count(self, data_rows: Iterable[list[str]], index: dict[str, int]) -> None:
        connector_at, event_at, data_at = (index[n] for n in self.REQUIRED)
        context_at = index.get("context")
        session_at = index.get("session-id")
        width = max(index.values()) + 1
        receive = self.direction == "receive"
        # Replies are what the server says in a receive log (">") and what the remote host says in a send log ("<").
        reply_event = ">" if receive else "<"
        for row in data_rows:
            if len(row) < width:
                self.malformed += 1
                continue
            connector, event, data = row[connector_at], row[event_at], row[data_at]
            session = row[session_at] if session_at is not None else ""
            if event == "+":
                _bump(self.sessions, connector)
            elif event == reply_event:
                reply = parse_reply(data)
                if reply is None:
                    continue
                _bump(self.responses, (connector, reply.code, reply.enhanced))
                if receive and reply.code == "235":
                    _bump(self.auth, (connector, "success"))
                elif receive and reply.code == "535":
                    self._auth_failure(self._attempt(session, connector, row, index))
            elif event == "*":
                context = row[context_at] if context_at is not None else ""
                text = f"{data} {context}"
                if "TLS negotiation failed" in text:
                    _bump(self.tls, (connector, "failure"))
                elif "TLS protocol" in text and "succeeded" in text:
                    _bump(self.tls, (connector, "success"))
                elif receive and (failed := _AUTH_FAILED.search(text)):
                    attempt = self._attempt(session, connector, row, index)
                    attempt.mechanism = attempt.mechanism or (failed.group(1) or "").upper()
                    self._auth_failure(attempt)
                elif receive and (user := _USER_NAME.match(context.strip() or data.strip())):
                    attempt = self._attempt(session, connector, row, index)
                    attempt.user = user.group(1).lower()
                    self._report(attempt)
            elif receive and event == "<" and data[:5].upper() == "AUTH ":
                self._end(session)  # a new attempt
                self._attempt(session, connector, row, index).mechanism = data[5:].split(" ")[0].upper()
            elif event == "-":
                self._end(session)

    def state(self) -> dict[str, Any]:
        return {
            "sessions": sorted(self.sessions.items()),
            "responses": [[*k, n] for k, n in sorted(self.responses.items())],
            "tls": [[*k, n] for k, n in sorted(self.tls.items())],
            "auth": [[*k, n] for k, n in sorted(self.auth.items())],
            "malformed": self.malformed,
        }

    def load(self, saved: dict[str, Any] | None) -> None:
        if not saved:
            return
        self.sessions = {c: n for c, n in saved.get("sessions", [])}
        self.responses = {(c, code, enh): n for c, code, enh, n in saved.get("responses", [])}
        self.tls = {(c, o): n for c, o, n in saved.get("tls", [])}
        self.auth = {(c, o): n for c, o, n in saved.get("auth", [])}
        self.malformed = int(saved.get("malformed", 0))


class TrackingCounts:
    """A message tracking log: events by event-id, source, connector and directionality; FAIL/DSN by status."""

    REQUIRED = ("event-id", "source")

    def __init__(self) -> None:
        self.events: dict[tuple[str, str, str, str], int] = {}
        self.failures: dict[tuple[str, str, str], int] = {}
        self.malformed = 0

    def count(self, data_rows: Iterable[list[str]], index: dict[str, int]) -> None:
        event_at, source_at = index["event-id"], index["source"]
        status_at = index.get("recipient-status")
        connector_at = index.get("connector-id")
        direction_at = index.get("directionality")
        width = max(index.values()) + 1
        for row in data_rows:
            if len(row) < width:
                self.malformed += 1
                continue
            event, source = row[event_at].upper(), row[source_at].upper()
            if not event.isalpha() or len(event) > 20 or len(source) > 30:
                self.malformed += 1  # never a label value
                continue
            direction = row[direction_at] if direction_at is not None else ""
            connector = row[connector_at][:80] if connector_at is not None else ""
            _bump(
                self.events, (event, source, connector, direction if direction in ("Incoming", "Originating") else "")
            )
            if event in ("FAIL", "DSN", "DEFER") and status_at is not None:
                # recipient-status holds one reply per recipient, separated by ';'; the first names the cause.
                chain = parse_reply_chain(row[status_at].split(";")[0])
                reply = chain.root_cause
                _bump(self.failures, (event, reply.code if reply else "", reply.enhanced if reply else ""))

    def state(self) -> dict[str, Any]:
        return {
            "events": [[*k, n] for k, n in sorted(self.events.items())],
            "failures": [[*k, n] for k, n in sorted(self.failures.items())],
            "malformed": self.malformed,
        }

    def load(self, saved: dict[str, Any] | None) -> None:
        if not saved:
            return
        self.events = {(e, s, c, d): n for e, s, c, d, n in saved.get("events", [])}
        self.failures = {(e, c, x): n for e, c, x, n in saved.get("failures", [])}
        self.malformed = int(saved.get("malformed", 0))
