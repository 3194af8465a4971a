"""The Helm chart, rendered with Helm's own SDK for several sets of values and checked against Kubernetes' schemas.

Kinds from the Prometheus Operator (ServiceMonitor, PrometheusRule) have no schema in kubernetes-validate: their
content is checked here instead (the rules by promtool, against alerts/).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

from exporter.config import parse_config
from tests.helpers import require_binary

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "ad-exchange-exporter"
KUBE_VERSION = "1.30.0"
# The chart's kubeVersion floor and the newest schemas kubernetes-validate has.
VALIDATE_VERSIONS = ["1.25.0", kubernetes_validate.utils.latest_version()]
HASH = "$2b$12$hNf2lSsxfm0.i4a.1kVpSOVyBCfIB51VRjG8D7X9IbmSWAGLF/aEW"  # bcrypt of a throwaway password
RUNBOOKS = "https://git.corp.example/monitoring/ad-exchange-exporter/-/blob/main/"

AD_CONFIG = {
    "domain": "corp.example",
    "domain_controllers": [{"host": "dc1.corp.example"}],
    "bind": {"method": "simple", "user": "svc-lockout-ro@corp.example", "password_env": "AD_PASSWORD"},
    "tls": {"mode": "ldaps"},
}

SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    # TLS from cert-manager, basic auth, probes per target, state on a volume, a NetworkPolicy.
    "production": {
        "config": {
            "active_directory": [AD_CONFIG],
            "probes": {"modules": {"hybrid": {"starttls": True, "server_name": "mail.contoso.com"}}},
        },
        "env": [
            {"name": "AD_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "adx-credentials", "key": "ad-password"}}}
        ],
        "credentials": {"existingSecret": "adx-credentials"},
        "web": {
            "tls": {"enabled": True, "secretName": "adx-tls", "minVersion": "TLS13"},
            "basicAuthUsers": {"prometheus": HASH},
        },
        "serviceMonitor": {
            "labels": {"release": "kube-prometheus-stack"},
            "tlsConfig": {
                "ca": {"secret": {"name": "adx-tls", "key": "ca.crt"}},
                "serverName": "adx-ad-exchange-exporter.monitoring.svc",
            },
            "basicAuth": {
                "username": {"name": "adx-scrape", "key": "username"},
                "password": {"name": "adx-scrape", "key": "password"},
            },
            "targets": [
                {
                    "name": "exo-inbound",
                    "target": "contoso-com.mail.protection.outlook.com:25",
                    "module": "hybrid",
                    "interval": "120s",
                },
                {"name": "onprem-edge", "target": "mail.contoso.com:25", "module": "hybrid"},
            ],
        },
        "prometheusRule": {"labels": {"release": "kube-prometheus-stack"}, "runbookBaseUrl": RUNBOOKS},
        "persistence": {"enabled": True, "size": "2Gi", "storageClassName": "standard"},
        "networkPolicy": {"enabled": True, "egressTo": [{"ipBlock": {"cidr": "10.20.0.0/24"}}]},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
    },
    # The config in a Secret the chart writes, a web config the admin brings, state on an existing claim,
    # dashboards into Grafana's namespace.
    "config-in-secret": {
        "configFrom": "secret",
        "config": {"active_directory": [AD_CONFIG]},
        "envFrom": [{"secretRef": {"name": "adx-env"}}],
        "web": {"existingWebConfigSecret": "adx-web-config"},
        "serviceMonitor": {
            "basicAuth": {
                "username": {"name": "adx-scrape", "key": "username"},
                "password": {"name": "adx-scrape", "key": "password"},
            }
        },
        "persistence": {"enabled": True, "existingClaim": "adx-state"},
        "dashboards": {"namespace": "grafana", "folder": ""},
    },
    # Everything managed outside the chart: the config Secret, no Prometheus Operator objects.
    "existing-secret-bare": {
        "configFrom": "existingSecret",
        "existingConfigSecret": "adx-config",
        "serviceMonitor": {"enabled": False},
        "prometheusRule": {"enabled": False},
        "dashboards": {"enabled": False},
        "serviceAccount": {"create": False},
        "image": {"digest": "sha256:" + "ab" * 32},
    },
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values=copy.deepcopy(values), name="adx", namespace="monitoring")
    docs = []
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [found] = by_kind(docs, "Deployment")
    return found


def shipped_groups() -> list[dict[str, Any]]:
    groups = []
    for path in sorted((ROOT / "alerts").glob("*.rules.yml")):
        groups += yaml.safe_load(path.read_text())["groups"]
    return groups


SERVICE_MONITOR_ENDPOINT_FIELDS = {
    "port",
    "scheme",
    "path",
    "interval",
    "scrapeTimeout",
    "params",
    "relabelings",
    "metricRelabelings",
    "tlsConfig",
    "basicAuth",
}


def check_operator_object(doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    if doc["kind"] == "ServiceMonitor":
        spec = doc["spec"]
        assert set(spec) <= {"selector", "namespaceSelector", "endpoints"}
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= SERVICE_MONITOR_ENDPOINT_FIELDS, set(endpoint) - SERVICE_MONITOR_ENDPOINT_FIELDS
            assert endpoint["scheme"] in ("http", "https") and endpoint["path"] in ("/metrics", "/probe")
    elif doc["kind"] == "PrometheusRule":
        assert set(doc["spec"]) == {"groups"}
    else:
        raise AssertionError(f"unexpected kind {doc['kind']}")


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_renders_valid_kubernetes_objects(scenario: str) -> None:
    docs = render(SCENARIOS[scenario])
    assert docs
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            check_operator_object(doc)
        else:
            for version in VALIDATE_VERSIONS:
                kubernetes_validate.validate(doc, version, strict=True)
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == "adx"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_strict_lint_passes(scenario: str) -> None:
    report = helm.lint(
        CHART, copy.deepcopy(SCENARIOS[scenario]), strict=True, namespace="monitoring", kube_version=f"v{KUBE_VERSION}"
    )
    assert not report["errors"], report
    # Severity 2 is a warning, 3 an error; the one info left is "icon is recommended".
    assert all(m["severity"] < 2 for m in report["messages"]), report["messages"]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_pod_runs_restricted(scenario: str) -> None:
    pod = deployment(render(SCENARIOS[scenario]))["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert container["resources"]["limits"]["memory"]
    # With a read-only root, every place the exporter writes is a volume.
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/var/lib/ad-exchange-exporter", "/tmp"} <= mounts


def configured(docs: list[dict[str, Any]]) -> str:
    [holder] = [
        d for d in docs if d["kind"] in ("ConfigMap", "Secret") and d["metadata"]["name"] == "adx-ad-exchange-exporter"
    ]
    return str((holder.get("data") or holder["stringData"])["config.yml"])


@pytest.mark.parametrize("scenario", ["defaults", "production", "config-in-secret"])
def test_rendered_config_is_one_the_exporter_accepts(scenario: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AD_PASSWORD", "not-a-real-password")
    config = parse_config(configured(render(SCENARIOS[scenario])), f"chart ({scenario})")
    assert config.state.path == Path("/var/lib/ad-exchange-exporter/state.db")
    if scenario == "production":
        # Every per-target ServiceMonitor's target is allowed for /probe.
        assert set(config.probes.allowed_targets) == {
            "contoso-com.mail.protection.outlook.com:25",
            "mail.contoso.com:25",
        }


def test_production_wiring() -> None:
    docs = render(SCENARIOS["production"])
    container = deployment(docs)["spec"]["template"]["spec"]["containers"][0]
    assert "--web.config.file=/etc/ad-exchange-exporter/web/web-config.yml" in container["args"]
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    [web_secret] = [d for d in docs if d["metadata"]["name"] == "adx-ad-exchange-exporter-web-config"]
    web = yaml.safe_load(web_secret["stringData"]["web-config.yml"])
    assert web["basic_auth_users"] == {"prometheus": HASH}
    assert web["tls_server_config"]["min_version"] == "TLS13"
    monitors = {m["metadata"]["name"]: m for m in by_kind(docs, "ServiceMonitor")}
    assert set(monitors) == {
        "adx-ad-exchange-exporter",
        "adx-ad-exchange-exporter-probe-exo-inbound",
        "adx-ad-exchange-exporter-probe-onprem-edge",
    }
    probe = monitors["adx-ad-exchange-exporter-probe-exo-inbound"]["spec"]["endpoints"][0]
    assert probe["params"] == {"module": ["hybrid"], "target": ["contoso-com.mail.protection.outlook.com:25"]}
    assert probe["interval"] == "120s" and probe["scheme"] == "https" and probe["basicAuth"]
    relabel = {r["targetLabel"]: r["replacement"] for r in probe["relabelings"]}
    assert relabel == {
        "instance": "contoso-com.mail.protection.outlook.com:25",
        "target": "contoso-com.mail.protection.outlook.com:25",
        "probe": "exo-inbound",
    }
    assert all(m["metadata"]["labels"]["release"] == "kube-prometheus-stack" for m in monitors.values())
    assert deployment(docs)["spec"]["strategy"] == {"type": "Recreate"}
    assert by_kind(docs, "PersistentVolumeClaim")[0]["spec"]["resources"]["requests"]["storage"] == "2Gi"
    [policy] = by_kind(docs, "NetworkPolicy")
    assert policy["spec"]["egress"][1]["to"] == [{"ipBlock": {"cidr": "10.20.0.0/24"}}]


def test_bare_install_has_no_operator_objects_and_reads_the_existing_secret() -> None:
    docs = render(SCENARIOS["existing-secret-bare"])
    assert {d["kind"] for d in docs} == {"Deployment", "Service"}
    pod = deployment(docs)["spec"]["template"]["spec"]
    assert {"name": "config", "secret": {"secretName": "adx-config"}} in pod["volumes"]
    assert pod["containers"][0]["image"] == "ad-exchange-exporter@sha256:" + "ab" * 32
    assert "annotations" not in deployment(docs)["spec"]["template"]["metadata"]


def test_config_change_rolls_the_pod() -> None:
    def checksum(values: dict[str, Any]) -> str:
        return str(deployment(render(values))["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    changed = copy.deepcopy(SCENARIOS["production"])
    changed["config"]["active_directory"][0]["interval_seconds"] = 120
    assert checksum(SCENARIOS["production"]) != checksum(changed)
    assert checksum(SCENARIOS["production"]) == checksum(copy.deepcopy(SCENARIOS["production"]))


def test_prometheus_rule_is_the_shipped_rules(tmp_path: Path) -> None:
    [rule] = by_kind(render(SCENARIOS["production"]), "PrometheusRule")
    expected = shipped_groups()
    for group in expected:
        for item in group["rules"]:
            if "annotations" in item:
                item["annotations"]["runbook_url"] = RUNBOOKS + item["annotations"]["runbook_url"]
    assert rule["spec"]["groups"] == expected
    promtool = require_binary("promtool")
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboards_are_the_shipped_dashboards() -> None:
    maps = by_kind(render(SCENARIOS["config-in-secret"]), "ConfigMap")
    dashboards = {
        key: json.loads(value)
        for m in maps
        if "grafana_dashboard" in m["metadata"]["labels"]
        for key, value in m["data"].items()
    }
    shipped = {p.name: json.loads(p.read_text()) for p in (ROOT / "dashboards").glob("*.json")}
    assert dashboards == shipped
    assert all(m["metadata"]["namespace"] == "grafana" for m in maps if "grafana_dashboard" in m["metadata"]["labels"])


def test_chart_files_match_alerts_and_dashboards() -> None:
    spec = importlib.util.spec_from_file_location("sync_chart", ROOT / "helm" / "sync_chart.py")
    assert spec is not None and spec.loader is not None
    sync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync)
    expected: dict[Path, bytes] = sync.expected()
    present = {p for p in (CHART / "files").rglob("*") if p.is_file()}
    stale = [
        str(p.relative_to(ROOT)) for p, content in expected.items() if not p.is_file() or p.read_bytes() != content
    ]
    extra = [str(p.relative_to(ROOT)) for p in present - set(expected)]
    assert not stale and not extra, f"run: python helm/sync_chart.py (stale: {stale}, extra: {extra})"


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCount": 2}, "/replicaCount"),
        ({"web": {"basicAuthUsers": {"prometheus": "a plain password"}}}, "/web/basicAuthUsers/prometheus"),
        ({"web": {"tls": {"enabled": True}}}, "/web/tls/secretName"),
        ({"configFrom": "existingSecret"}, "/existingConfigSecret"),
        ({"config": {"web": {"listen_address": "0.0.0.0:1"}}}, "/config/web"),
        (
            {"serviceMonitor": {"targets": [{"name": "Bad Name", "target": "x:25", "module": "m"}]}},
            "/serviceMonitor/targets/0/name",
        ),
        ({"replicas": 1}, "replicas"),
    ],
)
def test_schema_refuses_bad_values_and_names_them(values: dict[str, Any], complaint: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError) as caught:
        chart.validate_schema(values)
    assert complaint in str(caught.value)
