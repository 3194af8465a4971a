"""Panel builders for the dashboards: plain dicts in Grafana's dashboard schema."""

from __future__ import annotations

from typing import Any

DS = {"type": "prometheus", "uid": "${datasource}"}


def _target(expr: str, legend: str = "", *, instant: bool = False, fmt: str = "time_series") -> dict[str, Any]:
    return {
        "datasource": DS,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "refId": "A",
        "instant": instant,
        "range": not instant,
        "format": fmt,
    }


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
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "id": self.next_id,
                "collapsed": False,
                "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1},
                "panels": [],
            }
        )
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


def stat(
    title: str,
    expr: str,
    description: str,
    unit: str = "none",
    thresholds: list[tuple[float | None, str]] | None = None,
) -> dict[str, Any]:
    steps = [{"value": v, "color": c} for v, c in (thresholds or [(None, "green")])]
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "targets": [_target(expr, instant=True)],
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "auto",
        },
    }


def timeseries(
    title: str, targets: list[tuple[str, str]], description: str, unit: str = "none", stack: bool = False
) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "targets": [dict(_target(e, legend), refId=chr(65 + i)) for i, (e, legend) in enumerate(targets)],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {
                    "drawStyle": "line",
                    "lineWidth": 1,
                    "fillOpacity": 10,
                    "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                },
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def table(
    title: str,
    expr: str,
    description: str,
    rename: dict[str, str],
    exclude: tuple[str, ...] = ("Time", "__name__", "job", "instance"),
    unit: str = "none",
    mappings: dict[str, tuple[str, str]] | None = None,
) -> dict[str, Any]:
    return {
        "type": "table",
        "title": title,
        "description": description,
        "targets": [_target(expr, instant=True, fmt="table")],
        "fieldConfig": {"defaults": {"unit": unit, "mappings": value_mappings(mappings)}, "overrides": []},
        "options": {"showHeader": True, "sortBy": [{"displayName": rename.get("Value", "Value"), "desc": True}]},
        "transformations": [
            {"id": "organize", "options": {"excludeByName": dict.fromkeys(exclude, True), "renameByName": rename}}
        ],
    }


def grid(
    title: str, expr: str, description: str, rows: str, columns: str, mappings: dict[str, tuple[str, str]]
) -> dict[str, Any]:
    """A matrix: one row per ``rows`` label value, one column per ``columns`` label value, cells coloured."""
    return {
        "type": "table",
        "title": title,
        "description": description,
        "targets": [_target(expr, instant=True, fmt="table")],
        "fieldConfig": {
            "defaults": {"mappings": value_mappings(mappings), "custom": {"cellOptions": {"type": "color-background"}}},
            "overrides": [],
        },
        "options": {"showHeader": True},
        "transformations": [
            {"id": "groupingToMatrix", "options": {"columnField": columns, "rowField": rows, "valueField": "Value"}}
        ],
    }


def value_mappings(mappings: dict[str, tuple[str, str]] | None) -> list[dict[str, Any]]:
    """{"0": ("Inactive", "red")} -> Grafana value mappings."""
    if not mappings:
        return []
    return [
        {
            "type": "value",
            "options": {
                value: {"text": text, "color": color, "index": i}
                for i, (value, (text, color)) in enumerate(mappings.items())
            },
        }
    ]


def variables(job_metric: str, name: str, label: str) -> list[dict[str, Any]]:
    """Data source, job and one more label (domain, server) to filter by."""

    def query(var: str, title: str, q: str) -> dict[str, Any]:
        return {
            "type": "query",
            "name": var,
            "label": title,
            "datasource": DS,
            "query": {"query": q, "refId": var},
            "definition": q,
            "refresh": 2,
            "includeAll": True,
            "multi": True,
            "current": {"text": "All", "value": "$__all"},
            "allValue": ".+",
            "sort": 1,
        }

    return [
        {
            "type": "datasource",
            "name": "datasource",
            "label": "Data source",
            "query": "prometheus",
            "current": {},
            "hide": 0,
        },
        query("job", "Job", f"label_values({job_metric}, job)"),
        query(name, label, f'label_values({job_metric}{{job=~"$job"}}, {name})'),
    ]


def dashboard(
    title: str,
    uid: str,
    tags: list[str],
    templating: list[dict[str, Any]],
    panels: list[dict[str, Any]],
    annotations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "title": title,
        "uid": uid,
        "tags": [*tags, "ad-exchange-exporter"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "1m",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": templating},
        "annotations": {"list": annotations or []},
        "panels": panels,
    }
