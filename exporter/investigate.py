"""The lockout investigator's verdict: "what is locking this account out?", from the evidence the collectors kept.

It joins what an admin would otherwise stitch by hand, the way the runbook does:

1. the lockout events (4740): a caller computer names the source; a blank one means a non-domain source
   (a phone on ActiveSync, a proxy, a Unix host);
2. the origin DCs' failures (4625, 4771, 4776) by source address and workstation;
3. when that source is an Exchange server, its IIS 401s and SMTP AUTH failures for the account around the
   same minutes, down to the device (DeviceId, type, client address; 1326 then 1909: a wrong password, then
   locked out);
4. a source that keeps failing after the password was last set is a stale credential;
5. a source that failed on many accounts is a password spray, not a forgotten device.

Each source comes with the chain of evidence behind it and a confidence; what is missing is said plainly
rather than guessed. Pure: the evidence, the Exchange servers' addresses and the spray counts come in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from exporter.state import Evidence

EXCHANGE_WINDOW_SECONDS = 300.0  # how far around a DC's failures an Exchange server's 401s are looked for
SPRAY_ACCOUNTS = 10  # a source failing on this many accounts is a spray
_WEIGHT = {"high": 3.0, "medium": 2.0, "low": 1.0}
FAILURE_KINDS = ("4625", "4771", "4776")


@dataclass
class Source:
    kind: str  # caller_computer, ip, workstation, device, smtp_client
    value: str
    via: str = ""  # the Exchange server the failures came through
    failures: int = 0
    first: float = 0.0
    last: float = 0.0
    hosts: set[str] = field(default_factory=set)  # the DCs or servers that logged it
    reasons: set[str] = field(default_factory=set)
    confidence: str = "low"
    evidence: list[str] = field(default_factory=list)
    stale_credential: bool = False
    spray_accounts: int = 0  # the source failed on this many accounts (0: not looked up or just this one)
    device_type: str = ""
    user_agent: str = ""  # the device's client as IIS logged it (OS and mail app version)
    client_ip: str = ""

    def note(self, row: Evidence, count: int = 1) -> None:
        self.failures += count
        first = float(row.detail.get("first_time", row.time))
        self.first = min(self.first, first) if self.first else first
        self.last = max(self.last, row.time)
        self.hosts.add(row.host)
        reason = row.detail.get("reason") or row.detail.get("win32_status")
        if reason:
            self.reasons.add(reason)

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "value": self.value,
            "via": self.via,
            "failures": self.failures,
            "first": self.first,
            "last": self.last,
            "hosts": sorted(self.hosts),
            "reasons": sorted(self.reasons),
            "confidence": self.confidence,
            "stale_credential": self.stale_credential,
            "spray_accounts": self.spray_accounts,
            "device_type": self.device_type,
            "user_agent": self.user_agent,
            "client_ip": self.client_ip,
            "evidence": list(self.evidence),
        }


@dataclass(frozen=True)
class Verdict:
    account: str
    lockouts: tuple[Evidence, ...]  # newest first
    origin_dcs: tuple[str, ...]
    sources: tuple[Source, ...]  # most likely first
    missing: tuple[str, ...]
    timeline: tuple[Evidence, ...]  # all the evidence, newest first

    def as_dict(self) -> dict[str, object]:
        return {
            "account": self.account,
            "lockouts": [
                {"time": e.time, "dc": e.host, "caller_computer": e.detail.get("caller_computer", "")}
                for e in self.lockouts
            ],
            "origin_dcs": list(self.origin_dcs),
            "sources": [s.as_dict() for s in self.sources],
            "missing": list(self.missing),
            "timeline": [
                {"time": e.time, "source": e.source, "host": e.host, "kind": e.kind, "detail": dict(e.detail)}
                for e in self.timeline
            ],
        }


# How each kind of source is named to people (pages, command line).
KINDS = {
    "caller_computer": "caller computer",
    "ip": "address",
    "workstation": "workstation",
    "device": "device",
    "smtp_client": "SMTP client",
}


def utc_time(timestamp: float | None) -> str:
    """'2026-12-02 06:11:05' (UTC), or '-' when there is no time."""
    if not timestamp:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def when(timestamp: float) -> str:
    return f"{utc_time(timestamp)} UTC"


def _exchange_server(value: str, exchange: Mapping[str, str]) -> str:
    """The configured Exchange server an address or workstation name belongs to, or ''."""
    key = value.lower()
    return exchange.get(key) or exchange.get(key.split(".", 1)[0], "")


def investigate(
    account: str,
    rows: Sequence[Evidence],
    exchange: Mapping[str, str] | None = None,
    password_last_set: float | None = None,
    spray: Mapping[str, int] | None = None,
    *,
    created: float | None = None,
    locked_on: str = "",
) -> Verdict:
    """``rows``: the account's evidence (any order). ``exchange``: Exchange servers by address and by name
    (lower case). ``password_last_set``: when the password last changed (pwdLastSet), if known, and ``created``
    when the account was (whenCreated: a password set at creation is no change). ``spray``: per source address,
    on how many accounts it failed. ``locked_on``: the DC a current lock was written on (replication metadata),
    when the per-DC table shows one."""
    exchange = exchange or {}
    spray = spray or {}
    timeline = tuple(sorted(rows, key=lambda e: e.time, reverse=True))
    lockouts = tuple(e for e in timeline if e.kind == "4740")
    failures = [e for e in reversed(timeline) if e.source == "security_event" and e.kind in FAILURE_KINDS]
    missing: list[str] = []
    sources: dict[tuple[str, str], Source] = {}

    def source(kind: str, value: str, via: str = "") -> Source:
        found = sources.get((kind, value))
        if found is None:
            found = sources[(kind, value)] = Source(kind, value, via)
        return found

    # 1. Lockout events: the caller computer, or a non-domain source.
    for lockout in lockouts:
        caller = lockout.detail.get("caller_computer", "")
        if caller:
            s = source("caller_computer", caller.upper())
            s.note(lockout, 0)
            s.confidence = "high"
            s.evidence.append(f"4740 on {lockout.host} at {when(lockout.time)} names caller computer {caller.upper()}")
    if not lockouts and locked_on:
        missing.append(
            f"Locked now (the lockout was written on {locked_on}) but no lockout event (4740) was read: collect the "
            f"Security log of the PDC emulator or of {locked_on} to learn the caller computer"
        )
    elif not lockouts:
        missing.append("No lockout event (4740) for this account in the evidence kept")
    elif not any(e.detail.get("caller_computer") for e in lockouts):
        missing.append(
            f"The 4740 on {lockouts[0].host} has no caller computer: the source is not a domain computer "
            "(a phone on ActiveSync, a proxy, a non-Windows host); the failed logons say where from"
        )

    # 2. The DCs' failures by address and workstation; those from an Exchange server go through it.
    from_exchange: dict[str, list[Evidence]] = {}
    for row in failures:
        ip, workstation, process = (
            row.detail.get("ip", ""),
            row.detail.get("workstation", ""),
            row.detail.get("process", ""),
        )
        server = _exchange_server(ip, exchange) if ip else ""
        server = server or (_exchange_server(workstation, exchange) if workstation else "")
        if not server and "msexchange" in process.lower():
            server = _exchange_server(row.host, exchange) or row.host  # logged on the Exchange server itself
        if server:
            from_exchange.setdefault(server, []).append(row)
            continue
        if ip:
            source("ip", ip).note(row)
        if workstation:
            # The workstation a 4740 named as caller computer is the same machine: one source.
            named = sources.get(("caller_computer", workstation.upper()))
            (named or source("workstation", workstation.upper())).note(row)
        if not ip and not workstation:
            missing.append(f"A {row.kind} on {row.host} at {when(row.time)} carries neither address nor workstation")
    for s in sources.values():
        if s.kind == "caller_computer" and s.failures:
            s.evidence.append(f"and {s.failures} failed logon(s) from it on {', '.join(sorted(s.hosts - {''}))}")
        if s.kind in ("ip", "workstation"):
            s.confidence = "medium" if s.failures >= 2 else "low"
            s.evidence.append(
                f"{s.failures} failed logon(s) from {'address' if s.kind == 'ip' else s.kind} {s.value} "
                f"on {', '.join(sorted(s.hosts))} "
                f"({', '.join(sorted(s.reasons)) or 'no reason given'}), last at {when(s.last)}"
            )

    # 3. Through an Exchange server: its 401s and SMTP AUTH failures for the account in the same minutes.
    for server, dc_rows in sorted(from_exchange.items()):
        start = dc_rows[0].time - EXCHANGE_WINDOW_SECONDS
        end = dc_rows[-1].time + EXCHANGE_WINDOW_SECONDS
        logged = [
            e
            for e in timeline
            if e.source in ("iis", "smtp_auth")
            and server in (e.host, _exchange_server(e.host, exchange))
            and start <= e.time
            and float(e.detail.get("first_time", e.time)) <= end
        ]
        dcs = sorted({r.host for r in dc_rows})
        said = f"{len(dc_rows)} failed logon(s) on {', '.join(dcs)} came from Exchange server {server}"
        if not logged:
            s = source("ip", server, server)
            for r in dc_rows:
                s.note(r)
            s.confidence = "medium"
            s.evidence.append(said)
            missing.append(
                f"Exchange server {server} is the source on the DCs, but it logged no 401 or SMTP AUTH failure for "
                "this account around then: look at its other protocols (IMAP, POP, MAPI, EWS) and logs"
            )
            continue
        for row in reversed(logged):
            count = int(row.detail.get("count", "1"))
            if row.source == "iis":
                device = row.detail.get("device_id", "")
                key = device or f"{row.detail.get('protocol', 'http')}:{row.detail.get('client_ip', '')}"
                s = source("device", key, server)
                s.device_type = row.detail.get("device_type", "")
                s.user_agent = row.detail.get("user_agent", "") or s.user_agent
                s.client_ip = row.detail.get("client_ip", "") or s.client_ip
            else:
                s = source("smtp_client", row.detail.get("client_ip", ""), server)
                s.client_ip = s.value
            s.note(row, count)
        for (kind, _), s in sources.items():
            if s.via != server or kind not in ("device", "smtp_client"):
                continue
            statuses = [r.detail.get("win32_status", "") for r in reversed(logged) if _belongs(r, s)]
            locked_after_wrong = "1326" in statuses and "1909" in statuses[statuses.index("1326") :]
            s.confidence = "high" if locked_after_wrong or kind == "smtp_client" else "medium"
            what = (
                f"device {s.value} ({', '.join(filter(None, (s.device_type or 'type unknown', s.user_agent)))}) "
                f"from {s.client_ip or 'an unknown address'}"
                if kind == "device"
                else f"SMTP client {s.value}"
            )
            s.evidence.append(f"{said}; {server} logged {s.failures} failure(s) for the account from {what}")
            if locked_after_wrong:
                s.evidence.append("it failed with a wrong password (1326), then as locked out (1909)")

    # 4. Stale credentials: failing only since the password was changed (not set at creation); 5. sprays.
    # pwdLastSet within a couple of seconds of whenCreated is the password the account was created with.
    changed = password_last_set if password_last_set and (created is None or password_last_set - created > 2) else None
    for s in sources.values():
        address = s.client_ip or (s.value if s.kind in ("ip", "smtp_client") else "")
        accounts = spray.get(address, 0) if address else 0
        if accounts >= SPRAY_ACCOUNTS:  # many accounts from one address: not this user's forgotten device
            s.spray_accounts = accounts
            s.confidence = "medium" if s.confidence == "high" else s.confidence
            s.evidence.append(f"{address} failed on {accounts} accounts: a password spray, not a forgotten device")
        # IIS logs whole seconds: a failure logged in the second of the change may follow it.
        elif changed and s.kind != "caller_computer" and s.failures and s.first >= math.floor(changed):
            s.stale_credential = True
            s.evidence.append(f"failing only since the password change at {when(changed)}: a stale credential")

    ranked = sorted(
        sources.values(),
        key=lambda s: (-_WEIGHT[s.confidence] * max(s.failures, 1), -s.last, s.kind, s.value),
    )
    # The DC the lock was written on first, then those that logged the lockouts and failures.
    logging_dcs = sorted({e.host for e in lockouts} | {e.host for e in failures})
    origin = tuple(dict.fromkeys([locked_on, *logging_dcs] if locked_on else logging_dcs))
    return Verdict(account.lower(), lockouts, origin, tuple(ranked), tuple(dict.fromkeys(missing)), timeline)


def _belongs(row: Evidence, s: Source) -> bool:
    if row.source == "iis":
        device = row.detail.get("device_id", "")
        key = device or f"{row.detail.get('protocol', 'http')}:{row.detail.get('client_ip', '')}"
        return s.kind == "device" and key == s.value
    return s.kind == "smtp_client" and row.detail.get("client_ip", "") == s.value


def exchange_addresses(servers: Iterable[tuple[str, Iterable[str]]]) -> dict[str, str]:
    """{address or name (lower case): server} for the configured Exchange servers and their addresses."""
    out: dict[str, str] = {}
    for server, addresses in servers:
        name = server.lower()
        out[name] = name
        out.setdefault(name.split(".", 1)[0], name)
        for address in addresses:
            out[address.lower()] = name
    return out
