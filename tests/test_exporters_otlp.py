"""otlp (gRPC) exporter against a real grpcio OTLP server on 127.0.0.1."""

from __future__ import annotations

import time

import grpc
import pytest
from exporters_support import OtlpGrpcPeer, free_port, self_signed_certificate, trace_request, wait_for
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from carbonspan.collector.errors import ConfigError
from carbonspan.collector.exporters import EXPORTER_TYPES
from carbonspan.collector.exporters.otlp import OtlpGrpcExporter
from carbonspan.collector.exporters.remote import encode_trace_batch

FAST_RETRY = {"initial_interval": "100ms", "max_interval": "1s", "max_elapsed_time": "60s"}


def exporter(endpoint: str, **extra) -> OtlpGrpcExporter:
    config = {"endpoint": endpoint, "tls": {"insecure": True}, "retry_on_failure": FAST_RETRY, **extra}
    return EXPORTER_TYPES["otlp"]("otlp/test", config)


def test_peer_down_for_10s_then_up_every_span_arrives_once():
    port = free_port()
    exp = exporter(f"127.0.0.1:{port}", sending_queue={"num_consumers": 3})
    exp.start()
    try:
        started = time.monotonic()
        for _ in range(30):
            exp.export_traces(trace_request(7))
        time.sleep(10)  # the peer is down for 10 s
        assert exp.queue_size() == 30
        assert exp.stats()["retried"] >= 3
        with OtlpGrpcPeer(port) as peer:
            assert wait_for(lambda: peer.span_count() == 210, 15), peer.span_count()
            exp.shutdown(5)
            assert peer.span_count() == 210  # count in = count out, no duplicates
        stats = exp.stats()
        assert stats["sent"] == 30 and stats["sent_items"] == 210
        assert stats["failed"] == stats["dropped"] == 0
        assert exp.queue_size() == 0
        assert time.monotonic() - started >= 10
    finally:
        exp.shutdown(0)


def test_headers_reach_the_peer_with_gzip_on():
    with OtlpGrpcPeer() as peer:
        exp = exporter(peer.endpoint, headers={"Authorization": "Bearer s3cret"}, compression="gzip")
        exp.start()
        exp.export_traces(trace_request(2))
        assert wait_for(lambda: peer.span_count() == 2, 10)
        exp.shutdown(5)
    assert peer.metadata[0]["authorization"] == "Bearer s3cret"


def test_permanent_error_is_counted_not_retried():
    with OtlpGrpcPeer(fail=lambda: grpc.StatusCode.INVALID_ARGUMENT) as peer:
        exp = exporter(peer.endpoint)
        exp.start()
        exp.export_traces(trace_request(3))
        assert wait_for(lambda: exp.stats()["failed"] == 1, 10)
        exp.shutdown(5)
    assert exp.stats()["retried"] == 0 and exp.stats()["failed_items"] == 3 and exp.stats()["sent"] == 0


def test_unavailable_is_retried_until_the_peer_takes_it():
    answers = iter([grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, None])
    with OtlpGrpcPeer(fail=lambda: next(answers, None)) as peer:
        exp = exporter(peer.endpoint)
        exp.start()
        exp.export_traces(trace_request(4))
        assert wait_for(lambda: peer.span_count() == 4, 10)
        exp.shutdown(5)
    assert exp.stats()["retried"] == 2 and exp.stats()["sent"] == 1


def test_full_queue_drops_and_counts(caplog):
    exp = exporter(f"127.0.0.1:{free_port()}", sending_queue={"queue_size": 2, "num_consumers": 1})
    exp.start()
    try:
        for _ in range(6):
            exp.export_traces(trace_request(1))
        # one request is in flight with the consumer, two wait, the rest do not fit
        assert exp.stats()["dropped"] >= 3
        assert "sending queue is full" in caplog.text
    finally:
        exp.shutdown(0.2)
    assert exp.stats()["dropped"] == 6  # shutdown with the peer still down: the rest is lost, and counted


def test_disk_queue_survives_a_restart(tmp_path):
    port = free_port()
    config = {"sending_queue": {"storage_directory": str(tmp_path), "num_consumers": 2}}
    first = exporter(f"127.0.0.1:{port}", **config)
    first.start()
    for _ in range(12):
        first.export_traces(trace_request(5))
    first.shutdown(0.5)  # the peer never came up: everything stays on disk
    files = list(tmp_path.rglob("*.pb"))
    assert len(files) == 12
    assert first.stats()["sent"] == 0 and first.stats()["dropped"] == 0

    with OtlpGrpcPeer(port) as peer:
        second = exporter(f"127.0.0.1:{port}", **config)
        second.start()
        assert wait_for(lambda: peer.span_count() == 60, 15), peer.span_count()
        second.shutdown(5)
        assert peer.span_count() == 60
    assert list(tmp_path.rglob("*.pb")) == []


@pytest.mark.parametrize("config, key", [
    ({}, "endpoint"),
    ({"endpoint": "nohost"}, "endpoint"),
    ({"endpoint": "127.0.0.1:4317", "compression": "zstd"}, "compression"),
    ({"endpoint": "127.0.0.1:4317", "retry_on_failure": {"initial_interval": "fast"}},
     "retry_on_failure.initial_interval"),
    ({"endpoint": "127.0.0.1:4317", "sending_queue": {"queue_size": 0}}, "sending_queue.queue_size"),
    ({"endpoint": "127.0.0.1:4317", "sending_queue": {"num_consumer": 2}}, "sending_queue.num_consumer"),
    ({"endpoint": "127.0.0.1:4317", "tls": {"ca_file": "/nonexistent/ca.pem"}}, "tls.ca_file"),
    ({"endpoint": "127.0.0.1:4317", "sending_queue": {"enabled": False, "storage_directory": "/tmp/q"}},
     "sending_queue.enabled"),
    ({"endpoint": "127.0.0.1:4317", "sending_queue": {"storage": "file_storage"}}, "sending_queue.storage"),
])
def test_config_errors_name_the_key(config, key):
    with pytest.raises(ConfigError) as error:
        OtlpGrpcExporter("otlp", config)
    assert error.value.key == key


def test_retry_info_from_the_peer_sets_the_wait():
    answers = iter([(grpc.StatusCode.RESOURCE_EXHAUSTED, 1.0), None])
    with OtlpGrpcPeer(fail=lambda: next(answers, None)) as peer:
        exp = exporter(peer.endpoint)  # backoff 100 ms; the peer asks for 1 s
        exp.start()
        exp.export_traces(trace_request(1))
        assert wait_for(lambda: peer.span_count() == 1, 10)
        exp.shutdown(5)
    assert peer.attempts[1] - peer.attempts[0] >= 1.0


def test_tls_with_ca_file(tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    with OtlpGrpcPeer(credentials=credentials) as peer:
        exp = OtlpGrpcExporter("otlp/tls", {"endpoint": f"localhost:{peer.port}", "tls": {"ca_file": str(cert)},
                                            "retry_on_failure": FAST_RETRY})
        exp.start()
        exp.export_traces(trace_request(2))
        assert wait_for(lambda: peer.span_count() == 2, 10)
        exp.shutdown(5)
    assert exp.stats()["sent"] == 1 and exp.stats()["retried"] == 0


def test_unwritable_disk_queue_drops_and_counts(tmp_path, caplog):
    exp = exporter(f"127.0.0.1:{free_port()}", sending_queue={"storage_directory": str(tmp_path)})
    exp.start()
    for directory in tmp_path.iterdir():
        directory.rmdir()  # the queue's directory vanishes under it
    exp.export_traces(trace_request(4))
    exp.shutdown(0.2)
    assert exp.stats()["dropped"] == 1 and exp.stats()["dropped_items"] == 4
    assert "cannot write the request to the on-disk queue" in caplog.text


def test_queue_disabled_sends_in_the_callers_thread():
    with OtlpGrpcPeer() as peer:
        exp = exporter(peer.endpoint, sending_queue={"enabled": False})
        exp.start()
        exp.export_traces(trace_request(3))
        assert peer.span_count() == 3  # already there when export_traces returns
        exp.shutdown(1)
    assert exp.stats()["sent"] == 1


def test_a_batch_is_sent_as_the_bytes_of_the_request_it_would_make():
    """The pipeline hands remote exporters its ResourceSpans; what they send must be, byte for byte,
    the request those would make (the copy into the request is what the batch path saves)."""
    batch = [rs for n in (1, 3, 200) for rs in trace_request(n).resource_spans]
    batch[1].schema_url = "https://opentelemetry.io/schemas/1.26.0"
    assert encode_trace_batch(batch) == ExportTraceServiceRequest(resource_spans=batch).SerializeToString()
    assert encode_trace_batch([]) == b""
    with OtlpGrpcPeer() as peer:
        exp = exporter(peer.endpoint)
        assert exp.takes_trace_batches
        exp.start()
        exp.export_trace_batch(batch, 204)
        assert wait_for(lambda: peer.span_count() == 204, 10)
        exp.shutdown(5)
        assert exp.stats()["sent_items"] == 204
    assert peer.traces == [ExportTraceServiceRequest(resource_spans=batch)]
