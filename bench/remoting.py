"""What Kerberos with message encryption costs per refresh, against Basic over HTTPS, on the same lab endpoint.

    python -m bench remoting [--rounds 20] [--refreshes 30]

Provisions the lab's Samba domain (its KDC, the HTTP/<host> keys), then runs the Exchange collector's four core
cmdlets against SOLO-E19A through the exporter's own client, ``--rounds`` times each way: Kerberos over HTTP with
WinRM message encryption (what Exchange's /PowerShell takes) and Basic over HTTPS (TLS does the encrypting). It
prints per refresh the median wall time, the exporter's CPU (the calling thread's), the bytes each way, and
the cost of opening a runspace (authentication included) as a ratio of one to the other. Then the whole Exchange
collector for ``--refreshes`` refreshes: runspaces opened and authentications per server in the first refreshes
(one per kind of runspace) and after them (the goal: none, each reused), per hour at a 60 s interval.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.exchange import CORE
from exporter.collectors.exchange import ExchangeCollector
from exporter.config import ExchangeConfig
from exporter.sources.credential_guard import CredentialGuard
from exporter.sources.winrm import PsrpClient, RemotingCredential, RemotingTarget
from lab import free_port
from lab.exchange import ExchangeLab
from lab.kerberos import LabKerberos
from lab.samba import SambaLab

SERVER = "solo-e19a"
WARMUP = 5  # refreshes by which each kind of runspace has been opened once


def client_for(lab: ExchangeLab, auth: dict[str, Any]) -> PsrpClient:
    config = ExchangeConfig.model_validate(lab.config(auth=auth))
    entry = next(s for s in config.servers if s.name.lower() == SERVER)
    target = RemotingTarget.of(config, entry, None, config.path, config.configuration_name)
    return PsrpClient(target, RemotingCredential.of(config), CredentialGuard(), config.bind_retry_after_seconds)


def measure(lab: ExchangeLab, auth: dict[str, Any], rounds: int) -> dict[str, float]:
    behaviour = lab.endpoints[SERVER].behaviour
    opens, walls, cpus, sent, received = [], [], [], [], []
    for _ in range(max(3, rounds // 4)):  # opening a runspace: the authentication and the pool's handshake
        client = client_for(lab, auth)
        wall = time.perf_counter()
        client.run("Get-ExchangeServer", {"Identity": SERVER})
        opens.append(time.perf_counter() - wall)
        client.close()
    client = client_for(lab, auth)
    client.run("Get-ExchangeServer", {"Identity": SERVER})
    try:
        for _ in range(rounds):
            before_in, before_out = behaviour.bytes_in, behaviour.bytes_out
            wall, cpu = time.perf_counter(), time.thread_time()
            for cmdlet, params, _parse in CORE:
                client.run(cmdlet, params)
            cpus.append(time.thread_time() - cpu)
            walls.append(time.perf_counter() - wall)
            sent.append(behaviour.bytes_in - before_in)
            received.append(behaviour.bytes_out - before_out)
    finally:
        client.close()
    return {
        "open": statistics.median(opens) * 1000,
        "wall": statistics.median(walls) * 1000,
        "cpu": statistics.median(cpus) * 1000,
        "sent": statistics.median(sent) / 1000,
        "received": statistics.median(received) / 1000,
    }


async def runspaces(lab: ExchangeLab, refreshes: int, warmup: int) -> dict[str, tuple[int, int, int]]:
    """Per server: runspaces opened by the collector in its first ``warmup`` refreshes (when each kind is opened
    once: core, ExSetup's plain endpoint, health in depth in the background), opened after them, and
    authentications in all."""
    config = ExchangeConfig.model_validate(lab.config(interval=30, timeout=10))
    collector = ExchangeCollector(config, CredentialGuard())

    def created() -> dict[str, int]:
        return {name: e.behaviour.count["Create"] for name, e in lab.endpoints.items()}

    def authenticated() -> dict[str, int]:
        return {name: sum(e.behaviour.authentications.values()) for name, e in lab.endpoints.items()}

    before, auth_before = created(), authenticated()
    warm: dict[str, int] = {}
    try:
        for done in range(1, refreshes + 1):
            await collector.collect()
            if done == warmup:
                warm = created()
    finally:
        await collector.close()
    end, auth_end = created(), authenticated()
    return {
        name: (warm[name] - before[name], end[name] - warm[name], auth_end[name] - auth_before[name]) for name in end
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench remoting")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--refreshes", type=int, default=30, help=f"more than {WARMUP}")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-remoting-") as tmp:
        samba = SambaLab(Path(tmp) / "samba")
        started = time.monotonic()
        samba.provision()
        try:
            kerberos = LabKerberos(samba)
            with (
                ExchangeLab(Path(tmp) / "http", port=free_port(), kerberos=kerberos) as http,
                ExchangeLab(Path(tmp) / "https", port=free_port(), https=True, kerberos=kerberos) as https,
            ):
                print(f"lab domain and keys ready in {time.monotonic() - started:.1f} s")
                # The HTTPS servers also take Basic, so that both run on the same endpoint code.
                for endpoint in https.endpoints.values():
                    mechanisms = {path: (*m, "basic") for path, m in endpoint.auth.mechanisms.items()}
                    endpoint.auth = dataclasses.replace(endpoint.auth, mechanisms=mechanisms)
                basic = {"method": "basic", "user": "svc_exchange", "password_file": str(https.password_file)}
                kerberos_http = measure(http, kerberos.auth_config(), args.rounds)
                basic_https = measure(https, basic, args.rounds)
                counts = asyncio.run(runspaces(http, args.refreshes, WARMUP))
        finally:
            samba.teardown()
    print(f"\nper refresh (the four core cmdlets, {args.rounds} rounds, median), SOLO-E19A on loopback:")
    units = {"open": "ms", "wall": "ms", "cpu": "ms", "sent": "kB", "received": "kB"}
    labels = {
        "open": "runspace open",
        "wall": "wall",
        "cpu": "exporter cpu",
        "sent": "sent",
        "received": "received",
    }
    for key, unit in units.items():
        k, b = kerberos_http[key], basic_https[key]
        print(
            f"  {labels[key]:<14} kerberos+encryption/http {k:9.1f} {unit}   basic/https {b:9.1f} {unit}"
            f"   ratio {k / b if b else float('nan'):5.2f}"
        )
    print(f"\nthe Exchange collector for {args.refreshes} refreshes (Kerberos, HTTP; health in depth on):")
    steady = args.refreshes - WARMUP
    for name, (opened, later, authentications) in counts.items():
        per_hour = later * 60 / steady if steady > 0 else float("nan")  # 60 refreshes an hour at the default 60 s
        print(
            f"  {name}: runspaces opened in the first {WARMUP} refreshes {opened}, in the {steady} after {later} "
            f"({per_hour:.1f} per hour at 60 s); authentications {authentications}"
        )
    return 0
