"""Exchange refresh cost per server: the core cmdlets against the core plus health in depth.

    python -m bench exchange [--rounds 20] [--interval 60] [--health-interval 300]

Runs every cmdlet the Exchange collector sends to one server through the exporter's own client (pypsrp) against
the lab's WS-Management/PSRP endpoint on loopback, ``--rounds`` times, and prints per cmdlet: the median wall time,
the exporter's CPU (the calling thread's, which does pypsrp's work and the parsing), the HTTP bytes each way and
the objects returned. Then the refresh as it was (the four core cmdlets and ExSetup's version) against the refresh
with health in depth, whose slow cmdlets count at --interval / --health-interval of their cost (they run every
health interval, not every refresh), as a ratio; and the slowest cmdlet. The lab answers at once: what a real
server spends computing Get-ServerHealth is not in these figures, only what the exporter and the wire pay.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exporter.collectors import exchange_health as health
from exporter.config import ExchangeConfig
from exporter.parsers import exchange as ex
from exporter.parsers import exchange_health as eh
from exporter.parsers.clixml import parse_each
from exporter.sources.credential_guard import CredentialGuard
from exporter.sources.winrm import PsrpClient, RemotingCredential, RemotingTarget
from lab import free_port
from lab.exchange import ExchangeLab

SERVER = "SOLO-E19A"
CORE: list[tuple[str, dict[str, Any], Callable[[Any], Any] | None]] = [
    ("Get-ExchangeServer", {"Identity": SERVER}, None),
    ("Get-ServerComponentState", {"Identity": SERVER}, ex.parse_component_state),
    ("Get-Queue", {"Server": SERVER}, ex.parse_queue),
    ("Get-ExchangeCertificate", {"Server": SERVER}, ex.parse_certificate),
]


def measure(
    client: PsrpClient, lab: ExchangeLab, cmdlet: str, params: dict[str, Any], parse: Any, rounds: int
) -> dict[str, float]:
    behaviour = lab.endpoints["solo-e19a"].behaviour
    walls, cpus, objects = [], [], 0
    bytes_in = bytes_out = 0
    for _ in range(rounds):
        before_in, before_out = behaviour.bytes_in, behaviour.bytes_out
        wall, cpu = time.perf_counter(), time.thread_time()
        answer = client.run(cmdlet, params)
        if parse is not None:
            parse_each(answer, parse, [])
        cpus.append(time.thread_time() - cpu)
        walls.append(time.perf_counter() - wall)
        bytes_in, bytes_out = behaviour.bytes_in - before_in, behaviour.bytes_out - before_out
        objects = len(answer)
    return {
        "wall": statistics.median(walls),
        "cpu": statistics.median(cpus),
        "sent": float(bytes_in),
        "received": float(bytes_out),
        "objects": float(objects),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench exchange", description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--interval", type=float, default=60.0)
    parser.add_argument("--health-interval", type=float, default=300.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-exchange-") as tmp, ExchangeLab(Path(tmp), port=free_port()) as lab:
        config = ExchangeConfig.model_validate(lab.config())
        credential = RemotingCredential.of(config)
        guard = CredentialGuard()

        def client(path: str, configuration: str) -> PsrpClient:
            e19a = next(s for s in config.servers if s.name.lower() == "solo-e19a")
            target = RemotingTarget.of(config, e19a, lab.port, path, configuration)
            return PsrpClient(target, credential, guard, config.bind_retry_after_seconds)

        exchange, plain = client(config.path, config.configuration_name), client("wsman", "Microsoft.PowerShell")
        rows: list[tuple[str, str, dict[str, float]]] = []
        try:
            exchange.run("Get-ExchangeServer", {"Identity": SERVER})  # the runspace opened once, as the collector does
            plain.run("Get-Command", {"Name": "ExSetup.exe"})
            for cmdlet, params, parse in CORE:
                rows.append(("core", cmdlet, measure(exchange, lab, cmdlet, params, parse, args.rounds)))
            rows.append(
                (
                    "core",
                    "Get-Command ExSetup.exe",
                    measure(plain, lab, "Get-Command", {"Name": "ExSetup.exe"}, ex.parse_exsetup_version, args.rounds),
                )
            )
            for kind, cmdlets in (("every", health.EVERY_REFRESH), ("slow", health.SLOW)):
                for cmdlet, params in health.calls(SERVER, cmdlets):
                    rows.append(
                        (kind, cmdlet, measure(exchange, lab, cmdlet, params, health.PARSERS[cmdlet], args.rounds))
                    )
            rows.append(
                (
                    "slow",
                    health.MITIGATION_CMDLET,
                    measure(
                        plain,
                        lab,
                        "Get-Service",
                        {"Name": health.MITIGATION_SERVICE},
                        eh.parse_service,
                        args.rounds,
                    ),
                )
            )
        finally:
            exchange.close()
            plain.close()
    print(f"Exchange refresh cost per server, lab endpoint on loopback, median of {args.rounds} rounds")
    print(f"{'set':6} {'cmdlet':44} {'wall ms':>8} {'cpu ms':>7} {'sent B':>8} {'recv B':>9} {'objects':>7}")
    for kind, cmdlet, m in rows:
        figures = f"{m['wall'] * 1000:8.2f} {m['cpu'] * 1000:7.2f} {m['sent']:8.0f} {m['received']:9.0f}"
        print(f"{kind:6} {cmdlet:44} {figures} {m['objects']:7.0f}")
    share = args.interval / args.health_interval

    def total(key: str, kinds: tuple[str, ...]) -> float:
        return sum(m[key] * (share if kind == "slow" else 1.0) for kind, _, m in rows if kind in kinds)

    every = f"every {args.interval:g} s; slow cmdlets every {args.health_interval:g} s, counted at {share:.2f}"
    print(f"\nper refresh ({every}):")
    for key, unit, scale in (("wall", "ms", 1000), ("cpu", "ms", 1000), ("sent", "B", 1), ("received", "B", 1)):
        old, new = total(key, ("core",)), total(key, ("core", "every", "slow"))
        print(
            f"  {key:9} before {old * scale:10.1f} {unit:2}   with health in depth {new * scale:10.1f} {unit:2}"
            f"   ratio {new / old:5.2f}"
        )
    slowest = max(rows, key=lambda r: r[2]["wall"])
    print(f"slowest cmdlet: {slowest[1]} ({slowest[2]['wall'] * 1000:.1f} ms wall, {slowest[2]['received']:.0f} B)")
    print(
        "The health cmdlets run on a second runspace in the background: the core refresh's own wall time is unchanged."
    )
    return 0
