"""The batcher's request building, retry and bounds, and the sender's environment handling.

Transport over real sockets is covered in tests/e2e/test_sampler_otlp.py; here the sender is a
recorder that can be told to fail, standing in for the network only.
"""

import pytest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from carbonspan.instrumentation.otlp_push import (
    PROTOCOL_GRPC,
    PROTOCOL_HTTP_PROTOBUF,
    OtlpMetricsSender,
    TimestampedMetricBatcher,
)
from carbonspan.processors import semconv
from carbonspan.processors.otlp import attributes_to_dict


class RecordingSender:
    def __init__(self):
        self.requests = []
        self.down = False

    def send(self, request):
        if self.down:
            raise ConnectionError("receiver down")
        self.requests.append(request)

    def close(self):
        pass


GPU0 = {semconv.HW_ID: "GPU-0", semconv.HW_TYPE: semconv.HW_TYPE_GPU}
GPU1 = {semconv.HW_ID: "GPU-1", semconv.HW_TYPE: semconv.HW_TYPE_GPU}


def fill(batcher, n, t0=1_000):
    for i in range(n):
        for gpu in (GPU0, GPU1):
            batcher.add_sum(semconv.HW_ENERGY, semconv.UNIT_JOULE, gpu, t0, t0 + i, float(i))
            batcher.add_gauge(semconv.HW_POWER, semconv.UNIT_WATT, gpu, t0 + i, 100.0 + i)


def test_one_request_one_metric_per_name_every_point_with_its_timestamp():
    sender = RecordingSender()
    batcher = TimestampedMetricBatcher({semconv.CLOUD_REGION: "eu-west-1"}, "test", sender)
    fill(batcher, 10)
    assert batcher.flush()
    (request,) = sender.requests
    (rm,) = request.resource_metrics
    assert attributes_to_dict(rm.resource.attributes)[semconv.CLOUD_REGION] == "eu-west-1"
    metrics = {m.name: m for m in rm.scope_metrics[0].metrics}
    assert set(metrics) == {semconv.HW_ENERGY, semconv.HW_POWER}
    energy = metrics[semconv.HW_ENERGY]
    assert energy.unit == "J"
    assert energy.sum.is_monotonic
    assert energy.sum.aggregation_temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    points = energy.sum.data_points
    assert len(points) == 20
    gpu0 = [p for p in points if attributes_to_dict(p.attributes)[semconv.HW_ID] == "GPU-0"]
    assert [p.time_unix_nano for p in gpu0] == list(range(1_000, 1_010))
    assert [p.as_double for p in gpu0] == [float(i) for i in range(10)]
    assert all(p.start_time_unix_nano == 1_000 for p in gpu0)
    assert len(metrics[semconv.HW_POWER].gauge.data_points) == 20
    assert batcher.sent_points == 40 and batcher.buffered_points == 0


def test_failed_flush_keeps_points_in_order_and_resends_them():
    sender = RecordingSender()
    batcher = TimestampedMetricBatcher({}, "test", sender)
    sender.down = True
    fill(batcher, 5)
    assert not batcher.flush()
    fill(batcher, 5, t0=2_000)
    assert not batcher.flush()
    assert batcher.buffered_points == 40
    sender.down = False
    assert batcher.flush()
    (request,) = sender.requests
    metrics = request.resource_metrics[0].scope_metrics[0].metrics
    energy = next(m for m in metrics if m.name == semconv.HW_ENERGY)
    gpu0_times = [
        p.time_unix_nano
        for p in energy.sum.data_points
        if attributes_to_dict(p.attributes)[semconv.HW_ID] == "GPU-0"
    ]
    assert gpu0_times == [*range(1_000, 1_005), *range(2_000, 2_005)]
    assert batcher.dropped_points == 0 and batcher.failed_flushes == 2


def test_buffer_is_bounded_and_drops_the_oldest():
    sender = RecordingSender()
    batcher = TimestampedMetricBatcher({}, "test", sender, max_points=30)
    sender.down = True
    fill(batcher, 10)  # 40 points into a buffer of 30
    assert batcher.dropped_points == 10
    assert not batcher.flush()
    sender.down = False
    assert batcher.flush()
    times = sorted(
        p.time_unix_nano
        for m in sender.requests[0].resource_metrics[0].scope_metrics[0].metrics
        for p in (m.sum.data_points if m.HasField("sum") else m.gauge.data_points)
    )
    assert len(times) == 30 and min(times) == 1_002  # the first 2.5 samples (10 points) went


def test_a_name_cannot_change_kind():
    batcher = TimestampedMetricBatcher({}, "test", RecordingSender())
    batcher.add_gauge(semconv.HW_POWER, semconv.UNIT_WATT, GPU0, 1, 1.0)
    with pytest.raises(ValueError, match="hw.power"):
        batcher.add_sum(semconv.HW_POWER, semconv.UNIT_WATT, GPU0, 0, 1, 1.0)


def test_resource_env_then_explicit_values_then_defaults(monkeypatch):
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "cloud.region=us-east-1,host.name=node-7,team=infra")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gpu-node")
    batcher = TimestampedMetricBatcher(
        {semconv.CLOUD_REGION: "eu-north-1", semconv.CLOUD_PROVIDER: None},
        "test",
        RecordingSender(),
        resource_defaults={semconv.HOST_NAME: "fallback", semconv.CLOUD_PROVIDER: "aws"},
    )
    attrs = batcher.resource_attributes
    assert attrs[semconv.CLOUD_REGION] == "eu-north-1"  # explicit beats env
    assert attrs[semconv.HOST_NAME] == "node-7"  # env beats default
    assert attrs[semconv.CLOUD_PROVIDER] == "aws"  # default fills the gap
    assert attrs[semconv.SERVICE_NAME] == "gpu-node"
    assert attrs["team"] == "infra"


def test_default_service_name_replaces_unknown_service(monkeypatch):
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    batcher = TimestampedMetricBatcher(
        {}, "test", RecordingSender(), resource_defaults={semconv.SERVICE_NAME: "carbonspan-sampler"}
    )
    assert batcher.resource_attributes[semconv.SERVICE_NAME] == "carbonspan-sampler"


def test_sender_reads_signal_specific_variables_first(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20abc,x-tenant=a")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-tenant=b")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "3")
    sender = OtlpMetricsSender.from_env()
    assert sender.protocol == PROTOCOL_HTTP_PROTOBUF
    assert sender.endpoint == "http://generic:4318/v1/metrics"
    assert sender.timeout_s == 3.0
    assert sender._headers["x-tenant"] == "b"
    sender.close()

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://metrics:9999/custom/path")
    sender = OtlpMetricsSender.from_env()
    assert sender.endpoint == "http://metrics:9999/custom/path"
    sender.close()

    sender = OtlpMetricsSender.from_env(endpoint="http://collector:4318", protocol="http/protobuf")
    assert sender.endpoint == "http://collector:4318/v1/metrics"
    sender.close()


def test_grpc_defaults_and_bad_protocol(monkeypatch):
    for name in ("ENDPOINT", "PROTOCOL", "METRICS_ENDPOINT", "METRICS_PROTOCOL"):
        monkeypatch.delenv(f"OTEL_EXPORTER_OTLP_{name}", raising=False)
    sender = OtlpMetricsSender.from_env()
    assert (sender.protocol, sender.endpoint) == (PROTOCOL_GRPC, "http://localhost:4317")
    sender.close()
    with pytest.raises(ValueError, match="protocol"):
        OtlpMetricsSender.from_env(protocol="http/json")


def test_default_protocol_is_the_callers_and_the_environment_wins(monkeypatch, caplog):
    for name in ("ENDPOINT", "PROTOCOL", "METRICS_ENDPOINT", "METRICS_PROTOCOL"):
        monkeypatch.delenv(f"OTEL_EXPORTER_OTLP_{name}", raising=False)
    sender = OtlpMetricsSender.from_env(default_protocol=PROTOCOL_HTTP_PROTOBUF)
    assert (sender.protocol, sender.endpoint) == (PROTOCOL_HTTP_PROTOBUF, "http://localhost:4318/v1/metrics")
    sender.close()

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    sender = OtlpMetricsSender.from_env(default_protocol=PROTOCOL_HTTP_PROTOBUF)
    assert sender.endpoint == "http://collector:4317/v1/metrics"
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=grpc" in caplog.text  # HTTP to the gRPC port: said, not guessed
    sender.close()

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    sender = OtlpMetricsSender.from_env(default_protocol=PROTOCOL_HTTP_PROTOBUF)
    assert (sender.protocol, sender.endpoint) == (PROTOCOL_GRPC, "http://collector:4317")
    sender.close()
