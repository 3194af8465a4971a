"""The lockout investigator on the lab: real failed binds on both Samba DCs, then GET /api/v1/lockouts/{account}
from the running exporter. The per-DC table is what each DC holds; the verdict names the address the failures came
from, as Samba's own audit log recorded it."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from lab.samba import SambaLab
from tests.helpers import samples, series
from tests.integration.conftest import running_exporter


def failures_read(text: str, dc: str) -> float:
    flat = samples(text_string_to_metric_families(text))
    return sum(
        v
        for labels, v in series(flat, "ad_security_events_total", dc=dc).items()
        if dict(labels)["reason"] != "success"
    )


def test_the_per_dc_table_and_the_verdict(lab: SambaLab, tmp_path: Path) -> None:
    user = lab.create_user("lena")
    lab.fail_ldap(user, lab.dc1)
    lab.lock_out(user, lab.dc2)
    lab.replicate(lab.dc1, lab.dc2)  # the lockout reaches DC1; badPwdCount stays each DC's own
    with running_exporter(lab, tmp_path, interval=2, timeout=1.5) as exporter:
        # The audit logs are read (from the beginning): the failures of this user are among them.
        exporter.wait_for(lambda t: failures_read(t, lab.dc2.host) >= lab.threshold)
        body = json.loads(exporter.page(f"/api/v1/lockouts/{user.upper()}"))
    truth = {dc.host: lab.account(user, dc) for dc in lab.dcs}
    (directory,) = body["directory"]
    rows = {row["dc"]: row for row in directory["dcs"]}
    assert set(rows) == {lab.dc1.host, lab.dc2.host}
    for dc in lab.dcs:
        row = rows[dc.host]
        assert row["up"] and row["found"] and row["user"] == user
        assert row["bad_pwd_count"] == truth[dc.host]["badPwdCount"]
        assert row["locked"] is bool(truth[dc.host]["uac_computed"] & 0x10)
        assert row["lockout_threshold"] == lab.threshold and row["policy"] == "domain"
        assert row["pwd_last_set"]
    assert rows[lab.dc2.host]["locked"] and rows[lab.dc2.host]["orig_lock"] == lab.dc2.host
    assert rows[lab.dc1.host]["orig_lock"] in ("", lab.dc2.host)  # DC1 knows the lock once it has replicated
    assert body["password_last_set"] == max(r["pwd_last_set"] for r in rows.values())
    # The verdict: the address Samba logged for every failed bind, on the DCs it was logged on.
    addresses = {e["detail"]["ip"] for e in body["timeline"] if e["detail"].get("ip")}
    assert len(addresses) == 1
    top = body["sources"][0]
    assert (top["kind"], top["value"]) == ("ip", addresses.pop())
    assert set(top["hosts"]) == {lab.dc1.host, lab.dc2.host}
    assert top["failures"] >= lab.threshold + 1
    assert body["origin_dcs"][0] == lab.dc2.host  # where the lock was written
    # Samba logs no 4740: the verdict says so, and where to look, rather than guess a caller.
    assert any(f"written on {lab.dc2.host}" in m for m in body["missing"])
    # A new account's failures are not a stale credential; the DCs' own names are no workstations.
    assert not any(s["stale_credential"] for s in body["sources"])
    assert not any(s["kind"] == "workstation" and s["value"] in ("DC1", "DC2") for s in body["sources"])
