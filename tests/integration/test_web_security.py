"""TLS and basic auth on the exporter's endpoint, through real HTTPS clients and a real Prometheus."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import time
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
import yaml

from lab.pki import LabCa
from lab.prometheus import PrometheusServer
from tests.integration.conftest import RunningExporter, WebClient, running_exporter, scrape

PASSWORD = "correct horse battery staple"
SERVER_NAME = "exporter.lab.example"


@dataclass
class Secured:
    exporter: RunningExporter
    ca_file: Path
    web_config: Path
    ca: LabCa
    directory: Path

    def client(
        self, user: str | None = "prometheus", password: str | None = PASSWORD, client_cert: bool = False
    ) -> WebClient:
        context = ssl.create_default_context(cafile=self.ca_file)
        # The certificate names the exporter by name and by 127.0.0.1; checking by address proves the SAN.
        if client_cert:
            context.load_cert_chain(self.directory / "scraper.pem", self.directory / "scraper.key")
        return WebClient(scheme="https", ssl_context=context, user=user, password=password)

    def get(self, path: str = "/metrics", **client: object) -> str:
        return scrape(self.exporter.port, path, client=self.client(**client))  # type: ignore[arg-type]


def write_web_config(path: Path, directory: Path, **tls: object) -> Path:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    path.write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {
                    "cert_file": str(directory / "exporter.pem"),
                    "key_file": str(directory / "exporter.key"),
                    **tls,
                },
                "basic_auth_users": {"prometheus": hashed},
                "http_server_config": {"headers": {"X-Content-Type-Options": "nosniff"}},
            }
        )
    )
    return path


@pytest.fixture
def secured(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Secured]:
    tls_options = getattr(request, "param", {})
    directory = tmp_path / "tls"
    ca = LabCa("Lab Monitoring CA")
    ca_file = ca.write(directory / "ca.pem")
    ca.issue(directory, "exporter", SERVER_NAME, dns=[SERVER_NAME], addresses=["127.0.0.1"])
    ca.issue(directory, "scraper", "prometheus", dns=["prometheus.monitoring.svc"], client=True)
    if tls_options.get("client_ca_file"):
        tls_options = {**tls_options, "client_ca_file": str(ca_file)}
    web_config = write_web_config(tmp_path / "web-config.yml", directory, **tls_options)
    ready_client = WebClient(scheme="https", ssl_context=ssl.create_default_context(cafile=ca_file))
    if tls_options.get("client_auth_type") == "RequireAndVerifyClientCert":
        assert ready_client.ssl_context is not None
        ready_client.ssl_context.load_cert_chain(directory / "scraper.pem", directory / "scraper.key")
    with running_exporter(None, tmp_path, client=ready_client, web_config_file=web_config) as exporter:
        yield Secured(exporter, ca_file, web_config, ca, directory)


def http_error(call: object) -> urllib.error.HTTPError:
    try:
        call()  # type: ignore[operator]
    except urllib.error.HTTPError as exc:
        return exc
    raise AssertionError("expected an HTTP error")


def test_https_with_basic_auth_serves_metrics_and_refuses_wrong_credentials(secured: Secured) -> None:
    body = secured.get()
    assert "ad_exchange_exporter_build_info" in body
    for user, password in [("prometheus", "wrong"), ("nobody", PASSWORD), (None, None), ("prometheus", "")]:
        error = http_error(lambda u=user, p=password: secured.get(user=u, password=p))
        assert error.code == 401, (user, password)
        assert error.headers["WWW-Authenticate"] == "Basic"
        text = error.read().decode()
        # Nothing else: no metric, no hint which half was wrong.
        assert text == "Unauthorized\n"
    # The landing page and /probe are behind the same door; health and readiness answer without credentials.
    assert http_error(lambda: secured.get("/", user=None)).code == 401
    assert http_error(lambda: secured.get("/probe?module=x&target=y", user=None)).code == 401
    assert secured.get("/-/healthy", user=None) == "OK\n"
    assert secured.get("/-/ready", user=None) == "Ready\n"
    # The configured security header is on every answer.
    assert http_error(lambda: secured.get(user=None)).headers["X-Content-Type-Options"] == "nosniff"
    # Plain HTTP on the TLS port gets no answer at all.
    with pytest.raises(OSError):
        scrape(secured.exporter.port, client=WebClient(user="prometheus", password=PASSWORD))


def test_tls_certificate_names_and_minimum_version(secured: Secured) -> None:
    strict = ssl.create_default_context(cafile=secured.ca_file)
    with (
        socket.create_connection(("127.0.0.1", secured.exporter.port), timeout=5) as raw,
        strict.wrap_socket(raw, server_hostname=SERVER_NAME) as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    # A client that does not trust the lab CA refuses the exporter's certificate.
    with (
        socket.create_connection(("127.0.0.1", secured.exporter.port), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        ssl.create_default_context().wrap_socket(raw, server_hostname=SERVER_NAME)


@pytest.mark.parametrize("secured", [{"min_version": "TLS13"}], indirect=True)
def test_min_version_refuses_older_clients(secured: Secured) -> None:
    tls12 = ssl.create_default_context(cafile=secured.ca_file)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", secured.exporter.port), timeout=5) as raw, pytest.raises(ssl.SSLError):
        tls12.wrap_socket(raw, server_hostname=SERVER_NAME)
    assert "ad_exchange_exporter_build_info" in secured.get()


def served_serial(secured: Secured) -> int:
    context = ssl.create_default_context(cafile=secured.ca_file)
    with (
        socket.create_connection(("127.0.0.1", secured.exporter.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=SERVER_NAME) as tls,
    ):
        cert = tls.getpeercert()
        assert cert is not None
        return int(str(cert["serialNumber"]), 16)


def test_renewed_certificate_is_served_without_a_restart(secured: Secured) -> None:
    before = served_serial(secured)
    # cert-manager (or an admin) replaces the files in place.
    renewed_dir = secured.directory / "renewed"
    renewed = secured.ca.issue(renewed_dir, "exporter", SERVER_NAME, dns=[SERVER_NAME], addresses=["127.0.0.1"])
    os.replace(renewed.key_file, secured.directory / "exporter.key")
    os.replace(renewed.cert_file, secured.directory / "exporter.pem")
    deadline = time.monotonic() + 10
    while served_serial(secured) == before:
        assert time.monotonic() < deadline, "the renewed certificate was not picked up"
        time.sleep(0.3)
    assert secured.exporter.process.poll() is None


def test_reload_changes_the_users(secured: Secured) -> None:
    assert "ad_exchange_exporter_build_info" in secured.get()
    config = yaml.safe_load(secured.web_config.read_text())
    config["basic_auth_users"] = {"grafana-agent": bcrypt.hashpw(b"another secret", bcrypt.gensalt(4)).decode()}
    secured.web_config.write_text(yaml.safe_dump(config))
    secured.exporter.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while True:
        try:
            secured.get()
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
            break
        assert time.monotonic() < deadline, "the old user still works after the reload"
        time.sleep(0.3)
    assert "ad_exchange_exporter_build_info" in secured.get(user="grafana-agent", password="another secret")


@pytest.mark.parametrize(
    "secured",
    [
        {
            "client_auth_type": "RequireAndVerifyClientCert",
            "client_ca_file": True,
            "client_allowed_sans": ["prometheus.monitoring.svc"],
        }
    ],
    indirect=True,
)
def test_client_certificates_when_required(secured: Secured) -> None:
    assert "ad_exchange_exporter_build_info" in secured.get(client_cert=True)
    with pytest.raises((ssl.SSLError, ConnectionResetError, urllib.error.URLError)):
        secured.get(client_cert=False)
    # A certificate from the right CA but for another client is not in client_allowed_sans.
    other = secured.ca.issue(
        secured.directory / "other", "scraper", "grafana", dns=["grafana.monitoring.svc"], client=True
    )
    context = ssl.create_default_context(cafile=secured.ca_file)
    context.load_cert_chain(other.cert_file, other.key_file)
    error = http_error(
        lambda: scrape(
            secured.exporter.port,
            client=WebClient(scheme="https", ssl_context=context, user="prometheus", password=PASSWORD),
        )
    )
    assert error.code == 403


def test_prometheus_scrapes_over_tls_with_basic_auth(secured: Secured, tmp_path: Path) -> None:
    password_file = tmp_path / "scrape-password"
    password_file.write_text(PASSWORD)
    wrong_file = tmp_path / "wrong-password"
    wrong_file.write_text("not the password")
    target = {"targets": [f"127.0.0.1:{secured.exporter.port}"]}

    def job(name: str, password: Path) -> dict[str, object]:
        return {
            "job_name": name,
            "scheme": "https",
            "static_configs": [target],
            "tls_config": {"ca_file": str(secured.ca_file), "server_name": SERVER_NAME},
            "basic_auth": {"username": "prometheus", "password_file": str(password)},
        }

    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [job("secured", password_file), job("wrong-password", wrong_file)],
    }
    with PrometheusServer(tmp_path / "prometheus", config) as prom:
        prom.wait_for('up{job="secured"} == 1')
        prom.wait_for('ad_exchange_exporter_build_info{job="secured"}')
        prom.wait_for('up{job="wrong-password"} == 0')
        errors = {t["labels"]["job"]: t["lastError"] for t in prom.targets()}
        assert errors["secured"] == ""
        assert "401 Unauthorized" in errors["wrong-password"]
        assert not prom.query('ad_exchange_exporter_build_info{job="wrong-password"}')["data"]["result"]
