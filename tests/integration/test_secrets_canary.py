"""No credential ever comes out: a canary secret in every credential field, every way they fail provoked, then every
page, API answer, metric, log line (at debug) and the state database searched for it in every encoding it could
travel in.

The credentials are a real lab account's name with a wrong password (so each is really sent and refused: LDAP
simple bind, Kerberos to the lab KDC for Exchange and the DC event logs, Basic for DirectAccess, IMAP LOGIN to
dovecot, Basic to the exporter's own web endpoint), and a reload of a config that carries one inline.
"""

from __future__ import annotations

import base64
import secrets
import signal
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import bcrypt
import yaml

from lab import free_port
from lab.directaccess import DirectAccessLab
from lab.exchange import ExchangeLab
from lab.imap import ImapLab
from lab.kerberos import LabKerberos
from lab.samba import DOMAIN, REALM, SambaLab
from lab.winevent import EventLab
from tests.helpers import metric
from tests.integration.conftest import WebClient, running_exporter

CANARY_USER = "canary_probe"
PAGES = (
    "/",
    "/metrics",
    "/lockouts",
    f"/lockouts/{CANARY_USER}",
    "/api/v1/lockouts",
    f"/api/v1/lockouts/{CANARY_USER}",
    "/patch-days",
    "/api/v1/patch-days",
    "/-/ready",
)


def canary(field: str) -> str:
    return f"Canary-{field}-{secrets.token_hex(6)}!"


def encodings(user: str, secret: str) -> dict[str, bytes]:
    """Every form a password could leak in: as is, URL-quoted, in a Basic header, base64, UTF-16 (NTLM, CLIXML)."""
    return {
        "plain": secret.encode(),
        "quoted": quote(secret, safe="").encode(),
        "basic": base64.b64encode(f"{user}:{secret}".encode()),
        "base64": base64.b64encode(secret.encode()).rstrip(b"="),
        "utf16": secret.encode("utf-16-le"),
        "json": secret.replace("!", "\\u0021").encode(),
    }


def secret_file(directory: Path, field: str) -> tuple[str, Path]:
    value = canary(field)
    path = directory / f"{field}.password"
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value, path


def test_no_canary_secret_in_any_output(lab: SambaLab, kerberos: LabKerberos, tmp_path: Path) -> None:
    lab.create_user(CANARY_USER)
    canaries: dict[str, tuple[str, str]] = {}  # field -> (user as sent, secret)

    def wrong(field: str, user: str) -> Path:
        value, path = secret_file(tmp_path, field)
        canaries[field] = (user, value)
        return path

    web_password = secrets.token_urlsafe(12)
    web_config = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(web_password.encode(), bcrypt.gensalt(rounds=4)).decode()
    web_config.write_text(yaml.safe_dump({"basic_auth_users": {"prometheus": hashed}}))
    client = WebClient(user="prometheus", password=web_password)
    web_canary = canary("web")
    canaries["web"] = ("prometheus", web_canary)
    kerberos_user = f"{CANARY_USER}@{REALM}"

    with (
        ExchangeLab(tmp_path / "exchange", port=free_port(), kerberos=kerberos) as exchange,
        EventLab(tmp_path / "events", port=free_port(), kerberos=kerberos) as events,
        DirectAccessLab(tmp_path / "directaccess", port=free_port()) as directaccess,
        ImapLab(tmp_path / "imap") as mailbox,
    ):
        remoting_auth = {"method": "kerberos", "user": kerberos_user}
        directaccess_entry = directaccess.config(interval=3, timeout=2)
        da_user = directaccess_entry["auth"]["user"]
        directaccess_entry["auth"]["password_file"] = str(wrong("directaccess", da_user))
        imap = mailbox.config(wrong("imap", "canary"))
        ldap_user = f"{CANARY_USER}@{DOMAIN}"
        with running_exporter(
            lab,
            tmp_path / "exporter",
            client=client,
            interval=3,
            timeout=2,
            bind={"method": "simple", "user": ldap_user, "password_file": str(wrong("ldap", ldap_user))},
            exchange=exchange,
            exchange_overrides={"auth": {**remoting_auth, "password_file": str(wrong("exchange", kerberos_user))}},
            events=events,
            events_overrides={
                "winrm": events.winrm_config(
                    timeout=2, auth={**remoting_auth, "password_file": str(wrong("events", kerberos_user))}
                )
            },
            state=tmp_path / "state.db",
            web_config_file=web_config,
            sections={
                "log": {"level": "debug"},
                "directaccess": [directaccess_entry],
                "hybrid_mail": [{"name": "mailbox", "imap": imap, "interval_seconds": 3}],
            },
        ) as exporter:
            collectors = ("active_directory", "exchange", "security_events", "directaccess", "hybrid_mail")
            text = exporter.wait_for(
                lambda t: all(
                    (metric(t, "ad_exchange_exporter_collector_refreshes_total", collector=name) or 0) >= 2
                    for name in collectors
                ),
                timeout=60,
            )
            assert metric(text, "ad_dc_up", dc=lab.dc1.host) == 0  # every credential refused, as intended
            for server in ("solo-e16a", "solo-e19a"):
                assert metric(text, "exchange_server_up", server=server) == 0
                assert metric(text, "exchange_server_error_reason", server=server, reason="credential_suspended") == 1
            assert metric(text, "directaccess_server_error_reason", server="da1", reason="credential_suspended") == 1
            # The exporter's own endpoint, asked with the canary as the password: refused.
            assert fetch(exporter.port, "/metrics", WebClient(user="prometheus", password=web_canary))[0] == 401
            answers = {path: fetch(exporter.port, path, client)[1] for path in PAGES}
            # A reload of a config with a password written inline: refused, and the refusal does not echo it.
            inline = canary("inline")
            canaries["inline"] = ("svc", inline)
            good = exporter.config.read_text()
            broken = yaml.safe_load(good)
            broken["active_directory"][0]["bind"]["password"] = inline
            exporter.config.write_text(yaml.safe_dump(broken))
            exporter.process.send_signal(signal.SIGHUP)
            exporter.wait_for(lambda t: metric(t, "ad_exchange_exporter_config_last_reload_successful") == 0)
            exporter.config.write_text(good)
            answers["/ after the reload"] = fetch(exporter.port, "/", client)[1]
            logs = exporter.logs().encode()
        state_files = {p.name: p.read_bytes() for p in tmp_path.glob("state.db*")}
        with sqlite3.connect(tmp_path / "state.db") as db:
            dumped = "\n".join(db.iterdump()).encode()

    outputs = {**{f"page {p}": body for p, body in answers.items()}, "log": logs, "state dump": dumped}
    outputs.update({f"state file {name}": data for name, data in state_files.items()})
    assert len(logs) > 2000 and b"DEBUG" in logs  # the log did record the failures at debug
    leaks = [
        f"{field} ({form}) in {where}"
        for field, (user, secret) in canaries.items()
        for form, needle in encodings(user, secret).items()
        for where, data in outputs.items()
        if needle in data
    ]
    assert not leaks, leaks
    # The canaries were really sent: the lab saw the wrong passwords fail.
    assert lab.account(CANARY_USER, lab.dc1)["badPwdCount"] >= 1


def fetch(port: int, path: str, client: WebClient) -> tuple[int, bytes]:
    """Status and body, error answers included."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=client.headers())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, bytes(exc.read())
