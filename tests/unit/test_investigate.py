"""The lockout investigator's verdict on the evidence the collectors keep: the phone behind an Exchange server,
a workstation named by the lockout, a stale credential, a spray, and saying what is missing."""

from __future__ import annotations

from exporter.investigate import exchange_addresses, investigate
from exporter.state import Evidence

T0 = 1_795_000_000.0
EXCHANGE = exchange_addresses([("ex1.corp.example", ["127.0.0.20"])])


def dc_failure(t: float, dc: str, ip: str = "", workstation: str = "", kind: str = "4771", **extra: str) -> Evidence:
    detail = {"reason": "preauth_failed", "protocol": "kerberos", "ip": ip, "workstation": workstation, **extra}
    return Evidence("jdoe", t, "security_event", dc, kind, {k: v for k, v in detail.items() if v})


def lockout(t: float, dc: str = "dc1.corp.example", caller: str = "") -> Evidence:
    detail = {"reason": "locked_out", "caller_computer": caller} if caller else {"reason": "locked_out"}
    return Evidence("jdoe", t, "security_event", dc, "4740", detail)


def iis(t: float, status: str, device: str = "ApplF17XYZ", ip: str = "198.51.100.9", count: int = 1) -> Evidence:
    detail = {"protocol": "activesync", "win32_status": status, "device_id": device, "device_type": "iPhone"}
    return Evidence("jdoe", t, "iis", "ex1.corp.example", "401", {**detail, "client_ip": ip, "count": str(count)})


def test_a_phone_behind_exchange_is_the_top_source() -> None:
    rows = [
        dc_failure(T0 + 1, "dc1.corp.example", ip="127.0.0.20"),
        dc_failure(T0 + 2, "dc2.corp.example", ip="127.0.0.20"),
        dc_failure(T0 + 3, "dc1.corp.example", ip="127.0.0.20"),
        iis(T0 + 1, "1326", count=2),
        iis(T0 + 4, "1909"),
        lockout(T0 + 3),
    ]
    verdict = investigate("JDOE", rows, EXCHANGE)
    top = verdict.sources[0]
    assert (top.kind, top.value, top.via, top.client_ip, top.device_type) == (
        "device",
        "ApplF17XYZ",
        "ex1.corp.example",
        "198.51.100.9",
        "iPhone",
    )
    assert top.confidence == "high" and top.failures == 3
    assert any("1326" in line and "1909" in line for line in top.evidence)
    assert verdict.origin_dcs == ("dc1.corp.example", "dc2.corp.example")
    assert any("no caller computer" in m for m in verdict.missing)
    # The Exchange server's own address is not offered as a source of its own: it is the way through.
    assert all(s.value != "127.0.0.20" for s in verdict.sources)
    assert verdict.as_dict()["sources"][0]["value"] == "ApplF17XYZ"  # type: ignore[index]


def test_exchange_without_401s_says_what_is_missing() -> None:
    rows = [dc_failure(T0 + i, "dc1.corp.example", ip="127.0.0.20") for i in range(3)] + [lockout(T0 + 3)]
    verdict = investigate("jdoe", rows, EXCHANGE)
    assert (verdict.sources[0].kind, verdict.sources[0].value) == ("ip", "ex1.corp.example")
    assert any("logged no 401 or SMTP AUTH failure" in m for m in verdict.missing)


def test_a_workstation_named_by_the_lockout() -> None:
    rows = [
        dc_failure(
            T0 + i, "dc2.corp.example", ip="127.0.0.30", workstation="ws01", kind="4776", reason="wrong_password"
        )
        for i in range(4)
    ] + [lockout(T0 + 5, caller="WS01")]
    verdict = investigate("jdoe", rows, EXCHANGE)
    top = verdict.sources[0]
    assert (top.kind, top.value, top.confidence, top.failures) == ("caller_computer", "WS01", "high", 4)
    assert verdict.sources[1].kind == "ip" and verdict.sources[1].value == "127.0.0.30"
    assert not any("no caller computer" in m for m in verdict.missing)


def test_a_device_still_failing_after_the_password_change_is_a_stale_credential() -> None:
    changed = T0 + 100
    rows = [dc_failure(T0 + 200, "dc1.corp.example", ip="127.0.0.20"), iis(T0 + 200, "1326"), lockout(T0 + 210)]
    verdict = investigate("jdoe", rows, EXCHANGE, password_last_set=changed)
    assert verdict.sources[0].stale_credential
    assert any("stale credential" in line for line in verdict.sources[0].evidence)
    before = investigate("jdoe", rows, EXCHANGE, password_last_set=T0 + 300)
    assert not before.sources[0].stale_credential
    # A password set when the account was created is no change: a new account's failures are not stale.
    new = investigate("jdoe", rows, EXCHANGE, password_last_set=changed, created=changed - 1)
    assert not new.sources[0].stale_credential
    # A source failing before the change too was not left behind by it.
    earlier = [dc_failure(T0 + 50, "dc1.corp.example", ip="127.0.0.20"), iis(T0 + 50, "1326"), *rows]
    assert not investigate("jdoe", earlier, EXCHANGE, password_last_set=changed).sources[0].stale_credential


def test_a_401_logged_in_the_second_of_the_change_follows_it() -> None:
    # IIS logs whole seconds: the change at .6 and the phone's 401 logged at the same second.
    rows = [dc_failure(T0 + 100.9, "dc1.corp.example", ip="127.0.0.20"), iis(T0 + 100, "1326"), lockout(T0 + 110)]
    verdict = investigate("jdoe", rows, EXCHANGE, password_last_set=T0 + 100.6, created=T0)
    assert verdict.sources[0].kind == "device" and verdict.sources[0].stale_credential


def test_locked_now_without_a_4740_says_where_to_look() -> None:
    rows = [dc_failure(T0 + i, "dc2.corp.example", ip="127.0.0.30") for i in range(3)]
    verdict = investigate("jdoe", rows, locked_on="dc2.corp.example")
    assert verdict.origin_dcs == ("dc2.corp.example",)
    assert any("written on dc2.corp.example" in m and "PDC emulator" in m for m in verdict.missing)


def test_a_spray_is_named_a_spray() -> None:
    rows = [dc_failure(T0 + i, "dc1.corp.example", ip="203.0.113.66") for i in range(3)]
    verdict = investigate("jdoe", rows, EXCHANGE, spray={"203.0.113.66": 4000})
    assert verdict.sources[0].spray_accounts == 4000
    assert any("password spray" in line for line in verdict.sources[0].evidence)
    assert any("No lockout event" in m for m in verdict.missing)


def test_hostile_values_are_carried_as_data() -> None:
    rows = [dc_failure(T0, "dc1.corp.example", workstation='<script>alert("x")</script>')]
    verdict = investigate("jdoe", rows)
    assert verdict.sources[0].value == '<SCRIPT>ALERT("X")</SCRIPT>'  # escaping is the page's job
