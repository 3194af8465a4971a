"""The hybrid mail-flow dashboard: Internal vs Anonymous, the certificates the SMTP endpoints present, the canary."""

from __future__ import annotations

from typing import Any

from dashboards.panels import Layout, Selector, dashboard, stat, table, timeseries, variables

JOB = Selector('job=~"$job"')
FLOW = Selector('job=~"$job"', 'flow=~"$flow"')
OPEN_RELAYS = JOB("exchange_routing_findings", 'kind="open_relay"')


def hybrid_mail() -> dict[str, Any]:
    lay = Layout()
    lay.row("Now")
    lay.add(
        stat(
            "Anonymous share, 15 minutes",
            f"max({FLOW('exchange:inbound_anonymous:ratio15m')})",
            "Share of mail from on-premises that Exchange Online took as Anonymous: should be 0.",
            unit="percentunit",
            thresholds=[(None, "green"), (0.01, "orange"), (0.1, "red")],
        ),
        6,
        4,
    )
    lay.add(
        stat(
            "Canary latency",
            f"max({JOB('exchange_canary_latency_seconds')})",
            "End-to-end time of the last canary found.",
            unit="s",
            thresholds=[(None, "green"), (60, "orange"), (300, "red")],
        ),
        6,
        4,
    )
    lay.add(
        stat(
            "SMTP endpoints answering",
            f"sum({JOB('probe_success')}) / count({JOB('probe_success')})",
            "Share of probed SMTP endpoints whose conversation succeeded.",
            unit="percentunit",
            thresholds=[(None, "red"), (0.99, "green")],
        ),
        6,
        4,
    )
    lay.add(
        stat(
            "Certificates not as expected",
            f"count({JOB('probe_tls_certificate_matches_expected')} == 0) or vector(0)",
            "Endpoints presenting another certificate than the hybrid connectors expect.",
            thresholds=[(None, "green"), (1, "red")],
        ),
        6,
        4,
    )

    lay.row("Attribution")
    lay.add(
        timeseries(
            "Messages by AuthAs",
            [
                (
                    f"sum by (auth_as) (increase({FLOW('exchange_inbound_messages_total')}[$__rate_interval]))",
                    "{{auth_as}}",
                )
            ],
            "How Exchange Online attributed the mail read from the drop directories: Internal through "
            "the inbound connector; Anonymous when the connector did not recognise the certificate.",
            stack=True,
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Anonymous share per flow",
            [(f"{FLOW('exchange:inbound_anonymous:ratio15m')}", "{{flow}}")],
            "Over 15 minutes.",
            unit="percentunit",
        ),
        12,
        8,
    )
    lay.add(
        table(
            "Attribution by source, last hour",
            f"sum by (flow, from_entity, auth_source, auth_as) "
            f"(increase({FLOW('exchange_inbound_messages_total')}[1h]))",
            "FromEntityHeader (HybridOnPrem for the connector), AuthSource (the server that authenticated).",
            {
                "flow": "Flow",
                "from_entity": "From entity",
                "auth_source": "Auth source",
                "auth_as": "AuthAs",
                "Value": "Last hour",
            },
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Loops and hops",
            [
                (
                    f"sum by (flow) (increase({FLOW('exchange_inbound_message_loops_total')}[$__rate_interval]))",
                    "loops {{flow}}",
                ),
                (
                    f"sum by (flow) (rate({FLOW('exchange_inbound_message_hops_sum')}[$__rate_interval])) / "
                    f"sum by (flow) (rate({FLOW('exchange_inbound_message_hops_count')}[$__rate_interval]))",
                    "mean hops {{flow}}",
                ),
            ],
            "Messages whose Received chain repeats a run of hosts (a loop), and the mean number of hops.",
        ),
        12,
        8,
    )

    lay.row("SMTP endpoints")
    lay.add(
        table(
            "Certificates presented",
            f"{JOB('probe_tls_certificate_info')}",
            "What each probed endpoint presents after STARTTLS: the Organisation is part of what the inbound "
            "connector matches.",
            {
                "instance": "Endpoint",
                "common_name": "CN",
                "organization": "O",
                "issuer": "Issuer",
                "sans": "SANs",
                "sha256": "SHA-256",
                "subject": "Subject",
                "Value": "Presented",
            },
            exclude=("Time", "__name__", "job"),
        ),
        16,
        8,
    )
    lay.add(
        table(
            "Certificate expiry",
            f"{JOB('probe_ssl_earliest_cert_expiry')} - time()",
            "Time left before each presented certificate expires.",
            {"instance": "Endpoint", "Value": "Time left"},
            exclude=("Time", "__name__", "job"),
            unit="s",
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Greeting codes",
            [(f"{JOB('probe_smtp_greeting_code')}", "{{instance}}")],
            "220 = ready; 421 = the service is not active (an Exchange front end with its transport offline).",
        ),
        12,
        7,
    )
    lay.add(
        timeseries(
            "Probe duration",
            [(f"{JOB('probe_duration_seconds')}", "{{instance}}")],
            "Time of the whole SMTP conversation, STARTTLS included.",
            unit="s",
        ),
        12,
        7,
    )

    lay.row("Mail routing")
    lay.add(
        stat(
            "Open relays",
            f"sum({OPEN_RELAYS}) or vector(0)",
            "Receive connectors that let anonymous senders relay from outside the allowed ranges: should be 0.",
            thresholds=[(None, "green"), (1, "red")],
        ),
        6,
        8,
    )
    lay.add(
        table(
            "Routing findings",
            f"{JOB('exchange_routing_finding_info')} == 1",
            "Configuration mistakes that break mail silently (shared namespaces, centralized transport, connectors "
            "to Office 365): the runbook ExchangeMailRoutingMisconfigured explains each kind and its fix.",
            {
                "organization": "Organisation",
                "kind": "Finding",
                "object": "Domain or connector",
                "severity": "Severity",
                "Value": "Found",
            },
        ),
        18,
        8,
    )

    lay.row("Canary")
    lay.add(
        timeseries(
            "Canary latency",
            [(f"{JOB('exchange_canary_latency_seconds')}", "{{canary}}")],
            "End-to-end time of each canary found.",
            unit="s",
        ),
        12,
        7,
    )
    lay.add(
        timeseries(
            "Canary failures by stage",
            [
                (
                    f"sum by (canary, stage) (increase({JOB('exchange_canary_failures_total')}[$__rate_interval]))",
                    "{{canary}} {{stage}}",
                )
            ],
            "submit: the on-premises endpoint refused it; deliver: not found within late_seconds.",
        ),
        12,
        7,
    )
    return dashboard(
        "Hybrid mail flow",
        "hybrid-mail",
        ["exchange", "hybrid"],
        variables("exchange_inbound_messages_total", "flow", "Flow"),
        lay,
    )
