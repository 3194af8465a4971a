"""DirectAccess health over PowerShell remoting: the Remote Access servers, and a few canary clients.

Each refresh asks every server for its components' health, its connections, its IP-HTTPS interface and
certificate and its firewall profiles; and every configured client for its DirectAccess status, its IP-HTTPS
interface, its firewall profiles, its effective NRPT and whether an internal name resolves through it. The firewall
state must be the same on a server and its clients (a server with its firewall off lets IP-HTTPS come up but no
name resolve through the NRPT), so both sides are read the same way, from the ActiveStore (the policy in force).

A client that is off the network is reported as offline: it is a laptop, not a failure of the server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from exporter.config import DirectAccessConfig
from exporter.config.remoting import RemotingHost
from exporter.metrics import PARSE_ERRORS, Family, Series
from exporter.parsers import directaccess as da
from exporter.parsers.clixml import parse_each
from exporter.registry import Collector, Redactor, TargetStatus
from exporter.sources.credential_guard import CredentialGuard
from exporter.sources.winrm import (
    AUTHENTICATION_REASONS,
    PsrpClient,
    RemotingCredential,
    RemotingError,
    RemotingTarget,
    close_clients,
)

log = logging.getLogger(__name__)

# The firewall as enforced: the persistent store (the default) misses what Group Policy sets.
ACTIVE_STORE = {"PolicyStore": "ActiveStore"}
SERVER_CMDLETS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("Get-RemoteAccessHealth", {}),
    ("Get-RemoteAccessConnectionStatisticsSummary", {}),
    ("Get-RemoteAccess", {}),
    ("Get-NetIPHttpsState", {}),
    ("Get-NetFirewallProfile", ACTIVE_STORE),
)
CLIENT_CMDLETS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("Get-DAConnectionStatus", {}),
    ("Get-NetIPHttpsState", {}),
    ("Get-NetFirewallProfile", ACTIVE_STORE),
    ("Get-DnsClientNrptPolicy", {}),
)
RESOLVE = "Resolve-DnsName"
# A client that cannot be reached is away from the network, which laptops are.
OFFLINE_REASONS = frozenset({"unreachable", "timeout", "tls_error"})

_HOST = ("server",)
_CLIENT = ("client", "server")
DIRECTACCESS_SERVER_UP = Family(
    "directaccess_server_up",
    "gauge",
    "1 if every cmdlet the exporter runs on the Remote Access server answered in the last refresh (cached).",
    _HOST,
)
DIRECTACCESS_SERVER_ERROR_REASON = Family(
    "directaccess_server_error_reason",
    "gauge",
    "Why the server's last refresh failed (1 for the reason): unreachable, timeout, tls_error, server_error, "
    "cmdlet_error, access_denied, wsman_fault; " + AUTHENTICATION_REASONS + ".",
    ("server", "reason"),
)
DIRECTACCESS_CMDLET_SUCCESS = Family(
    "directaccess_cmdlet_success",
    "gauge",
    "1 if the cmdlet answered on the server or client in the last refresh.",
    ("host", "role", "cmdlet"),
)
DIRECTACCESS_COMPONENT_HEALTH = Family(
    "directaccess_component_health",
    "gauge",
    "Get-RemoteAccessHealth per component: 1 for its HealthState (OK, Warning, Error, Disabled, Unknown), 0 for "
    "the others. Component Server is the server's roll-up; the monitors' cause and resolution are on the "
    "landing page.",
    ("server", "component", "state"),
)
DIRECTACCESS_COMPONENT_HEALTH_CHANGED_TIMESTAMP_SECONDS = Family(
    "directaccess_component_health_changed_timestamp_seconds",
    "gauge",
    "When the component entered its current HealthState.",
    ("server", "component"),
)
DIRECTACCESS_CONNECTIONS = Family(
    "directaccess_connections",
    "gauge",
    "Connections now on the server (Get-RemoteAccessConnectionStatisticsSummary), by kind: directaccess, vpn.",
    ("server", "kind"),
)
DIRECTACCESS_UNIQUE_USERS = Family(
    "directaccess_unique_users",
    "gauge",
    "Distinct users connected now.",
    _HOST,
)
DIRECTACCESS_SERVER_IPHTTPS_INTERFACE_ACTIVE = Family(
    "directaccess_server_iphttps_interface_active",
    "gauge",
    "1 if the server's IP-HTTPS interface is active (Get-NetIPHttpsState).",
    _HOST,
)
DIRECTACCESS_SERVER_IPHTTPS_LAST_ERROR_INFO = Family(
    "directaccess_server_iphttps_last_error_info",
    "gauge",
    "The server's IP-HTTPS LastErrorCode (code 0x0, reason none when there is none) and its name.",
    ("server", "code", "reason"),
)
DIRECTACCESS_IPHTTPS_CERTIFICATE_NOT_AFTER_TIMESTAMP_SECONDS = Family(
    "directaccess_iphttps_certificate_not_after_timestamp_seconds",
    "gauge",
    "When the IP-HTTPS certificate (Get-RemoteAccess SslCertificate) expires; absent when not readable.",
    _HOST,
)
DIRECTACCESS_SERVER_FIREWALL_PROFILE_ENABLED = Family(
    "directaccess_server_firewall_profile_enabled",
    "gauge",
    "1 if Windows Firewall is on for the profile on the server, as enforced (ActiveStore).",
    ("server", "profile"),
)
DIRECTACCESS_CLIENT_UP = Family(
    "directaccess_client_up",
    "gauge",
    "1 if the canary client answered every cmdlet in the last refresh; 0 with reason offline when it could not be "
    "reached (a laptop off the network, not a server failure).",
    _CLIENT,
)
DIRECTACCESS_CLIENT_ERROR_REASON = Family(
    "directaccess_client_error_reason",
    "gauge",
    "Why the client's last refresh failed (1 for the reason): offline, server_error, cmdlet_error, "
    "access_denied, wsman_fault; " + AUTHENTICATION_REASONS + ".",
    ("client", "server", "reason"),
)
DIRECTACCESS_CLIENT_CONNECTION_STATUS = Family(
    "directaccess_client_connection_status",
    "gauge",
    "Get-DAConnectionStatus: 1 for the client's Status (ConnectedRemotely, ConnectedLocally, Error, "
    "ActionableError, Unknown), 0 for the others.",
    ("client", "server", "status"),
)
DIRECTACCESS_CLIENT_CONNECTION_SUBSTATUS_INFO = Family(
    "directaccess_client_connection_substatus_info",
    "gauge",
    "The client's Substatus (None, CouldNotContactDirectAccessServer, NameResolutionFailure, ...).",
    ("client", "server", "substatus"),
)
DIRECTACCESS_CLIENT_IPHTTPS_INTERFACE_ACTIVE = Family(
    "directaccess_client_iphttps_interface_active",
    "gauge",
    "1 if the client's IP-HTTPS interface is active; 0 also when IP-HTTPS is not in use (inside, or over Teredo).",
    _CLIENT,
)
DIRECTACCESS_CLIENT_IPHTTPS_LAST_ERROR_INFO = Family(
    "directaccess_client_iphttps_last_error_info",
    "gauge",
    "The client's IP-HTTPS LastErrorCode and its name (0x2afc no_data: often a proxy; 0x103 no_usable_certificate; "
    "0x800b0109 untrusted_root; unknown codes as hex with reason other).",
    ("client", "server", "code", "reason"),
)
DIRECTACCESS_CLIENT_FIREWALL_PROFILE_ENABLED = Family(
    "directaccess_client_firewall_profile_enabled",
    "gauge",
    "1 if Windows Firewall is on for the profile on the client, as enforced (ActiveStore).",
    ("client", "server", "profile"),
)
DIRECTACCESS_CLIENT_NRPT_RULES = Family(
    "directaccess_client_nrpt_rules",
    "gauge",
    "Rules in the client's effective NRPT (Get-DnsClientNrptPolicy) that send names to the DirectAccess DNS "
    "servers; none while the client is inside (its network location server answers).",
    _CLIENT,
)
DIRECTACCESS_CLIENT_NAME_RESOLUTION_SUCCESS = Family(
    "directaccess_client_name_resolution_success",
    "gauge",
    "1 if the configured internal name resolved on the client (Resolve-DnsName, through the NRPT).",
    _CLIENT,
)
DIRECTACCESS_CLIENT_NAME_RESOLUTION_FAILURE_REASON = Family(
    "directaccess_client_name_resolution_failure_reason",
    "gauge",
    "Why the internal name did not resolve (1 for the reason): name_not_found, timeout, server_failure, "
    "no_records, error.",
    ("client", "server", "reason"),
)


@dataclass
class HostSweep:
    """What one server or client answered in a refresh."""

    name: str
    server: str  # the server itself, or the client's server
    up: bool = False
    reason: str = ""
    detail: str = ""
    cmdlet_ok: dict[str, bool] = field(default_factory=dict)
    answers: dict[str, list[Any]] = field(default_factory=dict)  # parsed objects by cmdlet
    resolution: str | None = None  # None: not asked; "" resolved; else the failure reason
    parse_errors: list[str] = field(default_factory=list)

    def parsed(self, cmdlet: str) -> list[Any]:
        return self.answers.get(cmdlet, [])


PARSERS: dict[str, Callable[[Any], Any]] = {
    "Get-RemoteAccessHealth": da.parse_component_health,
    "Get-RemoteAccessConnectionStatisticsSummary": da.parse_connection_summary,
    "Get-RemoteAccess": da.parse_iphttps_certificate_expiry,
    "Get-NetIPHttpsState": da.parse_iphttps_state,
    "Get-NetFirewallProfile": da.parse_firewall_profile,
    "Get-DAConnectionStatus": da.parse_connection_status,
    "Get-DnsClientNrptPolicy": da.parse_nrpt_rule,
}


class DirectAccessCollector(Collector):
    name = "directaccess"
    families = (
        DIRECTACCESS_SERVER_UP,
        DIRECTACCESS_SERVER_ERROR_REASON,
        DIRECTACCESS_CMDLET_SUCCESS,
        DIRECTACCESS_COMPONENT_HEALTH,
        DIRECTACCESS_COMPONENT_HEALTH_CHANGED_TIMESTAMP_SECONDS,
        DIRECTACCESS_CONNECTIONS,
        DIRECTACCESS_UNIQUE_USERS,
        DIRECTACCESS_SERVER_IPHTTPS_INTERFACE_ACTIVE,
        DIRECTACCESS_SERVER_IPHTTPS_LAST_ERROR_INFO,
        DIRECTACCESS_IPHTTPS_CERTIFICATE_NOT_AFTER_TIMESTAMP_SECONDS,
        DIRECTACCESS_SERVER_FIREWALL_PROFILE_ENABLED,
        DIRECTACCESS_CLIENT_UP,
        DIRECTACCESS_CLIENT_ERROR_REASON,
        DIRECTACCESS_CLIENT_CONNECTION_STATUS,
        DIRECTACCESS_CLIENT_CONNECTION_SUBSTATUS_INFO,
        DIRECTACCESS_CLIENT_IPHTTPS_INTERFACE_ACTIVE,
        DIRECTACCESS_CLIENT_IPHTTPS_LAST_ERROR_INFO,
        DIRECTACCESS_CLIENT_FIREWALL_PROFILE_ENABLED,
        DIRECTACCESS_CLIENT_NRPT_RULES,
        DIRECTACCESS_CLIENT_NAME_RESOLUTION_SUCCESS,
        DIRECTACCESS_CLIENT_NAME_RESOLUTION_FAILURE_REASON,
        PARSE_ERRORS,
    )
    wait_on_close = False  # a laptop that stopped answering must not hold up a reload

    def __init__(
        self,
        config: DirectAccessConfig,
        guard: CredentialGuard,
        redact: Redactor | None = None,
        client_factory: Callable[[RemotingTarget, RemotingCredential, CredentialGuard, float], PsrpClient] = PsrpClient,
    ) -> None:
        super().__init__(
            config.name.lower(),
            config.interval_seconds,
            timeout=min(config.interval_seconds, config.timeout_seconds * 2 + 1),
            concurrency=config.max_concurrent_servers,
            error=RemotingError,
        )
        self.config = config
        self.redact = redact or Redactor()
        credential = RemotingCredential.of(config)

        def connect(entry: RemotingHost) -> PsrpClient:
            return client_factory(RemotingTarget.of(config, entry), credential, guard, config.bind_retry_after_seconds)

        self.servers = {s.name.lower(): connect(s) for s in config.servers}
        self.clients = {c.name.lower(): connect(c) for c in config.clients}
        self._client_server = {c.name.lower(): c.server.lower() for c in config.clients}
        self._resolve = {c.name.lower(): c.resolve_name or config.resolve_name for c in config.clients}
        self._last: list[HostSweep] = []
        self._last_clients: list[HostSweep] = []
        self._parse_errors_total = 0

    # --- refresh ---------------------------------------------------------------------------------------------

    async def collect(self) -> list[Series]:
        servers = [self._sweep(name, name, client, SERVER_CMDLETS, None) for name, client in self.servers.items()]
        clients = [
            self._sweep(name, self._client_server[name], client, CLIENT_CMDLETS, self._resolve[name])
            for name, client in self.clients.items()
        ]
        sweeps = list(await asyncio.gather(*servers, *clients))
        self._last, self._last_clients = sweeps[: len(servers)], sweeps[len(servers) :]
        for sweep in sweeps:
            self._parse_errors_total += len(sweep.parse_errors)
            for error in sweep.parse_errors[:5]:
                log.warning("%s/%s: skipped an object: %s", self.target, sweep.name, error)
        return self._metrics()

    async def _sweep(
        self,
        name: str,
        server: str,
        client: PsrpClient,
        cmdlets: Sequence[tuple[str, dict[str, Any]]],
        resolve_name: str | None,
    ) -> HostSweep:
        sweep = HostSweep(name, server)
        failures: list[RemotingError] = []

        def run(client: PsrpClient) -> None:
            for cmdlet, params in cmdlets:
                try:
                    objects = client.run(cmdlet, params)
                except RemotingError as exc:
                    sweep.cmdlet_ok[cmdlet] = False
                    failures.append(exc)
                    if exc.reason != "cmdlet_error":
                        return  # the host itself is not answering: do not spend a timeout per cmdlet
                    continue
                sweep.cmdlet_ok[cmdlet] = True
                sweep.answers[cmdlet] = parse_each(objects, PARSERS[cmdlet], sweep.parse_errors)
            if resolve_name:
                try:
                    client.run(RESOLVE, {"Name": resolve_name, "DnsOnly": True})
                    sweep.resolution = ""
                except RemotingError as exc:
                    if exc.reason != "cmdlet_error":
                        failures.append(exc)
                        return
                    # The name not resolving is the answer, not the cmdlet failing.
                    sweep.resolution = da.resolution_failure_reason(str(exc))
                sweep.cmdlet_ok[RESOLVE] = True

        deadline, lock_wait = self.target_deadlines(self.config.timeout_seconds)
        try:
            await self.pool.run(run, client, lock=client.lock, timeout=deadline, lock_timeout=lock_wait)
        except RemotingError as exc:
            failures.append(exc)
        sweep.up = not failures
        if failures:
            sweep.reason = failures[0].reason
            sweep.detail = self.redact(f"{failures[0].reason}: {failures[0]}")
            log.warning("directaccess %s: %s", name, sweep.detail)
        return sweep

    # --- metrics -----------------------------------------------------------------------------------------------

    def _metrics(self) -> list[Series]:
        up = DIRECTACCESS_SERVER_UP.new()
        error = DIRECTACCESS_SERVER_ERROR_REASON.new()
        cmdlet_ok = DIRECTACCESS_CMDLET_SUCCESS.new()
        health = DIRECTACCESS_COMPONENT_HEALTH.new()
        changed = DIRECTACCESS_COMPONENT_HEALTH_CHANGED_TIMESTAMP_SECONDS.new()
        connections = DIRECTACCESS_CONNECTIONS.new()
        users = DIRECTACCESS_UNIQUE_USERS.new()
        iphttps = DIRECTACCESS_SERVER_IPHTTPS_INTERFACE_ACTIVE.new()
        iphttps_error = DIRECTACCESS_SERVER_IPHTTPS_LAST_ERROR_INFO.new()
        certificate = DIRECTACCESS_IPHTTPS_CERTIFICATE_NOT_AFTER_TIMESTAMP_SECONDS.new()
        firewall = DIRECTACCESS_SERVER_FIREWALL_PROFILE_ENABLED.new()
        for s in self._last:
            up.add_metric([s.name], 1.0 if s.up else 0.0)
            if not s.up:
                error.add_metric([s.name, s.reason], 1.0)
            for cmdlet, ok in sorted(s.cmdlet_ok.items()):
                cmdlet_ok.add_metric([s.name, "server", cmdlet], 1.0 if ok else 0.0)
            # A cluster answers for every member: each row goes to the server it names, here the one asked.
            for c in s.parsed("Get-RemoteAccessHealth"):
                for state in da.HEALTH_STATES:
                    health.add_metric([s.name, c.component, state], 1.0 if c.state == state else 0.0)
                if c.changed is not None:
                    changed.add_metric([s.name, c.component], c.changed)
            for summary in s.parsed("Get-RemoteAccessConnectionStatisticsSummary")[:1]:
                connections.add_metric([s.name, "directaccess"], float(summary.directaccess))
                connections.add_metric([s.name, "vpn"], float(summary.vpn))
                users.add_metric([s.name], float(summary.unique_users))
            for expiry in s.parsed("Get-RemoteAccess")[:1]:
                if expiry is not None:
                    certificate.add_metric([s.name], expiry)
            self._add_iphttps(s, [s.name], iphttps, iphttps_error)
            for p in s.parsed("Get-NetFirewallProfile"):
                firewall.add_metric([s.name, p.profile], 1.0 if p.enabled else 0.0)
        families: list[Series] = [
            up,
            error,
            cmdlet_ok,
            health,
            changed,
            connections,
            users,
            iphttps,
            iphttps_error,
            certificate,
            firewall,
        ]
        families += self._client_metrics(cmdlet_ok)
        families.append(PARSE_ERRORS.one([self.name, self.target], self._parse_errors_total))
        return families

    @staticmethod
    def _add_iphttps(sweep: HostSweep, labels: list[str], active: Series, last_error: Series) -> None:
        if not sweep.cmdlet_ok.get("Get-NetIPHttpsState"):
            return
        states = sweep.parsed("Get-NetIPHttpsState")
        state = states[0] if states else da.IPHTTPS_NOT_IN_USE
        active.add_metric(labels, 1.0 if state.active else 0.0)
        last_error.add_metric([*labels, state.code, state.reason], 1.0)

    def _client_metrics(self, cmdlet_ok: Series) -> list[Series]:
        up = DIRECTACCESS_CLIENT_UP.new()
        error = DIRECTACCESS_CLIENT_ERROR_REASON.new()
        status = DIRECTACCESS_CLIENT_CONNECTION_STATUS.new()
        substatus = DIRECTACCESS_CLIENT_CONNECTION_SUBSTATUS_INFO.new()
        iphttps = DIRECTACCESS_CLIENT_IPHTTPS_INTERFACE_ACTIVE.new()
        iphttps_error = DIRECTACCESS_CLIENT_IPHTTPS_LAST_ERROR_INFO.new()
        firewall = DIRECTACCESS_CLIENT_FIREWALL_PROFILE_ENABLED.new()
        nrpt = DIRECTACCESS_CLIENT_NRPT_RULES.new()
        resolved = DIRECTACCESS_CLIENT_NAME_RESOLUTION_SUCCESS.new()
        resolution_error = DIRECTACCESS_CLIENT_NAME_RESOLUTION_FAILURE_REASON.new()
        for c in self._last_clients:
            labels = [c.name, c.server]
            up.add_metric(labels, 1.0 if c.up else 0.0)
            if not c.up:
                error.add_metric([*labels, "offline" if c.reason in OFFLINE_REASONS else c.reason], 1.0)
            for cmdlet, ok in sorted(c.cmdlet_ok.items()):
                cmdlet_ok.add_metric([c.name, "client", cmdlet], 1.0 if ok else 0.0)
            for s in c.parsed("Get-DAConnectionStatus")[:1]:
                for known in da.CONNECTION_STATUSES:
                    status.add_metric([*labels, known], 1.0 if s.status == known else 0.0)
                substatus.add_metric([*labels, s.substatus], 1.0)
            self._add_iphttps(c, labels, iphttps, iphttps_error)
            for p in c.parsed("Get-NetFirewallProfile"):
                firewall.add_metric([*labels, p.profile], 1.0 if p.enabled else 0.0)
            if c.cmdlet_ok.get("Get-DnsClientNrptPolicy"):
                rules = c.parsed("Get-DnsClientNrptPolicy")
                nrpt.add_metric(labels, float(sum(r.directaccess for r in rules)))
            if c.resolution is not None:
                resolved.add_metric(labels, 0.0 if c.resolution else 1.0)
                if c.resolution:
                    resolution_error.add_metric([*labels, c.resolution], 1.0)
        return [up, error, status, substatus, iphttps, iphttps_error, firewall, nrpt, resolved, resolution_error]

    def target_status(self) -> list[TargetStatus]:
        statuses = []
        for s in self._last:
            # The monitors behind a component that is not OK: what the admin reads first, never a label.
            notes = [
                f"{c.component} {c.state}: "
                + "; ".join(" Fix: ".join(t for t in (m.cause or m.description, m.resolution) if t) for m in c.monitors)
                for c in s.parsed("Get-RemoteAccessHealth")
                if c.state in ("Error", "Warning") and c.monitors
            ]
            statuses.append(TargetStatus(s.name, s.up, " | ".join([s.detail, *notes]).strip(" |")))
        for c in self._last_clients:
            detail = "offline (not reachable: away from the network?)" if c.reason in OFFLINE_REASONS else c.detail
            statuses.append(TargetStatus(f"{c.name} (client of {c.server})", c.up, detail))
        return statuses

    async def close(self) -> None:
        await close_clients([*self.servers.values(), *self.clients.values()])
        await super().close()
