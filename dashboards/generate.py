"""Writes carbonspan's Grafana dashboards (JSON) next to this file.

Generated rather than hand-written so that every metric, label and span attribute a panel queries
comes from :mod:`carbonspan.processors.semconv`; a renamed metric then changes the JSON, and the
test that compares the committed files with this output fails until they are regenerated:

    python -m carbonspan.dashboards.generate
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from carbonspan.processors import semconv as sc

Json = dict[str, Any]

HERE = Path(__file__).parent
#: Grafana's dashboard schema version these files are written in (Grafana 10.x/11.x/12.x import it).
SCHEMA_VERSION = 39
PANEL_HEIGHT = 9

PROMETHEUS = {"type": "prometheus", "uid": "${prometheus}"}
TEMPO = {"type": "tempo", "uid": "${tempo}"}

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
# Panel and variable builders
# --------------------------------------------------------------------------------------------
def show(label: str) -> str:
    """A label's value in a Grafana legend."""
    return "{{" + label + "}}"


def target(expr: str, legend: str, *, instant: bool = False) -> Json:
    return {
        "datasource": PROMETHEUS,
        "expr": expr,
        "legendFormat": legend,
        "instant": instant,
        "range": not instant,
    }


def panel(kind: str, title: str, description: str, datasource: Json, **settings: Any) -> Json:
    return {"type": kind, "title": title, "description": description, "datasource": datasource, **settings}


def variable(kind: str, name: str, label: str, **settings: Any) -> Json:
    return {"type": kind, "name": name, "label": label, **settings}


def timeseries(
    title: str, description: str, unit: str, targets: list[Json], *, stacked: bool = False
) -> Json:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": PROMETHEUS,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {"stacking": {"mode": "normal" if stacked else "none", "group": "A"}},
            },
            "overrides": [],
        },
        "options": {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "calcs": ["mean", "max", "lastNotNull"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": targets,
    }


def bargauge(
    title: str, description: str, unit: str, expr: str, legend: str, *, red_above: float | None = None
) -> Json:
    steps: list[Json] = [{"color": "green", "value": None}]
    if red_above is not None:
        steps.append({"color": "red", "value": red_above})
    return panel(
        "bargauge",
        title,
        description,
        PROMETHEUS,
        fieldConfig={
            "defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
            "overrides": [],
        },
        options={
            "orientation": "horizontal",
            "displayMode": "gradient",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        },
        targets=[target(expr, legend, instant=True)],
    )


def traces_table(title: str, description: str, traceql: str, table_type: str) -> Json:
    return panel(
        "table",
        title,
        description,
        TEMPO,
        targets=[
            {
                "datasource": TEMPO,
                "queryType": "traceql",
                "query": traceql,
                "limit": 20,
                "spss": 3,
                "tableType": table_type,
            }
        ],
    )


def row(title: str) -> Json:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def datasource_variable(name: str, label: str, plugin: str) -> Json:
    return variable("datasource", name, label, query=plugin, current={}, hide=0)


def label_variable(name: str, label: str, metric: str, label_name: str) -> Json:
    query = f"label_values({metric}, {label_name})"
    return variable(
        "query",
        name,
        label,
        datasource=PROMETHEUS,
        definition=query,
        query={"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        refresh=2,
        sort=1,
        multi=True,
        includeAll=True,
        allValue=".*",
        current={"selected": True, "text": ["All"], "value": ["$__all"]},
    )


def textbox_variable(name: str, label: str, default: str, description: str) -> Json:
    return variable(
        "textbox",
        name,
        label,
        description=description,
        query=default,
        current={"text": default, "value": default},
    )


def layout(panels: list[Json]) -> list[Json]:
    """Numbers the panels and places them left to right on Grafana's 24-column grid; a row starts
    a new line. Panels are half the width unless they ask for another ``width``."""
    placed: list[Json] = []
    x = y = 0
    for panel_id, panel in enumerate(panels, start=1):
        attributes = {key: value for key, value in panel.items() if key != "width"}
        if panel["type"] == "row":
            if x:
                x, y = 0, y + PANEL_HEIGHT
            placed.append({"id": panel_id, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, **attributes})
            y += 1
            continue
        width = panel.get("width", 12)
        if x + width > 24:
            x, y = 0, y + PANEL_HEIGHT
        placed.append(
            {"id": panel_id, "gridPos": {"h": PANEL_HEIGHT, "w": width, "x": x, "y": y}, **attributes}
        )
        x += width
    return placed


def dashboard(uid: str, title: str, description: str, variables: list[Json], panels: list[Json]) -> Json:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["carbonspan", "carbon", "llm"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "title": "carbonspan",
                "tags": ["carbonspan"],
                "asDropdown": False,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "templating": {"list": variables},
        "panels": layout(panels),
    }


# --------------------------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------------------------
def quantile_targets(histogram: str, by: str) -> list[Json]:
    return [
        target(
            f"histogram_quantile({q}, sum by (le, {by}) "
            f"(rate({histogram}_bucket{REQUEST_FILTER}{RATE_WINDOW})))",
            f"p{round(q * 100)} {show(by)}",
        )
        for q in (0.5, 0.95)
    ]


def ratio(numerator: str, denominator: str, by: str, window: str, scale: str = "") -> str:
    """Ratio of two counters' increase, grouped; ``scale`` multiplies (e.g. ``1000 * ``)."""
    return (
        f"{scale}sum by ({by}) (increase({numerator}{FLEET_FILTER}{window}))"
        f" / sum by ({by}) (increase({denominator}{FLEET_FILTER}{window}))"
    )


def per_request_panels(histogram: str, what: str, unit: str) -> list[Json]:
    return [
        timeseries(
            f"{what} per request by {name} (p50, p95)",
            f"Quantiles of the request roll-up's {what} per request ({histogram}), by {name}.",
            unit,
            quantile_targets(histogram, label),
        )
        for name, label in (("model", MODEL), ("route", ROUTE))
    ]


def heaviest_traces_panels() -> list[Json]:
    request_query = f"{{ span.{sc.CARBON_REQUEST_TOTAL_GCO2E} > $request_threshold }}"
    span_query = f"{{ span.{sc.CARBON_TOTAL_GCO2E} > $span_threshold }}"
    return [
        traces_table(
            "Heaviest requests (Tempo)",
            "Traces whose root span's roll-up carries more than $request_threshold gCO2e. "
            f"TraceQL: {request_query}. Click a trace ID to open its waterfall.",
            f"{request_query} | select(span.{sc.GEN_AI_REQUEST_MODEL}, span.{sc.CARBON_REQUEST_ROUTE}, "
            f"span.{sc.CARBON_REQUEST_ENERGY_JOULES}, span.{sc.CARBON_REQUEST_QUALITY})",
            "traces",
        ),
        traces_table(
            "Heaviest spans (Tempo)",
            f"Spans (phases) whose own footprint exceeds $span_threshold gCO2e. TraceQL: {span_query}.",
            f"{span_query} | select(span.{sc.CARBON_PHASE}, span.{sc.CARBON_ENERGY_JOULES}, "
            f"span.{sc.CARBON_INTENSITY}, span.{sc.CARBON_QUALITY})",
            "spans",
        ),
    ]


# --------------------------------------------------------------------------------------------
# Dashboards
# --------------------------------------------------------------------------------------------
def requests_dashboard() -> Json:
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
    panels = [
        row("Per request"),
        *per_request_panels(REQUEST_CO2E, "CO2e", GRAMS),
        *per_request_panels(REQUEST_ENERGY, "Energy", "joule"),
        timeseries(
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
        timeseries(
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
        row("Per token"),
        timeseries(
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
        timeseries(
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
        row("By phase"),
        timeseries(
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
        {
            **bargauge(
                "CO2e by phase over the time range",
                "gCO2e of the enriched spans in the dashboard's time range, by phase.",
                GRAMS,
                f"sum by ({PHASE}) (increase({SPAN_CO2E}{FLEET_FILTER}{RANGE_WINDOW}))",
                show(PHASE),
            ),
            "width": 6,
        },
        {
            **bargauge(
                "CO2e by region over the time range",
                "gCO2e of the enriched spans in the dashboard's time range, by cloud region.",
                GRAMS,
                f"sum by ({REGION}) (increase({SPAN_CO2E}{FLEET_FILTER}{RANGE_WINDOW}))",
                show(REGION),
            ),
            "width": 6,
        },
        row("Heaviest traces"),
        *heaviest_traces_panels(),
    ]
    return dashboard(
        "carbonspan-requests",
        "carbonspan / Requests",
        "Carbon and energy per LLM request, per token and per phase, with links to the heaviest traces.",
        variables,
        panels,
    )


def fleet_dashboard() -> Json:
    variables = [
        datasource_variable("prometheus", "Prometheus", "prometheus"),
        label_variable("gpu_model", "GPU model", GPU_MEASURED, GPU_MODEL),
        label_variable("region", "Region", GPU_MEASURED, REGION),
    ]
    idle_share_description = (
        "Idle energy over measured energy per GPU: the share of the GPU's energy drawn while no "
        "request ran on it. The IdleShareHigh alert fires above 50% for 30 minutes."
    )
    panels = [
        row("GPU energy"),
        timeseries(
            "Idle share per GPU",
            idle_share_description,
            "percentunit",
            [target(ratio(GPU_IDLE, GPU_MEASURED, GPU, RATE_WINDOW), f"{show(GPU_MODEL)} {show(GPU_ID)}")],
        ),
        bargauge(
            "Idle share per GPU over the time range",
            idle_share_description,
            "percentunit",
            ratio(GPU_IDLE, GPU_MEASURED, GPU, RANGE_WINDOW),
            f"{show(GPU_MODEL)} {show(GPU_ID)} ({show(REGION)})",
            red_above=0.5,
        ),
        timeseries(
            "GPU power by region: attributed vs idle",
            "Measured GPU energy per second (W), split into what the join attributed to requests "
            "and what was idle.",
            "watt",
            [
                target(
                    f"sum by ({REGION}) (rate({metric}{FLEET_FILTER}{RATE_WINDOW}))",
                    f"{show(REGION)} {kind}",
                )
                for metric, kind in ((GPU_ATTRIBUTED, "attributed"), (GPU_IDLE, "idle"))
            ],
            stacked=True,
        ),
        timeseries(
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
        bargauge(
            "Seconds since the newest energy sample per GPU",
            "Age of the newest hw.energy sample the collector holds for each GPU. The "
            "GpuEnergySamplesStale alert fires above 120 s for 5 minutes.",
            "s",
            f"time() - max by ({GPU}) ({GPU_LAST_SAMPLE}{FLEET_FILTER})",
            f"{show(GPU_MODEL)} {show(GPU_ID)} ({show(REGION)})",
            red_above=120,
        ),
        row("Grid"),
        timeseries(
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
        bargauge(
            "Regions on a fallback intensity source",
            "1 where the intensity provider fell back (live API unreachable, no data for the time): "
            "CO2 figures there use the fallback source. The IntensityFallbackActive alert fires "
            "after 15 minutes.",
            "none",
            f'count by ({REGION}, {INTENSITY_SOURCE}) ({GRID_INTENSITY}{{{INTENSITY_FALLBACK}="true", '
            f'{REGION}=~"$region"}})',
            f"{show(REGION)} ({show(INTENSITY_SOURCE)})",
            red_above=1,
        ),
    ]
    return dashboard(
        "carbonspan-fleet",
        "carbonspan / GPU fleet and grid",
        "Idle versus attributed GPU energy, energy sample freshness and grid carbon intensity.",
        variables,
        panels,
    )


DASHBOARDS: dict[str, Callable[[], Json]] = {
    "carbonspan-requests.json": requests_dashboard,
    "carbonspan-fleet.json": fleet_dashboard,
}


def render(build: Callable[[], Json]) -> str:
    return json.dumps(build(), indent=2) + "\n"


def main() -> None:
    for file_name, build in DASHBOARDS.items():
        (HERE / file_name).write_text(render(build), encoding="utf-8")
        print(HERE / file_name)


if __name__ == "__main__":
    main()
