"""The AD sweep on one DC as the directory grows (10,000 to 50,000 users and more), against ldapsearch and against a
naive per-user loop.

    python -m bench ldap_sweep [--users 10000 25000 50000] [--affected-share 0.03] [--rounds 5]

The users are written straight into the DC's database, 2,000 to a transaction (Samba's own Python bindings, the
DC stopped for that moment): adding them one by one over LDAP takes far longer than the sweep being measured.
The affected share (3 % by default: accounts with a bad password inside the observation window, as on a working
day in a large estate) are added over LDAPS with a password and get real failed binds: two each, and every tenth
one up to a lockout. DC2 is stopped for the run (the sweep is of DC1; replicating the bulk would only add noise).

Prints, per size, measured in the same run against the same DC:
- the exporter's sweep of the DC (its two paged searches, parsing, on a reused connection),
- ldapsearch running the same two searches (the DC's own answer time, plus ldapsearch's connect and bind),
- the bytes the DC sends for one sweep (TLS included, counted by lab/faults.py's proxy in pass mode),
- at the first size, a naive loop that reads badPwdCount/lockoutTime with one search per user,
- at the last size, the exporter's peak resident memory, as a real process refreshing every 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ldap3

from exporter.collectors.active_directory import BAD_PASSWORD_ATTRIBUTES, LOCKOUT_ATTRIBUTES, ActiveDirectoryCollector
from exporter.config import Config
from exporter.parsers import ad
from exporter.sources.credential_guard import CredentialGuard
from lab import free_port, stop_process
from lab.exporter_config import lab_config, write_config
from lab.faults import FaultProxy
from lab.samba import ADMIN_PASSWORD, BASE_DN, DOMAIN, USER_PASSWORD, SambaLab

PROXY_ADDRESS = "127.0.0.13"  # where the byte count is taken, between the exporter and DC1


BULK_ADD = """
import sys
from samba.auth import system_session
from samba.param import LoadParm
from samba.samdb import SamDB

lp = LoadParm()
lp.load(sys.argv[1])
samdb = SamDB(url=lp.private_path("sam.ldb"), session_info=system_session(), lp=lp)
base = samdb.domain_dn()
first, last = int(sys.argv[2]), int(sys.argv[3])
for start in range(first, last, 2000):  # one transaction grows slower with every add: commit every 2,000
    samdb.transaction_start()
    try:
        for i in range(start, min(start + 2000, last)):
            name = "bench%06d" % i
            samdb.add({"dn": "CN=%s,CN=Users,%s" % (name, base), "objectClass": "user",
                       "sAMAccountName": name, "userAccountControl": "514"})
    except BaseException:
        samdb.transaction_cancel()
        raise
    samdb.transaction_commit()
"""


def bulk_add_disabled(lab: SambaLab, first: int, last: int) -> None:
    """Disabled users bench<first>..bench<last-1>, 2,000 to a transaction, on DC1's database while it is stopped."""
    lab.stop(lab.dc1)
    try:
        lab.run(["/usr/bin/python3", "-c", BULK_ADD, str(lab.dc1.conf), str(first), str(last)], timeout=3600)
    finally:
        lab.start(lab.dc1, wait=120)


def add_affected(lab: SambaLab, first: int, last: int) -> None:
    """Enabled users hit<first>..hit<last-1> with a password (LDAPS: unicodePwd needs an encrypted connection),
    then real failed binds: two each, every tenth one up to a lockout."""
    tls = ldap3.Tls(validate=ssl.CERT_NONE, version=ssl.PROTOCOL_TLS_CLIENT)
    conn = ldap3.Connection(
        ldap3.Server(lab.dc1.address, port=636, use_ssl=True, tls=tls, get_info=ldap3.NONE),
        f"Administrator@{DOMAIN}",
        ADMIN_PASSWORD,
        auto_bind=True,
    )
    for i in range(first, last):
        conn.add(
            f"CN=hit{i:05d},CN=Users,{BASE_DN}",
            ["top", "person", "organizationalPerson", "user"],
            {
                "sAMAccountName": f"hit{i:05d}",
                "userAccountControl": "512",
                "unicodePwd": f'"{USER_PASSWORD}"'.encode("utf-16-le"),
            },
        )
    conn.unbind()

    def fail(i: int) -> None:
        for _ in range(lab.threshold if i % 10 == 0 else 2):
            lab.fail_ldap(f"hit{i:05d}", lab.dc1)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(fail, range(first, last)))


def time_exporter_sweep(lab: SambaLab, rounds: int) -> list[float]:
    config = Config.model_validate(
        lab_config(lab, interval=60, timeout=30, page_size=1000, discovery={"ntds_settings": False})
    ).active_directory[0]
    collector = ActiveDirectoryCollector(config, CredentialGuard())
    endpoint = collector._endpoint(lab.dc1.host, lab.dc1.address, None)

    async def run() -> list[float]:
        await collector.collect()  # connect, bind, read the policy once, as in production
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            sweep = await collector._sweep(endpoint)
            times.append(time.perf_counter() - started)
            assert sweep.up, sweep.detail
        print(
            f"  exporter sweep found {len(sweep.bad_password)} accounts with bad passwords, "
            f"{len(sweep.lockouts)} with a recent lockoutTime"
        )
        await collector.close()
        return times

    return asyncio.run(run())


def bytes_per_sweep(lab: SambaLab) -> int:
    """What the DC sends for one sweep on an open connection, counted by a pass-through proxy."""
    with FaultProxy(PROXY_ADDRESS, free_port(PROXY_ADDRESS), (lab.dc1.address, 636)) as proxy:
        config = Config.model_validate(
            lab_config(lab, interval=60, timeout=30, page_size=1000, discovery={"ntds_settings": False})
        ).active_directory[0]
        collector = ActiveDirectoryCollector(config, CredentialGuard())
        endpoint = collector._endpoint(lab.dc1.host, PROXY_ADDRESS, proxy.port)

        async def run() -> int:
            await collector.collect()  # the policy, and the DC's connection opened
            await collector._sweep(endpoint)  # the proxied connection opened and bound
            before = proxy.stats.bytes_down
            sweep = await collector._sweep(endpoint)
            assert sweep.up, sweep.detail
            await collector.close()
            return proxy.stats.bytes_down - before

        return asyncio.run(run())


def time_ldapsearch(lab: SambaLab, rounds: int, floor: int) -> list[float]:
    users = f"(sAMAccountType={ad.SAM_NORMAL_USER_ACCOUNT})"
    searches = [
        (
            f"(&{users}(|(badPwdCount>=1)(sAMAccountName=svc_backup)(sAMAccountName=svc_sql)))",
            list(BAD_PASSWORD_ATTRIBUTES),
        ),
        # The same two searches as the collector's, attribute for attribute.
        (f"(&{users}(lockoutTime>={floor}))", list(LOCKOUT_ATTRIBUTES)),
    ]
    # By address, not name (the host's resolver must never see lab names), so without certificate checks:
    # that only makes ldapsearch's side cheaper.
    env = {**os.environ, "LDAPTLS_REQCERT": "never"}
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for flt, attrs in searches:
            subprocess.run(
                [
                    "ldapsearch",
                    "-LLL",
                    "-x",
                    "-H",
                    f"ldaps://{lab.dc1.address}",
                    "-D",
                    f"svc_exporter@{DOMAIN}",
                    "-y",
                    str(lab.service_password_file),
                    "-b",
                    BASE_DN,
                    "-E",
                    "pr=1000/noprompt",
                    flt,
                    *attrs,
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                env=env,
            )
        times.append(time.perf_counter() - started)
    return times


def time_naive_loop(lab: SambaLab) -> float:
    conn = lab.admin_connection(lab.dc1)
    names = [
        e["attributes"]["sAMAccountName"]
        for e in conn.extend.standard.paged_search(
            BASE_DN,
            f"(sAMAccountType={ad.SAM_NORMAL_USER_ACCOUNT})",
            attributes=["sAMAccountName"],
            paged_size=1000,
            generator=False,
        )
        if e.get("type") == "searchResEntry"
    ]
    started = time.perf_counter()
    for name in names:
        conn.search(BASE_DN, f"(sAMAccountName={name})", attributes=["badPwdCount", "badPasswordTime", "lockoutTime"])
    elapsed = time.perf_counter() - started
    conn.unbind()
    print(f"  naive loop: {len(names)} searches")
    return elapsed


def exporter_peak_memory(lab: SambaLab, directory: Path, seconds: float = 40) -> float:
    cfg = write_config(lab, directory / "bench-exporter.yml", port=9799, interval=5, timeout=4)
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", f"--config.file={cfg}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    peak = 0.0
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(1)
            try:
                with urllib.request.urlopen("http://127.0.0.1:9799/metrics", timeout=5) as response:
                    for line in response.read().decode().splitlines():
                        if line.startswith("process_resident_memory_bytes "):
                            peak = max(peak, float(line.split()[1]))
            except OSError:
                continue
    finally:
        stop_process(process)
    return peak


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench ldap_sweep")
    parser.add_argument("--users", type=int, nargs="+", default=[10_000, 25_000, 50_000], help="directory sizes")
    parser.add_argument("--affected-share", type=float, default=0.03, help="share of users with bad passwords")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    sizes = sorted(set(args.users))
    directory = Path(tempfile.mkdtemp(prefix="bench-ldap-"))
    lab = SambaLab(directory / "lab", lockout_threshold=5, lockout_duration=1800, observation_window=1800)
    rows = []
    try:
        print("provisioning the lab ...", flush=True)
        started = time.perf_counter()
        lab.provision()
        lab.stop(lab.dc2)
        print(f"  two DCs provisioned in {time.perf_counter() - started:.0f}s (DC2 stopped for the run)", flush=True)
        disabled = affected = 0
        for size in sizes:
            want_affected = round(size * args.affected_share)
            want_disabled = size - want_affected
            started = time.perf_counter()
            bulk_add_disabled(lab, disabled, want_disabled)
            bulk = time.perf_counter() - started
            started = time.perf_counter()
            add_affected(lab, affected, want_affected)
            hits = time.perf_counter() - started
            print(
                f"{size} users: {want_disabled - disabled} added in bulk in {bulk:.0f}s, "
                f"{want_affected - affected} with real bad passwords in {hits:.0f}s",
                flush=True,
            )
            disabled, affected = want_disabled, want_affected
            exporter = statistics.median(time_exporter_sweep(lab, args.rounds))
            floor = ad.unix_to_filetime(time.time() - 1800 - 60)
            ldapsearch = statistics.median(time_ldapsearch(lab, args.rounds, floor))
            sent = bytes_per_sweep(lab)
            naive = time_naive_loop(lab) if size == sizes[0] else None
            peak = exporter_peak_memory(lab, directory) if size == sizes[-1] else None
            rows.append((size, affected, exporter, ldapsearch, sent, naive, peak))
            print(  # as it is measured: a later size that fails loses nothing
                f"  {size} users: exporter {exporter * 1000:.1f} ms, ldapsearch {ldapsearch * 1000:.1f} ms "
                f"({exporter / ldapsearch:.2f}), {sent:,d} bytes per sweep",
                flush=True,
            )
        print(f"\nOne DC, medians of {args.rounds} rounds:")
        print(f"{'users':>7} {'affected':>8} {'exporter':>10} {'ldapsearch':>11} {'ratio':>6} {'bytes/sweep':>12}")
        for size, hit, exporter, ldapsearch, sent, naive, peak in rows:
            print(
                f"{size:7d} {hit:8d} {exporter * 1000:8.1f}ms {ldapsearch * 1000:9.1f}ms "
                f"{exporter / ldapsearch:6.2f} {sent:12,d}"
            )
            if naive is not None:
                print(f"  naive per-user loop at {size}: {naive * 1000:.0f} ms = {naive / exporter:.0f}x the sweep")
            if peak is not None:
                print(f"  exporter peak RSS at {size}: {peak / 2**20:.1f} MiB (real process, 5 s refreshes for 40 s)")
        print("exporter/ldapsearch target <= 1.2 at every size")
        return 0
    finally:
        lab.teardown()
