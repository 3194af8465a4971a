"""PowerShell remoting (WS-Management) settings shared by the Exchange and the Windows event collectors."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from exporter.config.base import Problems, ReadableFile, Seconds, Secret, StrictModel, readable_file


class RemotingAuth(Secret):
    """How the exporter authenticates to PowerShell remoting (WinRM)."""

    # kerberos: the default, what Exchange's /PowerShell takes (user: a principal, svc@CORP.EXAMPLE); the key from
    # a password (password_file/password_env), a keytab_file, a credential_cache, or else the default cache.
    # negotiate/ntlm/credssp: DOMAIN\\user or UPN with a password; basic: only over HTTPS.
    method: Literal["kerberos", "negotiate", "ntlm", "credssp", "basic"] = "kerberos"
    # A keytab with the account's keys (ktpass, samba-tool domain exportkeytab): a new ticket is taken from it for
    # each connection, so nothing expires and no kinit is needed.
    keytab_file: ReadableFile | None = None
    # An existing credential cache kept fresh by something else (k5start, sssd): FILE:/path, KEYRING:..., DIR:...
    credential_cache: str | None = Field(default=None, pattern=r"^[A-Z]+:.+$")
    # The service class of the SPN the exporter asks for (<service>/<host>): HTTP, as Windows' WinRM client does.
    service: str = Field(default="HTTP", pattern=r"^[A-Za-z][A-Za-z0-9-]{0,31}$")

    _check_keytab_file = field_validator("keytab_file")(readable_file)

    @model_validator(mode="after")
    def _resolve_secret(self) -> RemotingAuth:
        secret = self._read_secret()
        if self.method != "kerberos":
            if not self.user:
                raise ValueError(f"user: required for method {self.method}")
            if secret is None:
                raise ValueError(f"password_file or password_env: required for method {self.method}")
            if self.keytab_file or self.credential_cache:
                raise ValueError(f"keytab_file, credential_cache: only for method kerberos, not {self.method}")
            return self
        sources = [
            n
            for n, v in (
                ("a password", secret),
                ("keytab_file", self.keytab_file),
                ("credential_cache", self.credential_cache),
            )
            if v
        ]
        if len(sources) > 1:
            raise ValueError(f"method kerberos takes one key source, not {' and '.join(sources)}")
        if secret is not None and not self.user:
            raise ValueError("user: required with a password (the principal, svc@CORP.EXAMPLE)")
        return self


class RemotingHost(StrictModel):
    """One server or client reached over PowerShell remoting."""

    # The metrics' label, and where to connect unless host is given.
    name: str = Field(min_length=1)
    # Its DNS name: what its certificate names and its Kerberos SPN (<service>/<host>) is derived from.
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    # Connect to this address instead of resolving host (the name stays the SPN's and the certificate's).
    address: str | None = None
    # An explicit SPN, when the name connected to is not the one registered (a load balancer, a CNAME):
    # HTTP/exch01.corp.example.
    spn: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9-]{0,31}/[A-Za-z0-9.-]+(:\d+)?$")


class RemotingTls(StrictModel):
    verify: bool = True
    ca_file: ReadableFile | None = None

    _check_ca_file = field_validator("ca_file")(readable_file)


class Remoting(StrictModel):
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

    @property
    def default_port(self) -> int:
        """WinRM's own ports; Exchange's /PowerShell is on IIS's."""
        return 5986 if self.scheme == "https" else 5985

    @model_validator(mode="after")
    def _transport(self) -> Remoting:
        problems = Problems()
        if self.auth.method == "basic" and self.encryption == "always":
            problems.add("encryption", "basic authentication cannot encrypt messages; use https")
        if self.auth.method == "basic" and self.scheme == "http" and self.encryption == "auto":
            problems.add(
                "encryption",
                "basic authentication over http cannot encrypt messages; use https "
                "(or encryption never with allow_unencrypted, for a lab)",
            )
        plain = self.scheme == "http" and (self.auth.method == "basic" or self.encryption == "never")
        if plain and not self.allow_unencrypted:
            problems.add(
                "scheme",
                "plain HTTP without message encryption (basic auth or encryption never) "
                "is refused; use https, or set allow_unencrypted for a lab",
            )
        problems.check()
        return self
