"""The exporter's one YAML configuration file, validated at start.

Every error is reported at once with its path (``active_directory[0].bind.password_file: file not found``).
Secrets are read from ``*_file`` paths or environment variables, never written inline, and are kept as
:class:`pydantic.SecretStr` so that no repr, log line or page shows them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)


class ConfigError(Exception):
    """A configuration that cannot be used; ``errors`` holds one ``path: message`` line per problem."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: {len(errors)} error(s):\n" + "\n".join(f"  {e}" for e in errors))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


ModelT = TypeVar("ModelT", bound=BaseModel)


def _readable_file(path: Path | None) -> Path | None:
    if path is None:
        return None
    if not path.exists():
        raise ValueError("file not found")
    if not path.is_file():
        raise ValueError("not a regular file")
    if not os.access(path, os.R_OK):
        raise ValueError("file not readable")
    return path


ReadableFile = Annotated[Path, Field(description="path to a readable file")]
Seconds = Annotated[float, Field(gt=0)]


class WebConfig(_Model):
    listen_address: str = "127.0.0.1:9733"
    # TLS and basic auth in exporter-toolkit's web config format (see exporter/web_security.py).
    config_file: ReadableFile | None = None
    # Reachable without credentials: they only ever answer OK or not, and kubelets probe them.
    unauthenticated_paths: list[str] = Field(default_factory=lambda: ["/-/healthy", "/-/ready"])

    _check_config_file = field_validator("config_file")(_readable_file)

    @field_validator("unauthenticated_paths")
    @classmethod
    def _known_paths(cls, paths: list[str]) -> list[str]:
        # Only paths that reveal nothing may be opened; /metrics, / and /probe always need credentials.
        allowed = {"/-/healthy", "/-/ready"}
        refused = [p for p in paths if p not in allowed]
        if refused:
            raise ValueError(f"only {' and '.join(sorted(allowed))} can be left open, not {', '.join(refused)}")
        return paths

    @field_validator("listen_address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        _, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected HOST:PORT")
        return value

    @property
    def host(self) -> str:
        return self.listen_address.rpartition(":")[0].strip("[]") or "0.0.0.0"  # noqa: S104

    @property
    def port(self) -> int:
        return int(self.listen_address.rpartition(":")[2])


class LogConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class _Secret(_Model):
    """A user and a password read from a file or an environment variable, never from the YAML itself."""

    user: str | None = None
    password_file: ReadableFile | None = None
    password_env: str | None = None
    # Resolved from password_file / password_env at load time; never set in YAML.
    password: SecretStr | None = Field(default=None, exclude=True)

    _check_password_file = field_validator("password_file")(_readable_file)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_password(cls, data: Any) -> Any:
        if isinstance(data, dict) and "password" in data:
            raise ValueError("inline passwords are not accepted; use password_file or password_env")
        return data

    def _read_secret(self) -> str | None:
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("password_file and password_env are mutually exclusive")
        secret: str | None = None
        if self.password_file is not None:
            secret = self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
            if not secret:
                raise ValueError("password_file: file is empty")
        elif self.password_env is not None:
            secret = os.environ.get(self.password_env)
            if not secret:
                raise ValueError(f"password_env: environment variable {self.password_env} is not set")
        if secret is not None:
            object.__setattr__(self, "password", SecretStr(secret))
        return secret


class LdapBind(_Secret):
    """How the exporter authenticates to the domain controllers."""

    method: Literal["simple", "ntlm", "kerberos"] = "simple"
    # simple: a UPN (svc@corp.example) or DN; ntlm: DOMAIN\\user; kerberos: principal (optional with a keytab)
    keytab_file: ReadableFile | None = None

    _check_keytab_file = field_validator("keytab_file")(_readable_file)

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


class LdapTls(_Model):
    mode: Literal["ldaps", "starttls", "none"] = "ldaps"
    verify: bool = True
    ca_file: ReadableFile | None = None

    _check_ca_file = field_validator("ca_file")(_readable_file)


class DomainControllerConfig(_Model):
    # The DC's DNS name: what its certificate and Kerberos service principal name carry.
    host: str
    # Where to connect, if not the host name (an IP address, or a name only this network resolves).
    address: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)


class DiscoveryConfig(_Model):
    # nTDSDSA objects under CN=Sites in the Configuration partition (read from a configured DC).
    ntds_settings: bool = True
    # DNS SRV records _ldap._tcp.dc._msdcs.<domain>.
    dns_srv: bool = False
    # Resolvers for SRV and A lookups of discovered DCs; empty means the system resolver.
    dns_servers: list[str] = Field(default_factory=list)


class ActiveDirectoryConfig(_Model):
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
        if self.tls.mode == "none" and self.bind.method in ("simple", "ntlm"):
            # A simple bind would send the password in clear; NTLM needs signing that ldap3 cannot provide.
            raise ValueError(
                f"tls.mode: 'none' is not allowed with bind method {self.bind.method}; use ldaps or starttls"
            )
        if not self.domain_controllers and not self.discovery.dns_srv:
            raise ValueError("domain_controllers: give at least one DC, or enable discovery.dns_srv")
        if self.timeout_seconds >= self.interval_seconds:
            raise ValueError("timeout_seconds: must be shorter than interval_seconds")
        return self

    @property
    def effective_base_dn(self) -> str:
        return self.base_dn or ",".join(f"DC={part}" for part in self.domain.split("."))


class RemotingAuth(_Secret):
    """How the exporter authenticates to PowerShell remoting (WinRM)."""

    # kerberos: the Exchange default (needs the gssapi extra; no password uses the credential cache);
    # negotiate/ntlm/credssp: DOMAIN\\user or UPN with a password; basic: only over HTTPS.
    method: Literal["kerberos", "negotiate", "ntlm", "credssp", "basic"] = "kerberos"

    @model_validator(mode="after")
    def _resolve_secret(self) -> RemotingAuth:
        secret = self._read_secret()
        if self.method != "kerberos":
            if not self.user:
                raise ValueError(f"user: required for method {self.method}")
            if secret is None:
                raise ValueError(f"password_file or password_env: required for method {self.method}")
        return self


class RemotingTls(_Model):
    verify: bool = True
    ca_file: ReadableFile | None = None

    _check_ca_file = field_validator("ca_file")(_readable_file)


class ExchangeServerConfig(_Model):
    # The server's Exchange name (SOLO-E16A): what cmdlets take as -Identity / -Server, and the label.
    name: str = Field(min_length=1)
    # Where to connect: its DNS name (checked against the certificate, used for Kerberos), or an address.
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)


class HybridConfig(_Model):
    # The tenant's routing domain (contoso.mail.onmicrosoft.com): every remote mailbox's
    # RemoteRoutingAddress must be in it.
    tenant_routing_domain: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
    # TlsCertificateName the hybrid connectors must carry, as "<I>issuer<S>subject" or just the subject.
    expected_tls_certificate_name: str | None = None
    interval_seconds: Seconds = 900.0
    # Cap on misrouted remote mailboxes listed by name; the count is always exported.
    max_listed_mailboxes: int = Field(default=20, ge=0, le=1000)


class SecurityUpdateConfig(_Model):
    """Reading the security update level: ExSetup.exe's file version, through the server's plain PowerShell
    endpoint (WinRM), since Exchange's restricted runspace cannot run Get-Command and AdminDisplayVersion
    names only the CU. Same account and transport settings as the Exchange endpoint."""

    enabled: bool = False
    path: str = "wsman"
    configuration_name: str = "Microsoft.PowerShell"
    # WinRM's own port: 5985 for http, 5986 for https when not given.
    port: int | None = Field(default=None, ge=1, le=65535)


class _Remoting(_Model):
    """PowerShell remoting (WS-Management) settings shared by the Exchange and the Windows event collectors."""

    scheme: Literal["http", "https"] = "http"
    path: str = "wsman"
    configuration_name: str = "Microsoft.PowerShell"
    auth: RemotingAuth = Field(default_factory=RemotingAuth)
    tls: RemotingTls = Field(default_factory=RemotingTls)
    # auto: message encryption over HTTP with Kerberos/NTLM/Negotiate/CredSSP, TLS over HTTPS.
    encryption: Literal["auto", "always", "never"] = "auto"
    # Plain HTTP without message encryption shows the traffic (and a Basic password) to the network;
    # only for a lab on loopback.
    allow_unencrypted: bool = False
    timeout_seconds: Seconds = 15.0
    max_concurrent_servers: int = Field(default=4, ge=1, le=64)
    bind_retry_after_seconds: Seconds = 1860.0

    @model_validator(mode="after")
    def _transport(self) -> _Remoting:
        if self.auth.method == "basic" and self.encryption == "always":
            raise ValueError("encryption: basic authentication cannot encrypt messages; use https")
        if self.auth.method == "basic" and self.scheme == "http" and self.encryption == "auto":
            raise ValueError(
                "encryption: basic authentication over http cannot encrypt messages; use https "
                "(or encryption never with allow_unencrypted, for a lab)"
            )
        plain = self.scheme == "http" and (self.auth.method == "basic" or self.encryption == "never")
        if plain and not self.allow_unencrypted:
            raise ValueError(
                "scheme: plain HTTP without message encryption (basic auth or encryption never) "
                "is refused; use https, or set allow_unencrypted for a lab"
            )
        return self


class ExchangeConfig(_Remoting):
    organization: str = Field(min_length=1)
    servers: list[ExchangeServerConfig] = Field(min_length=1)
    path: str = "PowerShell"
    configuration_name: str = "Microsoft.Exchange"
    interval_seconds: Seconds = 60.0
    # Cap on queue groups (next hop, delivery type, status) per server; the rest is counted as left out.
    max_queues: int = Field(default=50, ge=1, le=1000)
    hybrid: HybridConfig | None = None
    security_update: SecurityUpdateConfig = Field(default_factory=SecurityUpdateConfig)

    @model_validator(mode="after")
    def _servers(self) -> ExchangeConfig:
        if self.timeout_seconds >= self.interval_seconds:
            raise ValueError("timeout_seconds: must be shorter than interval_seconds")
        names = [s.name.lower() for s in self.servers]
        if len(set(names)) != len(names):
            raise ValueError("servers: a server name appears twice")
        return self

    @property
    def default_port(self) -> int:
        return 443 if self.scheme == "https" else 80


class EventDomainController(_Model):
    # The DC's name: the metrics' label, and where to connect unless host is given.
    name: str = Field(min_length=1)
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)


class EventRemoting(_Remoting):
    """Get-WinEvent on each DC's Security log over PowerShell remoting (an account in Event Log Readers)."""

    domain_controllers: list[EventDomainController] = Field(min_length=1)
    # Events per Get-WinEvent call, and calls per refresh: a backlog is worked off in bounded steps.
    batch_size: int = Field(default=500, ge=1, le=10000)
    max_batches_per_refresh: int = Field(default=4, ge=1, le=100)
    # Where to start on a DC without a bookmark: "end" counts only new events, "beginning" the whole log.
    start_at: Literal["end", "beginning"] = "end"

    @property
    def default_port(self) -> int:
        return 5986 if self.scheme == "https" else 5985


class EventFile(_Model):
    # A glob of local (or mounted) files.
    path: str = Field(min_length=1)
    format: Literal["samba_auth_json", "winlogbeat", "event_xml"]
    # The DC the file belongs to (Samba's log does not name it; the others do).
    dc: str | None = None
    start_at: Literal["end", "beginning"] = "end"
    max_line_bytes: int = Field(default=65536, ge=1024, le=16 * 1024 * 1024)

    @model_validator(mode="after")
    def _dc(self) -> EventFile:
        if self.format == "samba_auth_json" and not self.dc:
            raise ValueError("dc: required for samba_auth_json (the log does not name its DC)")
        return self


class SecurityEventsConfig(_Model):
    name: str = Field(min_length=1)  # a name for this set of sources, e.g. the domain
    winrm: EventRemoting | None = None
    files: list[EventFile] = Field(default_factory=list)
    event_ids: list[int] = Field(default_factory=lambda: [4740, 4625, 4771, 4776])
    interval_seconds: Seconds = 30.0
    # Top sources (caller computer, IP, workstation) over this window, capped; the rest is summed as <other>.
    source_window_seconds: Seconds = 3600.0
    top_sources: int = Field(default=10, ge=0, le=500)

    @model_validator(mode="after")
    def _sources(self) -> SecurityEventsConfig:
        if self.winrm is None and not self.files:
            raise ValueError("winrm or files: give at least one source")
        if self.winrm is not None and self.winrm.timeout_seconds >= self.interval_seconds:
            raise ValueError("winrm: timeout_seconds must be shorter than interval_seconds")
        unknown = set(self.event_ids) - {4740, 4625, 4771, 4776}
        if unknown:
            raise ValueError(f"event_ids: {sorted(unknown)} not read by this exporter (4740, 4625, 4771, 4776)")
        return self


class ExchangeLogsConfig(_Model):
    """Exchange's own log files for one server (local, or a mounted share), followed across rotations."""

    server: str = Field(min_length=1)  # the label: the Exchange server that wrote these logs
    iis: list[str] = Field(default_factory=list)  # globs of the front end's W3C logs (W3SVC1/u_ex*.log)
    smtp_receive: list[str] = Field(default_factory=list)  # ProtocolLog/SmtpReceive/RECV*.LOG
    smtp_send: list[str] = Field(default_factory=list)  # ProtocolLog/SmtpSend/SEND*.LOG
    message_tracking: list[str] = Field(default_factory=list)  # MessageTracking/MSGTRK*.LOG
    # Without a checkpoint: "end" reads only what is written from now on, "beginning" the files' backlog.
    start_at: Literal["end", "beginning"] = "end"
    interval_seconds: Seconds = 15.0
    max_line_bytes: int = Field(default=65536, ge=1024, le=16 * 1024 * 1024)
    # 401s per user and per ActiveSync device over this window, top N each, the rest as <other>.
    window_seconds: Seconds = 3600.0
    top_users: int = Field(default=10, ge=0, le=500)
    top_devices: int = Field(default=20, ge=0, le=500)

    @model_validator(mode="after")
    def _some_logs(self) -> ExchangeLogsConfig:
        if not (self.iis or self.smtp_receive or self.smtp_send or self.message_tracking):
            raise ValueError("iis, smtp_receive, smtp_send or message_tracking: give at least one glob")
        return self


class ImapConfig(_Secret):
    """A mailbox read over IMAP (read-only, headers only): the canary mailbox, a journal mailbox."""

    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)  # 993 for tls, 143 otherwise
    security: Literal["tls", "starttls", "none"] = "tls"
    # Plain IMAP shows the password to the network; only for a lab on loopback.
    allow_unencrypted: bool = False
    mailbox: str = "INBOX"
    verify: bool = True
    ca_file: ReadableFile | None = None
    timeout_seconds: Seconds = 15.0

    _check_ca_file = field_validator("ca_file")(_readable_file)

    @model_validator(mode="after")
    def _login(self) -> ImapConfig:
        secret = self._read_secret()
        if not self.user or secret is None:
            raise ValueError("user and password_file or password_env: required for IMAP")
        if self.security == "none" and not self.allow_unencrypted:
            raise ValueError("security: plain IMAP is refused; use tls or starttls, or set allow_unencrypted for a lab")
        return self

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.security == "tls" else 143)


class _MailArrival(_Model):
    """Where messages arrive to be read: globs of .eml files (a journal copy, an export) and/or an IMAP mailbox."""

    drop_directories: list[str] = Field(default_factory=list)
    imap: ImapConfig | None = None

    @model_validator(mode="after")
    def _somewhere(self) -> _MailArrival:
        if not self.drop_directories and self.imap is None:
            raise ValueError("drop_directories or imap: give at least one")
        return self


class HybridMailConfig(_MailArrival):
    """Messages dropped into directories (a journal copy, an exported canary mailbox): their attribution."""

    name: str = Field(min_length=1)  # the flow, e.g. "onprem-to-exo"
    # More Received headers than this is a loop even when no host repeats.
    hop_limit: int = Field(default=30, ge=2, le=500)
    interval_seconds: Seconds = 30.0


class CanaryConfig(_MailArrival):
    """A canary message through the on-premises SMTP path, looked for where it should arrive."""

    name: str = Field(min_length=1)
    smtp: str = Field(pattern=r"^.+:\d+$")  # host:port where the canary is submitted (on-premises)
    starttls: bool = True
    verify: bool = False
    ca_file: ReadableFile | None = None
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    recipient: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    # Where the canary arrives: drop_directories and/or imap (from _MailArrival).
    interval_seconds: Seconds = 60.0
    timeout_seconds: Seconds = 15.0
    # Not found after this long: lost.
    late_seconds: Seconds = 600.0

    _check_ca_file = field_validator("ca_file")(_readable_file)


class SmtpModule(_Model):
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

    _check_ca_file = field_validator("ca_file")(_readable_file)


class ScheduledProbe(_Model):
    module: str
    target: str = Field(pattern=r"^.+:\d+$")  # host:port


class ProbesConfig(_Model):
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


class StateConfig(_Model):
    # Bookmarks, log checkpoints and their counters; without a path they do not survive a restart.
    path: Path | None = None


class Config(_Model):
    web: WebConfig = Field(default_factory=WebConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    active_directory: list[ActiveDirectoryConfig] = Field(default_factory=list)
    exchange: list[ExchangeConfig] = Field(default_factory=list)
    security_events: list[SecurityEventsConfig] = Field(default_factory=list)
    exchange_logs: list[ExchangeLogsConfig] = Field(default_factory=list)
    probes: ProbesConfig = Field(default_factory=ProbesConfig)
    hybrid_mail: list[HybridMailConfig] = Field(default_factory=list)
    canaries: list[CanaryConfig] = Field(default_factory=list)
    state: StateConfig = Field(default_factory=StateConfig)

    @model_validator(mode="after")
    def _unique_domains(self) -> Config:
        seen: set[str] = set()
        for ad in self.active_directory:
            key = ad.domain.lower()
            if key in seen:
                raise ValueError(f"active_directory: domain {ad.domain} appears twice")
            seen.add(key)
        organizations = [ex.organization.lower() for ex in self.exchange]
        if len(set(organizations)) != len(organizations):
            raise ValueError("exchange: an organization appears twice")
        names = [ev.name.lower() for ev in self.security_events]
        if len(set(names)) != len(names):
            raise ValueError("security_events: a name appears twice")
        servers = [logs.server.lower() for logs in self.exchange_logs]
        if len(set(servers)) != len(servers):
            raise ValueError("exchange_logs: a server appears twice")
        return self

    def secrets(self) -> list[str]:
        """Every secret value in this config, so that error texts can be scrubbed of them."""
        secrets = [ad.bind.password for ad in self.active_directory] + [ex.auth.password for ex in self.exchange]
        secrets += [ev.winrm.auth.password for ev in self.security_events if ev.winrm is not None]
        for imap in [flow.imap for flow in self.hybrid_mail] + [canary.imap for canary in self.canaries]:
            if imap is not None:
                secrets.append(imap.password)
        return [s.get_secret_value() for s in secrets if s is not None]


def format_location(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


_PYDANTIC_PREFIX = re.compile(r"^(Value error|Assertion failed), ")


def _format_errors(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        message = _PYDANTIC_PREFIX.sub("", err["msg"])
        # Model-level validators name their field at the start of the message: fold it into the path.
        head, sep, rest = message.partition(": ")
        if sep and re.fullmatch(r"[a-z_]+( or [a-z_]+)?", head):
            loc = [*loc, head]
            message = rest
        lines.append(f"{format_location(loc)}: {message}")
    return lines


def parse_model(text: str, source: str, model: type[ModelT]) -> ModelT:
    """YAML text to a validated model; every error names its place (file:line:column or the field's path)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [f"{where}: invalid YAML: {problem}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): expected a mapping"])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _format_errors(exc)) from None


def read_model(path: Path, model: type[ModelT]) -> ModelT:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"{path}: {exc.strerror or exc}"]) from None
    return parse_model(text, str(path), model)


def parse_config(text: str, source: str = "<config>") -> Config:
    return parse_model(text, source, Config)


def load_config(path: Path) -> Config:
    return read_model(path, Config)
