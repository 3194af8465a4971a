"""The soak: the whole demo (every collector against the lab, its traffic and failures running) under 20 scrapers
that behave like Prometheus, for 10 minutes or as long as asked.

    python -m bench soak [--minutes 10] [--scrapers 20] [--sample-seconds 10]

Each scraper asks every second, as a Prometheus server with a 1 s scrape interval would, on its own kept-alive
connection, with Prometheus' timeout header; half ask for OpenMetrics, half for the text format, and all but every
fourth accept gzip. Sampled every ``--sample-seconds`` from /proc and the exporter's own metrics: RSS, open file
descriptors, threads, the state database's size (with its WAL), and collector refresh success. Printed: a row per
minute, then scrapes, errors, p50/p99/max latency, the RSS slope (MiB per hour, least squares over the second half,
after warm-up) against a limit of 1 MiB/h, and the spread of descriptors and threads.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab import free_port

ACCEPTS = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "text/plain;version=0.0.4;q=1,*/*;q=0.1",
)
RSS_SLOPE_LIMIT = 1.0  # MiB per hour


@dataclass
class Sample:
    at: float
    rss_mib: float
    fds: int
    threads: int
    state_kib: float
    collectors_ok: int
    collectors: int


@dataclass
class Load:
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


def _proc(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def _exporter_pid(demo: int, deadline: float) -> int:
    while time.monotonic() < deadline:
        pattern = "exporter --config.file"
        found = subprocess.run(["pgrep", "-P", str(demo), "-f", pattern], capture_output=True, text=True)
        if found.stdout.strip():
            return int(found.stdout.split()[0])
        time.sleep(0.5)
    raise RuntimeError("the demo's exporter did not start")


def _state_files(pid: int) -> list[Path]:
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    config = next(a for a in cmdline if a.startswith(b"--config.file=")).split(b"=", 1)[1].decode()
    root = Path(config).parent
    return [root / "state.db", root / "state.db-wal"]


async def _scraper(index: int, url: str, until: float, load: Load) -> None:
    import aiohttp

    headers = {"Accept": ACCEPTS[index % 2], "X-Prometheus-Scrape-Timeout-Seconds": "1"}
    if index % 4 != 3:
        headers["Accept-Encoding"] = "gzip"
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        next_at = time.monotonic() + index / 20  # spread over the second, as Prometheus offsets its targets
        while next_at < until:
            await asyncio.sleep(max(next_at - time.monotonic(), 0))
            started = time.perf_counter()
            try:
                async with session.get(url, headers=headers) as response:
                    body = await response.read()
                    if response.status != 200 or not body:
                        load.error(f"HTTP {response.status}")
                    else:
                        load.latencies.append(time.perf_counter() - started)
            except (aiohttp.ClientError, TimeoutError) as exc:
                load.error(type(exc).__name__)
            next_at += 1.0


async def _sampler(url: str, pid: int, until: float, every: float, samples: list[Sample]) -> None:
    import aiohttp

    files = _state_files(pid)
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < until:
            async with session.get(url) as response:
                text = await response.text()
            success = [
                float(v) for v in re.findall(r"^ad_exchange_exporter_collector_success\{[^}]*\} (\S+)$", text, re.M)
            ]
            samples.append(
                Sample(
                    time.monotonic(),
                    _proc(pid, "VmRSS") / 1024,
                    len(os.listdir(f"/proc/{pid}/fd")),
                    _proc(pid, "Threads"),
                    sum(f.stat().st_size for f in files if f.exists()) / 1024,
                    sum(1 for v in success if v == 1.0),
                    len(success),
                )
            )
            await asyncio.sleep(every)


def _slope_per_hour(points: list[tuple[float, float]]) -> float:
    if len(points) < 3:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 3600


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench soak")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--scrapers", type=int, default=20)
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    parser.add_argument("--warmup-seconds", type=float, default=60.0, help="after the exporter is ready")
    args = parser.parse_args(argv)

    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "lab", "demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert demo.stdout is not None
    try:
        for line in demo.stdout:
            if "Exporter metrics:" in line:
                break
        else:
            print("the demo did not start", file=sys.stderr)
            return 1
        pid = _exporter_pid(demo.pid, time.monotonic() + 60)
        url = f"http://127.0.0.1:{port}/metrics"
        _wait_ready(f"http://127.0.0.1:{port}/-/ready", time.monotonic() + 120)
        print(f"soak: demo up, exporter pid {pid}; warming up {args.warmup_seconds:.0f} s", flush=True)
        time.sleep(args.warmup_seconds)
        load, samples = Load(), list[Sample]()
        started = time.monotonic()
        until = started + args.minutes * 60

        async def run() -> None:
            await asyncio.gather(
                *(_scraper(i, url, until, load) for i in range(args.scrapers)),
                _sampler(url, pid, until, args.sample_seconds, samples),
            )

        asyncio.run(run())
        return _report(args, load, samples, started)
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        try:
            demo.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)


def _wait_ready(url: str, deadline: float) -> None:
    import urllib.request

    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - the lab's own http URL
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError("the exporter did not become ready")


def _row(label: str, s: Sample) -> str:
    ok = f"{s.collectors_ok}/{s.collectors}"
    return f"{label:>6} {s.rss_mib:>8.1f} {s.fds:>5} {s.threads:>7} {s.state_kib:>10.0f} {ok:>14}"


def _report(args: argparse.Namespace, load: Load, samples: list[Sample], started: float) -> int:
    print(f"\n{'minute':>6} {'RSS MiB':>8} {'fds':>5} {'threads':>7} {'state KiB':>10} {'collectors ok':>14}")
    shown = set()
    for s in samples:
        minute = int((s.at - started) // 60)
        if minute not in shown:
            shown.add(minute)
            print(_row(str(minute), s))
    last = samples[-1]
    print(_row("end", last))
    latencies = sorted(load.latencies)
    errors = sum(load.errors.values())
    total = len(latencies) + errors
    p50 = latencies[len(latencies) // 2] * 1000 if latencies else 0.0
    p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else 0.0
    worst = latencies[-1] * 1000 if latencies else 0.0
    half = [s for s in samples if s.at >= started + (samples[-1].at - started) / 2]
    slope = _slope_per_hour([(s.at, s.rss_mib) for s in half])
    ok_share = sum(s.collectors_ok for s in samples) / max(sum(s.collectors for s in samples), 1)
    print(f"\n{args.minutes:g} min, {args.scrapers} scrapers at 1/s: {total:,} scrapes, errors {errors} {load.errors}")
    print(f"latency p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms")
    print(f"collector refreshes successful in {ok_share:.1%} of samples (the demo's failures included)")
    ratio = abs(slope) / RSS_SLOPE_LIMIT
    print(f"RSS slope over the second half: {slope:+.2f} MiB/h; limit {RSS_SLOPE_LIMIT:g} MiB/h: ratio {ratio:.2f}")
    fds, threads = [s.fds for s in samples], [s.threads for s in samples]
    print(
        f"fds {min(fds)}..{max(fds)}, threads {min(threads)}..{max(threads)}, "
        f"state database {samples[0].state_kib:.0f} -> {last.state_kib:.0f} KiB"
    )
    return 0 if not load.errors else 1
