"""The exporter configuration that points at the lab, for the demo and the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lab.exchange import ExchangeLab
from lab.samba import DOMAIN, SERVICE_ACCOUNT, SambaLab


def lab_config(lab: SambaLab | None, *, port: int = 9733, interval: float = 5, timeout: float = 3,
               password_file: Path | None = None, exchange: ExchangeLab | None = None,
               exchange_overrides: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """Only DC1 is configured: DC2 is discovered from its nTDSDSA object and resolved through the lab DNS."""
    config: dict[str, Any] = {"web": {"listen_address": f"127.0.0.1:{port}"}}
    if lab is not None:
        domain: dict[str, Any] = {
            "domain": DOMAIN,
            "domain_controllers": [{"host": lab.dc1.host, "address": lab.dc1.address}],
            "discovery": {"ntds_settings": True, "dns_servers": [lab.dc1.address]},
            "bind": {"method": "simple", "user": f"{SERVICE_ACCOUNT}@{DOMAIN}",
                     "password_file": str(password_file or lab.service_password_file)},
            "tls": {"mode": "ldaps", "ca_file": str(lab.ca_bundle)},
            "interval_seconds": interval,
            "timeout_seconds": timeout,
            "watch_accounts": ["svc_backup", "svc_sql"],
            "top_accounts": 5,
        }
        domain.update(overrides)
        config["active_directory"] = [domain]
    if exchange is not None:
        config["exchange"] = [exchange.config(interval=interval, timeout=timeout, **(exchange_overrides or {}))]
    return config


def write_config(lab: SambaLab | None, path: Path, **kwargs: Any) -> Path:
    path.write_text(yaml.safe_dump(lab_config(lab, **kwargs), sort_keys=False))
    return path
