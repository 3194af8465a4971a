"""The AD collector's metric building, fed at its I/O boundary (the LDAP searches) with bad and good entries."""

from __future__ import annotations

import time
from typing import Any

import pytest

from exporter.collectors.active_directory import ActiveDirectoryCollector, DomainState
from exporter.config import Config
from exporter.metrics import OTHER
from exporter.parsers import ad
from exporter.sources.credential_guard import CredentialGuard
from tests.helpers import samples, series, value

NOW = time.time()


def _ft(seconds_ago: float) -> bytes:
    return str(ad.unix_to_filetime(NOW - seconds_ago)).encode()


def one_dc_collector(tmp_path: Any, monkeypatch: Any, **options: Any) -> ActiveDirectoryCollector:
    """A collector of corp.example with one DC, dc1, its policy known (5 bad passwords, 30 minutes);
    ``options``: the collector's own keyword arguments (a client factory, a clock)."""
    secret = tmp_path / "pw"
    secret.write_text("x")
    config = Config.model_validate(
        {
            "active_directory": [
                {
                    "domain": "corp.example",
                    "domain_controllers": [{"host": "dc1.corp.example"}],
                    "bind": {"user": "svc@corp.example", "password_file": str(secret)},
                    "watch_accounts": ["svc_sql"],
                    "top_accounts": 2,
                    "max_locked_accounts": 1,
                }
            ]
        }
    ).active_directory[0]
    c = ActiveDirectoryCollector(config, CredentialGuard(), **options)
    c._state = DomainState(ad.Topology((), None), ad.LockoutPolicy(5, 1800, 1800), [])

    async def targets() -> list[Any]:
        return [c._endpoint("dc1.corp.example", None, None)]

    async def keep_state(_: Any) -> None:
        return None

    monkeypatch.setattr(c, "_targets", targets)
    monkeypatch.setattr(c, "_refresh_domain_state", keep_state)
    return c


@pytest.fixture
def collector(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> ActiveDirectoryCollector:
    return one_dc_collector(tmp_path, monkeypatch)


async def collect_entries(collector: Any, monkeypatch: Any, bad: list[Any], locked: list[Any]) -> Any:
    """One refresh of ``collector`` against one DC whose searches answer ``bad`` and ``locked`` entries."""
    monkeypatch.setattr(collector, "_search_accounts", lambda client: (None, bad, locked))
    return samples(await collector.collect())


async def test_unexpected_values_are_counted_and_skipped(
    collector: ActiveDirectoryCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = [
        ("CN=a,DC=corp,DC=example", {"sAMAccountName": [b"a"], "badPwdCount": [b"3"], "badPasswordTime": [_ft(10)]}),
        ("CN=b,DC=corp,DC=example", {"sAMAccountName": [b"b"], "badPwdCount": [b"two"], "badPasswordTime": [_ft(5)]}),
        ("CN=c,DC=corp,DC=example", {"sAMAccountName": [b"c"], "badPwdCount": [b"2"], "badPasswordTime": [_ft(20)]}),
        ("CN=d,DC=corp,DC=example", {"sAMAccountName": [b"d"], "badPwdCount": [b"1"], "badPasswordTime": [_ft(30)]}),
        ("CN=svc_sql,DC=corp,DC=example", {"sAMAccountName": [b"svc_sql"], "badPwdCount": [b"0"]}),
    ]
    locked = [
        (
            "CN=e,DC=corp,DC=example",
            {
                "sAMAccountName": [b"e"],
                "lockoutTime": [_ft(60)],
                "msDS-User-Account-Control-Computed": [b"16"],
                "replPropertyMetaData": [b"\x00"],
            },
        ),
        ("CN=f,DC=corp,DC=example", {"sAMAccountName": [b"f"], "lockoutTime": [_ft(120)]}),
        ("CN=g,DC=corp,DC=example", {"sAMAccountName": [b"g"], "lockoutTime": [_ft(7200)]}),  # expired
    ]

    flat = await collect_entries(collector, monkeypatch, bad, locked)
    dc = "dc1.corp.example"
    assert (
        value(flat, "ad_exchange_exporter_parse_errors_total", collector="active_directory", target="corp.example") == 2
    )
    # b's count was unreadable: it is left out, everything else stands.
    assert value(flat, "ad_accounts_with_bad_password", domain="corp.example", dc=dc) == 3
    shown = series(flat, "ad_account_bad_passwords", dc=dc)
    users = {dict(k)["user"]: v for k, v in shown.items()}
    assert users == {"svc_sql": 0, "a": 3, "c": 2, OTHER: 1}  # top 2, the watched account, the rest summed
    assert (
        value(
            flat,
            "ad_exchange_exporter_capped_series",
            collector="active_directory",
            target="corp.example",
            family="ad_account_bad_passwords",
        )
        == 1
    )
    # e and f are locked (g expired); the cap of 1 shows the newest and counts the other.
    assert value(flat, "ad_domain_accounts_locked", domain="corp.example") == 2
    assert value(flat, "ad_account_locked", domain="corp.example", user="e", origin_dc="unknown") == 1
    assert not series(flat, "ad_account_locked", user="f")
    assert (
        value(
            flat,
            "ad_exchange_exporter_capped_series",
            collector="active_directory",
            target="corp.example",
            family="ad_account_locked",
        )
        == 1
    )
    assert value(flat, "ad_watched_account_locked", domain="corp.example", user="svc_sql") == 0


async def test_one_bad_password_from_a_lockout_by_the_policy_that_applies(
    collector: ActiveDirectoryCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The domain locks at 5; the "admins" PSO at 3.
    pso = ad.PasswordSettings("admins", 1, ad.LockoutPolicy(3, 1800, 1800), 1)
    collector._state = DomainState(ad.Topology((), None), ad.LockoutPolicy(5, 1800, 1800), [pso])
    admins = [b"CN=admins,CN=Password Settings Container,CN=System,DC=corp,DC=example"]

    def user(name: str, count: int, seconds_ago: float, *extra: tuple[str, list[bytes]]) -> tuple[str, dict[str, Any]]:
        attrs = {
            "sAMAccountName": [name.encode()],
            "badPwdCount": [str(count).encode()],
            "badPasswordTime": [_ft(seconds_ago)],
        }
        return f"CN={name},DC=corp,DC=example", {**attrs, **dict(extra)}

    bad = [
        user("alice", 4, 10),  # domain policy: 4 = 5 - 1
        user("bob", 4, 10, ("msDS-ResultantPSO", admins)),  # the PSO's 3 is already past: it would be locked
        user("carol", 2, 10, ("msDS-ResultantPSO", admins)),  # 2 = 3 - 1
        user("dave", 4, 3600),  # outside the observation window: no longer counts
        user("svc_sql", 4, 5),  # watched
    ]

    flat = await collect_entries(collector, monkeypatch, bad, [])
    assert value(flat, "ad_accounts_near_lockout", domain="corp.example", dc="dc1.corp.example") == 3
    assert value(flat, "ad_watched_account_near_lockout", domain="corp.example", user="svc_sql") == 1
    _, near = collector.lockout_overview()
    assert [(n.user, n.bad_pwd_count, n.threshold) for n in near] == [
        ("alice", 4, 5),
        ("carol", 2, 3),
        ("svc_sql", 4, 5),
    ]
