import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from otlp_data import T0, SpanSpec, node_resource, spans

from carbonspan.collector import otlp_json
from carbonspan.processors import semconv


def _request() -> ExportTraceServiceRequest:
    spec = SpanSpec(semconv.PHASE_PREFILL, T0, T0 + 10**9, tokens=12.0, trace_id=b"\x01" * 16,
                    span_id=b"\xab" * 8, parent_span_id=b"\xcd" * 8)
    return ExportTraceServiceRequest(resource_spans=[spans(node_resource(["GPU-1"]), [spec])])


def test_round_trip_keeps_everything_and_writes_ids_as_hex():
    request = _request()
    line = otlp_json.dumps(request)
    assert "\n" not in line
    assert '"traceId":"' + "01" * 16 + '"' in line
    assert '"parentSpanId":"' + "cd" * 8 + '"' in line
    assert '"kind":1' in line  # OTLP/JSON: enums as integers
    assert otlp_json.loads(line, ExportTraceServiceRequest()) == request


@pytest.mark.parametrize("text", [
    "{not json",
    "[1]",
    '{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}',
    '{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"soon"}]}]}]}',
])
def test_bad_input_is_a_value_error(text):
    with pytest.raises(ValueError):
        otlp_json.loads(text, ExportTraceServiceRequest())
