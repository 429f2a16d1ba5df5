"""debug exporter: what each verbosity writes to stderr."""

from __future__ import annotations

import pytest
from exporters_support import trace_request
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from otlp_data import T0, energy_metrics, ramp

from carbonspan.collector.errors import ConfigError
from carbonspan.collector.exporters import EXPORTER_TYPES
from carbonspan.processors import semconv


def run(verbosity: str, capsys, **config) -> str:
    exporter = EXPORTER_TYPES["debug"]("debug", {"verbosity": verbosity, **config})
    exporter.start()
    exporter.export_traces(trace_request(3, gco2e=0.125))
    exporter.export_metrics(ExportMetricsServiceRequest(
        resource_metrics=[energy_metrics("GPU-1", ramp(T0, T0 + 10**9, 5 * 10**8, 700))]))
    exporter.shutdown(1)
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def test_basic_writes_counts_only(capsys):
    err = run("basic", capsys)
    assert err.splitlines() == ["debug: traces: 1 resource spans, 3 spans",
                                "debug: metrics: 1 resource metrics, 1 metrics, 3 data points"]


def test_normal_writes_a_line_per_span_with_its_carbon(capsys):
    err = run("normal", capsys)
    span_lines = [line for line in err.splitlines() if line.startswith("  span ")]
    assert len(span_lines) == 3
    assert all(f"{semconv.CARBON_TOTAL_GCO2E}=0.125" in line for line in span_lines)
    assert f"  {semconv.HW_ENERGY} sum [J] 3 points" in err


def test_detailed_writes_attributes_carbon_first_and_points(capsys):
    err = run("detailed", capsys)
    lines = err.splitlines()
    first_span = next(i for i, line in enumerate(lines) if line.startswith("  span "))
    attribute_lines = [line.strip() for line in lines[first_span + 2:] if line.startswith("    ")]
    assert attribute_lines[0].startswith("carbon.")  # carbon.* attributes come first
    assert f"{semconv.CARBON_TOTAL_GCO2E}: 0.125" in err and f"{semconv.GEN_AI_REQUEST_MODEL}: 'tiny-llama'" in err
    assert "value=700.0" in err and f"{semconv.CLOUD_REGION}='us-east-1'" in err


def test_sampling_keeps_the_first_then_every_nth(capsys):
    exporter = EXPORTER_TYPES["debug"]("debug", {"sampling_initial": 1, "sampling_thereafter": 100})
    for _ in range(5):
        exporter.export_traces(trace_request(1))
    written = len(capsys.readouterr().err.splitlines())
    assert 1 <= written <= 2  # 2 only if the five calls straddle a second boundary


def test_unknown_verbosity():
    with pytest.raises(ConfigError) as error:
        EXPORTER_TYPES["debug"]("debug", {"verbosity": "loud"})
    assert error.value.key == "verbosity"
