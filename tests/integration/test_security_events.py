"""Security events for real: failed logons on the Samba DCs through their audit logs, and the PSRP path with
bookmarks across hard restarts."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from exporter.parsers import events as ev
from exporter.state import StateStore
from lab import free_port
from lab.kerberos import LabKerberos
from lab.samba import SambaLab
from lab.winevent import EventLab
from tests.helpers import metric, samples, series
from tests.integration.conftest import running_exporter

DC1 = "dc1.lab.example"


def event_counts(text: str, dc: str) -> Counter[tuple[str, str, str]]:
    flat = samples(text_string_to_metric_families(text))
    return Counter(
        {
            (dict(labels)["event_id"], dict(labels)["reason"], dict(labels)["protocol"]): int(v)
            for labels, v in series(flat, "ad_security_events_total", dc=dc).items()
        }
    )


def test_failed_logons_on_the_lab_dcs_are_counted_from_the_samba_audit_log(lab: SambaLab, tmp_path: Path) -> None:
    user = lab.create_user("eve_events")
    with running_exporter(lab, tmp_path, interval=2, timeout=1.5) as exporter:
        text = exporter.wait_for(
            lambda t: metric(t, "ad_security_events_source_up", dc=DC1, source="file:samba_auth_json") == 1
        )
        time.sleep(2.5)  # one more refresh, so that everything logged before now is in the baseline
        before = event_counts(exporter.metrics(), DC1)
        lab.fail_ldap(user, lab.dc1)
        lab.fail_kerberos(user, lab.dc1)
        lab.fail_smb(user, lab.dc1)  # the third bad password: the account is now locked out
        lab.fail_ldap(user, lab.dc1)
        lab.fail_ldap("nobody_of_that_name", lab.dc1)
        expected = Counter(
            {
                ("4625", "wrong_password", "ldap_simple"): 1,
                ("4625", "wrong_password", "kerberos"): 1,
                ("4625", "wrong_password", "ntlm"): 1,
                ("4625", "account_locked_out", "ldap_simple"): 1,
                ("4625", "no_such_user", "ldap_simple"): 1,
            }
        )
        text = exporter.wait_for(lambda t: event_counts(t, DC1) - before == expected, timeout=30)
        time.sleep(2.5)
        after = event_counts(exporter.metrics(), DC1)
        assert after - before == expected  # and nothing else
        # The source address and the spread over accounts of the loopback client.
        assert (metric(text, "ad_security_event_source_failures", kind="ip", source="127.0.0.1") or 0) >= 5
        assert (metric(text, "ad_security_event_source_accounts", kind="ip", source="127.0.0.1") or 0) >= 2
        assert (metric(text, "ad_security_events_newest_timestamp_seconds", dc=DC1) or 0) >= time.time() - 60
    lab.unlock(user)


def ground_truth(events_lab: EventLab) -> dict[str, Counter[tuple[str, str, str]]]:
    """What each lab DC's log holds, counted per (event_id, reason, protocol)."""
    truth = {}
    for dc, log in events_lab.logs.items():
        parsed = [ev.parse_event_xml(r.xml) for r in log.records]
        truth[dc] = Counter((str(e.event_id), e.reason, e.protocol) for e in parsed if e is not None)
    return truth


def test_bookmarks_survive_hard_restarts_nothing_twice_nothing_skipped(kerberos: LabKerberos, tmp_path: Path) -> None:
    rng = random.Random(7)
    state = tmp_path / "state.db"
    with EventLab(tmp_path / "events", port=free_port(), kerberos=kerberos) as events_lab:
        # Longer logs: new lockouts and Kerberos failures cloned from the samples.
        for i in range(40):
            events_lab.logs[DC1].append_clone(4771, TargetUserName=f"user{i % 7}", IpAddress=f"::ffff:10.9.0.{i % 3}")
            if i % 10 == 0:
                events_lab.logs[DC1].append_clone(4740, TargetUserName=f"user{i % 7}", TargetDomainName="")
        total = sum(len(log.records) for log in events_lab.logs.values())
        winrm = events_lab.winrm_config(timeout=1, batch_size=5, max_batches_per_refresh=1)
        options: dict[str, Any] = {
            "events": events_lab,
            "state": state,
            "interval": 1.5,
            "timeout": 1,
            "events_overrides": {"winrm": winrm},
        }
        seen_bookmarks: list[int] = []
        restarts = 0
        while True:
            with running_exporter(None, tmp_path / f"run{restarts}", **options) as exporter:
                text = exporter.wait_for(
                    lambda t: metric(t, "ad_security_events_source_up", dc=DC1, source="winrm") == 1, timeout=20
                )
                counted = sum(sum(event_counts(text, dc).values()) for dc in events_lab.logs)
                if counted >= total or restarts >= 12:
                    break
                # Kill it hard somewhere in the next batches (mid-request, mid-commit, between refreshes).
                time.sleep(rng.uniform(0.2, 3.5))
                exporter.process.send_signal(signal.SIGKILL)
                exporter.process.wait(10)
            bookmark = _bookmark(state, DC1)
            assert not seen_bookmarks or bookmark >= seen_bookmarks[-1]
            seen_bookmarks.append(bookmark)
            restarts += 1
        assert restarts >= 3, "the logs were read before the exporter could be restarted between batches"
        # Let the last run finish the backlog, then compare with what the logs hold.
        with running_exporter(None, tmp_path / "final", **options) as exporter:
            truth = ground_truth(events_lab)
            text = exporter.wait_for(lambda t: all(event_counts(t, dc) == truth[dc] for dc in truth), timeout=60)
            # New events while it runs are counted too.
            events_lab.logs[DC1].append_clone(4740, TargetUserName="late", TargetDomainName="")
            truth = ground_truth(events_lab)
            text = exporter.wait_for(lambda t: event_counts(t, DC1) == truth[DC1], timeout=20)
            assert metric(text, "ad_security_lockouts_total", dc=DC1, caller_kind="non_domain_source") == 5
            assert metric(text, "ad_security_lockouts_total", dc=DC1, caller_kind="domain_computer") == 1
            assert _bookmark(state, DC1) == events_lab.logs[DC1].records[-1].record_id
        assert seen_bookmarks[-1] > seen_bookmarks[0]


def _bookmark(state: Path, dc: str) -> int:
    store = StateStore(state)
    try:
        return int(store.get(f"security_events/lab.example/bookmark/{dc}", 0))
    finally:
        store.close()


def test_a_malformed_event_over_psrp_is_counted_skipped_and_passed(kerberos: LabKerberos, tmp_path: Path) -> None:
    with EventLab(tmp_path / "events", port=free_port(), kerberos=kerberos) as events_lab:
        pdc = events_lab.logs[DC1]
        with running_exporter(None, tmp_path, events=events_lab, interval=1.5, timeout=1) as exporter:
            truth = ground_truth(events_lab)
            exporter.wait_for(lambda t: event_counts(t, DC1) == truth[DC1])
            errors = metric(exporter.metrics(), "ad_exchange_exporter_parse_errors_total", collector="security_events")
            broken = pdc.append_raw(
                4740,
                f"<Event><System><EventRecordID>{pdc.records[-1].record_id + 1}"
                "</EventRecordID><EventID>4740</EventID></Syst",
            )
            after = pdc.append_clone(4740, TargetUserName="after_the_broken_one", TargetDomainName="")
            expected = truth[DC1] + Counter({("4740", "locked_out", "other"): 1})
            text = exporter.wait_for(lambda t: event_counts(t, DC1) == expected)
            assert (
                metric(text, "ad_exchange_exporter_parse_errors_total", collector="security_events")
                == (errors or 0) + 1
            )
            assert metric(text, "ad_security_events_source_up", dc=DC1, source="winrm") == 1
            assert after.record_id == broken.record_id + 1
            assert "skipped an event" in exporter.logs()
