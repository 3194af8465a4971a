"""The DirectAccess dashboard: each server's components, clients connected, IP-HTTPS, and the firewall on both sides."""

from __future__ import annotations

from typing import Any

from dashboards.panels import Layout, Selector, dashboard, grid, stat, table, timeseries, variables

SEL = Selector('job=~"$job"', 'server=~"$server"')
# Get-RemoteAccessHealth's states as one number per component, for a coloured grid.
HEALTH_CODES = {"Warning": 1, "Error": 2, "Disabled": 3, "Unknown": 4}
HEALTH = {
    "0": ("OK", "green"),
    "1": ("Warning", "orange"),
    "2": ("Error", "red"),
    "3": ("Disabled", "transparent"),
    "4": ("Unknown", "purple"),
}
ON_OFF = {"0": ("Off", "red"), "1": ("On", "green")}
COMPONENTS_IN_ERROR = SEL("directaccess_component_health", 'state="Error"', 'component!="Server"')
DIRECTACCESS_CONNECTIONS = SEL("directaccess_connections", 'kind="directaccess"')
CLIENTS_OFFLINE = SEL("directaccess_client_error_reason", 'reason="offline"')
NOT_DISABLED = SEL("directaccess_component_health", 'state!="Disabled"')


def _health_code() -> str:
    parts = " or ".join(
        SEL("directaccess_component_health", f'state="{s}"') + f" * {n}" for s, n in HEALTH_CODES.items()
    )
    return f"sum by (job, server, component) ({parts})"


def _both_sides(server_metric: str, client_metric: str) -> str:
    """A server's series and its clients' under one ``host`` label (servers marked as such), for one table."""
    return (
        f'label_replace({SEL(server_metric)}, "host", "$1 (server)", "server", "(.+)") or '
        f'label_replace({SEL(client_metric)}, "host", "$1", "client", "(.+)")'
    )


def _firewall_mismatches() -> str:
    return (
        f"count(min by (job, server, client) ({SEL('directaccess_client_firewall_profile_enabled')}) "
        f"!= on (job, server) group_left () "
        f"min by (job, server) ({SEL('directaccess_server_firewall_profile_enabled')})) or vector(0)"
    )


def directaccess() -> dict[str, Any]:
    lay = Layout()
    lay.row("Now")
    lay.add(
        stat(
            "Servers answering",
            f"sum({SEL('directaccess_server_up')}) / count({SEL('directaccess_server_up')})",
            "Share of Remote Access servers whose cmdlets all answered the last refresh.",
            unit="percentunit",
            thresholds=[(None, "red"), (0.99, "green")],
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Firewall mismatches",
            _firewall_mismatches(),
            "Canary clients whose Windows Firewall state differs from their server's. It must be the same on "
            "both sides (preferably on): with the server's off, IP-HTTPS comes up and no name resolves.",
            thresholds=[(None, "green"), (1, "red")],
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Components in Error",
            f"count({COMPONENTS_IN_ERROR} == 1) or vector(0)",
            "Get-RemoteAccessHealth components in Error (the Server roll-up not counted).",
            thresholds=[(None, "green"), (1, "red")],
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "DirectAccess clients connected",
            f"sum({DIRECTACCESS_CONNECTIONS})",
            "Connections now, all selected servers.",
            thresholds=[(None, "blue")],
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Canaries resolving internal names",
            f"sum({SEL('directaccess_client_name_resolution_success')}) / "
            f"count({SEL('directaccess_client_name_resolution_success')})",
            "Share of the canary clients (that answered) on which the internal test name resolves through the NRPT.",
            unit="percentunit",
            thresholds=[(None, "red"), (0.99, "green")],
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Canary clients offline",
            f"count({CLIENTS_OFFLINE}) or vector(0)",
            "Canary clients the exporter could not reach: away from the network, not a server failure.",
            thresholds=[(None, "green"), (1, "blue")],
        ),
        4,
        4,
    )

    lay.row("Components")
    lay.add(
        grid(
            "Component health per server",
            _health_code(),
            "Get-RemoteAccessHealth for every server: one row per component. The landing page lists the failing "
            "monitors' cause for each server.",
            "component",
            "server",
            HEALTH,
        ),
        12,
        14,
    )
    lay.add(
        table(
            "Since",
            f"{SEL('directaccess_component_health_changed_timestamp_seconds')} * 1000 "
            f"and on (job, server, component) ({NOT_DISABLED} == 1)",
            "When each component entered its current state (Disabled components left out).",
            {"server": "Server", "component": "Component", "Value": "Since"},
            unit="dateTimeAsIso",
        ),
        12,
        14,
    )

    lay.row("Clients connected")
    lay.add(
        timeseries(
            "Connections by kind",
            [(f"sum by (server, kind) ({SEL('directaccess_connections')})", "{{server}} {{kind}}")],
            "DirectAccess and VPN connections on each server (Get-RemoteAccessConnectionStatisticsSummary). "
            "DirectAccess dropping to 0 while VPN goes on points at IPsec: the firewall, certificates.",
        ),
        16,
        8,
    )
    lay.add(
        timeseries(
            "Users connected",
            [(f"{SEL('directaccess_unique_users')}", "{{server}}")],
            "Distinct users connected to each server.",
        ),
        8,
        8,
    )

    lay.row("Firewall, server and clients")
    lay.add(
        grid(
            "Windows Firewall by profile (ActiveStore)",
            _both_sides("directaccess_server_firewall_profile_enabled", "directaccess_client_firewall_profile_enabled"),
            "Each server (marked) and canary client, profile by profile, as enforced. The state must be the same "
            "on a server and its clients.",
            "host",
            "profile",
            ON_OFF,
        ),
        12,
        8,
    )
    lay.add(
        table(
            "Canary clients",
            f"{SEL('directaccess_client_connection_status')} == 1",
            "Get-DAConnectionStatus on each canary client that answered: ConnectedRemotely is the normal state "
            "outside, ConnectedLocally inside.",
            {"client": "Client", "server": "Server", "status": "Status"},
            exclude=("Time", "__name__", "job", "instance", "Value"),
        ),
        12,
        8,
    )

    lay.row("IP-HTTPS and name resolution")
    lay.add(
        table(
            "IP-HTTPS last error",
            _both_sides("directaccess_server_iphttps_last_error_info", "directaccess_client_iphttps_last_error_info"),
            "Get-NetIPHttpsState's LastErrorCode on each server and canary client: 0x0 none; the runbook "
            "DirectAccessIPHttpsError names the others.",
            {"host": "Host", "code": "Code", "reason": "Reason"},
            exclude=("Time", "__name__", "job", "instance", "Value", "server", "client"),
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Internal name resolves (canaries)",
            [(f"{SEL('directaccess_client_name_resolution_success')}", "{{client}}")],
            "1 while the configured internal name resolves on the client through the NRPT. Failing while "
            "IP-HTTPS is active is the signature of a tunnel that does not come up.",
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "IP-HTTPS active",
            [
                (f"{SEL('directaccess_server_iphttps_interface_active')}", "{{server}} (server)"),
                (f"{SEL('directaccess_client_iphttps_interface_active')}", "{{client}}"),
            ],
            "1 while the interface is active. A client's is down while it is inside or uses Teredo.",
        ),
        8,
        8,
    )
    return dashboard(
        "DirectAccess",
        "ad-exchange-directaccess",
        ["directaccess", "windows"],
        variables("directaccess_server_up", "server", "Server"),
        lay,
    )
