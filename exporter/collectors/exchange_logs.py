"""Exchange's log files: IIS 401s by win32 status and protocol with the ActiveSync devices behind them, SMTP
protocol logs (replies, TLS, AUTH per connector) and message tracking (events, failures, loops).

Each kind of log has its own tailer. A few MiB of lines at a time are counted and then committed together with
the tailer's checkpoint in one transaction, so a restart (even ``kill -9``) resumes exactly where the counts
stop: nothing is counted twice, nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.config import ExchangeLogsConfig
from exporter.parsers import exchange_logs as xl
from exporter.parsers import iis
from exporter.registry import Collector, Redactor, TargetStatus, capped_series_family
from exporter.sources.tail import Lines, Tailer
from exporter.state import StateStore
from exporter.window import SourceWindow

log = logging.getLogger(__name__)

OTHER = "<other>"
_BATCH_BYTES = 4 * 1024 * 1024
_HEADER_SCAN_BYTES = 1024 * 1024
KINDS = ("iis", "smtp_receive", "smtp_send", "message_tracking")


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


class ExchangeLogsCollector(Collector):
    name = "exchange_logs"

    def __init__(
        self,
        config: ExchangeLogsConfig,
        state: StateStore,
        redact: Redactor | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(config.server.lower(), config.interval_seconds, timeout=config.interval_seconds)
        self.config = config
        self.state = state
        self.redact = redact or Redactor()
        self.clock = clock
        self.server = config.server.lower()
        self._key = f"exchange_logs/{self.server}"
        self.sources: list[LogSource] = []
        for kind in KINDS:
            patterns = getattr(config, kind)
            if not patterns:
                continue
            saved = state.get(f"{self._key}/{kind}", {})
            counts: Any = (
                iis.IisCounts()
                if kind == "iis"
                else xl.TrackingCounts()
                if kind == "message_tracking"
                else xl.SmtpCounts("receive" if kind == "smtp_receive" else "send")
            )
            counts.load(saved.get("counts"))
            tailer = Tailer(
                patterns, start_at=config.start_at, max_line_bytes=config.max_line_bytes, saved=saved.get("checkpoint")
            )
            self.sources.append(
                LogSource(kind, tailer, counts, dict(saved.get("fields", {})), int(saved.get("lines", 0)))
            )
        self.users = SourceWindow(config.window_seconds)
        self.devices: dict[tuple[str, str, str], Device] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"logs-{self.server}")

    # --- reading -------------------------------------------------------------------------------------------

    def _read_all(self) -> None:
        deadline = time.monotonic() + self.config.interval_seconds * 0.8
        for source in self.sources:
            try:
                while True:
                    chunks = source.tailer.poll(max_bytes=_BATCH_BYTES)
                    self._count(source, chunks)
                    self._commit(source)
                    source.last_read, source.error = self.clock(), ""
                    if not chunks or time.monotonic() > deadline:
                        break
            except OSError as exc:
                source.error = self.redact(f"{type(exc).__name__}: {exc}")
                log.warning("%s %s logs: %s", self.server, source.kind, source.error)

    def _commit(self, source: LogSource) -> None:
        with self.state.transaction() as put:
            put(
                f"{self._key}/{source.kind}",
                {
                    "checkpoint": source.tailer.checkpoint(),
                    "counts": source.counts.state(),
                    "fields": source.fields,
                    "lines": source.lines,
                },
            )

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
                    self._count_iis(source.counts, directive, lines)
                    continue
                required = xl.TrackingCounts.REQUIRED if source.kind == "message_tracking" else xl.SmtpCounts.REQUIRED
                try:
                    index = xl.fields_index(directive, required)
                except xl.FieldsError:
                    source.counts.malformed += len(lines)
                    continue
                source.counts.count(xl.rows(lines), index)
        # Drop files no longer followed from the per-file directives.
        followed = source.tailer.identities
        source.fields = {i: f for i, f in source.fields.items() if i in followed}

    def _count_iis(self, counts: iis.IisCounts, directive: str, lines: list[bytes]) -> None:
        try:
            layout = iis.Layout.from_directive(directive)
        except iis.FieldsError:
            counts.layout_errors += len(lines)
            return
        unauthorized: list[bytes] = []
        counts.count(lines, layout, unauthorized)
        # The same phone fails the same way again and again: parse each distinct 401 once, in order of first
        # appearance (so a device's 1326s still come before its 1909s).
        distinct: dict[tuple[bytes, ...], int] = {}
        width = len(layout.fields)
        for line in unauthorized:
            parts = line.split(b" ")
            if len(parts) == width:
                key = iis.detail_key(parts, layout)
                distinct[key] = distinct.get(key, 0) + 1
        now = self.clock()
        for key, n in distinct.items():
            self._note_unauthorized(iis.unauthorized_from_fields(key), now, n)

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

    async def collect(self) -> list[Metric]:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._read_all)
        now = self.clock()
        self.users.prune(now)
        horizon = now - self.config.window_seconds
        self.devices = {k: d for k, d in self.devices.items() if d.last_seen >= horizon}
        return self._metrics()

    def _metrics(self) -> list[Metric]:
        server = self.server
        families: list[Metric] = []

        def counter(name: str, doc: str, labels: list[str], rows: list[tuple[list[str], float]]) -> None:
            family = CounterMetricFamily(name, doc, labels=["server", *labels])
            for values, n in rows:
                family.add_metric([server, *values], n)
            families.append(family)

        by_kind = {s.kind: s.counts for s in self.sources}
        web = by_kind.get("iis")
        if isinstance(web, iis.IisCounts):
            counter(
                "exchange_http_requests",
                "Requests in the front end's IIS logs by protocol and sc-status.",
                ["protocol", "status"],
                [([p, s], n) for (p, s), n in sorted(web.requests.items())],
            )
            counter(
                "exchange_http_unauthorized",
                "HTTP 401s by protocol, sc-substatus and sc-win32-status (1326 "
                "wrong password, 1330 expired, 1331 disabled, 1909 locked out).",
                ["protocol", "substatus", "win32_status", "reason"],
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
                "exchange_smtp_responses",
                "SMTP replies in the protocol logs by connector and direction: what "
                "this server answered (receive) or the remote host answered (send).",
                ["connector", "direction", "code", "enhanced_code"],
                rows,
            )
            counter(
                "exchange_smtp_sessions",
                "SMTP sessions opened, by connector and direction.",
                ["connector", "direction"],
                [([conn, s.counts.direction], n) for s in smtp for conn, n in sorted(s.counts.sessions.items())],
            )
            counter(
                "exchange_smtp_tls",
                "TLS negotiations in the protocol logs by outcome.",
                ["connector", "direction", "outcome"],
                [([conn, s.counts.direction, o], n) for s in smtp for (conn, o), n in sorted(s.counts.tls.items())],
            )
            counter(
                "exchange_smtp_auth",
                "SMTP AUTH outcomes on receive connectors (235 success, 535 failure).",
                ["connector", "outcome"],
                [([conn, o], n) for s in smtp for (conn, o), n in sorted(s.counts.auth.items())],
            )
        tracking = by_kind.get("message_tracking")
        if isinstance(tracking, xl.TrackingCounts):
            counter(
                "exchange_message_tracking_events",
                "Message tracking events by event-id, source, connector and directionality.",
                ["event_id", "source", "connector", "directionality"],
                [(list(k), n) for k, n in sorted(tracking.events.items())],
            )
            counter(
                "exchange_message_tracking_failures",
                "FAIL, DSN and DEFER events by the SMTP code of their "
                "recipient status (554 5.4.6: a loop; 550 5.1.10: recipient not found).",
                ["event_id", "code", "enhanced_code"],
                [(list(k), n) for k, n in sorted(tracking.failures.items())],
            )
        counter(
            "exchange_log_lines",
            "Lines read from the server's logs.",
            ["log"],
            [([s.kind], s.lines) for s in self.sources],
        )
        counter(
            "exchange_log_malformed_lines",
            "Lines that could not be counted (wrong field count, garbage status "
            "codes, a #Fields: header without the needed columns), skipped.",
            ["log"],
            [([s.kind], s.counts.malformed + getattr(s.counts, "layout_errors", 0)) for s in self.sources],
        )
        counter(
            "exchange_log_overlong_lines",
            "Lines longer than max_line_bytes, skipped.",
            ["log"],
            [([s.kind], s.tailer.stats.overlong_lines) for s in self.sources],
        )
        counter(
            "exchange_log_rotations",
            "Rotations followed (rename, or a copy of a truncated file) since start.",
            ["log"],
            [([s.kind], s.tailer.stats.rotations) for s in self.sources],
        )
        counter(
            "exchange_log_truncations",
            "Files found truncated (copytruncate) since start.",
            ["log"],
            [([s.kind], s.tailer.stats.truncations) for s in self.sources],
        )
        last = GaugeMetricFamily(
            "exchange_log_last_read_timestamp_seconds",
            "When the server's logs of this kind were last read without error.",
            labels=["server", "log"],
        )
        files = GaugeMetricFamily("exchange_log_files", "Files being followed.", labels=["server", "log"])
        for s in self.sources:
            last.add_metric([server, s.kind], s.last_read)
            files.add_metric([server, s.kind], len(s.tailer.files))
        families += [last, files]
        return families

    def _top_tables(self) -> list[Metric]:
        server, config = self.server, self.config
        users = GaugeMetricFamily(
            "exchange_http_unauthorized_user_failures",
            '401s per user over the window, top top_users; user="<other>" sums the rest.',
            labels=["server", "user"],
        )
        ranked = sorted(self.users.totals("user").items(), key=lambda kv: (-kv[1][0], kv[0]))
        for user, (count, _) in ranked[: config.top_users]:
            users.add_metric([server, user], count)
        rest = sum(c for _, (c, _) in ranked[config.top_users :])
        if rest:
            users.add_metric([server, OTHER], rest)
        devices = GaugeMetricFamily(
            "exchange_activesync_device_failures",
            "ActiveSync 401s per device over the window (top top_devices), with the device's "
            "last client address and win32 status.",
            labels=["server", "user", "device_id", "device_type", "client_ip", "win32_status"],
        )
        locking = GaugeMetricFamily(
            "exchange_activesync_device_locking_out",
            "1 for a device that failed with 1326 (wrong password) and then 1909 (locked out) "
            "within the window: a phone with an old password locking its user out.",
            labels=["server", "user", "device_id", "device_type"],
        )
        top = sorted(self.devices.items(), key=lambda kv: (-kv[1].locking_out, -kv[1].failures, kv[0]))
        for (user, device_id, device_type), d in top[: config.top_devices]:
            devices.add_metric([server, user, device_id, device_type, d.client_ip, d.win32_status], d.failures)
            locking.add_metric([server, user, device_id, device_type], 1.0 if d.locking_out else 0.0)
        rest_devices = sum(d.failures for _, d in top[config.top_devices :])
        if rest_devices:
            devices.add_metric([server, OTHER, OTHER, OTHER, OTHER, OTHER], rest_devices)
        capped = capped_series_family()
        capped.add_metric(
            [self.name, server, "exchange_http_unauthorized_user_failures"], max(0, len(ranked) - config.top_users)
        )
        capped.add_metric(
            [self.name, server, "exchange_activesync_device_failures"], max(0, len(top) - config.top_devices)
        )
        return [users, devices, locking, capped]

    def target_status(self) -> list[TargetStatus]:
        return [
            TargetStatus(f"{self.server} {s.kind} logs ({len(s.tailer.files)} files)", not s.error, s.error)
            for s in self.sources
        ]

    async def close(self) -> None:
        # A read in flight commits its checkpoint before a reloaded collector reads it.
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
