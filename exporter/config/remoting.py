"""PowerShell remoting (WS-Management) settings shared by the Exchange and the Windows event collectors."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from exporter.config.base import Problems, ReadableFile, Seconds, Secret, StrictModel, readable_file


class RemotingAuth(Secret):
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
