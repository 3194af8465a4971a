"""The exporter's one YAML configuration file, validated at start: a package of one module per area.

Every error is reported at once with its path; secrets come from ``*_file`` paths or environment variables only.
Import configuration types from here: ``from exporter.config import ActiveDirectoryConfig``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from exporter.config.active_directory import (
    ActiveDirectoryConfig,
    DiscoveryConfig,
    DomainControllerConfig,
    LdapBind,
    LdapTls,
)
from exporter.config.base import (
    ConfigError,
    Problems,
    ReadableFile,
    Seconds,
    Secret,
    StrictModel,
    format_location,
    parse_model,
    read_model,
    readable_file,
)
from exporter.config.directaccess import DirectAccessClient, DirectAccessConfig, DirectAccessServer
from exporter.config.exchange import ExchangeConfig, ExchangeServerConfig, HybridConfig, SecurityUpdateConfig
from exporter.config.exchange_logs import ExchangeLogsConfig
from exporter.config.mail import CanaryConfig, HybridMailConfig, ImapConfig, MailArrival
from exporter.config.probes import ProbesConfig, ScheduledProbe, SmtpModule
from exporter.config.remoting import Remoting, RemotingAuth, RemotingTls
from exporter.config.security_events import EventDomainController, EventFile, EventRemoting, SecurityEventsConfig
from exporter.config.web import EvidenceConfig, LogConfig, StateConfig, WebConfig

__all__ = [
    "ActiveDirectoryConfig",
    "CanaryConfig",
    "Config",
    "ConfigError",
    "DirectAccessClient",
    "DirectAccessConfig",
    "DirectAccessServer",
    "DiscoveryConfig",
    "DomainControllerConfig",
    "EventDomainController",
    "EventFile",
    "EventRemoting",
    "EvidenceConfig",
    "ExchangeConfig",
    "ExchangeLogsConfig",
    "ExchangeServerConfig",
    "HybridConfig",
    "HybridMailConfig",
    "ImapConfig",
    "LdapBind",
    "LdapTls",
    "LogConfig",
    "MailArrival",
    "ProbesConfig",
    "Problems",
    "ReadableFile",
    "Remoting",
    "RemotingAuth",
    "RemotingTls",
    "ScheduledProbe",
    "Seconds",
    "Secret",
    "SecurityEventsConfig",
    "SecurityUpdateConfig",
    "SmtpModule",
    "StateConfig",
    "StrictModel",
    "WebConfig",
    "format_location",
    "load_config",
    "parse_config",
    "parse_model",
    "read_model",
    "readable_file",
]


class Config(StrictModel):
    web: WebConfig = Field(default_factory=WebConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    active_directory: list[ActiveDirectoryConfig] = Field(default_factory=list)
    exchange: list[ExchangeConfig] = Field(default_factory=list)
    security_events: list[SecurityEventsConfig] = Field(default_factory=list)
    exchange_logs: list[ExchangeLogsConfig] = Field(default_factory=list)
    probes: ProbesConfig = Field(default_factory=ProbesConfig)
    hybrid_mail: list[HybridMailConfig] = Field(default_factory=list)
    canaries: list[CanaryConfig] = Field(default_factory=list)
    directaccess: list[DirectAccessConfig] = Field(default_factory=list)
    state: StateConfig = Field(default_factory=StateConfig)

    @model_validator(mode="after")
    def _unique_domains(self) -> Config:
        problems = Problems()
        seen: set[str] = set()
        for ad in self.active_directory:
            key = ad.domain.lower()
            if key in seen:
                problems.append(f"active_directory: domain {ad.domain} appears twice")
            seen.add(key)
        problems.unique("exchange", (ex.organization for ex in self.exchange), "an organization")
        problems.unique("security_events", (ev.name for ev in self.security_events), "a name")
        problems.unique("exchange_logs", (logs.server for logs in self.exchange_logs), "a server")
        problems.unique("directaccess", (da.name for da in self.directaccess), "a name")
        problems.check()
        return self

    def secrets(self) -> list[str]:
        """Every secret value in this config, so that error texts can be scrubbed of them."""
        secrets = [ad.bind.password for ad in self.active_directory] + [ex.auth.password for ex in self.exchange]
        secrets += [ev.winrm.auth.password for ev in self.security_events if ev.winrm is not None]
        secrets += [da.auth.password for da in self.directaccess]
        for imap in [flow.imap for flow in self.hybrid_mail] + [canary.imap for canary in self.canaries]:
            if imap is not None:
                secrets.append(imap.password)
        return [s.get_secret_value() for s in secrets if s is not None]


def parse_config(text: str, source: str = "<config>") -> Config:
    return parse_model(text, source, Config)


def load_config(path: Path) -> Config:
    return read_model(path, Config)
