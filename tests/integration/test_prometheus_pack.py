"""Every PromQL expression of the pack runs against a real Prometheus scraping the exporter on the lab."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import free_port
from lab.directaccess import DirectAccessLab
from lab.exchange import ExchangeLab
from lab.exchange_logs import LogWriter
from lab.exporter_config import HYBRID_PROBED, RELAY_PROBED, mail_sections
from lab.kerberos import LabKerberos
from lab.prometheus import PrometheusServer
from lab.samba import SambaLab
from lab.smtp import SmtpLab
from lab.winevent import EventLab
from tests.integration.conftest import running_exporter

ROOT = Path(__file__).resolve().parents[2]
# Grafana's variables, as a person choosing "All" would have them.
GRAFANA_VARIABLES = {
    "$job": ".+",
    "$domain": ".+",
    "$server": ".+",
    "$dc": ".+",
    "$flow": ".+",
    "$__rate_interval": "1m",
}


def dashboard_expressions() -> list[tuple[str, str]]:
    """Every panel query and annotation query, with Grafana's variables filled in."""
    out = []
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        queries = [
            (panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])
        ]
        queries += [(f"annotation {a['name']}", a["expr"]) for a in dashboard["annotations"]["list"]]
        for title, expr in queries:
            for var, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(var, value)
            out.append((f"{path.name}: {title}", expr))
    return out


def rules() -> list[dict[str, Any]]:
    out = []
    for path in sorted((ROOT / "alerts").glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.extend(group["rules"])
    return out


@pytest.fixture
def exchange(tmp_path: Path, kerberos: LabKerberos) -> Iterator[ExchangeLab]:
    with ExchangeLab(tmp_path / "exchange", port=free_port(), kerberos=kerberos) as exchange_lab:
        yield exchange_lab


@pytest.fixture
def events(tmp_path: Path, kerberos: LabKerberos) -> Iterator[EventLab]:
    with EventLab(tmp_path / "events", port=free_port(), kerberos=kerberos) as events_lab:
        # A lockout from a phone before the first scrape: its series exists before increase() is asked about it.
        events_lab.logs["dc1.lab.example"].append_clone(4740, TargetUserName="early_phone", TargetDomainName="")
        yield events_lab


@pytest.fixture
def logs(tmp_path: Path) -> LogWriter:
    writer = LogWriter(tmp_path / "exchange-logs", seed=4)
    writer.write(requests=300, sessions=20, messages=40)
    # Every series exists before the first scrape, so that increase() over later writes has a base.
    writer.transport_inactive = True
    writer.write(requests=10, sessions=2, messages=2)
    writer.transport_inactive = False
    return writer


@pytest.fixture
def directaccess(tmp_path: Path) -> Iterator[DirectAccessLab]:
    with DirectAccessLab(tmp_path / "directaccess", port=free_port()) as directaccess_lab:
        yield directaccess_lab


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpLab]:
    with SmtpLab(tmp_path / "smtp") as smtp_lab:
        yield smtp_lab


@pytest.fixture
def prometheus(
    lab: SambaLab,
    exchange: ExchangeLab,
    events: EventLab,
    logs: LogWriter,
    smtp: SmtpLab,
    directaccess: DirectAccessLab,
    tmp_path: Path,
) -> Iterator[tuple[PrometheusServer, Any]]:
    with running_exporter(
        lab,
        tmp_path,
        interval=2,
        timeout=1.5,
        exchange=exchange,
        exchange_overrides={"health": {"interval_seconds": 2}},
        events=events,
        logs=logs,
        directaccess=directaccess,
        sections=mail_sections(smtp, interval=2, timeout=1.5, late=30, probe_timeout=3, scheduled=False),
    ) as exporter:
        exporter_address = f"127.0.0.1:{exporter.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in sorted((ROOT / "alerts").glob("*.rules.yml"))],
            "scrape_configs": [
                {"job_name": "ad", "static_configs": [{"targets": [exporter_address]}]},
                # The blackbox pattern: the target becomes a parameter, the exporter is what is scraped.
                *(
                    {
                        "job_name": job,
                        "metrics_path": "/probe",
                        "params": {"module": [module]},
                        "static_configs": [{"targets": [smtp.target(n) for n in targets]}],
                        "relabel_configs": [
                            {"source_labels": ["__address__"], "target_label": "__param_target"},
                            {"source_labels": ["__param_target"], "target_label": "instance"},
                            {"target_label": "__address__", "replacement": exporter_address},
                        ],
                    }
                    for job, module, targets in (
                        ("smtp", "hybrid", HYBRID_PROBED),
                        ("smtp-relay", "relay", RELAY_PROBED),
                    )
                ),
            ],
        }
        with PrometheusServer(tmp_path / "prometheus", config) as prom:
            yield prom, exporter


def test_every_dashboard_and_rule_expression_parses_and_returns_data(
    lab: SambaLab,
    exchange: ExchangeLab,
    events: EventLab,
    logs: LogWriter,
    smtp: SmtpLab,
    prometheus: tuple[PrometheusServer, Any],
) -> None:
    prom, exporter = prometheus
    prom.wait_for('ad_dc_up{dc="dc2.lab.example"} == 1')
    prom.wait_for('ad_security_events_source_up{source="winrm"} == 1')
    prom.wait_for('exchange_server_up{server="solo-e19a"} == 1')
    prom.wait_for("exchange_remote_mailboxes_misrouted > 0")
    prom.wait_for("directaccess_client_name_resolution_success == 1")
    # A component held Inactive by Functional and a cmdlet that fails, as after a broken update.
    exchange.org.set_component_state("solo-e19a", "HubTransport", "Inactive", "Functional")
    exchange.org.fail_cmdlet("solo-e19a", "Get-ExchangeCertificate", "The certificate store could not be opened.")
    # The demo's failed update on SOLO-E19A: the health-in-depth panels have something wrong to show.
    exchange.org.fail_update("solo-e19a")
    time.sleep(3)  # a few samples before the lockout, so increase() sees it
    user = lab.create_user("judy")
    duration, window = lab.duration, lab.window
    lab.set_policy(duration=600, window=600)  # the lockout must outlive the evaluation below
    lab.lock_out(user, lab.dc1)  # DC2 is stopped below; DC1 must hold the lock without waiting for replication
    for _ in range(lab.threshold - 1):  # the watched account one bad password from a lockout
        lab.fail_ldap("svc_backup", lab.dc1)
    prom.wait_for(f'ad_account_locked{{user="{user}"}}')
    prom.wait_for('ALERTS{alertname="ActiveDirectoryWatchedAccountNearLockout",user="svc_backup",alertstate="firing"}')
    assert float(prom.query('ad_accounts_near_lockout{dc="dc1.lab.example"}')["data"]["result"][0]["value"][1]) >= 1
    # One bad password from a lockout on the DC it failed on only (badPwdCount is per DC).
    near = json.loads(exporter.page("/api/v1/lockouts"))["near"]
    assert [n["dc"] for n in near if n["user"] == "svc_backup"] == ["dc1.lab.example"]
    prom.wait_for("ad:account_lockouts:increase15m > 0")
    # New events on the PDC after the first scrapes, so that increase() over them has something to show.
    for i in range(3):
        events.logs["dc1.lab.example"].append_clone(4740, TargetUserName=f"phone_user{i}", TargetDomainName="")
        events.logs["dc1.lab.example"].append_clone(4771, TargetUserName=f"phone_user{i}")
    prom.wait_for('increase(ad_security_lockouts_total{caller_kind="non_domain_source"}[5m]) > 0')
    prom.wait_for("ad:security_failures:increase15m > 0")
    # Exchange's logs go on: traffic, a stretch where the transport refuses sessions (421 4.3.2), more traffic.
    logs.write(requests=300, sessions=20, messages=40)
    logs.transport_inactive = True
    logs.write(requests=100, sessions=10, messages=10)
    logs.transport_inactive = False
    logs.write(requests=300, sessions=20, messages=40)
    prom.wait_for('increase(exchange_smtp_responses_total{code="421"}[5m]) > 0')
    prom.wait_for("exchange_canary_received_total > 0")
    prom.wait_for("probe_tls_certificate_matches_expected == 0")
    prom.wait_for("exchange:inbound_anonymous:ratio15m")
    prom.wait_for('increase(exchange_message_tracking_failures_total{enhanced_code="5.4.6"}[5m]) > 0')
    # The open relay, in the configuration and on the wire; the refusing relay is not one.
    prom.wait_for('exchange_routing_finding_info{kind="open_relay",object="SOLO-E19A\\\\Relay Scanners"} == 1')
    prom.wait_for("probe_smtp_open_relay == 1")
    relays = prom.query("probe_smtp_open_relay")["data"]["result"]
    assert {r["metric"]["instance"]: r["value"][1] for r in relays} == {
        smtp.target("open_relay"): "1",
        smtp.target("closed_relay"): "0",
    }
    # A DC down, so that the "why DCs are down" panel and the down-reason selectors have something to show.
    lab.stop(lab.dc2)
    try:
        prom.wait_for('ad_dc_error_reason{dc="dc2.lab.example"} == 1')
        prom.wait_for('exchange_server_error_reason{server="solo-e19a",reason="cmdlet_error"} == 1')
        prom.wait_for('exchange_component_requester_state{component="HubTransport",requester="Functional"} == 0')
        prom.wait_for('exchange_health_monitor_unhealthy_info{health_set="FrontendTransport"} == 1')
        prom.wait_for('exchange_service_not_running_info{service="MSExchangeTransport"} == 1')
        prom.wait_for('exchange_database_copy_status{status="Suspended"} == 1')
        # Every expression is read at one moment when DC1's sweep was in. A sweep that overran its 1.5 s timeout on
        # a loaded machine while they were read would otherwise empty every per-DC panel at once.
        at = float(prom.wait_for('ad_dc_up{dc="dc1.lab.example"} == 1')[0]["value"][0])
        problems = []
        for where, expr in dashboard_expressions():
            answer = prom.query(expr, at)
            if answer.get("status") != "success":
                problems.append(f"{where}: does not parse: {answer.get('error')}")
            elif not answer["data"]["result"]:
                problems.append(f"{where}: no data: {expr}")
        for rule in rules():
            name = rule.get("record") or rule.get("alert")
            answer = prom.query(rule["expr"], at)
            if answer.get("status") != "success":
                problems.append(f"rule {name}: does not parse: {answer.get('error')}")
                continue
            if "record" in rule and not answer["data"]["result"]:
                problems.append(f"recording rule {name}: no data")
            # An alert's condition is rightly empty while all is well: each series it reads must have data.
            for metric in sorted(
                set(re.findall(r"\b((?:ad|exchange|probe|directaccess)[_:][A-Za-z0-9_:]+)\b", rule["expr"]))
            ):
                if not prom.query(metric, at)["data"]["result"]:
                    problems.append(f"rule {name}: {metric} has no data")
        if problems:  # what was down, for whoever reads the failure
            down = prom.query("max_over_time(ad_dc_error_reason[2m]) == 1")["data"]["result"]
            problems.append(
                "DCs down in the last 2 minutes: "
                + ", ".join(f"{r['metric']['dc']} ({r['metric']['reason']})" for r in down)
            )
        assert not problems, "\n".join(problems)
    finally:
        lab.start(lab.dc2)
        lab.unlock(user)
        lab.set_policy(duration=duration, window=window)
