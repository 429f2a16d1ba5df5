"""Two carbonspan collectors in a chain, as agent -> gateway: the agent prices spans and exports
them by OTLP/gRPC to the second, which writes them to a file. The second goes down for 10 s, and
the agent restarts with its on-disk queue: every span sent in comes out, priced."""

from __future__ import annotations

import os
import time
from pathlib import Path

import grpc
from exporters_support import free_port
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from otlp_data import SpanSpec, node_resource, spans

from carbonspan.collector import otlp_json
from carbonspan.collector.config import load_config_text
from carbonspan.collector.service import Service
from carbonspan.processors import semconv as sc
from carbonspan.processors.otlp import attributes_to_dict

SECOND = 10**9


def target_config(port: int, path: Path) -> str:
    return f"""
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: 127.0.0.1:{port}}}}}}}
processors:
  batch: {{timeout: 50ms}}
exporters:
  file: {{path: {path}}}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [file]}}
  telemetry: {{metrics: {{level: none}}}}
"""


def agent_config(target_port: int, queue_dir: Path | None = None) -> str:
    storage = "\n      storage: file_storage/queue" if queue_dir else ""
    extension = f"extensions:\n  file_storage/queue: {{directory: {queue_dir}}}\n" if queue_dir else ""
    return f"""{extension}
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: 127.0.0.1:0}}}}}}
processors:
  carbon: {{deadline: 100ms}}
  batch: {{timeout: 50ms}}
exporters:
  otlp/next:
    endpoint: 127.0.0.1:{target_port}
    tls: {{insecure: true}}
    timeout: 2s
    retry_on_failure: {{initial_interval: 200ms, max_interval: 1s, max_elapsed_time: 0s}}
    sending_queue:
      num_consumers: 2{storage}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [carbon, batch], exporters: [otlp/next]}}
  telemetry: {{metrics: {{level: none}}}}
"""


def start(text: str) -> Service:
    service = Service(load_config_text(text, os.environ))
    service.start()
    return service


def send(address: str, count: int, start_index: int) -> set[bytes]:
    """``count`` priced-to-be prefill spans, one request each; returns their span ids."""
    t0 = time.time_ns() - 60 * SECOND
    specs = [SpanSpec(sc.PHASE_PREFILL, t0 + i * SECOND // 10, t0 + i * SECOND // 10 + SECOND // 20, tokens=10,
                      span_id=(start_index + i).to_bytes(8, "big")) for i in range(count)]
    res = node_resource(["GPU-chain-0"], **{sc.CARBON_GPU_MODEL: "NVIDIA H100 80GB HBM3"})
    request = ExportTraceServiceRequest(resource_spans=[spans(res, specs)])
    with grpc.insecure_channel(address) as channel:
        TraceServiceStub(channel).Export(request, timeout=10)
    return {spec.span_id for spec in specs}


def received(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        request = otlp_json.loads(line, ExportTraceServiceRequest())
        out.extend({"id": span.span_id, **attributes_to_dict(span.attributes)}
                   for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans)
    return out


def wait_for(path: Path, count: int, timeout_s: float) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        spans_out = received(path)
        if len(spans_out) >= count:
            return spans_out
        time.sleep(0.1)
    return received(path)


def test_spans_reach_the_next_collector_priced_even_after_it_was_down_for_10s(tmp_path):
    out = tmp_path / "target.jsonl"
    port = free_port()
    target = start(target_config(port, out))
    agent = start(agent_config(port))
    try:
        sent = send(agent.addresses()["otlp/grpc"], 50, 0)
        assert len(wait_for(out, 50, 15)) == 50
        target.shutdown(5)
        sent |= send(agent.addresses()["otlp/grpc"], 70, 1000)
        time.sleep(10)
        assert len(received(out)) == 50  # nothing got through while it was down
        target = start(target_config(port, out))
        got = wait_for(out, 120, 30)
    finally:
        agent.shutdown(5)
        target.shutdown(5)
    assert len(got) == 120 and {s["id"] for s in got} == sent  # count in = count out, no duplicates
    assert all(s[sc.CARBON_QUALITY] == sc.QUALITY_ESTIMATED and s[sc.CARBON_TOTAL_GCO2E] > 0 for s in got)


def test_agent_restart_with_the_on_disk_queue_loses_nothing(tmp_path):
    out = tmp_path / "target.jsonl"
    queue = tmp_path / "queue"
    port = free_port()  # nothing listens there yet: every export fails and stays queued
    agent = start(agent_config(port, queue))
    sent = send(agent.addresses()["otlp/grpc"], 40, 0)
    time.sleep(1.0)  # the join's deadline passes; the spans are in the exporter's queue
    agent.shutdown(3)
    assert any((queue / "otlp_next").iterdir())
    target = start(target_config(port, out))
    agent = start(agent_config(port, queue))
    try:
        got = wait_for(out, 40, 30)
    finally:
        agent.shutdown(5)
        target.shutdown(5)
    assert {s["id"] for s in got} == sent and len(got) == 40
    assert all(sc.CARBON_TOTAL_GCO2E in s for s in got)
