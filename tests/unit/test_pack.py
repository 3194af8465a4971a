"""The monitoring pack: dashboards in sync with their code, alerts complete, promtool's own tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dashboards import build
from tests.helpers import require_binary

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "alerts"


@pytest.mark.parametrize("name", sorted(build.DASHBOARDS))
def test_committed_dashboard_json_is_fresh(name: str) -> None:
    committed = (ROOT / "dashboards" / name).read_text()
    assert committed == build.render(build.DASHBOARDS[name]), f"run: python -m dashboards.build ({name} is stale)"


@pytest.mark.parametrize("name", sorted(build.DASHBOARDS))
def test_dashboard_shape(name: str) -> None:
    dashboard = json.loads((ROOT / "dashboards" / name).read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job"} <= variables and variables & {"domain", "server", "dc", "flow"}
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24


def alert_rules() -> list[dict[str, object]]:
    rules: list[dict[str, object]] = []
    for path in sorted(ALERTS.glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(r for r in group["rules"] if "alert" in r)
    return rules


def test_every_alert_has_severity_summary_description_and_a_runbook() -> None:
    rules = alert_rules()
    assert rules
    for rule in rules:
        name = str(rule["alert"])
        assert name.startswith(("ActiveDirectory", "Exchange", "DirectAccess")), name
        labels = rule["labels"]
        annotations = rule["annotations"]
        assert isinstance(labels, dict) and labels["severity"] in ("critical", "warning", "info")
        assert isinstance(annotations, dict) and annotations["summary"] and annotations["description"]
        assert annotations["runbook_url"] == f"alerts/runbooks/{name}.md"
        assert (ROOT / str(annotations["runbook_url"])).is_file()


def test_every_alert_has_promtool_cases_that_fire_and_that_do_not() -> None:
    names = {str(r["alert"]) for r in alert_rules()}
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in sorted((ALERTS / "tests").glob("*.yml")):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert names <= fired, names - fired
    assert names <= quiet, names - quiet


def test_promtool_check_and_test_rules() -> None:
    promtool = require_binary("promtool")
    rules = sorted(str(p) for p in ALERTS.glob("*.rules.yml"))
    check = subprocess.run([promtool, "check", "rules", *rules], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = sorted(str(p) for p in (ALERTS / "tests").glob("*.yml"))
    result = subprocess.run([promtool, "test", "rules", *tests], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


ALERTMANAGER_EXAMPLE = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
PAGING = {
    "ActiveDirectoryLockoutSpike",
    "ActiveDirectoryDomainControllerDown",
    "ExchangeServerWideOffline",
    "ExchangeRequiredServiceStopped",
    "ExchangeTransportBackPressure",
    "DirectAccessFirewallStateMismatch",
    "DirectAccessNameResolutionFailing",
    "DirectAccessIPHttpsNotActive",
}


def amtool(*args: str) -> str:
    binary = require_binary("amtool")
    result = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_example_alertmanager_config_passes_amtool() -> None:
    assert "SUCCESS" in amtool("check-config", str(ALERTMANAGER_EXAMPLE))


def test_example_alertmanager_config_pages_the_paging_ones_and_tickets_the_rest() -> None:
    for rule in alert_rules():
        name = str(rule["alert"])
        receiver = amtool(
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER_EXAMPLE}",
            f"alertname={name}",
            "domain=corp.example",
            "dc=dc1.corp.example",
            "server=ex1",
        ).strip()
        assert receiver == ("page" if name in PAGING else "ticket"), name


def test_example_alertmanager_config_names_only_alerts_that_exist() -> None:
    """A renamed alert would silently fall out of a route or an inhibition."""
    names = {str(r["alert"]) for r in alert_rules()}
    text = ALERTMANAGER_EXAMPLE.read_text()
    config = yaml.safe_load(text)
    matchers = [m for route in config["route"]["routes"] for m in route["matchers"]]
    matchers += [
        m for rule in config["inhibit_rules"] for key in ("source_matchers", "target_matchers") for m in rule[key]
    ]
    for matcher in matchers:
        label, _, value = matcher.partition("=")
        if label != "alertname":
            continue
        for alternative in value.lstrip("~").strip('"').split("|"):
            if ".+" not in alternative:
                assert alternative in names, f"{matcher}: no alert named {alternative}"


def test_scale_out_examples_pass_promtool() -> None:
    promtool = require_binary("promtool")
    examples = ROOT / "deploy" / "prometheus"
    configs = sorted(p for p in examples.glob("*.yml") if not p.name.endswith(".rules.yml"))
    rules = sorted(examples.glob("*.rules.yml"))
    assert configs and rules
    for path in configs:
        result = subprocess.run(
            [promtool, "check", "config", "--syntax-only", str(path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
    result = subprocess.run([promtool, "check", "rules", *map(str, rules)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_example_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    unit = (ROOT / "deploy" / "systemd" / "ad-exchange-exporter.service").read_text()
    # The unit names the VM's install path; here the same console script lives next to the test's interpreter.
    installed = Path(sys.executable).parent / "ad-exchange-exporter"
    assert installed.is_file(), installed
    assert unit.count("/opt/ad-exchange-exporter/bin/ad-exchange-exporter") == 2
    (tmp_path / "ad-exchange-exporter.service").write_text(
        unit.replace("/opt/ad-exchange-exporter/bin/ad-exchange-exporter", str(installed))
    )
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / "ad-exchange-exporter.service")], capture_output=True, text=True, check=False
    )
    # An unknown or misspelt key is only a warning to systemd: any output at all fails here.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr
