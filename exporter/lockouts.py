"""The lockout investigator's service: one account's evidence and verdict for the API, from the state database.

The verdict is computed on demand (``exporter.investigate``); this module does the I/O around it: reading the
account's evidence and the spray counts off the event loop, knowing the Exchange servers' addresses (from the
configuration, and their names resolved in DNS), validating account names and rate-limiting the queries so the
API cannot be used to hammer anything.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from exporter import clock as domain_time
from exporter.collectors.active_directory import ActiveDirectoryCollector
from exporter.config import Config
from exporter.investigate import exchange_addresses, investigate
from exporter.state import Evidence, StateStore, account_key

API_VERSION = 1
# sAMAccountName or UPN: no control characters and none of the characters AD refuses in a logon name.
_ACCOUNT = re.compile(r'^[^\x00-\x1f\x7f"/\\\[\]:;|=,+*?<>]{1,256}$')
SPRAY_WINDOW_SECONDS = 3600.0
_DNS_TTL = 300.0


class InvalidAccount(ValueError):
    """An account name that cannot be one (too long, control or reserved characters)."""


class RateLimited(Exception):
    """Too many investigations at once; ``retry_after`` seconds until the next is allowed."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many requests; retry in {retry_after:.0f}s")
        self.retry_after = retry_after


def valid_account(name: str) -> str:
    text = name.strip()
    if not _ACCOUNT.match(text):
        raise InvalidAccount('not an account name: 1 to 256 characters, none of control characters or "/\\[]:;|=,+*?<>')
    return account_key(text)  # jdoe@contoso.com is looked up as jdoe, as its evidence is kept


@dataclass
class RateLimit:
    """At most ``per_minute`` investigations a minute in all, and one per account every ``per_account`` seconds."""

    per_minute: int = 60
    per_account: float = 2.0
    clock: Callable[[], float] = time.monotonic
    _recent: list[float] = field(default_factory=list)
    _accounts: dict[str, float] = field(default_factory=dict)

    def check(self, account: str) -> None:
        now = self.clock()
        self._recent = [t for t in self._recent if now - t < 60.0]
        last = self._accounts.get(account)
        if last is not None and now - last < self.per_account:
            raise RateLimited(self.per_account - (now - last))
        if len(self._recent) >= self.per_minute:
            raise RateLimited(60.0 - (now - self._recent[0]))
        self._recent.append(now)
        self._accounts[account] = now
        if len(self._accounts) > 10_000:
            self._accounts = {a: t for a, t in self._accounts.items() if now - t < self.per_account}


class LockoutService:
    def __init__(
        self,
        state: StateStore,
        get_config: Callable[[], Config],
        limit: RateLimit | None = None,
        get_directories: Callable[[], Sequence[ActiveDirectoryCollector]] = list,
    ) -> None:
        self.state = state
        self.get_config = get_config
        self.limit = limit or RateLimit()
        self.get_directories = get_directories  # the running AD collectors: their DCs answer the per-DC table
        self._dns: dict[str, tuple[float, list[str]]] = {}

    def _exchange(self) -> dict[str, str]:
        servers = []
        for logs in self.get_config().exchange_logs:
            # The configured addresses; only without them is the server's name asked of DNS.
            servers.append((logs.server, logs.addresses or self._resolve(logs.server)))
        return exchange_addresses(servers)

    def _resolve(self, name: str) -> list[str]:
        cached = self._dns.get(name)
        now = time.monotonic()
        if cached is not None and now - cached[0] < _DNS_TTL:
            return cached[1]
        try:
            addresses = sorted({str(info[4][0]) for info in socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)})
        except (OSError, UnicodeError):
            addresses = []
        self._dns[name] = (now, addresses)
        return addresses

    def _evidence(self, account: str) -> tuple[list[Evidence], dict[str, int], dict[str, str]]:
        rows = self.state.evidence_for(account, limit=self.get_config().state.evidence.max_rows_per_account)
        addresses = {r.detail.get("ip", "") for r in rows} | {r.detail.get("client_ip", "") for r in rows}
        spray = self.state.accounts_per_address(addresses, domain_time.now() - SPRAY_WINDOW_SECONDS)
        return rows, spray, self._exchange()

    def _top_sources(self, accounts: list[str]) -> dict[str, dict[str, object]]:
        exchange = self._exchange()
        out: dict[str, dict[str, object]] = {}
        for account in accounts:
            verdict = investigate(account, self.state.evidence_for(account, limit=200), exchange)
            if verdict.sources:
                out[account] = verdict.sources[0].as_dict()
        return out

    async def overview(self) -> dict[str, Any]:
        """The accounts locked now (origin DC, the DCs holding the lock, the most likely source from the evidence)
        and those one bad password from a lockout, from the AD collectors' last refresh: no query of the DCs."""
        locked, near = [], []
        for directory in self.get_directories():
            accounts, close = directory.lockout_overview()
            locked += accounts
            near += close
        sources = await asyncio.to_thread(self._top_sources, [a.user.lower() for a in locked])
        return {
            "api_version": API_VERSION,
            "locked": [{**a.__dict__, "dcs": list(a.dcs), "source": sources.get(a.user.lower())} for a in locked],
            "near": [n.__dict__ for n in near],
        }

    async def account(self, name: str) -> dict[str, Any] | None:
        """The account's per-DC table, verdict and evidence, or None when neither the evidence nor any DC knows
        it. Raises InvalidAccount, RateLimited."""
        account = valid_account(name)
        directories = list(self.get_directories())
        if not all(d.has_cached(account) for d in directories) or not directories:
            self.limit.check(account)  # only what would ask the DCs (or read the evidence afresh) is limited
        evidence = asyncio.ensure_future(asyncio.to_thread(self._evidence, account))  # while the DCs answer
        live = await asyncio.gather(*(d.account_status(account) for d in directories))
        rows, spray, exchange = await evidence
        tables = [
            {"domain": d.domain, "dcs": [row.as_dict() for row in dcs]}
            for d, dcs in zip(directories, live, strict=True)
        ]
        found = [row for dcs in live for row in dcs if row.found]
        if not rows and not found:
            return None
        changed = max((r.pwd_last_set for r in found if r.pwd_last_set), default=None)
        created = min((r.created for r in found if r.created), default=None)
        locked_on = next((r.orig_lock for r in found if r.locked and r.orig_lock not in ("", "unknown")), "")
        verdict = investigate(
            account, rows, exchange, password_last_set=changed, spray=spray, created=created, locked_on=locked_on
        )
        return {"api_version": API_VERSION, "directory": tables, "password_last_set": changed, **verdict.as_dict()}
