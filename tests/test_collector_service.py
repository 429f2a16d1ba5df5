"""The collector service on real sockets: OTel SDK exporters send spans and GPU energy over gRPC
and HTTP, and what comes out carries the carbon the join computes for the same data in-process."""

from __future__ import annotations

import gzip
import time
import urllib.request

import grpc
import pytest
import requests
from collector_doubles import EXPORTERS, RecordingExporter
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Metric,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import set_span_in_context

from carbonspan.collector import otlp_json
from carbonspan.collector.config import load_config_text
from carbonspan.collector.exporters import EXPORTER_TYPES
from carbonspan.collector.intensity_config import facility_from_config, intensity_provider_from_config
from carbonspan.collector.service import Service
from carbonspan.processors import semconv as sc
from carbonspan.processors.join import CarbonJoin, JoinSettings
from carbonspan.processors.otlp import attributes_to_dict

SECOND = 10**9
GPU = "GPU-11111111-2222-3333-4444-555555555555"
CONFIG = """
extensions:
  health_check: {endpoint: 127.0.0.1:0}
receivers:
  otlp:
    protocols:
      grpc: {endpoint: 127.0.0.1:0}
      http: {endpoint: 127.0.0.1:0}
processors:
  carbon: {deadline: 5s}
  carbon_rollup: {settle: 200ms, idle_timeout: 1s}
  batch: {timeout: 50ms}
exporters:
  recording/traces: {}
  recording/metrics: {}
  file: {path: "${env:SPANS_FILE:-/dev/null}"}
service:
  extensions: [health_check]
  pipelines:
    traces: {receivers: [otlp], processors: [carbon, carbon_rollup, batch], exporters: [recording/traces, file]}
    metrics: {receivers: [otlp], processors: [carbon], exporters: [recording/metrics]}
  telemetry: {metrics: {interval: 200ms}}
"""
#: attributes the join and the roll-up write: stripped to get back what the sender sent.
_OUTPUT_PREFIXES = ("carbon.request.", "carbon.energy.", "carbon.operational.", "carbon.embodied.", "carbon.total.",
                    "carbon.intensity.", "carbon.counterfactual.")
_OUTPUT_KEYS = {sc.CARBON_PUE, sc.CARBON_QUALITY, sc.CARBON_GRID_ZONE, sc.CARBON_SHARE}


def start_service(text: str = CONFIG, env: dict | None = None) -> Service:
    service = Service(load_config_text(text, env or {}, exporter_types={**EXPORTER_TYPES, **EXPORTERS}))
    service.start()
    return service


@pytest.fixture
def service(tmp_path):
    svc = start_service(env={"SPANS_FILE": str(tmp_path / "spans.jsonl")})
    yield svc
    svc.shutdown(5)


def node_resource(instance: str) -> Resource:
    return Resource({sc.SERVICE_NAME: "vllm-prefill", sc.SERVICE_INSTANCE_ID: instance, sc.HOST_NAME: "node-1",
                     sc.CLOUD_PROVIDER: "aws", sc.CLOUD_REGION: "eu-north-1", sc.CARBON_GPU_IDS: [GPU]})


def energy_and_load(t0: int, instance: str) -> MetricsData:
    """10 s of 100 ms samples: the GPU at 300 W, the worker computing 200 prefill tokens/s."""
    times = range(t0, t0 + 10 * SECOND + 1, SECOND // 10)
    scope = InstrumentationScope("tests")

    def cumulative(name: str, unit: str, rate: float, attrs: dict) -> Metric:
        points = [NumberDataPoint(attributes=attrs, start_time_unix_nano=t0 - SECOND, time_unix_nano=t,
                                  value=rate * (t - t0) / SECOND) for t in times]
        return Metric(name=name, description="", unit=unit, data=Sum(
            data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE, is_monotonic=True))

    gpu = cumulative(sc.HW_ENERGY, sc.UNIT_JOULE, 300.0, {sc.HW_ID: GPU, sc.HW_TYPE: sc.HW_TYPE_GPU,
                                                           sc.HW_MODEL: "NVIDIA H100 80GB HBM3"})
    load = cumulative(sc.CARBON_WORKER_TOKENS, sc.UNIT_TOKEN, 200.0, {sc.CARBON_PHASE: sc.PHASE_PREFILL})
    sampler = ResourceMetrics(Resource({sc.HOST_NAME: "node-1", sc.CLOUD_PROVIDER: "aws",
                                        sc.CLOUD_REGION: "eu-north-1"}), [ScopeMetrics(scope, [gpu], "")], "")
    worker = ResourceMetrics(node_resource(instance), [ScopeMetrics(scope, [load], "")], "")
    return MetricsData([sampler, worker])


def send_request_spans(span_exporter, t0: int, instance: str, requests_n: int) -> None:
    provider = TracerProvider(resource=node_resource(instance))
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    tracer = provider.get_tracer("tests")
    for i in range(requests_n):
        start = t0 + (2 + i) * SECOND
        root = tracer.start_span("request", start_time=start, attributes={sc.GEN_AI_REQUEST_MODEL: "tiny-llama"})
        child = tracer.start_span("prefill", context=set_span_in_context(root), start_time=start + SECOND // 10,
                                  attributes={sc.CARBON_PHASE: sc.PHASE_PREFILL, sc.CARBON_TOKENS: 50 + i,
                                              sc.GEN_AI_REQUEST_MODEL: "tiny-llama"})
        child.end(end_time=start + SECOND // 2)
        root.end(end_time=start + SECOND)
    provider.shutdown()


def expected_join(metrics: MetricsData, exported: list[tuple[ResourceSpans, object]]) -> dict[bytes, dict]:
    """Span id -> attributes the join gives the same spans and metrics in-process."""
    join = CarbonJoin(JoinSettings(deadline_ns=5 * SECOND), intensity_provider_from_config({}),
                      facility_from_config({}))
    join.add_metrics(encode_metrics(metrics).resource_metrics)
    inputs = []
    for rs, span in exported:
        copy = ResourceSpans(resource=rs.resource)
        clean = copy.scope_spans.add().spans.add()
        clean.CopyFrom(span)
        del clean.attributes[:]
        for kv in span.attributes:
            if not (kv.key.startswith(_OUTPUT_PREFIXES) or kv.key in _OUTPUT_KEYS):
                clean.attributes.append(kv)
        inputs.append(copy)
    out = join.add_spans(inputs, time.time_ns())
    out += join.release(time.time_ns())
    return {span.span_id: attributes_to_dict(span.attributes) for rs in out for ss in rs.scope_spans
            for span in ss.spans}


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_spans_and_energy_come_out_priced_as_the_join_prices_them(service, transport, tmp_path):
    addresses = service.addresses()
    t0 = time.time_ns() - 30 * SECOND
    metrics = energy_and_load(t0, instance=f"worker-{transport}")
    if transport == "grpc":
        metric_exporter = GrpcMetricExporter(endpoint=addresses["otlp/grpc"], insecure=True)
        span_exporter = GrpcSpanExporter(endpoint=addresses["otlp/grpc"], insecure=True)
    else:
        base = f"http://{addresses['otlp/http']}"
        metric_exporter = HttpMetricExporter(endpoint=f"{base}/v1/metrics")
        span_exporter = HttpSpanExporter(endpoint=f"{base}/v1/traces")
    assert metric_exporter.export(metrics) == MetricExportResult.SUCCESS
    send_request_spans(span_exporter, t0, f"worker-{transport}", requests_n=3)

    recorder = RecordingExporter.instances["recording/traces"]
    exported = recorder.wait_for_spans(6)
    assert len(exported) == 6
    expected = expected_join(metrics, exported)
    prefill = [(rs, s) for rs, s in exported if attributes_to_dict(s.attributes).get(sc.CARBON_PHASE)]
    assert len(prefill) == 3
    for _, span in prefill:
        attrs = attributes_to_dict(span.attributes)
        assert attrs[sc.CARBON_QUALITY] == sc.QUALITY_MEASURED
        assert attrs[sc.CARBON_ENERGY_JOULES] > 0
        want = expected[span.span_id]
        assert {k: attrs[k] for k in want} == want
    roots = [s for _, s in exported if not s.parent_span_id]
    assert len(roots) == 3
    for root in roots:
        attrs = attributes_to_dict(root.attributes)
        child = next(s for _, s in prefill if s.trace_id == root.trace_id)
        child_total = attributes_to_dict(child.attributes)[sc.CARBON_TOTAL_GCO2E]
        assert attrs[sc.CARBON_REQUEST_TOTAL_GCO2E] == pytest.approx(child_total)
    service.shutdown(5)  # the file exporter has written every request once it is shut down
    in_file = {span.span_id: attributes_to_dict(span.attributes)
               for line in (tmp_path / "spans.jsonl").read_text().splitlines()
               for rs in otlp_json.loads(line, ExportTraceServiceRequest()).resource_spans
               for ss in rs.scope_spans for span in ss.spans}
    assert in_file == {span.span_id: attributes_to_dict(span.attributes) for _, span in exported}


def test_carbon_and_self_metrics_reach_the_metrics_pipeline(service):
    addresses = service.addresses()
    t0 = time.time_ns() - 30 * SECOND
    metrics = energy_and_load(t0, instance="worker-m")
    GrpcMetricExporter(endpoint=addresses["otlp/grpc"], insecure=True).export(metrics)
    send_request_spans(GrpcSpanExporter(endpoint=addresses["otlp/grpc"], insecure=True), t0, "worker-m", 2)
    RecordingExporter.instances["recording/traces"].wait_for_spans(4)
    recorder = RecordingExporter.instances["recording/metrics"]
    names: set[str] = set()
    deadline = time.monotonic() + 10
    wanted = {sc.METRIC_REQUEST_CO2E, sc.METRIC_REQUEST_ENERGY, sc.METRIC_GPU_MEASURED_ENERGY,
              sc.METRIC_GPU_ATTRIBUTED_ENERGY, sc.METRIC_GPU_IDLE_ENERGY, sc.METRIC_SPAN_CO2E,
              sc.METRIC_GRID_INTENSITY, sc.METRIC_COLLECTOR_SPANS_RECEIVED, sc.METRIC_COLLECTOR_SPANS_EXPORTED,
              sc.METRIC_COLLECTOR_QUEUE_SIZE, sc.METRIC_COLLECTOR_SPANS_PENDING, sc.HW_ENERGY}
    while not wanted <= names and time.monotonic() < deadline:
        time.sleep(0.1)
        with recorder.changed:
            names = {m.name for req in recorder.metrics for rm in req.resource_metrics for smx in rm.scope_metrics
                     for m in smx.metrics}
    assert wanted <= names
    with recorder.changed:
        co2e = [m for req in recorder.metrics for rm in req.resource_metrics for smx in rm.scope_metrics
                for m in smx.metrics if m.name == sc.METRIC_REQUEST_CO2E][-1]
    assert co2e.unit == sc.UNIT_GRAM
    point = co2e.histogram.data_points[0]
    assert point.count == 2
    labels = attributes_to_dict(point.attributes)
    assert labels[sc.GEN_AI_REQUEST_MODEL] == "tiny-llama"
    assert labels[sc.SERVICE_NAME] == "vllm-prefill"


def test_health_check_answers_while_running():
    svc = start_service()
    address = svc.addresses()["health_check"]
    with urllib.request.urlopen(f"http://{address}/", timeout=5) as response:
        assert response.status == 200
    svc.shutdown(5)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{address}/", timeout=2)


def _trace_request(n_spans: int = 1) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    spans = rs.scope_spans.add().spans
    for i in range(n_spans):
        span = spans.add(trace_id=bytes(15) + b"\x01", span_id=(i + 1).to_bytes(8, "big"), name="s",
                         start_time_unix_nano=1, end_time_unix_nano=2)
        span.attributes.add(key="pad", value={"string_value": "x" * 100})
    return request


def _grpc_export(address: str, body: bytes, metadata=()) -> grpc.RpcError | None:
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                                   request_serializer=None, response_deserializer=None)
        try:
            call(body, metadata=metadata, timeout=5)
        except grpc.RpcError as error:
            return error
    return None


def _rejected(service: Service) -> dict:
    return {reason: n for (_, reason), n in service.router.rejected.items()}


def test_malformed_and_oversize_requests_are_refused_counted_and_the_server_goes_on(service):
    addresses = service.addresses()
    error = _grpc_export(addresses["otlp/grpc"], b"\x0a\xff\xff\xff\xff\x0f garbage")
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ExportTraceServiceRequest" in error.details()
    http = f"http://{addresses['otlp/http']}/v1/traces"
    response = requests.post(http, data=b"\x0a\xff\xff", headers={"Content-Type": "application/x-protobuf"}, timeout=5)
    assert response.status_code == 400
    response = requests.post(http, data=b"{not json", headers={"Content-Type": "application/json"}, timeout=5)
    assert response.status_code == 400 and "not JSON" in response.json()["message"]
    big = _trace_request(60_000).SerializeToString()  # > 4 MiB default
    error = _grpc_export(addresses["otlp/grpc"], big)
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    response = requests.post(http, data=big, headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert response.status_code == 413
    assert _rejected(service) == {"malformed": 3, "too_large": 2}
    # still serving, both ways, gzip included
    assert _grpc_export(addresses["otlp/grpc"], _trace_request(2).SerializeToString()) is None
    response = requests.post(http, data=gzip.compress(_trace_request(3).SerializeToString()),
                             headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
                             timeout=5)
    assert response.status_code == 200
    assert sum(service.router.spans_received.values()) == 5


TOKEN_CONFIG = CONFIG.replace("extensions:\n", "extensions:\n  bearertokenauth: {token: s3cret}\n").replace(
    "grpc: {endpoint: 127.0.0.1:0}", "grpc: {endpoint: 127.0.0.1:0, auth: {authenticator: bearertokenauth}}").replace(
    "http: {endpoint: 127.0.0.1:0}", "http: {endpoint: 127.0.0.1:0, auth: {authenticator: bearertokenauth}}")


def test_wrong_token_is_unauthenticated_and_the_right_one_passes():
    svc = start_service(TOKEN_CONFIG)
    try:
        addresses = svc.addresses()
        body = _trace_request().SerializeToString()
        error = _grpc_export(addresses["otlp/grpc"], body, metadata=(("authorization", "Bearer nope"),))
        assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED
        http = f"http://{addresses['otlp/http']}/v1/traces"
        response = requests.post(http, data=body, headers={"Content-Type": "application/x-protobuf"}, timeout=5)
        assert response.status_code == 401
        assert _rejected(svc) == {"unauthenticated": 2}
        assert _grpc_export(addresses["otlp/grpc"], body, metadata=(("authorization", "Bearer s3cret"),)) is None
        response = requests.post(http, data=body, headers={"Content-Type": "application/x-protobuf",
                                                           "Authorization": "Bearer s3cret"}, timeout=5)
        assert response.status_code == 200
    finally:
        svc.shutdown(5)


LIMITED_CONFIG = CONFIG.replace("  batch: {timeout: 50ms}\n",
                                "  batch: {timeout: 50ms}\n  memory_limiter: {limit_spans: 3, retry_after: 7s}\n"
                                ).replace("processors: [carbon, carbon_rollup, batch]",
                                          "processors: [memory_limiter, carbon, carbon_rollup, batch]")


def test_memory_limiter_refuses_with_retry_after_and_never_drops():
    svc = start_service(LIMITED_CONFIG)
    try:
        addresses = svc.addresses()
        # root spans of three traces wait in the roll-up (no children ever come) until their idle timeout
        roots = _trace_request(3)
        for i, span in enumerate(roots.resource_spans[0].scope_spans[0].spans):
            span.trace_id = bytes(15) + bytes([i + 1])
        assert _grpc_export(addresses["otlp/grpc"], roots.SerializeToString()) is None
        error = _grpc_export(addresses["otlp/grpc"], _trace_request(1).SerializeToString())
        assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        trailers = dict(error.trailing_metadata())
        assert "grpc-status-details-bin" in trailers
        response = requests.post(f"http://{addresses['otlp/http']}/v1/traces",
                                 data=_trace_request(1).SerializeToString(),
                                 headers={"Content-Type": "application/x-protobuf"}, timeout=5)
        assert response.status_code == 429 and response.headers["Retry-After"] == "7"
        assert _rejected(svc) == {"memory_limit": 2}
    finally:
        svc.shutdown(5)
    assert len(RecordingExporter.instances["recording/traces"].spans()) == 3


def test_shutdown_flushes_every_waiting_span():
    svc = start_service(CONFIG.replace("carbon: {deadline: 5s}", "carbon: {deadline: 1h}").replace(
        "idle_timeout: 1s", "idle_timeout: 1h").replace("settle: 200ms", "settle: 1h"))
    addresses = svc.addresses()
    t0 = time.time_ns() - 30 * SECOND
    # spans on a GPU whose energy never arrives: the join would hold them until its 1 h deadline
    send_request_spans(GrpcSpanExporter(endpoint=addresses["otlp/grpc"], insecure=True), t0, "w-flush", 4)
    time.sleep(0.5)
    recorder = RecordingExporter.instances["recording/traces"]
    assert recorder.spans() == []
    assert svc.router.held_spans() == 8
    svc.shutdown(5)
    spans = recorder.spans()
    assert len(spans) == 8 and recorder.shut_down
    qualities = {attributes_to_dict(s.attributes).get(sc.CARBON_QUALITY) for _, s in spans}
    assert sc.QUALITY_MISSING in qualities  # no energy, no GPU model: flagged, not dropped


def test_otlp_json_over_http_keeps_hex_ids(service):
    span_id, trace_id = "00f067aa0ba902b7", "4bf92f3577b34da6a3ce929d0e0e4736"
    body = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name",
                                                            "value": {"stringValue": "router"}}]},
                               "scopeSpans": [{"spans": [{"traceId": trace_id, "spanId": span_id, "name": "request",
                                                          "startTimeUnixNano": "1", "endTimeUnixNano": "2"}]}]}]}
    response = requests.post(f"http://{service.addresses()['otlp/http']}/v1/traces", json=body, timeout=5)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/json")
    (rs, span), = RecordingExporter.instances["recording/traces"].wait_for_spans(1)
    assert span.span_id.hex() == span_id and span.trace_id.hex() == trace_id
    response = requests.post(f"http://{service.addresses()['otlp/http']}/v1/traces", data=b"x",
                             headers={"Content-Type": "text/plain"}, timeout=5)
    assert response.status_code == 415


def test_tls_on_both_transports(tmp_path):
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    tls = f"tls: {{cert_file: {cert}, key_file: {key}}}"
    svc = start_service(CONFIG.replace("grpc: {endpoint: 127.0.0.1:0}", f"grpc: {{endpoint: 127.0.0.1:0, {tls}}}")
                        .replace("http: {endpoint: 127.0.0.1:0}", f"http: {{endpoint: 127.0.0.1:0, {tls}}}"))
    try:
        addresses = svc.addresses()
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(addresses["otlp/grpc"], credentials) as channel:
            call = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            call(_trace_request(2).SerializeToString(), timeout=10)
        response = requests.post(f"https://{addresses['otlp/http']}/v1/traces", verify=str(cert), timeout=10,
                                 data=_trace_request(1).SerializeToString(),
                                 headers={"Content-Type": "application/x-protobuf"})
        assert response.status_code == 200
        assert _grpc_export(addresses["otlp/grpc"], _trace_request(1).SerializeToString()) is not None  # plaintext
        assert sum(svc.router.spans_received.values()) == 3
    finally:
        svc.shutdown(5)


def test_two_trace_pipelines_with_a_roll_up_each_get_every_span():
    """The roll-up takes the root it holds out of the received message: the other pipeline's copy
    must have been made before, or it would lose the root."""
    pipeline = "{receivers: [otlp], processors: [carbon_rollup], exporters: [recording/%s]}"
    text = CONFIG.replace("    traces: {receivers: [otlp], processors: [carbon, carbon_rollup, batch], "
                          "exporters: [recording/traces, file]}",
                          f"    traces: {pipeline % 'traces'}\n    traces/2: {pipeline % 'other'}"
                          ).replace("  recording/metrics: {}", "  recording/metrics: {}\n  recording/other: {}")
    svc = start_service(text)
    request = _trace_request(2)
    request.resource_spans[0].scope_spans[0].spans[1].parent_span_id = (1).to_bytes(8, "big")
    assert _grpc_export(svc.addresses()["otlp/grpc"], request.SerializeToString()) is None
    for name in ("recording/traces", "recording/other"):
        spans = RecordingExporter.instances[name].wait_for_spans(2)
        summaries = [attributes_to_dict(s.attributes).get(sc.CARBON_REQUEST_SPAN_COUNT) for _, s in spans]
        assert sorted(s.span_id for _, s in spans) == [(1).to_bytes(8, "big"), (2).to_bytes(8, "big")]
        assert summaries.count(2) == 1  # the root carries the roll-up of both spans
    svc.shutdown(5)


FILTER = "  filter/raw:\n    metrics:\n      exclude: {match_type: regexp, metric_names: ['^hw\\.']}\n"
FILTERED_CONFIG = CONFIG.replace("exporters:\n  recording/traces: {}\n",
                                 "exporters:\n  recording/traces: {}\n  recording/own: {}\n").replace(
    "processors:\n", "processors:\n" + FILTER).replace(
    "  telemetry:", "    metrics/own: {receivers: [otlp], processors: [filter/raw], exporters: [recording/own]}\n"
                    "  telemetry:")


def test_a_filter_keeps_the_raw_energy_series_out_of_one_metrics_pipeline_only():
    svc = start_service(FILTERED_CONFIG)
    try:
        t0 = time.time_ns() - 30 * SECOND
        GrpcMetricExporter(endpoint=svc.addresses()["otlp/grpc"], insecure=True).export(energy_and_load(t0, "w-f"))
        wanted = {sc.HW_ENERGY, sc.CARBON_WORKER_TOKENS, sc.METRIC_GPU_MEASURED_ENERGY}
        names = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for exporter_id in ("recording/metrics", "recording/own"):
                recorder = RecordingExporter.instances[exporter_id]
                with recorder.changed:
                    names[exporter_id] = {m.name for req in recorder.metrics for rm in req.resource_metrics
                                          for smx in rm.scope_metrics for m in smx.metrics}
            if wanted <= names["recording/metrics"] and wanted - {sc.HW_ENERGY} <= names["recording/own"]:
                break
            time.sleep(0.1)
        assert wanted <= names["recording/metrics"]  # the carbon pipeline: everything
        # the filtered one: the worker's counters and the collector's own metrics, no hw.* series
        assert wanted - {sc.HW_ENERGY} <= names["recording/own"]
        assert not any(name.startswith("hw.") for name in names["recording/own"])
    finally:
        svc.shutdown(5)
