"""Real Prometheus and Alertmanager processes on loopback, and a webhook receiver for Alertmanager's notifications."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import yaml

from lab import free_port, stop_process


def _binary(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError(f"{' or '.join(names)} is missing; run ./run.sh test (it installs the Debian package)")


def _get_json(url: str, timeout: float = 10) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:  # Prometheus answers a bad query with 400 and a JSON error
        return json.load(exc)


class _Process:
    """A server process with a config file, a log and a readiness URL."""

    name = ""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 30) -> None:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready within {timeout}s:\n{self.log.read_text()}")

    def stop(self) -> None:
        stop_process(self.process, 15)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PrometheusServer(_Process):
    name = "prometheus"

    def __init__(self, directory: Path, config: dict[str, Any], extra_args: Sequence[str] = ()) -> None:
        super().__init__(directory)
        self.config_file = directory / "prometheus.yml"
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        self.extra_args = list(extra_args)

    def command(self) -> list[str]:
        # A short resend delay: without it the first alert waits for Alertmanager discovery and is dropped.
        return [
            _binary("prometheus"),
            f"--config.file={self.config_file}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            f"--storage.tsdb.path={self.directory / 'tsdb'}",
            "--rules.alert.resend-delay=1s",
            *self.extra_args,
        ]

    def query(self, expr: str, at: float | None = None) -> dict[str, Any]:
        """Evaluate ``expr`` now, or at the Unix time ``at``."""
        params: dict[str, str] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return dict(_get_json(f"{self.url}/api/v1/query?" + urllib.parse.urlencode(params)))

    def targets(self) -> list[dict[str, Any]]:
        return list(_get_json(f"{self.url}/api/v1/targets")["data"]["activeTargets"])

    def alerts(self) -> list[dict[str, Any]]:
        return list(_get_json(f"{self.url}/api/v1/alerts")["data"]["alerts"])

    def wait_for(self, expr: str, timeout: float = 60) -> list[dict[str, Any]]:
        """Query until ``expr`` returns a non-empty result; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                result = self.query(expr).get("data", {}).get("result")
                if result:
                    return list(result)
            except OSError:
                pass
            time.sleep(1)
        raise AssertionError(f"no data for {expr} within {timeout}s; log:\n{self.log.read_text()[-3000:]}")


class AlertmanagerServer(_Process):
    name = "alertmanager"

    def __init__(self, directory: Path, config_file: Path) -> None:
        super().__init__(directory)
        self.config_file = config_file

    def command(self) -> list[str]:
        # An empty cluster address turns gossip off: a lone test instance, nothing listening elsewhere.
        return [
            _binary("prometheus-alertmanager", "alertmanager"),
            f"--config.file={self.config_file}",
            f"--storage.path={self.directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
        ]

    def alerts(self) -> list[dict[str, Any]]:
        return list(_get_json(f"{self.url}/api/v2/alerts"))


class WebhookReceiver:
    """Collects Alertmanager webhook notifications, by URL path (one path per receiver)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def alert_names(self, path: str) -> set[str]:
        """Names of the alerts that reached the receiver at ``path`` (firing or resolved)."""
        with self._lock:
            return {
                alert["labels"]["alertname"] for p, message in self.received if p == path for alert in message["alerts"]
            }

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
