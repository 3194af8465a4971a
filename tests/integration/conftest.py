"""The lab for integration tests: one real two-DC Samba domain per test session."""

from __future__ import annotations

import base64
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab import free_port, stop_process
from lab.exporter_config import write_config
from lab.kerberos import LabKerberos
from lab.samba import SambaLab

REQUIRED = ("samba", "samba-tool", "kinit", "smbclient", "unshare")


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaLab]:
    missing = [tool for tool in REQUIRED if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        pytest.fail(f"the lab needs root and {', '.join(REQUIRED)} (missing: {missing}); run ./run.sh test")
    lab = SambaLab(tmp_path_factory.mktemp("lab"), lockout_threshold=3, lockout_duration=15, observation_window=15)
    try:
        lab.provision()
        yield lab
    finally:
        lab.teardown(remove=False)


@pytest.fixture(scope="session")
def kerberos(lab: SambaLab) -> LabKerberos:
    """The lab domain's HTTP/<host> principals and keytab for the remoting endpoints, made once; this process's
    acceptors read the keytab, and every client here (and the exporters it starts) finds the lab KDC."""
    return LabKerberos(lab)


def scrape(port: int, path: str = "/metrics", timeout: float = 5, *, client: WebClient | None = None) -> str:
    client = client or WebClient()
    request = urllib.request.Request(f"{client.scheme}://{client.host}:{port}{path}", headers=client.headers())
    with urllib.request.urlopen(request, timeout=timeout, context=client.ssl_context) as response:
        return str(response.read().decode())


@dataclass
class WebClient:
    """How a test reaches the exporter: plain HTTP, or HTTPS with a CA (and a host name) and basic auth."""

    scheme: str = "http"
    host: str = "127.0.0.1"
    ssl_context: ssl.SSLContext | None = None
    user: str | None = None
    password: str | None = None

    def headers(self) -> dict[str, str]:
        if self.user is None:
            return {}
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}


class RunningExporter:
    def __init__(
        self, process: subprocess.Popen[str], port: int, log: Path, config: Path, client: WebClient | None = None
    ) -> None:
        self.process = process
        self.port = port
        self.log = log
        self.config = config
        self.client = client or WebClient()

    def metrics(self) -> str:
        return scrape(self.port, client=self.client)

    def page(self, path: str = "/") -> str:
        return scrape(self.port, path, client=self.client)

    def logs(self) -> str:
        return self.log.read_text()

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 30) -> str:
        """Until ``text`` appears ``count`` times in the log; return the log."""
        deadline = time.monotonic() + timeout
        while (logs := self.logs()).count(text) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged {count} times within {timeout}s; log:\n{logs}")
            time.sleep(0.2)
        return logs

    def wait_for(self, predicate: Any, timeout: float = 30, interval: float = 0.5) -> str:
        """Scrape until ``predicate(text)`` holds; return that scrape."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            try:
                text = self.metrics()
            except OSError:
                text = ""
            if text and predicate(text):
                return text
            time.sleep(interval)
        raise AssertionError(f"condition not met within {timeout}s; last scrape:\n{text}\nlog:\n{self.logs()}")


@contextmanager
def running_exporter(
    lab: SambaLab | None,
    tmp: Path,
    *,
    client: WebClient | None = None,
    env: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
    **config: Any,
) -> Iterator[RunningExporter]:
    """The exporter as a process, configured for the Samba lab and/or (``exchange=``) the Exchange lab; ``env``:
    added to its environment; ``prefix``: a command it runs under (setpriv, ...)."""
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = write_config(lab, tmp / "exporter.yml", port=port, **config)
    log = tmp / "exporter.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "exporter", f"--config.file={cfg}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
    running = RunningExporter(process, port, log, cfg, client)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if "Ready" in running.page("/-/ready"):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError(f"exporter not ready:\n{running.logs()}")
        yield running
    finally:
        stop_process(process)
