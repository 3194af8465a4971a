"""Security events: parse speed per format against the bare decoding of that format, and the exporter's memory
and throughput working off a 100,000-event backlog over PowerShell remoting and from a file.

    python -m bench security_events [--events 100000]
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from defusedxml import ElementTree as SafeET

from exporter.parsers import events as ev
from exporter.parsers import safexml
from lab import stop_process
from lab.exporter_config import write_config
from lab.winevent import DC_SAMPLES, EventLab, Record, sample_events, winlogbeat_line

SAMBA_LINES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "samba_auth_json.log"


def _rate(function: Callable[[str], Any], lines: list[str]) -> float:
    started = time.perf_counter()
    for line in lines:
        function(line)
    return len(lines) / (time.perf_counter() - started)


def parse_rates(count: int) -> None:
    xml = [x for files in DC_SAMPLES.values() for name in files for x in sample_events(name)]
    xml_lines = list(itertools.islice(itertools.cycle(xml), count))
    beats = list(itertools.islice(itertools.cycle([winlogbeat_line(x) for x in xml]), count))
    samba = list(itertools.islice(itertools.cycle(SAMBA_LINES.read_text().splitlines()), count))
    print(
        f"\nParsing {count} events per format, in one process (events/s, best of five runs; the bare decode is "
        "the format's floor):"
    )
    print(f"  {'format':<18}{'exporter parser':>16}{'bare decode':>14}{'bare/parser':>13}")
    for name, lines, parse, bare in (
        # The floor is the same safe parser (lxml, no DTD) the exporter uses; defusedxml's below for the record.
        ("event XML", xml_lines, ev.parse_event_xml, safexml.parse),
        ("(defusedxml only)", xml_lines, ev.parse_event_xml, SafeET.fromstring),
        ("Winlogbeat JSON", beats, ev.parse_winlogbeat, json.loads),
        ("Samba audit JSON", samba, lambda line: ev.parse_samba_auth(line, "dc1"), json.loads),
    ):
        # Best of five runs each, taken in turn: the machine's noise hits both alike.
        runs = [(_rate(parse, lines), _rate(bare, lines)) for _ in range(5)]
        parser, floor = max(r[0] for r in runs), max(r[1] for r in runs)
        print(f"  {name:<18}{parser:>16,.0f}{floor:>14,.0f}{floor / parser:>12.2f}x")


def _scrape(port: int) -> tuple[float, float, float]:
    """(RSS bytes, events counted, the last refresh's duration) from the exporter's /metrics."""
    rss, counted, duration = 0.0, 0.0, 0.0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("process_resident_memory_bytes "):
                rss = float(line.split()[1])
            elif line.startswith("ad_security_events_total{"):
                counted += float(line.rsplit(" ", 1)[1])
            elif line.startswith('ad_exchange_exporter_collector_duration_seconds{collector="security_events"'):
                duration = float(line.rsplit(" ", 1)[1])
    return rss, counted, duration


def drain(config: Path, port: int, expected: int, limit: float = 600) -> tuple[float, float, float]:
    """Run the exporter until it has counted ``expected`` events; return (seconds, peak RSS bytes, the longest
    refresh's duration)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", f"--config.file={config}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started, peak, counted, longest = time.monotonic(), 0.0, 0.0, 0.0
    try:
        while time.monotonic() - started < limit:
            time.sleep(0.5)
            try:
                rss, counted, duration = _scrape(port)
            except OSError:
                continue
            peak, longest = max(peak, rss), max(longest, duration)
            if counted >= expected:
                return time.monotonic() - started, peak, longest
        raise RuntimeError(f"only {counted:.0f} of {expected} events counted within {limit:.0f}s")
    finally:
        stop_process(process)


def backlog(count: int, directory: Path) -> None:
    port = 9798
    with EventLab(directory / "events", port=5987) as lab:
        pdc = lab.logs["dc1.lab.example"]
        for dc in lab.logs:
            if dc != "dc1.lab.example":
                lab.logs[dc].records.clear()
        pdc.records.clear()
        pdc.records.extend(sample_records(count))
        winrm = lab.winrm_config(timeout=8, batch_size=1000, max_batches_per_refresh=10)
        config = write_config(
            None,
            directory / "winrm.yml",
            port=port,
            interval=10,
            timeout=8,
            events=lab,
            state=directory / "winrm-state.db",
            events_overrides={"winrm": winrm},
        )
        seconds, peak, longest = drain(config, port, count)
    per_refresh = 10 * 1000
    print(
        f"\nA backlog of {count} events on one DC, read over PowerShell remoting (real exporter process, batches "
        "of 1000, 10 per refresh, a refresh every 10 s):"
    )
    print(
        f"  drained in {seconds:.1f}s; a {per_refresh}-event refresh took {longest:.2f}s "
        f"= {per_refresh / longest:,.0f} events/s over PSRP, {longest / 10:.0%} of the interval; "
        f"peak RSS {peak / 2**20:.1f} MiB"
    )
    beats = directory / "winlogbeat" / "security.ndjson"
    beats.parent.mkdir(parents=True, exist_ok=True)
    xml = [r.xml for r in sample_records(count)]
    beats.write_text("\n".join(winlogbeat_line(x) for x in xml) + "\n")
    config = write_config(
        None,
        directory / "file.yml",
        port=port,
        interval=2,
        timeout=1,
        state=directory / "file-state.db",
        events_overrides={
            "name": "lab.example",
            "files": [{"path": str(beats), "format": "winlogbeat", "start_at": "beginning"}],
        },
    )
    seconds, peak, _ = drain(config, port, count)
    print(f"A backlog of {count} Winlogbeat lines in a file ({beats.stat().st_size / 2**20:.0f} MiB):")
    print(f"  drained in {seconds:.1f}s = {count / seconds:,.0f} events/s end to end; peak RSS {peak / 2**20:.1f} MiB")


def sample_records(count: int) -> list[Record]:
    """``count`` events cycled from the samples, renumbered as one DC's log."""
    xml = [x for files in DC_SAMPLES.values() for name in files for x in sample_events(name)]
    out = []
    for record_id, template in enumerate(itertools.islice(itertools.cycle(xml), count), start=1):
        text = re.sub(r"<EventRecordID>\d+</EventRecordID>", f"<EventRecordID>{record_id}</EventRecordID>", template)
        out.append(Record(record_id, int(re.findall(r"<EventID[^>]*>(\d+)</EventID>", text)[0]), text))
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench security_events")
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args(argv)
    parse_rates(min(args.events, 50_000))
    backlog(args.events, Path(tempfile.mkdtemp(prefix="bench-events-")))
    return 0
