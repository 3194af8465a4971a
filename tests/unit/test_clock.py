"""Domain time: a DC's clock carried forward on the monotonic clock, so a step of the host's wall clock moves no
lockout arithmetic (the collector at its LDAP boundary, with a DC whose clock is right and a host's that is not)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from exporter.clock import DomainClock
from exporter.parsers import ad
from tests.helpers import samples, value
from tests.unit.test_ad_collector_metrics import one_dc_collector


class FakeTime:
    def __init__(self, wall: float) -> None:
        self.wall_now, self.mono_now = wall, 1000.0

    def wall(self) -> float:
        return self.wall_now

    def monotonic(self) -> float:
        return self.mono_now

    def advance(self, seconds: float) -> None:
        self.wall_now += seconds
        self.mono_now += seconds


def test_the_host_clock_until_a_dc_is_read_then_the_dc_carried_on_monotonic_time() -> None:
    t = FakeTime(1_800_000_000.0)
    clock = DomainClock(t.wall, t.monotonic)
    assert clock.now() == t.wall_now and clock.host_offset() == 0
    reading = clock.read("dc1", 1_800_000_030.0, started=999.0, ended=1001.0)  # the DC is 30 s ahead
    assert reading.monotonic == 1000.0 and reading.offset == 30.0
    assert clock.now() == t.wall_now  # read, not kept
    clock.keep(reading)
    assert clock.now() == 1_800_000_030.0
    t.advance(60)
    assert clock.now() == 1_800_000_090.0
    for step in (3 * 3600, -6 * 3600):  # the host's clock set 3 h ahead, then 3 h behind: domain time goes on
        t.wall_now += step
        assert clock.now() == 1_800_000_090.0
    assert clock.host_offset() == pytest.approx(1_800_000_090.0 - t.wall_now)


class DcWithClock:
    """One DC at the LDAP boundary: its rootDSE currentTime, and one account locked 10 minutes ago."""

    searches: list[str] = []

    def __init__(self, endpoint: Any, credential: Any, domain: str, guard: Any) -> None:
        self.endpoint = endpoint
        self.lock = threading.Lock()
        self.retry_after = 0.0

    def search(self, base: str, ldap_filter: str, attributes: Any, **_: Any) -> list[Any]:
        now = time.time()
        self.searches.append(ldap_filter)
        if base == "":
            stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d%H%M%S.0Z").encode()
            return [("", {"currentTime": [stamp]})]
        if "lockoutTime>=" in ldap_filter:
            floor = int(ldap_filter.split("lockoutTime>=")[1].rstrip(")"))
            locked_at = ad.unix_to_filetime(now - 600)
            if locked_at < floor:
                return []
            return [
                (
                    "CN=alice,DC=corp,DC=example",
                    {"sAMAccountName": [b"alice"], "lockoutTime": [str(locked_at).encode()]},
                )
            ]
        return []

    def close(self) -> None:
        pass


@pytest.mark.parametrize("host_step", [3 * 3600, -3 * 3600, 0])
async def test_lockout_arithmetic_runs_on_the_dcs_clock_whatever_the_hosts_says(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, host_step: float
) -> None:
    clock = DomainClock(wall=lambda: time.time() + host_step)
    factory: Any = DcWithClock  # the LdapClient's interface, answered in memory
    collector = one_dc_collector(tmp_path, monkeypatch, client_factory=factory, domain_clock=clock)
    DcWithClock.searches = []
    flat = samples(await collector.collect())
    # Locked 10 minutes ago for 30: locked now, and inside the window, by the DC's clock.
    assert value(flat, "ad_accounts_locked", domain="corp.example", dc="dc1.corp.example") == 1
    assert value(flat, "ad_lockouts_in_observation_window", domain="corp.example", dc="dc1.corp.example") == 1
    assert value(flat, "ad_domain_accounts_locked", domain="corp.example") == 1
    offset = value(flat, "ad_dc_clock_offset_seconds", domain="corp.example", dc="dc1.corp.example")
    assert offset == pytest.approx(-host_step, abs=2)
    assert clock.host_offset() == pytest.approx(-host_step, abs=2)
    assert DcWithClock.searches[0] == "(objectClass=*)"  # the clock is read before the searches it bounds
