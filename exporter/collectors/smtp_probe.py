"""The SMTP probe's result as metric families, blackbox-exporter style (``/probe?module=...&target=...``).

Names follow blackbox_exporter where the meaning is the same (probe_success, probe_duration_seconds,
probe_ssl_earliest_cert_expiry), so existing dashboards and alerts keep working.
"""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.config import SmtpModule
from exporter.parsers.exchange import identifier_matches, parse_x509_identifier
from exporter.sources.smtp import SmtpProbe


def probe_families(result: SmtpProbe, module: SmtpModule) -> list[Metric]:
    def gauge(name: str, doc: str, value: float | None = None, labels: dict[str, str] | None = None) -> Metric:
        family = GaugeMetricFamily(name, doc, labels=list(labels) if labels else None)
        if labels:
            family.add_metric(list(labels.values()), 1.0 if value is None else value)
        elif value is not None:
            family.add_metric([], value)
        return family

    families = [
        gauge("probe_success", "1 if the SMTP conversation reached its end (greeting 220, EHLO, STARTTLS when asked).",
              1.0 if result.success else 0.0),
        gauge("probe_duration_seconds", "How long the probe took.", result.duration),
    ]
    phases = GaugeMetricFamily("probe_smtp_phase_duration_seconds", "Time of each step of the conversation.",
                               labels=["phase"])
    for phase, seconds in result.phases.items():
        phases.add_metric([phase], seconds)
    families.append(phases)
    if result.failed_stage:
        families.append(gauge("probe_smtp_failed_stage", "The step that failed: connect, greeting, ehlo, starttls, "
                               "tls, certificate.", labels={"stage": result.failed_stage}))
    if result.greeting is not None:
        families.append(gauge("probe_smtp_greeting_code", "The reply code of the greeting (220 ready; 421 the "
                              "service is not active).", float(result.greeting.code)))
        families.append(gauge("probe_smtp_reply_info", "The greeting's reply and enhanced status codes.",
                              labels={"stage": "greeting", "code": result.greeting.code,
                                      "enhanced_code": result.greeting.enhanced}))
    if result.capabilities or result.success:
        families.append(gauge("probe_smtp_starttls_offered", "1 if EHLO offered STARTTLS.",
                              1.0 if result.starttls_offered else 0.0))
    cert = result.certificate
    if result.tls_version:
        families.append(gauge("probe_tls_version_info", "The TLS version negotiated.",
                              labels={"version": result.tls_version}))
    if cert is not None:
        families.append(gauge("probe_tls_certificate_info", "The certificate the server presented after STARTTLS.",
                              labels={"subject": cert.subject, "common_name": cert.common_name,
                                      "organization": cert.organization, "issuer": cert.issuer,
                                      "sans": ",".join(cert.sans), "sha256": cert.sha256}))
        families.append(gauge("probe_ssl_earliest_cert_expiry", "When the presented certificate expires.",
                              cert.not_after))
        if module.expected_tls_certificate_name:
            presented = parse_x509_identifier(f"<I>{cert.issuer}<S>{cert.subject}")
            ok = identifier_matches(presented, module.expected_tls_certificate_name)
            families.append(gauge("probe_tls_certificate_matches_expected",
                                  "1 if the certificate's subject (every RDN, the Organisation too) and issuer match "
                                  "the name the hybrid connectors expect.", 1.0 if ok else 0.0))
    if result.verified is not None:
        families.append(gauge("probe_tls_certificate_verified", "1 if the certificate chains to a trusted CA and "
                              "names the server.", 1.0 if result.verified else 0.0))
    return families
