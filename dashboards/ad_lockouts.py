"""The Active Directory lockouts dashboard."""

from __future__ import annotations

from typing import Any

from dashboards.panels import (
    Layout,
    Selector,
    dashboard,
    exporter_url_variable,
    investigate_link,
    stat,
    table,
    timeseries,
    variables,
)

SEL = Selector('job=~"$job"', 'domain=~"$domain"')
NOT_OTHER = 'user!="<other>"'


def ad_lockouts() -> dict[str, Any]:
    lay = Layout()
    lay.row("Now")
    lay.add(
        stat(
            "Locked accounts",
            f"sum({SEL('ad_domain_accounts_locked')})",
            "Accounts locked now on at least one DC (lockoutTime + lockoutDuration > now).",
            thresholds=[(None, "green"), (1, "orange"), (10, "red")],
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Lockouts, last hour",
            f"sum(increase({SEL('ad_account_lockouts_total')}[1h]))",
            "Lockouts first seen by the exporter in the last hour.",
            thresholds=[(None, "green"), (5, "orange"), (20, "red")],
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "DCs answering",
            f"sum({SEL('ad_dc_up')}) / count({SEL('ad_dc_up')})",
            "Share of DCs that answered the last LDAP sweep.",
            unit="percentunit",
            thresholds=[(None, "red"), (0.99, "green")],
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Lockout threshold",
            f"max({SEL('ad_lockout_policy_threshold')})",
            "Bad passwords before lockout (default domain policy; 0 = never).",
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Lockout duration",
            f"max({SEL('ad_lockout_policy_duration_seconds')})",
            "How long a lockout lasts (+Inf: until an administrator unlocks).",
            unit="s",
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Observation window",
            f"max({SEL('ad_lockout_policy_observation_window_seconds')})",
            "After this, badPwdCount starts again from 0.",
            unit="s",
        ),
        4,
        4,
    )

    lay.row("Lockouts")
    lay.add(
        investigate_link(
            table(
                "Locked accounts and where each lockout originated",
                f"{SEL('ad_account_lockout_timestamp_seconds')} * 1000",
                "Each locked account (capped by max_locked_accounts) with the DC the lockout originated on "
                "(LockoutStatus.exe's Orig Lock). Click an account for the exporter's investigation: what is "
                "locking it out, with the evidence from every DC and Exchange server.",
                {"user": "User", "origin_dc": "Origin DC", "domain": "Domain", "Value": "Locked at"},
                unit="dateTimeAsIso",
            ),
            "User",
        ),
        12,
        9,
    )
    lay.add(
        timeseries(
            "Lockouts by origin DC",
            [(f"sum by (origin_dc) (increase({SEL('ad_account_lockouts_total')}[$__rate_interval]))", "{{origin_dc}}")],
            "Where lockouts are written: a DC taking the bulk points at the site the bad passwords come from.",
            stack=True,
        ),
        12,
        9,
    )
    lay.add(
        timeseries(
            "Locked accounts per DC",
            [(f"{SEL('ad_accounts_locked')}", "{{dc}}")],
            "Accounts locked now as each DC sees them; differences are replication delay.",
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Accounts with a bad password per DC",
            [(f"{SEL('ad_accounts_with_bad_password')}", "{{dc}}")],
            "badPwdCount >= 1 within the observation window. badPwdCount is per DC and not replicated: "
            "the DC where it grows is where the bad passwords arrive.",
        ),
        12,
        8,
    )

    lay.row("Accounts")
    lay.add(
        investigate_link(
            table(
                "Top bad-password counts per DC",
                f"topk(25, {SEL('ad_account_bad_passwords', NOT_OTHER)})",
                "badPwdCount per DC for watched accounts and each DC's top accounts (cap top_accounts).",
                {"user": "User", "dc": "DC", "domain": "Domain", "Value": "badPwdCount"},
            ),
            "User",
        ),
        12,
        9,
    )
    lay.add(
        timeseries(
            "Accounts one bad password from a lockout",
            [(f"{SEL('ad_accounts_near_lockout')}", "{{dc}}")],
            "badPwdCount = threshold - 1 inside the observation window (the policy that applies to each account, "
            "PSO included): the next failure locks them. The exporter's /lockouts page lists them.",
        ),
        12,
        8,
    )
    lay.add(
        table(
            "Watched service accounts",
            f"{SEL('ad_watched_account_locked')}",
            "1 = locked now. Everything running as a locked service account is failing.",
            {"user": "Account", "domain": "Domain", "Value": "Locked"},
        ),
        12,
        9,
    )

    lay.row("Domain controllers")
    lay.add(
        table(
            "Domain controllers",
            f"{SEL('ad_dc_info')} * on (job, domain, dc) group_left {SEL('ad_dc_is_pdc_emulator')}",
            "Every DC of the domain with its site; Value 1 marks the PDC emulator, which every failed "
            "password is forwarded to and whose Security log holds every 4740.",
            {"dc": "DC", "site": "Site", "domain": "Domain", "Value": "PDC emulator"},
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "DC answer time",
            [(f"{SEL('ad_dc_sweep_duration_seconds')}", "{{dc}}")],
            "Time each DC took for the exporter's sweep.",
            unit="s",
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "DC up",
            [(f"{SEL('ad_dc_up')}", "{{dc}}")],
            "1 = the DC answered the last sweep. ad_dc_error_reason says why not.",
        ),
        12,
        7,
    )
    lay.add(
        table(
            "Why DCs are down",
            f"{SEL('ad_dc_error_reason')} == 1",
            "The reason of each DC that did not answer the last sweep.",
            {"dc": "DC", "reason": "Reason", "domain": "Domain", "Value": "Down"},
        ),
        12,
        7,
    )
    lay.add(
        timeseries(
            "DC clock against the PDC emulator",
            [
                (
                    f"{SEL('ad_dc_clock_offset_seconds')} - on (job, instance, domain) group_left () "
                    f"({SEL('ad_dc_clock_offset_seconds')} and on (job, instance, domain, dc) "
                    f"({SEL('ad_dc_is_pdc_emulator')} == 1))",
                    "{{dc}}",
                ),
                ('ad_exchange_exporter_host_clock_offset_seconds{job=~"$job"}', "exporter host (domain minus host)"),
            ],
            "Each DC's clock minus the PDC emulator's (rootDSE currentTime, read in the same sweep), and the "
            "exporter host's offset from domain time. Kerberos fails beyond 300 s (MaxClockSkew); the lockout "
            "figures run on domain time whatever the host's clock says.",
            unit="s",
        ),
        12,
        7,
    )

    lay.row("Exporter")
    lay.add(
        timeseries(
            "Collector refresh time",
            [
                (
                    'ad_exchange_exporter_collector_duration_seconds{job=~"$job",collector="active_directory"}',
                    "{{target}}",
                )
            ],
            "Time each refresh took.",
            unit="s",
        ),
        12,
        7,
    )
    lay.add(
        timeseries(
            "Series left out by caps",
            [('ad_exchange_exporter_capped_series{job=~"$job",collector="active_directory"}', "{{family}}")],
            "Raise top_accounts or max_locked_accounts if this stays above 0.",
        ),
        12,
        7,
    )
    return dashboard(
        "Active Directory lockouts",
        "ad-lockouts",
        ["active-directory"],
        [*variables("ad_dc_up", "domain", "Domain"), exporter_url_variable()],
        lay,
    )
