"""Writes carbonspan's Grafana dashboards (JSON) next to this file.

Generated rather than hand-written so that every metric, label and span attribute a panel queries
comes from :mod:`carbonspan.processors.semconv`; a renamed metric then changes the JSON, and the
test that compares the committed files with this output fails until they are regenerated:

    python -m carbonspan.dashboards.generate

Panels are built with grafana-foundation-sdk (Grafana's typed dashboard models), pinned to its
main-line release that follows current Grafana (schemaVersion 41), not to a per-version branch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from grafana_foundation_sdk.builders import bargauge, common, dashboard, prometheus, table, tempo, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models import tempo as tempo_models

from carbonspan.processors import semconv as sc

HERE = Path(__file__).parent
PANEL_HEIGHT = 9

#: every datasource is a dashboard variable, so the dashboards import into any Grafana unchanged.
PROMETHEUS = common_models.DataSourceRef(type_val="prometheus", uid="${prometheus}")
TEMPO = common_models.DataSourceRef(type_val="tempo", uid="${tempo}")

REQUEST_CO2E = sc.PROMETHEUS_NAMES[sc.METRIC_REQUEST_CO2E]
REQUEST_ENERGY = sc.PROMETHEUS_NAMES[sc.METRIC_REQUEST_ENERGY]
GPU_ATTRIBUTED = sc.PROMETHEUS_NAMES[sc.METRIC_GPU_ATTRIBUTED_ENERGY]
GPU_IDLE = sc.PROMETHEUS_NAMES[sc.METRIC_GPU_IDLE_ENERGY]
GPU_MEASURED = sc.PROMETHEUS_NAMES[sc.METRIC_GPU_MEASURED_ENERGY]
GPU_LAST_SAMPLE = sc.PROMETHEUS_NAMES[sc.METRIC_GPU_LAST_SAMPLE]
GRID_INTENSITY = sc.PROMETHEUS_NAMES[sc.METRIC_GRID_INTENSITY]
SPAN_ENERGY = sc.PROMETHEUS_NAMES[sc.METRIC_SPAN_ENERGY]
SPAN_CO2E = sc.PROMETHEUS_NAMES[sc.METRIC_SPAN_CO2E]
SPAN_TOKENS = sc.PROMETHEUS_NAMES[sc.METRIC_SPAN_TOKENS]

MODEL = sc.prometheus_label(sc.GEN_AI_REQUEST_MODEL)
ROUTE = sc.prometheus_label(sc.CARBON_REQUEST_ROUTE)
PHASE = sc.prometheus_label(sc.CARBON_PHASE)
GPU_ID = sc.prometheus_label(sc.HW_ID)
GPU_MODEL = sc.prometheus_label(sc.HW_MODEL)
REGION = sc.prometheus_label(sc.CLOUD_REGION)
ZONE = sc.prometheus_label(sc.CARBON_GRID_ZONE)
INTENSITY_SOURCE = sc.prometheus_label(sc.CARBON_INTENSITY_SOURCE)
INTENSITY_FALLBACK = sc.prometheus_label(sc.CARBON_INTENSITY_FALLBACK)

GRAMS = "suffix: gCO2e"
RATE_WINDOW = "[$__rate_interval]"
RANGE_WINDOW = "[$__range]"
REQUEST_FILTER = f'{{{MODEL}=~"$model", {ROUTE}=~"$route"}}'
FLEET_FILTER = f'{{{GPU_MODEL}=~"$gpu_model", {REGION}=~"$region"}}'
GPU = f"{GPU_ID}, {GPU_MODEL}, {REGION}"


# --------------------------------------------------------------------------------------------
# Panel and variable builders (grafana-foundation-sdk, Grafana's own typed dashboard models)
# --------------------------------------------------------------------------------------------
Panel = timeseries.Panel | bargauge.Panel | table.Panel
PanelT = TypeVar("PanelT", timeseries.Panel, bargauge.Panel, table.Panel)
Variable = dashboard.QueryVariable | dashboard.TextBoxVariable | dashboard.DatasourceVariable
STACKED, UNSTACKED = common_models.StackingMode.NORMAL, common_models.StackingMode.NONE


def show(label: str) -> str:
    """A label's value in a Grafana legend."""
    return "{{" + label + "}}"


def target(expr: str, legend: str, *, ref_id: str = "A", instant: bool = False) -> prometheus.Dataquery:
    query = prometheus.Dataquery().ref_id(ref_id).datasource(PROMETHEUS).expr(expr).legend_format(legend)
    return query.instant() if instant else query.range()


def described(panel: PanelT, title: str, description: str, datasource: common_models.DataSourceRef) -> PanelT:
    """A half-width panel with its title, description and datasource; callers add the rest."""
    return panel.title(title).description(description).datasource(datasource).height(PANEL_HEIGHT).span(12)


def timeseries_panel(
    title: str, description: str, unit: str, targets: list[prometheus.Dataquery], *, stacked: bool = False
) -> timeseries.Panel:
    return (
        described(timeseries.Panel(), title, description, PROMETHEUS)
        .unit(unit)
        .targets(targets)
        .stacking(common.StackingConfig().mode(STACKED if stacked else UNSTACKED))
        .legend(
            common.VizLegendOptions()
            .display_mode(common_models.LegendDisplayMode.TABLE)
            .placement(common_models.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max", "lastNotNull"])
        )
        .tooltip(
            common.VizTooltipOptions()
            .mode(common_models.TooltipDisplayMode.MULTI)
            .sort(common_models.SortOrder.DESCENDING)
        )
    )


def bargauge_panel(
    title: str, description: str, unit: str, expr: str, legend: str, *, red_above: float | None = None
) -> bargauge.Panel:
    steps = [models.Threshold(value=None, color="green")]
    if red_above is not None:
        steps.append(models.Threshold(value=red_above, color="red"))
    return (
        described(bargauge.Panel(), title, description, PROMETHEUS)
        .unit(unit)
        .with_target(target(expr, legend, instant=True))
        .thresholds(dashboard.ThresholdsConfig().mode(models.ThresholdsMode.ABSOLUTE).steps(steps))
        .orientation(common_models.VizOrientation.HORIZONTAL)
        .display_mode(common_models.BarGaugeDisplayMode.GRADIENT)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )


def traces_table(
    title: str, description: str, traceql: str, table_type: tempo_models.SearchTableType
) -> table.Panel:
    query = (
        tempo.TempoQuery()
        .datasource(TEMPO)
        .query_type("traceql")
        .query(traceql)
        .limit(20)
        .spss(3)
        .table_type(table_type)
    )
    return described(table.Panel(), title, description, TEMPO).with_target(query)


def label_variable(name: str, label: str, metric: str, label_name: str) -> dashboard.QueryVariable:
    query = f"label_values({metric}, {label_name})"
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(PROMETHEUS)
        .query({"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"})
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(models.VariableOption(selected=True, text="All", value="$__all"))
    )


def textbox_variable(name: str, label: str, default: str, description: str) -> dashboard.TextBoxVariable:
    return (
        dashboard.TextBoxVariable(name)
        .label(label)
        .description(description)
        .default_value(default)
        .current(models.VariableOption(selected=True, text=default, value=default))
    )


def datasource_variable(name: str, label: str, plugin: str) -> dashboard.DatasourceVariable:
    return dashboard.DatasourceVariable(name).label(label).type(plugin)


Section = tuple[str, list[Panel]]


def build_dashboard(
    uid: str, title: str, description: str, variables: list[Variable], sections: list[Section]
) -> dashboard.Dashboard:
    """A dashboard of rows of panels; the SDK places them on the grid, this numbers them."""
    board = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["carbonspan", "carbon", "llm"])
        .timezone("browser")
        .editable()
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .refresh("1m")
        .link(
            dashboard.DashboardLink("carbonspan")
            .type(models.DashboardLinkType.DASHBOARDS)
            .tags(["carbonspan"])
            .include_vars(True)
            .keep_time(True)
        )
        .variables(variables)
    )
    panel_id = 0
    for row_title, panels in sections:
        panel_id += 1
        board = board.with_row(dashboard.Row(row_title).id(panel_id))
        for panel in panels:
            panel_id += 1
            board = board.with_panel(panel.id(panel_id))
    return board


# --------------------------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------------------------
def quantile_targets(histogram: str, by: str) -> list[prometheus.Dataquery]:
    return [
        target(
            f"histogram_quantile({q}, sum by (le, {by}) "
            f"(rate({histogram}_bucket{REQUEST_FILTER}{RATE_WINDOW})))",
            f"p{round(q * 100)} {show(by)}",
            ref_id=ref_id,
        )
        for ref_id, q in (("A", 0.5), ("B", 0.95))
    ]


def ratio(numerator: str, denominator: str, by: str, window: str, scale: str = "") -> str:
    """Ratio of two counters' increase, grouped; ``scale`` multiplies (e.g. ``1000 * ``)."""
    return (
        f"{scale}sum by ({by}) (increase({numerator}{FLEET_FILTER}{window}))"
        f" / sum by ({by}) (increase({denominator}{FLEET_FILTER}{window}))"
    )


def per_request_panels(histogram: str, what: str, unit: str) -> list[Panel]:
    return [
        timeseries_panel(
            f"{what} per request by {name} (p50, p95)",
            f"Quantiles of the request roll-up's {what} per request ({histogram}), by {name}.",
            unit,
            quantile_targets(histogram, label),
        )
        for name, label in (("model", MODEL), ("route", ROUTE))
    ]


def heaviest_traces_panels() -> list[Panel]:
    request_query = f"{{ span.{sc.CARBON_REQUEST_TOTAL_GCO2E} > $request_threshold }}"
    span_query = f"{{ span.{sc.CARBON_TOTAL_GCO2E} > $span_threshold }}"
    return [
        traces_table(
            "Heaviest requests (Tempo)",
            "Traces whose root span's roll-up carries more than $request_threshold gCO2e. "
            f"TraceQL: {request_query}. Click a trace ID to open its waterfall.",
            f"{request_query} | select(span.{sc.GEN_AI_REQUEST_MODEL}, span.{sc.CARBON_REQUEST_ROUTE}, "
            f"span.{sc.CARBON_REQUEST_ENERGY_JOULES}, span.{sc.CARBON_REQUEST_QUALITY})",
            tempo_models.SearchTableType.TRACES,
        ),
        traces_table(
            "Heaviest spans (Tempo)",
            f"Spans (phases) whose own footprint exceeds $span_threshold gCO2e. TraceQL: {span_query}.",
            f"{span_query} | select(span.{sc.CARBON_PHASE}, span.{sc.CARBON_ENERGY_JOULES}, "
            f"span.{sc.CARBON_INTENSITY}, span.{sc.CARBON_QUALITY})",
            tempo_models.SearchTableType.SPANS,
        ),
    ]


# --------------------------------------------------------------------------------------------
# Dashboards
# --------------------------------------------------------------------------------------------
def requests_dashboard() -> dashboard.Dashboard:
    variables = [
        datasource_variable("prometheus", "Prometheus", "prometheus"),
        datasource_variable("tempo", "Tempo", "tempo"),
        label_variable("model", "Model", f"{REQUEST_CO2E}_count", MODEL),
        label_variable("route", "Route", f"{REQUEST_CO2E}_count", ROUTE),
        label_variable("gpu_model", "GPU model", SPAN_TOKENS, GPU_MODEL),
        label_variable("region", "Region", SPAN_TOKENS, REGION),
        textbox_variable(
            "request_threshold", "Heavy request (gCO2e)", "1", "Requests above this many gCO2e are listed."
        ),
        textbox_variable(
            "span_threshold", "Heavy span (gCO2e)", "0.5", "Spans above this many gCO2e are listed."
        ),
    ]
    per_request = [
        *per_request_panels(REQUEST_CO2E, "CO2e", GRAMS),
        *per_request_panels(REQUEST_ENERGY, "Energy", "joule"),
        timeseries_panel(
            "Mean CO2e per request by model",
            "Total gCO2e of the requests finished in the interval over their number.",
            GRAMS,
            [
                target(
                    f"sum by ({MODEL}) (rate({REQUEST_CO2E}_sum{REQUEST_FILTER}{RATE_WINDOW}))"
                    f" / sum by ({MODEL}) (rate({REQUEST_CO2E}_count{REQUEST_FILTER}{RATE_WINDOW}))",
                    show(MODEL),
                )
            ],
        ),
        timeseries_panel(
            "Requests per second by model",
            "Requests whose roll-up completed, per second.",
            "reqps",
            [
                target(
                    f"sum by ({MODEL}) (rate({REQUEST_CO2E}_count{REQUEST_FILTER}{RATE_WINDOW}))",
                    show(MODEL),
                )
            ],
        ),
    ]
    per_token = [
        timeseries_panel(
            "gCO2e per 1k tokens by GPU model and region",
            "Carbon of the enriched spans over the tokens they computed, per 1000 tokens: what a "
            "token costs on each kind of GPU in each grid.",
            GRAMS,
            [
                target(
                    ratio(SPAN_CO2E, SPAN_TOKENS, f"{GPU_MODEL}, {REGION}", RATE_WINDOW, "1000 * "),
                    f"{show(GPU_MODEL)} {show(REGION)}",
                )
            ],
        ),
        timeseries_panel(
            "Energy per token by GPU model and phase",
            "GPU energy of the enriched spans over the tokens they computed (J/token), by phase: "
            "prefill and decode cost differently on each GPU.",
            "joule",
            [
                target(
                    ratio(SPAN_ENERGY, SPAN_TOKENS, f"{GPU_MODEL}, {PHASE}", RATE_WINDOW),
                    f"{show(GPU_MODEL)} {show(PHASE)}",
                )
            ],
        ),
    ]
    by_phase = [
        timeseries_panel(
            "Power attributed to requests by phase",
            "Energy of the enriched spans per second (W), stacked by phase.",
            "watt",
            [
                target(
                    f"sum by ({PHASE}) (rate({SPAN_ENERGY}{FLEET_FILTER}{RATE_WINDOW}))",
                    show(PHASE),
                )
            ],
            stacked=True,
        ),
        *(
            bargauge_panel(
                f"CO2e by {name} over the time range",
                f"gCO2e of the enriched spans in the dashboard's time range, by {name}.",
                GRAMS,
                f"sum by ({label}) (increase({SPAN_CO2E}{FLEET_FILTER}{RANGE_WINDOW}))",
                show(label),
            ).span(6)
            for name, label in (("phase", PHASE), ("region", REGION))
        ),
    ]
    return build_dashboard(
        "carbonspan-requests",
        "carbonspan / Requests",
        "Carbon and energy per LLM request, per token and per phase, with links to the heaviest traces.",
        variables,
        [
            ("Per request", per_request),
            ("Per token", per_token),
            ("By phase", by_phase),
            ("Heaviest traces", heaviest_traces_panels()),
        ],
    )


def fleet_dashboard() -> dashboard.Dashboard:
    variables = [
        datasource_variable("prometheus", "Prometheus", "prometheus"),
        label_variable("gpu_model", "GPU model", GPU_MEASURED, GPU_MODEL),
        label_variable("region", "Region", GPU_MEASURED, REGION),
    ]
    idle_share_description = (
        "Idle energy over measured energy per GPU: the share of the GPU's energy drawn while no "
        "request ran on it. Red above 50%, the CarbonGpuIdleShareHigh alert's threshold."
    )
    gpu_energy = [
        timeseries_panel(
            "Idle share per GPU",
            idle_share_description,
            "percentunit",
            [target(ratio(GPU_IDLE, GPU_MEASURED, GPU, RATE_WINDOW), f"{show(GPU_MODEL)} {show(GPU_ID)}")],
        ),
        bargauge_panel(
            "Idle share per GPU over the time range",
            idle_share_description,
            "percentunit",
            ratio(GPU_IDLE, GPU_MEASURED, GPU, RANGE_WINDOW),
            f"{show(GPU_MODEL)} {show(GPU_ID)} ({show(REGION)})",
            red_above=0.5,
        ),
        timeseries_panel(
            "GPU power by region: attributed vs idle",
            "Measured GPU energy per second (W), split into what the join attributed to requests "
            "and what was idle.",
            "watt",
            [
                target(
                    f"sum by ({REGION}) (rate({metric}{FLEET_FILTER}{RATE_WINDOW}))",
                    f"{show(REGION)} {kind}",
                    ref_id=ref_id,
                )
                for ref_id, metric, kind in (("A", GPU_ATTRIBUTED, "attributed"), ("B", GPU_IDLE, "idle"))
            ],
            stacked=True,
        ),
        timeseries_panel(
            "Accounted share of measured energy",
            "(attributed + idle) / measured per GPU. The join's invariant keeps it at 100%; a "
            "drift means energy lost or counted twice.",
            "percentunit",
            [
                target(
                    f"(sum by ({GPU}) (increase({GPU_ATTRIBUTED}{FLEET_FILTER}{RATE_WINDOW}))"
                    f" + sum by ({GPU}) (increase({GPU_IDLE}{FLEET_FILTER}{RATE_WINDOW})))"
                    f" / sum by ({GPU}) (increase({GPU_MEASURED}{FLEET_FILTER}{RATE_WINDOW}))",
                    f"{show(GPU_MODEL)} {show(GPU_ID)}",
                )
            ],
        ),
        bargauge_panel(
            "Seconds since the newest energy sample per GPU",
            "Age of the newest hw.energy sample the collector holds for each GPU. Red above 120 s, "
            "the CarbonGpuEnergySamplesStale alert's threshold.",
            "s",
            f"time() - max by ({GPU}) ({GPU_LAST_SAMPLE}{FLEET_FILTER})",
            f"{show(GPU_MODEL)} {show(GPU_ID)} ({show(REGION)})",
            red_above=120,
        ),
    ]
    grid = [
        timeseries_panel(
            "Grid carbon intensity by region",
            "gCO2e/kWh the join priced energy with, by region, grid zone and intensity source.",
            "suffix: gCO2e/kWh",
            [
                target(
                    f"max by ({REGION}, {ZONE}, {INTENSITY_SOURCE}) "
                    f'({GRID_INTENSITY}{{{REGION}=~"$region"}})',
                    f"{show(REGION)} ({show(ZONE)}, {show(INTENSITY_SOURCE)})",
                )
            ],
        ),
        bargauge_panel(
            "Regions on a fallback intensity source",
            "Series per region whose intensity provider fell back (live API unreachable, no data "
            "for the time): CO2 there is priced with the fallback source. The "
            "CarbonIntensityFallbackActive alert fires after 15 minutes of it.",
            "none",
            f'count by ({REGION}, {INTENSITY_SOURCE}) ({GRID_INTENSITY}{{{INTENSITY_FALLBACK}="true", '
            f'{REGION}=~"$region"}})',
            f"{show(REGION)} ({show(INTENSITY_SOURCE)})",
            red_above=1,
        ),
    ]
    return build_dashboard(
        "carbonspan-fleet",
        "carbonspan / GPU fleet and grid",
        "Idle versus attributed GPU energy, energy sample freshness and grid carbon intensity.",
        variables,
        [("GPU energy", gpu_energy), ("Grid", grid)],
    )


DASHBOARDS: dict[str, Callable[[], dashboard.Dashboard]] = {
    "carbonspan-requests.json": requests_dashboard,
    "carbonspan-fleet.json": fleet_dashboard,
}


def render(build: Callable[[], dashboard.Dashboard]) -> str:
    return json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main() -> None:
    for file_name, build in DASHBOARDS.items():
        (HERE / file_name).write_text(render(build), encoding="utf-8")
        print(HERE / file_name)


if __name__ == "__main__":
    main()
