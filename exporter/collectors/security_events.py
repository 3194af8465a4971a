"""Security events from domain controllers: lockouts (4740), failed logons (4625), Kerberos pre-authentication
(4771) and NTLM validation (4776), over PowerShell remoting or from forwarded files.

Remoting: on each DC, ``Get-WinEvent -LogName Security -FilterXPath "...EventRecordID>N" -MaxEvents B -Oldest |
ForEach-Object -MemberName ToXml`` (cmdlets with parameters, no script; Event Log Readers is enough), so each
refresh reads the events after that DC's bookmark in bounded batches. Files: Samba's auth_json_audit log,
Winlogbeat JSON lines and exported event XML, followed by the tailer. The counters are stored with the
bookmark or file checkpoint that produced them, in one transaction, with each failure's and lockout's evidence
(account, DC, reason, source address, workstation, caller computer) for investigations: across restarts nothing
is counted or kept twice and nothing is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from exporter import clock as domain_time
from exporter.config import EventFile, SecurityEventsConfig
from exporter.metrics import CAPPED_SERIES, OTHER, PARSE_ERRORS, Caps, Family, Series
from exporter.parsers import events as ev
from exporter.parsers.clixml import ClixmlError, parse_object
from exporter.registry import Collector, Redactor, TargetStatus
from exporter.sources.credential_guard import CredentialGuard
from exporter.sources.tail import Lines, Tailer
from exporter.sources.winrm import (
    AUTHENTICATION_REASONS,
    PsrpClient,
    RemotingCredential,
    RemotingError,
    RemotingTarget,
    close_clients,
)
from exporter.state import Evidence, StateError, StateStore
from exporter.window import SourceWindow

log = logging.getLogger(__name__)

NO_EVENTS = "NoMatchingEventsFound"  # Get-WinEvent's error when nothing matches: not a failure
_RECORD_ID = re.compile(r"<EventRecordID>\s*(\d+)\s*</EventRecordID>")
SOURCE_KINDS = ("caller_computer", "ip", "workstation")
_FILE_BATCH_BYTES = 4 * 1024 * 1024  # lines read, parsed and committed at a time


AD_SECURITY_EVENTS_TOTAL = Family(
    "ad_security_events_total",
    "counter",
    "Security events read from the DCs (persisted across restarts with the bookmark that read them), by named "
    "reason (wrong_password, no_such_user, account_locked_out, account_disabled, password_expired, preauth_failed "
    "for Kerberos 0x18, ...; unknown codes as hex) and protocol (kerberos, ntlm, ldap_simple, negotiate).",
    ("dc", "event_id", "reason", "protocol"),
)
AD_SECURITY_LOCKOUTS_TOTAL = Family(
    "ad_security_lockouts_total",
    "counter",
    "Lockout events (4740) by where the lockout came "
    "from: a domain computer, or a non-domain source (blank caller computer: "
    "a phone on ActiveSync, a proxy, a Unix host).",
    ("dc", "caller_kind"),
)
AD_SECURITY_EVENT_SOURCE_FAILURES = Family(
    "ad_security_event_source_failures",
    "gauge",
    "Failed logons and lockouts per source over the source window, for the top sources "
    '(cap top_sources); source="<other>" sums the rest.',
    ("kind", "source"),
)
AD_SECURITY_EVENT_SOURCE_ACCOUNTS = Family(
    "ad_security_event_source_accounts",
    "gauge",
    "Distinct accounts each top source failed on over the source window: one source, "
    "many accounts is a password spray.",
    ("kind", "source"),
)
AD_SECURITY_EVENTS_SOURCE_UP = Family(
    "ad_security_events_source_up",
    "gauge",
    "1 if the DC's events were read in the last refresh.",
    ("dc", "source"),
)
AD_SECURITY_EVENTS_SOURCE_ERROR_REASON = Family(
    "ad_security_events_source_error_reason",
    "gauge",
    "Why reading the DC's events failed (1 for the reason): the file's (unreadable, state_database: the state "
    "database refused the commit, the lines are read again once it takes them) or over remoting "
    "unreachable, timeout, tls_error, server_error, cmdlet_error, access_denied, wsman_fault; "
    + AUTHENTICATION_REASONS
    + ".",
    ("dc", "source", "reason"),
)
AD_SECURITY_EVENTS_LAST_COLLECTION_TIMESTAMP_SECONDS = Family(
    "ad_security_events_last_collection_timestamp_seconds",
    "gauge",
    "When the DC's events were last read successfully.",
    ("dc", "source"),
)
AD_SECURITY_EVENTS_NEWEST_TIMESTAMP_SECONDS = Family(
    "ad_security_events_newest_timestamp_seconds",
    "gauge",
    "Time of the newest event read from the DC.",
    ("dc",),
)
AD_SECURITY_EVENTS_LAG_SECONDS = Family(
    "ad_security_events_lag_seconds",
    "gauge",
    "How far behind the DC's log the collector is while it works off a backlog (0 when caught up).",
    ("dc",),
)
AD_SECURITY_EVENTS_NOT_READ_TOTAL = Family(
    "ad_security_events_not_read_total",
    "counter",
    "Well-formed events in the event files of IDs this exporter does not read (4768, 4672, 5145, 1102...): "
    "passed over, not parse errors.",
    ("path",),
)
AD_EXCHANGE_EXPORTER_LOG_OVERLONG_LINES_TOTAL = Family(
    "ad_exchange_exporter_log_overlong_lines_total",
    "counter",
    "Log lines longer than max_line_bytes, skipped.",
    ("collector", "path"),
)


@dataclass
class DcStatus:
    source: str  # "winrm", or "file:<format>"
    up: bool = False
    reason: str = ""
    detail: str = ""
    last_collection: float = 0.0
    newest_event: float = 0.0
    lag: float = 0.0
    backlog: bool = False


@dataclass
class _FileSource:
    config: EventFile
    tailer: Tailer
    # Lines of an <Event> not yet closed (event_xml files span lines); kept in the checkpoint.
    pending: dict[str, list[str]] = field(default_factory=dict)
    not_read: int = 0  # well-formed events of IDs this exporter does not read, passed over
    # (checkpoint, pending) as the state database holds them: where a refused commit rewinds to.
    committed: tuple[dict[str, Any] | None, dict[str, list[str]]] = (None, {})
    # One read at a time: a refresh given up on still runs in its thread; a second beside it would count twice.
    reading: threading.Lock = field(default_factory=threading.Lock)


class SecurityEventsCollector(Collector):
    name = "security_events"
    families = (
        AD_SECURITY_EVENTS_TOTAL,
        AD_SECURITY_LOCKOUTS_TOTAL,
        AD_SECURITY_EVENT_SOURCE_FAILURES,
        AD_SECURITY_EVENT_SOURCE_ACCOUNTS,
        AD_SECURITY_EVENTS_SOURCE_UP,
        AD_SECURITY_EVENTS_SOURCE_ERROR_REASON,
        AD_SECURITY_EVENTS_LAST_COLLECTION_TIMESTAMP_SECONDS,
        AD_SECURITY_EVENTS_NEWEST_TIMESTAMP_SECONDS,
        AD_SECURITY_EVENTS_LAG_SECONDS,
        AD_SECURITY_EVENTS_NOT_READ_TOTAL,
        AD_EXCHANGE_EXPORTER_LOG_OVERLONG_LINES_TOTAL,
        CAPPED_SERIES,
        PARSE_ERRORS,
    )

    def __init__(
        self,
        config: SecurityEventsConfig,
        guard: CredentialGuard,
        state: StateStore,
        redact: Redactor | None = None,
        clock: Callable[[], float] = domain_time.now,
    ) -> None:
        timeout = config.winrm.timeout_seconds * 2 * config.winrm.max_batches_per_refresh if config.winrm else 10.0
        super().__init__(
            config.name.lower(),
            config.interval_seconds,
            timeout=min(config.interval_seconds, timeout),
            # Every DC at once (bounded), and the files on one more worker.
            concurrency=(config.winrm.max_concurrent_servers if config.winrm else 0) + 1,
            error=RemotingError,
        )
        self.config = config
        self.state = state
        self.redact = redact or Redactor()
        self.clock = clock
        self.event_ids = set(config.event_ids)
        self._key = f"security_events/{self.target}"
        saved = state.get(f"{self._key}/counters", {})
        self.counts: Counter[tuple[str, int, str, str]] = Counter(
            {(dc, int(eid), reason, proto): n for dc, eid, reason, proto, n in saved.get("events", [])}
        )
        self.lockouts: Counter[tuple[str, str]] = Counter({(dc, kind): n for dc, kind, n in saved.get("lockouts", [])})
        self.window = SourceWindow(config.source_window_seconds)
        self.status: dict[tuple[str, str], DcStatus] = {}  # (dc, source): a DC can have several sources
        self.parse_errors_total = 0
        self._commit = threading.Lock()
        self.clients: dict[str, PsrpClient] = {}
        remoting = config.winrm
        if remoting is not None:
            credential = RemotingCredential.of(remoting)
            for dc in remoting.domain_controllers:
                target = RemotingTarget.of(remoting, dc)
                self.clients[dc.name.lower()] = PsrpClient(target, credential, guard, remoting.bind_retry_after_seconds)
        self.files = [
            self._file_source(
                f, state.get(f"{self._key}/file/{f.path}"), state.get(f"{self._key}/pending/{f.path}", {})
            )
            for f in config.files
        ]

    @staticmethod
    def _file_source(f: EventFile, checkpoint: dict[str, Any] | None, pending: dict[str, list[str]]) -> _FileSource:
        """A file source as last committed: where the file was read to and the <Event> lines still open there."""
        tailer = Tailer([f.path], start_at=f.start_at, max_line_bytes=f.max_line_bytes, saved=checkpoint)
        return _FileSource(f, tailer, {k: list(v) for k, v in pending.items()}, committed=(checkpoint, pending))

    # --- counting and committing -------------------------------------------------------------------------------

    def _commit_events(
        self, events: Iterable[ev.SecurityEvent], dc_of: Callable[[ev.SecurityEvent], str], extra: dict[str, Any]
    ) -> tuple[int, float]:
        """Count the events and store the counters with ``extra`` (a bookmark, a checkpoint) atomically."""
        with self._commit:
            counts, lockouts = self.counts.copy(), self.lockouts.copy()
            counted, newest = 0, 0.0
            sources: list[tuple[float, str, str, str]] = []
            evidence: list[Evidence] = []
            for event in events:
                if event.event_id not in self.event_ids:
                    continue
                dc = dc_of(event)
                counts[(dc, event.event_id, event.reason, event.protocol)] += 1
                counted += 1
                when = event.time or self.clock()
                newest = max(newest, when)
                if event.user and (event.failed or event.event_id == ev.LOCKOUT):
                    detail = event.evidence_detail()
                    evidence.append(Evidence(event.user, when, "security_event", dc, str(event.event_id), detail))
                if event.event_id == ev.LOCKOUT:
                    lockouts[(dc, event.caller_kind)] += 1
                    if event.caller_computer:
                        sources.append((when, "caller_computer", event.caller_computer.upper(), event.user))
                elif event.failed:
                    if event.ip:
                        sources.append((when, "ip", event.ip, event.user))
                    if event.workstation:
                        sources.append((when, "workstation", event.workstation.upper(), event.user))
            with self.state.transaction() as put:
                put(
                    f"{self._key}/counters",
                    {
                        "events": [
                            [dc, eid, reason, proto, n] for (dc, eid, reason, proto), n in sorted(counts.items())
                        ],
                        "lockouts": [[dc, kind, n] for (dc, kind), n in sorted(lockouts.items())],
                    },
                )
                for key, value in extra.items():
                    put(key, value)
                put.evidence(evidence)
            self.counts, self.lockouts = counts, lockouts
            for source in sources:
                self.window.add(*source)
            return counted, newest

    def behind(self) -> bool:
        return any(s.backlog and s.up for (_, source), s in self.status.items() if source == "winrm")

    # --- remoting ---------------------------------------------------------------------------------------------

    def _xpath(self, after: int) -> str:
        ids = " or ".join(f"EventID={i}" for i in sorted(self.event_ids))
        return f"*[System[({ids}) and EventRecordID>{after}]]"

    @staticmethod
    def _parse_xml_strings(answer: list[str], errors: list[str]) -> tuple[list[ev.SecurityEvent], list[int]]:
        """Each ToXml() string: the events that parse, and the EventRecordID of every record (parsed or not)."""
        events, record_ids = [], []
        for item in answer:
            try:
                xml = str(parse_object(item))
            except ClixmlError as exc:
                errors.append(str(exc))
                continue
            match = _RECORD_ID.search(xml)
            if match:
                record_ids.append(int(match.group(1)))
            try:
                event = ev.parse_event_xml(xml)
            except ev.EventParseError as exc:
                errors.append(str(exc))
            else:
                if event is not None:  # the XPath asks for the IDs read; anything else is passed over
                    events.append(event)
        return events, record_ids

    def _collect_dc(self, dc: str) -> DcStatus:
        """Runs in a worker thread holding the DC's client: batches after the bookmark until caught up or the
        per-refresh limit."""
        remoting = self.config.winrm
        assert remoting is not None
        client = self.clients[dc]
        status = DcStatus("winrm", newest_event=self.status.get((dc, "winrm"), DcStatus("winrm")).newest_event)
        bookmark_key = f"{self._key}/bookmark/{dc}"
        errors: list[str] = []
        try:
            bookmark = self.state.get(bookmark_key)
            if bookmark is None:
                bookmark = 0 if remoting.start_at == "beginning" else self._newest_record(client, errors)
                self.state.put_many({bookmark_key: bookmark})
            for _ in range(remoting.max_batches_per_refresh):
                answer = client.run_pipeline(
                    [
                        (
                            "Get-WinEvent",
                            {
                                "LogName": "Security",
                                "FilterXPath": self._xpath(bookmark),
                                "MaxEvents": remoting.batch_size,
                                "Oldest": True,
                            },
                        ),
                        ("ForEach-Object", {"MemberName": "ToXml"}),
                    ],
                    tolerate=(NO_EVENTS,),
                )
                events, ids = self._parse_xml_strings(answer, errors)
                # The bookmark moves past every record returned, also those that could not be parsed (counted
                # as parse errors), so one bad record never blocks the log.
                last = max([bookmark, *ids])
                _, newest = self._commit_events(events, lambda _e: dc, {bookmark_key: last})
                bookmark = last
                status.newest_event = max(status.newest_event, newest)
                status.backlog = len(answer) >= remoting.batch_size
                if not status.backlog:
                    break
            now = self.clock()
            status.lag = max(0.0, now - status.newest_event) if status.backlog and status.newest_event else 0.0
            status.up, status.last_collection = True, now
        finally:
            self._note_parse_errors(dc, errors)
        return status

    def _newest_record(self, client: PsrpClient, errors: list[str]) -> int:
        """Without a bookmark and starting at the end: the newest record of the Security log, whatever its ID."""
        answer = client.run_pipeline(
            [("Get-WinEvent", {"LogName": "Security", "MaxEvents": 1}), ("ForEach-Object", {"MemberName": "ToXml"})],
            tolerate=(NO_EVENTS,),
        )
        _, ids = self._parse_xml_strings(answer, [])
        if answer and not ids:
            errors.append("the newest Security event has no EventRecordID")
        return max(ids, default=0)

    def _note_parse_errors(self, where: str, errors: list[str]) -> None:
        self.parse_errors_total += len(errors)
        for error in errors[:5]:
            log.warning("%s/%s: skipped an event: %s", self.target, where, error)

    async def _refresh_dc(self, dc: str) -> None:
        try:
            status = await self.pool.run(
                self._collect_dc,
                dc,
                lock=self.clients[dc].lock,
                timeout=self.timeout,
                lock_timeout=self.clients[dc].target.timeout,
            )
        except RemotingError as exc:
            previous = self.status.get((dc, "winrm"), DcStatus("winrm"))
            status = DcStatus(
                "winrm",
                False,
                exc.reason,
                self.redact(f"{exc.reason}: {exc}"),
                previous.last_collection,
                previous.newest_event,
            )
            log.warning("security events from %s: %s", dc, status.detail)
        self.status[(dc, "winrm")] = status

    # --- files ------------------------------------------------------------------------------------------------

    def _read_file(self, source: _FileSource) -> None:
        """Runs in a worker thread: new lines of one file source, counted and checkpointed together, a few MiB
        at a time so that a large backlog never sits in memory whole."""
        deadline = time.monotonic() + self.config.interval_seconds / 2
        try:
            while True:
                chunks = source.tailer.poll(max_bytes=_FILE_BATCH_BYTES)
                self._count_lines(source, chunks)
                if source.tailer.problems:
                    self._note_unreadable(source)
                if not chunks or time.monotonic() > deadline or self.pool.closing:
                    break
        except StateError as exc:
            # Back to the last commit: the lines since are read again once the database takes them (no loss, no
            # double count), and nothing piles up in memory meanwhile.
            fresh = self._file_source(source.config, *source.committed)
            fresh.not_read = source.not_read
            self.files[self.files.index(source)] = fresh
            status = self._file_status(source)
            status.up, status.reason, status.detail = False, "state_database", str(exc)
            log.warning("security events from %s: %s", source.config.path, exc)

    def _file_status(self, source: _FileSource) -> DcStatus:
        """The status of a file source whose DC is not told by its events (the configured one, else unknown)."""
        fmt, dc = source.config.format, (source.config.dc or "unknown").lower()
        return self.status.setdefault((dc, f"file:{fmt}"), DcStatus(f"file:{fmt}"))

    def _note_unreadable(self, source: _FileSource) -> None:
        """The file's directory cannot be listed: its source is down (unreadable) until it can; the file waits at
        its offset."""
        status = self._file_status(source)
        detail = "; ".join(source.tailer.problems)
        if status.detail != detail:  # once, not at every read
            log.warning("security events from %s: %s", source.config.path, detail)
        status.up, status.reason, status.detail = False, "unreadable", detail

    def _count_lines(self, source: _FileSource, chunks: list[Lines]) -> None:
        fmt, errors = source.config.format, []
        events: list[ev.SecurityEvent] = []
        for chunk in chunks:
            for raw in chunk.lines:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    errors.append(f"{chunk.path}: not UTF-8")
                    continue
                try:
                    if fmt == "samba_auth_json":
                        event = ev.parse_samba_auth(line, (source.config.dc or "").lower())
                        if event is not None and event.event_id != ev.LOGON:
                            events.append(event)
                    elif fmt == "winlogbeat":
                        event = ev.parse_winlogbeat(line)
                        if event is not None:
                            events.append(event)
                        else:
                            source.not_read += 1
                    else:
                        events.extend(self._xml_lines(source, chunk.path, line, errors))
                except ev.EventParseError as exc:
                    errors.append(f"{chunk.path}: {exc}")
        fixed_dc = (source.config.dc or "").lower()
        _, newest = self._commit_events(
            events,
            lambda e: fixed_dc or e.computer or "unknown",
            {
                f"{self._key}/file/{source.config.path}": (checkpoint := source.tailer.checkpoint()),
                f"{self._key}/pending/{source.config.path}": (
                    pending := {k: list(v) for k, v in source.pending.items()}
                ),
            },
        )
        source.committed = (checkpoint, pending)
        now = self.clock()
        for dc in {fixed_dc} if fixed_dc else {e.computer or "unknown" for e in events}:
            status = self.status.setdefault((dc, f"file:{fmt}"), DcStatus(f"file:{fmt}"))
            status.up, status.last_collection = True, now
            status.newest_event = max(status.newest_event, newest)
        self._note_parse_errors(source.config.path, errors)

    @staticmethod
    def _xml_lines(source: _FileSource, path: str, line: str, errors: list[str]) -> list[ev.SecurityEvent]:
        """Exported event XML: gather the lines of each <Event> ... </Event>, wherever the line breaks fall."""
        pending = source.pending.setdefault(path, [])
        out: list[ev.SecurityEvent] = []
        text = line.strip()
        if not pending and "<Event" not in text.replace("<Events", ""):
            return out  # the <?xml?> declaration, <Events>, </Events>
        pending.append(line)
        if "</Event>" in text:
            joined = "\n".join(pending)
            source.pending[path] = []
            start = joined.find("<Event ") if "<Event " in joined else joined.find("<Event>")
            try:
                event = ev.parse_event_xml(joined[start : joined.rfind("</Event>") + len("</Event>")])
            except ev.EventParseError as exc:
                errors.append(str(exc))
            else:
                if event is None:
                    source.not_read += 1
                else:
                    out.append(event)
        elif len(pending) > 2000:
            errors.append(f"{path}: an <Event> without its end after 2000 lines; dropped")
            source.pending[path] = []
        return out

    # --- refresh -----------------------------------------------------------------------------------------------

    async def collect(self) -> list[Series]:
        tasks: list[Awaitable[None]] = [self._refresh_dc(dc) for dc in self.clients]
        tasks += [self.pool.run(self._read_file, source, lock=source.reading, lock_timeout=0) for source in self.files]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.error("security events: %s", self.redact(f"{type(result).__name__}: {result}"))
        self.window.prune(self.clock())
        return self._metrics()

    def _metrics(self) -> list[Series]:
        target = self.target
        events = AD_SECURITY_EVENTS_TOTAL.new()
        for (dc, event_id, reason, protocol), n in sorted(self.counts.items()):
            events.add_metric([dc, str(event_id), reason, protocol], n)
        lockouts = AD_SECURITY_LOCKOUTS_TOTAL.new()
        for (dc, kind), n in sorted(self.lockouts.items()):
            lockouts.add_metric([dc, kind], n)
        top = AD_SECURITY_EVENT_SOURCE_FAILURES.new()
        spread = AD_SECURITY_EVENT_SOURCE_ACCOUNTS.new()
        caps = Caps(self.name, target)
        caps.note(AD_SECURITY_EVENT_SOURCE_FAILURES)
        for kind in SOURCE_KINDS:
            # The most failures, and the most accounts (a spray), each get their top_sources.
            ranked = caps.top(
                AD_SECURITY_EVENT_SOURCE_FAILURES,
                self.window.totals(kind).items(),
                self.config.top_sources,
                lambda kv: (-kv[1][0], -len(kv[1][1]), kv[0]),
                lambda kv: (-len(kv[1][1]), -kv[1][0], kv[0]),
            )
            ranked.add(top, lambda kv: [kind, kv[0]], lambda kv: kv[1][0], other=[kind, OTHER])  # noqa: B023 - used at once
            for source, (_, users) in ranked.kept:
                spread.add_metric([kind, source], len(users))
        up = AD_SECURITY_EVENTS_SOURCE_UP.new()
        error_reason = AD_SECURITY_EVENTS_SOURCE_ERROR_REASON.new()
        last = AD_SECURITY_EVENTS_LAST_COLLECTION_TIMESTAMP_SECONDS.new()
        newest = AD_SECURITY_EVENTS_NEWEST_TIMESTAMP_SECONDS.new()
        lag = AD_SECURITY_EVENTS_LAG_SECONDS.new()
        per_dc: dict[str, tuple[float, float]] = {}
        for (dc, source), status in sorted(self.status.items()):
            up.add_metric([dc, source], 1.0 if status.up else 0.0)
            if not status.up:
                error_reason.add_metric([dc, source, status.reason], 1.0)
            last.add_metric([dc, source], status.last_collection)
            seen, behind = per_dc.get(dc, (0.0, 0.0))
            per_dc[dc] = (max(seen, status.newest_event), max(behind, status.lag))
        for dc, (seen, behind) in sorted(per_dc.items()):
            if seen:
                newest.add_metric([dc], seen)
            lag.add_metric([dc], behind)
        parse_errors = PARSE_ERRORS.one([self.name, target], self.parse_errors_total)
        overlong = AD_EXCHANGE_EXPORTER_LOG_OVERLONG_LINES_TOTAL.new()
        not_read = AD_SECURITY_EVENTS_NOT_READ_TOTAL.new()
        for file_source in self.files:
            overlong.add_metric([self.name, file_source.config.path], file_source.tailer.stats.overlong_lines)
            not_read.add_metric([file_source.config.path], file_source.not_read)
        return [
            events,
            lockouts,
            top,
            spread,
            up,
            error_reason,
            last,
            newest,
            lag,
            caps.series(),
            parse_errors,
            not_read,
            overlong,
        ]

    def target_status(self) -> list[TargetStatus]:
        return [TargetStatus(f"{dc} ({source})", s.up, s.detail) for (dc, source), s in sorted(self.status.items())]

    async def close(self) -> None:
        # Wait for reads in flight: their commit must land before a reloaded collector reads the bookmarks.
        await super().close()
        await close_clients(self.clients.values())
