"""Exchange over PowerShell remoting: the organisation, its servers, hybrid settings, the security update read."""

from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator, model_validator

from exporter.config.base import Problems, Seconds, StrictModel
from exporter.config.remoting import Remoting, RemotingHost
from exporter.parsers.routing import EOP_RANGES


class ExchangeServerConfig(RemotingHost):
    """An Exchange server: ``name`` is its Exchange name (SOLO-E16A), what cmdlets take as -Identity / -Server,
    and the label; ``host`` its DNS name (the certificate's, the SPN's), or an address."""


class RoutingConfig(StrictModel):
    """The mail routing checks (see exporter/parsers/routing.py)."""

    # Who may relay anonymously through a receive connector; wider ranges on a relaying connector are an open
    # relay. Default: Exchange Online Protection's published sending ranges.
    relay_allowed_ranges: list[str] = Field(default_factory=lambda: list(EOP_RANGES))
    # Centralized transport on or off; unset: as Get-HybridConfiguration's Features say.
    centralized_transport: bool | None = None
    # The receive connector Office 365 delivers to ("SERVER\\Name"); unset: the front-end port-25 connector
    # locked to relay_allowed_ranges.
    centralized_receive_connector: str = ""
    # The tenant's smart host (contoso-com.mail.protection.outlook.com); unset: any *.mail.protection.outlook.com.
    office365_smart_host: str = ""
    # Cap on findings listed by object; the count per kind is always exported.
    max_listed_findings: int = Field(default=50, ge=0, le=1000)

    @field_validator("relay_allowed_ranges")
    @classmethod
    def _networks(cls, ranges: list[str]) -> list[str]:
        for text in ranges:
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ValueError(f"{text!r} is not an address range (a.b.c.d/n or an IPv6 prefix)") from None
        return ranges


class HybridConfig(StrictModel):
    # The tenant's routing domain (contoso.mail.onmicrosoft.com): every remote mailbox's
    # RemoteRoutingAddress must be in it.
    tenant_routing_domain: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
    # TlsCertificateName the hybrid connectors must carry, as "<I>issuer<S>subject" or just the subject.
    expected_tls_certificate_name: str | None = None
    interval_seconds: Seconds = 900.0
    # Cap on misrouted remote mailboxes listed by name; the count is always exported.
    max_listed_mailboxes: int = Field(default=20, ge=0, le=1000)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)


class SecurityUpdateConfig(StrictModel):
    """Reading the security update level: ExSetup.exe's file version, through the server's plain PowerShell
    endpoint (WinRM), since Exchange's restricted runspace cannot run Get-Command and AdminDisplayVersion
    names only the CU. Same account and transport settings as the Exchange endpoint."""

    enabled: bool = False
    path: str = "wsman"
    configuration_name: str = "Microsoft.PowerShell"
    # WinRM's own port: 5985 for http, 5986 for https when not given.
    port: int | None = Field(default=None, ge=1, le=65535)


class ExchangeHealthConfig(StrictModel):
    """Health in depth (exporter/collectors/exchange_health.py): database copies, activation and back pressure
    every refresh; Managed Availability, services, overrides, OAuth and Emergency Mitigation on ``interval``."""

    enabled: bool = True
    # Get-ServerHealth is expensive on a real server (it reads every monitor's last result): not every minute.
    interval_seconds: Seconds = 300.0
    # One server's health cmdlets together, on their own runspace (they never hold up the core refresh).
    timeout_seconds: Seconds = 120.0
    max_listed_monitors: int = Field(default=30, ge=0, le=1000)
    max_listed_overrides: int = Field(default=20, ge=0, le=1000)


class ExchangeConfig(Remoting):
    organization: str = Field(min_length=1)
    servers: list[ExchangeServerConfig] = Field(min_length=1)
    path: str = "PowerShell"
    configuration_name: str = "Microsoft.Exchange"
    interval_seconds: Seconds = 60.0
    # Cap on queue groups (next hop, delivery type, status) per server; the rest is counted as left out.
    max_queues: int = Field(default=50, ge=1, le=1000)
    hybrid: HybridConfig | None = None
    security_update: SecurityUpdateConfig = Field(default_factory=SecurityUpdateConfig)
    health: ExchangeHealthConfig = Field(default_factory=ExchangeHealthConfig)

    @model_validator(mode="after")
    def _servers(self) -> ExchangeConfig:
        problems = Problems()
        if self.timeout_seconds >= self.interval_seconds:
            problems.append("timeout_seconds: must be shorter than interval_seconds")
        problems.unique("servers", (s.name for s in self.servers), "a server name")
        problems.check()
        return self

    @property
    def default_port(self) -> int:
        return 443 if self.scheme == "https" else 80
