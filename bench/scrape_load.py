"""Scrapes under load: the exporter holding about 1k, 10k and 50k series against node_exporter holding the same.

    python -m bench scrape_load [--series 1000,10000,50000] [--seconds 30] [--scrapers 20] [--refresh-interval 15]

The exporter side is the real registry and web app (``exporter.registry``, ``exporter.web``) in a process of its
own, holding N series as an estate does: one collector (target) per 1,000 series, in the shape of the AD families
(domain, DC, user), each refreshing every ``--refresh-interval`` seconds with jitter (15 s, the shortest default of
any collector; pass 2 to see refreshes and encodings go on all through the run), so encoding happens under load.
An event-loop monitor in that process records the worst lag (how late a 10 ms sleep wakes). The peer is Debian's
prometheus-node-exporter with only its textfile collector, fed a file of the same N series, measured the same way in
the same run. Load: wrk with ``--scrapers`` connections in a closed loop (each sends its next scrape when the last
answer is in), Prometheus' Accept header and ``Accept-Encoding: gzip``. Printed per size: p50 and p99 per scrape,
requests/s, bytes per scrape on the wire, the exporter's worst event-loop lag, and the p99 ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from lab import free_port, stop_process

ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
LABELS = ("domain", "dc", "user")


def _series(n: int) -> list[tuple[str, str, str, float]]:
    """N series spread over families of 1,000: (family, dc, user, value)."""
    return [(f"bench_family_{i // 1000}", f"dc{i % 7}", f"user{i:06d}", float(i % 97)) for i in range(n)]


def serve(n: int, port: int, interval: float) -> int:
    """The exporter side (a child process): registry + web app + a synthetic collector + a loop-lag monitor."""
    from aiohttp import web

    from exporter.metrics import Family, Series
    from exporter.registry import Collector, CollectorRegistry
    from exporter.web import build_app

    rows = _series(n)
    families = {name: Family(name, "gauge", "A benchmark family.", LABELS) for name, _, _, _ in rows}
    by_family: dict[str, list[tuple[str, str, float]]] = {name: [] for name in families}
    for name, dc, user, value in rows:
        by_family[name].append((dc, user, value))

    class Synthetic(Collector):
        """One target's 1,000 series (a domain's accounts, an Exchange server's components and queues)."""

        name = "bench"
        refreshes = 0

        async def collect(self) -> list[Series]:
            self.refreshes += 1  # new values every refresh, so that every refresh is encoded anew
            series = families[self.target].new()
            for dc, user, value in by_family[self.target]:
                series.add_metric(["bench.example", dc, user], value + self.refreshes)
            return [series]

        def describe(self) -> tuple[Family, ...]:
            return (families[self.target],)

    collectors = [Synthetic(name, interval=interval, timeout=30.0) for name in families]
    worst_lag = 0.0

    async def monitor() -> None:
        nonlocal worst_lag
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.01)
            worst_lag = max(worst_lag, time.perf_counter() - started - 0.01)

    async def main() -> None:
        nonlocal worst_lag
        registry = CollectorRegistry(collectors, jitter=0.5)
        for state in registry.states:
            await registry.refresh_once(state)
        gc.freeze()  # as the exporter does once started
        runner = web.AppRunner(build_app(lambda: registry), access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        registry.start()
        monitor_task = asyncio.create_task(monitor())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        reset = asyncio.Event()  # the load starts now: lag from start-up does not count
        loop.add_signal_handler(signal.SIGUSR1, reset.set)
        print("ready", flush=True)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
            if reset.is_set():
                reset.clear()
                worst_lag = 0.0
        monitor_task.cancel()
        refreshes = sum(state.attempts for state in registry.states)
        await registry.stop()
        await runner.cleanup()
        print(json.dumps({"worst_lag": worst_lag, "refreshes": refreshes, "builds": registry.exposition.builds}))

    asyncio.run(main())
    return 0


def textfile(n: int, directory: Path) -> None:
    lines = []
    current = None
    for name, dc, user, value in _series(n):
        if name != current:
            lines += [f"# HELP {name} A benchmark family.", f"# TYPE {name} gauge"]
            current = name
        lines.append(f'{name}{{domain="bench.example",dc="{dc}",user="{user}"}} {value}')
    (directory / "bench.prom").write_text("\n".join(lines) + "\n", encoding="utf-8")


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _duration(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


def wrk(url: str, seconds: int, scrapers: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t", "2", "-c", str(scrapers), "-d", f"{seconds}s", "--latency", "--timeout", "60s",
         "-H", f"Accept: {ACCEPT}", "-H", "Accept-Encoding: gzip", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if re.search(r"^\s+0 requests in", out, re.M):
        # Not one scrape finished within the run: slower than the run itself.
        return {"p50": float("inf"), "p99": float("inf"), "rps": 0.0, "bytes": 0.0, "errors": 0.0}
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    if len(latency) != 2:
        raise RuntimeError(f"wrk gave no latency distribution for {url}:\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    read = re.search(r"requests in [\d.]+\w+, ([\d.]+)(B|KB|MB|GB) read", out)
    assert read is not None, out
    size = float(read.group(1)) * {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[read.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "p50": _duration(latency["50"]),
        "p99": _duration(latency["99"]),
        "rps": requests / seconds,
        "bytes": size / max(requests, 1),
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def _wait(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - loopback only
                answer.read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def run(sizes: list[int], seconds: int, scrapers: int, interval: float) -> int:
    node_exporter = shutil.which("prometheus-node-exporter")
    if node_exporter is None or shutil.which("wrk") is None:
        print("prometheus-node-exporter and wrk are needed (./run.sh installs them)", file=sys.stderr)
        return 2
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-scrape-") as tmp:
            directory = Path(tmp)
            textfile(n, directory)
            node_port, exporter_port = free_port(), free_port()
            node = subprocess.Popen(
                [node_exporter, f"--web.listen-address=127.0.0.1:{node_port}", "--collector.disable-defaults",
                 "--collector.textfile", f"--collector.textfile.directory={directory}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            ours = subprocess.Popen(
                [sys.executable, "-m", "bench", "scrape_load", "--serve", str(n), "--port", str(exporter_port),
                 "--refresh-interval", str(interval)],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            try:
                assert ours.stdout is not None
                if ours.stdout.readline().strip() != "ready":
                    raise RuntimeError("the exporter side did not start")
                _wait(f"http://127.0.0.1:{node_port}/metrics")
                peer = wrk(f"http://127.0.0.1:{node_port}/metrics", seconds, scrapers)
                ours.send_signal(signal.SIGUSR1)
                mine = wrk(f"http://127.0.0.1:{exporter_port}/metrics", seconds, scrapers)
                ours.send_signal(signal.SIGTERM)
                report = json.loads(ours.stdout.readline())
            finally:
                stop_process(ours)
                stop_process(node)
        rows.append((n, mine, peer, report))
    print(
        f"{scrapers} closed-loop scrapers for {seconds}s each, gzip, Prometheus' Accept header; the exporter's "
        f"collectors (one per 1,000 series) refresh every {interval:g}s"
    )
    header = (
        f"{'series':>7} | {'who':<13} | {'p50 ms':>7} | {'p99 ms':>7} | {'req/s':>7} | {'KiB/scrape':>10} | "
        f"{'loop lag ms':>11} | {'errors':>6}"
    )
    print(header)
    print("-" * len(header))
    for n, mine, peer, report in rows:
        for who, r, lag in (("exporter", mine, f"{report['worst_lag'] * 1000:.1f}"), ("node_exporter", peer, "-")):
            print(
                f"{n:>7} | {who:<13} | {r['p50'] * 1000:>7.2f} | {r['p99'] * 1000:>7.2f} | {r['rps']:>7.0f} | "
                f"{r['bytes'] / 1024:>10.1f} | {lag:>11} | {r['errors']:>6.0f}"
            )
        ratio = mine["p99"] / peer["p99"] if peer["p99"] else float("inf")
        print(
            f"{'':>7} | p99 ratio exporter/node_exporter {ratio:.2f}; "
            f"{report['refreshes']} refreshes and {report['builds']} encodings during the run"
        )
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench scrape_load")
    parser.add_argument("--series", default="1000,10000,50000")
    parser.add_argument(
        "--seconds", type=int, default=30, help="per server and size (node_exporter needs ~1 s a scrape at 50k)"
    )
    parser.add_argument("--scrapers", type=int, default=20)
    parser.add_argument(
        "--refresh-interval", type=float, default=15.0,
        help="each collector's refresh interval (15 s is the shortest default of any collector)",
    )  # fmt: skip
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        return serve(args.serve, args.port, args.refresh_interval)
    return run([int(n) for n in args.series.split(",")], args.seconds, args.scrapers, args.refresh_interval)
