"""Security events from domain controllers: lockouts (4740), failed logons (4625), Kerberos pre-authentication
(4771) and NTLM validation (4776), over PowerShell remoting or from forwarded files.

Remoting: on each DC, ``Get-WinEvent -LogName Security -FilterXPath "...EventRecordID>N" -MaxEvents B -Oldest |
ForEach-Object -MemberName ToXml`` (cmdlets with parameters, no script; Event Log Readers is enough), so each
refresh reads the events after that DC's bookmark in bounded batches. Files: Samba's auth_json_audit log,
Winlogbeat JSON lines and exported event XML, followed by the tailer. The counters are stored with the
bookmark or file checkpoint that produced them, in one transaction: across restarts nothing is counted twice
and nothing is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.config import EventFile, SecurityEventsConfig
from exporter.parsers import events as ev
from exporter.parsers.clixml import ClixmlError, parse_object
from exporter.registry import Collector, Redactor, TargetStatus, capped_series_family, parse_errors_family
from exporter.sources.credential_guard import CredentialGuard
from exporter.sources.tail import Lines, Tailer
from exporter.sources.winrm import PsrpClient, RemotingCredential, RemotingError, RemotingTarget
from exporter.state import StateStore
from exporter.window import SourceWindow

log = logging.getLogger(__name__)

OTHER = "<other>"
NO_EVENTS = "NoMatchingEventsFound"  # Get-WinEvent's error when nothing matches: not a failure
_RECORD_ID = re.compile(r"<EventRecordID>\s*(\d+)\s*</EventRecordID>")
SOURCE_KINDS = ("caller_computer", "ip", "workstation")
_FILE_BATCH_BYTES = 4 * 1024 * 1024  # lines read, parsed and committed at a time


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


class SecurityEventsCollector(Collector):
    name = "security_events"

    def __init__(
        self,
        config: SecurityEventsConfig,
        guard: CredentialGuard,
        state: StateStore,
        redact: Redactor | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        timeout = config.winrm.timeout_seconds * 2 * config.winrm.max_batches_per_refresh if config.winrm else 10.0
        super().__init__(config.name.lower(), config.interval_seconds, timeout=min(config.interval_seconds, timeout))
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
            credential = RemotingCredential(remoting.auth.method, remoting.auth.user, remoting.auth.password)
            for dc in remoting.domain_controllers:
                target = RemotingTarget(
                    name=dc.name.lower(),
                    host=dc.host or dc.name,
                    port=dc.port or remoting.default_port,
                    scheme=remoting.scheme,
                    path=remoting.path,
                    configuration=remoting.configuration_name,
                    verify=remoting.tls.verify,
                    ca_file=remoting.tls.ca_file,
                    encryption=remoting.encryption,
                    timeout=remoting.timeout_seconds,
                )
                self.clients[dc.name.lower()] = PsrpClient(target, credential, guard, remoting.bind_retry_after_seconds)
        self.files = [
            _FileSource(
                f,
                Tailer(
                    [f.path],
                    start_at=f.start_at,
                    max_line_bytes=f.max_line_bytes,
                    saved=state.get(f"{self._key}/file/{f.path}"),
                ),
                state.get(f"{self._key}/pending/{f.path}", {}),
            )
            for f in config.files
        ]
        workers = (remoting.max_concurrent_servers if remoting else 0) + 1
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"events-{self.target}")
        self._semaphore = asyncio.Semaphore(workers)

    # --- counting and committing -------------------------------------------------------------------------------

    def _commit_events(
        self, events: Iterable[ev.SecurityEvent], dc_of: Callable[[ev.SecurityEvent], str], extra: dict[str, Any]
    ) -> tuple[int, float]:
        """Count the events and store the counters with ``extra`` (a bookmark, a checkpoint) atomically."""
        with self._commit:
            counts, lockouts = self.counts.copy(), self.lockouts.copy()
            counted, newest = 0, 0.0
            sources: list[tuple[float, str, str, str]] = []
            for event in events:
                if event.event_id not in self.event_ids:
                    continue
                dc = dc_of(event)
                counts[(dc, event.event_id, event.reason, event.protocol)] += 1
                counted += 1
                when = event.time or self.clock()
                newest = max(newest, when)
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
            self.counts, self.lockouts = counts, lockouts
            for source in sources:
                self.window.add(*source)
            return counted, newest

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
                events.append(ev.parse_event_xml(xml))
            except ev.EventParseError as exc:
                errors.append(str(exc))
        return events, record_ids

    def _collect_dc(self, dc: str) -> DcStatus:
        """Runs in a worker thread: batches after the bookmark until caught up or the per-refresh limit."""
        remoting = self.config.winrm
        assert remoting is not None
        client = self.clients[dc]
        status = DcStatus("winrm", newest_event=self.status.get((dc, "winrm"), DcStatus("winrm")).newest_event)
        bookmark_key = f"{self._key}/bookmark/{dc}"
        errors: list[str] = []
        if not client.lock.acquire(timeout=remoting.timeout_seconds):
            raise RemotingError("timeout", "an earlier request to this DC is still waiting for an answer")
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
            client.lock.release()
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
        loop = asyncio.get_running_loop()
        async with self._semaphore:
            try:
                status = await asyncio.wait_for(
                    loop.run_in_executor(self._executor, self._collect_dc, dc), timeout=self.timeout
                )
            except (RemotingError, TimeoutError) as exc:
                reason = exc.reason if isinstance(exc, RemotingError) else "timeout"
                previous = self.status.get((dc, "winrm"), DcStatus("winrm"))
                status = DcStatus(
                    "winrm",
                    False,
                    reason,
                    self.redact(f"{reason}: {exc}"),
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
        while True:
            chunks = source.tailer.poll(max_bytes=_FILE_BATCH_BYTES)
            self._count_lines(source, chunks)
            if not chunks or time.monotonic() > deadline:
                break

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
                        events.extend(self._xml_lines(source, chunk.path, line, errors))
                except ev.EventParseError as exc:
                    errors.append(f"{chunk.path}: {exc}")
        fixed_dc = (source.config.dc or "").lower()
        _, newest = self._commit_events(
            events,
            lambda e: fixed_dc or e.computer or "unknown",
            {
                f"{self._key}/file/{source.config.path}": source.tailer.checkpoint(),
                f"{self._key}/pending/{source.config.path}": source.pending,
            },
        )
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
                out.append(ev.parse_event_xml(joined[start : joined.rfind("</Event>") + len("</Event>")]))
            except ev.EventParseError as exc:
                errors.append(str(exc))
        elif len(pending) > 2000:
            errors.append(f"{path}: an <Event> without its end after 2000 lines; dropped")
            source.pending[path] = []
        return out

    # --- refresh -----------------------------------------------------------------------------------------------

    async def collect(self) -> list[Metric]:
        loop = asyncio.get_running_loop()
        tasks: list[Awaitable[None]] = [self._refresh_dc(dc) for dc in self.clients]
        tasks += [loop.run_in_executor(self._executor, self._read_file, source) for source in self.files]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.error("security events: %s", self.redact(f"{type(result).__name__}: {result}"))
        self.window.prune(self.clock())
        return self._metrics()

    def _metrics(self) -> list[Metric]:
        target = self.target
        events = CounterMetricFamily(
            "ad_security_events",
            "Security events read from the DCs (persisted across restarts with the bookmark that read them).",
            labels=["dc", "event_id", "reason", "protocol"],
        )
        for (dc, event_id, reason, protocol), n in sorted(self.counts.items()):
            events.add_metric([dc, str(event_id), reason, protocol], n)
        lockouts = CounterMetricFamily(
            "ad_security_lockouts",
            "Lockout events (4740) by where the lockout came "
            "from: a domain computer, or a non-domain source (blank caller computer: "
            "a phone on ActiveSync, a proxy, a Unix host).",
            labels=["dc", "caller_kind"],
        )
        for (dc, kind), n in sorted(self.lockouts.items()):
            lockouts.add_metric([dc, kind], n)
        top = GaugeMetricFamily(
            "ad_security_event_source_failures",
            "Failed logons and lockouts per source over the source window, for the top sources "
            '(cap top_sources); source="<other>" sums the rest.',
            labels=["kind", "source"],
        )
        spread = GaugeMetricFamily(
            "ad_security_event_source_accounts",
            "Distinct accounts each top source failed on over the source window: one source, "
            "many accounts is a password spray.",
            labels=["kind", "source"],
        )
        capped = capped_series_family()
        left_out = 0
        for kind in SOURCE_KINDS:
            totals = self.window.totals(kind)
            ranked = sorted(totals.items(), key=lambda kv: (-kv[1][0], -len(kv[1][1]), kv[0]))
            by_accounts = sorted(totals.items(), key=lambda kv: (-len(kv[1][1]), -kv[1][0], kv[0]))
            cap = self.config.top_sources
            keep = {s for s, _ in ranked[:cap]} | {s for s, _ in by_accounts[:cap]}
            rest = 0
            for source, (count, users) in totals.items():
                if source in keep:
                    top.add_metric([kind, source], count)
                    spread.add_metric([kind, source], len(users))
                else:
                    rest += count
                    left_out += 1
            if rest:
                top.add_metric([kind, OTHER], rest)
        capped.add_metric([self.name, target, "ad_security_event_source_failures"], left_out)
        up = GaugeMetricFamily(
            "ad_security_events_source_up",
            "1 if the DC's events were read in the last refresh.",
            labels=["dc", "source"],
        )
        error_reason = GaugeMetricFamily(
            "ad_security_events_source_error_reason",
            "Why reading the DC's events failed.",
            labels=["dc", "source", "reason"],
        )
        last = GaugeMetricFamily(
            "ad_security_events_last_collection_timestamp_seconds",
            "When the DC's events were last read successfully.",
            labels=["dc", "source"],
        )
        newest = GaugeMetricFamily(
            "ad_security_events_newest_timestamp_seconds", "Time of the newest event read from the DC.", labels=["dc"]
        )
        lag = GaugeMetricFamily(
            "ad_security_events_lag_seconds",
            "How far behind the DC's log the collector is while it works off a backlog (0 when caught up).",
            labels=["dc"],
        )
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
        parse_errors = parse_errors_family(self.name, target, self.parse_errors_total)
        overlong = CounterMetricFamily(
            "ad_exchange_exporter_log_overlong_lines",
            "Log lines longer than max_line_bytes, skipped.",
            labels=["collector", "path"],
        )
        for file_source in self.files:
            overlong.add_metric([self.name, file_source.config.path], file_source.tailer.stats.overlong_lines)
        return [events, lockouts, top, spread, up, error_reason, last, newest, lag, capped, parse_errors, overlong]

    def target_status(self) -> list[TargetStatus]:
        return [TargetStatus(f"{dc} ({source})", s.up, s.detail) for (dc, source), s in sorted(self.status.items())]

    async def close(self) -> None:
        # Wait for reads in flight: their commit must land before a reloaded collector reads the bookmarks.
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        for client in self.clients.values():
            client.close()
