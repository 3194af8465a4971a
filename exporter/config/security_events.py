"""Security events from the DCs: over PowerShell remoting and/or from files."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from exporter.config.base import Problems, Seconds, StrictModel
from exporter.config.remoting import Remoting, RemotingHost


class EventDomainController(RemotingHost):
    """A DC whose Security log is read: ``name`` is its label (dc), and where to connect unless host is given."""


class EventRemoting(Remoting):
    """Get-WinEvent on each DC's Security log over PowerShell remoting (an account in Event Log Readers)."""

    domain_controllers: list[EventDomainController] = Field(min_length=1)
    # Events per Get-WinEvent call, and calls per refresh: a backlog is worked off in bounded steps.
    batch_size: int = Field(default=500, ge=1, le=10000)
    max_batches_per_refresh: int = Field(default=4, ge=1, le=100)
    # Where to start on a DC without a bookmark: "end" counts only new events, "beginning" the whole log.
    start_at: Literal["end", "beginning"] = "end"


class EventFile(StrictModel):
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


class SecurityEventsConfig(StrictModel):
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
        problems = Problems()
        if self.winrm is None and not self.files:
            problems.append("winrm or files: give at least one source")
        if self.winrm is not None and self.winrm.timeout_seconds >= self.interval_seconds:
            problems.append("winrm: timeout_seconds must be shorter than interval_seconds")
        unknown = set(self.event_ids) - {4740, 4625, 4771, 4776}
        if unknown:
            problems.append(f"event_ids: {sorted(unknown)} not read by this exporter (4740, 4625, 4771, 4776)")
        problems.check()
        return self
