"""``carbonspan collector`` as a process: starts from a config file, logs JSON, and on SIGTERM
releases every span the processors still hold into the exporters before it exits 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import grpc
from exporters_support import free_port
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from otlp_data import T0, SpanSpec, node_resource, spans

from carbonspan.collector import otlp_json
from carbonspan.processors import semconv as sc


def test_sigterm_flushes_held_spans_to_the_file_and_exits_0(tmp_path):
    port, out = free_port(), tmp_path / "spans.jsonl"
    config = tmp_path / "c.yaml"
    config.write_text(f"""
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:${{env:TEST_PORT}}"}}}}}}
processors:
  carbon: {{deadline: 1h}}
exporters:
  file: {{path: {out}}}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [carbon], exporters: [file]}}
""")
    env = {**os.environ, "TEST_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "carbonspan.collector.cli", "collector", "--config", str(config)],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        request = ExportTraceServiceRequest(resource_spans=[spans(node_resource(["GPU-x"]), [
            SpanSpec(sc.PHASE_DECODE, T0, T0 + 10**9, tokens=5) for _ in range(7)])])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            TraceServiceStub(channel).Export(request, timeout=10)
        time.sleep(0.3)
        assert not out.exists() or out.read_text() == ""  # held: no energy data, 1 h deadline
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = out.read_text().splitlines()
    exported = [s for line in lines for rs in otlp_json.loads(line, ExportTraceServiceRequest()).resource_spans
                for ss in rs.scope_spans for s in ss.spans]
    assert len(exported) == 7
    logs = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]
    assert {"collector started", "shutting down", "collector stopped"} <= {entry["msg"] for entry in logs}
    assert any(entry.get("signal") == "SIGTERM" for entry in logs)
