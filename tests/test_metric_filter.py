"""The ``filter`` processor: metric names matched as the Collector's filter processor matches them,
on real OTLP messages (serialized and parsed back), and its config section checked at load."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from otlp_data import energy_metrics, load_metrics, node_resource, power_metrics

from carbonspan.collector.config import load_config_text
from carbonspan.collector.errors import ConfigError
from carbonspan.processors import semconv
from carbonspan.processors.metric_filter import MetricFilter, NameMatch

SAMPLES = [(1_000, 1.0), (2_000, 2.0)]


def batch():
    """A sampler's energy and power and a worker's tokens, each in its own ResourceMetrics, as bytes
    off the wire."""
    request = ExportMetricsServiceRequest(resource_metrics=[
        energy_metrics("GPU-0", SAMPLES), power_metrics("GPU-0", SAMPLES),
        load_metrics(node_resource(["GPU-0"]), SAMPLES)])
    return list(ExportMetricsServiceRequest.FromString(request.SerializeToString()).resource_metrics)


def names(resource_metrics) -> list[str]:
    return [m.name for rm in resource_metrics for sm in rm.scope_metrics for m in sm.metrics]


@pytest.mark.parametrize(("metric_filter", "kept"), [
    (MetricFilter(exclude=NameMatch("strict", (semconv.HW_ENERGY, semconv.HW_POWER))), [semconv.CARBON_WORKER_TOKENS]),
    (MetricFilter(include=NameMatch("strict", (semconv.HW_ENERGY,))), [semconv.HW_ENERGY]),
    (MetricFilter(exclude=NameMatch("regexp", (r"^hw\.",))), [semconv.CARBON_WORKER_TOKENS]),
    (MetricFilter(exclude=NameMatch("regexp", ("power",))), [semconv.HW_ENERGY, semconv.CARBON_WORKER_TOKENS]),
    # include first, then exclude
    (MetricFilter(include=NameMatch("regexp", (r"^hw\.",)), exclude=NameMatch("strict", (semconv.HW_POWER,))),
     [semconv.HW_ENERGY]),
    (MetricFilter(exclude=NameMatch("regexp", (".*",))), []),
])
def test_metrics_are_kept_or_dropped_by_name_and_emptied_resources_go(metric_filter, kept):
    out = metric_filter.apply(batch())
    assert names(out) == kept
    assert len(out) == len(kept)  # one metric per resource here: a resource left empty is not passed on
    assert all(rm.scope_metrics for rm in out)


def test_the_points_of_a_kept_metric_are_untouched():
    before = batch()
    expected = [m.SerializeToString() for m in before[2].scope_metrics[0].metrics]
    out = MetricFilter(include=NameMatch("strict", (semconv.CARBON_WORKER_TOKENS,))).apply(before)
    assert [m.SerializeToString() for m in out[0].scope_metrics[0].metrics] == expected


def config(filter_section: str, pipeline: str = "metrics") -> str:
    return f"""
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: 127.0.0.1:0}}}}}}
processors:
  filter:
{filter_section}
exporters:
  debug: {{}}
service:
  pipelines:
    {pipeline}: {{receivers: [otlp], processors: [filter], exporters: [debug]}}
"""


def test_the_collector_config_section_is_the_collectors():
    loaded = load_config_text(config("    metrics:\n      include: {match_type: strict, metric_names: [hw.energy]}"))
    assert loaded.processors["filter"].settings == MetricFilter(include=NameMatch("strict", ("hw.energy",)))


@pytest.mark.parametrize(("section", "pipeline", "message"), [
    ("    metrics:\n      metric: ['name == \"hw.energy\"']", "metrics", "unknown key"),  # OTTL: not offered
    ("    metrics: {}", "metrics", "set metrics.include, metrics.exclude or both"),
    ("    metrics:\n      exclude: {metric_names: [hw.energy]}", "metrics", "match_type"),
    ("    metrics:\n      exclude: {match_type: glob, metric_names: [hw.energy]}", "metrics", "strict, regexp"),
    ("    metrics:\n      exclude: {match_type: strict, metric_names: []}", "metrics", "metric_names"),
    ("    metrics:\n      exclude: {match_type: regexp, metric_names: ['hw.(']}", "metrics", "regular expression"),
    ("    metrics:\n      exclude: {match_type: strict, metric_names: [hw.energy]}", "traces", "does not process"),
])
def test_a_section_it_cannot_honour_is_refused_at_load_naming_the_key(section, pipeline, message):
    with pytest.raises(ConfigError, match=message):
        load_config_text(config(section, pipeline))
