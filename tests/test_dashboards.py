"""The Grafana dashboards are what generate.py writes, query only metrics, labels and span
attributes that carbonspan exports, and take every datasource from a template variable."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from carbonspan.dashboards import generate, promql
from carbonspan.processors import semconv as sc

DASHBOARDS = {name: json.loads((generate.HERE / name).read_text()) for name in generate.DASHBOARDS}
SEMCONV_STRINGS = {value for value in vars(sc).values() if isinstance(value, str)}
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")
TRACEQL_ATTRIBUTE = re.compile(r"\b(?:span|resource)\.([A-Za-z_][\w.]*)")


def panels(dashboard: dict) -> Iterator[dict]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def targets(dashboard: dict) -> Iterator[tuple[dict, dict]]:
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel, target


def variables(dashboard: dict) -> dict[str, dict]:
    return {variable["name"]: variable for variable in dashboard["templating"]["list"]}


@pytest.mark.parametrize("file_name", generate.DASHBOARDS)
def test_committed_json_is_what_generate_writes(file_name: str) -> None:
    committed = (generate.HERE / file_name).read_text()
    assert committed == generate.render(generate.DASHBOARDS[file_name]), (
        f"{file_name} is stale: run python -m carbonspan.dashboards.generate"
    )


@pytest.mark.parametrize("file_name", DASHBOARDS)
def test_every_promql_query_uses_exported_metrics_and_labels(file_name: str) -> None:
    dashboard = DASHBOARDS[file_name]
    queries = [target["expr"] for _, target in targets(dashboard) if "expr" in target]
    for variable in variables(dashboard).values():
        if variable["type"] == "query":
            match = LABEL_VALUES.match(variable["query"]["query"])
            assert match, variable["query"]
            queries.append(match["selector"])
            assert match["label"] in promql.EXPORTED_LABELS[promql.base_metric(match["selector"])]
    assert len(queries) >= 10
    assert {query: promql.problems(query) for query in queries} == dict.fromkeys(queries, [])


@pytest.mark.parametrize("file_name", DASHBOARDS)
def test_every_quantile_keeps_the_bucket_label(file_name: str) -> None:
    """histogram_quantile over buckets aggregated without ``le`` returns nonsense, silently."""
    quantiles = [
        t["expr"] for _, t in targets(DASHBOARDS[file_name]) if "histogram_quantile" in t.get("expr", "")
    ]
    for expr in quantiles:
        assert promql.BUCKET_LABEL in promql.names(expr).grouping_labels, expr


def test_dashboards_cover_the_requested_views() -> None:
    exprs = " ".join(t.get("expr", "") for d in DASHBOARDS.values() for _, t in targets(d))
    names = {
        s.metric
        for d in DASHBOARDS.values()
        for _, t in targets(d)
        if "expr" in t
        for s in promql.names(t["expr"]).selectors
    }
    for quantile in ("0.5", "0.95"):
        for histogram in promql.HISTOGRAMS:
            assert f"histogram_quantile({quantile}, sum by (le, {generate.MODEL})" in exprs
            assert f"{histogram}_bucket" in names
    assert set(promql.EXPORTED_LABELS) <= {promql.base_metric(n) for n in names}


def test_heaviest_traces_are_queried_in_tempo_by_carbon_attributes() -> None:
    queries = [
        t["query"]
        for _, t in targets(DASHBOARDS["carbonspan-requests.json"])
        if t.get("queryType") == "traceql"
    ]
    assert [q.split(" | ")[0] for q in queries] == [
        f"{{ span.{sc.CARBON_REQUEST_TOTAL_GCO2E} > $request_threshold }}",
        f"{{ span.{sc.CARBON_TOTAL_GCO2E} > $span_threshold }}",
    ]
    for query in queries:
        attributes = TRACEQL_ATTRIBUTE.findall(query)
        assert attributes and set(attributes) <= SEMCONV_STRINGS, query
        for variable in re.findall(r"\$(\w+)", query):
            assert variables(DASHBOARDS["carbonspan-requests.json"])[variable]["type"] == "textbox"


@pytest.mark.parametrize("file_name", DASHBOARDS)
def test_every_datasource_is_a_template_variable(file_name: str) -> None:
    dashboard = DASHBOARDS[file_name]
    declared = {
        name: variable["query"]
        for name, variable in variables(dashboard).items()
        if variable["type"] == "datasource"
    }
    references = [panel.get("datasource") for panel in panels(dashboard) if panel["type"] != "row"]
    references += [target["datasource"] for _, target in targets(dashboard)]
    references += [v["datasource"] for v in variables(dashboard).values() if v["type"] == "query"]
    assert references and all(references)
    for reference in references:
        match = re.fullmatch(r"\$\{(\w+)\}", reference["uid"])
        assert match, f"hard-wired datasource {reference}"
        assert declared[match[1]] == reference["type"], reference


@pytest.mark.parametrize("file_name", DASHBOARDS)
def test_panels_have_unique_ids_and_fit_the_grid(file_name: str) -> None:
    dashboard = DASHBOARDS[file_name]
    assert (
        dashboard["schemaVersion"] >= 39
    )  # the schema of Grafana 10.x onwards, which current Grafana imports
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area


# The checker itself: each expression breaks the exporter contract in one way, and is caught.
BROKEN_QUERIES = {
    "sum(rate(carbon_span_token_total[5m]))": "metric 'carbon_span_token_total'",
    "carbon_request_co2e_grams > 1": "metric 'carbon_request_co2e_grams'",
    "carbon_gpu_idle_energy_joules_total_bucket": "metric 'carbon_gpu_idle_energy_joules_total_bucket'",
    'rate(carbon_span_tokens_total{hw_id="GPU-0"}[5m])': "no label 'hw_id'",
    'carbon_request_co2e_grams_sum{le="1"}': "no label 'le'",
    "sum by (hw_id) (rate(carbon_span_tokens_total[5m]))": "grouping label 'hw_id'",
    "sum(carbon_grid_intensity_gco2e_per_kwh) without (region)": "grouping label 'region'",
    "rates(carbon_span_tokens_total[5m])": "unknown function 'rates'",
    '{cloud_region="eu-north-1"}': "selector without a metric name",
    "sum(rate(carbon_span_tokens_total[5m])": "unbalanced",
}


@pytest.mark.parametrize("query", BROKEN_QUERIES)
def test_checker_catches_a_query_the_exporter_cannot_answer(query: str) -> None:
    assert any(BROKEN_QUERIES[query] in problem for problem in promql.problems(query)), promql.problems(query)


def test_checker_reads_durations_numbers_strings_and_variables_as_such() -> None:
    expr = (
        '1e3 * carbon_span_co2e_grams_total{carbon_phase="decode", hw_model=~"$gpu_model"} offset 1h30m'
        " / on (carbon_phase, hw_model) group_left sum by (carbon_phase, hw_model)"
        ' (rate(carbon_span_tokens_total{service_name!~"rate|sum_total"}[$__rate_interval])) > bool 0.5'
    )
    found = promql.names(expr)
    assert [(s.metric, s.labels) for s in found.selectors] == [
        ("carbon_span_co2e_grams_total", ["carbon_phase", "hw_model"]),
        ("carbon_span_tokens_total", ["service_name"]),
    ]
    assert found.functions == ["sum", "rate"]
    assert found.grouping_labels == ["carbon_phase", "hw_model", "carbon_phase", "hw_model"]
    assert promql.problems(expr) == []
