"""The scale-out examples (deploy/prometheus/) with real Prometheus servers against the exporter on the lab.

Each example is loaded as shipped; only addresses, file paths and intervals are pointed at the lab.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.prometheus import PrometheusServer
from lab.samba import SambaLab
from tests.integration.conftest import running_exporter

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "deploy" / "prometheus"
RULES = [str(p) for p in sorted((ROOT / "alerts").glob("*.rules.yml"))]


def example(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((EXAMPLES / name).read_text()))


def local(job: dict[str, Any], address: str) -> dict[str, Any]:
    """A shipped scrape job pointed at the lab exporter (plain HTTP here; TLS is tested elsewhere)."""
    job = copy.deepcopy(job)
    for key in ("scheme", "tls_config", "basic_auth"):
        job.pop(key, None)
    job["scrape_interval"] = "1s"
    job["static_configs"] = [{"targets": [address]}]
    return job


def counter(prom: PrometheusServer, expr: str) -> float:
    result = prom.wait_for(expr)
    return float(result[0]["value"][1])


@pytest.fixture
def exporter_address(lab: SambaLab, tmp_path: Path) -> Any:
    # Fixed names, so that hashmod's split is the same on every run; nothing listens there, each probe fails at once.
    probe_targets = [f"127.0.2.{i}:2525" for i in range(1, 9)]
    sections = {"probes": {"modules": {"hybrid": {"timeout_seconds": 1}}, "allowed_targets": probe_targets}}
    with running_exporter(lab, tmp_path / "exporter", interval=3, timeout=2, sections=sections) as exporter:
        yield f"127.0.0.1:{exporter.port}", probe_targets


def test_ha_pair_scrapes_do_not_multiply_dc_queries(exporter_address: Any, tmp_path: Path) -> None:
    address, _ = exporter_address
    servers = []
    for replica in ("prometheus-a", "prometheus-b"):
        config = example("ha-pair.yml")
        assert config["global"]["external_labels"]["replica"] == "prometheus-a"
        config["global"]["external_labels"]["replica"] = replica
        config["global"]["scrape_interval"] = "1s"
        config["rule_files"] = RULES
        config["alerting"]["alertmanagers"] = []
        config["scrape_configs"] = [local(job, address) for job in config["scrape_configs"]]
        servers.append(PrometheusServer(tmp_path / replica, config))
    refreshes = 'ad_exchange_exporter_collector_refreshes_total{collector="active_directory"}'
    with servers[0] as a, servers[1] as b:
        start = counter(a, refreshes)
        time.sleep(15)
        end = counter(a, refreshes)
        scrapes = sum(counter(p, 'count_over_time(up{job="ad-exchange-exporter"}[15s])') for p in (a, b))
        # Two servers scraping every second made ~30 scrapes; the DCs saw one sweep per 3 s interval.
        assert scrapes >= 20
        assert end - start <= 15 / 3 + 2, (start, end)
        assert end - start >= 3
        # Both replicas have the same data, labelled apart for deduplication downstream.
        assert a.query("ad_dc_up")["data"]["result"] and b.query("ad_dc_up")["data"]["result"]


def test_hashmod_shards_probe_targets_between_two_servers(exporter_address: Any, tmp_path: Path) -> None:
    address, targets = exporter_address
    seen = []
    for shard in ("0", "1"):
        config = example("probes-sharded.yml")
        job = config["scrape_configs"][0]
        keep = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
        assert keep and keep[0]["regex"] == "0"
        keep[0]["regex"] = shard
        job["static_configs"] = [{"targets": targets}]
        job["scrape_interval"] = "1s"
        for rule in job["relabel_configs"]:
            if rule.get("target_label") == "__address__":
                rule["replacement"] = address
        config["scrape_configs"] = [job]
        with PrometheusServer(tmp_path / f"shard{shard}", config) as prom:
            prom.wait_for('probe_success{job="smtp-probe"} == 0')
            time.sleep(2)  # every target of this shard has been scraped by now
            result = prom.query('probe_success{job="smtp-probe"}')["data"]["result"]
            seen.append({r["metric"]["instance"] for r in result})
    # Each target probed by exactly one server, and every target by one.
    assert seen[0] and seen[1]
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(targets)


def test_long_term_storage_receives_only_the_trend_series(exporter_address: Any, tmp_path: Path) -> None:
    address, _ = exporter_address
    store_config: dict[str, Any] = {"global": {"scrape_interval": "1h"}}
    store = PrometheusServer(tmp_path / "store", store_config, extra_args=["--web.enable-remote-write-receiver"])
    config = example("long-term-storage.yml")
    assert config["rule_files"][-1] == "trends.rules.yml"
    trends = yaml.safe_load((EXAMPLES / "trends.rules.yml").read_text())
    for group in trends["groups"]:
        group["interval"] = "1s"
    (tmp_path / "trends.rules.yml").write_text(yaml.safe_dump(trends))
    config["rule_files"] = [*RULES, str(tmp_path / "trends.rules.yml")]
    config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = "1s"
    with store:
        [remote] = config["remote_write"]
        remote.pop("basic_auth")
        remote["url"] = f"{store.url}/api/v1/write"
        remote["queue_config"] = {"batch_send_deadline": "1s"}
        config["scrape_configs"] = [local(job, address) for job in config["scrape_configs"]]
        with PrometheusServer(tmp_path / "prometheus", config) as prom:
            prom.wait_for("ad_dc_up")
            store.wait_for("ad:account_lockouts:increase1h")
            store.wait_for("ad:dc_up:ratio")
            store.wait_for("ad_dc_up")
            names = {r["metric"]["__name__"] for r in store.query('{__name__=~".+"}')["data"]["result"]}
            with_user = store.query('{user=~".+"}')["data"]["result"]
            local_names = {r["metric"]["__name__"] for r in prom.query('{__name__=~".+"}')["data"]["result"]}
    # Process metrics, per-user tables and the exporter's own bookkeeping stay local.
    assert "process_cpu_seconds_total" in local_names and "process_cpu_seconds_total" not in names
    assert not with_user
    assert all(
        n.startswith(("ad:", "exchange:", "exchange_", "ad_dc_up", "ad_domain_accounts_locked", "ad_lockout_policy_"))
        for n in names
    ), names
