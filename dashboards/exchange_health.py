"""The Exchange health dashboard: component states and who holds them, builds around patch days, transport."""

from __future__ import annotations

from typing import Any

from dashboards.panels import Layout, Selector, annotation, dashboard, grid, stat, table, timeseries, variables

SEL = Selector('job=~"$job"', 'server=~"$server"')
JOB = Selector('job=~"$job"')
STATES = {"0": ("Inactive", "red"), "1": ("Active", "green"), "2": ("Draining", "orange")}
# Inactive by design on on-premises servers (they serve Microsoft's own datacenters).
EXPECTED_INACTIVE = "ForwardSyncDaemon|ProvisioningRps"
UNEXPECTED = f'component!~"{EXPECTED_INACTIVE}"'
SERVER_WIDE_OFFLINE = 'component="ServerWideOffline"'
HYBRID = 'hybrid="true"'
HEALTH_SET_STATES = {
    "0": ("Healthy", "green"),
    "1": ("Disabled", "transparent"),
    "2": ("Degraded", "orange"),
    "3": ("Repairing", "yellow"),
    "4": ("Unhealthy", "red"),
}
RESOURCE_USE = {"0": ("Low", "green"), "1": ("Medium", "orange"), "2": ("High", "red")}
COPY_NOT_HEALTHY = 'status!~"Mounted|Healthy"'


def build_changes() -> dict[str, Any]:
    """An annotation wherever a server starts reporting a new build: the patch days on every time panel."""
    return annotation(
        "Build changes",
        f"{SEL('exchange_build_info')} unless {SEL('exchange_build_info')} offset 10m",
        "{{server}} now runs {{version}}",
        "{{product}} {{cu}} {{update}}",
        "server,cu",
    )


def health_rows(lay: Layout) -> None:
    """Health in depth: Managed Availability, services, database copies, back pressure, OAuth, mitigations."""
    lay.row("Managed Availability and services")
    lay.add(
        grid(
            "Health sets per server",
            f"{SEL('exchange_health_set_state')}",
            "Get-ServerHealth: each health set's worst monitor (refreshed every health.interval_seconds). Its "
            "responders act on Unhealthy on their own: restarts, and components taken offline as requester HealthApi.",
            "health_set",
            "server",
            HEALTH_SET_STATES,
        ),
        12,
        14,
    )
    lay.add(
        table(
            "Monitors not healthy",
            f"{SEL('exchange_health_monitor_unhealthy_info')}",
            "The monitors behind an Unhealthy, Degraded or Repairing health set (capped list).",
            {"server": "Server", "health_set": "Health set", "monitor": "Monitor", "Value": "Listed"},
        ),
        12,
        7,
    )
    lay.add(
        table(
            "Required services not running",
            f"{SEL('exchange_service_not_running_info')}",
            "Test-ServiceHealth: a service a role requires that is not running. After a failed update, setup "
            "leaves services disabled.",
            {"server": "Server", "role": "Role", "service": "Service", "Value": "Not running"},
        ),
        12,
        7,
    )

    lay.row("Database copies")
    lay.add(
        table(
            "Copies",
            f"{SEL('exchange_database_copy_status')} == 1",
            "Get-MailboxDatabaseCopyStatus per server: Mounted (active) and Healthy (passive) are well; Suspended, "
            "Failed, Seeding, ServiceDown ... do not protect the database.",
            {"server": "Server", "database": "Database", "status": "Status", "Value": "Current"},
            exclude=("Time", "__name__", "job", "instance", "Value"),
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Copy and replay queues",
            [
                (f"{SEL('exchange_database_copy_queue_length')}", "copy {{database}} on {{server}}"),
                (f"{SEL('exchange_database_replay_queue_length')}", "replay {{database}} on {{server}}"),
            ],
            "Log files not yet copied to (copy) or replayed into (replay) each passive copy: what a failover "
            "now would lose or wait for.",
        ),
        8,
        8,
    )
    lay.add(
        table(
            "Activation and content index",
            f"{SEL('exchange_database_copy_auto_activation_policy')} == 1",
            "DatabaseCopyAutoActivationPolicy per server: Blocked after maintenance means no database fails over "
            "to it. The content index state per copy is in the Copies table's series "
            "exchange_database_content_index_state.",
            {"server": "Server", "policy": "Activation policy", "Value": "Current"},
            exclude=("Time", "__name__", "job", "instance", "Value"),
        ),
        8,
        8,
    )

    lay.row("Transport back pressure")
    lay.add(
        grid(
            "Back pressure per resource",
            f"{SEL('exchange_transport_back_pressure')}",
            "EdgeTransport's resource meters: Medium throttles submission, High stops it (452 4.3.1 "
            "Insufficient system resources).",
            "resource",
            "server",
            RESOURCE_USE,
        ),
        10,
        8,
    )
    lay.add(
        timeseries(
            "Resource pressure",
            [(f"{SEL('exchange_transport_resource_pressure')}", "{{server}} {{resource}}")],
            "Each meter's pressure; exchange_transport_resource_pressure_threshold holds the levels at which it "
            "changes state.",
        ),
        14,
        8,
    )

    lay.row("OAuth, Emergency Mitigation, overrides")
    lay.add(
        stat(
            "Auth certificate: days left",
            f"min({JOB('exchange_auth_certificate_not_after_timestamp_seconds')} - time()) / 86400",
            "The OAuth certificate Get-AuthConfig names: when it expires, hybrid free/busy and OAuth break.",
            unit="d",
            thresholds=[(None, "red"), (30, "orange"), (60, "green")],
        ),
        6,
        6,
    )
    lay.add(
        table(
            "Emergency Mitigation service",
            f"{SEL('exchange_emergency_mitigation_service_running')}",
            "MSExchangeMitigation per server (1 running): Disabled after a failed update leaves new "
            "vulnerabilities unmitigated.",
            {"server": "Server", "start_type": "Start type", "Value": "Running"},
        ),
        8,
        6,
    )
    lay.add(
        table(
            "Monitoring overrides by expiry",
            f"{SEL('exchange_monitoring_override_expiry_timestamp_seconds')} * 1000",
            "Managed Availability overrides and when they expire; one past its expiry that disables an item "
            "(disables=true) silently turns off monitoring or recovery.",
            {
                "server": "Server",
                "scope": "Scope",
                "item_type": "Type",
                "health_set": "Health set",
                "item": "Item",
                "property": "Property",
                "disables": "Disables",
                "Value": "Expires",
            },
            unit="dateTimeAsIso",
        ),
        10,
        6,
    )


def exchange_health() -> dict[str, Any]:
    lay = Layout()
    lay.row("Now")
    lay.add(
        stat(
            "Servers answering",
            f"sum({SEL('exchange_server_up')}) / count({SEL('exchange_server_up')})",
            "Share of servers whose cmdlets all answered the last refresh.",
            unit="percentunit",
            thresholds=[(None, "red"), (0.99, "green")],
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "ServerWideOffline Inactive",
            f"count({SEL('exchange_component_state', SERVER_WIDE_OFFLINE)} == 0) or vector(0)",
            "Servers taken out of service as a whole (every other component follows ServerWideOffline).",
            thresholds=[(None, "green"), (1, "red")],
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Inactive components",
            f"count({SEL('exchange_component_state', UNEXPECTED)} == 0) or vector(0)",
            "Components Inactive on any server (ForwardSyncDaemon and ProvisioningRps are Inactive by "
            "design on-premises and not counted).",
            thresholds=[(None, "green"), (1, "orange")],
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Messages queued",
            f"sum({SEL('exchange_queue_messages')})",
            "Messages in every queue of the selected servers.",
            thresholds=[(None, "green"), (100, "orange"), (500, "red")],
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Builds outside the hybrid window",
            f"count({SEL('exchange_build_in_hybrid_support_window')} == 0) or vector(0)",
            "Servers not on one of their product's two newest CUs: the Hybrid Configuration Wizard does not "
            "support them.",
            thresholds=[(None, "green"), (1, "orange")],
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Misrouted remote mailboxes",
            f"sum({JOB('exchange_remote_mailboxes_misrouted')})",
            "Remote mailboxes whose RemoteRoutingAddress is not in the tenant routing domain.",
            thresholds=[(None, "green"), (1, "orange")],
        ),
        4,
        4,
    )

    lay.row("Component states")
    lay.add(
        grid(
            "Component state per server",
            f"{SEL('exchange_component_state')}",
            "Get-ServerComponentState for every server: one row per component.",
            "component",
            "server",
            STATES,
        ),
        12,
        14,
    )
    lay.add(
        table(
            "Held Inactive by",
            f"{SEL('exchange_component_requester_timestamp_seconds')} * 1000 "
            f"and on (job, server, component, requester, scope) "
            f"({SEL('exchange_component_requester_state')} == 0)",
            "Each requester that holds a component Inactive, and since when. A component comes back only "
            "when every requester that set it Inactive sets it Active: Set-ServerComponentState -Requester "
            "Maintenance does not clear an entry of requester Functional. scope local = the server's "
            "registry, remote = Active Directory.",
            {
                "server": "Server",
                "component": "Component",
                "requester": "Requester",
                "scope": "Scope",
                "Value": "Since",
            },
            unit="dateTimeAsIso",
        ),
        12,
        7,
    )
    lay.add(
        timeseries(
            "Inactive components per server",
            [
                (
                    f"count by (server) ({SEL('exchange_component_state', UNEXPECTED)} == 0)",
                    "{{server}}",
                )
            ],
            "The trend around patch days: a CU or security update takes components Inactive while it "
            "installs and should bring them all back.",
        ),
        12,
        7,
    )

    lay.row("Builds")
    lay.add(
        table(
            "Builds",
            f"{SEL('exchange_build_info')}",
            "What each server runs. AdminDisplayVersion names the CU; the security update shows when the "
            "exporter reads ExSetup's file version (security_update.enabled).",
            {
                "server": "Server",
                "product": "Product",
                "cu": "CU",
                "update": "Update",
                "version": "Build",
                "Value": "Reported",
            },
        ),
        12,
        7,
    )
    lay.add(
        timeseries(
            "Days since the server's CU was released",
            [(f"(time() - {SEL('exchange_build_cu_release_timestamp_seconds')} > 0) / 86400", "{{server}}")],
            "Drops when a server moves to a newer CU; the build-change annotations mark when.",
            unit="d",
        ),
        12,
        7,
    )

    lay.row("Transport")
    lay.add(
        timeseries(
            "Queued messages by next hop",
            [(f"sum by (server, next_hop) ({SEL('exchange_queue_messages')})", "{{server}} {{next_hop}}")],
            "Get-Queue, summed per next hop.",
            stack=True,
        ),
        12,
        8,
    )
    lay.add(
        table(
            "Queue last errors",
            f"{SEL('exchange_queue_last_error_info')}",
            "The SMTP codes in each queue's LastError: code as Exchange reported it, remote code as the next "
            "hop answered. 421 4.3.2 = the next hop's transport is not active (often its ServerWideOffline); "
            "451 4.7.500 = Exchange Online throttles anonymous mail (a certificate mismatch on the inbound "
            "connector).",
            {
                "server": "Server",
                "next_hop": "Next hop",
                "delivery_type": "Delivery type",
                "code": "Code",
                "enhanced_code": "Enhanced",
                "remote_code": "Remote code",
                "remote_enhanced_code": "Remote enhanced",
                "Value": "Present",
            },
        ),
        12,
        8,
    )

    health_rows(lay)

    lay.row("Certificates and hybrid")
    lay.add(
        table(
            "Certificates by time left",
            f"{SEL('exchange_certificate_not_after_timestamp_seconds')} - time()",
            "Exchange certificates on each server; negative = expired. An expired Auth certificate breaks "
            "OAuth to Exchange Online.",
            {"server": "Server", "thumbprint": "Thumbprint", "subject": "Subject", "Value": "Time left"},
            unit="s",
        ),
        12,
        8,
    )
    lay.add(
        table(
            "Hybrid connector certificate names",
            f"{JOB('exchange_connector_tls_certificate_info', HYBRID)} "
            f"* on (job, organization, kind, connector) group_left "
            f"{JOB('exchange_connector_tls_certificate_matches')}",
            "TlsCertificateName of the connectors the Hybrid Configuration Wizard manages; 0 = differs from "
            "the certificate the exporter was told to expect, which Exchange Online will not match.",
            {
                "kind": "Kind",
                "connector": "Connector",
                "issuer": "Issuer",
                "subject": "Subject",
                "Value": "Matches",
                "organization": "Organization",
            },
            exclude=("Time", "__name__", "job", "instance", "hybrid"),
        ),
        12,
        8,
    )
    lay.add(
        table(
            "Misrouted remote mailboxes",
            f"{JOB('exchange_remote_mailbox_misrouted_info')}",
            "Remote mailboxes whose RemoteRoutingAddress is outside the tenant routing domain (capped list).",
            {"mailbox": "Mailbox", "routing_domain": "Routes to", "organization": "Organization", "Value": "Misrouted"},
        ),
        12,
        7,
    )
    lay.add(
        table(
            "Accepted domains",
            f"{JOB('exchange_accepted_domain_info')}",
            "The tenant routing domain must be an accepted domain (InternalRelay or Authoritative).",
            {
                "domain": "Domain",
                "type": "Type",
                "default": "Default",
                "organization": "Organization",
                "Value": "Present",
            },
        ),
        12,
        7,
    )

    lay.row("Servers and exporter")
    lay.add(
        table(
            "Why servers are down",
            f"{SEL('exchange_server_error_reason')} == 1",
            "The reason of each server whose last refresh failed; the landing page has the full message.",
            {"server": "Server", "reason": "Reason", "Value": "Down"},
        ),
        8,
        7,
    )
    lay.add(
        table(
            "Cmdlets that failed",
            f"{SEL('exchange_cmdlet_success')} == 0",
            "Cmdlets that did not answer on a server in the last refresh.",
            {"server": "Server", "cmdlet": "Cmdlet", "Value": "Failed"},
        ),
        8,
        7,
    )
    lay.add(
        timeseries(
            "Server answer time",
            [(f"{SEL('exchange_server_sweep_duration_seconds')}", "{{server}}")],
            "Time each server took for the exporter's cmdlets.",
            unit="s",
        ),
        8,
        7,
    )
    return dashboard(
        "Exchange health",
        "exchange-health",
        ["exchange"],
        variables("exchange_server_up", "server", "Server"),
        lay,
        [build_changes()],
    )
