"""The Exchange logs dashboard: ActiveSync and web 401s by reason, the devices behind lockouts, SMTP replies,
relay denials, loops."""

from __future__ import annotations

from typing import Any

from dashboards.panels import Layout, Selector, dashboard, stat, table, timeseries, variables

SEL = Selector('job=~"$job"', 'server=~"$server"')
RECEIVE = SEL.where('direction="receive"')
NOT_OTHER = 'user!="<other>"'
NOT_SERVED = 'code="421"', 'enhanced_code="4.3.2"'
LOOP = 'enhanced_code="5.4.6"'
SERVER_ERROR = 'status=~"5.."'
NOT_OK = 'code!~"2..|3.."'
RELAY_DENIED = 'code="550"', 'enhanced_code=~"5.7.1|5.7.54"'


def exchange_logs() -> dict[str, Any]:
    lay = Layout()
    lay.row("Now")
    lay.add(
        stat(
            "401s, last hour",
            f"sum(increase({SEL('exchange_http_unauthorized_total')}[1h]))",
            "HTTP 401s in the front end's IIS logs.",
            thresholds=[(None, "green"), (500, "orange")],
        ),
        6,
        4,
    )
    lay.add(
        stat(
            "Devices locking their user out",
            f"sum({SEL('exchange_activesync_device_locking_out')})",
            "ActiveSync devices that failed with 1326 and then 1909 within the window.",
            thresholds=[(None, "green"), (1, "red")],
        ),
        6,
        4,
    )
    lay.add(
        stat(
            "421 4.3.2 answered, last hour",
            f"sum(increase({RECEIVE('exchange_smtp_responses_total', *NOT_SERVED)}[1h]))",
            "SMTP sessions this server refused because its transport was not active.",
            thresholds=[(None, "green"), (1, "red")],
        ),
        6,
        4,
    )
    lay.add(
        stat(
            "Loops, last hour",
            f"sum(increase({SEL('exchange_message_tracking_failures_total', LOOP)}[1h]))",
            "Messages that failed with 554 5.4.6 (hop count exceeded).",
            thresholds=[(None, "green"), (1, "red")],
        ),
        6,
        4,
    )

    lay.row("Web and ActiveSync")
    lay.add(
        timeseries(
            "401s by reason",
            [
                (
                    f"sum by (reason) (increase({SEL('exchange_http_unauthorized_total')}[$__rate_interval]))",
                    "{{reason}}",
                )
            ],
            "sc-win32-status of the 401s: logon_failure (1326), account_locked_out (1909), "
            "password_expired (1330), account_disabled (1331); none (0) is the first leg of NTLM.",
            stack=True,
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "401s by protocol",
            [
                (
                    f"sum by (protocol) (increase({SEL('exchange_http_unauthorized_total')}[$__rate_interval]))",
                    "{{protocol}}",
                )
            ],
            "Which service the failing clients use.",
            stack=True,
        ),
        12,
        8,
    )
    lay.add(
        table(
            "ActiveSync devices behind 401s",
            f"{SEL('exchange_activesync_device_failures')}",
            "Each device's 401s over the window, its last client address and win32 status. 1909 after "
            "1326: the device has the old password and is locking its user out.",
            {
                "user": "User",
                "device_id": "Device",
                "device_type": "Type",
                "client_ip": "Client",
                "win32_status": "Last win32",
                "server": "Server",
                "Value": "401s",
            },
        ),
        14,
        9,
    )
    lay.add(
        table(
            "Users with the most 401s",
            SEL("exchange_http_unauthorized_user_failures", NOT_OTHER),
            "401s per user over the window (capped by top_users).",
            {"user": "User", "server": "Server", "Value": "401s"},
        ),
        10,
        9,
    )
    lay.add(
        timeseries(
            "Requests by protocol",
            [
                (
                    f"sum by (protocol) (increase({SEL('exchange_http_requests_total')}[$__rate_interval]))",
                    "{{protocol}}",
                )
            ],
            "All requests in the IIS logs, by protocol.",
            stack=True,
        ),
        12,
        7,
    )
    lay.add(
        timeseries(
            "Server errors by protocol",
            [
                (
                    f"sum by (protocol) (increase({SEL('exchange_http_requests_total', SERVER_ERROR)}"
                    "[$__rate_interval]))",
                    "{{protocol}}",
                )
            ],
            "HTTP 5xx answered by the front end.",
            stack=True,
        ),
        12,
        7,
    )

    lay.row("SMTP")
    lay.add(
        timeseries(
            "SMTP replies by code",
            [
                (
                    f"sum by (direction, code, enhanced_code) "
                    f"(increase({SEL('exchange_smtp_responses_total', NOT_OK)}[$__rate_interval]))",
                    "{{direction}} {{code}} {{enhanced_code}}",
                )
            ],
            "4xx and 5xx replies: receive = what this server answered, send = what the next hop "
            "answered (451 4.7.500: Exchange Online throttling Anonymous mail).",
            stack=True,
        ),
        12,
        8,
    )
    lay.add(
        table(
            "Relay denials by connector, last hour",
            f"sum by (server, connector) (increase({RECEIVE('exchange_smtp_responses_total', *RELAY_DENIED)}[1h]))",
            "550 5.7.54 / 5.7.1 Unable to relay: a sender relaying through a connector without the right.",
            {"server": "Server", "connector": "Connector", "Value": "Denials"},
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "SMTP sessions by connector",
            [
                (
                    f"sum by (connector, direction) (increase({SEL('exchange_smtp_sessions_total')}"
                    "[$__rate_interval]))",
                    "{{connector}} ({{direction}})",
                )
            ],
            "Sessions opened per connector.",
            stack=True,
        ),
        12,
        7,
    )
    lay.add(
        timeseries(
            "TLS and AUTH outcomes",
            [
                (f"sum by (outcome) (increase({SEL('exchange_smtp_tls_total')}[$__rate_interval]))", "TLS {{outcome}}"),
                (
                    f"sum by (outcome) (increase({SEL('exchange_smtp_auth_total')}[$__rate_interval]))",
                    "AUTH {{outcome}}",
                ),
            ],
            "STARTTLS negotiations and SMTP AUTH results in the protocol logs.",
        ),
        12,
        7,
    )

    lay.row("Message tracking")
    lay.add(
        timeseries(
            "Events by type",
            [
                (
                    f"sum by (event_id) (increase({SEL('exchange_message_tracking_events_total')}[$__rate_interval]))",
                    "{{event_id}}",
                )
            ],
            "RECEIVE, SEND, DELIVER, FAIL, DSN, ...",
            stack=True,
        ),
        12,
        8,
    )
    lay.add(
        table(
            "Failures by status, last hour",
            f"sum by (server, event_id, code, enhanced_code) "
            f"(increase({SEL('exchange_message_tracking_failures_total')}[1h]))",
            "FAIL/DSN/DEFER by the recipient status code: 550 5.1.10 recipient not found (a namespace "
            "mistake), 554 5.4.6 loop.",
            {
                "server": "Server",
                "event_id": "Event",
                "code": "Code",
                "enhanced_code": "Enhanced",
                "Value": "Last hour",
            },
        ),
        12,
        8,
    )

    lay.row("Collection")
    lay.add(
        timeseries(
            "Lines read",
            [(f"sum by (log) (rate({SEL('exchange_log_lines_total')}[$__rate_interval]))", "{{log}}")],
            "Lines per second read from each kind of log.",
            unit="none",
        ),
        12,
        7,
    )
    lay.add(
        table(
            "Log sources",
            f"time() - {SEL('exchange_log_last_read_timestamp_seconds')}",
            "How long ago each kind of log was last read.",
            {"server": "Server", "log": "Log", "Value": "Last read"},
            unit="s",
        ),
        12,
        7,
    )
    return dashboard(
        "Exchange logs",
        "exchange-logs",
        ["exchange", "logs"],
        variables("exchange_log_lines_total", "server", "Server"),
        lay,
    )
