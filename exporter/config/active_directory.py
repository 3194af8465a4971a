"""Active Directory: the domain, its DCs, how to bind, caps."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from exporter.config.base import Problems, ReadableFile, Seconds, Secret, StrictModel, readable_file


class LdapBind(Secret):
    """How the exporter authenticates to the domain controllers."""

    method: Literal["simple", "ntlm", "kerberos"] = "simple"
    # simple: a UPN (svc@corp.example) or DN; ntlm: DOMAIN\\user; kerberos: principal (optional with a keytab)
    keytab_file: ReadableFile | None = None

    _check_keytab_file = field_validator("keytab_file")(readable_file)

    @model_validator(mode="after")
    def _resolve_secret(self) -> LdapBind:
        secret = self._read_secret()
        if self.method in ("simple", "ntlm"):
            if not self.user:
                raise ValueError(f"user: required for method {self.method}")
            if secret is None:
                raise ValueError(f"password_file or password_env: required for method {self.method}")
            if self.method == "ntlm" and "\\" not in self.user:
                raise ValueError("user: NTLM needs DOMAIN\\user")
        # kerberos with neither password nor keytab uses the existing credential cache (KRB5CCNAME).
        return self


class LdapTls(StrictModel):
    mode: Literal["ldaps", "starttls", "none"] = "ldaps"
    verify: bool = True
    ca_file: ReadableFile | None = None

    _check_ca_file = field_validator("ca_file")(readable_file)


class DomainControllerConfig(StrictModel):
    # The DC's DNS name: what its certificate and Kerberos service principal name carry.
    host: str
    # Where to connect, if not the host name (an IP address, or a name only this network resolves).
    address: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)


class DiscoveryConfig(StrictModel):
    # nTDSDSA objects under CN=Sites in the Configuration partition (read from a configured DC).
    ntds_settings: bool = True
    # DNS SRV records _ldap._tcp.dc._msdcs.<domain>.
    dns_srv: bool = False
    # Resolvers for SRV and A lookups of discovered DCs; empty means the system resolver.
    dns_servers: list[str] = Field(default_factory=list)


class ActiveDirectoryConfig(StrictModel):
    domain: str = Field(pattern=r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
    base_dn: str | None = None
    domain_controllers: list[DomainControllerConfig] = Field(default_factory=list)
    discovery: DiscoveryConfig = Field(default_factory=DiscoveryConfig)
    bind: LdapBind
    tls: LdapTls = Field(default_factory=LdapTls)
    interval_seconds: Seconds = 60.0
    timeout_seconds: Seconds = 10.0
    page_size: int = Field(default=500, ge=1, le=5000)
    max_concurrent_dcs: int = Field(default=8, ge=1, le=256)
    # Service accounts whose per-DC bad-password state and lock are always exported.
    watch_accounts: list[str] = Field(default_factory=list, max_length=200)
    # Cap on accounts shown per DC in the bad-password top list; the rest is summed as user="<other>".
    top_accounts: int = Field(default=10, ge=0, le=500)
    # Cap on accounts listed individually as locked; the number left out is exported.
    max_locked_accounts: int = Field(default=50, ge=0, le=5000)
    # After the DCs refuse the exporter's own credential it is not tried again for this long (at least the
    # domain's observation window plus a minute), so the exporter never locks out its own account.
    bind_retry_after_seconds: Seconds = 1860.0

    @model_validator(mode="after")
    def _targets(self) -> ActiveDirectoryConfig:
        problems = Problems()
        if self.tls.mode == "none" and self.bind.method in ("simple", "ntlm"):
            # A simple bind would send the password in clear; NTLM needs signing that ldap3 cannot provide.
            problems.add(
                "tls.mode", f"'none' is not allowed with bind method {self.bind.method}; use ldaps or starttls"
            )
        if not self.domain_controllers and not self.discovery.dns_srv:
            problems.add("domain_controllers", "give at least one DC, or enable discovery.dns_srv")
        if self.timeout_seconds >= self.interval_seconds:
            problems.add("timeout_seconds", "must be shorter than interval_seconds")
        problems.check()
        return self

    @property
    def effective_base_dn(self) -> str:
        return self.base_dn or ",".join(f"DC={part}" for part in self.domain.split("."))
