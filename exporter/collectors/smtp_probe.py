"""The SMTP probe's result as metric families, blackbox-exporter style (``/probe?module=...&target=...``).

Names follow blackbox_exporter where the meaning is the same (probe_success, probe_duration_seconds,
probe_ssl_earliest_cert_expiry), so existing dashboards and alerts keep working.
"""

from __future__ import annotations

import asyncio

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.samples import Sample

from exporter.config import ProbesConfig, ScheduledProbe, SmtpModule
from exporter.parsers.exchange import identifier_matches, parse_x509_identifier
from exporter.registry import Collector, TargetStatus
from exporter.sources.smtp import SmtpProbe, probe_smtp


def probe_families(result: SmtpProbe, module: SmtpModule) -> list[Metric]:
    def gauge(name: str, doc: str, value: float | None = None, labels: dict[str, str] | None = None) -> Metric:
        family = GaugeMetricFamily(name, doc, labels=list(labels) if labels else None)
        if labels:
            family.add_metric(list(labels.values()), 1.0 if value is None else value)
        elif value is not None:
            family.add_metric([], value)
        return family

    families = [
        gauge(
            "probe_success",
            "1 if the SMTP conversation reached its end (greeting 220, EHLO, STARTTLS when asked).",
            1.0 if result.success else 0.0,
        ),
        gauge("probe_duration_seconds", "How long the probe took.", result.duration),
    ]
    phases = GaugeMetricFamily(
        "probe_smtp_phase_duration_seconds", "Time of each step of the conversation.", labels=["phase"]
    )
    for phase, seconds in result.phases.items():
        phases.add_metric([phase], seconds)
    families.append(phases)
    if result.failed_stage:
        families.append(
            gauge(
                "probe_smtp_failed_stage",
                "The step that failed: connect, greeting, ehlo, starttls, tls, certificate.",
                labels={"stage": result.failed_stage},
            )
        )
    if result.greeting is not None:
        families.append(
            gauge(
                "probe_smtp_greeting_code",
                "The reply code of the greeting (220 ready; 421 the service is not active).",
                float(result.greeting.code),
            )
        )
        families.append(
            gauge(
                "probe_smtp_reply_info",
                "The greeting's reply and enhanced status codes.",
                labels={"stage": "greeting", "code": result.greeting.code, "enhanced_code": result.greeting.enhanced},
            )
        )
    if result.capabilities or result.success:
        families.append(
            gauge("probe_smtp_starttls_offered", "1 if EHLO offered STARTTLS.", 1.0 if result.starttls_offered else 0.0)
        )
        capabilities = GaugeMetricFamily(
            "probe_smtp_capability_info", "The ESMTP extensions EHLO announced.", labels=["capability"]
        )
        for capability in result.capabilities[:64]:  # bounded whatever a server announces
            capabilities.add_metric([capability.upper()[:40]], 1.0)
        families.append(capabilities)
    cert = result.certificate
    if result.tls_version:
        families.append(
            gauge("probe_tls_version_info", "The TLS version negotiated.", labels={"version": result.tls_version})
        )
    if cert is not None:
        families.append(
            gauge(
                "probe_tls_certificate_info",
                "The certificate the server presented after STARTTLS.",
                labels={
                    "subject": cert.subject,
                    "common_name": cert.common_name,
                    "organization": cert.organization,
                    "issuer": cert.issuer,
                    "sans": ",".join(cert.sans),
                    "sha256": cert.sha256,
                },
            )
        )
        families.append(
            gauge("probe_ssl_earliest_cert_expiry", "When the presented certificate expires.", cert.not_after)
        )
        if module.expected_tls_certificate_name:
            presented = parse_x509_identifier(f"<I>{cert.issuer}<S>{cert.subject}")
            ok = identifier_matches(presented, module.expected_tls_certificate_name)
            families.append(
                gauge(
                    "probe_tls_certificate_matches_expected",
                    "1 if the certificate's subject (every RDN, the Organisation too) and issuer match "
                    "the name the hybrid connectors expect.",
                    1.0 if ok else 0.0,
                )
            )
    if result.verified is not None:
        families.append(
            gauge(
                "probe_tls_certificate_verified",
                "1 if the certificate chains to a trusted CA and names the server.",
                1.0 if result.verified else 0.0,
            )
        )
    return families


class ScheduledProbesCollector(Collector):
    """The configured probes, run by the exporter every interval, each with its target and module as labels."""

    name = "smtp_probes"

    def __init__(self, config: ProbesConfig) -> None:
        slowest = max((config.modules[p.module].timeout_seconds for p in config.scheduled), default=10.0)
        super().__init__("scheduled", config.interval_seconds, timeout=min(config.interval_seconds, slowest * 3))
        self.config = config
        self.results: dict[tuple[str, str], SmtpProbe] = {}

    async def _run(self, probe: ScheduledProbe) -> None:
        module = self.config.modules[probe.module]
        host, _, port = probe.target.rpartition(":")
        self.results[(probe.target, probe.module)] = await probe_smtp(
            host.strip("[]"),
            int(port),
            timeout=module.timeout_seconds,
            ehlo_hostname=module.ehlo_hostname,
            starttls=module.starttls,
            verify=module.verify,
            ca_file=module.ca_file,
            server_name=module.server_name,
        )

    async def collect(self) -> list[Metric]:
        await asyncio.gather(*(self._run(p) for p in self.config.scheduled))
        merged: dict[str, Metric] = {}
        for (target, module_name), result in sorted(self.results.items()):
            for family in probe_families(result, self.config.modules[module_name]):
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(family.name, family.documentation, family.type)
                into.samples.extend(
                    Sample(s.name, {**s.labels, "target": target, "module": module_name}, s.value)
                    for s in family.samples
                )
        return list(merged.values())

    def target_status(self) -> list[TargetStatus]:
        return [
            TargetStatus(f"{module} {target}", r.success, r.error)
            for (target, module), r in sorted(self.results.items())
        ]
