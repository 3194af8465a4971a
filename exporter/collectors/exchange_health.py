"""Exchange health in depth, part of the Exchange collector: what HealthChecker checks by hand, watched continuously.

Every refresh, per server: database copies (Get-MailboxDatabaseCopyStatus), the activation settings maintenance
mode leaves behind (Get-MailboxServer) and transport back pressure (Get-ExchangeDiagnosticInfo, EdgeTransport's
ResourceThrottling). On the longer ``health.interval_seconds``: Managed Availability's health sets
(Get-ServerHealth, expensive on real servers), required services (Test-ServiceHealth), monitoring overrides,
the OAuth configuration (Get-AuthConfig, with the certificate it names found among the server's certificates)
and the Emergency Mitigation service (Get-Service through the plain PowerShell endpoint).

They run on a runspace of their own per server, in the background: Get-ServerHealth can take a minute on a busy
server, and the core refresh (components, queues) must neither wait for it nor find the server's runspace busy.
They need more than the core cmdlets (View-Only Organization Management does not run Get-ServerHealth on every
build): a refusal is reported per cmdlet (``exchange_cmdlet_success``) and does not take the server down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from exporter import clock as domain_time
from exporter.config import ExchangeConfig
from exporter.metrics import Caps, Family, Series
from exporter.parsers import exchange as ex
from exporter.parsers import exchange_health as eh
from exporter.parsers.clixml import parse_each
from exporter.registry import Redactor
from exporter.sources.pool import BlockingPool
from exporter.sources.winrm import PsrpClient, RemotingError, close_clients

log = logging.getLogger(__name__)

EVERY_REFRESH: tuple[tuple[str, str, dict[str, str]], ...] = (
    # (cmdlet, the parameter that names the server, further parameters)
    ("Get-MailboxDatabaseCopyStatus", "Server", {}),
    ("Get-MailboxServer", "Identity", {}),
    ("Get-ExchangeDiagnosticInfo", "Server", {"Process": "EdgeTransport", "Component": "ResourceThrottling"}),
)
SLOW: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("Get-ServerHealth", "Identity", {}),
    ("Test-ServiceHealth", "Server", {}),
    ("Get-ServerMonitoringOverride", "Server", {}),
    ("Get-AuthConfig", "", {}),
    ("Get-GlobalMonitoringOverride", "", {}),
)
MITIGATION_SERVICE = "MSExchangeMitigation"
MITIGATION_CMDLET = f"Get-Service {MITIGATION_SERVICE}"

_S = ("server",)
EXCHANGE_HEALTH_SET_STATE = Family(
    "exchange_health_set_state",
    "gauge",
    "Managed Availability (Get-ServerHealth): the worst AlertValue of the health set's monitors: 0 Healthy, "
    "1 Disabled, 2 Degraded, 3 Repairing, 4 Unhealthy. Refreshed every health.interval_seconds.",
    ("server", "health_set"),
)
EXCHANGE_HEALTH_MONITOR_UNHEALTHY_INFO = Family(
    "exchange_health_monitor_unhealthy_info",
    "gauge",
    "1 for each monitor Degraded, Repairing or Unhealthy (up to health.max_listed_monitors per server).",
    ("server", "health_set", "monitor"),
)
EXCHANGE_SERVER_HEALTH_LAST_SUCCESS_TIMESTAMP_SECONDS = Family(
    "exchange_server_health_last_success_timestamp_seconds",
    "gauge",
    "When Get-ServerHealth last answered on the server (0 if never).",
    _S,
)
EXCHANGE_REQUIRED_SERVICES_RUNNING = Family(
    "exchange_required_services_running",
    "gauge",
    "Test-ServiceHealth: 1 if every service the role requires is running.",
    ("server", "role"),
)
EXCHANGE_SERVICE_NOT_RUNNING_INFO = Family(
    "exchange_service_not_running_info",
    "gauge",
    "1 for each required service that is not running.",
    ("server", "role", "service"),
)
EXCHANGE_DATABASE_COPY_STATUS = Family(
    "exchange_database_copy_status",
    "gauge",
    "1 for the copy's Status (Get-MailboxDatabaseCopyStatus): Mounted, Healthy, Suspended, Failed, "
    "FailedAndSuspended, Seeding, Dismounted, ServiceDown, ...",
    ("server", "database", "status"),
)
EXCHANGE_DATABASE_COPY_QUEUE_LENGTH = Family(
    "exchange_database_copy_queue_length",
    "gauge",
    "Log files not yet copied to this (passive) copy.",
    ("server", "database"),
)
EXCHANGE_DATABASE_REPLAY_QUEUE_LENGTH = Family(
    "exchange_database_replay_queue_length",
    "gauge",
    "Log files copied and not yet replayed into this copy.",
    ("server", "database"),
)
EXCHANGE_DATABASE_CONTENT_INDEX_STATE = Family(
    "exchange_database_content_index_state",
    "gauge",
    "1 for the copy's ContentIndexState: Healthy, Crawling, Failed, FailedAndSuspended, Suspended, Disabled, ...",
    ("server", "database", "state"),
)
EXCHANGE_DATABASE_COPY_ACTIVE = Family(
    "exchange_database_copy_active",
    "gauge",
    "1 if this is the database's active (mounted) copy.",
    ("server", "database"),
)
EXCHANGE_DATABASE_COPY_ACTIVATION_PREFERENCE = Family(
    "exchange_database_copy_activation_preference",
    "gauge",
    "The copy's ActivationPreference (1 is where the database should be mounted).",
    ("server", "database"),
)
EXCHANGE_DATABASE_COPY_LAST_INSPECTED_LOG_TIMESTAMP_SECONDS = Family(
    "exchange_database_copy_last_inspected_log_timestamp_seconds",
    "gauge",
    "When the last log file inspected on this copy was written.",
    ("server", "database"),
)
EXCHANGE_DATABASE_COPY_AUTO_ACTIVATION_POLICY = Family(
    "exchange_database_copy_auto_activation_policy",
    "gauge",
    "1 for the server's DatabaseCopyAutoActivationPolicy (Unrestricted, IntrasiteOnly, Blocked: maintenance "
    "mode sets Blocked and must set it back).",
    ("server", "policy"),
)
EXCHANGE_DATABASE_COPY_ACTIVATION_DISABLED_AND_MOVE_NOW = Family(
    "exchange_database_copy_activation_disabled_and_move_now",
    "gauge",
    "1 if DatabaseCopyActivationDisabledAndMoveNow is set (no copy may be activated here; maintenance mode sets it).",
    _S,
)
EXCHANGE_TRANSPORT_BACK_PRESSURE = Family(
    "exchange_transport_back_pressure",
    "gauge",
    "Transport back pressure per resource meter: 0 Low, 1 Medium (submission throttled), 2 High (submission "
    "stopped: 452 4.3.1 Insufficient system resources).",
    ("server", "resource"),
)
EXCHANGE_TRANSPORT_RESOURCE_PRESSURE = Family(
    "exchange_transport_resource_pressure",
    "gauge",
    "The resource meter's current pressure (percent for memory and disk, a count for version buckets and sessions).",
    ("server", "resource"),
)
EXCHANGE_TRANSPORT_RESOURCE_PRESSURE_THRESHOLD = Family(
    "exchange_transport_resource_pressure_threshold",
    "gauge",
    "The pressure at which the meter moves between levels (transition LowToMedium, MediumToHigh, HighToMedium, "
    "MediumToLow).",
    ("server", "resource", "transition"),
)
_ORG = ("organization",)
EXCHANGE_AUTH_CERTIFICATE_NOT_AFTER_TIMESTAMP_SECONDS = Family(
    "exchange_auth_certificate_not_after_timestamp_seconds",
    "gauge",
    "When the OAuth certificate Get-AuthConfig names as current expires (hybrid free/busy and OAuth break with it); "
    "absent when no server has a certificate with that thumbprint.",
    ("organization", "thumbprint"),
)
EXCHANGE_AUTH_CERTIFICATE_FOUND = Family(
    "exchange_auth_certificate_found",
    "gauge",
    "1 if the current Auth certificate was found among the servers' Exchange certificates.",
    _ORG,
)
EXCHANGE_AUTH_NEXT_CERTIFICATE_CONFIGURED = Family(
    "exchange_auth_next_certificate_configured",
    "gauge",
    "1 if Get-AuthConfig names a next certificate (the renewal path: Set-AuthConfig -NewCertificateThumbprint).",
    _ORG,
)
EXCHANGE_AUTH_NEXT_CERTIFICATE_EFFECTIVE_TIMESTAMP_SECONDS = Family(
    "exchange_auth_next_certificate_effective_timestamp_seconds",
    "gauge",
    "When the next Auth certificate becomes current.",
    ("organization", "thumbprint"),
)
EXCHANGE_EMERGENCY_MITIGATION_SERVICE_RUNNING = Family(
    "exchange_emergency_mitigation_service_running",
    "gauge",
    "1 if MSExchangeMitigation (Emergency Mitigation) is running; start_type Automatic, Manual or Disabled. Read "
    "through the plain PowerShell endpoint (security_update.enabled).",
    ("server", "start_type"),
)
EXCHANGE_EMERGENCY_MITIGATION_ENABLED = Family(
    "exchange_emergency_mitigation_enabled",
    "gauge",
    "Get-ExchangeServer MitigationsEnabled: 1 if the service may apply mitigations on this server.",
    _S,
)
EXCHANGE_EMERGENCY_MITIGATION_INFO = Family(
    "exchange_emergency_mitigation_info",
    "gauge",
    "1 for each mitigation Get-ExchangeServer reports, state applied or blocked.",
    ("server", "mitigation", "state"),
)
EXCHANGE_MONITORING_OVERRIDES = Family(
    "exchange_monitoring_overrides",
    "gauge",
    "Managed Availability overrides in force: scope server (Get-ServerMonitoringOverride) or global.",
    ("server", "scope"),
)
EXCHANGE_MONITORING_OVERRIDE_EXPIRY_TIMESTAMP_SECONDS = Family(
    "exchange_monitoring_override_expiry_timestamp_seconds",
    "gauge",
    "When each override expires (up to health.max_listed_overrides); disables=true for one that turns its item off. "
    'Global overrides carry server="*".',
    ("server", "scope", "item_type", "health_set", "item", "property", "disables"),
)
FAMILIES = (
    EXCHANGE_HEALTH_SET_STATE,
    EXCHANGE_HEALTH_MONITOR_UNHEALTHY_INFO,
    EXCHANGE_SERVER_HEALTH_LAST_SUCCESS_TIMESTAMP_SECONDS,
    EXCHANGE_REQUIRED_SERVICES_RUNNING,
    EXCHANGE_SERVICE_NOT_RUNNING_INFO,
    EXCHANGE_DATABASE_COPY_STATUS,
    EXCHANGE_DATABASE_COPY_QUEUE_LENGTH,
    EXCHANGE_DATABASE_REPLAY_QUEUE_LENGTH,
    EXCHANGE_DATABASE_CONTENT_INDEX_STATE,
    EXCHANGE_DATABASE_COPY_ACTIVE,
    EXCHANGE_DATABASE_COPY_ACTIVATION_PREFERENCE,
    EXCHANGE_DATABASE_COPY_LAST_INSPECTED_LOG_TIMESTAMP_SECONDS,
    EXCHANGE_DATABASE_COPY_AUTO_ACTIVATION_POLICY,
    EXCHANGE_DATABASE_COPY_ACTIVATION_DISABLED_AND_MOVE_NOW,
    EXCHANGE_TRANSPORT_BACK_PRESSURE,
    EXCHANGE_TRANSPORT_RESOURCE_PRESSURE,
    EXCHANGE_TRANSPORT_RESOURCE_PRESSURE_THRESHOLD,
    EXCHANGE_AUTH_CERTIFICATE_NOT_AFTER_TIMESTAMP_SECONDS,
    EXCHANGE_AUTH_CERTIFICATE_FOUND,
    EXCHANGE_AUTH_NEXT_CERTIFICATE_CONFIGURED,
    EXCHANGE_AUTH_NEXT_CERTIFICATE_EFFECTIVE_TIMESTAMP_SECONDS,
    EXCHANGE_EMERGENCY_MITIGATION_SERVICE_RUNNING,
    EXCHANGE_EMERGENCY_MITIGATION_ENABLED,
    EXCHANGE_EMERGENCY_MITIGATION_INFO,
    EXCHANGE_MONITORING_OVERRIDES,
    EXCHANGE_MONITORING_OVERRIDE_EXPIRY_TIMESTAMP_SECONDS,
)


@dataclass
class Depth:
    """A server's answers to the every-refresh cmdlets."""

    copies: list[eh.DatabaseCopy] = field(default_factory=list)
    activation: eh.ActivationSettings | None = None
    meters: list[eh.ResourceMeter] = field(default_factory=list)
    mitigations: eh.Mitigations | None = None


@dataclass
class SlowHealth:
    """A server's answers to the slow cmdlets, kept between their refreshes."""

    at: float = 0.0  # last attempt
    succeeded_at: float = 0.0  # Get-ServerHealth's last answer
    health_sets: list[eh.HealthSet] | None = None
    services: list[eh.RoleServices] | None = None
    overrides: list[eh.MonitoringOverride] | None = None
    auth: eh.AuthConfig | None = None
    global_overrides: list[eh.MonitoringOverride] | None = None
    mitigation_service: eh.ServiceState | None = None


PARSERS: dict[str, Callable[[Any], Any]] = {
    "Get-MailboxDatabaseCopyStatus": eh.parse_database_copy,
    "Get-MailboxServer": eh.parse_mailbox_server,
    "Get-ExchangeDiagnosticInfo": eh.parse_resource_throttling,
    "Get-ServerHealth": eh.parse_server_health,
    "Test-ServiceHealth": eh.parse_service_health,
    "Get-ServerMonitoringOverride": lambda o: eh.parse_monitoring_override(o, "server"),
    "Get-AuthConfig": eh.parse_auth_config,
    "Get-GlobalMonitoringOverride": lambda o: eh.parse_monitoring_override(o, "global"),
}


def calls(name: str, cmdlets: Sequence[tuple[str, str, dict[str, str]]]) -> list[tuple[str, dict[str, str]]]:
    """The cmdlets with their parameters for the server ``name``."""
    return [(cmdlet, {key: name, **extra} if key else dict(extra)) for cmdlet, key, extra in cmdlets]


@dataclass
class HealthLimits:
    max_listed_monitors: int
    max_listed_overrides: int


class HealthWatch:
    """The health cmdlets of every server, on their own runspaces and thread pool, refreshed in the background."""

    def __init__(
        self,
        config: ExchangeConfig,
        names: Mapping[str, str],
        clients: Mapping[str, PsrpClient],
        plain_clients: Mapping[str, PsrpClient],
        redact: Redactor,
        clock: Callable[[], float] = domain_time.now,
    ) -> None:
        self.config = config.health
        self.names = names  # server -> its Exchange name, as cmdlets take it
        self.clients = clients
        self.plain_clients = plain_clients  # the plain PowerShell endpoint, for Get-Service
        self.redact = redact
        self.clock = clock
        self.pool = BlockingPool(
            f"exchange-health-{config.organization.lower()}", config.max_concurrent_servers, error=RemotingError
        )
        self.depths = {server: Depth() for server in clients}
        self.slows = {server: SlowHealth() for server in clients}
        self.cmdlet_ok: dict[str, dict[str, bool]] = {server: {} for server in clients}
        self.parse_errors: list[str] = []
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.limits = HealthLimits(config.health.max_listed_monitors, config.health.max_listed_overrides)

    def poke(self, servers: Sequence[str]) -> None:
        """Start a refresh for each of ``servers`` (those that answered the core refresh) not already running one."""
        for server in servers:
            task = self._tasks.get(server)
            if task is None or task.done():
                self._tasks[server] = asyncio.create_task(self._refresh(server), name=f"exchange-health-{server}")

    async def wait(self) -> None:
        """Until the refreshes under way are done (tests, the golden exposition)."""
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _refresh(self, server: str) -> None:
        now = self.clock()
        slow = self.slows[server]
        due = now - slow.at >= self.config.interval_seconds
        if due:
            slow.at = now
        name = self.names[server]
        ok: dict[str, bool] = {}
        errors: list[str] = []

        def run(client: PsrpClient) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
            frequent = self._run_all(client, calls(name, EVERY_REFRESH), ok, errors)
            rare = self._run_all(client, calls(name, SLOW), ok, errors) if due and frequent is not None else {}
            return frequent or {}, rare or {}

        client = self.clients[server]
        timeout = self.config.timeout_seconds
        try:
            frequent, rare = await self.pool.run(run, client, lock=client.lock, timeout=timeout, lock_timeout=timeout)
        except RemotingError as exc:
            log.warning("exchange server %s: health: %s", server, self.redact(f"{exc.reason}: {exc}"))
            self.cmdlet_ok[server] = {**self.cmdlet_ok[server], **ok}
            return
        _store_depth(self.depths[server], frequent)
        if due:
            _store_slow(slow, rare, now)
            await self._mitigation_service(server, ok, errors)
        self.cmdlet_ok[server] = {**self.cmdlet_ok[server], **ok}
        self.parse_errors += errors

    def _run_all(
        self, client: PsrpClient, cmdlets: list[tuple[str, dict[str, str]]], ok: dict[str, bool], errors: list[str]
    ) -> dict[str, list[Any]] | None:
        """Each cmdlet's parsed answer; a refused cmdlet is left out, a server that stops answering ends it (None)."""
        answers: dict[str, list[Any]] = {}
        for cmdlet, params in cmdlets:
            try:
                objects = client.run(cmdlet, params)
            except RemotingError as exc:
                ok[cmdlet] = False
                log.warning("exchange server %s: %s", client.target.name, self.redact(str(exc)))
                if exc.reason != "cmdlet_error":
                    return None
                continue
            ok[cmdlet] = True
            answers[cmdlet] = parse_each(objects, PARSERS[cmdlet], errors)
        return answers

    async def _mitigation_service(self, server: str, ok: dict[str, bool], errors: list[str]) -> None:
        client = self.plain_clients.get(server)
        if client is None:
            return
        try:
            answer = await self.pool.run(
                client.run,
                "Get-Service",
                {"Name": MITIGATION_SERVICE},
                lock=client.lock,
                timeout=self.config.timeout_seconds,
            )
        except RemotingError as exc:
            ok[MITIGATION_CMDLET] = False
            log.warning("exchange server %s: Emergency Mitigation: %s", server, self.redact(str(exc)))
            return
        services = parse_each(answer, eh.parse_service, errors)
        self.slows[server].mitigation_service = services[0] if services else None
        ok[MITIGATION_CMDLET] = bool(services)

    def problems(self, server: str) -> dict[str, tuple[str, ...]]:
        """What is wrong with the server, as the patch-day report compares it (exporter/patch_days.py)."""
        depth, slow = self.depths[server], self.slows[server]
        out = {
            "database_copies_not_healthy": [f"{c.database}: {c.status}" for c in depth.copies if not c.healthy],
            "content_index_failed": [
                f"{c.database}: {c.content_index}" for c in depth.copies if c.content_index.startswith("Failed")
            ],
            "back_pressure": [f"{m.resource} {m.use}" for m in depth.meters if m.use != "Low"],
            "health_sets_unhealthy": [hs.name for hs in slow.health_sets or [] if hs.state == "Unhealthy"],
            "services_not_running": [f"{n} ({r.role})" for r in slow.services or [] for n in r.not_running],
        }
        activation = depth.activation
        out["activation_blocked"] = (
            [f"DatabaseCopyAutoActivationPolicy {activation.policy}"]
            if activation and activation.policy == "Blocked"
            else []
        ) + (["DatabaseCopyActivationDisabledAndMoveNow"] if activation and activation.disabled_and_move_now else [])
        mitigation = []
        if slow.mitigation_service is not None and slow.mitigation_service.status != "Running":
            mitigation.append(
                f"MSExchangeMitigation {slow.mitigation_service.status} ({slow.mitigation_service.start_type})"
            )
        if depth.mitigations is not None and not depth.mitigations.enabled:
            mitigation.append("MitigationsEnabled false")
        out["emergency_mitigation_off"] = mitigation
        return {k: tuple(sorted(v)) for k, v in out.items()}

    def metrics(self, organization: str, certificates: Sequence[ex.Certificate], caps: Caps) -> list[Series]:
        return metrics(organization, self.depths, self.slows, certificates, self.limits, caps)

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        await close_clients(self.clients.values())
        await self.pool.shutdown(wait=False)


def _store_depth(depth: Depth, answers: Mapping[str, list[Any]]) -> None:
    """What answered replaces what was; a refused cmdlet's series go (its failure is in exchange_cmdlet_success)."""
    depth.copies = answers.get("Get-MailboxDatabaseCopyStatus", [])
    activation = answers.get("Get-MailboxServer", [])
    depth.activation = activation[0] if activation else None
    depth.meters = [m for result in answers.get("Get-ExchangeDiagnosticInfo", []) for m in result]


def _store_slow(slow: SlowHealth, answers: Mapping[str, list[Any]], now: float) -> None:
    """As for the frequent ones: stale health is worse than none (exchange_cmdlet_success says what is missing,
    exchange_server_health_last_success_timestamp_seconds since when)."""
    if "Get-ServerHealth" in answers:
        slow.health_sets, slow.succeeded_at = eh.health_sets(answers["Get-ServerHealth"]), now
    else:
        slow.health_sets = None
    slow.services = answers.get("Test-ServiceHealth")
    slow.overrides = answers.get("Get-ServerMonitoringOverride")
    auth = answers.get("Get-AuthConfig")
    slow.auth = auth[0] if auth else None
    slow.global_overrides = answers.get("Get-GlobalMonitoringOverride")


def metrics(
    organization: str,
    depths: Mapping[str, Depth],
    slows: Mapping[str, SlowHealth],
    certificates: Sequence[ex.Certificate],
    limits: HealthLimits,
    caps: Caps,
) -> list[Series]:
    health_set = EXCHANGE_HEALTH_SET_STATE.new()
    unhealthy = EXCHANGE_HEALTH_MONITOR_UNHEALTHY_INFO.new()
    health_at = EXCHANGE_SERVER_HEALTH_LAST_SUCCESS_TIMESTAMP_SECONDS.new()
    services = EXCHANGE_REQUIRED_SERVICES_RUNNING.new()
    not_running = EXCHANGE_SERVICE_NOT_RUNNING_INFO.new()
    overrides = EXCHANGE_MONITORING_OVERRIDES.new()
    expiry = EXCHANGE_MONITORING_OVERRIDE_EXPIRY_TIMESTAMP_SECONDS.new()
    service = EXCHANGE_EMERGENCY_MITIGATION_SERVICE_RUNNING.new()
    caps.note(EXCHANGE_HEALTH_MONITOR_UNHEALTHY_INFO)
    caps.note(EXCHANGE_MONITORING_OVERRIDE_EXPIRY_TIMESTAMP_SECONDS)
    listed: list[tuple[str, eh.MonitoringOverride]] = []
    for server, slow in sorted(slows.items()):
        health_at.add_metric([server], slow.succeeded_at)
        bad: list[tuple[str, str, str]] = []
        for hs in slow.health_sets or []:
            health_set.add_metric([server, hs.name], float(eh.HEALTH_STATE_VALUES[hs.state]))
            bad += [(server, hs.name, monitor) for monitor in hs.unhealthy]
        top = caps.top(EXCHANGE_HEALTH_MONITOR_UNHEALTHY_INFO, bad, limits.max_listed_monitors, lambda m: m)
        top.add(unhealthy, list, lambda _: 1.0)
        for role in slow.services or []:
            services.add_metric([server, role.role], 1.0 if role.required_running and not role.not_running else 0.0)
            for name in role.not_running:
                not_running.add_metric([server, role.role, name], 1.0)
        if slow.overrides is not None:
            overrides.add_metric([server, "server"], float(len(slow.overrides)))
            listed += [(server, o) for o in slow.overrides]
        if slow.mitigation_service is not None:
            s = slow.mitigation_service
            service.add_metric([server, s.start_type or "Unknown"], 1.0 if s.status == "Running" else 0.0)
    org = _org_slow(slows)
    if org is not None and org.global_overrides is not None:
        overrides.add_metric(["*", "global"], float(len(org.global_overrides)))
        listed += [("*", o) for o in org.global_overrides]
    expiring = caps.top(
        EXCHANGE_MONITORING_OVERRIDE_EXPIRY_TIMESTAMP_SECONDS,
        [x for x in listed if x[1].expires is not None],
        limits.max_listed_overrides,
        lambda x: (x[1].expires, x[0], x[1].item),
    )
    expiring.add(
        expiry,
        lambda x: [
            x[0],
            x[1].scope,
            x[1].item_type,
            x[1].health_set,
            x[1].item,
            x[1].property,
            "true" if x[1].disables() else "false",
        ],
        lambda x: x[1].expires or 0.0,
    )
    families = [health_set, unhealthy, health_at, services, not_running]
    families += _depth_metrics(depths)
    families += _auth_metrics(organization, org.auth if org else None, certificates)
    families += [service, overrides, expiry]
    return families


def _org_slow(slows: Mapping[str, SlowHealth]) -> SlowHealth | None:
    """The organisation-wide answers (Get-AuthConfig, global overrides) from the first server that gave them."""
    return next((s for _, s in sorted(slows.items()) if s.auth is not None), None)


def _depth_metrics(depths: Mapping[str, Depth]) -> list[Series]:
    status = EXCHANGE_DATABASE_COPY_STATUS.new()
    copy_queue = EXCHANGE_DATABASE_COPY_QUEUE_LENGTH.new()
    replay_queue = EXCHANGE_DATABASE_REPLAY_QUEUE_LENGTH.new()
    content_index = EXCHANGE_DATABASE_CONTENT_INDEX_STATE.new()
    active = EXCHANGE_DATABASE_COPY_ACTIVE.new()
    preference = EXCHANGE_DATABASE_COPY_ACTIVATION_PREFERENCE.new()
    inspected = EXCHANGE_DATABASE_COPY_LAST_INSPECTED_LOG_TIMESTAMP_SECONDS.new()
    policy = EXCHANGE_DATABASE_COPY_AUTO_ACTIVATION_POLICY.new()
    move_now = EXCHANGE_DATABASE_COPY_ACTIVATION_DISABLED_AND_MOVE_NOW.new()
    back_pressure = EXCHANGE_TRANSPORT_BACK_PRESSURE.new()
    pressure = EXCHANGE_TRANSPORT_RESOURCE_PRESSURE.new()
    threshold = EXCHANGE_TRANSPORT_RESOURCE_PRESSURE_THRESHOLD.new()
    enabled = EXCHANGE_EMERGENCY_MITIGATION_ENABLED.new()
    mitigation = EXCHANGE_EMERGENCY_MITIGATION_INFO.new()
    for server, depth in sorted(depths.items()):
        for c in depth.copies:
            labels = [server, c.database]
            status.add_metric([*labels, c.status], 1.0)
            copy_queue.add_metric(labels, float(c.copy_queue))
            replay_queue.add_metric(labels, float(c.replay_queue))
            content_index.add_metric([*labels, c.content_index], 1.0)
            active.add_metric(labels, 1.0 if c.active else 0.0)
            preference.add_metric(labels, float(c.activation_preference))
            if c.last_inspected_log is not None:
                inspected.add_metric(labels, c.last_inspected_log)
        if depth.activation is not None:
            policy.add_metric([server, depth.activation.policy], 1.0)
            move_now.add_metric([server], 1.0 if depth.activation.disabled_and_move_now else 0.0)
        for m in depth.meters:
            back_pressure.add_metric([server, m.resource], float(eh.RESOURCE_USE[m.use]))
            pressure.add_metric([server, m.resource], m.pressure)
            for transition, value in sorted(m.thresholds.items()):
                threshold.add_metric([server, m.resource, transition], value)
        if depth.mitigations is not None:
            enabled.add_metric([server], 1.0 if depth.mitigations.enabled else 0.0)
            for name in depth.mitigations.applied:
                mitigation.add_metric([server, name, "applied"], 1.0)
            for name in depth.mitigations.blocked:
                mitigation.add_metric([server, name, "blocked"], 1.0)
    return [
        status,
        copy_queue,
        replay_queue,
        content_index,
        active,
        preference,
        inspected,
        policy,
        move_now,
        back_pressure,
        pressure,
        threshold,
        enabled,
        mitigation,
    ]


def _auth_metrics(
    organization: str, auth: eh.AuthConfig | None, certificates: Sequence[ex.Certificate]
) -> list[Series]:
    not_after = EXCHANGE_AUTH_CERTIFICATE_NOT_AFTER_TIMESTAMP_SECONDS.new()
    found = EXCHANGE_AUTH_CERTIFICATE_FOUND.new()
    configured = EXCHANGE_AUTH_NEXT_CERTIFICATE_CONFIGURED.new()
    effective = EXCHANGE_AUTH_NEXT_CERTIFICATE_EFFECTIVE_TIMESTAMP_SECONDS.new()
    if auth is not None:
        by_thumbprint = {c.thumbprint: c for c in certificates}
        current = by_thumbprint.get(auth.current_thumbprint)
        found.add_metric([organization], 1.0 if current else 0.0)
        if current is not None:
            not_after.add_metric([organization, current.thumbprint], current.not_after)
        configured.add_metric([organization], 1.0 if auth.next_thumbprint else 0.0)
        if auth.next_thumbprint and auth.next_effective is not None:
            effective.add_metric([organization, auth.next_thumbprint], auth.next_effective)
    return [not_after, found, configured, effective]
