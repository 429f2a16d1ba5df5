"""otlphttp exporter against a real HTTP server on 127.0.0.1 that refuses, then accepts."""

from __future__ import annotations

import gzip

import pytest
from exporters_support import OtlpHttpPeer, trace_request, wait_for
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from otlp_data import T0, energy_metrics, ramp

from carbonspan.collector import otlp_json
from carbonspan.collector.errors import ConfigError
from carbonspan.collector.exporters import EXPORTER_TYPES
from carbonspan.collector.exporters.otlphttp import retry_after_s

FAST_RETRY = {"initial_interval": "50ms", "max_interval": "500ms", "max_elapsed_time": "30s"}


def exporter(url: str, **extra):
    return EXPORTER_TYPES["otlphttp"]("otlphttp/test", {"endpoint": url, "retry_on_failure": FAST_RETRY, **extra})


def test_503_then_200_delivers_once_after_retry_after():
    request = trace_request(5)
    with OtlpHttpPeer([(503, {"Retry-After": "1"}), (503, {}), (200, {})]) as peer:
        exp = exporter(peer.url, headers={"X-Tenant": "carbon"})
        exp.start()
        exp.export_traces(request)
        assert wait_for(lambda: len(peer.requests) == 3, 10)
        exp.shutdown(5)
    paths = [r[0] for r in peer.requests]
    assert paths == ["/v1/traces"] * 3
    times = [r[3] for r in peer.requests]
    assert times[1] - times[0] >= 1.0  # Retry-After: 1 outweighs the 50 ms backoff
    path, headers, body, _ = peer.requests[2]
    assert headers["Content-Type"] == "application/x-protobuf"
    assert headers["Content-Encoding"] == "gzip" and headers["X-Tenant"] == "carbon"
    assert ExportTraceServiceRequest.FromString(gzip.decompress(body)) == request
    assert exp.stats()["sent"] == 1 and exp.stats()["retried"] == 2 and exp.stats()["failed"] == 0


def test_metrics_go_to_v1_metrics_as_json_uncompressed():
    request = ExportMetricsServiceRequest(resource_metrics=[energy_metrics("GPU-1", ramp(T0, T0 + 10**9, 10**8, 1))])
    with OtlpHttpPeer() as peer:
        exp = exporter(peer.url + "/", encoding="json", compression="none")
        exp.start()
        exp.export_metrics(request)
        assert wait_for(lambda: len(peer.requests) == 1, 10)
        exp.shutdown(5)
    path, headers, body, _ = peer.requests[0]
    assert path == "/v1/metrics" and headers["Content-Type"] == "application/json"
    assert otlp_json.loads(body, ExportMetricsServiceRequest()) == request


def test_400_is_permanent():
    with OtlpHttpPeer([(400, {})]) as peer:
        exp = exporter(peer.url, traces_endpoint=peer.url + "/custom/traces")
        exp.start()
        exp.export_traces(trace_request(2))
        assert wait_for(lambda: exp.stats()["failed"] == 1, 10)
        exp.shutdown(5)
    assert [r[0] for r in peer.requests] == ["/custom/traces"]
    assert exp.stats()["retried"] == 0 and exp.stats()["failed_items"] == 2


def test_retry_after_forms():
    assert retry_after_s("7") == 7.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: no extra wait
    assert retry_after_s("soon") is None and retry_after_s(None) is None


@pytest.mark.parametrize("config, key", [
    ({}, "endpoint"),
    ({"endpoint": "127.0.0.1:4318"}, "endpoint"),
    ({"endpoint": "http://h:4318", "metrics_endpoint": "h/v1/metrics"}, "metrics_endpoint"),
    ({"endpoint": "http://h:4318", "encoding": "xml"}, "encoding"),
    ({"endpoint": "http://h:4318", "tls": {"cert_file": "c.pem"}}, "tls.key_file"),
])
def test_config_errors(config, key):
    with pytest.raises(ConfigError) as error:
        EXPORTER_TYPES["otlphttp"]("otlphttp", config)
    assert error.value.key == key
