"""The golden exposition: every collector run once on recorded inputs, encoded as /metrics serves it.

Like node_exporter's collector/fixtures/e2e-output.txt: the AD collector reads the LDAP entries recorded from the
lab's Samba DCs, the Exchange collector the CSS-Exchange CLIXML samples, the security events collector the public
event XML samples and Samba's audit log, the Exchange logs collector IIS, SMTP and message tracking lines, the
hybrid flow message headers, and the canary and a scheduled probe a closed loopback port. The clock is pinned;
durations (which no fixture can pin) are written as 0, the Python version as "X" and the fixtures' folder as
"<fixtures>".

    python -m tests.golden          rewrite tests/fixtures/golden-exposition.txt
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

from exporter.collectors.active_directory import ActiveDirectoryCollector
from exporter.collectors.canary import CanaryCollector
from exporter.collectors.directaccess import DirectAccessCollector
from exporter.collectors.exchange import ExchangeCollector
from exporter.collectors.exchange_logs import ExchangeLogsCollector
from exporter.collectors.hybrid_mail import HybridMailCollector
from exporter.collectors.security_events import SecurityEventsCollector
from exporter.collectors.smtp_probe import ScheduledProbesCollector
from exporter.config import Config
from exporter.parsers import ad
from exporter.registry import Collector, CollectorRegistry
from exporter.sources.credential_guard import CredentialGuard
from exporter.sources.ldap import LdapError, RawEntry
from exporter.sources.winrm import RemotingError
from exporter.state import StateStore
from lab.directaccess import LabDirectAccess
from lab.exchange import recorded_objects
from lab.exchange_logs import IIS_FIELDS, SMTP_FIELDS
from lab.psrp_endpoint import Invocation
from tests.helpers import FIXTURES, recorded_ldap

GOLDEN = FIXTURES / "golden-exposition.txt"
# Five seconds after the recorded lockout of dave (its lockoutTime), inside the lab policy's lockout duration.
LOCKOUT = ad.filetime_to_unix(int(recorded_ldap("locked")[0][1]["lockoutTime"][0])) or 0.0
NOW = LOCKOUT + 5.0


class ReplayLdap:
    """Answers the AD collector's searches from the entries recorded from the lab (tests/fixtures/README.md)."""

    def __init__(self, endpoint: Any, credential: Any, domain: str, guard: Any) -> None:
        self.endpoint = endpoint
        self.lock = threading.Lock()
        self.retry_after = 0.0

    def search(
        self, base: str, ldap_filter: str, attributes: Any, *, scope: str = "subtree", **_: Any
    ) -> list[RawEntry]:
        if base == "":
            return recorded_ldap("rootdse")
        if base.startswith("CN=Sites,"):
            return recorded_ldap("sites")
        if base.startswith("CN=Password Settings Container"):
            raise LdapError("search_failed", "insufficient access")  # as for an account without read there
        if "lockoutTime>=" in ldap_filter:
            return recorded_ldap("locked")
        if "badPwdCount>=1" in ldap_filter:
            return []
        if scope == "base" and base.lower() == "dc=lab,dc=example":
            return recorded_ldap("domain_root")
        return []

    def close(self) -> None:
        pass


_CMDLETS = {
    "Get-ExchangeServer": "E16_Exchange_GetExchangeServer.xml",
    "Get-ServerComponentState": "E16_Exchange_GetServerComponentState.xml",
    "Get-ExchangeCertificate": "E19_Exchange_GetExchangeCertificate.xml",
    "Test-ServiceHealth": "E16_Exchange_TestServiceHealth.xml",
    "Get-MailboxServer": "E16_Exchange_GetMailboxServer.xml",
    "Get-AuthConfig": "E16_Exchange_GetAuthConfig.xml",
    "Get-ExchangeDiagnosticInfo": "E16_Exchange_GetExchangeDiagnosticInfo_EdgeTransportResourceThrottling.xml",
    "Get-ServerMonitoringOverride": "E19_Exchange_GetServerMonitoringOverride.xml",
    "Get-SendConnector": "E19_Exchange_GetSendConnector.xml",
    "Get-ReceiveConnector": "E19_Exchange_GetReceiveConnector.xml",
    "Get-HybridConfiguration": "E19_Exchange_GetHybridConfiguration.xml",
}


class ReplayPsrp:
    """Answers the Exchange collector's cmdlets with the CSS-Exchange CLIXML samples (Get-Queue, Get-ServerHealth,
    Get-MailboxDatabaseCopyStatus and the rest: none, for want of a public recording)."""

    def __init__(self, target: Any, credential: Any, guard: Any, retry_after: float) -> None:
        self.target = target
        self.lock = threading.Lock()

    def run(self, cmdlet: str, parameters: Any = None) -> list[str]:
        sample = _CMDLETS.get(cmdlet)
        return recorded_objects(sample) if sample else []

    def run_pipeline(self, commands: Any, tolerate: Any = ()) -> list[str]:
        return []  # Get-ReceiveConnector | Get-ADPermission: no public recording, so no anonymous rights

    def close(self) -> None:
        pass


class ReplayDirectAccess:
    """Answers the DirectAccess collector's cmdlets with the lab's objects, built to Microsoft's documented
    schemas (no public recording exists), at the pinned time."""

    deployment = LabDirectAccess(now=dt.datetime.fromtimestamp(NOW, dt.UTC))

    def __init__(self, target: Any, credential: Any, guard: Any, retry_after: float) -> None:
        self.host = target.name.upper()
        self.lock = threading.Lock()

    def run(self, cmdlet: str, parameters: Any = None) -> list[str]:
        answer = self.deployment(
            Invocation("Microsoft.PowerShell", self.host, [(cmdlet, False, list((parameters or {}).items()))])
        )
        if answer.error or answer.failure:
            raise RemotingError("cmdlet_error", f"{cmdlet}: {(answer.error or answer.failure or ('',))[0]}")
        return answer.objects

    def close(self) -> None:
        pass


def _iis_line(
    query: str, status: str, sub: str, win32: str, stem: str = "/Microsoft-Server-ActiveSync/default.eas"
) -> str:
    return (
        f"2026-11-27 07:00:01 10.0.0.10 POST {stem} {query} 443 - 203.0.113.7 Apple-iPhone/1 - "
        f"{status} {sub} {win32} 15"
    )


def _write_inputs(root: Path) -> dict[str, Any]:
    """The log lines and messages the file-reading collectors follow."""
    (root / "iis").mkdir()
    query = "User=jdoe&DeviceId=ApplF17XYZ&DeviceType=iPhone&Cmd=Sync"
    (root / "iis" / "u_ex261127.log").write_text(
        "#Software: Microsoft Internet Information Services 10.0\r\n#Version: 1.0\r\n"
        f"#Fields: {IIS_FIELDS}\r\n"
        + "".join(
            line + "\r\n"
            for line in (
                _iis_line(query, "401", "1", "1326"),
                _iis_line(query, "401", "1", "1909"),
                _iis_line("-", "200", "0", "0", "/owa/"),
                _iis_line("User=amy&DeviceId=Andr1&DeviceType=Android&Cmd=Ping", "401", "1", "1330"),
                "2026-11-27 07:00:02 10.0.0.10 GET /owa/ too few fields",
            )
        ),
        encoding="utf-8",
    )
    (root / "smtp").mkdir()
    columns = SMTP_FIELDS.split(",")

    def smtp(session: str, seq: int, event: str, data: str, context: str = "") -> str:
        row = {"date-time": "2026-11-27T07:00:01.000Z", "connector-id": "EX1\\Default Frontend EX1",
               "session-id": session, "sequence-number": str(seq), "local-endpoint": "10.0.0.10:25",
               "remote-endpoint": "203.0.113.9:50000", "event": event, "data": data, "context": context}  # fmt: skip
        return ",".join(row.get(c, "") for c in columns)

    (root / "smtp" / "RECV2026112707-1.LOG").write_text(
        "#Software: Microsoft Exchange Server\r\n#Version: 15.0.0.0\r\n#Log-type: SMTP Receive Protocol Log\r\n"
        f"#Fields: {SMTP_FIELDS}\r\n"
        + "\r\n".join(
            [
                smtp("08DA1", 0, "+", ""),
                smtp("08DA1", 1, ">", "220 EX1.corp.example Microsoft ESMTP MAIL Service ready"),
                smtp("08DA1", 2, "<", "EHLO mail.example.net"),
                smtp("08DA1", 3, ">", "421 4.3.2 Service not active"),
                smtp("08DA1", 4, "-", ""),
            ]
        )
        + "\r\n",
        encoding="utf-8",
    )
    (root / "drop").mkdir()
    for name, entity, auth in (("a", "HybridOnPrem", "Internal"), ("b", "Internet", "Anonymous")):
        (root / "drop" / f"{name}.eml").write_bytes(
            (
                "Received: from EX1.corp.example (10.0.0.10) by BN8NAM11FT004.mail.protection.outlook.com\r\n"
                " (10.13.177.49) with Microsoft SMTP Server; Fri, 27 Nov 2026 07:00:05 +0000\r\n"
                "Received: from client.corp.example (10.0.0.50) by EX1.corp.example\r\n"
                " (10.0.0.10) with Microsoft SMTP Server; Fri, 27 Nov 2026 07:00:01 +0000\r\n"
                f"X-MS-Exchange-CrossTenant-FromEntityHeader: {entity}\r\n"
                "X-MS-Exchange-Organization-AuthSource: EX1.corp.example\r\n"
                f"X-MS-Exchange-Organization-AuthAs: {auth}\r\n"
                f"Message-ID: <{name}@corp.example>\r\nSubject: golden\r\n\r\n"
            ).encode()
        )
    return {"root": root}


def _config(root: Path) -> Config:
    secret = root / "secret"
    secret.write_text("golden")
    winevent = FIXTURES / "winevent"
    return Config.model_validate(
        {
            "state": {"path": str(root / "state.db")},
            "active_directory": [
                {
                    "domain": "lab.example",
                    "domain_controllers": [{"host": "dc1.lab.example"}, {"host": "dc2.lab.example"}],
                    "bind": {"user": "svc@lab.example", "password_file": str(secret)},
                    "watch_accounts": ["svc_sql"],
                }
            ],
            "exchange": [
                {
                    "organization": "contoso",
                    "servers": [{"name": "SOLO-E16A"}],
                    "auth": {"method": "basic", "user": "svc", "password_file": str(secret)},
                    "scheme": "https",
                    "hybrid": {
                        "tenant_routing_domain": "contoso.mail.onmicrosoft.com",
                        "expected_tls_certificate_name": (
                            "<I>CN=GeoTrust TLS RSA CA G1, OU=www.digicert.com, O=DigiCert Inc, C=US"
                            "<S>CN=mail.contoso.com"
                        ),
                    },
                }
            ],
            "security_events": [
                {
                    "name": "lab",
                    "source_window_seconds": 10 * 365 * 86400,  # the samples are years old
                    "files": [
                        {
                            "path": str(winevent / "4625_4776_mdecrevoisier_local_bruteforce.xml"),
                            "format": "event_xml",
                            "start_at": "beginning",
                        },
                        {
                            "path": str(winevent / "4771_mdecrevoisier_kerberos_bruteforce_valid_user.xml"),
                            "format": "event_xml",
                            "start_at": "beginning",
                        },
                        {
                            "path": str(FIXTURES / "samba_auth_json.log"),
                            "format": "samba_auth_json",
                            "dc": "dc1.lab.example",
                            "start_at": "beginning",
                        },
                    ],
                }
            ],
            "exchange_logs": [
                {
                    "server": "EX1",
                    "iis": [str(root / "iis" / "*.log")],
                    "smtp_receive": [str(root / "smtp" / "*.LOG")],
                    "start_at": "beginning",
                }
            ],
            "hybrid_mail": [{"name": "onprem-to-exo", "drop_directories": [str(root / "drop" / "*.eml")]}],
            "canaries": [
                {
                    "name": "hybrid",
                    "smtp": "127.0.0.1:1",  # nothing listens there: the canary fails at submit
                    "starttls": False,
                    "sender": "canary@corp.example",
                    "recipient": "canary@contoso.mail.onmicrosoft.com",
                    "drop_directories": [str(root / "drop" / "none-*.eml")],
                }
            ],
            "directaccess": [
                {
                    "name": "contoso-da",
                    "servers": [{"name": "DA1"}],
                    "clients": [{"name": "LAPTOP-01", "server": "DA1"}],
                    "resolve_name": "intranet.corp.contoso.com",
                    "auth": {"method": "basic", "user": "svc", "password_file": str(secret)},
                    "scheme": "https",
                }
            ],
            "probes": {
                "modules": {"smtp": {"timeout_seconds": 2}},
                "scheduled": [{"module": "smtp", "target": "127.0.0.1:1"}],
                "allowed_targets": ["127.0.0.1:1"],
            },
        }
    )


def _collectors(config: Config, state: StateStore) -> list[Collector]:
    guard = CredentialGuard()
    clock = lambda: NOW  # noqa: E731
    return [
        ActiveDirectoryCollector(config.active_directory[0], guard, clock=clock, client_factory=ReplayLdap),  # type: ignore[arg-type]
        ExchangeCollector(config.exchange[0], guard, clock=clock, client_factory=ReplayPsrp),  # type: ignore[arg-type]
        SecurityEventsCollector(config.security_events[0], guard, state, clock=clock),
        ExchangeLogsCollector(config.exchange_logs[0], state, clock=clock),
        HybridMailCollector(config.hybrid_mail[0], state, clock=clock),
        CanaryCollector(config.canaries[0], clock=clock),
        ScheduledProbesCollector(config.probes),
        DirectAccessCollector(config.directaccess[0], guard, client_factory=ReplayDirectAccess),  # type: ignore[arg-type]
    ]


_DURATION = re.compile(r"^(\S*_duration_seconds(?:\{[^}]*\})?) \S+$", re.M)


def normalise(text: str) -> str:
    text = _DURATION.sub(r"\1 0.0", text)
    text = text.replace(str(FIXTURES), "<fixtures>")  # file sources are labelled with their paths
    return re.sub(r'python_version="[^"]*"', 'python_version="X"', text)


async def _exposition(root: Path) -> str:
    config = _config(root)
    _write_inputs(root)
    state = StateStore(config.state.path)
    registry = CollectorRegistry(_collectors(config, state), clock=lambda: NOW)
    for s in registry.states:
        await registry.refresh_once(s)
        if not s.success:
            raise RuntimeError(f"{s.collector.name} failed on its fixtures: {s.last_error}")
        # Exchange's health in depth refreshes in the background: once it has, the next refresh shows it.
        if isinstance(s.collector, ExchangeCollector) and s.collector.health is not None:
            await s.collector.health.wait()
            await registry.refresh_once(s)
    body = (await registry.exposition.body(openmetrics=False, compress=False)).decode()
    await registry.stop()
    return normalise(body)


def exposition() -> str:
    with tempfile.TemporaryDirectory(prefix="golden-") as tmp:
        return asyncio.run(_exposition(Path(tmp)))


if __name__ == "__main__":
    GOLDEN.write_text(exposition(), encoding="utf-8")
    print(f"wrote {GOLDEN}")
