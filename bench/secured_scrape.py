"""What TLS and basic auth cost a scrape, against Prometheus' own exporter-toolkit with the same web config.

    python -m bench secured_scrape [--rounds 300] [--cost 12]

Prometheus 2.42 serves its endpoints through exporter-toolkit, the Go implementation of the web config format the
exporter reads. Both get one web config (a lab certificate, one bcrypt user of the given cost) and are asked over
HTTPS with basic auth, on one kept-alive connection as Prometheus scrapes, and with a new TLS connection per
request; the same without the web config gives each one's plain cost. Printed: the medians, each server's
overhead (secured minus plain) and the ratio of the overheads, and bcrypt's own cost, which an uncached check
would pay on every scrape.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.client
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import bcrypt
import yaml

from lab import free_port, stop_process
from lab.pki import LabCa

PASSWORD = "bench password"


def medians(port: int, path: str, context: ssl.SSLContext | None, auth: str | None, rounds: int) -> tuple[float, float]:
    """Median latency on one kept-alive connection, and with a new connection per request."""
    headers = {"Authorization": auth} if auth else {}

    def connect() -> http.client.HTTPConnection:
        if context is None:
            return http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        return http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)

    def once(conn: http.client.HTTPConnection) -> float:
        started = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{path} on {port}: HTTP {response.status}")
        return time.perf_counter() - started

    kept = connect()
    once(kept)  # the first request pays the handshake and the first bcrypt check
    keep_alive = statistics.median(once(kept) for _ in range(rounds))
    kept.close()
    fresh_times = []
    for _ in range(rounds):
        conn = connect()
        fresh_times.append(once(conn))
        conn.close()
    return keep_alive, statistics.median(fresh_times)


def wait(check: Callable[[], object]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            check()
            return
        except (OSError, RuntimeError, http.client.HTTPException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench secured_scrape")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--cost", type=int, default=12, help="bcrypt cost of the user's hash")
    args = parser.parse_args(argv)
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        print("prometheus is missing (./run.sh installs it)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-secured-") as tmp:
        directory = Path(tmp)
        ca = LabCa("Bench CA")
        ca_file = ca.write(directory / "ca.pem")
        issued = ca.issue(directory, "server", "localhost", dns=["localhost"], addresses=["127.0.0.1"])
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=args.cost)).decode()
        web_config = directory / "web.yml"
        web_config.write_text(
            yaml.safe_dump(
                {
                    "tls_server_config": {"cert_file": str(issued.cert_file), "key_file": str(issued.key_file)},
                    "basic_auth_users": {"bench": hashed},
                }
            )
        )
        (directory / "prometheus.yml").write_text("global: {scrape_interval: 1h}\n")
        (directory / "exporter.yml").write_text(f"state: {{path: {directory / 'state.db'}}}\n")
        context = ssl.create_default_context(cafile=ca_file)
        auth = "Basic " + base64.b64encode(f"bench:{PASSWORD}".encode()).decode()

        def start(kind: str, secured: bool) -> tuple[subprocess.Popen[bytes], int]:
            port = free_port()
            extra = [f"--web.config.file={web_config}"] if secured else []
            if kind == "prometheus":
                command = [
                    prometheus,
                    f"--config.file={directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={directory / f'tsdb-{port}'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    *extra,
                ]
            else:
                command = [
                    sys.executable,
                    "-m",
                    "exporter",
                    f"--config.file={directory / 'exporter.yml'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    *extra,
                ]
            return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), port

        # A small answer on each side: Prometheus' health endpoint, the exporter's /metrics with no collector
        # (the exporter leaves /-/healthy open by default, so it would not show the auth).
        paths = {"prometheus": "/-/healthy", "exporter": "/metrics"}
        results: dict[tuple[str, bool], tuple[float, float]] = {}
        for kind, path in paths.items():
            for secured in (False, True):
                process, port = start(kind, secured)
                try:
                    ctx, header = (context, auth) if secured else (None, None)
                    wait(functools.partial(medians, port, path, ctx, header, 1))
                    results[(kind, secured)] = medians(port, path, ctx, header, args.rounds)
                finally:
                    stop_process(process)
        started = time.perf_counter()
        for _ in range(5):
            bcrypt.checkpw(PASSWORD.encode(), hashed.encode())
        bcrypt_cost = (time.perf_counter() - started) / 5

    print(
        f"\nOne request, median of {args.rounds} (ms); TLS with a lab ECDSA P-256 certificate, basic auth with a "
        f"bcrypt cost-{args.cost} hash:"
    )
    print(f"  {'':<44}{'plain':>9}{'secured':>9}{'overhead':>10}")
    overheads: dict[tuple[str, int], float] = {}
    for index, label in enumerate(("kept-alive connection", "new connection per request")):
        for kind in paths:
            plain, guarded = results[(kind, False)][index], results[(kind, True)][index]
            overheads[(kind, index)] = guarded - plain
            print(
                f"  {kind + ', ' + label:<44}{plain * 1000:9.2f}{guarded * 1000:9.2f}{(guarded - plain) * 1000:10.2f}"
            )
        ratio = overheads[("exporter", index)] / overheads[("prometheus", index)]
        print(f"  {label}: exporter overhead / exporter-toolkit overhead = {ratio:.2f}")
    print(
        f"  bcrypt check (cost {args.cost}), what an uncached check would add to every scrape: "
        f"{bcrypt_cost * 1000:.1f} ms"
    )
    return 0
