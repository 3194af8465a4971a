"""Exchange's own log files for one server."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from exporter.config.base import Seconds, StrictModel


class ExchangeLogsConfig(StrictModel):
    """Exchange's own log files for one server (local, or a mounted share), followed across rotations."""

    server: str = Field(min_length=1)  # the label: the Exchange server that wrote these logs
    # The server's addresses as the DCs see them (4771/4625 IpAddress), so the investigator can follow a
    # failure from a DC to this server's logs; its name is matched as well (and resolved in DNS).
    addresses: list[str] = Field(default_factory=list, max_length=64)
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
