"""Hybrid mail flow end to end: on-premises sends through the lab's inbound connector, the exporter reads what
arrives, and flipping the on-premises certificate's Organisation turns Internal into Anonymous - which the shipped
alert, evaluated by promtool over the counters the exporter really exported, catches."""

from __future__ import annotations

import asyncio
import quopri
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from lab.imap import ImapLab
from lab.smtp import SmtpLab
from tests.helpers import metric, require_binary, samples, series
from tests.integration.conftest import RunningExporter, running_exporter

ROOT = Path(__file__).resolve().parents[2]
FLOW = "onprem-to-exo"


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpLab]:
    with SmtpLab(tmp_path / "smtp") as lab:
        yield lab


def inbound(text: str) -> dict[str, float]:
    """{auth_as: count} of the flow."""
    flat = samples(text_string_to_metric_families(text))
    out: dict[str, float] = {}
    for labels, value in series(flat, "exchange_inbound_messages_total", flow=FLOW).items():
        auth = dict(labels)["auth_as"]
        out[auth] = out.get(auth, 0) + value
    return out


def send(smtp: SmtpLab, count: int, start: int) -> None:
    async def run() -> None:
        for i in range(start, start + count):
            await smtp.send_from_onprem(f"message {i}", f"<m{i}@contoso.com>")

    asyncio.run(run())


def wait_counted(exporter: RunningExporter, total: int) -> str:
    return exporter.wait_for(lambda t: sum(inbound(t).values()) >= total, timeout=20, interval=0.2)


def assert_promtool_passes(tmp_path: Path, name: str, test: dict[str, Any]) -> None:
    """promtool evaluates the shipped hybrid rules: ``test`` is one entry of a rule test file's ``tests``."""
    promtool = require_binary("promtool")
    case = {"rule_files": [str(ROOT / "alerts" / "hybrid.rules.yml")], "evaluation_interval": "1m", "tests": [test]}
    test_file = tmp_path / f"{name}.test.yml"
    test_file.write_text(yaml.safe_dump(case, sort_keys=False))
    result = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_certificate_organisation_change_makes_mail_anonymous_and_the_alert_fires(
    smtp: SmtpLab, tmp_path: Path
) -> None:
    flow = {"name": FLOW, "drop_directories": [str(smtp.drop / "*.eml")], "interval_seconds": 1}
    history: list[dict[str, float]] = []
    sent = 0
    with running_exporter(None, tmp_path / "exporter", sections={"hybrid_mail": [flow]}) as exporter:
        # Each round stands for one minute of traffic: 4 messages, then a scrape.
        for minute in range(40):
            if minute == 10:  # the renewal: same common name, another Organisation
                smtp.renew_onprem_certificate("Contoso Holdings")
            send(smtp, 4, sent)
            sent += 4
            history.append(inbound(wait_counted(exporter, sent)))
        text = exporter.metrics()
    assert history[9] == {"Internal": 40}
    assert history[-1] == {"Internal": 40, "Anonymous": 120}
    assert (
        metric(text, "exchange_inbound_messages_total", flow=FLOW, from_entity="Internet", auth_as="Anonymous") == 120
    )
    assert metric(text, "exchange_inbound_message_hops_count", flow=FLOW) == 160

    # promtool evaluates the shipped rule over exactly these counters, one scrape per minute.
    def values(auth: str) -> str:
        return " ".join(str(int(h.get(auth, 0))) for h in history)

    labels = 'job="exchange",flow="onprem-to-exo",auth_source="exchange_online"'
    assert_promtool_passes(
        tmp_path,
        "hybrid-from-lab",
        {
            "interval": "1m",
            "input_series": [
                {
                    "series": (
                        f'exchange_inbound_messages_total{{{labels},from_entity="HybridOnPrem",auth_as="Internal"}}'
                    ),
                    "values": values("Internal"),
                },
                {
                    "series": (
                        f'exchange_inbound_messages_total{{{labels},from_entity="Internet",auth_as="Anonymous"}}'
                    ),
                    "values": values("Anonymous"),
                },
            ],
            "alert_rule_test": [
                {"eval_time": "9m", "alertname": "ExchangeHybridMailAnonymous", "exp_alerts": []},
                {
                    "eval_time": "39m",
                    "alertname": "ExchangeHybridMailAnonymous",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "critical", "job": "exchange", "flow": FLOW},
                            "exp_annotations": {
                                "summary": f"100% of on-premises mail arrives Anonymous ({FLOW})",
                                "description": (
                                    f"100% of the mail in flow {FLOW} arrived in Exchange Online as AuthAs "
                                    "Anonymous over the last 15 minutes. The inbound connector no longer "
                                    "recognises the on-premises certificate (a renewal changed its subject or "
                                    "Organisation): such mail is throttled (451 4.7.500) and, with centralized "
                                    "transport, loops until 554 5.4.6."
                                ),
                                "runbook_url": "alerts/runbooks/ExchangeHybridMailAnonymous.md",
                            },
                        }
                    ],
                },
            ],
        },
    )


def test_the_canary_arrives_attributed_and_a_lost_one_is_counted(smtp: SmtpLab, tmp_path: Path) -> None:
    canary = {
        "name": "hybrid",
        "smtp": smtp.target("onprem"),
        "starttls": True,
        "sender": "canary@contoso.com",
        "recipient": "canary@contoso.mail.onmicrosoft.com",
        "drop_directories": [str(smtp.drop / "*.eml")],
        "interval_seconds": 1,
        "timeout_seconds": 0.9,
        "late_seconds": 3,
    }
    with running_exporter(None, tmp_path / "exporter", sections={"canaries": [canary]}) as exporter:
        text = exporter.wait_for(lambda t: (metric(t, "exchange_canary_received_total", canary="hybrid") or 0) >= 2)
        assert metric(text, "exchange_canary_auth_as_info", canary="hybrid", auth_as="Internal") == 1
        # The canary's route: the submitting exporter, on-premises, the cloud.
        assert metric(text, "exchange_canary_hops", canary="hybrid") == 2
        assert 0 < (metric(text, "exchange_canary_latency_seconds", canary="hybrid") or 0) < 2
        smtp.renew_onprem_certificate("Contoso Holdings")
        exporter.wait_for(
            lambda t: metric(t, "exchange_canary_auth_as_info", canary="hybrid", auth_as="Anonymous") == 1
        )
        # Mail stops reaching the destination: the canaries in flight become lost after late_seconds.
        smtp.inbound.drop = tmp_path / "elsewhere"
        smtp.inbound.drop.mkdir()
        text = exporter.wait_for(
            lambda t: (metric(t, "exchange_canary_failures_total", canary="hybrid", stage="deliver") or 0) >= 1,
            timeout=15,
        )
        assert metric(text, "exchange_canary_failures_total", canary="hybrid", stage="submit") == 0


def test_the_canary_found_over_imap_in_a_real_dovecot(smtp: SmtpLab, tmp_path: Path) -> None:
    with ImapLab(tmp_path / "imap") as mailbox:
        smtp.inbound.mailbox = mailbox
        imap = mailbox.config()
        canary = {
            "name": "imap",
            "smtp": smtp.target("onprem"),
            "sender": "canary@contoso.com",
            "recipient": "canary@contoso.mail.onmicrosoft.com",
            "imap": imap,
            "interval_seconds": 1,
            "timeout_seconds": 0.9,
            "late_seconds": 10,
        }
        flow = {"name": "mailbox", "imap": imap, "interval_seconds": 1}
        with running_exporter(
            None, tmp_path / "exporter", sections={"canaries": [canary], "hybrid_mail": [flow]}
        ) as exporter:
            text = exporter.wait_for(lambda t: (metric(t, "exchange_canary_received_total", canary="imap") or 0) >= 2)
            assert metric(text, "exchange_canary_auth_as_info", canary="imap", auth_as="Internal") == 1
            text = exporter.wait_for(
                lambda t: (metric(t, "exchange_inbound_messages_total", flow="mailbox", auth_as="Internal") or 0) >= 2
            )
            assert metric(text, "exchange_canary_failures_total", canary="imap", stage="mailbox") == 0
            logs, page = exporter.logs(), exporter.page("/")
        assert mailbox.password not in logs + text + page


def test_normal_mail_is_no_loop_and_a_real_loop_fires_the_alert(smtp: SmtpLab, tmp_path: Path) -> None:
    """Real normal mail (a list re-injection, amavis handing mail back, on-premises Exchange behind both, SendGrid)
    and a hybrid hairpin count no loop and leave ExchangeHybridMailLoop quiet; two lab MTAs handing a message to
    each other until the hop limit (554 5.4.6) count one, and the shipped alert, evaluated by promtool over what
    the exporter exported, fires."""
    fixtures = ROOT / "tests" / "fixtures" / "mail"
    normal = 0
    for source in sorted(fixtures.iterdir()):
        raw = source.read_bytes()
        (smtp.drop / f"normal-{source.stem}.eml").write_bytes(
            quopri.decodestring(raw) if source.suffix == ".qp" else raw
        )
        normal += 1
    hairpin = [  # on-premises -> Exchange Online -> on-premises, newest first
        "Received: from EX1.contoso.com (10.0.0.10) by EX2.contoso.com (10.0.0.11) with Microsoft SMTP Server"
        " id 15.2.1544.4; Thu, 27 Nov 2026 07:41:16 +0000",
        "Received: from AM4PEPF00027A6B.mail.protection.outlook.com (52.101.68.10) by EX1.contoso.com (10.0.0.10)"
        " with Microsoft SMTP Server id 15.2.1544.4; Thu, 27 Nov 2026 07:41:15 +0000",
        "Received: from AM6PR04MB1234.eurprd04.prod.outlook.com (2603:10a6:20b:1::1) by"
        " AM4PEPF00027A6B.mail.protection.outlook.com with Microsoft SMTP Server id 15.20.8000.1;"
        " Thu, 27 Nov 2026 07:41:14 +0000",
        "Received: from EX1.contoso.com (203.0.113.10) by AM6PR04MB1234.eurprd04.prod.outlook.com with Microsoft"
        " SMTP Server id 15.20.8000.1 via Frontend Transport; Thu, 27 Nov 2026 07:41:13 +0000",
    ]
    (smtp.drop / "normal-hairpin.eml").write_text("\r\n".join([*hairpin, "Subject: hairpin", "", ""]))
    normal += 1

    def counted(text: str) -> float:
        return sum(series(samples(text_string_to_metric_families(text)), "exchange_inbound_messages_total").values())

    flow = {"name": "loops", "drop_directories": [str(smtp.drop / "*.eml")], "interval_seconds": 1, "hop_limit": 30}
    with running_exporter(None, tmp_path / "exporter", sections={"hybrid_mail": [flow]}) as exporter:
        before = exporter.wait_for(lambda t: counted(t) >= normal)
        reply = asyncio.run(smtp.send_into_loop("<loop-1@contoso.com>"))
        after = exporter.wait_for(lambda t: (metric(t, "exchange_inbound_message_loops_total", flow="loops") or 0) >= 1)
    assert metric(before, "exchange_inbound_message_loops_total", flow="loops") == 0
    assert reply.startswith("554 5.4.6")
    assert metric(after, "exchange_inbound_message_loops_total", flow="loops") == 1
    assert counted(after) == normal + 1
    assert metric(after, "exchange_inbound_message_hops_bucket", flow="loops", le="+Inf") == normal + 1
    assert metric(after, "exchange_inbound_message_hops_bucket", flow="loops", le="30") == normal + 1

    # promtool evaluates the shipped alert over exactly these counters: 20 minutes of normal mail, then the loop.
    loops = [metric(text, "exchange_inbound_message_loops_total", flow="loops") for text in (before, after)]
    assert_promtool_passes(
        tmp_path,
        "hybrid-loop-from-lab",
        {
            "interval": "1m",
            "input_series": [
                {
                    "series": 'exchange_inbound_message_loops_total{job="exchange",flow="loops"}',
                    "values": f"{loops[0]:.0f}x20 {loops[1]:.0f}x20",
                }
            ],
            "alert_rule_test": [
                {"eval_time": "19m", "alertname": "ExchangeHybridMailLoop", "exp_alerts": []},
                {
                    "eval_time": "30m",
                    "alertname": "ExchangeHybridMailLoop",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "warning", "job": "exchange", "flow": "loops"},
                            "exp_annotations": {
                                "summary": "Looping messages in loops",
                                "description": (
                                    "1 messages in flow loops looped in the last hour (a run of hosts recurring in "
                                    "the Received chain, more hops than the hop limit, or an NDR for a hop count "
                                    "exceeded): mail is going round between on-premises and Exchange Online."
                                ),
                                "runbook_url": "alerts/runbooks/ExchangeHybridMailLoop.md",
                            },
                        }
                    ],
                },
            ],
        },
    )
