"""The exporter host's wall clock stepped 3 hours forward, then 3 hours back, under a running exporter (libfaketime
on its process only; the monotonic clock untouched, as when a clock is set by hand, a VM is restored from a snapshot
or NTP steps it): the lockout arithmetic runs on the domain's time (the PDC emulator's rootDSE currentTime, carried
on the monotonic clock), so the same accounts stay locked and near lockout with the same times, refreshes go on at
their interval, and the offset is reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.samba import SambaLab
from tests.helpers import metric
from tests.integration.conftest import running_exporter

FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
STEPS = (("+3h", -3 * 3600), ("-3h", 3 * 3600), ("+0", 0))  # what the host's clock is set to, and the offset seen
LOCKED, NEAR = "dave", "carol"


def near(value: float | None, target: float, tolerance: float) -> bool:
    return value is not None and abs(value - target) < tolerance


@pytest.mark.skipif(not FAKETIME.exists(), reason="libfaketime (Debian faketime) is installed by run.sh")
def test_wall_clock_steps_move_no_lockout_and_no_window(lab: SambaLab, tmp_path: Path) -> None:
    dc1 = lab.dc1.host
    for user in (LOCKED, NEAR):
        lab.unlock(user)
    lab.lock_out(LOCKED, lab.dc1)
    for _ in range(lab.threshold - 1):
        lab.fail_ldap(NEAR, lab.dc1)
    offset_file = tmp_path / "faketime"
    offset_file.write_text("+0\n")
    env = {
        "LD_PRELOAD": str(FAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_NO_CACHE": "1",  # the file is read again at each call: the step lands at once
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    with running_exporter(lab, tmp_path / "exporter", interval=2, timeout=1.5, env=env) as exporter:

        def figures(text: str) -> dict[str, float | None]:
            return {
                "locked": metric(text, "ad_account_locked", user=LOCKED),
                "locked_at": metric(text, "ad_account_lockout_timestamp_seconds", user=LOCKED),
                "near_bad_passwords": metric(text, "ad_account_bad_passwords", dc=dc1, user=NEAR),
            }

        def api() -> tuple[set[str], set[str]]:
            answer = json.loads(exporter.page("/api/v1/lockouts"))
            return {a["user"].lower() for a in answer["locked"]}, {n["user"].lower() for n in answer["near"]}

        before = exporter.wait_for(
            lambda t: (
                metric(t, "ad_account_locked", user=LOCKED) == 1
                and metric(t, "ad_account_bad_passwords", dc=dc1, user=NEAR) == lab.threshold - 1
                and near(metric(t, "ad_dc_clock_offset_seconds", dc=dc1), 0, 3)
            )
        )
        expected = figures(before)
        locked_users, near_users = api()
        assert LOCKED in locked_users and NEAR in near_users
        for setting, offset in STEPS:
            offset_file.write_text(setting + "\n")
            # A sweep after the step reads the DC's clock that far from the host's: refreshes go on.
            text = exporter.wait_for(
                lambda t, offset=offset: (
                    near(metric(t, "ad_dc_clock_offset_seconds", dc=dc1), offset, 5)
                    and near(metric(t, "ad_exchange_exporter_host_clock_offset_seconds"), offset, 5)
                ),
                timeout=30,
            )
            assert figures(text) == expected, setting
            assert metric(text, "ad_dc_up", dc=dc1) == 1 and metric(text, "ad_dc_up", dc=lab.dc2.host) == 1
            locked_now, near_now = api()  # (other tests' lockouts in the shared lab may expire meanwhile)
            assert LOCKED in locked_now and NEAR in near_now and NEAR not in locked_now, setting
            # Another refresh, for the scheduler: it sleeps on the monotonic clock, whichever way the wall went.
            refreshes = metric(text, "ad_exchange_exporter_collector_refreshes_total", collector="active_directory")
            exporter.wait_for(
                lambda t, seen=refreshes: (
                    (metric(t, "ad_exchange_exporter_collector_refreshes_total", collector="active_directory") or 0)
                    > (seen or 0)
                ),
                timeout=10,
            )
        assert "Traceback" not in exporter.logs()
