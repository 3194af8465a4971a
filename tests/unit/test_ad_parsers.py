"""The AD parsers against recorded Samba output and hand-checked values."""

from __future__ import annotations

import math
import struct
import uuid

import pytest

from exporter.parsers import ad
from tests.helpers import recorded_ldap

DAY = 86400.0


@pytest.mark.parametrize(
    ("filetime", "unix"),
    [
        (0, None),  # never
        (0x7FFF_FFFF_FFFF_FFFF, None),  # "never expires"
        (116_444_736_000_000_000, 0.0),  # the Unix epoch
        (133_000_000_000_000_000, 1_655_526_400.0),  # 2022-06-18T04:26:40Z
    ],
)
def test_filetime_to_unix(filetime: int, unix: float | None) -> None:
    assert ad.filetime_to_unix(filetime) == unix


def test_filetime_round_trip() -> None:
    assert ad.filetime_to_unix(ad.unix_to_filetime(1_795_000_000.5)) == pytest.approx(1_795_000_000.5)


@pytest.mark.parametrize(
    ("interval", "seconds"),
    [
        (-18_000_000_000, 1800.0),  # Samba's default 30 minutes
        (-200_000_000, 20.0),
        (-0x8000_0000_0000_0000, math.inf),  # until an administrator unlocks
        (0, 0.0),
    ],
)
def test_interval_to_seconds(interval: int, seconds: float) -> None:
    assert ad.interval_to_seconds(interval) == seconds


def test_domain_policy_from_recorded_domain_root() -> None:
    ((_, attrs),) = recorded_ldap("domain_root")
    policy = ad.parse_domain_policy(attrs)
    assert policy == ad.LockoutPolicy(threshold=3, duration_seconds=15.0, observation_window_seconds=15.0)
    assert policy.enabled


def test_domain_policy_missing_attribute_names_it() -> None:
    with pytest.raises(ad.AttributeValueError, match="lockoutDuration"):
        ad.parse_domain_policy({"lockoutThreshold": [b"3"], "lockOutObservationWindow": [b"-1"]})


def test_topology_from_recorded_sites() -> None:
    ((_, root),) = recorded_ldap("domain_root")
    topology = ad.parse_topology(recorded_ldap("sites"), root, "DC=lab,DC=example")
    assert [(dc.name, dc.host, dc.site) for dc in topology.controllers] == [
        ("DC1", "dc1.lab.example", "Default-First-Site-Name"),
        ("DC2", "dc2.lab.example", "Default-First-Site-Name"),
    ]
    assert topology.pdc is not None and topology.pdc.host == "dc1.lab.example"
    assert all(dc.invocation_id is not None for dc in topology.controllers)


def test_topology_leaves_out_dcs_of_other_domains() -> None:
    entries = [
        (
            "CN=NTDS Settings,CN=X1,CN=Servers,CN=S,CN=Sites,CN=Configuration,DC=corp,DC=example",
            {"objectClass": [b"top", b"nTDSDSA"], "invocationId": [bytes(16)]},
        ),
        (
            "CN=X1,CN=Servers,CN=S,CN=Sites,CN=Configuration,DC=corp,DC=example",
            {
                "objectClass": [b"server"],
                "dNSHostName": [b"x1.child.corp.example"],
                "serverReference": [b"CN=X1,OU=Domain Controllers,DC=child,DC=corp,DC=example"],
            },
        ),
    ]
    assert ad.parse_topology(entries, {}, "DC=corp,DC=example").controllers == ()
    assert len(ad.parse_topology(entries, {}, "DC=child,DC=corp,DC=example").controllers) == 1


def test_lockout_origin_from_recorded_repl_property_metadata() -> None:
    """dave was locked out on DC2 and replicated to DC1: the metadata names DC2's invocationId."""
    ((_, root),) = recorded_ldap("domain_root")
    topology = ad.parse_topology(recorded_ldap("sites"), root, "DC=lab,DC=example")
    ((dn, attrs),) = recorded_ldap("locked")
    parsed = ad.parse_account(dn, attrs)
    assert parsed.errors == ()
    assert parsed.account.user == "dave"
    assert parsed.account.uac_computed == ad.UF_LOCKOUT
    assert ad.resolve_origin(parsed.account.lockout_origin, topology) == "dc2.lab.example"
    entries = ad.parse_repl_property_metadata(attrs["replPropertyMetaData"][0])
    lockout = entries[ad.ATTID_LOCKOUT_TIME]
    # The originating change time is the lockout itself (DSTIME has whole seconds).
    assert lockout.originating_change_time == pytest.approx(parsed.account.lockout_time, abs=1)


def _blob(entries: list[tuple[int, int, uuid.UUID]]) -> bytes:
    out = struct.pack("<IIII", 1, 0, len(entries), 0)
    for attid, dstime, inv in entries:
        out += struct.pack("<IIQ16sQQ", attid, 1, dstime, inv.bytes_le, 10, 11)
    return out


def test_repl_property_metadata_rejects_truncated_blob() -> None:
    blob = _blob([(ad.ATTID_LOCKOUT_TIME, 13_000_000_000, uuid.uuid4())])
    with pytest.raises(ad.AttributeValueError, match="1 entries need 64 bytes"):
        ad.parse_repl_property_metadata(blob[:-1])
    with pytest.raises(ad.AttributeValueError, match="unknown version 2"):
        ad.parse_repl_property_metadata(struct.pack("<IIII", 2, 0, 0, 0))


def test_repl_attr_metadata_xml_form() -> None:
    """The constructed msDS-ReplAttributeMetaData form Windows fills (one XML value per attribute, NUL-ended).

    Built to the documented DS_REPL_ATTR_META_DATA layout: Samba returns this attribute empty.
    """
    inv = uuid.UUID("cf0c73ff-1f92-4260-854b-5a7ee00f2e6a")
    dsa = "CN=NTDS Settings,CN=DC02,CN=Servers,CN=Branch,CN=Sites,CN=Configuration,DC=corp,DC=example"
    values = [
        b"<DS_REPL_ATTR_META_DATA>\n\t<pszAttributeName>badPwdCount</pszAttributeName>\n</DS_REPL_ATTR_META_DATA>\n\x00",
        (
            f"<DS_REPL_ATTR_META_DATA>\n\t<pszAttributeName>lockoutTime</pszAttributeName>\n\t<dwVersion>3</dwVersion>\n"
            f"\t<ftimeLastOriginatingChange>2026-11-27T05:12:52Z</ftimeLastOriginatingChange>\n"
            f"\t<uuidLastOriginatingDsaInvocationID>{inv}</uuidLastOriginatingDsaInvocationID>\n"
            f"\t<pszLastOriginatingDsaDN>{dsa}</pszLastOriginatingDsaDN>\n</DS_REPL_ATTR_META_DATA>\n\x00"
        ).encode(),
    ]
    origin = ad.parse_repl_attr_metadata_xml(values, "lockoutTime")
    assert origin == ad.AttributeOrigin(inv, dsa, None)
    topology = ad.Topology((ad.DomainControllerInfo("DC02", "dc02.corp.example", "Branch", dsa, None),), None)
    # No invocationId known for DC02 here: the DSA DN still names it.
    assert ad.resolve_origin(origin, topology) == "dc02.corp.example"
    with pytest.raises(ad.AttributeValueError, match="invalid XML"):
        ad.parse_repl_attr_metadata_xml([b"<DS_REPL_ATTR_META_DATA>"], "lockoutTime")


def test_account_with_unexpected_values_keeps_the_rest() -> None:
    parsed = ad.parse_account(
        "CN=eve,CN=Users,DC=x",
        {
            "sAMAccountName": [b"eve"],
            "badPwdCount": [b"lots"],
            "badPasswordTime": [b"133000000000000000"],
            "lockoutTime": [b"133000000000000000"],
            "replPropertyMetaData": [b"\x01\x00"],
        },
    )
    assert parsed.account.user == "eve"
    assert parsed.account.bad_pwd_count is None
    assert parsed.account.bad_password_time == 1_655_526_400.0
    assert parsed.account.lockout_time == 1_655_526_400.0
    assert parsed.account.lockout_origin is None
    assert len(parsed.errors) == 2
    assert "badPwdCount: expected an integer" in parsed.errors[0]
    assert "replPropertyMetaData" in parsed.errors[1]


POLICY = ad.LockoutPolicy(threshold=5, duration_seconds=1800, observation_window_seconds=1800)
NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("account", "locked"),
    [
        (ad.Account("a", lockout_time=NOW - 60), True),  # within the duration
        (ad.Account("a", lockout_time=NOW - 1801), False),  # expired, lockoutTime still set
        (ad.Account("a", lockout_time=None), False),
        # The DC's computed bit wins over our arithmetic (it knows the PSO that applies).
        (ad.Account("a", lockout_time=NOW - 1801, uac_computed=ad.UF_LOCKOUT), True),
        (ad.Account("a", lockout_time=NOW - 60, uac_computed=0), False),
    ],
)
def test_is_locked(account: ad.Account, locked: bool) -> None:
    assert ad.is_locked(account, POLICY, NOW) is locked


def test_is_locked_forever_policy() -> None:
    forever = ad.LockoutPolicy(5, math.inf, 1800)
    assert ad.is_locked(ad.Account("a", lockout_time=NOW - 365 * DAY), forever, NOW)


@pytest.mark.parametrize(
    ("account", "counts"),
    [
        (ad.Account("a", bad_pwd_count=2, bad_password_time=NOW - 60), True),
        (ad.Account("a", bad_pwd_count=2, bad_password_time=NOW - 1801), False),  # reset lazily by the DC
        (ad.Account("a", bad_pwd_count=0, bad_password_time=NOW - 60), False),
    ],
)
def test_counts_toward_lockout(account: ad.Account, counts: bool) -> None:
    assert ad.counts_toward_lockout(account, POLICY, NOW) is counts


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 52e, v1db1", "wrong_password"),
        (
            "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 775, v1db1",
            "account_locked_out",
        ),
        ("80090308: LdapErr: DSID-0C09042A, comment: AcceptSecurityContext error, data 533, v3839", "account_disabled"),
        ("80090308: LdapErr: DSID-0C09042A, comment: AcceptSecurityContext error, data 999, v3839", "data_999"),
        ("", "invalid_credentials"),
    ],
)
def test_parse_bind_error(message: str, reason: str) -> None:
    assert ad.parse_bind_error(message) == reason


def test_topology_by_naming_context_when_no_server_reference() -> None:
    entries = [
        (
            "CN=NTDS Settings,CN=X2,CN=Servers,CN=S,CN=Sites,CN=Configuration,DC=corp,DC=example",
            {"objectClass": [b"nTDSDSA"], "msDS-hasMasterNCs": [b"DC=corp, DC=example", b"CN=Schema,CN=Configuration"]},
        ),
    ]
    assert [dc.name for dc in ad.parse_topology(entries, {}, "DC=corp,DC=example").controllers] == ["X2"]
    assert ad.parse_topology(entries, {}, "DC=other,DC=example").controllers == ()


def test_generalized_time() -> None:
    assert ad.generalized_time({"whenCreated": [b"20261202060354.0Z"]}, "whenCreated") == 1796191434.0
    assert ad.generalized_time({"whenCreated": [b"not a time"]}, "whenCreated") is None
    assert ad.generalized_time({}, "whenCreated") is None
