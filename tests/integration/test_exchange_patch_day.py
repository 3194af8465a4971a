"""The demo's failed update on SOLO-E19A, through the shipped rules on real Prometheus (holds divided by 120): each
health alert fires, the admin's fix clears what it fixes, and what it leaves keeps firing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import free_port
from lab.exchange import ExchangeLab
from lab.prometheus import PrometheusServer
from tests.helpers import sped_up_rules
from tests.integration.conftest import running_exporter

BROKEN_BY_THE_UPDATE = {
    "ExchangeHealthSetUnhealthy": {"health_set": "FrontendTransport"},
    "ExchangeRequiredServiceStopped": {"role": "Hub Transport"},
    "ExchangeDatabaseCopyUnhealthy": {"database": "DB02", "status": "Suspended"},
    "ExchangeDatabaseCopyQueueHigh": {"database": "DB02", "queue": "copy"},
    "ExchangeContentIndexFailed": {"database": "DB02"},
    "ExchangeTransportBackPressure": {"resource": "UsedVersionBuckets"},
    "ExchangeEmergencyMitigationDisabled": {"start_type": "Disabled"},
}
FIXED_BY_THE_ADMIN = ("ExchangeHealthSetUnhealthy", "ExchangeRequiredServiceStopped", "ExchangeTransportBackPressure")


@pytest.fixture
def exchange(tmp_path: Path) -> Iterator[ExchangeLab]:
    with ExchangeLab(tmp_path / "exchange", port=free_port()) as lab:
        yield lab


def test_the_failed_update_fires_each_health_alert_and_the_fix_clears_some(
    exchange: ExchangeLab, tmp_path: Path
) -> None:
    overrides = {"health": {"interval_seconds": 2}}
    with running_exporter(
        None, tmp_path / "exporter", exchange=exchange, exchange_overrides=overrides, interval=2, timeout=1.5
    ) as exporter:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": sped_up_rules(tmp_path / "rules", 120),
            "scrape_configs": [{"job_name": "ex", "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}]}],
        }
        with PrometheusServer(tmp_path / "prometheus", config) as prom:
            prom.wait_for('exchange_health_set_state{server="solo-e19a",health_set="FrontendTransport"} == 0')
            # Found before the update: the Auth certificate nobody renewed, the override nobody removed.
            for alert in ("ExchangeAuthCertificateExpiring", "ExchangeMonitoringOverrideExpired"):
                prom.wait_for(f'ALERTS{{alertname="{alert}",alertstate="firing"}}')
            exchange.org.fail_update("solo-e19a")
            for alert, labels in BROKEN_BY_THE_UPDATE.items():
                matchers = "".join(f',{k}="{v}"' for k, v in labels.items())
                prom.wait_for(f'ALERTS{{alertname="{alert}",alertstate="firing",server="solo-e19a"{matchers}}}')
            # Still in maintenance (ServerWideOffline Inactive): activation blocked is what maintenance mode does.
            assert not prom.query('ALERTS{alertname="ExchangeActivationBlockedAfterMaintenance"}')["data"]["result"]
            exchange.org.fix_update("solo-e19a")
            for alert in FIXED_BY_THE_ADMIN:
                prom.wait_for(f'absent(ALERTS{{alertname="{alert}",server="solo-e19a"}})')
            # Back in service with activation still blocked: now that is a leftover.
            prom.wait_for('ALERTS{alertname="ExchangeActivationBlockedAfterMaintenance",alertstate="firing"}')
            for alert in ("ExchangeDatabaseCopyUnhealthy", "ExchangeEmergencyMitigationDisabled"):
                assert prom.query(f'ALERTS{{alertname="{alert}",alertstate="firing"}}')["data"]["result"], alert
