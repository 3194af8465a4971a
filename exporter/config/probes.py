"""SMTP probes: modules, allowed targets, scheduled probes."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from exporter.config.base import ReadableFile, Seconds, StrictModel, readable_file


class RelayTest(StrictModel):
    """After EHLO (and STARTTLS), ask to relay: MAIL FROM and RCPT TO an address outside the organisation, then
    RSET and QUIT. DATA is never sent: nothing is delivered whatever the server answers."""

    # An external recipient (a mailbox you own elsewhere): accepted by RCPT means the target is an open relay.
    rcpt_to: str = Field(pattern=r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
    mail_from: str = Field(default="relay-test@ad-exchange-exporter.invalid", pattern=r"^[^@\s<>]*@?[^@\s<>]*$")


class SmtpModule(StrictModel):
    """How /probe talks to an SMTP target: greeting, EHLO, STARTTLS, the presented certificate."""

    timeout_seconds: Seconds = 10.0
    ehlo_hostname: str = "ad-exchange-exporter.invalid"
    starttls: bool = True
    # Check the certificate against ca_file (or the system's CAs) and server_name; the certificate is reported
    # either way.
    verify: bool = False
    ca_file: ReadableFile | None = None
    server_name: str | None = None
    # The certificate the hybrid connectors expect ("<I>issuer<S>subject" or the subject alone).
    expected_tls_certificate_name: str | None = None
    # Test whether the target relays for anyone (probe_smtp_open_relay).
    relay_test: RelayTest | None = None

    _check_ca_file = field_validator("ca_file")(readable_file)


class ScheduledProbe(StrictModel):
    module: str
    target: str = Field(pattern=r"^.+:\d+$")  # host:port


class ProbesConfig(StrictModel):
    modules: dict[str, SmtpModule] = Field(default_factory=dict)
    # Probes the exporter runs itself every interval (exported with target and module labels), for setups
    # without a Prometheus job per target.
    scheduled: list[ScheduledProbe] = Field(default_factory=list)
    interval_seconds: Seconds = 60.0
    # /probe answers only for these targets (host:port): the exporter is never a scanner for whoever reaches it.
    allowed_targets: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known_modules(self) -> ProbesConfig:
        unknown = sorted({p.module for p in self.scheduled} - set(self.modules))
        if unknown:
            raise ValueError(f"scheduled: unknown module(s) {', '.join(unknown)}")
        return self

    @field_validator("allowed_targets")
    @classmethod
    def _host_port(cls, values: list[str]) -> list[str]:
        for value in values:
            host, sep, port = value.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"{value!r}: expected host:port")
        return values
