"""Command line: ``ad-exchange-exporter --config.file=FILE``, and ``ad-exchange-exporter investigate ACCOUNT``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import ssl
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from prometheus_client import ProcessCollector
from prometheus_client.core import Metric

from exporter import __version__, investigate_cli, memory, patch_days, web_server
from exporter import clock as domain_time
from exporter.collectors.active_directory import ActiveDirectoryCollector
from exporter.collectors.canary import CanaryCollector
from exporter.collectors.directaccess import DirectAccessCollector
from exporter.collectors.exchange import ExchangeCollector
from exporter.collectors.exchange_logs import ExchangeLogsCollector
from exporter.collectors.hybrid_mail import HybridMailCollector
from exporter.collectors.security_events import SecurityEventsCollector
from exporter.collectors.smtp_probe import ScheduledProbesCollector
from exporter.config import Config, ConfigError, load_config
from exporter.lockouts import LockoutService
from exporter.metrics import Family
from exporter.registry import Collector, CollectorRegistry, Redactor
from exporter.sources.credential_guard import CredentialGuard
from exporter.state import EvidenceLimits, StateError, StateStore
from exporter.web import build_app
from exporter.web_security import TlsContexts, WebSecurity, load_web_config

log = logging.getLogger("exporter")

CONFIG_LAST_RELOAD_SUCCESSFUL = Family(
    "ad_exchange_exporter_config_last_reload_successful",
    "gauge",
    "1 if the last configuration reload (SIGHUP) succeeded; 0 while the exporter runs the configuration before it.",
)
CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP = Family(
    "ad_exchange_exporter_config_last_reload_success_timestamp_seconds",
    "gauge",
    "When the configuration was last loaded successfully (at start, or by a reload).",
)
EVIDENCE_ROWS = Family(
    "ad_exchange_exporter_evidence_rows",
    "gauge",
    "Per-account evidence rows kept for investigations (failed logons, lockouts), within state.evidence's bounds.",
)
HOST_CLOCK_OFFSET = Family(
    "ad_exchange_exporter_host_clock_offset_seconds",
    "gauge",
    "Domain time (the PDC emulator's clock, read at each AD sweep) minus this host's clock: windows, lockouts and "
    "retention run on domain time, so a step of the host's clock moves none of them; Kerberos from this host "
    "fails beyond 300 s. 0 until a DC has been read.",
)
STATE_HEALTHY = Family(
    "ad_exchange_exporter_state_healthy",
    "gauge",
    "1 if the state database took the last read or write; 0 while it refuses (what was read since the last commit "
    "is read again once it takes it: nothing is lost or counted twice).",
)
STATE_ERRORS_TOTAL = Family(
    "ad_exchange_exporter_state_errors_total",
    "counter",
    "Reads and writes the state database refused, by reason: locked (another process holds it), read_only, "
    "disk_full, corrupt, io_error, other.",
    ("reason",),
)
EVIDENCE_DROPPED_TOTAL = Family(
    "ad_exchange_exporter_evidence_dropped_total",
    "counter",
    "Evidence rows dropped to stay within state.evidence's bounds, by reason: age (retention_seconds), "
    "account_cap (max_rows_per_account), total_cap (max_rows).",
    ("reason",),
)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class _RedactingFilter(logging.Filter):
    """Last line of defence: no secret from the config reaches a log line."""

    def __init__(self) -> None:
        super().__init__()
        self.redact = Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self.redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_REDACTING_FILTER = _RedactingFilter()


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(_REDACTING_FILTER)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # ldap3 and aiohttp access logs are noisy at info and never needed for an exporter's operation.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # pypsrp logs every runspace and pipeline at info: one line per cmdlet per server per refresh.
    logging.getLogger("pypsrp").setLevel(logging.WARNING)
    # Its wsman module logs an ERROR (and a traceback for timeouts) for each failed exchange, which the exporter
    # reports itself with the server and a reason; a 400 after an idle connection was closed is not even a failure.
    logging.getLogger("pypsrp.wsman").setLevel(logging.CRITICAL)


def build_collectors(config: Config, guard: CredentialGuard, redact: Redactor, state: StateStore) -> list[Collector]:
    collectors: list[Collector] = [ActiveDirectoryCollector(ad, guard, redact) for ad in config.active_directory]
    collectors += [ExchangeCollector(ex, guard, redact) for ex in config.exchange]
    collectors += [SecurityEventsCollector(se, guard, state, redact) for se in config.security_events]
    collectors += [ExchangeLogsCollector(logs, state, redact) for logs in config.exchange_logs]
    collectors += [HybridMailCollector(flow, state, redact) for flow in config.hybrid_mail]
    collectors += [CanaryCollector(canary, redact) for canary in config.canaries]
    collectors += [DirectAccessCollector(da, guard, redact) for da in config.directaccess]
    if config.probes.scheduled:
        collectors.append(ScheduledProbesCollector(config.probes))
    return collectors


class Exporter:
    """Holds the running registry; a reload swaps it for one built from the new config."""

    def __init__(self, config_path: Path, config: Config, web_overrides: dict[str, object] | None = None) -> None:
        self.config_path = config_path
        # Command-line flags win over the file on every reload too.
        self.web_overrides = web_overrides or {}
        self.config = config
        self.guard = CredentialGuard()  # survives reloads: a refused credential stays held back
        # Opened once: bookmarks and checkpoints carry over a reload (a new state.path needs a restart).
        limits = config.state.evidence
        self.state = StateStore(
            config.state.path,
            EvidenceLimits(limits.retention_seconds, limits.max_rows_per_account, limits.max_rows),
        )
        self.registry = self._new_registry(config)
        self.security = load_security(config)
        tls = self.security.config.tls_server_config if self.security else None
        self.tls = TlsContexts(tls) if tls else None
        self._process = ProcessCollector(registry=None)
        self.listener = web_server.ListenerStats()
        # SIGHUPs in quick succession reload one after the other, never two registries at once.
        self._reloading = asyncio.Lock()
        self.last_reload_successful = True
        self.last_reload_success = domain_time.now()  # the configuration loaded at start counts as the first

    def per_scrape(self) -> list[Metric]:
        """What changes between refreshes and is encoded per scrape: the process and the reload state."""
        return [
            *self._process.collect(),
            CONFIG_LAST_RELOAD_SUCCESSFUL.one([], 1.0 if self.last_reload_successful else 0.0),
            CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP.one([], self.last_reload_success),
            *self._evidence_metrics(),
            HOST_CLOCK_OFFSET.one([], round(domain_time.DOMAIN_CLOCK.host_offset(), 3)),
            *self.listener.series(),
        ]

    def _evidence_metrics(self) -> list[Metric]:
        rows, dropped = self.state.evidence_stats()
        out = EVIDENCE_DROPPED_TOTAL.new()
        for reason, n in dropped.items():
            out.add_metric([reason], n)
        errors = STATE_ERRORS_TOTAL.new()
        for reason, n in self.state.errors.items():
            errors.add_metric([reason], n)
        return [EVIDENCE_ROWS.one([], rows), out, STATE_HEALTHY.one([], 1.0 if self.state.healthy else 0.0), errors]

    def _new_registry(self, config: Config) -> CollectorRegistry:
        redact = Redactor(config.secrets())
        _REDACTING_FILTER.redact = redact
        return CollectorRegistry(build_collectors(config, self.guard, redact, self.state), redact)

    async def reload(self) -> None:
        async with self._reloading:
            self.last_reload_successful = await self._reload()
            if self.last_reload_successful:
                self.last_reload_success = domain_time.now()

    async def _reload(self) -> bool:
        try:
            config = with_web_overrides(load_config(self.config_path), self.web_overrides)
        except ConfigError as exc:
            log.error("reload failed, keeping the running configuration:\n%s", "\n".join(exc.errors))
            return False
        try:
            security = load_security(config)
            tls = security.config.tls_server_config if security else None
            if (tls is None) != (self.tls is None):
                raise ConfigError(
                    str(config.web.config_file),
                    ["tls_server_config: turning TLS on or off needs a restart (the listener keeps its scheme)"],
                )
            if tls is not None and self.tls is not None:
                self.tls.update(tls)
        except (ConfigError, OSError, ssl.SSLError) as exc:
            detail = "\n".join(exc.errors) if isinstance(exc, ConfigError) else str(exc)
            log.error("reload failed, keeping the running configuration:\n%s", detail)
            return False
        self.security = security
        # The old collectors finish and store their last bookmarks before the new ones read them.
        await self.registry.stop()
        self.config = config
        self.registry = self._new_registry(config)
        self.registry.start()
        log.info("configuration reloaded: %d collector(s)", len(self.registry.states))
        return True


def with_web_overrides(config: Config, overrides: dict[str, object]) -> Config:
    return config.model_copy(update={"web": config.web.model_copy(update=overrides)}) if overrides else config


def load_security(config: Config) -> WebSecurity | None:
    if config.web.config_file is None:
        return None
    return WebSecurity(load_web_config(config.web.config_file), frozenset(config.web.unauthenticated_paths))


def patch_day_recorder(exporter: Exporter) -> patch_days.PatchDayRecorder:
    """Samples what the Exchange collectors (and the logs and hybrid mail collectors) hold, for /patch-days."""

    def facts() -> dict[str, patch_days.Facts]:
        states = exporter.registry.states
        servers: dict[str, patch_days.Facts] = {}
        for state in states:
            if isinstance(state.collector, ExchangeCollector):
                servers.update(state.collector.facts())
        return patch_days.with_counters(servers, [s.snapshot for s in states if s.snapshot])

    settings = exporter.config.state.patch_days
    return patch_days.PatchDayRecorder(
        exporter.state,
        facts,
        settings.sample_interval_seconds,
        settings.retention_seconds,
        settings.max_changes,
        domain_time.now,
    )


async def serve(exporter: Exporter) -> None:
    app = build_app(
        lambda: exporter.registry,
        exporter.per_scrape,
        lambda: exporter.config.probes,
        lambda: exporter.security,
        LockoutService(
            exporter.state,
            lambda: exporter.config,
            get_directories=lambda: [
                s.collector for s in exporter.registry.states if isinstance(s.collector, ActiveDirectoryCollector)
            ],
        ),
        patch_days.PatchDays(exporter.state, lambda: exporter.config.state.patch_days, domain_time.now),
    )
    recorder = asyncio.create_task(patch_day_recorder(exporter).run(), name="patch-days")
    trimmer = asyncio.create_task(memory.trim_forever(), name="malloc-trim")
    web_cfg = exporter.config.web
    limits = web_server.Limits(
        max_connections=web_cfg.limits.max_connections,
        header_timeout=web_cfg.limits.header_timeout_seconds,
        idle_timeout=web_cfg.limits.idle_timeout_seconds,
    )
    runner = web_server.runner_for(app, limits)
    await runner.setup()
    site = web_server.GuardedSite(
        runner, web_cfg.host, web_cfg.port, limits, exporter.listener, exporter.tls.listener if exporter.tls else None
    )
    await site.start()
    # Everything loaded at start (modules, config) lives as long as the process: keep it out of the cyclic
    # collector's full passes, which otherwise scan it again every time and stall the event loop for tens of ms.
    gc.freeze()
    exporter.registry.start()
    scheme = "https" if exporter.tls else "http"
    auth = " (basic auth)" if exporter.security and exporter.security.auth else ""
    loop_kind = "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
    log.info("listening on %s://%s:%d/metrics%s (event loop: %s)", scheme, web_cfg.host, web_cfg.port, auth, loop_kind)
    print(
        f"ad-exchange-exporter {__version__} serving {scheme}://{web_cfg.host}:{web_cfg.port}/metrics{auth}", flush=True
    )

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(exporter.reload()))
    await stop.wait()
    if exporter.state.write_in_flight:
        # The collectors' threads are waited for: the write commits or rolls back whole before the exit.
        log.info("shutting down; a state database write is in flight and ends first (committed or rolled back)")
    else:
        log.info("shutting down")
    recorder.cancel()
    trimmer.cancel()
    await exporter.registry.stop()
    await runner.cleanup()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ad-exchange-exporter", description=__doc__)
    parser.add_argument("--config.file", dest="config_file", type=Path, default=Path("ad-exchange-exporter.yml"))
    parser.add_argument(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="validate the configuration, report every error with its path, and exit",
    )
    parser.add_argument(
        "--web.listen-address",
        dest="listen_address",
        default=None,
        help="override web.listen_address from the config (HOST:PORT)",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        type=Path,
        default=None,
        help="TLS and basic auth in exporter-toolkit's format (overrides web.config_file)",
    )
    parser.add_argument("--log.level", dest="log_level", default=None)
    parser.add_argument("--log.format", dest="log_format", choices=["text", "json"], default=None)
    parser.add_argument(
        "--event-loop",
        dest="event_loop",
        choices=["auto", "uvloop", "asyncio"],
        default="auto",
        help="auto: uvloop when installed (faster sockets and TLS for scrapes and probes), else asyncio's own",
    )
    parser.add_argument("--version", action="version", version=__version__)
    return parser.parse_args(argv)


def run_event_loop(main: Coroutine[Any, Any, None], choice: str) -> str:
    """Run ``main`` to completion on the chosen loop; the name of the loop it ran on."""
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            uvloop.run(main)
            return "uvloop"
    asyncio.run(main)
    return "asyncio"


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["investigate"]:  # the investigator at a terminal, against a running exporter
        return investigate_cli.main(arguments[1:])
    args = parse_args(argv)
    memory.limit_arenas()  # before any thread starts
    try:
        config = load_config(args.config_file)
    except ConfigError as exc:
        print(f"{exc.source}: invalid configuration:", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        return 1
    web_overrides: dict[str, object] = {}
    if args.listen_address:
        web_overrides["listen_address"] = args.listen_address
    if args.web_config_file:
        web_overrides["config_file"] = args.web_config_file
    config = with_web_overrides(config, web_overrides)
    try:
        load_security(config)
    except ConfigError as exc:
        print(f"{exc.source}: invalid web configuration:", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        return 1
    if args.config_check:
        print(
            f"{args.config_file}: configuration OK ({len(config.active_directory)} Active Directory domain(s), "
            f"{len(config.exchange)} Exchange organization(s), {len(config.security_events)} security event "
            "source set(s))"
        )
        return 0
    setup_logging(args.log_level or config.log.level, args.log_format or config.log.format)
    try:
        exporter = Exporter(args.config_file, config, web_overrides)
    except StateError as exc:
        log.error("cannot start: %s; restore the file from a backup or move it aside to start afresh", exc)
        return 1
    try:
        run_event_loop(serve(exporter), args.event_loop)
    except ImportError:
        print("--event-loop uvloop: uvloop is not installed", file=sys.stderr)
        return 1
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0
