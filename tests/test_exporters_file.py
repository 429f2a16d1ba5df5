"""file exporter: OTLP/JSON lines that read back to the requests that went in."""

from __future__ import annotations

import pytest
from exporters_support import trace_request
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from otlp_data import T0, energy_metrics, ramp

from carbonspan.collector import otlp_json
from carbonspan.collector.errors import ConfigError
from carbonspan.collector.exporters import EXPORTER_TYPES


def test_lines_parse_back_equal_to_the_input(tmp_path):
    path = tmp_path / "out" / "otlp.jsonl"
    exporter = EXPORTER_TYPES["file"]("file", {"path": str(path)})
    exporter.start()
    traces = [trace_request(3, gco2e=0.25), trace_request(1)]
    metrics = ExportMetricsServiceRequest(resource_metrics=[energy_metrics("GPU-1", ramp(T0, T0 + 10**9, 10**8, 700))])
    exporter.export_traces(traces[0])
    exporter.export_metrics(metrics)
    # flushed per write: a reader sees each request before shutdown
    assert len(path.read_text().splitlines()) == 2
    exporter.export_traces(traces[1])
    exporter.shutdown(1)

    lines = path.read_text().splitlines()
    assert len(lines) == 3
    assert otlp_json.loads(lines[0], ExportTraceServiceRequest()) == traces[0]
    assert otlp_json.loads(lines[1], ExportMetricsServiceRequest()) == metrics
    assert otlp_json.loads(lines[2], ExportTraceServiceRequest()) == traces[1]
    # ids are hex, as the Collector writes them
    span_id = traces[0].resource_spans[0].scope_spans[0].spans[0].span_id.hex()
    assert f'"spanId":"{span_id}"' in lines[0]
    assert exporter.stats()["sent"] == 3


def test_appends_to_an_existing_file(tmp_path):
    path = tmp_path / "otlp.jsonl"
    path.write_text("{}\n")
    exporter = EXPORTER_TYPES["file"]("file/x", {"path": str(path)})
    exporter.start()
    exporter.export_traces(trace_request(1))
    exporter.shutdown(1)
    assert len(path.read_text().splitlines()) == 2


@pytest.mark.parametrize("config, key", [({}, "path"), ({"path": "x", "format": "proto"}, "format"),
                                         ({"path": "x", "rotation": {}}, "rotation")])
def test_config_errors(config, key):
    with pytest.raises(ConfigError) as error:
        EXPORTER_TYPES["file"]("file", config)
    assert error.value.key == key
