"""Exchange's log files: IIS 401s by win32 status and protocol with the ActiveSync devices behind them, SMTP
protocol logs (replies, TLS, AUTH per connector) and message tracking (events, failures, loops).

Each kind of log has its own tailer. A few MiB of lines at a time are counted and then committed together with
the tailer's checkpoint, and the per-account evidence they hold (each distinct 401 with its device and address,
each failed SMTP AUTH with its user name), in one transaction, so a restart (even ``kill -9``) resumes exactly
where the counts stop: nothing is counted or kept twice, nothing is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from exporter import clock as domain_time
from exporter.config import ExchangeLogsConfig
from exporter.metrics import CAPPED_SERIES, OTHER, Caps, Family, Series
from exporter.parsers import exchange_logs as xl
from exporter.parsers import iis
from exporter.registry import Collector, Redactor, TargetStatus
from exporter.sources.tail import Lines, Tailer
from exporter.state import Evidence, StateError, StateStore
from exporter.window import SourceWindow

log = logging.getLogger(__name__)

_BATCH_BYTES = 4 * 1024 * 1024
_HEADER_SCAN_BYTES = 1024 * 1024
KINDS = ("iis", "smtp_receive", "smtp_send", "message_tracking")


EXCHANGE_HTTP_REQUESTS_TOTAL = Family(
    "exchange_http_requests_total",
    "counter",
    "Requests in the front end's IIS logs by protocol and sc-status.",
    (
        "server",
        "protocol",
        "status",
    ),
)
EXCHANGE_HTTP_UNAUTHORIZED_TOTAL = Family(
    "exchange_http_unauthorized_total",
    "counter",
    (
        "HTTP 401s by protocol, sc-substatus and sc-win32-status (1326 wrong password, 1330 expired, 1331 "
        "disabled, 1909 locked out)."
    ),
    (
        "server",
        "protocol",
        "substatus",
        "win32_status",
        "reason",
    ),
)
EXCHANGE_SMTP_RESPONSES_TOTAL = Family(
    "exchange_smtp_responses_total",
    "counter",
    (
        "SMTP replies in the protocol logs by connector and direction: what this server answered (receive) or "
        "the remote host answered (send)."
    ),
    (
        "server",
        "connector",
        "direction",
        "code",
        "enhanced_code",
    ),
)
EXCHANGE_SMTP_SESSIONS_TOTAL = Family(
    "exchange_smtp_sessions_total",
    "counter",
    "SMTP sessions opened, by connector and direction.",
    (
        "server",
        "connector",
        "direction",
    ),
)
EXCHANGE_SMTP_TLS_TOTAL = Family(
    "exchange_smtp_tls_total",
    "counter",
    "TLS negotiations in the protocol logs by outcome.",
    (
        "server",
        "connector",
        "direction",
        "outcome",
    ),
)
EXCHANGE_SMTP_AUTH_TOTAL = Family(
    "exchange_smtp_auth_total",
    "counter",
    "SMTP AUTH outcomes on receive connectors: success (235), failure (535, or Exchange's 'Inbound AUTH ... "
    "failed because of ...' context line; one failed attempt counts once).",
    (
        "server",
        "connector",
        "outcome",
    ),
)
EXCHANGE_MESSAGE_TRACKING_EVENTS_TOTAL = Family(
    "exchange_message_tracking_events_total",
    "counter",
    "Message tracking events by event-id, source, connector and directionality.",
    (
        "server",
        "event_id",
        "source",
        "connector",
        "directionality",
    ),
)
EXCHANGE_MESSAGE_TRACKING_FAILURES_TOTAL = Family(
    "exchange_message_tracking_failures_total",
    "counter",
    (
        "FAIL, DSN and DEFER events by the SMTP code of their recipient status (554 5.4.6: a loop; 550 5.1.10: "
        "recipient not found)."
    ),
    (
        "server",
        "event_id",
        "code",
        "enhanced_code",
    ),
)
EXCHANGE_LOG_LINES_TOTAL = Family(
    "exchange_log_lines_total",
    "counter",
    "Lines read from the server's logs.",
    (
        "server",
        "log",
    ),
)
EXCHANGE_LOG_MALFORMED_LINES_TOTAL = Family(
    "exchange_log_malformed_lines_total",
    "counter",
    (
        "Lines that could not be counted (wrong field count, garbage status codes, a #Fields: header without "
        "the needed columns), skipped."
    ),
    (
        "server",
        "log",
    ),
)
EXCHANGE_LOG_OVERLONG_LINES_TOTAL = Family(
    "exchange_log_overlong_lines_total",
    "counter",
    "Lines longer than max_line_bytes, skipped.",
    (
        "server",
        "log",
    ),
)
EXCHANGE_LOG_ROTATIONS_TOTAL = Family(
    "exchange_log_rotations_total",
    "counter",
    "Rotations followed (rename, or a copy of a truncated file) since start.",
    (
        "server",
        "log",
    ),
)
EXCHANGE_LOG_TRUNCATIONS_TOTAL = Family(
    "exchange_log_truncations_total",
    "counter",
    "Files found truncated (copytruncate) since start.",
    (
        "server",
        "log",
    ),
)
EXCHANGE_LOG_LAST_READ_TIMESTAMP_SECONDS = Family(
    "exchange_log_last_read_timestamp_seconds",
    "gauge",
    "When the server's logs of this kind were last read without error.",
    ("server", "log"),
)
EXCHANGE_LOG_FILES = Family(
    "exchange_log_files",
    "gauge",
    "Files being followed.",
    ("server", "log"),
)
EXCHANGE_LOG_UNREADABLE_DIRECTORIES = Family(
    "exchange_log_unreadable_directories",
    "gauge",
    "Log directories that could not be listed at the last read (permissions, a share gone; which and why: the "
    "exporter's log and its landing page). Their files wait at their offsets and are read on from there once "
    "they can be.",
    ("server", "log"),
)
EXCHANGE_HTTP_UNAUTHORIZED_USER_FAILURES = Family(
    "exchange_http_unauthorized_user_failures",
    "gauge",
    '401s per user over the window, top top_users; user="<other>" sums the rest.',
    ("server", "user"),
)
EXCHANGE_ACTIVESYNC_DEVICE_FAILURES = Family(
    "exchange_activesync_device_failures",
    "gauge",
    "ActiveSync 401s per device over the window (top top_devices), with the device's "
    "last client address and win32 status.",
    ("server", "user", "device_id", "device_type", "client_ip", "win32_status"),
)
EXCHANGE_ACTIVESYNC_DEVICE_LOCKING_OUT = Family(
    "exchange_activesync_device_locking_out",
    "gauge",
    "1 for a device that failed with 1326 (wrong password) and then 1909 (locked out) "
    "within the window: a phone with an old password locking its user out.",
    ("server", "user", "device_id", "device_type"),
)


@dataclass
class Device:
    """An ActiveSync device's 401s within the window."""

    failures: int = 0
    last_seen: float = 0.0
    client_ip: str = ""
    win32_status: str = ""
    saw_wrong_password: bool = False  # 1326
    locking_out: bool = False  # 1909 after 1326: the phone with the old password locks its user out


@dataclass
class LogSource:
    kind: str
    tailer: Tailer
    counts: Any  # IisCounts, SmtpCounts or TrackingCounts
    # The #Fields: directive in force per file identity (persisted: a restart resumes past the header).
    fields: dict[str, str] = field(default_factory=dict)
    lines: int = 0
    last_read: float = 0.0
    error: str = ""
    # Per-account evidence read since the last commit, stored with the checkpoint.
    evidence: list[Evidence] = field(default_factory=list)
    committed: dict[str, Any] = field(default_factory=dict)  # what the state database holds of this source


class ExchangeLogsCollector(Collector):
    name = "exchange_logs"
    families = (
        EXCHANGE_HTTP_REQUESTS_TOTAL,
        EXCHANGE_HTTP_UNAUTHORIZED_TOTAL,
        EXCHANGE_SMTP_RESPONSES_TOTAL,
        EXCHANGE_SMTP_SESSIONS_TOTAL,
        EXCHANGE_SMTP_TLS_TOTAL,
        EXCHANGE_SMTP_AUTH_TOTAL,
        EXCHANGE_MESSAGE_TRACKING_EVENTS_TOTAL,
        EXCHANGE_MESSAGE_TRACKING_FAILURES_TOTAL,
        EXCHANGE_LOG_LINES_TOTAL,
        EXCHANGE_LOG_MALFORMED_LINES_TOTAL,
        EXCHANGE_LOG_OVERLONG_LINES_TOTAL,
        EXCHANGE_LOG_ROTATIONS_TOTAL,
        EXCHANGE_LOG_TRUNCATIONS_TOTAL,
        EXCHANGE_LOG_LAST_READ_TIMESTAMP_SECONDS,
        EXCHANGE_LOG_FILES,
        EXCHANGE_LOG_UNREADABLE_DIRECTORIES,
        EXCHANGE_HTTP_UNAUTHORIZED_USER_FAILURES,
        EXCHANGE_ACTIVESYNC_DEVICE_FAILURES,
        EXCHANGE_ACTIVESYNC_DEVICE_LOCKING_OUT,
        CAPPED_SERIES,
    )

    def __init__(
        self,
        config: ExchangeLogsConfig,
        state: StateStore,
        redact: Redactor | None = None,
        clock: Callable[[], float] = domain_time.now,
    ) -> None:
        super().__init__(config.server.lower(), config.interval_seconds, timeout=config.interval_seconds)
        self.config = config
        self.state = state
        self.redact = redact or Redactor()
        self.clock = clock
        self.server = config.server.lower()
        self._key = f"exchange_logs/{self.server}"
        self.sources = [
            self._source(kind, state.get(f"{self._key}/{kind}", {})) for kind in KINDS if getattr(config, kind)
        ]
        self.users = SourceWindow(config.window_seconds)
        self.devices: dict[tuple[str, str, str], Device] = {}
        # One read at a time: a refresh the registry gave up on (its deadline) still runs in its thread, and a
        # second read of the same files beside it would count lines twice.
        self._reading = threading.Lock()

    def _source(self, kind: str, saved: dict[str, Any]) -> LogSource:
        """A log source as last committed (``saved``): where each file was read to and what it counted."""
        config = self.config
        counts: Any = (
            iis.IisCounts()
            if kind == "iis"
            else xl.TrackingCounts()
            if kind == "message_tracking"
            else xl.SmtpCounts("receive" if kind == "smtp_receive" else "send")
        )
        counts.load(saved.get("counts"))
        tailer = Tailer(
            getattr(config, kind),
            start_at=config.start_at,
            max_line_bytes=config.max_line_bytes,
            saved=saved.get("checkpoint"),
        )
        source = LogSource(kind, tailer, counts, dict(saved.get("fields", {})), int(saved.get("lines", 0)))
        source.committed = saved
        return source

    # --- reading -------------------------------------------------------------------------------------------

    def _read_all(self) -> None:
        deadline = time.monotonic() + self.config.interval_seconds * 0.8
        for i, source in enumerate(self.sources):
            if self.pool.closing:
                return  # what is committed stands; the rest is read after the restart
            try:
                while True:
                    chunks = source.tailer.poll(max_bytes=_BATCH_BYTES)
                    self._count(source, chunks)
                    self._commit(source)
                    if problems := "; ".join(source.tailer.problems):
                        if source.error != problems:  # once, not at every read
                            log.warning("%s %s logs: %s", self.server, source.kind, problems)
                        source.error = problems
                    else:
                        source.last_read, source.error = self.clock(), ""
                    if not chunks or time.monotonic() > deadline or self.pool.closing:
                        break
            except OSError as exc:
                source.error = self.redact(f"{type(exc).__name__}: {exc}")
                log.warning("%s %s logs: %s", self.server, source.kind, source.error)
            except StateError as exc:
                # Back to what was last committed: the lines since are read again once the database takes them,
                # so none is lost and none is counted twice; nothing piles up in memory meanwhile.
                self.sources[i] = self._source(source.kind, source.committed)
                self.sources[i].error = f"not read on: {exc}"
                log.warning("%s %s logs: %s", self.server, source.kind, self.sources[i].error)
                return  # the other kinds would wait on the same database: they are read at the next refresh

    def _commit(self, source: LogSource) -> None:
        saved = {
            "checkpoint": source.tailer.checkpoint(),
            "counts": source.counts.state(),
            "fields": dict(source.fields),
            "lines": source.lines,
        }
        with self.state.transaction() as put:
            put(f"{self._key}/{source.kind}", saved)
            put.evidence(source.evidence)
        source.evidence, source.committed = [], saved

    def _header(self, path: str, upto: int) -> str:
        """The last #Fields: directive before ``upto``, for a file first met past its header (started at its end,
        a copy adopted from its truncated original). Directives are found with bytes.find, MiBs at a time."""
        last = -1
        try:
            with open(path, "rb") as handle:
                position = 0
                while position < upto:
                    block = handle.read(min(_HEADER_SCAN_BYTES, upto - position))
                    if not block:
                        break
                    found = block.rfind(b"#Fields:")
                    if found != -1 and (found == 0 or block[found - 1 : found] == b"\n" or position + found <= 3):
                        last = position + found
                    position += len(block) - 16 if len(block) > 16 else len(block)  # a directive split across reads
                    handle.seek(position)
                if last < 0:
                    return ""
                handle.seek(last)
                return handle.readline().decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def _runs(self, source: LogSource, chunk: Lines) -> list[tuple[str, list[bytes]]]:
        """The chunk's data lines in runs under one #Fields: directive each."""
        current = source.fields.get(chunk.identity) or self._header(chunk.path, chunk.start)
        source.fields[chunk.identity] = current
        if not chunk.directives:
            return [(current, chunk.lines)]
        runs: list[tuple[str, list[bytes]]] = []
        start = 0
        lines = chunk.lines
        for i, line in enumerate(lines):
            if line[:1] == b"#":
                if i > start:
                    runs.append((current, lines[start:i]))
                if line.startswith(b"#Fields:"):
                    current = line.decode("utf-8", "replace").strip()
                start = i + 1
        if start < len(lines):
            runs.append((current, lines[start:]))
        source.fields[chunk.identity] = current
        return runs

    def _count(self, source: LogSource, chunks: list[Lines]) -> None:
        for chunk in chunks:
            source.lines += len(chunk.lines)
            for directive, lines in self._runs(source, chunk):
                if not lines:
                    continue
                if source.kind == "iis":
                    self._count_iis(source, directive, lines)
                    continue
                required = xl.TrackingCounts.REQUIRED if source.kind == "message_tracking" else xl.SmtpCounts.REQUIRED
                try:
                    index = xl.fields_index(directive, required)
                except xl.FieldsError:
                    source.counts.malformed += len(lines)
                    continue
                source.counts.count(xl.rows(lines), index)
                if isinstance(source.counts, xl.SmtpCounts):
                    source.evidence += [
                        Evidence(
                            f.user,
                            f.time or self.clock(),
                            "smtp_auth",
                            self.server,
                            "auth_failure",
                            {"connector": f.connector, "client_ip": f.client_ip, "mechanism": f.mechanism},
                        )
                        for f in source.counts.take_auth_failures()
                    ]
        # Drop files no longer followed from the per-file directives.
        followed = source.tailer.identities
        source.fields = {i: f for i, f in source.fields.items() if i in followed}

    def _count_iis(self, source: LogSource, directive: str, lines: list[bytes]) -> None:
        counts = source.counts
        assert isinstance(counts, iis.IisCounts)
        try:
            layout = iis.Layout.from_directive(directive)
        except iis.FieldsError:
            counts.layout_errors += len(lines)
            return
        unauthorized: list[bytes] = []
        counts.count(lines, layout, unauthorized)
        # The same phone fails the same way again and again: parse each distinct 401 once, in order of first
        # appearance (so a device's 1326s still come before its 1909s), with the time of its first and last line.
        distinct: dict[tuple[bytes, ...], list[Any]] = {}
        width = len(layout.fields)
        for line in unauthorized:
            parts = line.split(b" ")
            if len(parts) == width:
                key = iis.detail_key(parts, layout)
                seen = distinct.get(key)
                if seen is None:
                    distinct[key] = [1, parts, parts]
                else:
                    seen[0] += 1
                    seen[2] = parts
        now = self.clock()
        for key, (n, first, last) in distinct.items():
            entry = iis.unauthorized_from_fields(key)
            self._note_unauthorized(entry, now, n)
            if entry.user:
                detail = {
                    "protocol": entry.protocol,
                    "win32_status": entry.win32_status,
                    "device_id": entry.device_id,
                    "device_type": entry.device_type,
                    "client_ip": entry.client_ip,
                    # The phone's OS and mail app version: what the user needs to find the device.
                    "user_agent": iis.user_agent(last, layout),
                    "count": str(n),
                }
                first_time, last_time = iis.line_time(first, layout) or now, iis.line_time(last, layout) or now
                if n > 1:
                    detail["first_time"] = f"{first_time:.0f}"
                source.evidence.append(
                    Evidence(entry.user, last_time, "iis", self.server, "401", {k: v for k, v in detail.items() if v})
                )

    def _note_unauthorized(self, entry: iis.Unauthorized, now: float, n: int = 1) -> None:
        if entry.user:
            self.users.add(now, "user", entry.user, entry.device_id, n)
        if entry.protocol != "activesync" or not entry.device_id:
            return
        key = (entry.user, entry.device_id, entry.device_type)
        device = self.devices.get(key)
        if device is None:
            if len(self.devices) >= 10_000:  # bounded however many devices a spray invents
                oldest = min(self.devices, key=lambda k: self.devices[k].last_seen)
                del self.devices[oldest]
            device = self.devices[key] = Device()
        device.failures += n
        device.last_seen, device.client_ip, device.win32_status = now, entry.client_ip, entry.win32_status
        if entry.win32_status == "1326":
            device.saw_wrong_password = True
        elif entry.win32_status == "1909" and device.saw_wrong_password:
            device.locking_out = True

    # --- refresh -----------------------------------------------------------------------------------------------

    async def collect(self) -> list[Series]:
        await self.pool.run(self._read_all, lock=self._reading, lock_timeout=0)
        now = self.clock()
        self.users.prune(now)
        horizon = now - self.config.window_seconds
        self.devices = {k: d for k, d in self.devices.items() if d.last_seen >= horizon}
        return self._metrics()

    def _metrics(self) -> list[Series]:
        server = self.server
        families: list[Series] = []

        def counter(family: Family, rows: list[tuple[list[str], float]]) -> None:
            series = family.new()
            for values, n in rows:
                series.add_metric([server, *values], n)
            families.append(series)

        by_kind = {s.kind: s.counts for s in self.sources}
        web = by_kind.get("iis")
        if isinstance(web, iis.IisCounts):
            counter(
                EXCHANGE_HTTP_REQUESTS_TOTAL,
                [([p, s], n) for (p, s), n in sorted(web.requests.items())],
            )
            counter(
                EXCHANGE_HTTP_UNAUTHORIZED_TOTAL,
                [([p, ss, w, iis.win32_reason(w)], n) for (p, ss, w), n in sorted(web.unauthorized.items())],
            )
            families.extend(self._top_tables())
        smtp = [s for s in self.sources if isinstance(s.counts, xl.SmtpCounts)]
        if smtp:
            rows: list[tuple[list[str], float]] = []
            for s in smtp:
                c = s.counts
                rows += [([conn, c.direction, code, enh], n) for (conn, code, enh), n in sorted(c.responses.items())]
            counter(
                EXCHANGE_SMTP_RESPONSES_TOTAL,
                rows,
            )
            counter(
                EXCHANGE_SMTP_SESSIONS_TOTAL,
                [([conn, s.counts.direction], n) for s in smtp for conn, n in sorted(s.counts.sessions.items())],
            )
            counter(
                EXCHANGE_SMTP_TLS_TOTAL,
                [([conn, s.counts.direction, o], n) for s in smtp for (conn, o), n in sorted(s.counts.tls.items())],
            )
            counter(
                EXCHANGE_SMTP_AUTH_TOTAL,
                [([conn, o], n) for s in smtp for (conn, o), n in sorted(s.counts.auth.items())],
            )
        tracking = by_kind.get("message_tracking")
        if isinstance(tracking, xl.TrackingCounts):
            counter(
                EXCHANGE_MESSAGE_TRACKING_EVENTS_TOTAL,
                [(list(k), n) for k, n in sorted(tracking.events.items())],
            )
            counter(
                EXCHANGE_MESSAGE_TRACKING_FAILURES_TOTAL,
                [(list(k), n) for k, n in sorted(tracking.failures.items())],
            )
        counter(
            EXCHANGE_LOG_LINES_TOTAL,
            [([s.kind], s.lines) for s in self.sources],
        )
        counter(
            EXCHANGE_LOG_MALFORMED_LINES_TOTAL,
            [([s.kind], s.counts.malformed + getattr(s.counts, "layout_errors", 0)) for s in self.sources],
        )
        counter(
            EXCHANGE_LOG_OVERLONG_LINES_TOTAL,
            [([s.kind], s.tailer.stats.overlong_lines) for s in self.sources],
        )
        counter(
            EXCHANGE_LOG_ROTATIONS_TOTAL,
            [([s.kind], s.tailer.stats.rotations) for s in self.sources],
        )
        counter(
            EXCHANGE_LOG_TRUNCATIONS_TOTAL,
            [([s.kind], s.tailer.stats.truncations) for s in self.sources],
        )
        last = EXCHANGE_LOG_LAST_READ_TIMESTAMP_SECONDS.new()
        files = EXCHANGE_LOG_FILES.new()
        unreadable = EXCHANGE_LOG_UNREADABLE_DIRECTORIES.new()
        for s in self.sources:
            last.add_metric([server, s.kind], s.last_read)
            files.add_metric([server, s.kind], len(s.tailer.files))
            unreadable.add_metric([server, s.kind], len(s.tailer.problems))
        families += [last, files, unreadable]
        return families

    def _top_tables(self) -> list[Series]:
        server, config = self.server, self.config
        users = EXCHANGE_HTTP_UNAUTHORIZED_USER_FAILURES.new()
        caps = Caps(self.name, server)
        caps.top(
            EXCHANGE_HTTP_UNAUTHORIZED_USER_FAILURES,
            self.users.totals("user").items(),
            config.top_users,
            lambda kv: (-kv[1][0], kv[0]),
        ).add(users, lambda kv: [server, kv[0]], lambda kv: kv[1][0], other=[server, OTHER])
        devices = EXCHANGE_ACTIVESYNC_DEVICE_FAILURES.new()
        locking = EXCHANGE_ACTIVESYNC_DEVICE_LOCKING_OUT.new()
        top = caps.top(
            EXCHANGE_ACTIVESYNC_DEVICE_FAILURES,
            self.devices.items(),
            config.top_devices,
            lambda kv: (-kv[1].locking_out, -kv[1].failures, kv[0]),
        )
        top.add(
            devices,
            lambda kv: [server, *kv[0], kv[1].client_ip, kv[1].win32_status],
            lambda kv: kv[1].failures,
            other=[server, OTHER, OTHER, OTHER, OTHER, OTHER],
        )
        for (user, device_id, device_type), d in top.kept:
            locking.add_metric([server, user, device_id, device_type], 1.0 if d.locking_out else 0.0)
        return [users, devices, locking, caps.series()]

    def target_status(self) -> list[TargetStatus]:
        return [
            TargetStatus(f"{self.server} {s.kind} logs ({len(s.tailer.files)} files)", not s.error, s.error)
            for s in self.sources
        ]
