"""The exporter configuration that points at the lab, for the demo and the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lab.directaccess import DirectAccessLab
from lab.exchange import ExchangeLab
from lab.exchange_logs import LogWriter
from lab.samba import DOMAIN, SERVICE_ACCOUNT, SambaLab
from lab.smtp import SmtpLab
from lab.winevent import EventLab


def lab_config(
    lab: SambaLab | None,
    *,
    port: int = 9733,
    interval: float = 5,
    timeout: float = 3,
    password_file: Path | None = None,
    exchange: ExchangeLab | None = None,
    exchange_overrides: dict[str, Any] | None = None,
    events: EventLab | None = None,
    events_overrides: dict[str, Any] | None = None,
    state: Path | None = None,
    logs: LogWriter | None = None,
    sections: dict[str, Any] | None = None,
    web_config_file: Path | None = None,
    directaccess: DirectAccessLab | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Only DC1 is configured: DC2 is discovered from its nTDSDSA object and resolved through the lab DNS.

    Security events come from the Samba DCs' own audit logs (when the Samba lab is given) and from the lab's
    DC event endpoints (``events``)."""
    config: dict[str, Any] = {"web": {"listen_address": f"127.0.0.1:{port}"}}
    if web_config_file is not None:
        config["web"]["config_file"] = str(web_config_file)
    if state is not None:
        # The patch-day report samples as often as the collectors refresh: a lab's update is seconds after the start.
        config["state"] = {"path": str(state), "patch_days": {"sample_interval_seconds": interval}}
    if lab is not None:
        domain: dict[str, Any] = {
            "domain": DOMAIN,
            "domain_controllers": [{"host": lab.dc1.host, "address": lab.dc1.address}],
            "discovery": {"ntds_settings": True, "dns_servers": [lab.dc1.address]},
            "bind": {
                "method": "simple",
                "user": f"{SERVICE_ACCOUNT}@{DOMAIN}",
                "password_file": str(password_file or lab.service_password_file),
            },
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
    if lab is not None or events is not None or events_overrides:
        source: dict[str, Any] = {"name": DOMAIN, "interval_seconds": interval, "top_sources": 5}
        if lab is not None:
            source["files"] = [
                {"path": str(dc.auth_log), "format": "samba_auth_json", "dc": dc.host, "start_at": "beginning"}
                for dc in lab.dcs
            ]
        if events is not None:
            source["winrm"] = events.winrm_config(timeout=timeout)
        source.update(events_overrides or {})
        config["security_events"] = [source]
    if logs is not None:
        config["exchange_logs"] = [
            {
                "server": logs.server,
                "addresses": [logs.address],
                **logs.globs(),
                "start_at": "beginning",
                "interval_seconds": interval,
            }
        ]
    if directaccess is not None:
        config["directaccess"] = [directaccess.config(interval=interval, timeout=timeout)]
    config.update(sections or {})
    return config


def write_config(lab: SambaLab | None, path: Path, **kwargs: Any) -> Path:
    path.write_text(yaml.safe_dump(lab_config(lab, **kwargs), sort_keys=False))
    return path


HYBRID_PROBED = ("onprem", "renewed", "offline")
RELAY_PROBED = ("open_relay", "closed_relay")


def mail_sections(
    smtp: SmtpLab, interval: float, timeout: float, late: float, probe_timeout: float, scheduled: bool
) -> dict[str, Any]:
    """The hybrid mail flow, its canary and the SMTP probe modules (hybrid; relay, for the open-relay test), all on
    the lab's SMTP servers; ``scheduled``: the exporter also runs the probes itself every 30 s."""
    drop = [str(smtp.drop / "*.eml")]
    probes: dict[str, Any] = {
        "modules": {
            "hybrid": {
                "timeout_seconds": probe_timeout,
                "verify": True,
                "ca_file": str(smtp.ca_file),
                "server_name": "mail.contoso.com",
                "expected_tls_certificate_name": "CN=mail.contoso.com, O=Contoso Ltd",
            },
            "relay": {"timeout_seconds": probe_timeout, "relay_test": {"rcpt_to": "relay-canary@example.org"}},
        },
        "allowed_targets": [smtp.target(n) for n in (*HYBRID_PROBED, *RELAY_PROBED)],
    }
    if scheduled:
        probes["scheduled"] = [{"module": "hybrid", "target": smtp.target(n)} for n in HYBRID_PROBED] + [
            {"module": "relay", "target": smtp.target(n)} for n in RELAY_PROBED
        ]
        probes["interval_seconds"] = 30
    return {
        "hybrid_mail": [{"name": "onprem-to-exo", "drop_directories": drop, "interval_seconds": interval}],
        "canaries": [
            {
                "name": "hybrid",
                "smtp": smtp.target("onprem"),
                "sender": "canary@contoso.com",
                "recipient": "canary@contoso.mail.onmicrosoft.com",
                "drop_directories": drop,
                "interval_seconds": interval,
                "timeout_seconds": timeout,
                "late_seconds": late,
            }
        ],
        "probes": probes,
    }
