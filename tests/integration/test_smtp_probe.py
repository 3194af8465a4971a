"""The SMTP probe through the exporter's /probe endpoint, against lab servers (aiosmtpd) on loopback."""

from __future__ import annotations

import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.smtp import SmtpLab
from tests.helpers import metric
from tests.integration.conftest import RunningExporter, running_exporter

EXPECTED = "<I>CN=Lab Public CA G1, O=Lab Trust Services<S>CN=mail.contoso.com, O=Contoso Ltd"


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpLab]:
    with SmtpLab(tmp_path / "smtp") as lab:
        yield lab


@pytest.fixture
def exporter(smtp: SmtpLab, tmp_path: Path) -> Iterator[RunningExporter]:
    probes = {
        "modules": {
            "hybrid": {
                "timeout_seconds": 3,
                "ehlo_hostname": "probe.lab.example",
                "verify": True,
                "ca_file": str(smtp.ca_file),
                "server_name": "mail.contoso.com",
                "expected_tls_certificate_name": EXPECTED,
            },
            "system_cas": {"timeout_seconds": 3, "verify": True, "server_name": "mail.contoso.com"},
            "relay": {
                "timeout_seconds": 3,
                "ehlo_hostname": "probe.lab.example",
                "relay_test": {"rcpt_to": "canary@example.org", "mail_from": "probe@example.net"},
            },
        },
        "allowed_targets": [smtp.target(name) for name in smtp.ports],
    }
    with running_exporter(None, tmp_path, sections={"probes": probes}) as running:
        yield running


def probe(exporter: RunningExporter, module: str, target: str) -> str:
    return exporter.page(f"/probe?module={module}&target={target}")


def test_a_server_answering_421(smtp: SmtpLab, exporter: RunningExporter) -> None:
    text = probe(exporter, "hybrid", smtp.target("offline"))
    assert metric(text, "probe_success") == 0
    assert metric(text, "probe_smtp_greeting_code") == 421
    assert metric(text, "probe_smtp_reply_info", stage="greeting", code="421", enhanced_code="4.3.2") == 1
    assert metric(text, "probe_smtp_failed_stage", stage="greeting") == 1
    assert metric(text, "probe_tls_certificate_info") is None


def test_a_certificate_with_another_organisation(smtp: SmtpLab, exporter: RunningExporter) -> None:
    text = probe(exporter, "hybrid", smtp.target("renewed"))
    # The conversation works and the chain is trusted: only the subject's Organisation differs.
    assert metric(text, "probe_success") == 1
    assert metric(text, "probe_tls_certificate_verified") == 1
    assert metric(text, "probe_tls_certificate_matches_expected") == 0
    assert (
        metric(
            text,
            "probe_tls_certificate_info",
            common_name="mail.contoso.com",
            organization="Contoso Holdings",
            issuer="O=Lab Trust Services, CN=Lab Public CA G1",  # as Windows writes it
        )
        == 1
    )
    good = probe(exporter, "hybrid", smtp.target("onprem"))
    assert metric(good, "probe_tls_certificate_matches_expected") == 1
    assert metric(good, "probe_tls_certificate_info", organization="Contoso Ltd") == 1
    assert metric(good, "probe_smtp_starttls_offered") == 1
    assert (metric(good, "probe_ssl_earliest_cert_expiry") or 0) > (metric(text, "probe_ssl_earliest_cert_expiry") or 0)


def test_an_untrusted_certificate_is_still_reported(smtp: SmtpLab, exporter: RunningExporter) -> None:
    text = probe(exporter, "system_cas", smtp.target("onprem"))
    assert metric(text, "probe_success") == 0
    assert metric(text, "probe_tls_certificate_verified") == 0
    assert metric(text, "probe_smtp_failed_stage", stage="certificate") == 1
    assert metric(text, "probe_tls_certificate_info", organization="Contoso Ltd") == 1


def test_only_configured_modules_and_allowed_targets(smtp: SmtpLab, exporter: RunningExporter) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        probe(exporter, "hybrid", "127.0.0.1:25")
    assert refused.value.code == 403
    with pytest.raises(urllib.error.HTTPError) as unknown:
        probe(exporter, "nope", smtp.target("onprem"))
    assert unknown.value.code == 400


def test_scheduled_probes_carry_their_target(smtp: SmtpLab, tmp_path: Path) -> None:
    probes = {
        "modules": {
            "hybrid": {
                "timeout_seconds": 3,
                "expected_tls_certificate_name": EXPECTED,
                "verify": True,
                "ca_file": str(smtp.ca_file),
                "server_name": "mail.contoso.com",
            }
        },
        "scheduled": [{"module": "hybrid", "target": smtp.target(n)} for n in ("offline", "renewed", "onprem")],
        "interval_seconds": 2,
    }
    with running_exporter(None, tmp_path / "scheduled", sections={"probes": probes}) as exporter:
        text = exporter.wait_for(lambda t: metric(t, "probe_success", target=smtp.target("onprem")) == 1)
    assert metric(text, "probe_smtp_greeting_code", target=smtp.target("offline"), module="hybrid") == 421
    assert metric(text, "probe_tls_certificate_matches_expected", target=smtp.target("renewed")) == 0
    assert metric(text, "probe_tls_certificate_matches_expected", target=smtp.target("onprem")) == 1
    assert metric(text, "probe_smtp_capability_info", target=smtp.target("onprem"), capability="STARTTLS") == 1


def test_the_relay_test_finds_the_open_relay_and_never_sends_data(smtp: SmtpLab, exporter: RunningExporter) -> None:
    opened = probe(exporter, "relay", smtp.target("open_relay"))
    closed = probe(exporter, "relay", smtp.target("closed_relay"))
    assert metric(opened, "probe_smtp_open_relay") == 1 and metric(opened, "probe_success") == 1
    assert metric(opened, "probe_smtp_reply_info", stage="rcpt_to", code="250", enhanced_code="2.1.5") == 1
    assert metric(closed, "probe_smtp_open_relay") == 0 and metric(closed, "probe_success") == 1
    assert metric(closed, "probe_smtp_reply_info", stage="rcpt_to", code="550", enhanced_code="5.7.54") == 1
    assert metric(closed, "probe_smtp_reply_info", stage="mail_from", code="250") == 1
    # Each server saw exactly the one RCPT to the outside address, after STARTTLS, and never a DATA.
    for name in ("open_relay", "closed_relay"):
        relay = smtp.relays[name]
        assert [(a, tls) for a, _, tls in relay.rcpts] == [("canary@example.org", True)]
        assert relay.data_commands == 0
    # A module without relay_test says nothing about relaying.
    plain = probe(exporter, "hybrid", smtp.target("onprem"))
    assert metric(plain, "probe_smtp_open_relay") is None
