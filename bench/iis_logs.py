"""IIS log throughput: the exporter's tailer and parser against mtail, mawk and a plain Python loop.

    python -m bench iis_logs [--lines 1000000]

One IIS log written by the lab writer (Exchange front-end traffic). Every contender counts the 401s by
sc-win32-status and protocol (the first path segment of cs-uri-stem); the exporter also counts every request
by protocol and status, follows the file with its tailer and commits its checkpoint and counters every 4 MiB,
as in production, in a process of its own whose peak memory is reported.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from lab.exchange_logs import LogWriter

MTAIL_PROGRAM = textwrap.dedent(r"""
    counter iis_unauthorized by protocol, win32
    /^\S+ \S+ \S+ \S+ \/(?P<app>[^\/ ]*)\S* \S+ \S+ \S+ \S+ \S+ \S+ 401 \d+ (?P<win32>\d+) \d+$/ {
      iis_unauthorized[$app][$win32]++
    }
""")
MAWK_PROGRAM = '$12 == 401 { split($5, a, "/"); c[tolower(a[2]) " " $14]++ } END { for (k in c) print k, c[k] }'
PYTHON_LOOP = textwrap.dedent("""
    import sys, time
    from collections import Counter
    started = time.perf_counter()
    counts = Counter()
    with open(sys.argv[1], encoding="utf-8", errors="replace") as log:
        for line in log:
            if line.startswith("#"):
                continue
            fields = line.split(" ")
            if fields[11] == "401":
                counts[(fields[4].split("/")[1].lower(), fields[13])] += 1
    print(time.perf_counter() - started, sum(counts.values()))
""")
EXPORTER = textwrap.dedent("""
    import asyncio, json, resource, sys, time
    from pathlib import Path
    from exporter.collectors.exchange_logs import ExchangeLogsCollector
    from exporter.config import parse_config
    from exporter.state import StateStore

    path, state = sys.argv[1], sys.argv[2]
    config = parse_config(f'exchange_logs: [{{server: EX1, iis: ["{path}"], start_at: beginning, '
                          f'interval_seconds: 3600}}]').exchange_logs[0]
    collector = ExchangeLogsCollector(config, StateStore(Path(state)))
    started = time.perf_counter()
    asyncio.run(collector.collect())
    elapsed = time.perf_counter() - started
    counts = collector.sources[0].counts
    print(json.dumps({"seconds": elapsed, "unauthorized": sum(counts.unauthorized.values()),
                      "requests": sum(counts.requests.values()), "lines": collector.sources[0].lines,
                      "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
""")


def write_log(path: Path, lines: int) -> int:
    """The lab writer's front-end traffic, ``lines`` requests; returns the 401s written."""
    writer = LogWriter(path.parent / "writer", seed=2)
    with path.open("w", encoding="utf-8") as out:
        out.write(
            f"#Software: Microsoft Internet Information Services 10.0\n#Version: 1.0\n"
            f"#Date: 2026-11-27 00:00:00\n#Fields: {writer.iis_fields}\n"
        )
        for _ in range(lines // 10_000):
            out.write("\n".join(writer._request() for _ in range(10_000)) + "\n")
    return sum(n for key, n in writer.truth.items() if key[0] == "iis_unauthorized")


def timed(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, result.stdout


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench iis_logs")
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="bench-iis-"))
    log = directory / "u_ex261127.log"
    print(f"writing {args.lines:,} IIS lines ...", flush=True)
    unauthorized = write_log(log, args.lines)
    size = log.stat().st_size
    print(f"{log.name}: {size / 2**20:.0f} MiB, {unauthorized:,} of them 401s\n", flush=True)

    report = json.loads(
        subprocess.run(
            [sys.executable, "-c", EXPORTER, str(log), str(directory / "state.db")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert report["unauthorized"] == unauthorized and report["requests"] == args.lines, report
    rates = {"exporter (tailer + parser + checkpoints)": args.lines / report["seconds"]}
    loop_seconds = float(
        subprocess.run(
            [sys.executable, "-c", PYTHON_LOOP, str(log)], capture_output=True, text=True, check=True
        ).stdout.split()[0]
    )
    rates["plain Python split loop"] = args.lines / loop_seconds
    mawk = shutil.which("mawk")
    if mawk:
        seconds, _ = timed([mawk, MAWK_PROGRAM, str(log)])
        rates["mawk"] = args.lines / seconds
    mtail = shutil.which("mtail")
    if mtail:
        program = directory / "iis.mtail"
        program.write_text(MTAIL_PROGRAM)
        seconds, _ = timed(
            [
                mtail,
                "--one_shot",
                "--one_shot_format=prometheus",
                "--progs",
                str(program),
                "--logs",
                str(log),
                "--logtostderr",
            ]
        )
        rates["mtail (one_shot)"] = args.lines / seconds
    exporter = rates["exporter (tailer + parser + checkpoints)"]
    print(f"{'':<44}{'lines/s':>12}{'exporter / it':>16}")
    for name, rate in rates.items():
        print(f"  {name:<42}{rate:>12,.0f}{exporter / rate:>15.2f}x")
    print(
        f"\n  exporter peak RSS {report['peak_rss'] / 2**20:.1f} MiB (its own process; goal: >= 4x mtail, >= 0.5x mawk)"
    )
    shutil.rmtree(directory, ignore_errors=True)
    return 0
