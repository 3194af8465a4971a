"""The lockout investigator's two stories on the lab, causal rather than scripted.

A phone on ActiveSync with an old password: it syncs through the lab's ActiveSync stand-in on the Exchange
server's address, which checks each password against DC1 for real (an LDAP bind from the Exchange server's
address) and writes the IIS line Exchange would. A service with a stale password binds from another address.
After an administrator resets both passwords, the investigator must name, within one refresh, the phone's
DeviceId and address through the Exchange server, and the service's address, each as a stale credential, with
the origin DC right and each DC's badPwdCount as Samba holds it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from lab import free_port
from lab.activesync import PHONE_ADDRESS, SERVICE_ADDRESS, activesync, phone_sync, stale_service
from lab.exchange_logs import LogWriter
from lab.kerberos import LabKerberos
from lab.samba import USER_PASSWORD, SambaLab
from lab.winevent import EventLab
from tests.helpers import metric, samples, series, value
from tests.integration.conftest import running_exporter

NEW_PASSWORD = "Lab-User-Pass2!"
DEVICE = "ApplF17XYZ0001"


def refreshes(text: str) -> dict[str, tuple[float, float]]:
    """Per collector: refreshes so far, and when the last one started (its end less its duration)."""
    flat = samples(text_string_to_metric_families(text))
    out = {}
    for labels, count in series(flat, "ad_exchange_exporter_collector_refreshes_total").items():
        name = dict(labels)["collector"]
        ended = value(flat, "ad_exchange_exporter_collector_last_success_timestamp_seconds", **dict(labels)) or 0.0
        took = value(flat, "ad_exchange_exporter_collector_duration_seconds", **dict(labels)) or 0.0
        out[name] = (count, ended - took)
    return out


def test_a_phone_and_a_service_with_old_passwords(lab: SambaLab, kerberos: LabKerberos, tmp_path: Path) -> None:
    logs = LogWriter(tmp_path / "exchange-logs", seed=7)
    phone_user, service_user = lab.create_user("phoebe"), lab.create_user("svc_report")
    interval = 2
    with (
        # The DCs' Security logs over WinRM: the stand-in writes the PDC's 4740 that Windows would.
        EventLab(tmp_path / "events", port=free_port(), kerberos=kerberos) as events,
        activesync(lab, logs, lab.dc1, events) as stand_in,
        running_exporter(
            lab, tmp_path / "exporter", interval=interval, timeout=1.5, logs=logs, events=events
        ) as exporter,
    ):
        assert phone_sync(stand_in, phone_user, USER_PASSWORD, DEVICE) == 200  # the phone worked until the change
        exporter.wait_for(lambda t: metric(t, "ad_dc_up", dc=lab.dc2.host) == 1)
        # Changed three times since the phone learnt it (so the DC counts it: see SambaLab.set_password).
        lab.set_password(phone_user, NEW_PASSWORD, changes=3)
        lab.set_password(service_user, NEW_PASSWORD)
        # The phone keeps its old password: 1326 until the DC locks the account, then 1909.
        statuses = [phone_sync(stand_in, phone_user, USER_PASSWORD, DEVICE) for _ in range(lab.threshold + 1)]
        stale_service(lab, service_user, lab.dc2, lab.threshold)
        done = time.time()
        assert statuses == [401] * (lab.threshold + 1)
        # Within a refresh or two of the lockouts: both seen locked, the DCs' and the IIS logs read up to them. Each
        # collector is counted from its first refresh that started after the last failure (the one in flight then
        # may have read too early), up to the one that shows its part.
        parts: dict[str, Callable[[str], bool]] = {
            "active_directory": lambda t: (
                metric(t, "ad_account_locked", user=phone_user) == 1
                and metric(t, "ad_account_locked", user=service_user) == 1
            ),
            "security_events": lambda t: (
                (metric(t, "ad_security_lockouts_total", dc=lab.dc1.host, caller_kind="non_domain_source") or 0) >= 1
                and all(
                    (metric(t, "ad_security_events_newest_timestamp_seconds", dc=dc.host) or 0) >= done - 2
                    for dc in lab.dcs
                )
            ),
            # The Exchange server's IIS log read up to the phone's last line (its one 1909).
            "exchange_logs": lambda t: (
                (metric(t, "exchange_http_unauthorized_total", protocol="activesync", win32_status="1909") or 0) >= 1
            ),
        }
        first_after: dict[str, float] = {}  # the count before each collector's first refresh started after `done`
        needed: dict[str, float] = {}
        deadline = time.monotonic() + 4 * interval + 10
        while len(needed) < len(parts):
            text = exporter.metrics()
            for name, (count, started) in refreshes(text).items():
                if name not in first_after and started >= done:
                    first_after[name] = count - 1
                if name not in needed and parts[name](text):
                    needed[name] = count - first_after.get(name, count - 1)
            assert time.monotonic() < deadline, f"not shown: {set(parts) - set(needed)}; log:\n{exporter.logs()}"
            time.sleep(0.2)
        answered = time.time() - done
        assert all(n <= 2 for n in needed.values()), needed
        print(f"the evidence and the lockouts were read {answered:.1f} s after the last failure")
        phone = json.loads(exporter.page(f"/api/v1/lockouts/{phone_user}"))
        service = json.loads(exporter.page(f"/api/v1/lockouts/{service_user}"))
    truth = {user: {dc.host: lab.account(user, dc) for dc in lab.dcs} for user in (phone_user, service_user)}

    top = phone["sources"][0]
    assert (top["kind"], top["value"], top["via"], top["client_ip"]) == (
        "device",
        DEVICE,
        logs.server.lower(),
        PHONE_ADDRESS,
    )
    assert top["device_type"] == "iPhone" and top["confidence"] == "high" and top["stale_credential"]
    assert any("1326" in line and "1909" in line for line in top["evidence"])
    assert phone["origin_dcs"][0] == lab.dc1.host
    # The PDC's 4740 has no caller computer (a phone is no domain computer), and the investigator says what that means.
    assert [(e["dc"], e["caller_computer"]) for e in phone["lockouts"]] == [(lab.dc1.host, "")]
    assert any("no caller computer" in line and "ActiveSync" in line for line in phone["missing"])
    assert any(f"came from Exchange server {logs.server.lower()}" in line for line in top["evidence"])
    assert all(s["value"] != logs.address for s in phone["sources"])  # the Exchange server is the way, not the source

    top = service["sources"][0]
    assert (top["kind"], top["value"], top["stale_credential"]) == ("ip", SERVICE_ADDRESS, True)
    assert service["origin_dcs"][0] == lab.dc2.host

    for body, user in ((phone, phone_user), (service, service_user)):
        rows = {row["dc"]: row for row in body["directory"][0]["dcs"]}
        for dc in lab.dcs:
            assert rows[dc.host]["bad_pwd_count"] == truth[user][dc.host]["badPwdCount"], (user, dc.host)
