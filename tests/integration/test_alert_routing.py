"""A lockout storm in the lab, through the shipped rules in a real Prometheus, to a real Alertmanager.

Alertmanager runs the example config (deploy/alertmanager/alertmanager.yml) with only its receivers' URLs pointed
at a local webhook. The rules are the shipped ones with their hold durations (``for:``) divided by 30, so that the
test takes a minute rather than half an hour; their expressions, labels and annotations are untouched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from lab.prometheus import AlertmanagerServer, PrometheusServer, WebhookReceiver
from lab.samba import DOMAIN, SambaLab
from tests.helpers import seconds, sped_up_rules
from tests.integration.conftest import running_exporter

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
SPEEDUP = 30
PAGED = {"ActiveDirectoryLockoutSpike", "ActiveDirectoryDomainControllerDown"}
PER_DC = "ActiveDirectoryLockoutsFromDomainController"


def fast_rules(directory: Path) -> list[str]:
    # The per-DC lockout alert is held four times as long (85 s, its notification 30 s later): the DC's outage must
    # be firing when that notification is due, however long stopping a Samba DC and noticing it take on a loaded
    # machine (held twice as long, a CI run once saw DC2's go out first).
    return sped_up_rules(directory, SPEEDUP, {PER_DC: SPEEDUP // 4})


def example_config_to(webhook: WebhookReceiver, path: Path) -> Path:
    config = yaml.safe_load(EXAMPLE.read_text())
    for receiver in config["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = f"{webhook.url}/{receiver['name']}"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def wait_until(what: str, check: Callable[[], Any], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"not within {timeout}s: {what}")


def test_lockout_storm_pages_and_a_down_dcs_lockout_alert_is_inhibited(lab: SambaLab, tmp_path: Path) -> None:
    dc1, dc2 = (dc.host for dc in lab.dcs)
    users = {dc.host: [lab.create_user(f"storm{dc.address.rsplit('.', 1)[1]}x{i}") for i in range(5)] for dc in lab.dcs}
    with (
        running_exporter(lab, tmp_path / "exporter", interval=2, timeout=1.5) as exporter,
        WebhookReceiver() as webhook,
        AlertmanagerServer(tmp_path / "alertmanager", example_config_to(webhook, tmp_path / "am.yml")) as am,
    ):
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": fast_rules(tmp_path / "rules"),
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am.port}"]}]}]},
            "scrape_configs": [{"job_name": "ad", "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}]}],
        }
        with PrometheusServer(tmp_path / "prometheus", config) as prom:
            prom.wait_for(f'ad_dc_up{{dc="{dc2}"}} == 1')
            prom.wait_for(f'ad_account_lockouts_total{{origin_dc="{dc2}"}} == 0')
            try:
                # The storm: five accounts locked out through each DC, by real failed LDAP binds.
                for dc in lab.dcs:
                    for user in users[dc.host]:
                        lab.lock_out(user, dc)
                prom.wait_for(f'ad:account_lockouts_by_dc:increase15m{{dc="{dc2}"}} >= 5')
                # Then DC2 goes down.
                lab.stop(lab.dc2)
                stopped = time.strftime("%H:%M:%S", time.gmtime())

                wait_until("the storm and the DC outage page", lambda: webhook.alert_names("/page") >= PAGED)
                # The DC still up has its lockout alert delivered as a ticket ...
                wait_until(
                    f"{PER_DC} for {dc1} reaches the ticket receiver", lambda: PER_DC in webhook.alert_names("/ticket")
                )
                # ... while the one of the DC that is down is held back by the inhibition rule.
                held = wait_until(
                    f"{PER_DC} for {dc2} is inhibited",
                    lambda: [
                        a
                        for a in am.alerts()
                        if a["labels"]["alertname"] == PER_DC
                        and a["labels"]["dc"] == dc2
                        and a["status"]["state"] == "suppressed"
                        and a["status"]["inhibitedBy"]
                    ],
                )
                inhibitor = {a["fingerprint"]: a["labels"] for a in am.alerts()}[held[0]["status"]["inhibitedBy"][0]]
                assert inhibitor["alertname"] == "ActiveDirectoryDomainControllerDown"
                assert inhibitor["dc"] == dc2
                # Longer than the ticket route's group_wait after it arrived: it was never sent anywhere.
                time.sleep(seconds(yaml.safe_load(EXAMPLE.read_text())["route"]["group_wait"]) + 5)
                delivered = [
                    (path, alert["labels"]) for path, message in webhook.received for alert in message["alerts"]
                ]
                per_dc = [(path, labels["dc"]) for path, labels in delivered if labels["alertname"] == PER_DC]
                timeline = {
                    "DC2 stopped": stopped,
                    **{
                        f"{labels['alertname']} {labels.get('dc', '')} since": labels.get("startsAt", "")
                        for labels in (
                            {**a["labels"], "startsAt": a.get("startsAt", "")}
                            for _, m in webhook.received
                            for a in m["alerts"]
                        )
                    },
                }
                assert per_dc and all(dc == dc1 for _, dc in per_dc), (per_dc, timeline)
                assert {path for path, _ in per_dc} == {"/ticket"}
                # Pages go to the pager only, with the domain-wide storm labelled by domain.
                for path, labels in delivered:
                    if labels["alertname"] in PAGED:
                        assert path == "/page", (path, labels)
                spike = [labels for _, labels in delivered if labels["alertname"] == "ActiveDirectoryLockoutSpike"]
                assert spike[0]["domain"] == DOMAIN and spike[0]["severity"] == "critical"
            finally:
                if not lab.is_running(lab.dc2):
                    lab.start(lab.dc2)
                for user in users[dc1] + users[dc2]:
                    lab.unlock(user)
