"""Mail read for the hybrid flow and the canary: IMAP mailboxes and drop directories."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from exporter.config.base import ReadableFile, Seconds, Secret, StrictModel, readable_file


class ImapConfig(Secret):
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

    _check_ca_file = field_validator("ca_file")(readable_file)

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


class MailArrival(StrictModel):
    """Where messages arrive to be read: globs of .eml files (a journal copy, an export) and/or an IMAP mailbox."""

    drop_directories: list[str] = Field(default_factory=list)
    imap: ImapConfig | None = None

    @model_validator(mode="after")
    def _somewhere(self) -> MailArrival:
        if not self.drop_directories and self.imap is None:
            raise ValueError("drop_directories or imap: give at least one")
        return self


class HybridMailConfig(MailArrival):
    """Messages dropped into directories (a journal copy, an exported canary mailbox): their attribution."""

    name: str = Field(min_length=1)  # the flow, e.g. "onprem-to-exo"
    # More Received headers than this is a loop even when no host repeats.
    hop_limit: int = Field(default=30, ge=2, le=500)
    # The on-premises servers whose name may appear as AuthSource (FQDN or short name); any other AuthSource is
    # counted as exchange_online or other, so the label stays bounded (EOP names a new front end per message).
    on_premises_servers: list[str] = Field(default_factory=list, max_length=200)
    interval_seconds: Seconds = 30.0


class CanaryConfig(MailArrival):
    """A canary message through the on-premises SMTP path, looked for where it should arrive."""

    name: str = Field(min_length=1)
    smtp: str = Field(pattern=r"^.+:\d+$")  # host:port where the canary is submitted (on-premises)
    starttls: bool = True
    verify: bool = False
    ca_file: ReadableFile | None = None
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    recipient: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    # Where the canary arrives: drop_directories and/or imap (from MailArrival).
    interval_seconds: Seconds = 60.0
    timeout_seconds: Seconds = 15.0
    # Not found after this long: lost.
    late_seconds: Seconds = 600.0

    _check_ca_file = field_validator("ca_file")(readable_file)
