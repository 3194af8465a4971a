"""Active Directory lockouts, per domain controller (LockoutStatus.exe as time series).

Each refresh reads the domain's topology and lockout policy from one DC, then sweeps every DC at once:
the accounts with a bad-password count (badPwdCount is per DC and not replicated) and the accounts with
a recent lockoutTime, with the replication metadata that names the DC where each lockout originated.
Server-side filters keep the cost proportional to the accounts affected, not to all accounts.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import dns.asyncresolver
import dns.exception
from ldap3.utils.conv import escape_filter_chars

from exporter import clock as domain_time
from exporter.config import ActiveDirectoryConfig
from exporter.metrics import CAPPED_SERIES, OTHER, PARSE_ERRORS, Caps, Family, Series
from exporter.parsers import ad
from exporter.registry import Collector, Redactor, TargetStatus
from exporter.sources.credential_guard import CredentialGuard
from exporter.sources.ldap import LdapClient, LdapCredential, LdapEndpoint, LdapError, RawEntry

log = logging.getLogger(__name__)
_T = TypeVar("_T")


# msDS-ResultantPSO: the fine-grained policy that applies, so "one bad password from a lockout" uses its threshold.
BAD_PASSWORD_ATTRIBUTES = ("sAMAccountName", "badPwdCount", "badPasswordTime", "msDS-ResultantPSO")
LOCKOUT_ATTRIBUTES = (
    "sAMAccountName",
    "lockoutTime",
    "msDS-User-Account-Control-Computed",
    "replPropertyMetaData",
    "badPwdCount",
    "badPasswordTime",
)


AD_DC_UP = Family(
    "ad_dc_up",
    "gauge",
    "1 if the DC answered the last LDAP sweep (bind and searches).",
    ("domain", "dc"),
)
AD_DC_ERROR_REASON = Family(
    "ad_dc_error_reason",
    "gauge",
    "1 for the reason the DC did not answer the last sweep: unreachable, timeout, tls, wrong_password, "
    "account_locked_out, bind_suspended (the credential is held back after a refusal), strong_auth_required "
    "(the DC wants TLS or signing), kerberos, ...",
    ("domain", "dc", "reason"),
)
AD_DC_SWEEP_DURATION_SECONDS = Family(
    "ad_dc_sweep_duration_seconds",
    "gauge",
    "Time the DC took to answer the last sweep.",
    ("domain", "dc"),
)
AD_DC_INFO = Family(
    "ad_dc_info",
    "gauge",
    "A domain controller of the domain, with its site.",
    ("domain", "dc", "site"),
)
AD_DC_IS_PDC_EMULATOR = Family(
    "ad_dc_is_pdc_emulator",
    "gauge",
    "1 if the DC holds the PDC emulator role (fSMORoleOwner).",
    ("domain", "dc"),
)
AD_DC_CLOCK_OFFSET_SECONDS = Family(
    "ad_dc_clock_offset_seconds",
    "gauge",
    "The DC's clock (rootDSE currentTime, whole seconds) minus the exporter host's, at the last sweep. DCs more "
    "than 300 s apart fail each other's Kerberos (the default maximum skew); the lockout arithmetic runs on the "
    "PDC emulator's clock, whatever the host's says.",
    ("domain", "dc"),
)
AD_ACCOUNTS_LOCKED = Family(
    "ad_accounts_locked",
    "gauge",
    "Accounts locked now as this DC sees them (lockoutTime + lockoutDuration > now).",
    ("domain", "dc"),
)
AD_ACCOUNTS_WITH_BAD_PASSWORD = Family(
    "ad_accounts_with_bad_password",
    "gauge",
    "Accounts whose badPwdCount on this DC is >= 1 within the observation window.",
    ("domain", "dc"),
)
AD_LOCKOUTS_IN_OBSERVATION_WINDOW = Family(
    "ad_lockouts_in_observation_window",
    "gauge",
    "Accounts this DC says were locked out within the last observation window.",
    ("domain", "dc"),
)
AD_ACCOUNT_BAD_PASSWORDS = Family(
    "ad_account_bad_passwords",
    "gauge",
    f'badPwdCount per DC for watched accounts and the top accounts (cap top_accounts); user="{OTHER}" sums the rest.',
    ("domain", "dc", "user"),
)
AD_ACCOUNT_LAST_BAD_PASSWORD_TIMESTAMP_SECONDS = Family(
    "ad_account_last_bad_password_timestamp_seconds",
    "gauge",
    "badPasswordTime per DC for watched accounts and the top accounts.",
    ("domain", "dc", "user"),
)
AD_LOCKOUT_POLICY_THRESHOLD = Family(
    "ad_lockout_policy_threshold",
    "gauge",
    "Bad passwords before lockout (0: lockout disabled).",
    ("domain",),
)
AD_LOCKOUT_POLICY_DURATION_SECONDS = Family(
    "ad_lockout_policy_duration_seconds",
    "gauge",
    "How long a lockout lasts (+Inf: until an administrator unlocks).",
    ("domain",),
)
AD_LOCKOUT_POLICY_OBSERVATION_WINDOW_SECONDS = Family(
    "ad_lockout_policy_observation_window_seconds",
    "gauge",
    "Time after which badPwdCount starts again from 0.",
    ("domain",),
)
AD_PASSWORD_SETTINGS_LOCKOUT_THRESHOLD = Family(
    "ad_password_settings_lockout_threshold",
    "gauge",
    "Lockout threshold of a fine-grained password settings object.",
    ("domain", "pso"),
)
AD_PASSWORD_SETTINGS_LOCKOUT_DURATION_SECONDS = Family(
    "ad_password_settings_lockout_duration_seconds",
    "gauge",
    "Lockout duration of a fine-grained password settings object.",
    ("domain", "pso"),
)
AD_PASSWORD_SETTINGS_OBSERVATION_WINDOW_SECONDS = Family(
    "ad_password_settings_observation_window_seconds",
    "gauge",
    "Observation window of a fine-grained password settings object.",
    ("domain", "pso"),
)
AD_ACCOUNT_LOCKED = Family(
    "ad_account_locked",
    "gauge",
    "1 per account locked now (cap max_locked_accounts), with the DC the lockout "
    "originated on (replication metadata of lockoutTime, like LockoutStatus' "
    "Orig Lock).",
    ("domain", "user", "origin_dc"),
)
AD_ACCOUNT_LOCKOUT_TIMESTAMP_SECONDS = Family(
    "ad_account_lockout_timestamp_seconds",
    "gauge",
    "lockoutTime of each account locked now (cap max_locked_accounts).",
    ("domain", "user", "origin_dc"),
)
AD_DOMAIN_ACCOUNTS_LOCKED = Family(
    "ad_domain_accounts_locked",
    "gauge",
    "Accounts locked now on at least one DC (not capped).",
    ("domain",),
)
AD_WATCHED_ACCOUNT_LOCKED = Family(
    "ad_watched_account_locked",
    "gauge",
    "1 if a watched (service) account is locked now on any DC that answered.",
    ("domain", "user"),
)
AD_ACCOUNTS_NEAR_LOCKOUT = Family(
    "ad_accounts_near_lockout",
    "gauge",
    "Accounts one bad password from a lockout on the DC: badPwdCount = threshold - 1 inside the observation window, "
    "by the policy that applies to each (PSO included).",
    ("domain", "dc"),
)
AD_WATCHED_ACCOUNT_NEAR_LOCKOUT = Family(
    "ad_watched_account_near_lockout",
    "gauge",
    "1 if a watched (service) account is one bad password from a lockout on any DC that answered.",
    ("domain", "user"),
)
AD_ACCOUNT_LOCKOUTS_TOTAL = Family(
    "ad_account_lockouts_total",
    "counter",
    "Lockouts first seen by the exporter, by the DC they originated on.",
    ("domain", "origin_dc"),
)


@dataclass
class DcSweep:
    """What one DC answered in one refresh."""

    dc: str
    up: bool
    duration: float
    reason: str = ""
    detail: str = ""
    bad_password: list[ad.Account] = field(default_factory=list)
    lockouts: list[ad.Account] = field(default_factory=list)
    parse_errors: list[str] = field(default_factory=list)
    clock: domain_time.Reading | None = None  # the DC's rootDSE currentTime, read at the start of the sweep


# What the investigator's per-DC table needs of one account (LockoutStatus.exe's columns and the effective policy).
ACCOUNT_STATUS_ATTRIBUTES = (*LOCKOUT_ATTRIBUTES, "pwdLastSet", "whenCreated", "msDS-ResultantPSO")
ACCOUNT_STATUS_CACHE_SECONDS = 10.0  # a page reload does not ask the DCs again


@dataclass(frozen=True)
class DcAccountStatus:
    """One DC's view of one account, asked for on demand."""

    dc: str
    site: str
    pdc: bool
    up: bool
    error: str = ""
    found: bool = False
    user: str = ""
    locked: bool = False
    bad_pwd_count: int | None = None
    last_bad_password: float | None = None
    pwd_last_set: float | None = None
    created: float | None = None
    lockout_time: float | None = None
    orig_lock: str = ""  # the DC the lockout was written on ("" when not locked)
    lockout_threshold: int | None = None  # the effective policy (PSO included)
    policy: str = ""  # "domain" or the PSO's name

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class DomainState:
    topology: ad.Topology | None = None
    policy: ad.LockoutPolicy | None = None
    password_settings: list[ad.PasswordSettings] = field(default_factory=list)
    topology_error: str = ""


class ActiveDirectoryCollector(Collector):
    name = "active_directory"
    families = (
        AD_DC_UP,
        AD_DC_ERROR_REASON,
        AD_DC_SWEEP_DURATION_SECONDS,
        AD_DC_INFO,
        AD_DC_IS_PDC_EMULATOR,
        AD_DC_CLOCK_OFFSET_SECONDS,
        AD_LOCKOUT_POLICY_THRESHOLD,
        AD_LOCKOUT_POLICY_DURATION_SECONDS,
        AD_LOCKOUT_POLICY_OBSERVATION_WINDOW_SECONDS,
        AD_PASSWORD_SETTINGS_LOCKOUT_THRESHOLD,
        AD_PASSWORD_SETTINGS_LOCKOUT_DURATION_SECONDS,
        AD_PASSWORD_SETTINGS_OBSERVATION_WINDOW_SECONDS,
        AD_ACCOUNTS_LOCKED,
        AD_ACCOUNTS_WITH_BAD_PASSWORD,
        AD_LOCKOUTS_IN_OBSERVATION_WINDOW,
        AD_ACCOUNT_LOCKED,
        AD_ACCOUNT_LOCKOUT_TIMESTAMP_SECONDS,
        AD_DOMAIN_ACCOUNTS_LOCKED,
        AD_WATCHED_ACCOUNT_LOCKED,
        AD_ACCOUNTS_NEAR_LOCKOUT,
        AD_WATCHED_ACCOUNT_NEAR_LOCKOUT,
        AD_ACCOUNT_LOCKOUTS_TOTAL,
        AD_ACCOUNT_BAD_PASSWORDS,
        AD_ACCOUNT_LAST_BAD_PASSWORD_TIMESTAMP_SECONDS,
        CAPPED_SERIES,
        PARSE_ERRORS,
    )
    wait_on_close = False  # a DC that stopped answering must not hold up a reload

    def __init__(
        self,
        config: ActiveDirectoryConfig,
        guard: CredentialGuard,
        redact: Redactor | None = None,
        clock: Callable[[], float] | None = None,
        client_factory: Callable[[LdapEndpoint, LdapCredential, str, CredentialGuard], LdapClient] = LdapClient,
        domain_clock: domain_time.DomainClock = domain_time.DOMAIN_CLOCK,
    ) -> None:
        # The registry's timeout is a backstop; each DC has its own, shorter deadline.
        super().__init__(
            config.domain.lower(),
            config.interval_seconds,
            timeout=min(config.interval_seconds, config.timeout_seconds * 2 + 1),
            concurrency=config.max_concurrent_dcs,
            error=LdapError,
        )
        self.config = config
        self.guard = guard
        self.redact = redact or Redactor()
        self.domain_clock = domain_clock  # set from the DCs' clocks at each refresh
        self.clock = clock or domain_clock.now
        # The I/O boundary: LdapClient, or a replay of recorded entries (the golden exposition test).
        self.client_factory = client_factory
        self.domain = config.domain.lower()
        self.base_dn = config.effective_base_dn
        self.credential = LdapCredential(
            method=config.bind.method,
            user=config.bind.user,
            password=config.bind.password,
            keytab=config.bind.keytab_file,
        )
        self._clients: dict[str, LdapClient] = {}
        self._state = DomainState()
        self._seen_lockouts: set[tuple[str, int]] | None = None
        self._lockouts_total: dict[str, int] = {}
        self._parse_errors_total = 0
        self._last_sweeps: list[DcSweep] = []
        self._known_endpoints: list[LdapEndpoint] = []
        self._account_cache: dict[str, tuple[float, list[DcAccountStatus]]] = {}

    # --- targets -----------------------------------------------------------------------------------------

    def _endpoint(self, host: str, address: str | None, port: int | None) -> LdapEndpoint:
        tls = self.config.tls
        default_port = 636 if tls.mode == "ldaps" else 389
        return LdapEndpoint(
            host=host.lower(),
            address=address or host,
            port=port or default_port,
            tls_mode=tls.mode,
            verify=tls.verify,
            ca_file=tls.ca_file,
            timeout=self.config.timeout_seconds,
        )

    def _client(self, endpoint: LdapEndpoint) -> LdapClient:
        client = self._clients.get(endpoint.host)
        if client is None or client.endpoint != endpoint:
            if client is not None:
                client.close()
            client = self.client_factory(endpoint, self.credential, self.domain, self.guard)
            self._clients[endpoint.host] = client
        return client

    async def _targets(self) -> list[LdapEndpoint]:
        """Configured DCs, then those discovered by DNS SRV and in the Configuration partition."""
        endpoints = {
            dc.host.lower(): self._endpoint(dc.host, dc.address, dc.port) for dc in self.config.domain_controllers
        }
        discovery = self.config.discovery
        if discovery.dns_srv:
            for host, port in await self._srv_lookup():
                endpoints.setdefault(host, self._endpoint(host, None, None if port in (389, 636) else port))
        topology = self._state.topology
        if discovery.ntds_settings and topology is not None:
            for dc in topology.controllers:
                if dc.host and dc.host not in endpoints:
                    endpoints[dc.host] = self._endpoint(dc.host, None, None)
        # Discovered DCs are connected to by name; resolve through the configured DNS servers if any.
        if discovery.dns_servers:
            configured = {dc.host.lower() for dc in self.config.domain_controllers}
            for host, ep in list(endpoints.items()):
                if host not in configured:
                    address = await self._resolve(host)
                    if address:
                        endpoints[host] = self._endpoint(host, address, ep.port if ep.port not in (389, 636) else None)
        return list(endpoints.values())

    def _resolver(self) -> dns.asyncresolver.Resolver:
        resolver = dns.asyncresolver.Resolver(configure=not self.config.discovery.dns_servers)
        if self.config.discovery.dns_servers:
            resolver.nameservers = list(self.config.discovery.dns_servers)
        resolver.lifetime = self.config.timeout_seconds
        return resolver

    async def _srv_lookup(self) -> list[tuple[str, int]]:
        try:
            answer = await self._resolver().resolve(f"_ldap._tcp.dc._msdcs.{self.domain}", "SRV")
        except dns.exception.DNSException as exc:
            log.warning("%s: DNS SRV discovery failed: %s", self.domain, exc)
            return []
        return [(str(r.target).rstrip(".").lower(), int(r.port)) for r in answer]

    async def _resolve(self, host: str) -> str | None:
        try:
            answer = await self._resolver().resolve(host, "A")
        except dns.exception.DNSException:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
            except OSError:
                return None
            return str(infos[0][4][0]) if infos else None
        return str(answer[0]) if len(answer) else None

    # --- one refresh -------------------------------------------------------------------------------------

    async def collect(self) -> list[Series]:
        # The topology is read through the DCs known from the last refresh; then the targets are worked
        # out once, since the topology may have just named DCs we did not know.
        await self._refresh_domain_state(self._known_endpoints or await self._targets())
        endpoints = await self._targets()
        self._known_endpoints = endpoints
        policy = self._state.policy
        if policy is not None:
            for client in self._clients.values():
                client.retry_after = max(
                    self.config.bind_retry_after_seconds, _finite(policy.observation_window_seconds) + 60
                )
        sweeps = await asyncio.gather(*(self._sweep(ep) for ep in endpoints))
        self._last_sweeps = list(sweeps)
        self._set_domain_clock(sweeps)
        now = self.clock()
        for sweep in sweeps:
            self._parse_errors_total += len(sweep.parse_errors)
            for error in sweep.parse_errors[:5]:
                log.warning("%s: skipped unexpected value: %s", self.domain, error)
        return self._metrics(sweeps, now)

    async def _refresh_domain_state(self, endpoints: Sequence[LdapEndpoint]) -> None:
        """Topology, PDC and policy, from the PDC if known, else the first DC that answers."""
        pdc = self._state.topology.pdc if self._state.topology else None
        ordered = sorted(endpoints, key=lambda ep: 0 if pdc and ep.host == pdc.host else 1)
        errors = []
        for ep in ordered:
            client = self._client(ep)
            try:
                state = await self._on_dc(client, self._read_domain_state, client)
            except LdapError as exc:
                errors.append(f"{ep.host}: {exc}")
                continue
            except Exception as exc:  # one DC's surprise must not stop the others
                log.exception("%s: reading the domain state from %s failed", self.domain, ep.host)
                errors.append(f"{ep.host}: {type(exc).__name__}: {exc}")
                continue
            self._state = state
            return
        # Keep the last known topology and policy: DCs and policies rarely change.
        self._state.topology_error = self.redact("; ".join(errors))

    def _read_domain_state(self, client: LdapClient) -> DomainState:
        rootdse = client.search("", "(objectClass=*)", ["configurationNamingContext"], scope="base")
        config_nc = ad.str_attr(rootdse[0][1], "configurationNamingContext") if rootdse else None
        root = client.search(
            self.base_dn,
            "(objectClass=*)",
            ["lockoutThreshold", "lockoutDuration", "lockOutObservationWindow", "fSMORoleOwner"],
            scope="base",
        )
        if not root:
            raise LdapError("search_failed", f"domain root {self.base_dn} not found")
        policy = ad.parse_domain_policy(root[0][1])
        sites: list[RawEntry] = []
        if config_nc:
            sites = client.search(
                f"CN=Sites,{config_nc}",
                "(|(objectClass=nTDSDSA)(objectClass=server))",
                ["objectClass", "invocationId", "dNSHostName", "serverReference", "msDS-hasMasterNCs", "hasMasterNCs"],
                page_size=self.config.page_size,
            )
        topology = ad.parse_topology(sites, root[0][1], self.base_dn)
        psos = []
        try:
            entries = client.search(
                f"CN=Password Settings Container,CN=System,{self.base_dn}",
                "(objectClass=msDS-PasswordSettings)",
                [
                    "msDS-LockoutThreshold",
                    "msDS-LockoutDuration",
                    "msDS-LockoutObservationWindow",
                    "msDS-PasswordSettingsPrecedence",
                    "msDS-PSOAppliesTo",
                ],
                scope="level",
            )
        except LdapError as exc:
            if exc.reason != "search_failed":
                raise
            entries = []  # not readable by this account: fine-grained policies stay unknown
        for dn, attrs in entries:
            try:
                psos.append(ad.parse_password_settings(dn, attrs))
            except ad.AttributeValueError as exc:
                log.info("%s: password settings object %s not readable: %s", self.domain, dn, exc)
        return DomainState(topology, policy, psos)

    async def _on_dc(self, client: LdapClient, fn: Callable[..., _T], *args: object) -> _T:
        """``fn`` on a worker thread holding the DC's connection, within the DC's deadline."""
        return await self.pool.run(
            fn, *args, lock=client.lock, timeout=self.config.timeout_seconds, where=client.endpoint.url
        )

    def _set_domain_clock(self, sweeps: Sequence[DcSweep]) -> None:
        """The domain's time from the PDC emulator's clock (the domain's time source), else from the first DC
        that answered."""
        pdc = self._state.topology.pdc if self._state.topology else None
        readings = sorted(
            (s for s in sweeps if s.up and s.clock is not None),
            key=lambda s: 0 if pdc is not None and s.dc == pdc.host else 1,
        )
        if readings and readings[0].clock is not None:
            self.domain_clock.keep(readings[0].clock)

    def _read_clock(self, client: LdapClient) -> domain_time.Reading | None:
        """The DC's clock from its rootDSE (currentTime, whole seconds: the middle of that second is taken)."""
        started = time.monotonic()
        rootdse = client.search("", "(objectClass=*)", ["currentTime"], scope="base")
        ended = time.monotonic()
        dc_time = ad.generalized_time(rootdse[0][1], "currentTime") if rootdse else None
        if dc_time is None:
            return None
        return self.domain_clock.read(client.endpoint.host, dc_time + 0.5, started, ended)

    async def _sweep(self, ep: LdapEndpoint) -> DcSweep:
        """The DC's clock, then its two searches (how far back lockoutTime is asked for is by the DC's clock)."""
        started = time.monotonic()
        client = self._client(ep)
        try:
            reading, bad, locked = await self._on_dc(client, self._search_accounts, client)
        except LdapError as exc:
            return DcSweep(ep.host, False, time.monotonic() - started, exc.reason, self.redact(str(exc)))
        except Exception as exc:  # one DC's surprise must not stop the others
            log.exception("%s: sweep of %s failed", self.domain, ep.host)
            client.close()
            return DcSweep(
                ep.host,
                False,
                time.monotonic() - started,
                "error",
                self.redact(f"{ep.url}: {type(exc).__name__}: {exc}"),
            )
        sweep = DcSweep(ep.host, True, time.monotonic() - started, clock=reading)
        for dn, attrs in bad:
            parsed = ad.parse_account(dn, attrs)
            sweep.bad_password.append(parsed.account)
            sweep.parse_errors.extend(parsed.errors)
        for dn, attrs in locked:
            parsed = ad.parse_account(dn, attrs)
            sweep.lockouts.append(parsed.account)
            sweep.parse_errors.extend(parsed.errors)
        return sweep

    def _lockout_floor(self, now: float) -> int:
        """Lowest lockoutTime (FILETIME) that can still be a current lock or a lockout in the window."""
        policy = self._state.policy
        spans = [p.policy for p in self._state.password_settings]
        if policy is not None:
            spans.append(policy)
        if not spans:
            return 1
        longest = max(max(p.duration_seconds, p.observation_window_seconds) for p in spans)
        if math.isinf(longest):
            return 1
        return max(ad.unix_to_filetime(now - longest - 60), 1)

    def _search_accounts(self, client: LdapClient) -> tuple[domain_time.Reading | None, list[RawEntry], list[RawEntry]]:
        reading = self._read_clock(client)
        now = self.domain_clock.carried(reading) if reading else self.clock()
        users = f"(sAMAccountType={ad.SAM_NORMAL_USER_ACCOUNT})"
        watch = "".join(f"(sAMAccountName={escape_filter_chars(name)})" for name in self.config.watch_accounts)
        bad = client.search(
            self.base_dn,
            f"(&{users}(|(badPwdCount>=1){watch}))",
            BAD_PASSWORD_ATTRIBUTES,
            page_size=self.config.page_size,
        )
        locked = client.search(
            self.base_dn,
            f"(&{users}(lockoutTime>={self._lockout_floor(now)}))",
            LOCKOUT_ATTRIBUTES,
            page_size=self.config.page_size,
        )
        missing_metadata = [dn for dn, attrs in locked if not any(k.lower() == "replpropertymetadata" for k in attrs)]
        if missing_metadata:
            # Where replPropertyMetaData is not readable, the constructed XML form may be (base scope only).
            by_dn = dict(locked)
            for dn in missing_metadata[: self.config.max_locked_accounts]:
                extra = client.search(dn, "(objectClass=*)", ["msDS-ReplAttributeMetaData"], scope="base")
                if extra:
                    by_dn[dn] = {**by_dn[dn], **extra[0][1]}
            locked = list(by_dn.items())
        return reading, bad, locked

    # --- the lockout investigator's overview and one account, on demand ---------------------------------

    def lockout_overview(self) -> tuple[list[LockedAccount], list[NearLockout]]:
        """From the last refresh: the accounts locked now (with their origin DC) and those one bad password
        from it on some DC (badPwdCount = threshold - 1 inside the observation window)."""
        policy, topology, now = self._state.policy, self._state.topology or ad.Topology((), None), self.clock()
        if policy is None:
            return [], []
        sweeps = self._last_sweeps
        locked = [
            LockedAccount(
                self.domain,
                account.user,
                ad.resolve_origin(account.lockout_origin, topology),
                account.lockout_time or 0.0,
                tuple(sorted(s.dc for s in sweeps if any(a.user.lower() == key for a in s.lockouts))),
            )
            for key, account in sorted(_locked_now(sweeps, policy, now).items())
        ]
        locked_names = {a.user.lower() for a in locked}
        near = [n for n in self._near_lockout(sweeps, now) if n.user.lower() not in locked_names]
        return locked, sorted(near, key=lambda n: (n.user.lower(), n.dc))

    def _policy_of(self, account: ad.Account) -> ad.LockoutPolicy | None:
        """The lockout policy that applies to the account: its PSO's where known and readable, else the domain's."""
        if account.resultant_pso:
            for settings in self._state.password_settings:
                if settings.name.lower() == account.resultant_pso.lower():
                    return settings.policy
        return self._state.policy

    def _near_lockout(self, sweeps: Sequence[DcSweep], now: float) -> list[NearLockout]:
        """Per DC, the accounts at threshold - 1 bad passwords inside the observation window."""
        near = []
        for sweep in sweeps:
            for account in sweep.bad_password:
                policy = self._policy_of(account)
                if (
                    policy is not None
                    and policy.threshold > 1
                    and account.bad_pwd_count == policy.threshold - 1
                    and ad.counts_toward_lockout(account, policy, now)
                ):
                    near.append(
                        NearLockout(self.domain, account.user, sweep.dc, account.bad_pwd_count, policy.threshold)
                    )
        return near

    def has_cached(self, account: str) -> bool:
        """True if the account's per-DC view would come from the cache (no DC asked)."""
        cached = self._account_cache.get(account.lower().rpartition("\\")[2])
        return cached is not None and time.monotonic() - cached[0] < ACCOUNT_STATUS_CACHE_SECONDS

    async def account_status(self, account: str) -> list[DcAccountStatus]:
        """Every known DC's view of one account, asked of all at once (bounded by max_concurrent_dcs, through
        the credential guard): one base-DN search per DC for that one name, never a sweep; cached briefly."""
        key = account.lower().rpartition("\\")[2]
        cached = self._account_cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < ACCOUNT_STATUS_CACHE_SECONDS:
            return cached[1]
        endpoints = self._known_endpoints or await self._targets()
        rows = list(await asyncio.gather(*(self._account_on(ep, key) for ep in endpoints)))
        self._account_cache = {
            a: c for a, c in self._account_cache.items() if time.monotonic() - c[0] < ACCOUNT_STATUS_CACHE_SECONDS
        }
        if len(self._account_cache) < 1000:
            self._account_cache[key] = (time.monotonic(), rows)
        return rows

    async def _account_on(self, ep: LdapEndpoint, account: str) -> DcAccountStatus:
        topology = self._state.topology or ad.Topology((), None)
        info = {dc.host: dc for dc in topology.controllers if dc.host}.get(ep.host)
        pdc = topology.pdc is not None and topology.pdc.host == ep.host
        site = info.site if info else ""
        client = self._client(ep)
        name = escape_filter_chars(account)
        search = f"(&(sAMAccountType={ad.SAM_NORMAL_USER_ACCOUNT})(|(sAMAccountName={name})(userPrincipalName={name})))"
        try:
            entries = await self._on_dc(
                client,
                functools.partial(client.search, scope="subtree", page_size=2),
                self.base_dn,
                search,
                ACCOUNT_STATUS_ATTRIBUTES,
            )
        except LdapError as exc:
            return DcAccountStatus(ep.host, site, pdc, False, self.redact(f"{exc.reason}: {exc}"))
        except Exception as exc:  # one DC's surprise must not stop the others
            return DcAccountStatus(ep.host, site, pdc, False, self.redact(f"{type(exc).__name__}: {exc}"))
        if not entries:
            return DcAccountStatus(ep.host, site, pdc, True)
        dn, attrs = entries[0]
        parsed = ad.parse_account(dn, attrs).account
        policy, policy_name = self._effective_policy(attrs)
        now = self.clock()
        locked = (
            ad.is_locked(parsed, policy, now)
            if policy is not None
            else bool((parsed.uac_computed or 0) & ad.UF_LOCKOUT)
        )
        try:
            pwd_raw = ad.int_attr(attrs, "pwdLastSet")
        except ad.AttributeValueError:
            pwd_raw = None
        return DcAccountStatus(
            dc=ep.host,
            site=site,
            pdc=pdc,
            up=True,
            found=True,
            user=parsed.user,
            locked=locked,
            # An account that never had a bad password on this DC has no badPwdCount there: 0, as LockoutStatus.
            bad_pwd_count=parsed.bad_pwd_count if parsed.bad_pwd_count is not None else 0,
            last_bad_password=parsed.bad_password_time,
            pwd_last_set=ad.filetime_to_unix(pwd_raw) if pwd_raw else None,
            created=ad.generalized_time(attrs, "whenCreated"),
            lockout_time=parsed.lockout_time if parsed.lockout_time else None,
            orig_lock=ad.resolve_origin(parsed.lockout_origin, topology) if locked else "",
            lockout_threshold=policy.threshold if policy is not None else None,
            policy=policy_name,
        )

    def _effective_policy(self, attrs: ad.RawAttributes) -> tuple[ad.LockoutPolicy | None, str]:
        try:
            pso = ad.str_attr(attrs, "msDS-ResultantPSO")
        except ad.AttributeValueError:
            pso = None
        if pso:
            name = ad.rdn_value(pso)
            for settings in self._state.password_settings:
                if settings.name.lower() == name.lower():
                    return settings.policy, settings.name
            return self._state.policy, f"{name} (not readable; domain policy shown)"
        return self._state.policy, "domain"

    # --- metrics -----------------------------------------------------------------------------------------

    def target_status(self) -> list[TargetStatus]:
        topology_note = f"topology: {self._state.topology_error}" if self._state.topology_error else ""
        statuses = [TargetStatus(s.dc, s.up, s.detail) for s in self._last_sweeps]
        if topology_note:
            statuses.append(TargetStatus(f"{self.domain} (topology)", False, topology_note))
        return statuses

    def _metrics(self, sweeps: Sequence[DcSweep], now: float) -> list[Series]:
        state = self._state
        policy = state.policy
        topology = state.topology or ad.Topology((), None)
        domain = self.domain
        by_host = {dc.host: dc for dc in topology.controllers if dc.host}
        pdc = topology.pdc

        up = AD_DC_UP.new()
        error = AD_DC_ERROR_REASON.new()
        sweep_seconds = AD_DC_SWEEP_DURATION_SECONDS.new()
        info = AD_DC_INFO.new()
        is_pdc = AD_DC_IS_PDC_EMULATOR.new()
        clock_offset = AD_DC_CLOCK_OFFSET_SECONDS.new()
        locked_per_dc = AD_ACCOUNTS_LOCKED.new()
        bad_per_dc = AD_ACCOUNTS_WITH_BAD_PASSWORD.new()
        recent = AD_LOCKOUTS_IN_OBSERVATION_WINDOW.new()
        bad_count = AD_ACCOUNT_BAD_PASSWORDS.new()
        bad_time = AD_ACCOUNT_LAST_BAD_PASSWORD_TIMESTAMP_SECONDS.new()
        caps = Caps(self.name, domain)
        caps.note(AD_ACCOUNT_BAD_PASSWORDS)
        for sweep in sweeps:
            labels = [domain, sweep.dc]
            up.add_metric(labels, 1.0 if sweep.up else 0.0)
            sweep_seconds.add_metric(labels, sweep.duration)
            dc_info = by_host.get(sweep.dc)
            info.add_metric([domain, sweep.dc, dc_info.site if dc_info else ""], 1.0)
            is_pdc.add_metric(labels, 1.0 if pdc is not None and pdc.host == sweep.dc else 0.0)
            if not sweep.up:
                error.add_metric([domain, sweep.dc, sweep.reason], 1.0)
                continue
            if sweep.clock is not None:
                clock_offset.add_metric(labels, round(sweep.clock.offset, 3))
            if policy is None:
                continue
            locked_per_dc.add_metric(labels, sum(ad.is_locked(a, policy, now) for a in sweep.lockouts))
            window_start = now - policy.observation_window_seconds
            recent.add_metric(
                labels, sum(1 for a in sweep.lockouts if a.lockout_time is not None and a.lockout_time >= window_start)
            )
            counting = [a for a in sweep.bad_password if ad.counts_toward_lockout(a, policy, now)]
            bad_per_dc.add_metric(labels, len(counting))
            self._add_top_accounts(sweep, labels, bad_count, bad_time, caps)

        families: list[Series] = [up, error, sweep_seconds, info, is_pdc, clock_offset]
        if policy is not None:
            families.extend(self._policy_metrics(policy))
            families.extend([locked_per_dc, bad_per_dc, recent])
            families.extend(self._locked_account_metrics(sweeps, policy, topology, now, caps))
        families.extend([bad_count, bad_time, caps.series()])
        families.append(PARSE_ERRORS.one([self.name, domain], self._parse_errors_total))
        return families

    def _add_top_accounts(self, sweep: DcSweep, labels: list[str], count: Series, last: Series, caps: Caps) -> None:
        """Watched accounts, then the top accounts by badPwdCount; the rest summed as other."""
        watched = {name.lower() for name in self.config.watch_accounts}
        for account in sweep.bad_password:
            if account.user.lower() in watched:
                count.add_metric([*labels, account.user], account.bad_pwd_count or 0)
                last.add_metric([*labels, account.user], account.bad_password_time or 0)
        top = caps.top(
            AD_ACCOUNT_BAD_PASSWORDS,
            (a for a in sweep.bad_password if a.user.lower() not in watched and a.bad_pwd_count),
            self.config.top_accounts,
            lambda a: (-(a.bad_pwd_count or 0), -(a.bad_password_time or 0), a.user),
        )
        top.add(count, lambda a: [*labels, a.user], lambda a: a.bad_pwd_count or 0, other=[*labels, OTHER])
        for account in top.kept:
            last.add_metric([*labels, account.user], account.bad_password_time or 0)

    def _policy_metrics(self, policy: ad.LockoutPolicy) -> list[Series]:
        domain = self.domain
        threshold = AD_LOCKOUT_POLICY_THRESHOLD.new()
        duration = AD_LOCKOUT_POLICY_DURATION_SECONDS.new()
        window = AD_LOCKOUT_POLICY_OBSERVATION_WINDOW_SECONDS.new()
        threshold.add_metric([domain], policy.threshold)
        duration.add_metric([domain], policy.duration_seconds)
        window.add_metric([domain], policy.observation_window_seconds)
        pso_threshold = AD_PASSWORD_SETTINGS_LOCKOUT_THRESHOLD.new()
        pso_duration = AD_PASSWORD_SETTINGS_LOCKOUT_DURATION_SECONDS.new()
        pso_window = AD_PASSWORD_SETTINGS_OBSERVATION_WINDOW_SECONDS.new()
        for pso in self._state.password_settings:
            pso_threshold.add_metric([domain, pso.name], pso.policy.threshold)
            pso_duration.add_metric([domain, pso.name], pso.policy.duration_seconds)
            pso_window.add_metric([domain, pso.name], pso.policy.observation_window_seconds)
        return [threshold, duration, window, pso_threshold, pso_duration, pso_window]

    def _locked_account_metrics(
        self,
        sweeps: Sequence[DcSweep],
        policy: ad.LockoutPolicy,
        topology: ad.Topology,
        now: float,
        caps: Caps,
    ) -> list[Series]:
        domain = self.domain
        newest = _locked_now(sweeps, policy, now)
        locked = AD_ACCOUNT_LOCKED.new()
        locked_at = AD_ACCOUNT_LOCKOUT_TIMESTAMP_SECONDS.new()
        top = caps.top(
            AD_ACCOUNT_LOCKED,
            newest.values(),
            self.config.max_locked_accounts,
            lambda a: (-(a.lockout_time or 0), a.user.lower()),
        )
        for account in top.kept:
            origin = ad.resolve_origin(account.lockout_origin, topology)
            locked.add_metric([domain, account.user, origin], 1.0)
            locked_at.add_metric([domain, account.user, origin], account.lockout_time or 0)
        total_locked = AD_DOMAIN_ACCOUNTS_LOCKED.new()
        total_locked.add_metric([domain], len(newest))

        watched = AD_WATCHED_ACCOUNT_LOCKED.new()
        for name in self.config.watch_accounts:
            watched.add_metric([domain, name], 1.0 if name.lower() in newest else 0.0)

        near = self._near_lockout(sweeps, now)
        near_count = AD_ACCOUNTS_NEAR_LOCKOUT.new()
        for sweep in sweeps:
            if sweep.up:
                near_count.add_metric([domain, sweep.dc], sum(1 for n in near if n.dc == sweep.dc))
        close = {n.user.lower() for n in near} - set(newest)
        watched_near = AD_WATCHED_ACCOUNT_NEAR_LOCKOUT.new()
        for name in self.config.watch_accounts:
            watched_near.add_metric([domain, name], 1.0 if name.lower() in close else 0.0)

        lockouts = self._count_new_lockouts(sweeps, topology, now)
        return [locked, locked_at, total_locked, watched, near_count, watched_near, lockouts]

    def _count_new_lockouts(self, sweeps: Sequence[DcSweep], topology: ad.Topology, now: float) -> Series:
        """A counter of lockouts seen for the first time, by origin DC (for rate alerts).

        The first successful refresh only records what is already there, so a restart never counts
        old lockouts again.
        """
        current: dict[tuple[str, int], str] = {}
        for sweep in sweeps:
            for account in sweep.lockouts:
                if account.lockout_time is None:
                    continue
                key = (account.user.lower(), int(account.lockout_time))
                origin = ad.resolve_origin(account.lockout_origin, topology)
                if current.get(key, "unknown") == "unknown":
                    current[key] = origin
        if not any(sweep.up for sweep in sweeps):
            pass  # nothing was seen: neither count nor forget
        elif self._seen_lockouts is None:
            self._seen_lockouts = set(current)
        else:
            for key, origin in current.items():
                if key not in self._seen_lockouts:
                    self._lockouts_total[origin] = self._lockouts_total.get(origin, 0) + 1
            # Forget lockouts older than the search floor: no DC can report them again, so the set stays
            # as small as the recent lockouts themselves.
            floor = ad.filetime_to_unix(self._lockout_floor(now)) or 0.0
            self._seen_lockouts = {k for k in self._seen_lockouts | set(current) if k[1] >= floor - 1}
        # Every known origin starts at 0, so that increase() sees the first lockout of a new series.
        for dc in topology.controllers:
            self._lockouts_total.setdefault(dc.host or dc.name.lower(), 0)
        family = AD_ACCOUNT_LOCKOUTS_TOTAL.new()
        for origin, count in sorted(self._lockouts_total.items()):
            family.add_metric([self.domain, origin], count)
        return family

    async def close(self) -> None:
        for client in self._clients.values():
            client.close()
        await super().close()


@dataclass(frozen=True)
class LockedAccount:
    domain: str
    user: str
    origin_dc: str
    lockout_time: float
    dcs: tuple[str, ...]  # the DCs that hold the lock


@dataclass(frozen=True)
class NearLockout:
    domain: str
    user: str
    dc: str
    bad_pwd_count: int
    threshold: int


def _locked_now(sweeps: Sequence[DcSweep], policy: ad.LockoutPolicy, now: float) -> dict[str, ad.Account]:
    """Accounts locked on any DC that answered, each with its newest lockoutTime (which names the origin)."""
    newest: dict[str, ad.Account] = {}
    for sweep in sweeps:
        for account in sweep.lockouts:
            if not ad.is_locked(account, policy, now):
                continue
            key = account.user.lower()
            seen = newest.get(key)
            if (
                seen is None
                or (account.lockout_time or 0) > (seen.lockout_time or 0)
                or (seen.lockout_origin is None and account.lockout_origin is not None)
            ):
                newest[key] = account
    return newest


def _finite(value: float) -> float:
    return 0.0 if math.isinf(value) else value
