"""The Quick start demo as a person runs it: ``python -m lab demo`` in the foreground, its URLs, its lockout
stories answered by the CLI and the pages in headless Chromium, and its teardown on SIGTERM.

It runs in a network namespace of its own (only a loopback there), so its DCs on 127.0.0.2/127.0.0.6 and its
exporter on 127.0.0.1:9733 never meet the suite's lab on the same addresses; the CLI and Chromium join it there.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import CHROMIUM_FLAGS, dom_tables, metric, require_binary

ROOT = Path(__file__).resolve().parents[2]
PORT = 9733


class Demo:
    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_line(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first line of the demo's output matching ``pattern``, waiting for it to be printed."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if found := re.search(pattern, line):
                        return found
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    raise AssertionError(f"the demo never printed {pattern!r}:\n" + "\n".join(self.lines))
                self._changed.wait(left)

    def inside(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``command`` run in the demo's network namespace."""
        return subprocess.run(
            ["nsenter", "-t", str(self.process.pid), "-n", *command],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture
def demo() -> Iterator[Demo]:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"):
        pytest.skip("the demo needs root and util-linux's unshare and nsenter")
    # exec: the demo's Python is unshare's child, so its pid names the namespace and takes the SIGTERM.
    start = 'ip link set lo up && exec "$0" -u -m lab demo'
    process = subprocess.Popen(
        ["unshare", "-n", "--fork", "--kill-child", "sh", "-c", start, sys.executable],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    running = Demo(process)
    try:
        yield running
    finally:
        child = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
        for pid in child:
            os.kill(int(pid), signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def test_the_demo_tells_its_stories(demo: Demo, tmp_path: Path) -> None:
    chromium = require_binary("chromium")
    url = demo.wait_for_line(r"Exporter metrics: (http://127\.0\.0\.1:\d+/metrics)", timeout=180).group(1)
    assert url == f"http://127.0.0.1:{PORT}/metrics"
    phone = demo.wait_for_line(r"through SOLO-E19A: (http://\S+/lockouts/(\w+))", timeout=10)
    service = demo.wait_for_line(r"binding to DC2: (http://\S+/lockouts/(\w+))", timeout=10)
    demo.wait_for_line(r"are locked out: see their pages above", timeout=120)
    base = f"http://127.0.0.1:{PORT}"
    # The CLI the demo names: the phone through the Exchange server, found within a refresh (10 s) or two.
    deadline = time.monotonic() + 30
    while True:
        answer = demo.inside(sys.executable, "-m", "exporter", "investigate", phone.group(2), "--url", base)
        if answer.returncode == 0 and "Most likely: device ApplF17XYZ0001 through solo-e19a" in answer.stdout:
            break
        assert time.monotonic() < deadline, answer.stdout + answer.stderr
        time.sleep(1)
    assert "stale credential" in answer.stdout and "no caller computer" in answer.stdout
    # The DirectAccess server and both canary laptops answer (the firewall story comes later in the demo).
    scraped = demo.inside("curl", "-sf", url)
    assert scraped.returncode == 0, scraped.stderr
    assert metric(scraped.stdout, "directaccess_server_up", server="da1") == 1
    assert [metric(scraped.stdout, "directaccess_client_up", client=c) for c in ("laptop-01", "laptop-02")] == [1, 1]
    # The lab's Exchange servers and DCs' WinRM take Kerberos only, with message encryption: these are up by it.
    assert [metric(scraped.stdout, "exchange_server_up", server=s) for s in ("solo-e16a", "solo-e19a")] == [1, 1]
    for dc in ("dc1.lab.example", "dc2.lab.example"):
        assert metric(scraped.stdout, "ad_security_events_source_up", dc=dc, source="winrm") == 1

    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}"]

    def pages_say_it() -> None:
        pages = {}
        for path in ("/lockouts", f"/lockouts/{phone.group(2)}", f"/lockouts/{service.group(2)}"):
            shown = demo.inside(chromium, *flags, "--dump-dom", base + path)
            assert shown.returncode == 0, shown.stderr
            pages[path] = dom_tables(shown.stdout)
        tables, texts = pages["/lockouts"]
        locked = {row[1]: row for row in tables["locked"][1:]}
        assert "ApplF17XYZ0001" in locked[phone.group(2)][5] and "solo-e19a" in locked[phone.group(2)][5]
        assert "127.0.0.23" in locked[service.group(2)][5]
        tables, texts = pages[f"/lockouts/{phone.group(2)}"]
        assert "device ApplF17XYZ0001 through solo-e19a" in texts["verdict"]
        # The lock was written on DC1 (the other DC may hold it too once replication brings it).
        dcs = {row[0]: row for row in tables["dcs-lab.example"][1:]}
        assert dcs["dc1.lab.example (PDC)"][2] == "Locked" and "dc2.lab.example" in dcs
        tables, texts = pages[f"/lockouts/{service.group(2)}"]
        assert "address 127.0.0.23" in texts["verdict"] and "stale credential" in texts["verdict"]

    # The lists come from the collectors' last refresh (every 10 s in the demo): within a refresh or two.
    deadline = time.monotonic() + 45
    while True:
        try:
            pages_say_it()
            break
        except (AssertionError, KeyError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{exc!r}; the demo said:\n" + "\n".join(demo.lines)) from exc
            time.sleep(2)

    # Ctrl-C (here SIGTERM) tears the lab down and the demo says so.
    for pid in subprocess.run(["pgrep", "-P", str(demo.process.pid)], capture_output=True, text=True).stdout.split():
        os.kill(int(pid), signal.SIGTERM)
    assert demo.process.wait(60) == 0
    demo.wait_for_line(r"tearing the lab down", timeout=5)
