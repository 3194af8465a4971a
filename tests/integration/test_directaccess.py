"""DirectAccess health through the real pypsrp client and the lab's WSMan/PSRP endpoints (a server, two clients)."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from exporter.parsers.directaccess import Monitor
from lab import free_port
from lab.directaccess import CLIENTS, COMPONENTS, INTERNAL_NAME, SERVER, DirectAccessLab
from lab.prometheus import PrometheusServer
from tests.helpers import metric, samples, series, sped_up_rules
from tests.integration.conftest import running_exporter

DA1, LAPTOP1, LAPTOP2 = SERVER.lower(), CLIENTS[0].lower(), CLIENTS[1].lower()


@pytest.fixture
def directaccess(tmp_path: Path) -> Iterator[DirectAccessLab]:
    with DirectAccessLab(tmp_path / "directaccess", port=free_port()) as lab:
        yield lab


def everyone_up(text: str) -> bool:
    return (
        metric(text, "directaccess_server_up", server=DA1) == 1
        and metric(text, "directaccess_client_up", client=LAPTOP1) == 1
        and metric(text, "directaccess_client_up", client=LAPTOP2) == 1
    )


def test_every_cmdlet_through_pypsrp_reports_what_the_lab_holds(directaccess: DirectAccessLab, tmp_path: Path) -> None:
    with running_exporter(None, tmp_path, directaccess=directaccess, interval=2, timeout=1.5) as exporter:
        text = exporter.wait_for(everyone_up)
    flat = samples(text_string_to_metric_families(text))
    # Every component in its state, one series per state with 1 for the one it is in.
    for component, state in COMPONENTS.items():
        states = {
            dict(labels)["state"]: v
            for labels, v in series(flat, "directaccess_component_health", server=DA1, component=component).items()
        }
        assert states == {s: (1.0 if s == state else 0.0) for s in ("OK", "Warning", "Error", "Disabled", "Unknown")}
    deployment = directaccess.deployment
    assert metric(text, "directaccess_connections", server=DA1, kind="directaccess") == deployment.connections
    assert metric(text, "directaccess_connections", server=DA1, kind="vpn") == deployment.vpn
    not_after = x509.load_der_x509_certificate(deployment.certificate).not_valid_after_utc
    assert metric(text, "directaccess_iphttps_certificate_not_after_timestamp_seconds", server=DA1) == pytest.approx(
        not_after.timestamp()
    )
    assert metric(text, "directaccess_server_iphttps_interface_active", server=DA1) == 1
    assert metric(text, "directaccess_server_iphttps_last_error_info", server=DA1, code="0x0", reason="none") == 1
    for profile in ("Domain", "Private", "Public"):
        assert metric(text, "directaccess_server_firewall_profile_enabled", server=DA1, profile=profile) == 1
    for client in (LAPTOP1, LAPTOP2):
        labels = {"client": client, "server": DA1}
        assert metric(text, "directaccess_client_connection_status", status="ConnectedRemotely", **labels) == 1
        assert metric(text, "directaccess_client_connection_substatus_info", substatus="None", **labels) == 1
        assert metric(text, "directaccess_client_iphttps_interface_active", **labels) == 1
        assert metric(text, "directaccess_client_nrpt_rules", **labels) == 2
        assert metric(text, "directaccess_client_name_resolution_success", **labels) == 1
        assert len(series(flat, "directaccess_client_firewall_profile_enabled", **labels)) == 3
    # What the exporter asked: the firewall as enforced, and the configured internal name, DNS only.
    asked = [
        (name, dict(params)) for i in directaccess.endpoints[CLIENTS[0]].invocations for name, _, params in i.commands
    ]
    assert ("Get-NetFirewallProfile", {"PolicyStore": "ActiveStore"}) in asked
    assert ("Resolve-DnsName", {"Name": INTERNAL_NAME, "DnsOnly": True}) in asked


def test_a_client_offline_and_a_failing_cmdlet_leave_the_others_reporting(
    directaccess: DirectAccessLab, tmp_path: Path
) -> None:
    deployment = directaccess.deployment
    with running_exporter(None, tmp_path, directaccess=directaccess, interval=2, timeout=1.5) as exporter:
        exporter.wait_for(everyone_up)
        # A laptop leaves the network; the server's statistics cmdlet fails; a component goes into Error.
        directaccess.endpoints[CLIENTS[1]].stop()
        deployment.fail_cmdlet(SERVER, "Get-RemoteAccessConnectionStatisticsSummary", "The RPC server is unavailable.")
        cause = "The IP-HTTPS certificate <da.contoso.com> has expired & is not usable."
        deployment.set_component("IP-Https", "Error", [Monitor(2148401155, "Error", "IP-HTTPS", cause, "Renew it.")])
        text = exporter.wait_for(
            lambda t: (
                metric(t, "directaccess_client_error_reason", client=LAPTOP2, reason="offline") == 1
                and metric(t, "directaccess_server_error_reason", server=DA1, reason="cmdlet_error") == 1
            )
        )
        page = exporter.page("/")
    # The laptop is offline, not failing, and the server's other cmdlets and the other laptop still report.
    assert metric(text, "directaccess_client_up", client=LAPTOP2) == 0
    assert metric(text, "directaccess_client_up", client=LAPTOP1) == 1
    assert metric(text, "directaccess_client_name_resolution_success", client=LAPTOP1) == 1
    assert metric(text, "directaccess_client_name_resolution_success", client=LAPTOP2) is None
    assert (
        metric(text, "directaccess_cmdlet_success", host=DA1, cmdlet="Get-RemoteAccessConnectionStatisticsSummary") == 0
    )
    assert metric(text, "directaccess_cmdlet_success", host=DA1, cmdlet="Get-RemoteAccessHealth") == 1
    assert metric(text, "directaccess_connections", server=DA1, kind="directaccess") is None
    assert metric(text, "directaccess_component_health", server=DA1, component="IP-Https", state="Error") == 1
    assert metric(text, "ad_exchange_exporter_collector_success", collector="directaccess") == 1
    # The landing page names the offline laptop as such and carries the monitor's cause, as text.
    assert "offline (not reachable" in page
    assert html.escape(f"IP-Https Error: {cause}", quote=False) in page
    assert "<da.contoso.com>" not in page


def test_the_story_the_server_firewall_off_fires_the_mismatch_and_the_fix_clears_it(
    directaccess: DirectAccessLab, tmp_path: Path
) -> None:
    """The shipped rules on real Prometheus, their hold durations divided by 30."""
    with running_exporter(None, tmp_path / "exporter", directaccess=directaccess, interval=2, timeout=1.5) as exporter:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": sped_up_rules(tmp_path / "rules", 30),
            "scrape_configs": [{"job_name": "da", "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}]}],
        }
        with PrometheusServer(tmp_path / "prometheus", config) as prom:
            prom.wait_for(f'directaccess_client_name_resolution_success{{client="{LAPTOP2}"}} == 1')
            # The server's firewall goes off; the clients keep theirs on.
            off_at = dt.datetime.now(dt.UTC)
            directaccess.deployment.set_firewall(SERVER, False)
            for alert in ("DirectAccessFirewallStateMismatch", "DirectAccessNameResolutionFailing"):
                firing = prom.wait_for(f'ALERTS{{alertname="{alert}",alertstate="firing"}}', timeout=90)
                assert {a["metric"]["client"] for a in firing} == {LAPTOP1, LAPTOP2}
                assert {a["metric"]["severity"] for a in firing} == {"critical"}
            prom.wait_for('ALERTS{alertname="DirectAccessServerFirewallDisabled",alertstate="firing",profile="Domain"}')
            # IP-HTTPS stayed up all along: the story's misleading part.
            assert prom.wait_for(f'directaccess_client_iphttps_interface_active{{client="{LAPTOP1}"}} == 1')
            assert dt.datetime.now(dt.UTC) - off_at >= dt.timedelta(seconds=10)  # held for its (sped-up) duration
            # The admin turns it back on: everything clears.
            directaccess.deployment.set_firewall(SERVER, True)
            for alert in (
                "DirectAccessFirewallStateMismatch",
                "DirectAccessNameResolutionFailing",
                "DirectAccessServerFirewallDisabled",
            ):
                prom.wait_for(f'absent(ALERTS{{alertname="{alert}"}})', timeout=60)
            prom.wait_for(f'directaccess_client_name_resolution_success{{client="{LAPTOP1}"}} == 1')
