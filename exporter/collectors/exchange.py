"""Exchange server health over PowerShell remoting: component states per requester, builds, queues, hybrid drift.

Each refresh asks every server, at once and each over its own runspace, for its own component states,
its build, its queues and its certificates, always as a cmdlet with parameters (Exchange's restricted
runspace takes nothing else). Organisation-wide settings that drift slowly (remote mailboxes, accepted
domains, connectors) are read on a longer interval from the first server that answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from exporter import clock as domain_time
from exporter import patch_days
from exporter.collectors import exchange_health as health
from exporter.config import ExchangeConfig
from exporter.config.remoting import RemotingHost
from exporter.metrics import CAPPED_SERIES, OTHER, PARSE_ERRORS, Caps, Family, Series
from exporter.parsers import exchange as ex
from exporter.parsers import exchange_health as eh
from exporter.parsers import routing
from exporter.parsers.clixml import parse_each
from exporter.parsers.exchange_builds import TABLE_AS_OF, date_to_unix
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

SERVER_CMDLETS = ("Get-ExchangeServer", "Get-ServerComponentState", "Get-Queue", "Get-ExchangeCertificate")
HYBRID_CMDLETS = (
    "Get-RemoteMailbox",
    "Get-AcceptedDomain",
    "Get-SendConnector",
    "Get-ReceiveConnector",
    "Get-HybridConfiguration",
)
FILE_VERSION_CMDLET = "Get-Command ExSetup.exe"
# Inactive by design on on-premises servers (they serve Microsoft's own datacenters).
EXPECTED_INACTIVE = frozenset({"ForwardSyncDaemon", "ProvisioningRps"})


EXCHANGE_SERVER_UP = Family(
    "exchange_server_up",
    "gauge",
    "1 if the core cmdlets (Get-ExchangeServer, Get-ServerComponentState, Get-Queue, Get-ExchangeCertificate) "
    "answered in the last refresh (cached between refreshes); the health cmdlets' answers are in "
    "exchange_cmdlet_success.",
    ("server",),
)
EXCHANGE_SERVER_ERROR_REASON = Family(
    "exchange_server_error_reason",
    "gauge",
    "Why the server's last refresh failed (1 for the reason): unreachable (also a connection lost mid-answer), "
    "timeout, tls_error, server_error (HTTP 500), cmdlet_error, access_denied, wsman_fault, protocol_error (an "
    "answer that is not WS-Management); " + AUTHENTICATION_REASONS + ".",
    ("server", "reason"),
)
EXCHANGE_SERVER_SWEEP_DURATION_SECONDS = Family(
    "exchange_server_sweep_duration_seconds",
    "gauge",
    "How long the server took to answer.",
    ("server",),
)
EXCHANGE_CMDLET_SUCCESS = Family(
    "exchange_cmdlet_success",
    "gauge",
    "1 if the cmdlet answered on the server in the last refresh.",
    ("server", "cmdlet"),
)
EXCHANGE_SERVER_INFO = Family(
    "exchange_server_info",
    "gauge",
    "The server as Get-ExchangeServer describes it.",
    ("server", "fqdn", "edition", "roles", "site"),
)
EXCHANGE_BUILD_INFO = Family(
    "exchange_build_info",
    "gauge",
    "The server's build, the product and cumulative update (CU) it "
    "belongs to, and the security/hotfix update when known.",
    ("server", "version", "product", "cu", "update"),
)
EXCHANGE_BUILD_CU_RELEASE_TIMESTAMP_SECONDS = Family(
    "exchange_build_cu_release_timestamp_seconds",
    "gauge",
    "Release date of the CU the server runs (0 if the build is not in the exporter's table).",
    ("server",),
)
EXCHANGE_BUILD_IN_HYBRID_SUPPORT_WINDOW = Family(
    "exchange_build_in_hybrid_support_window",
    "gauge",
    "1 if the server runs one of its product's two newest CUs (what the Hybrid Configuration Wizard supports).",
    ("server",),
)
EXCHANGE_BUILD_NEWER_THAN_TABLE = Family(
    "exchange_build_newer_than_table",
    "gauge",
    "1 if the server runs a build newer than any the exporter's build table knows for its product or CU: update "
    "the exporter (its table is generated from CSS-Exchange's) to have the CU and update named.",
    ("server",),
)
EXCHANGE_BUILD_TABLE_AS_OF_TIMESTAMP_SECONDS = Family(
    "exchange_build_table_as_of_timestamp_seconds",
    "gauge",
    "The day of the newest build in the exporter's Exchange build table.",
)
EXCHANGE_BUILD_PRODUCT_END_OF_SUPPORT_TIMESTAMP_SECONDS = Family(
    "exchange_build_product_end_of_support_timestamp_seconds",
    "gauge",
    "End of support of the server's product (absent when it has none announced).",
    ("server", "product"),
)
EXCHANGE_COMPONENT_STATE = Family(
    "exchange_component_state",
    "gauge",
    "Get-ServerComponentState per component: 0 Inactive, "
    "1 Active, 2 Draining (Exchange's ServiceState), -1 anything else.",
    ("server", "component"),
)
EXCHANGE_COMPONENT_REQUESTER_STATE = Family(
    "exchange_component_requester_state",
    "gauge",
    "A requester's entry for a component: 0 Inactive, 1 Active, 2 Draining. A component is "
    "Inactive while any requester holds it Inactive; scope local is the server's registry, "
    "remote is Active Directory.",
    ("server", "component", "requester", "scope"),
)
EXCHANGE_COMPONENT_REQUESTER_TIMESTAMP_SECONDS = Family(
    "exchange_component_requester_timestamp_seconds",
    "gauge",
    "When the requester last set its state for the component.",
    ("server", "component", "requester", "scope"),
)
EXCHANGE_QUEUE_MESSAGES = Family(
    "exchange_queue_messages",
    "gauge",
    "Messages in the server's queues, summed by next hop, delivery type and status.",
    ("server", "next_hop", "delivery_type", "status"),
)
EXCHANGE_QUEUE_LAST_ERROR_INFO = Family(
    "exchange_queue_last_error_info",
    "gauge",
    "1 for a queue group whose last error carries these SMTP codes: code/enhanced_code as "
    "Exchange reported it, remote_* as the next hop answered (when quoted).",
    ("server", "next_hop", "delivery_type", "code", "enhanced_code", "remote_code", "remote_enhanced_code"),
)
EXCHANGE_CERTIFICATE_NOT_AFTER_TIMESTAMP_SECONDS = Family(
    "exchange_certificate_not_after_timestamp_seconds",
    "gauge",
    "When each Exchange certificate on the server expires.",
    ("server", "thumbprint", "subject"),
)
EXCHANGE_HYBRID_SETTINGS_UP = Family(
    "exchange_hybrid_settings_up",
    "gauge",
    "1 if the organisation's hybrid settings were read "
    "in their last refresh (they refresh on their own, longer interval).",
    ("organization",),
)
EXCHANGE_HYBRID_SETTINGS_LAST_SUCCESS_TIMESTAMP_SECONDS = Family(
    "exchange_hybrid_settings_last_success_timestamp_seconds",
    "gauge",
    "When the hybrid settings were last read successfully (0 if never).",
    ("organization",),
)
EXCHANGE_REMOTE_MAILBOXES = Family(
    "exchange_remote_mailboxes",
    "gauge",
    "Remote mailboxes (Get-RemoteMailbox).",
    ("organization",),
)
EXCHANGE_REMOTE_MAILBOXES_MISROUTED = Family(
    "exchange_remote_mailboxes_misrouted",
    "gauge",
    "Remote mailboxes whose RemoteRoutingAddress is not in the tenant routing domain; mail to them "
    "does not reach Exchange Online.",
    ("organization", "tenant_routing_domain"),
)
EXCHANGE_REMOTE_MAILBOX_MISROUTED_INFO = Family(
    "exchange_remote_mailbox_misrouted_info",
    "gauge",
    "1 for each misrouted remote mailbox, up to the configured cap.",
    ("organization", "mailbox", "routing_domain"),
)
EXCHANGE_ACCEPTED_DOMAIN_INFO = Family(
    "exchange_accepted_domain_info",
    "gauge",
    "The organisation's accepted domains.",
    ("organization", "domain", "type", "default"),
)
EXCHANGE_CONNECTOR_TLS_CERTIFICATE_INFO = Family(
    "exchange_connector_tls_certificate_info",
    "gauge",
    "The TlsCertificateName of each connector that sets one; hybrid=true for the "
    "connectors the Hybrid Configuration Wizard manages.",
    ("organization", "kind", "connector", "issuer", "subject", "hybrid"),
)
EXCHANGE_CONNECTOR_TLS_CERTIFICATE_MATCHES = Family(
    "exchange_connector_tls_certificate_matches",
    "gauge",
    "1 if a hybrid connector's TlsCertificateName matches the configured one, 0 if it differs or is not set.",
    ("organization", "kind", "connector"),
)

EXCHANGE_ROUTING_FINDINGS = Family(
    "exchange_routing_findings",
    "gauge",
    "Mail routing configuration findings by kind (0 when none): open_relay, internal_relay_without_send_connector, "
    "hybrid_domain_not_authoritative, centralized_transport_*, office365_send_connector_*; see the README.",
    ("organization", "kind"),
)
EXCHANGE_ROUTING_FINDING_INFO = Family(
    "exchange_routing_finding_info",
    "gauge",
    "1 for each mail routing finding: the accepted domain or connector it is about "
    "(up to routing.max_listed_findings).",
    ("organization", "kind", "object", "severity"),
)
EXCHANGE_ROUTING_PERMISSIONS_READ = Family(
    "exchange_routing_permissions_read",
    "gauge",
    "1 if the receive connectors' permissions for anonymous senders (Get-ADPermission) were read; without them "
    "anonymous relay rights go unchecked.",
    ("organization",),
)
# Only anonymous senders' rights matter to the checks: asking for just them keeps the answer small.
PERMISSIONS_PIPELINE: tuple[tuple[str, dict[str, str]], ...] = (
    ("Get-ReceiveConnector", {}),
    ("Get-ADPermission", {"User": routing.ANONYMOUS_LOGON}),
)


@dataclass
class ServerSweep:
    server: str
    up: bool = False
    duration: float = 0.0
    reason: str = ""
    detail: str = ""
    cmdlet_ok: dict[str, bool] = field(default_factory=dict)
    info: ex.ExchangeServer | None = None
    components: list[ex.ComponentState] = field(default_factory=list)
    queues: list[ex.Queue] = field(default_factory=list)
    certificates: list[ex.Certificate] = field(default_factory=list)
    mitigations: eh.Mitigations | None = None
    parse_errors: list[str] = field(default_factory=list)


@dataclass
class HybridState:
    at: float = 0.0  # last success
    attempted: float = 0.0
    failures: int = 0  # attempts in a row that no server answered
    up: bool = False
    detail: str = ""
    server: str = ""
    remote_mailboxes: list[ex.RemoteMailbox] = field(default_factory=list)
    accepted_domains: list[ex.AcceptedDomain] = field(default_factory=list)
    connectors: list[ex.Connector] = field(default_factory=list)
    findings: list[routing.Finding] = field(default_factory=list)
    permissions_read: bool = False


class ExchangeCollector(Collector):
    name = "exchange"
    families = (
        EXCHANGE_SERVER_UP,
        EXCHANGE_SERVER_ERROR_REASON,
        EXCHANGE_SERVER_SWEEP_DURATION_SECONDS,
        EXCHANGE_CMDLET_SUCCESS,
        EXCHANGE_SERVER_INFO,
        EXCHANGE_BUILD_INFO,
        EXCHANGE_BUILD_CU_RELEASE_TIMESTAMP_SECONDS,
        EXCHANGE_BUILD_IN_HYBRID_SUPPORT_WINDOW,
        EXCHANGE_BUILD_NEWER_THAN_TABLE,
        EXCHANGE_BUILD_TABLE_AS_OF_TIMESTAMP_SECONDS,
        EXCHANGE_BUILD_PRODUCT_END_OF_SUPPORT_TIMESTAMP_SECONDS,
        EXCHANGE_COMPONENT_STATE,
        EXCHANGE_COMPONENT_REQUESTER_STATE,
        EXCHANGE_COMPONENT_REQUESTER_TIMESTAMP_SECONDS,
        EXCHANGE_QUEUE_MESSAGES,
        EXCHANGE_QUEUE_LAST_ERROR_INFO,
        EXCHANGE_CERTIFICATE_NOT_AFTER_TIMESTAMP_SECONDS,
        EXCHANGE_HYBRID_SETTINGS_UP,
        EXCHANGE_HYBRID_SETTINGS_LAST_SUCCESS_TIMESTAMP_SECONDS,
        EXCHANGE_REMOTE_MAILBOXES,
        EXCHANGE_REMOTE_MAILBOXES_MISROUTED,
        EXCHANGE_REMOTE_MAILBOX_MISROUTED_INFO,
        EXCHANGE_ACCEPTED_DOMAIN_INFO,
        EXCHANGE_CONNECTOR_TLS_CERTIFICATE_INFO,
        EXCHANGE_CONNECTOR_TLS_CERTIFICATE_MATCHES,
        EXCHANGE_ROUTING_FINDINGS,
        EXCHANGE_ROUTING_FINDING_INFO,
        EXCHANGE_ROUTING_PERMISSIONS_READ,
        *health.FAMILIES,
        CAPPED_SERIES,
        PARSE_ERRORS,
    )
    wait_on_close = False  # a server that stopped answering must not hold up a reload

    def __init__(
        self,
        config: ExchangeConfig,
        guard: CredentialGuard,
        redact: Redactor | None = None,
        clock: Callable[[], float] = domain_time.now,
        client_factory: Callable[[RemotingTarget, RemotingCredential, CredentialGuard, float], PsrpClient] = PsrpClient,
    ) -> None:
        # Four cmdlets per server, each bounded by the timeout; the registry's deadline is a backstop.
        super().__init__(
            config.organization.lower(),
            config.interval_seconds,
            timeout=min(config.interval_seconds, config.timeout_seconds * 2 + 1),
            concurrency=config.max_concurrent_servers,
            error=RemotingError,
        )
        self.config = config
        self.redact = redact or Redactor()
        self.clock = clock
        checks = config.hybrid.routing if config.hybrid else None
        self._routing_policy = routing.RoutingPolicy(
            relay_allowed_ranges=tuple(checks.relay_allowed_ranges) if checks else routing.EOP_RANGES,
            centralized_transport=checks.centralized_transport if checks else None,
            centralized_receive_connector=checks.centralized_receive_connector if checks else "",
            expected_tls_certificate_name=(config.hybrid.expected_tls_certificate_name or "") if config.hybrid else "",
            office365_smart_host=checks.office365_smart_host if checks else "",
        )
        credential = RemotingCredential.of(config)

        def client(entry: RemotingHost, port: int | None, path: str, configuration: str) -> PsrpClient:
            target = RemotingTarget.of(config, entry, port, path, configuration)
            # The I/O boundary: PsrpClient, or a replay of recorded CLIXML (the golden exposition test).
            return client_factory(target, credential, guard, config.bind_retry_after_seconds)

        self.clients = {s.name.lower(): client(s, None, config.path, config.configuration_name) for s in config.servers}
        su = config.security_update
        winrm_port = su.port or (5986 if config.scheme == "https" else 5985)
        # Only when enabled: ExSetup's version through the server's plain PowerShell endpoint.
        self.file_version_clients = {
            s.name.lower(): client(s, winrm_port, su.path, su.configuration_name) for s in config.servers if su.enabled
        }
        self._names = {s.name.lower(): s.name for s in config.servers}
        # Health in depth on a second runspace per server (see exporter/collectors/exchange_health.py).
        self.health = (
            health.HealthWatch(
                config,
                self._names,
                {s.name.lower(): client(s, None, config.path, config.configuration_name) for s in config.servers},
                self.file_version_clients,
                self.redact,
                clock,
            )
            if config.health.enabled
            else None
        )
        self._last: list[ServerSweep] = []
        self._hybrid = HybridState()
        self._parse_errors_total = 0

    # --- refresh ---------------------------------------------------------------------------------------------

    async def collect(self) -> list[Series]:
        sweeps = list(await asyncio.gather(*(self._sweep(server) for server in self.clients)))
        hybrid = self.config.hybrid
        now = self.clock()
        if hybrid is not None and now - self._hybrid.attempted >= self._hybrid_wait(hybrid.interval_seconds):
            await self._refresh_hybrid([s.server for s in sweeps if s.up] or list(self.clients))
        self._last = sweeps
        if self.health is not None:
            for sweep in sweeps:
                self.health.depths[sweep.server].mitigations = sweep.mitigations
            # A server that answered (a cmdlet refused is still an answer) gets its health read too.
            self.health.poke([s.server for s in sweeps if s.up or s.reason == "cmdlet_error"])
            self._parse_errors_total += len(self.health.parse_errors)
            self.health.parse_errors.clear()
        for sweep in sweeps:
            self._parse_errors_total += len(sweep.parse_errors)
            for error in sweep.parse_errors[:5]:
                log.warning("%s/%s: skipped an object: %s", self.target, sweep.server, error)
        return self._metrics(sweeps)

    async def _on_server(self, server: str, work: Callable[[PsrpClient], Any]) -> Any:
        """``work`` on the server's client in a worker thread, one pipeline at a time per server."""
        client = self.clients[server]
        deadline, lock_wait = self.target_deadlines(self.config.timeout_seconds)
        return await self.pool.run(work, client, lock=client.lock, timeout=deadline, lock_timeout=lock_wait)

    async def _sweep(self, server: str) -> ServerSweep:
        sweep = ServerSweep(server)
        started = time.monotonic()
        name = self._names[server]
        server_objects: list[str] = []  # Get-ExchangeServer, parsed once ExSetup's version is known
        calls: list[tuple[str, dict[str, Any], Callable[[Any], Any] | None, list[Any]]] = [
            ("Get-ExchangeServer", {"Identity": name}, None, server_objects),
            ("Get-ServerComponentState", {"Identity": name}, ex.parse_component_state, sweep.components),
            ("Get-Queue", {"Server": name}, ex.parse_queue, sweep.queues),
            ("Get-ExchangeCertificate", {"Server": name}, ex.parse_certificate, sweep.certificates),
        ]
        failures: list[RemotingError] = []
        file_versions: list[str] = []
        file_version_client = self.file_version_clients.get(server)

        def run(client: PsrpClient) -> None:
            for cmdlet, params, parse, into in calls:
                try:
                    objects = client.run(cmdlet, params)
                except RemotingError as exc:
                    sweep.cmdlet_ok[cmdlet] = False
                    failures.append(exc)
                    if exc.reason != "cmdlet_error":
                        return  # the server itself is not answering: do not spend a timeout per cmdlet
                    continue
                sweep.cmdlet_ok[cmdlet] = True
                into.extend(objects if parse is None else parse_each(objects, parse, sweep.parse_errors))
            # Optional and on another endpoint: its failure is reported per cmdlet, not as the server down.
            if file_version_client is not None:
                try:
                    # Its lock too: the health loop reads Emergency Mitigation through the same runspace, and two
                    # threads on one WinRM session open a second connection that message encryption cannot use.
                    with file_version_client.lock:
                        answer = file_version_client.run("Get-Command", {"Name": "ExSetup.exe"})
                    file_versions.extend(parse_each(answer, ex.parse_exsetup_version, sweep.parse_errors))
                    sweep.cmdlet_ok[FILE_VERSION_CMDLET] = bool(file_versions)
                except RemotingError as exc:
                    sweep.cmdlet_ok[FILE_VERSION_CMDLET] = False
                    log.warning("exchange server %s: ExSetup version: %s", server, self.redact(str(exc)))

        try:
            await self._on_server(server, run)
        except RemotingError as exc:
            failures.append(exc)
        file_version = file_versions[0] if file_versions else None
        infos = parse_each(server_objects, lambda o: ex.parse_exchange_server(o, file_version), sweep.parse_errors)
        sweep.info = infos[0] if infos else None
        mitigations = parse_each(server_objects[:1], eh.parse_mitigations, sweep.parse_errors)
        sweep.mitigations = mitigations[0] if mitigations else None
        sweep.up = not failures
        if failures:
            sweep.reason = failures[0].reason
            sweep.detail = self.redact(f"{failures[0].reason}: {failures[0]}")
            log.warning("exchange server %s: %s", server, sweep.detail)
        sweep.duration = time.monotonic() - started
        return sweep

    def _hybrid_wait(self, interval: float) -> float:
        """Seconds from one hybrid read to the next: its interval after a read; after a failed one the refresh
        interval, doubled with each failure in a row up to its own (a blip must not leave the hybrid settings
        unknown for 15 minutes, nor a server that keeps failing be asked its whole directory at every refresh).
        Half a refresh early counts: refreshes do not come to the millisecond."""
        refresh = self.config.interval_seconds
        failures = self._hybrid.failures
        return (min(interval, refresh * 2 ** min(failures - 1, 16)) if failures else interval) - refresh / 2

    async def _refresh_hybrid(self, candidates: list[str]) -> None:
        hybrid = self._hybrid
        hybrid.attempted = self.clock()
        errors: list[str] = []
        for server in candidates:
            results: dict[str, list[str]] = {}

            def run(client: PsrpClient, results: dict[str, list[str]] = results) -> None:
                for cmdlet in HYBRID_CMDLETS:
                    params = {"ResultSize": "Unlimited"} if cmdlet == "Get-RemoteMailbox" else {}
                    results[cmdlet] = client.run(cmdlet, params)
                try:  # an account without the Active Directory Permissions role cannot: the rest still counts
                    results["Get-ADPermission"] = client.run_pipeline(PERMISSIONS_PIPELINE)
                except RemotingError as exc:
                    if exc.reason != "cmdlet_error":
                        raise
                    log.warning(
                        "%s: Get-ADPermission on the receive connectors: %s", self.target, self.redact(str(exc))
                    )

            try:
                await self._on_server(server, run)
            except RemotingError as exc:
                hybrid.up, hybrid.detail = False, self.redact(f"{server}: {exc.reason}: {exc}")
                log.warning("exchange hybrid settings from %s: %s", server, hybrid.detail)
                continue
            hybrid.remote_mailboxes = parse_each(results["Get-RemoteMailbox"], ex.parse_remote_mailbox, errors)
            hybrid.accepted_domains = parse_each(results["Get-AcceptedDomain"], ex.parse_accepted_domain, errors)
            hybrid.connectors = (
                parse_each(results["Get-SendConnector"], lambda o: ex.parse_connector(o, "send"), errors)
                + parse_each(results["Get-ReceiveConnector"], lambda o: ex.parse_connector(o, "receive"), errors)
                + parse_each(results["Get-HybridConfiguration"], lambda o: ex.parse_connector(o, "hybrid"), errors)
            )
            hybrid.permissions_read = "Get-ADPermission" in results
            before = {(f.kind, f.object) for f in hybrid.findings}
            hybrid.findings = routing.findings(
                hybrid.accepted_domains,
                hybrid.remote_mailboxes,
                parse_each(results["Get-SendConnector"], routing.parse_send_connector, errors),
                parse_each(results["Get-ReceiveConnector"], routing.parse_receive_connector, errors),
                parse_each(results["Get-ADPermission"], routing.parse_permission, errors)
                if hybrid.permissions_read
                else None,
                self._routing_policy,
                routing.centralized_transport_on(parse_each(results["Get-HybridConfiguration"], lambda o: o, errors)),
            )
            for finding in hybrid.findings:
                if (finding.kind, finding.object) not in before:  # once, when it appears: the fix is in the text
                    log.warning("%s mail routing: %s: %s", self.target, finding.kind, finding.detail)
            hybrid.up, hybrid.detail, hybrid.at, hybrid.server = True, "", self.clock(), server
            hybrid.failures = 0
            break
        else:
            hybrid.failures += 1
        self._parse_errors_total += len(errors)
        for error in errors[:5]:
            log.warning("%s hybrid settings: skipped an object: %s", self.target, error)

    # --- metrics -----------------------------------------------------------------------------------------------

    def _metrics(self, sweeps: list[ServerSweep]) -> list[Series]:
        up = EXCHANGE_SERVER_UP.new()
        error = EXCHANGE_SERVER_ERROR_REASON.new()
        duration = EXCHANGE_SERVER_SWEEP_DURATION_SECONDS.new()
        cmdlet_ok = EXCHANGE_CMDLET_SUCCESS.new()
        info = EXCHANGE_SERVER_INFO.new()
        build = EXCHANGE_BUILD_INFO.new()
        cu_release = EXCHANGE_BUILD_CU_RELEASE_TIMESTAMP_SECONDS.new()
        window = EXCHANGE_BUILD_IN_HYBRID_SUPPORT_WINDOW.new()
        newer = EXCHANGE_BUILD_NEWER_THAN_TABLE.new()
        end_of_support = EXCHANGE_BUILD_PRODUCT_END_OF_SUPPORT_TIMESTAMP_SECONDS.new()
        component = EXCHANGE_COMPONENT_STATE.new()
        requester = EXCHANGE_COMPONENT_REQUESTER_STATE.new()
        requester_ts = EXCHANGE_COMPONENT_REQUESTER_TIMESTAMP_SECONDS.new()
        queue_messages = EXCHANGE_QUEUE_MESSAGES.new()
        queue_error = EXCHANGE_QUEUE_LAST_ERROR_INFO.new()
        certificate = EXCHANGE_CERTIFICATE_NOT_AFTER_TIMESTAMP_SECONDS.new()
        caps = Caps(self.name, self.target)
        caps.note(EXCHANGE_QUEUE_MESSAGES)
        for sweep in sweeps:
            server = sweep.server
            up.add_metric([server], 1.0 if sweep.up else 0.0)
            if not sweep.up:
                error.add_metric([server, sweep.reason], 1.0)
            duration.add_metric([server], sweep.duration)
            health_ok = self.health.cmdlet_ok[server] if self.health is not None else {}
            for cmdlet, ok in sorted({**health_ok, **sweep.cmdlet_ok}.items()):
                cmdlet_ok.add_metric([server, cmdlet], 1.0 if ok else 0.0)
            if sweep.info is not None:
                i, b = sweep.info, sweep.info.build
                info.add_metric([server, i.fqdn.lower(), i.edition, i.roles, i.site], 1.0)
                build.add_metric([server, b.text, b.product, b.cu, b.update], 1.0)
                cu_release.add_metric([server], date_to_unix(b.cu_release))
                window.add_metric([server], 1.0 if b.in_hybrid_window else 0.0)
                newer.add_metric([server], 1.0 if b.newer_than_table else 0.0)
                if b.end_of_support is not None:
                    end_of_support.add_metric([server, b.product], date_to_unix(b.end_of_support))
            for c in sweep.components:
                component.add_metric([server, c.component], float(c.state_value))
                for r in c.requesters:
                    labels = [server, c.component, r.requester, r.scope]
                    requester.add_metric(labels, float(ex.COMPONENT_STATES.get(r.state, -1)))
                    if r.timestamp is not None:
                        requester_ts.add_metric(labels, r.timestamp)
            self._add_queues(server, sweep.queues, queue_messages, queue_error, caps)
            for cert in sweep.certificates:
                certificate.add_metric([server, cert.thumbprint, cert.subject], cert.not_after)
        families: list[Series] = [
            up,
            error,
            duration,
            cmdlet_ok,
            info,
            build,
            cu_release,
            window,
            newer,
            EXCHANGE_BUILD_TABLE_AS_OF_TIMESTAMP_SECONDS.one([], date_to_unix(TABLE_AS_OF)),
            end_of_support,
            component,
            requester,
            requester_ts,
            queue_messages,
            queue_error,
            certificate,
        ]
        families.extend(self._hybrid_metrics(caps))
        if self.health is not None:
            families += self.health.metrics(self.target, [c for s in sweeps for c in s.certificates], caps)
        families.append(caps.series())
        families.append(PARSE_ERRORS.one([self.name, self.target], self._parse_errors_total))
        return families

    def _add_queues(self, server: str, queues: list[ex.Queue], messages: Series, errors: Series, caps: Caps) -> None:
        groups: dict[tuple[str, str, str], int] = {}
        replies: set[tuple[str, str, str, str, str, str]] = set()
        for q in queues:
            key = (q.next_hop, q.delivery_type, q.status)
            groups[key] = groups.get(key, 0) + q.message_count
            reported, remote = q.reply.reported, q.reply.remote
            if reported is not None:
                replies.add(
                    (
                        q.next_hop,
                        q.delivery_type,
                        reported.code,
                        reported.enhanced,
                        remote.code if remote else "",
                        remote.enhanced if remote else "",
                    )
                )
        # The biggest queues are the ones worth a series each; the rest is summed under next_hop="<other>".
        top = caps.top(EXCHANGE_QUEUE_MESSAGES, groups.items(), self.config.max_queues, lambda kv: (-kv[1], kv[0]))
        top.add(messages, lambda kv: [server, *kv[0]], lambda kv: kv[1], other=[server, OTHER, OTHER, OTHER])
        kept_hops = {k[0] for k, _ in top.kept}
        for hop, delivery, code, enhanced, rcode, renhanced in sorted(replies):
            errors.add_metric(
                [server, hop if hop in kept_hops else OTHER, delivery, code, enhanced, rcode, renhanced], 1.0
            )

    def _hybrid_metrics(self, caps: Caps) -> list[Series]:
        config, state = self.config.hybrid, self._hybrid
        if config is None:
            return []
        org = self.target
        up = EXCHANGE_HYBRID_SETTINGS_UP.new()
        up.add_metric([org], 1.0 if state.up else 0.0)
        last = EXCHANGE_HYBRID_SETTINGS_LAST_SUCCESS_TIMESTAMP_SECONDS.new()
        last.add_metric([org], state.at)
        families: list[Series] = [up, last]
        if state.at == 0:
            return families
        total = EXCHANGE_REMOTE_MAILBOXES.new()
        total.add_metric([org], float(len(state.remote_mailboxes)))
        misrouted = EXCHANGE_REMOTE_MAILBOXES_MISROUTED.new()
        listed = EXCHANGE_REMOTE_MAILBOX_MISROUTED_INFO.new()
        families += [total, misrouted, listed]
        if config.tenant_routing_domain:
            wrong = [m for m in state.remote_mailboxes if not m.routed_to(config.tenant_routing_domain)]
            misrouted.add_metric([org, config.tenant_routing_domain.lower()], float(len(wrong)))
            top = caps.top(EXCHANGE_REMOTE_MAILBOX_MISROUTED_INFO, wrong, config.max_listed_mailboxes, lambda m: m.name)
            top.add(listed, lambda m: [org, m.name, m.routing_domain or "(none)"], lambda _: 1.0)
        domains = EXCHANGE_ACCEPTED_DOMAIN_INFO.new()
        for d in state.accepted_domains:
            domains.add_metric([org, d.domain, d.domain_type, "true" if d.default else "false"], 1.0)
        tls = EXCHANGE_CONNECTOR_TLS_CERTIFICATE_INFO.new()
        matches = EXCHANGE_CONNECTOR_TLS_CERTIFICATE_MATCHES.new()
        for c in state.connectors:
            if c.tls_certificate_name is not None:
                tls.add_metric(
                    [
                        org,
                        c.kind,
                        c.name,
                        c.tls_certificate_name.issuer,
                        c.tls_certificate_name.subject,
                        "true" if c.hybrid else "false",
                    ],
                    1.0,
                )
            if c.hybrid and c.enabled and config.expected_tls_certificate_name:
                ok = ex.identifier_matches(c.tls_certificate_name, config.expected_tls_certificate_name)
                matches.add_metric([org, c.kind, c.name], 1.0 if ok else 0.0)
        families += [domains, tls, matches, *self._routing_metrics(caps, config.routing.max_listed_findings)]
        return families

    def _routing_metrics(self, caps: Caps, cap: int) -> list[Series]:
        org, state = self.target, self._hybrid
        read = EXCHANGE_ROUTING_PERMISSIONS_READ.new()
        read.add_metric([org], 1.0 if state.permissions_read else 0.0)
        counts = EXCHANGE_ROUTING_FINDINGS.new()
        for kind in routing.KINDS:
            counts.add_metric([org, kind], float(sum(f.kind == kind for f in state.findings)))
        listed = EXCHANGE_ROUTING_FINDING_INFO.new()
        top = caps.top(EXCHANGE_ROUTING_FINDING_INFO, state.findings, cap, lambda f: (not f.critical, f.kind, f.object))
        top.add(listed, lambda f: [org, f.kind, f.object, "critical" if f.critical else "warning"], lambda _: 1.0)
        return [read, counts, listed]

    def facts(self) -> dict[str, patch_days.Facts]:
        """What is wrong with each server now, for the patch-day report (from the last refresh; asks nothing)."""
        out = {}
        for sweep in self._last:
            if sweep.info is None:
                continue
            problems: dict[str, tuple[str, ...]] = {}
            inactive = []
            for c in sweep.components:
                if c.state_value == 0 and c.component not in EXPECTED_INACTIVE:
                    holders = sorted({r.requester for r in c.requesters if r.state == "Inactive"})
                    inactive.append(f"{c.component} (held by {', '.join(holders)})" if holders else c.component)
            problems["components_inactive"] = patch_days.bounded(inactive)
            if self.health is not None:
                problems.update(self.health.problems(sweep.server))
            queued = float(sum(q.message_count for q in sweep.queues))
            out[sweep.server] = patch_days.Facts(sweep.info.build.text, problems, {"queued_messages": queued})
        return out

    def target_status(self) -> list[TargetStatus]:
        statuses = [TargetStatus(s.server, s.up, s.detail) for s in self._last]
        if self.config.hybrid is not None and self._hybrid.attempted:
            statuses.append(TargetStatus(f"{self.target} (hybrid settings)", self._hybrid.up, self._hybrid.detail))
        return statuses

    async def close(self) -> None:
        if self.health is not None:
            await self.health.close()
        await close_clients([*self.clients.values(), *self.file_version_clients.values()])
        await super().close()
