"""The security events collector on real files: bad lines counted and skipped, restarts neither repeat nor lose."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

from exporter.collectors.security_events import SecurityEventsCollector
from exporter.config import parse_config
from exporter.sources.credential_guard import CredentialGuard
from exporter.state import EvidenceLimits, StateStore
from lab.winevent import winlogbeat_line as to_winlogbeat
from tests.helpers import samples, series, value
from tests.unit.test_events_parsers import sample_text

SAMBA = Path(__file__).resolve().parent.parent / "fixtures" / "samba_auth_json.log"
RECORDED_AT = max(
    datetime.fromisoformat(json.loads(line)["timestamp"]).timestamp() for line in SAMBA.read_text().splitlines()
)


def collector(tmp_path: Path, state: StateStore) -> SecurityEventsCollector:
    config = parse_config(f"""
security_events:
  - name: corp.example
    interval_seconds: 30
    files:
      - {{path: "{tmp_path}/beats/*.ndjson", format: winlogbeat, start_at: beginning}}
      - {{path: "{tmp_path}/xml/*.xml", format: event_xml, start_at: beginning}}
      - {{path: "{tmp_path}/samba/auth_json.log", format: samba_auth_json, dc: dc1.corp.example,
          start_at: beginning}}
""").security_events[0]
    # The source window counts by event time: the clock stands just after the recorded Samba events.
    return SecurityEventsCollector(config, CredentialGuard(), state, clock=lambda: RECORDED_AT + 60)


async def test_bad_lines_are_counted_and_skipped_and_restarts_resume(tmp_path: Path) -> None:
    def events_of(name: str) -> list[str]:
        return re.findall(r"<Event[ >].*?</Event>", sample_text(name), re.S)

    kerberos = events_of("4771_mdecrevoisier_kerberos_bruteforce_valid_user.xml")
    ntlm = events_of("4625_4776_mdecrevoisier_openssh_nonexisting_users.xml")
    (tmp_path / "beats").mkdir()
    (tmp_path / "xml").mkdir()
    (tmp_path / "samba").mkdir()
    beats = tmp_path / "beats" / "winlogbeat.ndjson"
    beats.write_text(
        "\n".join(
            [
                to_winlogbeat(kerberos[0]),
                '{"winlog": {"event_id": "4771"',  # cut short
                to_winlogbeat(kerberos[1]),
                "[1, 2, 3]",
                to_winlogbeat(kerberos[2]),
            ]
        )
        + "\n"
    )
    broken = ntlm[1].replace("</EventData>", "</EventDat>")
    (tmp_path / "xml" / "forwarded.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<Events>\n' + "\n".join([ntlm[0], broken, ntlm[2]]) + "\n"
    )
    (tmp_path / "samba" / "auth_json.log").write_text(SAMBA.read_text())
    # The samples are years old: keep their evidence (the default keeps a week).
    state = StateStore(tmp_path / "state.db", EvidenceLimits(retention_seconds=20 * 365 * 86400))

    first = collector(tmp_path, state)
    flat = samples(await first.collect())
    rootdc = {"dc": "rootdc1.offsec.lan"}
    assert (
        value(flat, "ad_security_events_total", event_id="4771", reason="preauth_failed", protocol="kerberos", **rootdc)
        == 3
    )
    # 4625/4776 from fs01: one of the three XML events is broken.
    fs01 = series(flat, "ad_security_events_total", dc="fs01.offsec.lan")
    assert sum(fs01.values()) == 2
    assert (
        value(flat, "ad_exchange_exporter_parse_errors_total", collector="security_events", target="corp.example") == 3
    )
    # Samba's 12 failures; its successes (4624) are not among the configured events.
    dc1 = series(flat, "ad_security_events_total", dc="dc1.corp.example")
    assert sum(dc1.values()) == 12
    assert value(flat, "ad_security_event_source_failures", kind="ip", source="127.0.0.1") == 12
    assert value(flat, "ad_security_event_source_accounts", kind="ip", source="127.0.0.1") == 3
    # Every failure counted is kept as evidence, in the same transaction: 3 + 2 + 12.
    assert state.evidence_stats()[0] == 17
    (kerberos_failure, *_) = state.evidence_for("admin-hacker")
    assert (kerberos_failure.host, kerberos_failure.kind, kerberos_failure.detail["reason"]) == (
        "rootdc1.offsec.lan",
        "4771",
        "preauth_failed",
    )
    assert kerberos_failure.detail["ip"]
    await first.close()

    # More lines, a partial one among them; a new collector on the same state resumes exactly.
    with beats.open("a") as out:
        out.write(to_winlogbeat(kerberos[3]) + "\n" + to_winlogbeat(kerberos[4])[:40])
    second = collector(tmp_path, state)
    flat = samples(await second.collect())
    assert (
        value(flat, "ad_security_events_total", event_id="4771", reason="preauth_failed", protocol="kerberos", **rootdc)
        == 4
    )
    assert sum(series(flat, "ad_security_events_total", dc="dc1.corp.example").values()) == 12
    with beats.open("a") as out:
        out.write(to_winlogbeat(kerberos[4])[40:] + "\n")
    flat = samples(await second.collect())
    assert (
        value(flat, "ad_security_events_total", event_id="4771", reason="preauth_failed", protocol="kerberos", **rootdc)
        == 5
    )
    assert state.evidence_stats()[0] == 19  # the two new failures, nothing again
    await second.close()
    state.close()


async def test_an_unfiltered_security_log_export_is_read_without_errors(tmp_path: Path) -> None:
    # The whole .evtx rendered: 50 x 4768 (not read) beside 2 x 4771.
    unfiltered = sample_text("4768_4771_mdecrevoisier_kerberos_bruteforce_nonexisting_users_unfiltered.xml")
    (tmp_path / "xml").mkdir()
    (tmp_path / "xml" / "security.xml").write_text(unfiltered)
    (tmp_path / "beats").mkdir()
    (tmp_path / "beats" / "winlogbeat.ndjson").write_text(
        "\n".join(to_winlogbeat(x) for x in re.findall(r"<Event[ >].*?</Event>", unfiltered, re.S)) + "\n"
    )
    state = StateStore(tmp_path / "state.db")
    events = collector(tmp_path, state)
    flat = samples(await events.collect())
    kerberos = {"event_id": "4771", "reason": "preauth_failed", "protocol": "kerberos"}
    assert value(flat, "ad_security_events_total", dc="rootdc1.offsec.lan", **kerberos) == 4
    assert sum(series(flat, "ad_security_events_total").values()) == 4
    assert (
        value(flat, "ad_exchange_exporter_parse_errors_total", collector="security_events", target="corp.example") == 0
    )
    assert value(flat, "ad_security_events_not_read_total", path=f"{tmp_path}/xml/*.xml") == 50
    assert value(flat, "ad_security_events_not_read_total", path=f"{tmp_path}/beats/*.ndjson") == 50
    await events.close()
    state.close()
