"""Panel builders for the dashboards, on grafana-foundation-sdk's typed builders (Grafana's own schema).

Each helper returns an SDK builder; :class:`Layout` places them on Grafana's 24-column grid, and
:func:`dashboard` builds the whole dashboard into the JSON Grafana imports. :class:`Selector` writes every
label selector (``job``, ``domain``, ``server`` ... from the dashboard's variables) in one place.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.builders import prometheus
from grafana_foundation_sdk.builders import stat as stat_panel
from grafana_foundation_sdk.builders import table as table_panel
from grafana_foundation_sdk.builders import timeseries as timeseries_panel
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DS = models.DataSourceRef(type_val="prometheus", uid="${datasource}")

PanelBuilder = stat_panel.Panel | timeseries_panel.Panel | table_panel.Panel | builders.Panel


class Selector:
    """The label matchers every query of a dashboard carries: ``SEL("ad_dc_up")`` -> ``ad_dc_up{job=~"$job",...}``."""

    def __init__(self, *matchers: str) -> None:
        self.matchers = matchers

    def where(self, *more: str) -> Selector:
        """A narrower selector: these matchers and more."""
        return Selector(*self.matchers, *more)

    def __call__(self, metric: str, *more: str) -> str:
        return f"{metric}{{{','.join((*self.matchers, *more))}}}"


def _target(expr: str, legend: str = "", *, instant: bool = False, table: bool = False, ref: str = "A") -> Any:
    query = prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").ref_id(ref).datasource(DS)
    query = query.instant() if instant else query.range()
    if table:
        query = query.format(PromQueryFormat.TABLE)
    return query


class Layout:
    """Places panels left to right on Grafana's 24-column grid, a new line when the next does not fit."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []
        self.x = 0
        self.y = 0
        self.row_height = 0
        self.next_id = 1

    def row(self, title: str) -> None:
        self._newline()
        row = builders.Row(title).id(self.next_id).grid_pos(models.GridPos(h=1, w=24, x=0, y=self.y))
        self.items.append(("row", row))
        self.next_id += 1
        self.y += 1

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_height
            self.x = 0
            self.row_height = 0

    def add(self, panel: PanelBuilder, w: int, h: int) -> None:
        if self.x + w > 24:
            self._newline()
        panel.id(self.next_id).grid_pos(models.GridPos(h=h, w=w, x=self.x, y=self.y)).datasource(DS)
        self.items.append(("panel", panel))
        self.next_id += 1
        self.x += w
        self.row_height = max(self.row_height, h)


def _thresholds(steps: list[tuple[float | None, str]] | None) -> builders.ThresholdsConfig:
    return (
        builders.ThresholdsConfig()
        .mode(models.ThresholdsMode.ABSOLUTE)
        .steps([models.Threshold(value=v, color=c) for v, c in (steps or [(None, "green")])])
    )


def stat(
    title: str,
    expr: str,
    description: str,
    unit: str = "none",
    thresholds: list[tuple[float | None, str]] | None = None,
) -> stat_panel.Panel:
    return (
        stat_panel.Panel()
        .title(title)
        .description(description)
        .with_target(_target(expr, instant=True))
        .unit(unit)
        .thresholds(_thresholds(thresholds))
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(common.BigValueTextMode.AUTO)
    )


def timeseries(
    title: str, targets: list[tuple[str, str]], description: str, unit: str = "none", stack: bool = False
) -> timeseries_panel.Panel:
    panel = (
        timeseries_panel.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .draw_style(common.GraphDrawStyle.LINE)
        .line_width(1)
        .fill_opacity(10)
        .stacking(
            common_builders.StackingConfig()
            .mode(common.StackingMode.NORMAL if stack else common.StackingMode.NONE)
            .group("A")
        )
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.RIGHT)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
        .tooltip(
            common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING)
        )
    )
    for i, (expr, legend) in enumerate(targets):
        panel = panel.with_target(_target(expr, legend, ref=chr(65 + i)))
    return panel


def table(
    title: str,
    expr: str,
    description: str,
    rename: dict[str, str],
    exclude: tuple[str, ...] = ("Time", "__name__", "job", "instance"),
    unit: str = "none",
    mappings: dict[str, tuple[str, str]] | None = None,
) -> table_panel.Panel:
    return (
        table_panel.Panel()
        .title(title)
        .description(description)
        .with_target(_target(expr, instant=True, table=True))
        .unit(unit)
        .mappings(value_mappings(mappings))
        .show_header(True)
        .sort_by([common_builders.TableSortByFieldState().display_name(rename.get("Value", "Value")).desc(True)])
        .with_transformation(
            models.DataTransformerConfig(
                id_val="organize",
                options={"excludeByName": dict.fromkeys(exclude, True), "renameByName": rename},
            )
        )
    )


def grid(
    title: str, expr: str, description: str, rows: str, columns: str, mappings: dict[str, tuple[str, str]]
) -> builders.Panel:
    """A matrix: one row per ``rows`` label value, one column per ``columns`` label value, cells coloured.

    A table whose cells take their mapping's colour: the SDK's table builder cannot set a field's cell options,
    so this one is the generic panel builder with the table's options.
    """
    return (
        builders.Panel()
        .type("table")
        .title(title)
        .description(description)
        .with_target(_target(expr, instant=True, table=True))
        .mappings(value_mappings(mappings))
        .custom({"cellOptions": {"type": "color-background"}})
        .options({"showHeader": True})
        .with_transformation(
            models.DataTransformerConfig(
                id_val="groupingToMatrix",
                options={"columnField": columns, "rowField": rows, "valueField": "Value"},
            )
        )
    )


EXPORTER_URL = "exporter_url"


def exporter_url_variable() -> builders.TextBoxVariable:
    """Where people reach the exporter's pages (its external URL): the lockout tables link there."""
    return (
        builders.TextBoxVariable(EXPORTER_URL)
        .label("Exporter URL")
        .description("The exporter's external URL, for the links to its lockout pages (/lockouts/ACCOUNT).")
        .default_value("http://localhost:9733")
    )


def investigate_link(panel: table_panel.Panel, column: str) -> table_panel.Panel:
    """Each value of ``column`` (an account) links to the exporter's page that investigates it."""
    link = {"title": "Investigate on the exporter", "url": f"${{{EXPORTER_URL}}}/lockouts/${{__value.raw}}"}
    return panel.override_by_name(column, [models.DynamicConfigValue(id_val="links", value=[link])])


def value_mappings(mappings: dict[str, tuple[str, str]] | None) -> list[models.ValueMapping]:
    """{"0": ("Inactive", "red")} -> Grafana value mappings."""
    if not mappings:
        return []
    return [
        models.ValueMap(
            options={
                value: models.ValueMappingResult(text=text, color=color, index=i)
                for i, (value, (text, color)) in enumerate(mappings.items())
            }
        )
    ]


def variables(job_metric: str, name: str, label: str) -> list[Builder[Any]]:
    """Data source, job and one more label (domain, server) to filter by."""

    def query(var: str, title: str, q: str) -> builders.QueryVariable:
        return (
            builders.QueryVariable(var)
            .label(title)
            .datasource(DS)
            .query(q)
            .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .include_all(True)
            .multi(True)
            .current(models.VariableOption(text="All", value="$__all"))
            .all_value(".+")
            .sort(models.VariableSort.ALPHABETICAL_ASC)
        )

    return [
        builders.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        query("job", "Job", f"label_values({job_metric}, job)"),
        query(name, label, f'label_values({job_metric}{{job=~"$job"}}, {name})'),
    ]


def annotation(name: str, expr: str, title: str, text: str, tags: str, color: str = "purple") -> dict[str, Any]:
    """A Prometheus annotation query (the SDK's AnnotationQuery has no field for Prometheus' own options)."""
    return {
        "name": name,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "enable": True,
        "iconColor": color,
        "expr": expr,
        "step": "1m",
        "titleFormat": title,
        "textFormat": text,
        "tagKeys": tags,
        "useValueForTime": False,
    }


def dashboard(
    title: str,
    uid: str,
    tags: list[str],
    templating: list[Builder[Any]],
    layout: Layout,
    annotations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    board = (
        builders.Dashboard(title)
        .uid(uid)
        .tags([*tags, "ad-exchange-exporter"])
        .timezone("browser")
        .editable()
        .refresh("1m")
        .time("now-6h", "now")
        .variables(templating)
    )
    for kind, item in layout.items:
        board = board.with_row(item) if kind == "row" else board.with_panel(item)
    out: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    out["annotations"] = {"list": annotations or []}
    return out
