"""The SMTP probe's result as metric families, blackbox-exporter style (``/probe?module=...&target=...``).

Names follow blackbox_exporter where the meaning is the same (probe_success, probe_duration_seconds,
probe_ssl_earliest_cert_expiry), so existing dashboards and alerts keep working.
"""

from __future__ import annotations

import asyncio

from exporter.config import ProbesConfig, ScheduledProbe, SmtpModule
from exporter.metrics import Family, Series
from exporter.parsers.exchange import identifier_matches, parse_x509_identifier
from exporter.registry import Collector, TargetStatus
from exporter.sources.smtp import SmtpProbe, probe_smtp


def _probe(name: str, help_text: str, *labels: str) -> Family:
    return Family(name, "gauge", help_text, labels)


PROBE_SUCCESS = _probe(
    "probe_success", "1 if the SMTP conversation reached its end (greeting 220, EHLO, STARTTLS when asked)."
)
PROBE_DURATION_SECONDS = _probe("probe_duration_seconds", "How long the probe took.")
PROBE_SMTP_PHASE_DURATION_SECONDS = _probe(
    "probe_smtp_phase_duration_seconds", "Time of each step of the conversation.", "phase"
)
PROBE_SMTP_FAILED_STAGE = _probe(
    "probe_smtp_failed_stage", "The step that failed: connect, greeting, ehlo, starttls, tls, certificate.", "stage"
)
PROBE_SMTP_GREETING_CODE = _probe(
    "probe_smtp_greeting_code", "The reply code of the greeting (220 ready; 421 the service is not active)."
)
PROBE_SMTP_REPLY_INFO = _probe(
    "probe_smtp_reply_info",
    "Reply and enhanced status codes: of the greeting (stage greeting) and of the relay test (mail_from, rcpt_to).",
    "stage",
    "code",
    "enhanced_code",
)
PROBE_SMTP_STARTTLS_OFFERED = _probe("probe_smtp_starttls_offered", "1 if EHLO offered STARTTLS.")
PROBE_SMTP_CAPABILITY_INFO = _probe("probe_smtp_capability_info", "The ESMTP extensions EHLO announced.", "capability")
PROBE_TLS_VERSION_INFO = _probe("probe_tls_version_info", "The TLS version negotiated.", "version")
PROBE_TLS_CERTIFICATE_INFO = _probe(
    "probe_tls_certificate_info",
    "The certificate the server presented after STARTTLS.",
    "subject",
    "common_name",
    "organization",
    "issuer",
    "sans",
    "sha256",
)
PROBE_SSL_EARLIEST_CERT_EXPIRY = _probe("probe_ssl_earliest_cert_expiry", "When the presented certificate expires.")
PROBE_TLS_CERTIFICATE_MATCHES_EXPECTED = _probe(
    "probe_tls_certificate_matches_expected",
    "1 if the certificate's subject (every RDN, the Organisation too) and issuer match the name the hybrid "
    "connectors expect.",
)
PROBE_TLS_CERTIFICATE_VERIFIED = _probe(
    "probe_tls_certificate_verified", "1 if the certificate chains to a trusted CA and names the server."
)
PROBE_SMTP_OPEN_RELAY = _probe(
    "probe_smtp_open_relay",
    "1 if the relay test's RCPT TO an outside address was accepted (an open relay), 0 if refused (5xx); absent when "
    "not tested or undecided (a 4xx, or MAIL FROM refused). DATA is never sent.",
)
PROBE_FAMILIES = (
    PROBE_SUCCESS,
    PROBE_DURATION_SECONDS,
    PROBE_SMTP_PHASE_DURATION_SECONDS,
    PROBE_SMTP_FAILED_STAGE,
    PROBE_SMTP_GREETING_CODE,
    PROBE_SMTP_REPLY_INFO,
    PROBE_SMTP_STARTTLS_OFFERED,
    PROBE_SMTP_CAPABILITY_INFO,
    PROBE_TLS_VERSION_INFO,
    PROBE_TLS_CERTIFICATE_INFO,
    PROBE_SSL_EARLIEST_CERT_EXPIRY,
    PROBE_TLS_CERTIFICATE_MATCHES_EXPECTED,
    PROBE_TLS_CERTIFICATE_VERIFIED,
    PROBE_SMTP_OPEN_RELAY,
)
# The scheduled probes' families: the same, each series also labelled with its target and module.
SCHEDULED_FAMILIES = {f.name: f.with_leading_labels("target", "module") for f in PROBE_FAMILIES}


def probe_families(result: SmtpProbe, module: SmtpModule, scheduled: tuple[str, str] | None = None) -> list[Series]:
    """The families of one probe; ``scheduled`` (target, module) labels them as the scheduled probes do."""
    lead = list(scheduled or ())
    families: list[Series] = []

    def add(family: Family, value: float, *labels: str) -> Series:
        series = (SCHEDULED_FAMILIES[family.name] if scheduled else family).new()
        series.add_metric([*lead, *labels], value)
        families.append(series)
        return series

    add(PROBE_SUCCESS, 1.0 if result.success else 0.0)
    add(PROBE_DURATION_SECONDS, result.duration)
    phases = (
        SCHEDULED_FAMILIES[PROBE_SMTP_PHASE_DURATION_SECONDS.name] if scheduled else PROBE_SMTP_PHASE_DURATION_SECONDS
    ).new()
    for phase, seconds in result.phases.items():
        phases.add_metric([*lead, phase], seconds)
    families.append(phases)
    if result.failed_stage:
        add(PROBE_SMTP_FAILED_STAGE, 1.0, result.failed_stage)
    if result.greeting is not None:
        add(PROBE_SMTP_GREETING_CODE, float(result.greeting.code))
        add(PROBE_SMTP_REPLY_INFO, 1.0, "greeting", result.greeting.code, result.greeting.enhanced)
    if result.capabilities or result.success:
        add(PROBE_SMTP_STARTTLS_OFFERED, 1.0 if result.starttls_offered else 0.0)
        capabilities = (
            SCHEDULED_FAMILIES[PROBE_SMTP_CAPABILITY_INFO.name] if scheduled else PROBE_SMTP_CAPABILITY_INFO
        ).new()
        for capability in result.capabilities[:64]:  # bounded whatever a server announces
            capabilities.add_metric([*lead, capability.upper()[:40]], 1.0)
        families.append(capabilities)
    cert = result.certificate
    if result.tls_version:
        add(PROBE_TLS_VERSION_INFO, 1.0, result.tls_version)
    if cert is not None:
        add(
            PROBE_TLS_CERTIFICATE_INFO,
            1.0,
            cert.subject,
            cert.common_name,
            cert.organization,
            cert.issuer,
            ",".join(cert.sans),
            cert.sha256,
        )
        add(PROBE_SSL_EARLIEST_CERT_EXPIRY, cert.not_after)
        if module.expected_tls_certificate_name:
            presented = parse_x509_identifier(f"<I>{cert.issuer}<S>{cert.subject}")
            ok = identifier_matches(presented, module.expected_tls_certificate_name)
            add(PROBE_TLS_CERTIFICATE_MATCHES_EXPECTED, 1.0 if ok else 0.0)
    if result.verified is not None:
        add(PROBE_TLS_CERTIFICATE_VERIFIED, 1.0 if result.verified else 0.0)
    for stage, reply in result.relay_replies.items():
        add(PROBE_SMTP_REPLY_INFO, 1.0, stage, reply.code, reply.enhanced)
    if result.open_relay is not None:
        add(PROBE_SMTP_OPEN_RELAY, 1.0 if result.open_relay else 0.0)
    return families


async def probe_target(target: str, module: SmtpModule, timeout: float | None = None) -> SmtpProbe:  # noqa: ASYNC109
    """One probe of ``target`` (host:port) as ``module`` says; ``timeout`` shortens the module's."""
    host, _, port = target.rpartition(":")
    relay = module.relay_test
    return await probe_smtp(
        host.strip("[]"),
        int(port),
        timeout=module.timeout_seconds if timeout is None else timeout,
        ehlo_hostname=module.ehlo_hostname,
        starttls=module.starttls,
        verify=module.verify,
        ca_file=module.ca_file,
        server_name=module.server_name,
        relay=(relay.mail_from, relay.rcpt_to) if relay else None,
    )


class ScheduledProbesCollector(Collector):
    """The configured probes, run by the exporter every interval, each with its target and module as labels."""

    name = "smtp_probes"
    families = tuple(SCHEDULED_FAMILIES.values())

    def __init__(self, config: ProbesConfig) -> None:
        slowest = max((config.modules[p.module].timeout_seconds for p in config.scheduled), default=10.0)
        super().__init__("scheduled", config.interval_seconds, timeout=min(config.interval_seconds, slowest * 3))
        self.config = config
        self.results: dict[tuple[str, str], SmtpProbe] = {}

    async def _run(self, probe: ScheduledProbe) -> None:
        self.results[(probe.target, probe.module)] = await probe_target(probe.target, self.config.modules[probe.module])

    async def collect(self) -> list[Series]:
        await asyncio.gather(*(self._run(p) for p in self.config.scheduled))
        merged: dict[str, Series] = {}
        for (target, module_name), result in sorted(self.results.items()):
            for family in probe_families(result, self.config.modules[module_name], (target, module_name)):
                into = merged.setdefault(family.name, family.family.new())
                into.extend(family)
        return list(merged.values())

    def target_status(self) -> list[TargetStatus]:
        return [
            TargetStatus(f"{module} {target}", r.success, r.error)
            for (target, module), r in sorted(self.results.items())
        ]
