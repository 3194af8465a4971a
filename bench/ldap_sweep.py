"""The AD sweep on one DC with 10,000 users, against ldapsearch and against a naive per-user loop.

    python -m bench ldap_sweep [--users 10000] [--affected 300] [--rounds 5]

Prints, measured in the same run against the same DC:
- the exporter's sweep of the DC (its two paged searches, parsing, on a reused connection),
- ldapsearch running the same two searches (the DC's own answer time, plus ldapsearch's connect and bind),
- a naive loop that reads badPwdCount/lockoutTime with one search per user,
- the exporter's peak resident memory, as a real process refreshing every 5 s against this directory.
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
from lab import stop_process
from lab.exporter_config import lab_config, write_config
from lab.samba import ADMIN_PASSWORD, BASE_DN, DOMAIN, USER_PASSWORD, SambaLab


def add_users(lab: SambaLab, count: int, affected: int) -> None:
    """Disabled users without a password (fast to add), and ``affected`` enabled ones that get bad passwords."""

    def worker(names: list[str]) -> None:
        conn = lab.admin_connection(lab.dc1)
        for name in names:
            conn.add(
                f"CN={name},CN=Users,{BASE_DN}",
                ["top", "person", "organizationalPerson", "user"],
                {"sAMAccountName": name, "userAccountControl": "514"},
            )
        conn.unbind()

    names = [f"bench{i:05d}" for i in range(count - affected)]
    chunks = [names[i::4] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(worker, chunks))
    # Enabled users with a password need an encrypted connection for unicodePwd: LDAPS.
    tls = ldap3.Tls(validate=ssl.CERT_NONE, version=ssl.PROTOCOL_TLS_CLIENT)
    conn = ldap3.Connection(
        ldap3.Server(lab.dc1.address, port=636, use_ssl=True, tls=tls, get_info=ldap3.NONE),
        f"Administrator@{DOMAIN}",
        ADMIN_PASSWORD,
        auto_bind=True,
    )
    for i in range(affected):
        conn.add(
            f"CN=hit{i:04d},CN=Users,{BASE_DN}",
            ["top", "person", "organizationalPerson", "user"],
            {
                "sAMAccountName": f"hit{i:04d}",
                "userAccountControl": "512",
                "unicodePwd": f'"{USER_PASSWORD}"'.encode("utf-16-le"),
            },
        )
    conn.unbind()
    for i in range(affected):
        # Two bad passwords each; every tenth account all the way to a lockout.
        for _ in range(lab.threshold if i % 10 == 0 else 2):
            lab.fail_ldap(f"hit{i:04d}", lab.dc1)


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
            sweep = await collector._sweep(endpoint, time.time())
            times.append(time.perf_counter() - started)
            assert sweep.up, sweep.detail
        print(
            f"  exporter sweep found {len(sweep.bad_password)} accounts with bad passwords, "
            f"{len(sweep.lockouts)} with a recent lockoutTime"
        )
        await collector.close()
        return times

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
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--affected", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="bench-ldap-"))
    lab = SambaLab(directory / "lab", lockout_threshold=5, lockout_duration=1800, observation_window=1800)
    try:
        print("provisioning the lab ...", flush=True)
        lab.provision()
        started = time.perf_counter()
        add_users(lab, args.users, args.affected)
        print(
            f"added {args.users} users ({args.affected} with real bad passwords) "
            f"in {time.perf_counter() - started:.0f}s",
            flush=True,
        )
        exporter = statistics.median(time_exporter_sweep(lab, args.rounds))
        floor = ad.unix_to_filetime(time.time() - 1800 - 60)
        ldapsearch = statistics.median(time_ldapsearch(lab, args.rounds, floor))
        naive = time_naive_loop(lab)
        peak = exporter_peak_memory(lab, directory)
        print(f"\nOne DC, {args.users} users, {args.affected} affected (median of {args.rounds} rounds):")
        print(f"  exporter sweep          {exporter * 1000:8.1f} ms")
        ratio = exporter / ldapsearch
        print(
            f"  ldapsearch, same query  {ldapsearch * 1000:8.1f} ms   exporter/ldapsearch = {ratio:.2f} (target <= 1.2)"
        )
        print(f"  naive per-user loop     {naive * 1000:8.1f} ms   naive/exporter = {naive / exporter:.0f}x")
        print(f"  exporter peak RSS       {peak / 2**20:8.1f} MiB (real process, 5 s refreshes for 40 s)")
        return 0
    finally:
        lab.teardown()
