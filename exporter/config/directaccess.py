"""DirectAccess over PowerShell remoting: the Remote Access servers and a few canary clients."""

from __future__ import annotations

from pydantic import Field, model_validator

from exporter.config.base import Problems, Seconds
from exporter.config.remoting import Remoting, RemotingHost


class DirectAccessServer(RemotingHost):
    """A DirectAccess server: ``name`` is its label, and where to connect unless host is given."""


class DirectAccessClient(RemotingHost):
    """A canary DirectAccess client."""

    # The DirectAccess server this client connects through: its firewall state is compared with the client's.
    server: str = Field(min_length=1)
    # An internal name only the NRPT resolves (through the DirectAccess DNS servers); default: the deployment's.
    resolve_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,253}$")


class DirectAccessConfig(Remoting):
    """Get-RemoteAccessHealth and the rest on each server; Get-DAConnectionStatus and the rest on each client,
    all through the plain PowerShell endpoint (an account in the servers' and clients' Remote Management Users
    and, for Get-RemoteAccessHealth, the servers' local Administrators)."""

    name: str = Field(min_length=1)  # the deployment, for logs and the landing page
    servers: list[DirectAccessServer] = Field(min_length=1)
    clients: list[DirectAccessClient] = Field(default_factory=list)
    resolve_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,253}$")
    interval_seconds: Seconds = 60.0

    @model_validator(mode="after")
    def _hosts(self) -> DirectAccessConfig:
        problems = Problems()
        if self.timeout_seconds >= self.interval_seconds:
            problems.append("timeout_seconds: must be shorter than interval_seconds")
        problems.unique("servers", (s.name for s in self.servers), "a server name")
        problems.unique("clients", (c.name for c in self.clients), "a client name")
        known = {s.name.lower() for s in self.servers}
        for i, client in enumerate(self.clients):
            if client.server.lower() not in known:
                problems.append(f"clients[{i}].server: {client.server!r} is not one of the servers")
        problems.check()
        return self
