"""The exporter's own web listener, logging and state."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from exporter.config.base import ReadableFile, Seconds, StrictModel, readable_file


class WebLimits(StrictModel):
    """What one client can hold of the listener (see exporter/web_server.py)."""

    max_connections: int = Field(default=256, ge=4, le=65536)
    header_timeout_seconds: Seconds = 10.0
    idle_timeout_seconds: Seconds = 120.0


class WebConfig(StrictModel):
    listen_address: str = "127.0.0.1:9733"
    limits: WebLimits = Field(default_factory=WebLimits)
    # TLS and basic auth in exporter-toolkit's web config format (see exporter/web_security.py).
    config_file: ReadableFile | None = None
    # Reachable without credentials: they only ever answer OK or not, and kubelets probe them.
    unauthenticated_paths: list[str] = Field(default_factory=lambda: ["/-/healthy", "/-/ready"])

    _check_config_file = field_validator("config_file")(readable_file)

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


class LogConfig(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class EvidenceConfig(StrictModel):
    """How much per-account evidence (failed logons, lockouts, 401s, AUTH failures) is kept for investigations."""

    retention_seconds: Seconds = 7 * 86400.0
    max_rows_per_account: int = Field(default=1000, ge=10, le=100_000)
    max_rows: int = Field(default=200_000, ge=100, le=10_000_000)


class PatchDaysConfig(StrictModel):
    """The patch-day report (exporter/patch_days.py): samples of what is wrong with each Exchange server."""

    sample_interval_seconds: Seconds = 60.0
    # Compared with the samples since a build change: the last one within this long before it.
    before_seconds: Seconds = 6 * 3600.0
    # How long an update runs before its build shows: what was wrong this long before the change counts as before
    # it (setup itself stops services and takes components offline on the way).
    install_seconds: Seconds = 3600.0
    # The "now" of rates (401s, 421s per hour): the newest samples within this long.
    recent_seconds: Seconds = 900.0
    retention_seconds: Seconds = 30 * 86400.0
    max_changes: int = Field(default=50, ge=1, le=1000)


class StateConfig(StrictModel):
    # Bookmarks, log checkpoints and their counters; without a path they do not survive a restart.
    path: Path | None = None
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig)
    patch_days: PatchDaysConfig = Field(default_factory=PatchDaysConfig)
