"""The web config (exporter-toolkit format): what it accepts, what it refuses and how it says so."""

from __future__ import annotations

import asyncio
import base64
import re
from pathlib import Path

import bcrypt
import pytest
import yaml

from exporter.config import ConfigError, parse_config
from exporter.web_security import BasicAuth, load_web_config

HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def errors(tmp_path: Path, data: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_web_config(write(tmp_path, data))
    return caught.value.errors


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "tls.crt").write_text("cert")
    (tmp_path / "tls.key").write_text("key")
    return {"cert_file": str(tmp_path / "tls.crt"), "key_file": str(tmp_path / "tls.key")}


def test_a_go_exporter_web_config_loads(tmp_path: Path, pem: dict[str, str]) -> None:
    config = load_web_config(
        write(
            tmp_path,
            {
                "tls_server_config": {
                    **pem,
                    "min_version": "TLS13",
                    "cipher_suites": ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
                    "client_auth_type": "RequireAndVerifyClientCert",
                    "client_ca_file": pem["cert_file"],
                },
                "http_server_config": {"http2": True, "headers": {"Strict-Transport-Security": "max-age=31536000"}},
                "basic_auth_users": {"prometheus": HASH},
            },
        )
    )
    assert config.tls_server_config is not None
    assert config.tls_server_config.min_version == "TLS13"
    assert config.basic_auth_users == {"prometheus": HASH}


def test_a_plain_password_is_refused_without_being_echoed(tmp_path: Path) -> None:
    found = errors(tmp_path, {"basic_auth_users": {"prometheus": "hunter2-plaintext"}})
    assert len(found) == 1
    assert found[0].startswith("basic_auth_users.prometheus: not a bcrypt hash")
    assert "hunter2" not in found[0]


@pytest.mark.parametrize(
    ("tls", "expected"),
    [
        ({"key_file": "KEY"}, "tls_server_config.cert_file: Field required"),
        ({"cert_file": "/nonexistent.pem", "key_file": "KEY"}, "tls_server_config.cert_file: file not found"),
        (
            {"cert_file": "CERT", "key_file": "KEY", "client_auth_type": "RequireAndVerifyClientCert"},
            "tls_server_config.client_ca_file: required with client_auth_type RequireAndVerifyClientCert",
        ),
        (
            {"cert_file": "CERT", "key_file": "KEY", "client_auth_type": "RequireAnyClientCert"},
            "tls_server_config.client_auth_type: accepting client certificates without verifying them is not supported",
        ),
        (
            {"cert_file": "CERT", "key_file": "KEY", "curve_preferences": ["X25519"]},
            "tls_server_config.curve_preferences: not supported",
        ),
        (
            {"cert_file": "CERT", "key_file": "KEY", "cipher_suites": ["TLS_NULL_WITH_NULL_NULL"]},
            "tls_server_config.cipher_suites: unknown TLS 1.2 cipher suite(s) TLS_NULL_WITH_NULL_NULL",
        ),
        (
            {"cert_file": "CERT", "key_file": "KEY", "min_version": "TLS13", "max_version": "TLS12"},
            "tls_server_config.min_version: is newer than max_version",
        ),
        (
            {"cert_file": "CERT", "key_file": "KEY", "min_versoin": "TLS13"},
            "tls_server_config.min_versoin: Extra inputs are not permitted",
        ),
    ],
)
def test_tls_errors_name_the_field(tmp_path: Path, pem: dict[str, str], tls: dict[str, str], expected: str) -> None:
    tls = {
        k: {"CERT": pem["cert_file"], "KEY": pem["key_file"]}.get(v, v) if isinstance(v, str) else v
        for k, v in tls.items()
    }
    found = errors(tmp_path, {"tls_server_config": tls})
    assert any(e.startswith(expected) for e in found), found


def test_only_exporter_toolkit_headers_can_be_set(tmp_path: Path) -> None:
    found = errors(tmp_path, {"http_server_config": {"headers": {"Set-Cookie": "x"}}})
    assert found[0].startswith("http_server_config.headers: header(s) Set-Cookie cannot be set")


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("basic_auth_users: [unclosed")
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    assert re.match(rf"{re.escape(str(path))}:1:\d+: invalid YAML", caught.value.errors[0]), caught.value.errors


def header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (header("alice", "pa:ss"), ("alice", "pa:ss")),  # only the first colon separates
        ("Bearer abc", None),
        ("Basic !!!not-base64", None),
        ("Basic " + base64.b64encode(b"no-colon").decode(), None),
        ("", None),
    ],
)
def test_credentials_parsing(value: str, expected: tuple[str, str] | None) -> None:
    assert BasicAuth.credentials(value) == expected


def test_check_passes_only_the_right_pair_and_remembers_it(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = BasicAuth({"prometheus": HASH})
    calls = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)

    async def run() -> list[bool]:
        return [
            await auth.check(header("prometheus", "s3cret")),
            await auth.check(header("prometheus", "s3cret")),
            await auth.check(header("prometheus", "wrong")),
            await auth.check(header("mallory", "s3cret")),
        ]

    assert asyncio.run(run()) == [True, True, False, False]
    # The second good check came from memory; the unknown user still paid one bcrypt (no timing hint).
    assert len(calls) == 3


def test_only_health_endpoints_can_be_left_open() -> None:
    assert parse_config("web: {unauthenticated_paths: ['/-/ready']}").web.unauthenticated_paths == ["/-/ready"]
    with pytest.raises(ConfigError) as caught:
        parse_config("web: {unauthenticated_paths: ['/metrics']}")
    assert caught.value.errors == [
        "web.unauthenticated_paths: only /-/healthy and /-/ready can be left open, not /metrics"
    ]
