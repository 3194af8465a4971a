"""Agentless Prometheus exporter for Active Directory lockouts and Exchange health."""

__version__ = "0.1.0"
