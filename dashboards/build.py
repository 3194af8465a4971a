"""Grafana dashboards as code. ``python -m dashboards.build`` writes the JSON next to this file.

Plain dicts in Grafana's dashboard schema; a test fails when the committed JSON differs from what this builds,
and another runs every expression against a real Prometheus scraping the exporter.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'job=~"$job",domain=~"$domain"'


def _target(expr: str, legend: str = "", *, instant: bool = False, fmt: str = "time_series") -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto", "refId": "A",
            "instant": instant, "range": not instant, "format": fmt}


class Layout:
    """Places panels left to right on Grafana's 24-column grid."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = 0
        self.y = 0
        self.row_height = 0
        self.next_id = 1

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({"type": "row", "title": title, "id": self.next_id, "collapsed": False,
                            "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}, "panels": []})
        self.next_id += 1
        self.y += 1

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_height
            self.x = 0
            self.row_height = 0

    def add(self, panel: dict[str, Any], w: int, h: int) -> None:
        if self.x + w > 24:
            self._newline()
        panel.update(id=self.next_id, gridPos={"x": self.x, "y": self.y, "w": w, "h": h}, datasource=DS)
        self.next_id += 1
        self.x += w
        self.row_height = max(self.row_height, h)
        self.panels.append(panel)


def stat(title: str, expr: str, description: str, unit: str = "none",
         thresholds: list[tuple[float | None, str]] | None = None) -> dict[str, Any]:
    steps = [{"value": v, "color": c} for v, c in (thresholds or [(None, "green")])]
    return {"type": "stat", "title": title, "description": description,
            "targets": [_target(expr, instant=True)],
            "fieldConfig": {"defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
                            "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "background", "graphMode": "none", "textMode": "auto"}}


def timeseries(title: str, targets: list[tuple[str, str]], description: str, unit: str = "none",
               stack: bool = False) -> dict[str, Any]:
    return {"type": "timeseries", "title": title, "description": description,
            "targets": [dict(_target(e, legend), refId=chr(65 + i)) for i, (e, legend) in enumerate(targets)],
            "fieldConfig": {"defaults": {"unit": unit, "custom": {
                "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                "stacking": {"mode": "normal" if stack else "none", "group": "A"}}}, "overrides": []},
            "options": {"legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull", "max"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}


def table(title: str, expr: str, description: str, rename: dict[str, str],
          exclude: tuple[str, ...] = ("Time", "__name__", "job", "instance"), unit: str = "none") -> dict[str, Any]:
    return {"type": "table", "title": title, "description": description,
            "targets": [_target(expr, instant=True, fmt="table")],
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"showHeader": True, "sortBy": [{"displayName": rename.get("Value", "Value"), "desc": True}]},
            "transformations": [{"id": "organize", "options": {
                "excludeByName": dict.fromkeys(exclude, True), "renameByName": rename}}]}


def _variables() -> list[dict[str, Any]]:
    def query(name: str, label: str, q: str) -> dict[str, Any]:
        return {"type": "query", "name": name, "label": label, "datasource": DS,
                "query": {"query": q, "refId": name}, "definition": q, "refresh": 2, "includeAll": True,
                "multi": True, "current": {"text": "All", "value": "$__all"}, "allValue": ".+", "sort": 1}

    return [
        {"type": "datasource", "name": "datasource", "label": "Data source", "query": "prometheus",
         "current": {}, "hide": 0},
        query("job", "Job", "label_values(ad_dc_up, job)"),
        query("domain", "Domain", 'label_values(ad_dc_up{job=~"$job"}, domain)'),
    ]


def ad_lockouts() -> dict[str, Any]:
    lay = Layout()
    lay.row("Now")
    lay.add(stat("Locked accounts", f"sum(ad_domain_accounts_locked{{{SEL}}})",
                 "Accounts locked now on at least one DC (lockoutTime + lockoutDuration > now).",
                 thresholds=[(None, "green"), (1, "orange"), (10, "red")]), 4, 4)
    lay.add(stat("Lockouts, last hour", f"sum(increase(ad_account_lockouts_total{{{SEL}}}[1h]))",
                 "Lockouts first seen by the exporter in the last hour.",
                 thresholds=[(None, "green"), (5, "orange"), (20, "red")]), 4, 4)
    lay.add(stat("DCs answering", f"sum(ad_dc_up{{{SEL}}}) / count(ad_dc_up{{{SEL}}})",
                 "Share of DCs that answered the last LDAP sweep.", unit="percentunit",
                 thresholds=[(None, "red"), (0.99, "green")]), 4, 4)
    lay.add(stat("Lockout threshold", f"max(ad_lockout_policy_threshold{{{SEL}}})",
                 "Bad passwords before lockout (default domain policy; 0 = never)."), 4, 4)
    lay.add(stat("Lockout duration", f"max(ad_lockout_policy_duration_seconds{{{SEL}}})",
                 "How long a lockout lasts (+Inf: until an administrator unlocks).", unit="s"), 4, 4)
    lay.add(stat("Observation window", f"max(ad_lockout_policy_observation_window_seconds{{{SEL}}})",
                 "After this, badPwdCount starts again from 0.", unit="s"), 4, 4)

    lay.row("Lockouts")
    lay.add(table("Locked accounts and where each lockout originated",
                  f"ad_account_lockout_timestamp_seconds{{{SEL}}} * 1000",
                  "Each locked account (capped by max_locked_accounts) with the DC the lockout originated on "
                  "(LockoutStatus.exe's Orig Lock). Look on that DC for 4625/4771/4776, and on the PDC for 4740.",
                  {"user": "User", "origin_dc": "Origin DC", "domain": "Domain", "Value": "Locked at"},
                  unit="dateTimeAsIso"), 12, 9)
    lay.add(timeseries("Lockouts by origin DC",
                       [(f"sum by (origin_dc) (increase(ad_account_lockouts_total{{{SEL}}}[$__rate_interval]))",
                         "{{origin_dc}}")],
                       "Where lockouts are written: a DC taking the bulk points at the site the bad passwords "
                       "come from.", stack=True), 12, 9)
    lay.add(timeseries("Locked accounts per DC", [(f"ad_accounts_locked{{{SEL}}}", "{{dc}}")],
                       "Accounts locked now as each DC sees them; differences are replication delay."), 12, 8)
    lay.add(timeseries("Accounts with a bad password per DC",
                       [(f"ad_accounts_with_bad_password{{{SEL}}}", "{{dc}}")],
                       "badPwdCount >= 1 within the observation window. badPwdCount is per DC and not replicated: "
                       "the DC where it grows is where the bad passwords arrive."), 12, 8)

    lay.row("Accounts")
    lay.add(table("Top bad-password counts per DC",
                  f'topk(25, ad_account_bad_passwords{{{SEL},user!="<other>"}})',
                  "badPwdCount per DC for watched accounts and each DC's top accounts (cap top_accounts).",
                  {"user": "User", "dc": "DC", "domain": "Domain", "Value": "badPwdCount"}), 12, 9)
    lay.add(table("Watched service accounts", f"ad_watched_account_locked{{{SEL}}}",
                  "1 = locked now. Everything running as a locked service account is failing.",
                  {"user": "Account", "domain": "Domain", "Value": "Locked"}), 12, 9)

    lay.row("Domain controllers")
    lay.add(table("Domain controllers",
                  f"ad_dc_info{{{SEL}}} * on (job, domain, dc) group_left ad_dc_is_pdc_emulator{{{SEL}}}",
                  "Every DC of the domain with its site; Value 1 marks the PDC emulator, which every failed "
                  "password is forwarded to and whose Security log holds every 4740.",
                  {"dc": "DC", "site": "Site", "domain": "Domain", "Value": "PDC emulator"}), 12, 8)
    lay.add(timeseries("DC answer time", [(f"ad_dc_sweep_duration_seconds{{{SEL}}}", "{{dc}}")],
                       "Time each DC took for the exporter's sweep.", unit="s"), 12, 8)
    lay.add(timeseries("DC up", [(f"ad_dc_up{{{SEL}}}", "{{dc}}")],
                       "1 = the DC answered the last sweep. ad_dc_error_reason says why not."), 12, 7)
    lay.add(table("Why DCs are down", f"ad_dc_error_reason{{{SEL}}} == 1",
                  "The reason of each DC that did not answer the last sweep.",
                  {"dc": "DC", "reason": "Reason", "domain": "Domain", "Value": "Down"}), 12, 7)

    lay.row("Exporter")
    lay.add(timeseries("Collector refresh time",
                       [('ad_exchange_exporter_collector_duration_seconds{job=~"$job",collector="active_directory"}',
                         "{{target}}")], "Time each refresh took.", unit="s"), 12, 7)
    lay.add(timeseries("Series left out by caps",
                       [('ad_exchange_exporter_capped_series{job=~"$job",collector="active_directory"}',
                         "{{family}}")], "Raise top_accounts or max_locked_accounts if this stays above 0."),
            12, 7)
    return {
        "title": "Active Directory lockouts",
        "uid": "ad-lockouts",
        "tags": ["active-directory", "ad-exchange-exporter"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "1m",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": _variables()},
        "annotations": {"list": []},
        "panels": lay.panels,
    }


DASHBOARDS = {"ad-lockouts.json": ad_lockouts}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    for name, build in DASHBOARDS.items():
        (HERE / name).write_text(render(build))
        print(f"wrote {HERE / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
