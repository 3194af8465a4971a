"""The Active Directory security events dashboard: failed logons by reason and protocol, lockouts by caller,
top sources, collection health."""

from __future__ import annotations

from typing import Any

from dashboards.panels import Layout, Selector, dashboard, stat, table, timeseries, variables

SEL = Selector('job=~"$job"', 'dc=~"$dc"')
JOB = Selector('job=~"$job"')
FAILED = SEL.where('event_id=~"4625|4771|4776"', 'reason!="success"')
NON_DOMAIN = 'caller_kind="non_domain_source"'
NOT_OTHER = 'source!="<other>"'


def ad_security_events() -> dict[str, Any]:
    lay = Layout()
    lay.row("Now")
    lay.add(
        stat(
            "Failed logons, last hour",
            f"sum(increase({FAILED('ad_security_events_total')}[1h]))",
            "4625, 4771 and 4776 failures on the selected DCs.",
            thresholds=[(None, "green"), (200, "orange"), (1000, "red")],
        ),
        6,
        4,
    )
    lay.add(
        stat(
            "Lockouts, last hour",
            f"sum(increase({SEL('ad_security_lockouts_total')}[1h]))",
            "4740 events (the PDC emulator logs every lockout of the domain).",
            thresholds=[(None, "green"), (1, "orange"), (10, "red")],
        ),
        6,
        4,
    )
    lay.add(
        stat(
            "From non-domain sources, last hour",
            f"sum(increase({SEL('ad_security_lockouts_total', NON_DOMAIN)}[1h]))",
            "Lockouts with a blank caller computer: phones on ActiveSync, proxies, Unix hosts.",
            thresholds=[(None, "green"), (1, "orange"), (5, "red")],
        ),
        6,
        4,
    )
    lay.add(
        stat(
            "Event sources read",
            f"sum({SEL('ad_security_events_source_up')}) / count({SEL('ad_security_events_source_up')})",
            "Share of DC event sources (remoting, files) read in the last refresh.",
            unit="percentunit",
            thresholds=[(None, "red"), (0.99, "green")],
        ),
        6,
        4,
    )

    lay.row("Failures")
    lay.add(
        timeseries(
            "Failed logons by reason",
            [(f"sum by (reason) (increase({FAILED('ad_security_events_total')}[$__rate_interval]))", "{{reason}}")],
            "wrong_password and preauth_failed are bad passwords; no_such_user names that do not "
            "exist; account_locked_out a source still trying after the lockout.",
            stack=True,
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Failed logons by protocol and event",
            [
                (
                    f"sum by (protocol, event_id) (increase({FAILED('ad_security_events_total')}[$__rate_interval]))",
                    "{{protocol}} ({{event_id}})",
                )
            ],
            "Kerberos pre-authentication (4771), NTLM validation (4776), logons (4625, with the package that failed).",
            stack=True,
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Lockouts by caller",
            [
                (
                    f"sum by (caller_kind) (increase({SEL('ad_security_lockouts_total')}[$__rate_interval]))",
                    "{{caller_kind}}",
                )
            ],
            "4740 by where the bad passwords came from: a domain computer named in the event, or a "
            "non-domain source (blank caller computer).",
            stack=True,
        ),
        12,
        8,
    )
    lay.add(
        table(
            "Failures by DC, reason and protocol, last hour",
            f"sum by (dc, event_id, reason, protocol) (increase({FAILED('ad_security_events_total')}[1h])) > 0",
            "Where each kind of failure is logged: badPwdCount grows on the DC that checks the password.",
            {"dc": "DC", "event_id": "Event", "reason": "Reason", "protocol": "Protocol", "Value": "Last hour"},
        ),
        12,
        8,
    )

    lay.row("Sources")
    lay.add(
        table(
            "Top sources",
            JOB("ad_security_event_source_failures", NOT_OTHER),
            "Failed logons and lockouts per source over the exporter's source window (capped by "
            "top_sources): caller computers of 4740, client IP addresses, workstation names.",
            {"kind": "Kind", "source": "Source", "Value": "Failures"},
        ),
        12,
        9,
    )
    lay.add(
        table(
            "Accounts tried per source",
            JOB("ad_security_event_source_accounts", NOT_OTHER),
            "Distinct accounts each source failed on: one source on many accounts is a password spray.",
            {"kind": "Kind", "source": "Source", "Value": "Accounts"},
        ),
        12,
        9,
    )

    lay.row("Collection")
    lay.add(
        table(
            "Event sources",
            f"time() - {SEL('ad_security_events_last_collection_timestamp_seconds')}",
            "Each DC's event source and how long ago it was last read.",
            {"dc": "DC", "source": "Source", "Value": "Last read"},
            unit="s",
        ),
        8,
        7,
    )
    lay.add(
        timeseries(
            "Collection lag",
            [(f"{SEL('ad_security_events_lag_seconds')}", "{{dc}}")],
            "How far behind the DC's log the collector is while it works off a backlog.",
            unit="s",
        ),
        8,
        7,
    )
    lay.add(
        timeseries(
            "Newest event age",
            [(f"time() - {SEL('ad_security_events_newest_timestamp_seconds')}", "{{dc}}")],
            "Time since the newest event read from each DC: a quiet DC, or a stalled source.",
            unit="s",
        ),
        8,
        7,
    )
    return dashboard(
        "Active Directory security events",
        "ad-security-events",
        ["active-directory", "security"],
        variables("ad_security_events_source_up", "dc", "DC"),
        lay,
    )
