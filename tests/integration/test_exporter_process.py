"""The exporter as a real process scraped over HTTP: DC failures, a wrong password, lint of the exposition."""

from __future__ import annotations

import gzip
import json
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from prometheus_client.openmetrics import parser as openmetrics_parser

from lab.samba import DOMAIN, SERVICE_ACCOUNT, SambaLab
from tests.helpers import CHROMIUM_FLAGS, metric, require_binary
from tests.integration.conftest import running_exporter

WRONG_SECRET = "Wrong-Secret-Pass9!"


def test_stopped_and_hung_dc_are_down_within_the_timeout_others_intact(lab: SambaLab, tmp_path: Path) -> None:
    timeout, interval = 2.0, 3.0
    with running_exporter(lab, tmp_path, interval=interval, timeout=timeout) as exporter:
        exporter.wait_for(lambda t: metric(t, "ad_dc_up", dc=lab.dc2.host) == 1)
        for action, undo, reason in ((lab.stop, lab.start, "unreachable"), (lab.pause, lab.resume, "timeout")):
            started = time.monotonic()
            action(lab.dc2)
            try:
                text = exporter.wait_for(
                    lambda t: metric(t, "ad_dc_up", dc=lab.dc2.host) == 0, timeout=interval + timeout + 5
                )
                elapsed = time.monotonic() - started
                print(f"{action.__name__}: DC2 reported down after {elapsed:.1f}s")
                # One refresh interval to notice, plus at most the timeout (and scrape polling slack).
                assert elapsed <= interval * 1.1 + timeout + 1.5
                assert metric(text, "ad_dc_error_reason", dc=lab.dc2.host, reason=reason) == 1
                assert metric(text, "ad_dc_up", dc=lab.dc1.host) == 1
                assert metric(text, "ad_lockout_policy_threshold", domain=DOMAIN) == lab.threshold
                assert metric(text, "ad_accounts_locked", dc=lab.dc1.host) is not None
                assert metric(text, "ad_exchange_exporter_collector_success") == 1
                assert lab.dc2.host in exporter.page("/")
            finally:
                undo(lab.dc2)
            exporter.wait_for(lambda t: metric(t, "ad_dc_up", dc=lab.dc2.host) == 1, timeout=30)


def _failed_binds(lab: SambaLab, since: dict[Path, int]) -> int:
    """Failed logons of the service account written to the DCs' audit logs after ``since``."""
    count = 0
    for log, offset in since.items():
        for line in log.read_text().splitlines()[offset:]:
            event = json.loads(line).get("Authentication", {})
            if SERVICE_ACCOUNT in (event.get("clientAccount") or "") and event.get("status") != "NT_STATUS_OK":
                count += 1
    return count


def test_wrong_service_password_never_locks_the_account_out(lab: SambaLab, tmp_path: Path) -> None:
    """Threshold 3, two DCs, a refresh every 1.5 s for 15 s: the wrong password is offered exactly once."""
    assert lab.threshold == 3
    secret = tmp_path / "wrong.password"
    secret.write_text(WRONG_SECRET)
    logs = {dc.auth_log: len(dc.auth_log.read_text().splitlines()) for dc in lab.dcs}
    both = [{"host": dc.host, "address": dc.address} for dc in lab.dcs]
    with running_exporter(
        lab, tmp_path, interval=1.5, timeout=1.0, password_file=secret, domain_controllers=both
    ) as exporter:
        text = exporter.wait_for(
            lambda t: metric(t, "ad_dc_up", dc=lab.dc1.host) == 0 and metric(t, "ad_dc_up", dc=lab.dc2.host) == 0
        )
        time.sleep(15)  # about ten refresh cycles
        text = exporter.metrics()
        reasons = {
            dc.host: [
                r
                for r in ("wrong_password", "bind_suspended")
                if metric(text, "ad_dc_error_reason", dc=dc.host, reason=r) == 1
            ]
            for dc in lab.dcs
        }
        # One DC refused it (wrong_password); every later attempt anywhere was held back (bind_suspended).
        seen = sorted(r for rs in reasons.values() for r in rs)
        assert seen in (["bind_suspended", "wrong_password"], ["bind_suspended", "bind_suspended"]), reasons
        page = exporter.page("/")
        assert "held back" in page and "wrong_password" in page
        assert _failed_binds(lab, logs) == 1
        for dc in lab.dcs:
            state = lab.account(SERVICE_ACCOUNT, dc)
            assert state["uac_computed"] & 0x10 == 0 and state["lockoutTime"] == 0
            assert state["badPwdCount"] <= 1
        # No trace of the secret anywhere a person or Prometheus can see.
        for output in (text, page, exporter.logs()):
            assert WRONG_SECRET not in output

        # Fixing the password file and reloading (SIGHUP) is a new credential: tried at once, and it works.
        shutil.copyfile(lab.service_password_file, secret)
        exporter.process.send_signal(signal.SIGHUP)
        exporter.wait_for(
            lambda t: metric(t, "ad_dc_up", dc=lab.dc1.host) == 1 and metric(t, "ad_dc_up", dc=lab.dc2.host) == 1,
            timeout=20,
        )
    assert _failed_binds(lab, logs) == 1
    assert "configuration reloaded" in exporter.logs()


OPENMETRICS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def test_exposition_passes_promtool_check_metrics(lab: SambaLab, tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    user = lab.create_user("ivan")
    with running_exporter(lab, tmp_path, interval=2, timeout=1.5) as exporter:
        lab.lock_out(user, lab.dc1)
        text = exporter.wait_for(lambda t: metric(t, "ad_account_locked", user=user) == 1)
        # As Prometheus asks: OpenMetrics first, gzip. The same series as the text format, in one gzip stream.
        request = urllib.request.Request(
            f"http://127.0.0.1:{exporter.port}/metrics",
            headers={"Accept": OPENMETRICS_ACCEPT, "Accept-Encoding": "gzip"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            encoding, content_type, raw = (
                response.headers["Content-Encoding"],
                response.headers["Content-Type"],
                response.read(),
            )
        # A reload that fails keeps the running configuration and says so in the metrics; a good one clears it.
        good = exporter.config.read_text()
        exporter.config.write_text("active_directory: [{domain: broken}]\n")
        exporter.process.send_signal(signal.SIGHUP)
        failed = exporter.wait_for(lambda t: metric(t, "ad_exchange_exporter_config_last_reload_successful") == 0)
        assert metric(failed, "ad_dc_up", dc=lab.dc1.host) == 1  # still collecting with the old configuration
        exporter.config.write_text(good)
        exporter.process.send_signal(signal.SIGHUP)
        exporter.wait_for(lambda t: metric(t, "ad_exchange_exporter_config_last_reload_successful") == 1)
    assert "ad_account_bad_passwords{" in text and "ad_dc_info{" in text
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result.stdout + result.stderr
    assert encoding == "gzip" and content_type.startswith("application/openmetrics-text; version=1.0.0")
    body = gzip.decompress(raw).decode()
    assert body.endswith("# EOF\n")
    families = {f.name for f in openmetrics_parser.text_string_to_metric_families(body)}  # type: ignore[no-untyped-call]
    assert {"ad_dc_up", "ad_account_locked", "ad_account_lockouts", "process_cpu_seconds"} <= families
    # The evidence store holds the failures read from the DCs' audit logs (ivan's among them); nothing dropped.
    assert (metric(text, "ad_exchange_exporter_evidence_rows") or 0) >= lab.threshold
    assert metric(text, "ad_exchange_exporter_evidence_dropped_total", reason="total_cap") == 0


def test_landing_page_in_headless_chromium(lab: SambaLab, tmp_path: Path) -> None:
    chromium = require_binary("chromium")
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}"]
    with running_exporter(lab, tmp_path, interval=2, timeout=1.5) as exporter:
        exporter.wait_for(lambda t: metric(t, "ad_dc_up", dc=lab.dc2.host) == 1)
        url = f"http://127.0.0.1:{exporter.port}/"
        browsed = subprocess.run(
            [chromium, *flags, "--enable-logging=stderr", "--v=0", "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        dom = browsed.stdout
        # The landing page's Content-Security-Policy allows its one style block by hash, and nothing else.
        assert "Refused to apply" not in browsed.stderr and "Content Security Policy" not in browsed.stderr
        shot = tmp_path / "landing.png"
        subprocess.run(
            [chromium, *flags, f"--screenshot={shot}", "--window-size=1280,640", url],
            capture_output=True,
            timeout=60,
            check=True,
        )
    assert "<h1>ad-exchange-exporter" in dom
    for dc in lab.dcs:
        assert f"<td>{dc.host}</td><td>up</td>" in dom
    assert "<td>active_directory</td><td>lab.example</td><td>ok</td>" in dom
    assert lab.service_password_file.read_text() not in dom
    assert shot.stat().st_size > 10_000  # a rendered page, not an empty canvas
    shutil.copyfile(shot, Path(tempfile.gettempdir()) / "ad-exchange-exporter-landing.png")
