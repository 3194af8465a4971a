"""The patch-day dashboard: what each build change broke, and whether it still is, on the recording rules."""

from __future__ import annotations

from typing import Any

from dashboards.exchange_health import build_changes
from dashboards.panels import Layout, Selector, dashboard, table, timeseries, variables

SEL = Selector('job=~"$job"', 'server=~"$server"')
ACTIVATION_BLOCKED = SEL("exchange_database_copy_auto_activation_policy", 'policy="Blocked"')
SMTP_421 = SEL("exchange_smtp_responses_total", 'code="421"')
# Per server, 0 included (alerts/*.rules.yml): each line stays flat at 0 until something breaks.
BROKEN = (
    (
        "exchange:components_inactive:count",
        "Components Inactive",
        "Get-ServerComponentState, ForwardSyncDaemon and ProvisioningRps left out.",
    ),
    ("exchange:health_sets_unhealthy:count", "Health sets Unhealthy", "Managed Availability (Get-ServerHealth)."),
    ("exchange:required_services_not_running:count", "Roles with a required service stopped", "Test-ServiceHealth."),
    ("exchange:database_copies_unhealthy:count", "Database copies not healthy", "Anything but Mounted and Healthy."),
    ("exchange:transport_back_pressure:max", "Back pressure (0 Low, 1 Medium, 2 High)", "The worst resource meter."),
)


def exchange_patch_days() -> dict[str, Any]:
    lay = Layout()
    lay.row("What broke, and is it still broken")
    for metric, title, description in BROKEN:
        lay.add(
            timeseries(
                title,
                [(SEL(metric), "{{server}}")],
                f"{description} The build-change annotations mark each update: compare the hours before with after.",
            ),
            8,
            7,
        )
    lay.add(
        timeseries(
            "Activation blocked",
            [
                (
                    f"max by (server) ({ACTIVATION_BLOCKED}) "
                    f"or max by (server) ({SEL('exchange_database_copy_activation_disabled_and_move_now')})",
                    "{{server}}",
                )
            ],
            "1 while maintenance mode's activation block is in place (it must be lifted when the server is back).",
        ),
        8,
        7,
    )

    lay.row("What users felt")
    lay.add(
        timeseries(
            "401s per 15 minutes",
            [(f"sum by (server) ({SEL('exchange:http_unauthorized:increase15m')})", "{{server}}")],
            "IIS 401s (Outlook, OWA, ActiveSync, EWS): an update that breaks authentication shows here first.",
        ),
        8,
        7,
    )
    lay.add(
        timeseries(
            "421 answers per 15 minutes",
            [
                (
                    f"sum by (server) (increase({SMTP_421}[15m]))",
                    "{{server}}",
                )
            ],
            "421 4.3.2 Service not active: the transport refusing sessions (ServerWideOffline or FrontendTransport "
            "Inactive).",
        ),
        8,
        7,
    )
    lay.add(
        timeseries(
            "Messages queued",
            [(f"sum by (server) ({SEL('exchange_queue_messages')})", "{{server}}")],
            "Get-Queue, all queues.",
        ),
        8,
        7,
    )
    lay.add(
        timeseries(
            "Anonymous share of hybrid mail",
            [('exchange:inbound_anonymous:ratio15m{job=~"$job"}', "{{flow}}")],
            "Mail through the inbound connector that Exchange Online did not attribute to the organisation: an "
            "update that replaced the connector's certificate shows here.",
            unit="percentunit",
        ),
        12,
        7,
    )
    lay.add(
        table(
            "Builds now",
            f"{SEL('exchange_build_info')}",
            "What each server runs; the exporter's /patch-days page lists each change with what broke.",
            {
                "server": "Server",
                "product": "Product",
                "cu": "CU",
                "update": "Update",
                "version": "Build",
                "Value": "Now",
            },
        ),
        12,
        7,
    )
    return dashboard(
        "Exchange patch days",
        "exchange-patch-days",
        ["exchange", "patch-day"],
        variables("exchange_server_up", "server", "Server"),
        lay,
        [build_changes()],
    )
