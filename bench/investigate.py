"""The lockout investigator: one account with 10,000 evidence rows and two DCs.

    python -m bench investigate [--rows 10000] [--requests 50] [--rounds 10]

Prints, measured in the same run against the same two Samba DCs:
- the evidence store's write throughput (500-row transactions with their bounds, as the collectors commit),
  against plain SQLite inserts of the same rows with the same durability (WAL, full sync) and no bounds;
- the live per-DC view (both DCs asked at once for the one account, uncached), against ldapsearch running the
  same one-account search on both DCs at once;
- the API's and the page's latency for the account through the running exporter (evidence read and verdict
  computed each time; the per-DC view from its 10 s cache after the first request).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from exporter.collectors.active_directory import ACCOUNT_STATUS_ATTRIBUTES, ActiveDirectoryCollector
from exporter.config import Config
from exporter.parsers import ad
from exporter.sources.credential_guard import CredentialGuard
from exporter.state import Evidence, EvidenceLimits, StateStore
from lab import free_port, stop_process
from lab.exporter_config import lab_config, write_config
from lab.samba import BASE_DN, DOMAIN, SambaLab

ACCOUNT = "bench_target"
BATCH = 500


def evidence_rows(count: int, now: float) -> list[Evidence]:
    """The target's failures from a handful of sources, over the last hour."""
    return [
        Evidence(
            ACCOUNT,
            now - 3600 + i * 3600 / count,
            "security_event",
            ("dc1.lab.example", "dc2.lab.example")[i % 2],
            ("4771", "4625", "4776")[i % 3],
            {"reason": "wrong_password", "ip": f"198.51.100.{i % 7 + 1}", "workstation": f"WS{i % 5:02d}"},
        )
        for i in range(count)
    ]


def time_store_writes(path: Path, rows: list[Evidence]) -> float:
    limits = EvidenceLimits(retention_seconds=7 * 86400, max_rows_per_account=len(rows), max_rows=10 * len(rows))
    store = StateStore(path, limits)
    started = time.perf_counter()
    for i in range(0, len(rows), BATCH):
        with store.transaction() as put:
            put("bench/bookmark", i)
            put.evidence(rows[i : i + BATCH])
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed


def time_plain_sqlite(path: Path, rows: list[Evidence]) -> float:
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE e (account TEXT, time REAL, source TEXT, host TEXT, kind TEXT, detail TEXT)")
    started = time.perf_counter()
    for i in range(0, len(rows), BATCH):
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO e VALUES (?, ?, ?, ?, ?, ?)",
            [(r.account, r.time, r.source, r.host, r.kind, json.dumps(dict(r.detail))) for r in rows[i : i + BATCH]],
        )
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return elapsed


def time_live_view(lab: SambaLab, rounds: int) -> list[float]:
    config = Config.model_validate(lab_config(lab, interval=60, timeout=10)).active_directory[0]
    collector = ActiveDirectoryCollector(config, CredentialGuard())

    async def run() -> list[float]:
        await collector.collect()  # topology, policy, connections bound: as in a running exporter
        times = []
        for _ in range(rounds):
            collector._account_cache.clear()
            started = time.perf_counter()
            rows = await collector.account_status(ACCOUNT)
            times.append(time.perf_counter() - started)
            assert len(rows) == 2 and all(r.found for r in rows), rows
        await collector.close()
        return times

    return asyncio.run(run())


def time_ldapsearch(lab: SambaLab, rounds: int) -> list[float]:
    search = (
        f"(&(sAMAccountType={ad.SAM_NORMAL_USER_ACCOUNT})(|(sAMAccountName={ACCOUNT})(userPrincipalName={ACCOUNT})))"
    )
    env = {**os.environ, "LDAPTLS_REQCERT": "never"}  # by address: the host's resolver never sees lab names

    def one(dc_address: str) -> None:
        subprocess.run(
            ["ldapsearch", "-LLL", "-x", "-H", f"ldaps://{dc_address}", "-D", f"svc_exporter@{DOMAIN}", "-y",
             str(lab.service_password_file), "-b", BASE_DN, search, *ACCOUNT_STATUS_ATTRIBUTES],
            check=True, stdout=subprocess.DEVNULL, env=env,
        )  # fmt: skip

    times = []
    with ThreadPoolExecutor(2) as pool:
        for _ in range(rounds):
            started = time.perf_counter()
            list(pool.map(one, [dc.address for dc in lab.dcs]))
            times.append(time.perf_counter() - started)
    return times


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - the loopback exporter only
        body: bytes = response.read()
    return body


def time_http(url: str, requests: int) -> list[float]:
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        fetch(url)
        times.append(time.perf_counter() - started)
    return times


def p95(values: list[float]) -> float:
    return sorted(values)[max(int(len(values) * 0.95) - 1, 0)]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench investigate")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="bench-investigate-"))
    lab = SambaLab(directory / "lab", lockout_threshold=5, lockout_duration=1800, observation_window=1800)
    process: subprocess.Popen[bytes] | None = None
    try:
        print("provisioning the lab ...", flush=True)
        lab.provision()
        lab.create_user(ACCOUNT)
        for dc in lab.dcs:
            lab.fail_ldap(ACCOUNT, dc)
        rows = evidence_rows(args.rows, time.time())
        store_time = time_store_writes(directory / "state.db", rows)
        plain_time = time_plain_sqlite(directory / "plain.db", rows)
        live = time_live_view(lab, args.rounds)
        ldapsearch = time_ldapsearch(lab, args.rounds)
        port = free_port()
        config = write_config(
            lab, directory / "exporter.yml", port=port, interval=30, timeout=10, state=directory / "state.db"
        )
        text = config.read_text().replace("state:\n", "state:\n  evidence: {max_rows_per_account: 20000}\n", 1)
        config.write_text(text)
        process = subprocess.Popen(
            [sys.executable, "-m", "exporter", f"--config.file={config}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                fetch(f"{base}/-/ready")
                break
            except OSError:
                time.sleep(0.5)
        first = time_http(f"{base}/api/v1/lockouts/{ACCOUNT}", 1)[0]  # the per-DC view asked of the DCs
        body = json.loads(fetch(f"{base}/api/v1/lockouts/{ACCOUNT}"))
        api = time_http(f"{base}/api/v1/lockouts/{ACCOUNT}", args.requests)
        page = time_http(f"{base}/lockouts/{ACCOUNT}", args.requests)
        print(f"\nOne account, {len(body['timeline'])} evidence rows read per answer, 2 DCs:")
        print(
            f"  evidence store writes   {args.rows / store_time:10.0f} rows/s  ({BATCH}-row transactions with bounds)"
        )
        ratio = store_time / plain_time
        print(f"  plain SQLite, same rows {args.rows / plain_time:10.0f} rows/s  store/plain = {ratio:.2f}")
        live_ms, ldap_ms = statistics.median(live) * 1000, statistics.median(ldapsearch) * 1000
        print(
            f"  live per-DC view        {live_ms:10.1f} ms      (both DCs at once, uncached; median of {args.rounds})"
        )
        print(f"  ldapsearch, same search {ldap_ms:10.1f} ms      live/ldapsearch = {live_ms / ldap_ms:.2f}")
        print(f"  API, first request      {first * 1000:10.1f} ms      (asks the DCs)")
        print(f"  API, cached DCs         {statistics.median(api) * 1000:10.1f} ms p50, {p95(api) * 1000:.1f} ms p95")
        print(f"  page, cached DCs        {statistics.median(page) * 1000:10.1f} ms p50, {p95(page) * 1000:.1f} ms p95")
        return 0
    finally:
        stop_process(process)
        lab.teardown()
