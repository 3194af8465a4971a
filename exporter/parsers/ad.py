"""Pure parsers for Active Directory lockout data read over LDAP.

Input is what the directory sends, undecoded: attribute name -> list of raw byte values. Nothing here
reads the clock or does I/O; "now" is always passed in.
"""

from __future__ import annotations

import math
import re
import struct
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

RawAttributes = Mapping[str, Sequence[bytes]]
_T = TypeVar("_T")

# FILETIME: 100-ns intervals since 1601-01-01 UTC.
_FILETIME_UNIX_EPOCH = 116_444_736_000_000_000
_FILETIME_NEVER = 0x7FFF_FFFF_FFFF_FFFF
# A large-integer interval of this value means "forever" (lockoutDuration: until an admin unlocks).
_INTERVAL_FOREVER = -0x8000_0000_0000_0000

UF_LOCKOUT = 0x10
ATTID_LOCKOUT_TIME = 0x90296

# sAMAccountType of normal user accounts (SAM_NORMAL_USER_ACCOUNT); indexed, unlike objectClass.
SAM_NORMAL_USER_ACCOUNT = 805306368


class AttributeValueError(ValueError):
    """An attribute held a value of an unexpected form."""

    def __init__(self, attribute: str, detail: str) -> None:
        self.attribute = attribute
        super().__init__(f"{attribute}: {detail}")


def filetime_to_unix(value: int) -> float | None:
    """FILETIME to Unix seconds; 0 and the 'never' value give None."""
    if value <= 0 or value >= _FILETIME_NEVER:
        return None
    return (value - _FILETIME_UNIX_EPOCH) / 10_000_000


def unix_to_filetime(seconds: float) -> int:
    return int(seconds * 10_000_000) + _FILETIME_UNIX_EPOCH


def interval_to_seconds(value: int) -> float:
    """A negative large-integer interval (lockoutDuration, lockOutObservationWindow) in seconds.

    The 'forever' value is +inf. Windows stores these intervals as negative 100-ns counts; a positive
    value is taken at its magnitude, as the DC does.
    """
    if value == _INTERVAL_FOREVER:
        return math.inf
    return abs(value) / 10_000_000


def _single(attrs: RawAttributes, name: str) -> bytes | None:
    values = _get(attrs, name)
    if not values:
        return None
    return values[0]


def _get(attrs: RawAttributes, name: str) -> Sequence[bytes]:
    # LDAP attribute names are case-insensitive; servers may answer in another case.
    if name in attrs:
        return attrs[name]
    lowered = name.lower()
    for key, values in attrs.items():
        if key.lower() == lowered:
            return values
    return ()


def int_attr(attrs: RawAttributes, name: str) -> int | None:
    raw = _single(attrs, name)
    if raw is None:
        return None
    try:
        return int(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise AttributeValueError(name, f"expected an integer, got {raw[:40]!r}") from None


def str_attr(attrs: RawAttributes, name: str) -> str | None:
    raw = _single(attrs, name)
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise AttributeValueError(name, "not valid UTF-8") from None


def generalized_time(attrs: RawAttributes, name: str) -> float | None:
    """A GeneralizedTime attribute ("20261202060354.0Z") as Unix seconds; None when absent or unreadable."""
    raw = _single(attrs, name)
    if raw is None:
        return None
    match = re.match(rb"^(\d{14})(?:[.,]\d+)?Z$", raw.strip())
    if not match:
        return None
    return datetime.strptime(match.group(1).decode(), "%Y%m%d%H%M%S").replace(tzinfo=UTC).timestamp()


def guid_attr(attrs: RawAttributes, name: str) -> uuid.UUID | None:
    raw = _single(attrs, name)
    if raw is None:
        return None
    if len(raw) != 16:
        raise AttributeValueError(name, f"expected a 16-byte GUID, got {len(raw)} bytes")
    return uuid.UUID(bytes_le=raw)


# --- lockout policy -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LockoutPolicy:
    threshold: int
    duration_seconds: float  # inf: locked until an administrator unlocks
    observation_window_seconds: float

    @property
    def enabled(self) -> bool:
        return self.threshold > 0


def parse_domain_policy(attrs: RawAttributes) -> LockoutPolicy:
    """The default domain lockout policy, from the domain root object."""
    threshold = int_attr(attrs, "lockoutThreshold")
    duration = int_attr(attrs, "lockoutDuration")
    window = int_attr(attrs, "lockOutObservationWindow")
    if threshold is None or duration is None or window is None:
        missing = [
            n
            for n, v in (
                ("lockoutThreshold", threshold),
                ("lockoutDuration", duration),
                ("lockOutObservationWindow", window),
            )
            if v is None
        ]
        raise AttributeValueError(missing[0], "missing from the domain root (no read access?)")
    return LockoutPolicy(threshold, interval_to_seconds(duration), interval_to_seconds(window))


@dataclass(frozen=True)
class PasswordSettings:
    """A fine-grained password settings object (PSO)."""

    name: str
    precedence: int
    policy: LockoutPolicy
    applies_to: int


def parse_password_settings(dn: str, attrs: RawAttributes) -> PasswordSettings:
    threshold = int_attr(attrs, "msDS-LockoutThreshold")
    duration = int_attr(attrs, "msDS-LockoutDuration")
    window = int_attr(attrs, "msDS-LockoutObservationWindow")
    precedence = int_attr(attrs, "msDS-PasswordSettingsPrecedence")
    if threshold is None or duration is None or window is None:
        raise AttributeValueError("msDS-LockoutThreshold", f"lockout settings missing on {dn}")
    return PasswordSettings(
        name=rdn_value(dn),
        precedence=precedence if precedence is not None else 0,
        policy=LockoutPolicy(threshold, interval_to_seconds(duration), interval_to_seconds(window)),
        applies_to=len(_get(attrs, "msDS-PSOAppliesTo")),
    )


# --- distinguished names ---------------------------------------------------------------------------------

_RDN_SPLIT = re.compile(r"(?<!\\),")


def dn_components(dn: str) -> list[tuple[str, str]]:
    parts = []
    for rdn in _RDN_SPLIT.split(dn):
        key, _, value = rdn.partition("=")
        parts.append((key.strip().upper(), value.strip().replace("\\,", ",")))
    return parts


def rdn_value(dn: str) -> str:
    return dn_components(dn)[0][1]


def _norm_dn(dn: str) -> str:
    return ",".join(f"{key.lower()}={value.lower()}" for key, value in dn_components(dn))


def _domain_of(dn: str) -> str:
    """The naming context of a DN: its trailing DC= components (a child domain's DN ends in its parent's)."""
    parts = dn_components(dn)
    tail = []
    for key, value in reversed(parts):
        if key != "DC":
            break
        tail.append(f"dc={value.lower()}")
    return ",".join(reversed(tail))


# --- topology: DCs, sites, PDC -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainControllerInfo:
    name: str  # the server object's CN (DC1)
    host: str  # dNSHostName, lower case (dc1.corp.example), "" if the server object has none
    site: str
    ntds_dn: str
    invocation_id: uuid.UUID | None


@dataclass(frozen=True)
class Topology:
    controllers: tuple[DomainControllerInfo, ...]
    pdc_ntds_dn: str | None

    def by_invocation_id(self) -> dict[uuid.UUID, DomainControllerInfo]:
        return {dc.invocation_id: dc for dc in self.controllers if dc.invocation_id is not None}

    def by_ntds_dn(self) -> dict[str, DomainControllerInfo]:
        return {dc.ntds_dn.lower(): dc for dc in self.controllers}

    @property
    def pdc(self) -> DomainControllerInfo | None:
        if self.pdc_ntds_dn is None:
            return None
        return self.by_ntds_dn().get(self.pdc_ntds_dn.lower())


def parse_topology(
    site_entries: Sequence[tuple[str, RawAttributes]],
    domain_root: RawAttributes,
    domain_dn: str,
) -> Topology:
    """DCs of one domain from the nTDSDSA and server objects under CN=Sites.

    A forest's Sites container holds the DCs of every domain; the server object's serverReference
    (pointing into the domain partition) or the nTDSDSA's hasMasterNCs tells which domain each one serves.
    """
    servers: dict[str, RawAttributes] = {}
    dsas: list[tuple[str, RawAttributes]] = []
    for dn, attrs in site_entries:
        classes = {v.decode("ascii", "replace").lower() for v in _get(attrs, "objectClass")}
        if "ntdsdsa" in classes:
            dsas.append((dn, attrs))
        elif "server" in classes:
            servers[dn.lower()] = attrs
    domain_suffix = _norm_dn(domain_dn)
    controllers = []
    for dn, attrs in dsas:
        server_dn = dn.split(",", 1)[1]
        server = servers.get(server_dn.lower(), {})
        ref = (str_attr(server, "serverReference") or "").lower()
        masters = [
            _norm_dn(v.decode("utf-8", "replace"))
            for v in (*_get(attrs, "msDS-hasMasterNCs"), *_get(attrs, "hasMasterNCs"))
        ]
        if ref and _domain_of(ref) != domain_suffix:
            continue
        if not ref and masters and domain_suffix not in masters:
            continue
        components = dn_components(dn)
        # CN=NTDS Settings,CN=<server>,CN=Servers,CN=<site>,CN=Sites,...
        site = components[3][1] if len(components) > 3 else ""
        controllers.append(
            DomainControllerInfo(
                name=components[1][1] if len(components) > 1 else dn,
                host=(str_attr(server, "dNSHostName") or "").lower(),
                site=site,
                ntds_dn=dn,
                invocation_id=guid_attr(attrs, "invocationId"),
            )
        )
    controllers.sort(key=lambda c: c.host or c.name.lower())
    return Topology(tuple(controllers), str_attr(domain_root, "fSMORoleOwner"))


# --- replication metadata: where a lockout originated ----------------------------------------------------


@dataclass(frozen=True)
class ReplMetaEntry:
    attid: int
    version: int
    originating_change_time: float  # Unix seconds
    originating_invocation_id: uuid.UUID
    originating_usn: int
    local_usn: int


_REPL_HEADER = struct.Struct("<IIII")
_REPL_ENTRY = struct.Struct("<IIQ16sQQ")
# DSTIME (seconds since 1601) to Unix seconds
_DSTIME_UNIX_EPOCH = 11_644_473_600


def parse_repl_property_metadata(blob: bytes) -> dict[int, ReplMetaEntry]:
    """replPropertyMetaData (PROPERTY_META_DATA_VECTOR_BLOB, version 1) by attribute id."""
    if len(blob) < _REPL_HEADER.size:
        raise AttributeValueError("replPropertyMetaData", f"{len(blob)} bytes is shorter than its header")
    version, _, count, _ = _REPL_HEADER.unpack_from(blob)
    if version != 1:
        raise AttributeValueError("replPropertyMetaData", f"unknown version {version}")
    expected = _REPL_HEADER.size + count * _REPL_ENTRY.size
    if len(blob) < expected:
        raise AttributeValueError("replPropertyMetaData", f"{count} entries need {expected} bytes, got {len(blob)}")
    entries = {}
    for i in range(count):
        attid, ver, dstime, inv, ousn, lusn = _REPL_ENTRY.unpack_from(blob, _REPL_HEADER.size + i * _REPL_ENTRY.size)
        entries[attid] = ReplMetaEntry(
            attid, ver, float(dstime - _DSTIME_UNIX_EPOCH), uuid.UUID(bytes_le=inv), ousn, lusn
        )
    return entries


@dataclass(frozen=True)
class AttributeOrigin:
    """Where an attribute's current value was written: an invocationId, or an nTDSDSA DN, or both."""

    invocation_id: uuid.UUID | None
    dsa_dn: str | None
    change_time: float | None


def parse_repl_attr_metadata_xml(values: Sequence[bytes], attribute: str) -> AttributeOrigin | None:
    """msDS-ReplAttributeMetaData (one XML document per attribute) for ``attribute``, if present."""
    wanted = attribute.lower()
    for raw in values:
        text = raw.decode("utf-8", "replace").replace("\x00", "").strip()
        try:
            root = ET.fromstring(text)  # noqa: S314 - directory data, no entities or DTDs are resolved
        except ET.ParseError as exc:
            raise AttributeValueError("msDS-ReplAttributeMetaData", f"invalid XML: {exc}") from None
        if (root.findtext("pszAttributeName") or "").lower() != wanted:
            continue
        inv_text = (root.findtext("uuidLastOriginatingDsaInvocationID") or "").strip()
        dsa_dn = (root.findtext("pszLastOriginatingDsaDN") or "").strip() or None
        try:
            inv = uuid.UUID(inv_text) if inv_text else None
        except ValueError:
            raise AttributeValueError("msDS-ReplAttributeMetaData", f"bad invocation id {inv_text!r}") from None
        return AttributeOrigin(inv, dsa_dn, None)
    return None


# --- accounts -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    user: str
    bad_pwd_count: int | None = None
    bad_password_time: float | None = None
    lockout_time: float | None = None
    uac_computed: int | None = None
    lockout_origin: AttributeOrigin | None = None
    resultant_pso: str = ""  # the name of the PSO that applies (msDS-ResultantPSO), "" for the domain policy


@dataclass(frozen=True)
class ParsedAccount:
    account: Account
    errors: tuple[str, ...] = field(default=())


def parse_account(dn: str, attrs: RawAttributes) -> ParsedAccount:
    """One user entry. An attribute with an unexpected value is left out and reported, never fatal."""
    errors: list[str] = []

    def attempt(fn: Callable[[], _T]) -> _T | None:
        try:
            return fn()
        except AttributeValueError as exc:
            errors.append(f"{dn}: {exc}")
            return None

    user = attempt(lambda: str_attr(attrs, "sAMAccountName")) or rdn_value(dn)
    bad_pwd_count = attempt(lambda: int_attr(attrs, "badPwdCount"))
    if bad_pwd_count is not None and bad_pwd_count < 0:
        errors.append(f"{dn}: badPwdCount: negative value {bad_pwd_count}")
        bad_pwd_count = None
    bad_time_raw = attempt(lambda: int_attr(attrs, "badPasswordTime"))
    lockout_raw = attempt(lambda: int_attr(attrs, "lockoutTime"))
    uac = attempt(lambda: int_attr(attrs, "msDS-User-Account-Control-Computed"))
    pso = attempt(lambda: str_attr(attrs, "msDS-ResultantPSO"))
    origin = None
    if lockout_raw:
        origin = attempt(lambda: _lockout_origin(attrs))
    return ParsedAccount(
        Account(
            user=user,
            bad_pwd_count=bad_pwd_count,
            bad_password_time=filetime_to_unix(bad_time_raw) if bad_time_raw is not None else None,
            lockout_time=filetime_to_unix(lockout_raw) if lockout_raw is not None else None,
            uac_computed=uac,
            lockout_origin=origin,
            resultant_pso=rdn_value(pso) if pso else "",
        ),
        tuple(errors),
    )


def _lockout_origin(attrs: RawAttributes) -> AttributeOrigin | None:
    blob = _single(attrs, "replPropertyMetaData")
    if blob is not None:
        entry = parse_repl_property_metadata(blob).get(ATTID_LOCKOUT_TIME)
        if entry is not None:
            return AttributeOrigin(entry.originating_invocation_id, None, entry.originating_change_time)
    xml_values = _get(attrs, "msDS-ReplAttributeMetaData")
    if xml_values:
        return parse_repl_attr_metadata_xml(xml_values, "lockoutTime")
    return None


def is_locked(account: Account, policy: LockoutPolicy, now: float) -> bool:
    """Locked now: the DC's computed UF_LOCKOUT bit where it sent one, else lockoutTime + lockoutDuration > now.

    A non-zero lockoutTime alone is not a lock: it stays set after the lockout expires until the next
    successful logon.
    """
    if account.uac_computed is not None:
        return bool(account.uac_computed & UF_LOCKOUT)
    if account.lockout_time is None:
        return False
    return account.lockout_time + policy.duration_seconds > now


def counts_toward_lockout(account: Account, policy: LockoutPolicy, now: float) -> bool:
    """badPwdCount >= 1 and the last bad password still inside the observation window.

    The DC resets badPwdCount lazily (on the next attempt after the window), so an old non-zero count
    no longer brings the account closer to a lockout.
    """
    if not account.bad_pwd_count or account.bad_password_time is None:
        return False
    return now - account.bad_password_time < policy.observation_window_seconds


def resolve_origin(origin: AttributeOrigin | None, topology: Topology) -> str:
    """The DC (host name, else server name) where a lockout was written; 'unknown' if it cannot be told."""
    if origin is None:
        return "unknown"
    dc = None
    if origin.invocation_id is not None:
        dc = topology.by_invocation_id().get(origin.invocation_id)
    if dc is None and origin.dsa_dn:
        dc = topology.by_ntds_dn().get(origin.dsa_dn.lower())
    if dc is None:
        return "unknown"
    return dc.host or dc.name.lower()


# --- bind errors ------------------------------------------------------------------------------------------

# The "data NNN" sub-status in an AD bind error (AcceptSecurityContext error, data 52e, ...).
BIND_ERROR_REASONS = {
    "525": "no_such_user",
    "52e": "wrong_password",
    "530": "logon_hours",
    "531": "workstation_restriction",
    "532": "password_expired",
    "533": "account_disabled",
    "568": "too_many_sids",
    "701": "account_expired",
    "773": "must_change_password",
    "775": "account_locked_out",
}

_BIND_DATA = re.compile(r"\bdata ([0-9a-fA-F]+)\b")


def parse_bind_error(message: str) -> str:
    """Reason for a refused bind from the DC's diagnostic message; 'invalid_credentials' if not given."""
    match = _BIND_DATA.search(message or "")
    if not match:
        return "invalid_credentials"
    return BIND_ERROR_REASONS.get(match.group(1).lower(), f"data_{match.group(1).lower()}")
