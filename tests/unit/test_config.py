"""Config validation: every error at once, each with its path; secrets never inline or shown."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from exporter.config import ConfigError, parse_config


def _errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "test.yml")
    return info.value.errors


def test_valid_config_resolves_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret-Value\n")
    config = parse_config(f"""
active_directory:
  - domain: corp.example
    domain_controllers: [{{host: dc1.corp.example}}]
    bind: {{user: svc@corp.example, password_file: {secret}}}
""")
    ad = config.active_directory[0]
    assert ad.bind.password is not None and ad.bind.password.get_secret_value() == "s3cret-Value"
    assert "s3cret" not in repr(config)
    assert ad.effective_base_dn == "DC=corp,DC=example"
    assert config.secrets() == ["s3cret-Value"]


def test_password_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AD_PW", "from-env")
    config = parse_config("""
active_directory:
  - domain: corp.example
    domain_controllers: [{host: dc1.corp.example}]
    bind: {user: svc@corp.example, password_env: AD_PW}
""")
    assert config.active_directory[0].bind.password.get_secret_value() == "from-env"  # type: ignore[union-attr]


def test_every_error_is_reported_with_its_path(tmp_path: Path) -> None:
    errors = _errors(f"""
web: {{listen_address: "nope"}}
active_directory:
  - domain: corp.example
    domain_controllers: [{{host: dc1.corp.example, port: 99999}}]
    bind: {{user: svc@corp.example, password_file: {tmp_path}/missing}}
    interval_seconds: -1
  - domain: "not a domain"
    domain_controllers: []
    bind: {{method: ntlm, user: svc, password_env: UNSET_VARIABLE_FOR_TEST}}
    tls: {{mode: ldapz}}
    surprise: 1
""")
    assert errors == [
        "web.listen_address: expected HOST:PORT",
        "active_directory[0].domain_controllers[0].port: Input should be less than or equal to 65535",
        "active_directory[0].bind.password_file: file not found",
        "active_directory[0].interval_seconds: Input should be greater than 0",
        "active_directory[1].domain: String should match pattern '^[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)+$'",
        "active_directory[1].bind.password_env: environment variable UNSET_VARIABLE_FOR_TEST is not set",
        "active_directory[1].tls.mode: Input should be 'ldaps', 'starttls' or 'none'",
        "active_directory[1].surprise: Extra inputs are not permitted",
    ]


def test_inline_password_is_refused_without_echoing_it() -> None:
    errors = _errors("""
active_directory:
  - domain: corp.example
    domain_controllers: [{host: dc1.corp.example}]
    bind: {user: svc@corp.example, password: Hunter2-Inline}
""")
    assert errors == ["active_directory[0].bind: inline passwords are not accepted; use password_file or password_env"]
    assert not any("Hunter2" in e for e in errors)


def test_model_level_rules() -> None:
    errors = _errors("""
active_directory:
  - domain: corp.example
    bind: {method: ntlm, user: svc, password_env: HOME}
    interval_seconds: 10
    timeout_seconds: 20
""")
    assert errors == ["active_directory[0].bind.user: NTLM needs DOMAIN\\user"]
    errors = _errors("""
active_directory:
  - domain: corp.example
    bind: {method: kerberos}
    interval_seconds: 10
    timeout_seconds: 20
""")
    # Both of the domain's problems at once (this check stopped at the first before).
    assert errors == [
        "active_directory[0].domain_controllers: give at least one DC, or enable discovery.dns_srv",
        "active_directory[0].timeout_seconds: must be shorter than interval_seconds",
    ]


def test_yaml_syntax_error_names_line_and_column() -> None:
    errors = _errors("active_directory:\n  - domain: [unclosed\n")
    assert len(errors) == 1 and errors[0].startswith("test.yml:3:1: invalid YAML")


def test_config_check_cli(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "active_directory:\n  - domain: corp.example\n    bind: {user: x, password_file: /nonexistent}\n"
        "    interval_seconds: 0\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "exporter", f"--config.file={bad}", "--config.check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "active_directory[0].bind.password_file: file not found" in result.stderr
    assert "active_directory[0].interval_seconds: Input should be greater than 0" in result.stderr
    good = tmp_path / "good.yml"
    good.write_text("web: {listen_address: '127.0.0.1:0'}\n")
    result = subprocess.run(
        [sys.executable, "-m", "exporter", f"--config.file={good}", "--config.check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("hybrid_mail: [{name: onprem-to-exo}]", "hybrid_mail[0]"),
        (
            "canaries: [{name: c, smtp: 'mail.contoso.com:25', sender: a@contoso.com, recipient: b@contoso.com}]",
            "canaries[0]",
        ),
    ],
)
def test_mail_readers_need_somewhere_to_read(text: str, where: str) -> None:
    assert _errors(text) == [f"{where}.drop_directories or imap: give at least one"]


def test_model_level_checks_report_every_problem_at_once(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("x")
    text = f"""
active_directory:
  - domain: corp.example
    bind: {{method: simple, user: svc@corp.example, password_file: {secret}}}
    tls: {{mode: none}}
    interval_seconds: 5
    timeout_seconds: 10
exchange:
  - organization: contoso
    servers: [{{name: ex1}}, {{name: EX1}}]
    interval_seconds: 5
    timeout_seconds: 10
  - organization: CONTOSO
    servers: [{{name: ex2}}]
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    errors = info.value.errors
    # Three problems of one domain, two of one organisation, and one of the whole file: all reported together.
    assert any("active_directory[0]: tls.mode: 'none' is not allowed" in e for e in errors)
    assert "active_directory[0].domain_controllers: give at least one DC, or enable discovery.dns_srv" in errors
    assert "active_directory[0].timeout_seconds: must be shorter than interval_seconds" in errors
    assert "exchange[0].timeout_seconds: must be shorter than interval_seconds" in errors
    assert "exchange[0].servers: a server name appears twice" in errors
